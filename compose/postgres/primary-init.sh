#!/bin/bash
# Runs once, when the primary's data directory is created (docker-entrypoint-initdb.d).
# Roles: replicator (streaming replication), infrawatch (the service, owner of "app"),
# exporter (postgres_exporter and pgbouncer_exporter, read-only monitoring).
set -euo pipefail

# psql variables quote the passwords (:'name'), so no password can break out of the SQL.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v replication_password="$REPLICATION_PASSWORD" \
  -v infrawatch_password="$INFRAWATCH_DB_PASSWORD" \
  -v exporter_password="$EXPORTER_DB_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'replication_password';
CREATE ROLE infrawatch WITH LOGIN PASSWORD :'infrawatch_password';
CREATE ROLE exporter WITH LOGIN PASSWORD :'exporter_password';
-- pg_monitor: pg_stat_* views, replication status and settings, without superuser.
GRANT pg_monitor TO infrawatch, exporter;
CREATE DATABASE app OWNER infrawatch;
SQL

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname app \
  -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"

# Replication connections from the compose network, with SCRAM.
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
