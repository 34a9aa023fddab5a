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
# For a whole-suite run, pytest sessions run side by side, with the lint beside them (markers in
# tests/markers.py): the deploy tests (image builds and containers, minutes of waiting on the network
# and dockerd), the heavy ones (minutes of CPU asserting accuracy or structure, not timing), the
# adversarial ones, those that mostly wait on other processes (apart: browsers, Pipecat, fleets, the
# virtual microphone), and everything else, whose streams mostly wait on the clock. The main session
# prints as it goes, the others' output follows it; then the solo tests (they measure this process's
# CPU share, or hold the server at its decode capacity on purpose) run alone. Any of them failing fails the run. Selecting tests yourself (-m, -k, a path),
# or STT_TEST_SESSIONS=1, runs the lint and then one session, in order. A quick check while working:
# scripts/test.sh -m "not slow and not deploy".
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test,torch APT_PACKAGES="espeak-ng alsa-utils chromium systemd docker.io debootstrap umockdev pulseaudio pulseaudio-utils libasound2-plugins libportaudio2 haproxy" scripts/setup.sh
scripts/agents-venv.sh  # Pipecat in its own venv (protobuf<7), driven by tests/test_voice_agent.py

lint() {
    local status=0
    scripts/lint-deploy.sh || status=$?
    .venv/bin/ruff check appliance clients hwtests bench tools tests || status=$?  # [tool.ruff] in pyproject.toml
    .venv/bin/mypy || status=$?                                                 # [tool.mypy]: appliance and hwtests
    return "$status"
}

split=1
for arg in "$@"; do
    case "$arg" in
        -m|-m*|-k|-k*|--pyargs|tests|tests/*|*.py|*.py::*) split=0 ;;
    esac
done
[ "${STT_TEST_SESSIONS:-2}" = 1 ] && split=0

if [ "$split" = 0 ]; then
    status=0
    lint || status=$?
    .venv/bin/python -m pytest "$@" || status=$?
    exit "$status"
fi

logs=$(mktemp -d /tmp/stt-test-logs.XXXXXX)
pids=()
beside() {  # beside NAME MARKERS: a pytest session in the background, its output kept for later
    .venv/bin/python -m pytest -m "$2" "${@:3}" >"$logs/$1.log" 2>&1 &
    pids+=("$1:$!")
}
beside deploy "deploy" "$@"
beside heavy "heavy and not deploy" "$@"
beside adversarial "adversarial and not heavy and not deploy" "$@"
beside apart "apart and not adversarial and not heavy and not deploy and not solo" "$@"
lint >"$logs/lint.log" 2>&1 &
pids+=("lint:$!")
trap 'for part in "${pids[@]}"; do kill -INT "${part##*:}" 2>/dev/null || true; done' INT TERM  # pytest tears down on SIGINT
status=0
.venv/bin/python -m pytest -m "not deploy and not heavy and not adversarial and not apart and not solo" "$@" || status=$?
for part in "${pids[@]}"; do
    name=${part%%:*}
    part_status=0
    wait "${part##*:}" || part_status=$?
    echo "==================== $name (run alongside): exit $part_status ===================="
    cat "$logs/$name.log"
    [ "$part_status" = 0 ] || status=$part_status
done
rm -rf "$logs"
echo "==================== solo (after the others) ===================="
.venv/bin/python -m pytest -m solo "$@" || status=$?
exit "$status"
