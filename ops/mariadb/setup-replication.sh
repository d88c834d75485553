#!/usr/bin/env bash
# One-shot of docker-compose.yml (service mysql-replication): makes mysql-replica a GTID replica of
# mysql-primary. Idempotent: on later runs a replica that is already configured is only started and checked.
#
# Environment: PRIMARY_HOST, REPLICA_HOST, MYSQL_PORT, DATABASE, MARIADB_ROOT_PASSWORD (root on both
# servers), REPLICATION_USER, REPLICATION_PASSWORD (created on the primary; no single quotes in passwords).
set -euo pipefail

: "${PRIMARY_HOST:?}" "${REPLICA_HOST:?}" "${DATABASE:?}" "${MARIADB_ROOT_PASSWORD:?}"
: "${REPLICATION_USER:?}" "${REPLICATION_PASSWORD:?}"
MYSQL_PORT="${MYSQL_PORT:-3306}"
# Both servers are already healthy when this runs, so the threads only need to connect.
RUNNING_TIMEOUT_S=60

export MYSQL_PWD="$MARIADB_ROOT_PASSWORD"  # keeps the root password off the process list

sql() {
  local host="$1"
  shift
  mariadb --host="$host" --port="$MYSQL_PORT" --user=root --batch --skip-column-names "$@"
}

# The replication account, kept out of the binlog: the replica has no use for it.
sql "$PRIMARY_HOST" <<SQL
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS '${REPLICATION_USER}'@'%' IDENTIFIED BY '${REPLICATION_PASSWORD}';
ALTER USER '${REPLICATION_USER}'@'%' IDENTIFIED BY '${REPLICATION_PASSWORD}';
GRANT REPLICATION SLAVE ON *.* TO '${REPLICATION_USER}'@'%';
SQL

if [ -z "$(sql "$REPLICA_HOST" -e 'SHOW SLAVE STATUS')" ]; then
  tables="$(sql "$PRIMARY_HOST" -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '${DATABASE}'")"
  if [ "$tables" != "0" ]; then
    echo "mysql-replication: the primary already has ${tables} tables in ${DATABASE} and the replica was never" \
         "configured. Seed the replica from a backup of the primary (mariadb-backup, or mariadb-dump" \
         "--gtid --master-data), set its gtid_slave_pos to the backup's position, then run this again." >&2
    exit 1
  fi
  # Both entrypoints created the same database and user, and nothing else is written before `init` (which
  # waits for this script): the replica starts at the primary's current position instead of replaying that
  # set-up, which would fail on the objects it already has.
  position="$(sql "$PRIMARY_HOST" -e 'SELECT @@GLOBAL.gtid_binlog_pos')"
  sql "$REPLICA_HOST" <<SQL
SET GLOBAL gtid_slave_pos = '${position}';
CHANGE MASTER TO
  MASTER_HOST = '${PRIMARY_HOST}',
  MASTER_PORT = ${MYSQL_PORT},
  MASTER_USER = '${REPLICATION_USER}',
  MASTER_PASSWORD = '${REPLICATION_PASSWORD}',
  MASTER_CONNECT_RETRY = 5,
  MASTER_USE_GTID = slave_pos;
SQL
  echo "mysql-replication: replica configured from GTID position '${position}'"
fi

sql "$REPLICA_HOST" -e 'START SLAVE'

deadline=$((SECONDS + RUNNING_TIMEOUT_S))
status=""
while [ "$SECONDS" -lt "$deadline" ]; do
  status="$(sql "$REPLICA_HOST" --vertical -e 'SHOW SLAVE STATUS')"
  if grep -q 'Slave_IO_Running: Yes' <<<"$status" && grep -q 'Slave_SQL_Running: Yes' <<<"$status"; then
    echo "mysql-replication: replica running"
    exit 0
  fi
  sleep 1
done
echo "mysql-replication: replication threads not running after ${RUNNING_TIMEOUT_S} s:" >&2
echo "$status" >&2
exit 1
