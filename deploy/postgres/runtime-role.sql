-- The portal's runtime role (DATABASE_URL): it logs in, owns nothing, and receives its grants from
-- the migrations, which run as the owner (DATABASE_MIGRATE_URL): full DML on every table, only
-- INSERT/SELECT on the audit ledger and its checkpoints (docs/security.md). Run once, as an
-- administrator of the database server, before the first `manage.py migrate`:
--   psql -v app_password='…' -d portal -f deploy/postgres/runtime-role.sql
-- docker-compose.yml runs it at the database's first start (deploy/postgres/init-runtime-role.sh).
CREATE ROLE portal_app LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
