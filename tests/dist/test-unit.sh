#!/bin/sh
# systemd-analyze verify finds nothing to say about ckptfs.service (as
# configured by the build; its ExecStart pointed at the built daemon, so
# that the check does not need an install). Skips where systemd-analyze is
# not installed. Running the unit's commands as systemd would is
# fs-notify's case "unit".
#   test-unit.sh UNIT CKPTFS
set -eu
UNIT=$1 CKPTFS=$2
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze is not installed"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=$(sed -n 's|^ExecStart=\([^ ]*\)/ckptfs .*|\1|p' "$UNIT")
[ -n "$bin" ] || { echo "FAIL: no ExecStart=.../ckptfs in $UNIT"; exit 1; }
sed "s|^ExecStart=$bin/ckptfs |ExecStart=$(realpath "$CKPTFS") |" "$UNIT" > "$tmp/ckptfs.service"
out=$(systemd-analyze verify --man=no "$tmp/ckptfs.service" 2>&1) || { echo "FAIL: $out"; exit 1; }
[ -z "$out" ] || { echo "FAIL: systemd-analyze verify says: $out"; exit 1; }
echo "ok: systemd-analyze verify accepts ckptfs.service"
