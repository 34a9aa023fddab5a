#!/usr/bin/env bash
# Create .venv and install the appliance into it (idempotent). Used by run.sh and test.sh.
#   EXTRAS=test scripts/setup.sh                 also install the test dependencies
#   EXTRAS=torch scripts/setup.sh                the torch_whisper backend (torch CPU build + openai-whisper)
#   APT_PACKAGES="espeak-ng" scripts/setup.sh    also install these Debian packages when missing
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "Python 3.11 or newer is required (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }

apt_install() {  # apt_install PKG... : install the Debian packages that are missing
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "please install: ${missing[*]}" >&2; return 1; }
  as_root apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    as_root apt-get update -q >/dev/null && as_root apt-get install -y -q "${missing[@]}" >/dev/null; }
}

[ -n "${APT_PACKAGES:-}" ] && apt_install ${APT_PACKAGES}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv 2>/dev/null || { apt_install python3-venv && rm -rf .venv && "$PYTHON" -m venv .venv; }
fi
if [ -n "${EXTRAS:-}" ]; then spec=".[${EXTRAS}]"; else spec="."; fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${EXTRAS:-core}"
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e "$spec"
  case ",${EXTRAS:-}," in *,torch,*)  # openai-whisper without its triton pin; the torch extra has its needs
    .venv/bin/python -m pip install -q --no-deps "openai-whisper==20250625" ;; esac
  touch "$stamp"
fi
