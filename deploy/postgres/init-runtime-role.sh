#!/bin/sh
# docker-entrypoint-initdb.d hook of the postgres image: create the portal's runtime role at the
# database's first start (an existing data volume is left alone: run runtime-role.sql by hand).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_password="${PORTAL_APP_PASSWORD:?PORTAL_APP_PASSWORD is required}" \
    -f /docker-entrypoint-initdb.d/runtime-role.sql.in
