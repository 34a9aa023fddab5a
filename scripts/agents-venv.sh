#!/usr/bin/env bash
# Create .venv-agents with the voice-agent frameworks the tests drive as separate processes
# (tests/agents/requirements.txt; idempotent: rebuilt only when that file changes). scripts/test.sh
# calls it after setup.sh; the tests themselves never install anything.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
requirements=tests/agents/requirements.txt
stamp=".venv-agents/.installed-$(sha256sum "$requirements" | cut -c1-16)"
[ -e "$stamp" ] && exit 0
rm -rf .venv-agents
"$PYTHON" -m venv .venv-agents
.venv-agents/bin/python -m pip install -q --upgrade pip
.venv-agents/bin/python -m pip install -q -r "$requirements"
touch "$stamp"
