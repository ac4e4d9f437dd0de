#!/bin/bash
# meetease-healthcheck [PORT] [PATH]: exit 0 when GET PATH on 127.0.0.1:PORT answers
# 200. PORT defaults to $HEALTH_PORT, then 8000; PATH to /health. Uses bash's
# /dev/tcp, so the runtime image needs no curl.
set -u
port="${1:-${HEALTH_PORT:-8000}}"
path="${2:-/health}"
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 3 status <&3 || exit 1
exec 3<&-
case "$status" in
  "HTTP/1.1 200"*|"HTTP/1.0 200"*) exit 0 ;;
  *) echo "GET $path on port $port: ${status%$'\r'}" >&2; exit 1 ;;
esac
