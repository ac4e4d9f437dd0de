#!/bin/bash
# Run once by the postgres image on an empty data folder (docker-entrypoint-initdb.d):
# one database per service, owned by a role of the same name whose password comes
# from <SERVICE>_DB_PASSWORD. Services keep their tables in a schema named after
# themselves inside their own database. No role can reach another service's data.
set -euo pipefail
for service in auth users signaling notify analytics; do
  var="${service^^}_DB_PASSWORD"
  password="${!var:?${var} is not set}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v role="$service" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done
