#!/usr/bin/env bash
# Checks node/dist/ghmesh.service with systemd's own tools:
#   - `systemd-analyze verify` on a copy whose ExecStart points at a real ghmesh binary
#     (verify checks that the executable exists); any message it prints is a failure,
#     since it reports bad settings as "…, ignoring" with exit status 0;
#   - `systemd-analyze security --offline=yes --threshold=20`: the sandboxing must keep
#     the exposure level at or below 2.0 ("OK").
# Skips with one line when systemd-analyze is not installed.
#
# Usage: node/dist/test-systemd.sh [PATH_TO_GHMESH]   (default target/debug/ghmesh)
set -euo pipefail
cd "$(dirname "$0")/../.."

unit=${GHMESH_UNIT:-node/dist/ghmesh.service}
binary=$(realpath -m "${1:-target/debug/ghmesh}")

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "skipped: systemd unit checks (systemd-analyze is not installed)"
  exit 0
fi
if [ ! -x "$binary" ]; then
  echo "test-systemd: $binary is missing; build ghmesh first (cargo build -p ghmesh-node --bin ghmesh)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -q '^ExecStart=/usr/local/bin/ghmesh node ' "$unit" || {
  echo "test-systemd: $unit: ExecStart must run /usr/local/bin/ghmesh node" >&2
  exit 1
}
sed "s#^ExecStart=/usr/local/bin/ghmesh #ExecStart=$binary #" "$unit" > "$work/ghmesh.service"

failed=0
# Type=notify and the other settings this deployment depends on.
for setting in Type=notify DynamicUser=yes StateDirectory=ghmesh \
  LoadCredential=fleet-secret:/etc/ghmesh/secret ProtectSystem=strict ProtectHome=yes \
  NoNewPrivileges=yes PrivateTmp=yes \
  'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK' MemoryMax=512M Restart=on-failure; do
  if ! grep -qxF "$setting" "$unit"; then
    echo "test-systemd: $unit lacks $setting" >&2
    failed=1
  fi
done
grep -q -- '--secret-file ${CREDENTIALS_DIRECTORY}/fleet-secret' "$unit" || {
  echo "test-systemd: ExecStart must read the secret from the credential (--secret-file \${CREDENTIALS_DIRECTORY}/fleet-secret)" >&2
  failed=1
}

status=0
out=$(systemd-analyze verify "$work/ghmesh.service" 2>&1) || status=$?
if [ "$status" -ne 0 ] || [ -n "$out" ]; then
  echo "test-systemd: systemd-analyze verify $unit failed (exit $status):" >&2
  printf '%s\n' "$out" >&2
  failed=1
else
  echo "systemd-analyze verify: $unit ok"
fi

exposure_check() {
  local status=0 out level
  out=$(systemd-analyze security --offline=yes --threshold=20 "$work/ghmesh.service" 2>&1) || status=$?
  level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: //p')
  if [ "$status" -ne 0 ]; then
    echo "test-systemd: systemd-analyze security: exposure ${level:-unknown} is above 2.0 (exit $status):" >&2
    printf '%s\n' "$out" | grep '✗' >&2 || true
    return 1
  fi
  echo "systemd-analyze security: exposure $level"
}
if ! systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  echo "skipped: exposure check (systemd-analyze security --offline needs systemd 250 or later)"
elif ! exposure_check; then
  failed=1
fi

exit "$failed"
