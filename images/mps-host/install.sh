#!/usr/bin/env bash
# Install or remove the appliance as a launchd service on Apple Silicon (torch Whisper on MPS).
# Docker on macOS runs a Linux VM that cannot reach Metal, hence a host service.
#   images/mps-host/install.sh [--prefix DIR]              LaunchAgent of the logged-in user (default
#                                                          prefix ~/Library/Application Support/stt-appliance)
#   sudo images/mps-host/install.sh --system [--prefix DIR] LaunchDaemon at boot, run as $SUDO_USER
#                                                          (default prefix /opt/stt-appliance)
#   images/mps-host/install.sh --uninstall [--system] [--purge]   stop, unregister (--purge: delete DIR)
# PYTHON=python3.12 picks the interpreter (3.11+). Config edits in DIR/config survive reinstalls.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
label=com.stt-appliance
mode=user action=install purge=0 prefix=""
while [ $# -gt 0 ]; do
  case "$1" in
    --system) mode=system ;;
    --user) mode=user ;;
    --uninstall) action=uninstall ;;
    --purge) purge=1 ;;
    --prefix) prefix=$2; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$mode" = system ]; then
  [ "$(id -u)" = 0 ] || { echo "--system needs root (sudo)" >&2; exit 1; }
  run_as=${SUDO_USER:?run --system through sudo, so the service runs as your user, not root}
  prefix=${prefix:-/opt/stt-appliance}
  plist_path=/Library/LaunchDaemons/$label.plist
  domain=system
else
  run_as=""
  prefix=${prefix:-"$HOME/Library/Application Support/stt-appliance"}
  plist_path=$HOME/Library/LaunchAgents/$label.plist
  domain=gui/$(id -u)
fi

if [ "$action" = uninstall ]; then
  launchctl bootout "$domain/$label" 2>/dev/null || true
  rm -f "$plist_path"
  echo "removed $label ($plist_path)"
  if [ "$purge" = 1 ]; then rm -rf "$prefix"; echo "deleted $prefix"; fi
  exit 0
fi

[ "$(uname -s)/$(uname -m)" = Darwin/arm64 ] || { echo "this installs the Apple Silicon (MPS) service: macOS on arm64 only" >&2; exit 1; }
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ needed (set PYTHON=)" >&2; exit 1; }

mkdir -p "$prefix/config" "$prefix/data/cache" "$prefix/logs" "$(dirname "$plist_path")"
[ -x "$prefix/venv/bin/python" ] || "$PYTHON" -m venv "$prefix/venv"
"$prefix/venv/bin/python" -m pip install --quiet --upgrade pip
"$prefix/venv/bin/python" -m pip install --quiet "$repo[torch,hwtests]"   # torch Whisper: the only MPS backend; hwtests qualifies the Mac
# openai-whisper's metadata pins triton (Linux only, useless here): the torch extra lists its real needs
"$prefix/venv/bin/python" -m pip install --quiet --no-deps "openai-whisper==20250625"
"$prefix/venv/bin/stt-appliance" models verify tiny.en
for f in server.yaml model.yaml; do
  [ -e "$prefix/config/$f" ] || cp "$repo/config/$f" "$prefix/config/$f"
done

# Render the template: __PREFIX__ -> prefix, UserName for the system daemon; then lint it.
"$prefix/venv/bin/python" - "$repo/images/mps-host/$label.plist" "$plist_path" "$prefix" "$run_as" <<'PY'
import plistlib, sys
template, target, prefix, run_as = sys.argv[1:]
def render(value):
    if isinstance(value, str): return value.replace("__PREFIX__", prefix)
    if isinstance(value, list): return [render(v) for v in value]
    if isinstance(value, dict): return {k: render(v) for k, v in value.items()}
    return value
plist = render(plistlib.load(open(template, "rb")))
if run_as:
    plist["UserName"] = run_as
with open(target, "wb") as f:
    plistlib.dump(plist, f)
PY
plutil -lint "$plist_path" >/dev/null
if [ -n "$run_as" ]; then chown -R "$run_as" "$prefix/data" "$prefix/logs"; fi
chmod 0644 "$plist_path"

launchctl bootout "$domain/$label" 2>/dev/null || true   # reinstall = restart with the new files
launchctl bootstrap "$domain" "$plist_path"
launchctl enable "$domain/$label"
echo "installed $label: $plist_path; logs in $prefix/logs; config in $prefix/config"
echo "check: launchctl print $domain/$label | head; $prefix/venv/bin/stt-appliance healthcheck --config $prefix/config/server.yaml"
