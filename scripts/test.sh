#!/usr/bin/env bash
# Set up (first time) and run the whole test suite; extra args go to pytest.
# espeak-ng and alsa-utils provide the test speech (spoken sentences, Debian's recorded prompts);
# chromium renders the status page in its browser test. The torch extra runs the torch_whisper tests.
# systemd (systemd-analyze), docker.io and debootstrap serve the deployment lint and tests/deploy/
# (images built and run with a private dockerd; STT_DEPLOY_TESTS=0 skips those builds). umockdev
# plays a recorded USB microphone and GPU to the udev hardware probe. haproxy balances the fleet
# tests (tests/test_fleet.py, tests/test_grpcurl.py). pulseaudio (+ utils, the ALSA
# pulse plugin) and PortAudio give the microphone client a virtual microphone to record from.
#
# The deploy tests (pytest -m deploy: debootstrap, image builds, containers) spend their minutes
# waiting on the network and dockerd, so for a whole-suite run they go in a second pytest session
# started before the lint, beside the rest (-m "not deploy"); its output follows the main one's and
# either session failing fails the run. Selecting tests yourself (-m, -k, a path) runs one session;
# so does STT_TEST_SESSIONS=1. A quick check while working: scripts/test.sh -m "not slow and not deploy".
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test,torch APT_PACKAGES="espeak-ng alsa-utils chromium systemd docker.io debootstrap umockdev pulseaudio pulseaudio-utils libasound2-plugins libportaudio2 haproxy" scripts/setup.sh

split=1
for arg in "$@"; do
    case "$arg" in
        -m|-m*|-k|-k*|--pyargs|tests|tests/*|*.py|*.py::*) split=0 ;;
    esac
done
[ "${STT_TEST_SESSIONS:-2}" = 1 ] && split=0

deploy_pid=""
if [ "$split" = 1 ]; then
    deploy_log=$(mktemp /tmp/stt-deploy-tests.XXXXXX.log)
    .venv/bin/python -m pytest -m deploy "$@" >"$deploy_log" 2>&1 &
    deploy_pid=$!
    trap 'kill -INT "$deploy_pid" 2>/dev/null || true' INT TERM  # pytest tears down (dockerd) on SIGINT
fi

status=0
scripts/lint-deploy.sh || status=$?
.venv/bin/ruff check appliance clients hwtests bench tools tests || status=$?  # [tool.ruff] in pyproject.toml
.venv/bin/mypy || status=$?                                                 # [tool.mypy]: appliance and hwtests
if [ "$split" = 1 ]; then
    .venv/bin/python -m pytest -m "not deploy" "$@" || status=$?
    deploy_status=0
    wait "$deploy_pid" || deploy_status=$?
    echo "==================== the deploy tests (pytest -m deploy), run alongside ===================="
    cat "$deploy_log"
    rm -f "$deploy_log"
    [ "$deploy_status" = 0 ] || status=$deploy_status
else
    .venv/bin/python -m pytest "$@" || status=$?
fi
exit "$status"
