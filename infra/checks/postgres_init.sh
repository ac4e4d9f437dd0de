#!/usr/bin/env bash
# Runs infra/postgres/init-databases.sh the way the postgres image does, against a
# private, throwaway PostgreSQL (its own folder and port, stopped at the end), then
# checks one database per service owned by its own role, and that a role cannot
# connect to another service's database.
set -euo pipefail
cd "$(dirname "$0")/../.."

initdb="$(printf "%s\n" /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)"
[ -x "$initdb" ] || initdb=""
if [ -z "$initdb" ]; then
  echo "postgres_init: NOT RUN: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb); apt-get install postgresql to run it" >&2
  exit 3
fi
bin="$(dirname "$initdb")"
dir="$(mktemp -d /tmp/meetease-pginit.XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
cleanup() {
  as_pg "$bin/pg_ctl" -D "$dir/data" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

as_pg "$initdb" -D "$dir/data" -A trust -U postgres >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $dir" start >/dev/null
cp infra/postgres/init-databases.sh "$dir/"
chmod 755 "$dir/init-databases.sh"
as_pg env PGHOST=127.0.0.1 PGPORT="$port" POSTGRES_USER=postgres \
  AUTH_DB_PASSWORD=a USERS_DB_PASSWORD=u SIGNALING_DB_PASSWORD=s NOTIFY_DB_PASSWORD=n ANALYTICS_DB_PASSWORD=an \
  bash "$dir/init-databases.sh" >/dev/null

got="$(psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc \
  "select string_agg(datname || '=' || pg_get_userbyid(datdba), ' ' order by datname) from pg_database where datname not in ('postgres','template0','template1')")"
want="analytics=analytics auth=auth notify=notify signaling=signaling users=users"
[ "$got" = "$want" ] || { echo "postgres_init: databases and owners are '$got', expected '$want'" >&2; exit 1; }
psql -h 127.0.0.1 -p "$port" -U users -d users -v ON_ERROR_STOP=1 -qAtc "create schema users; create table users.t (i int);" >/dev/null \
  || { echo "postgres_init: role users cannot create its schema in database users" >&2; exit 1; }
if psql -h 127.0.0.1 -p "$port" -U users -d auth -Atc "select 1" >/dev/null 2>&1; then
  echo "postgres_init: role users can connect to database auth; databases are not isolated" >&2
  exit 1
fi
echo "postgres_init: one database per service, each owned by its role, no role reaches another's"
