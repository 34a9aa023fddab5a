#!/usr/bin/env bash
# Set up (first time) and run the whole test suite; extra args go to pytest.
# espeak-ng and alsa-utils provide the test speech (spoken sentences, Debian's recorded prompts);
# chromium renders the status page in its browser test. The torch extra runs the torch_whisper tests.
# systemd (systemd-analyze), docker.io and debootstrap serve the deployment lint and tests/deploy/
# (images built and run with a private dockerd; STT_DEPLOY_TESTS=0 skips those builds). umockdev
# plays a recorded USB microphone and GPU to the udev hardware probe. haproxy balances the fleet
# tests (tests/test_fleet.py, tests/test_grpcurl.py). pulseaudio (+ utils, the ALSA
# pulse plugin) and PortAudio give the microphone client a virtual microphone to record from.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test,torch APT_PACKAGES="espeak-ng alsa-utils chromium systemd docker.io debootstrap umockdev pulseaudio pulseaudio-utils libasound2-plugins libportaudio2 haproxy" scripts/setup.sh
scripts/lint-deploy.sh
.venv/bin/ruff check appliance clients hwtests bench tools tests   # [tool.ruff] in pyproject.toml
.venv/bin/mypy                                              # [tool.mypy]: the appliance and hwtests packages
exec .venv/bin/python -m pytest "$@"
