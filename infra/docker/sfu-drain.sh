#!/bin/bash
# meetease-sfu-drain [MAX_SECONDS]: the SFU's preStop hook. Waits until the node
# carries no participants (its /metrics gauge meetease_sfu_participants is 0) or
# MAX_SECONDS (default $SFU_DRAIN_SECONDS, then 3300) pass, whichever comes first;
# the orchestrator then sends SIGTERM. Rooms stay on the node they started on, so
# waiting is what keeps a rolling upgrade from cutting meetings off.
set -u
port="${SFU_PORT:-8006}"
limit="${1:-${SFU_DRAIN_SECONDS:-3300}}"
deadline=$(( SECONDS + limit ))
participants() {
  exec 3<>"/dev/tcp/127.0.0.1/${port}" || return 1
  printf 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
  local line total=0 seen=0
  while IFS= read -r -t 5 line; do
    line="${line%$'\r'}"
    case "$line" in
      meetease_sfu_participants*) total=$(( total + ${line##* } )); seen=1 ;;
    esac
  done <&3
  exec 3<&-
  [ "$seen" = 1 ] && echo "$total"
}
# First tell the node to take no new rooms (signaling then places them elsewhere).
if [ -n "${SFU_CONTROL_TOKEN:-}" ] && exec 4<>"/dev/tcp/127.0.0.1/${port}"; then
  printf 'POST /v1/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$SFU_CONTROL_TOKEN" >&4
  timeout 5 cat <&4 >/dev/null 2>&1 || true
  exec 4<&-
fi
while [ "$SECONDS" -lt "$deadline" ]; do
  n="$(participants)" || exit 0      # the node is gone already: nothing to wait for
  [ -z "$n" ] && exit 0
  [ "$n" -eq 0 ] && exit 0
  echo "meetease-sfu-drain: ${n} participants still on this node" >&2
  sleep 5
done
echo "meetease-sfu-drain: gave up after ${limit}s" >&2
