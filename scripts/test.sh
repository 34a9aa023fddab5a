#!/usr/bin/env bash
# Set up (first time) and run the whole test suite; extra args go to pytest.
# espeak-ng and alsa-utils provide the test speech (spoken sentences, Debian's recorded prompts);
# chromium renders the status page in its browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test APT_PACKAGES="espeak-ng alsa-utils chromium" scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
