#!/bin/sh
# Runs once, when the official image's entrypoint initialises an empty data directory
# (as POSTGRES_USER, on the local socket). Creates the application owner and a read-only
# role for dashboards, which reads every pipeline's schema the owner creates later. Plain
# sh, and psql variables instead of string pasting, so a password may contain any character.
set -eu
: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}" "${APP_USER:?}" "${APP_PASSWORD:?}"
: "${READER_USER:?}" "${READER_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v app_user="$APP_USER" -v app_password="$APP_PASSWORD" \
  -v reader_user="$READER_USER" -v reader_password="$READER_PASSWORD" \
  -v app_db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
-- Since PostgreSQL 15 the public schema belongs to pg_database_owner, so owning the
-- database is what lets the migrations create tables there.
ALTER DATABASE :"app_db" OWNER TO :"app_user";
CREATE ROLE :"reader_user" LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE :"app_db" TO :"reader_user";
GRANT USAGE ON SCHEMA public TO :"reader_user";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader_user";
-- The tables do not exist yet (the operator migrates later, as app_user): grant ahead.
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_user" IN SCHEMA public
  GRANT SELECT ON TABLES TO :"reader_user";
-- Each EnergyPipeline keeps its tables in a schema of its own (spec.database.schema), which
-- the operator's migration creates as app_user: the reader may enter every such schema and
-- read every table and view app_user creates anywhere (views count as TABLES here), so a
-- new pipeline's dashboards work without a grant.
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_user" GRANT USAGE ON SCHEMAS TO :"reader_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_user" GRANT SELECT ON TABLES TO :"reader_user";
-- Dashboards must never hold a query open for long or lock the ingest path.
ALTER ROLE :"reader_user" SET statement_timeout = '30s';
ALTER ROLE :"reader_user" SET default_transaction_read_only = on;
SQL
