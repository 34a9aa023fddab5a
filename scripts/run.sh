#!/usr/bin/env bash
# Set up (first time) and run the appliance on the bundled tiny.en model; extra args go to `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/stt-appliance serve "$@"
