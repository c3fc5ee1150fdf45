#!/bin/bash
# The streaming replica: on first start, clone the primary with pg_basebackup (-R writes
# standby.signal and primary_conninfo), through a replication slot so the primary keeps the
# WAL this replica still needs (bounded by max_slot_wal_keep_size on the primary). Later
# starts find the data directory and simply resume streaming.
set -euo pipefail

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready --host postgres-primary --port 5432 --quiet; do
    echo "waiting for postgres-primary"; sleep 1
  done
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  PGPASSWORD="$REPLICATION_PASSWORD" gosu postgres pg_basebackup \
    --host postgres-primary --port 5432 --username replicator \
    --pgdata "$PGDATA" --wal-method stream --write-recovery-conf \
    --create-slot --slot replica_1 --checkpoint fast --progress
fi

exec docker-entrypoint.sh postgres -c hot_standby=on -c hot_standby_feedback=on \
  -c track_commit_timestamp=on -c max_connections=200
