#!/bin/bash
# meetease-healthcheck [PORT] [PATH]: exit 0 when GET PATH on 127.0.0.1:PORT answers
# 200. PATH defaults to /health. PORT defaults to $HEALTH_PORT, else to the port of
# the MeetEase binary running in this container (its <SERVICE>_PORT variable, else
# its default: gateway 8000 ... sfu 8006). Uses bash's /dev/tcp: no curl needed.
set -u
declare -A DEFAULT_PORTS=([gateway]=8000 [auth]=8001 [users]=8002 [signaling]=8003 [notify]=8004 [analytics]=8005 [sfu]=8006)

running_service() {
  local cmdline arg0 name
  for cmdline in /proc/[0-9]*/cmdline; do
    IFS= read -r -d '' arg0 < "$cmdline" 2>/dev/null || continue
    name="${arg0##*/}"
    case "$name" in
      meetease-*) name="${name#meetease-}"; [ -n "${DEFAULT_PORTS[$name]:-}" ] && { echo "$name"; return 0; } ;;
      meetease) echo gateway; return 0 ;;   # the all-in-one launcher: its gateway
    esac
  done
  return 1
}

port="${1:-${HEALTH_PORT:-}}"
if [ -z "$port" ]; then
  service="$(running_service)" || { echo "meetease-healthcheck: no MeetEase process found" >&2; exit 1; }
  var="${service^^}_PORT"
  port="${!var:-${DEFAULT_PORTS[$service]}}"
fi
path="${2:-/health}"
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 3 status <&3 || exit 1
exec 3<&-
case "$status" in
  "HTTP/1.1 200"*|"HTTP/1.0 200"*) exit 0 ;;
  *) echo "GET $path on port $port: ${status%$'\r'}" >&2; exit 1 ;;
esac
