#!/usr/bin/env bash
# Brings up a local PostgreSQL for the store tests, without systemd, as root, on Debian:
#   installs Debian's postgresql package if it is missing, creates the cluster if there is none, makes it listen
#   on 127.0.0.1 only, starts it if it is not running, and creates the test role and database if missing.
# Safe to run any number of times. Progress goes to stderr; the only line on stdout is the URL, so:
#   export POSTERN_TEST_PG="$(bash .ci/pg-setup.sh)"
# POSTERN_PG_USER, POSTERN_PG_PASSWORD and POSTERN_PG_DB change the role, password and database it creates.
set -euo pipefail

PG_USER="${POSTERN_PG_USER:-postern}"
PG_PASSWORD="${POSTERN_PG_PASSWORD:-postern}"
PG_DB="${POSTERN_PG_DB:-postern_test}"
PG_CLUSTER="main"
READY_TIMEOUT_SECONDS=60

PG_VERSION=""
PG_PORT=""
URL=""

log() { echo "pg-setup: $*" >&2; }

newest_version() {
  ls /usr/lib/postgresql 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n 1 || true
}

cluster_exists() {
  pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { f = 1 } END { exit !f }'
}

cluster_online() {
  pg_lsclusters -h |
    awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c && $4 == "online" { f = 1 } END { exit !f }'
}

# --skip-systemctl-redirect: start the server ourselves even where systemd is present, since CI has none.
pg_ctl_cluster() {
  pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" "$1" </dev/null
}

as_postgres_sql() {
  runuser -u postgres -- psql -p "$PG_PORT" -X -q -v ON_ERROR_STOP=1 -tA -c "$1" </dev/null
}

check_arguments() {
  if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it installs packages and starts the cluster as the postgres user)"
    exit 1
  fi
  local name
  for name in PG_USER PG_DB; do
    if ! [[ "${!name}" =~ ^[a-z_][a-z0-9_]*$ ]]; then
      log "$name='${!name}' must be a plain lowercase SQL identifier"
      exit 1
    fi
  done
  if ! [[ "$PG_PASSWORD" =~ ^[A-Za-z0-9._~-]+$ ]]; then
    log "the password may hold only letters, digits and . _ ~ - (it goes into a URL and into SQL as is)"
    exit 1
  fi
}

install_server() {
  # The package's own attempt to start the server may be refused (no init system); it is started below.
  if [ -z "$(newest_version)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql </dev/null
  fi
  PG_VERSION="$(newest_version)"
  if [ -z "$PG_VERSION" ]; then
    log "no PostgreSQL server found under /usr/lib/postgresql after installing"
    exit 1
  fi
}

configure_and_start() {
  if ! cluster_exists; then
    log "creating cluster $PG_VERSION/$PG_CLUSTER"
    pg_createcluster "$PG_VERSION" "$PG_CLUSTER" </dev/null
  fi
  PG_PORT="$(pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { print $3 }')"

  # Loopback only, whatever the defaults say. A changed setting needs a restart if the server is already up.
  local conf_dir="/etc/postgresql/$PG_VERSION/$PG_CLUSTER/conf.d"
  local listen_conf="$conf_dir/postern-loopback.conf"
  local want="listen_addresses = '127.0.0.1'"
  local need_restart=0
  mkdir -p "$conf_dir"
  if [ "$(cat "$listen_conf" 2>/dev/null || true)" != "$want" ]; then
    printf '%s\n' "$want" >"$listen_conf"
    chown postgres:postgres "$listen_conf"
    need_restart=1
  fi

  # The socket folder lives on a tmpfs on many machines and is gone after a reboot.
  install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  if cluster_online; then
    if [ "$need_restart" -eq 1 ]; then
      log "restarting cluster $PG_VERSION/$PG_CLUSTER to listen on 127.0.0.1 only"
      pg_ctl_cluster restart
    else
      log "cluster $PG_VERSION/$PG_CLUSTER already running on port $PG_PORT"
    fi
  else
    log "starting cluster $PG_VERSION/$PG_CLUSTER"
    pg_ctl_cluster start
  fi

  local waited=0
  until pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; do
    if [ "$waited" -ge "$READY_TIMEOUT_SECONDS" ]; then
      log "PostgreSQL did not accept connections on 127.0.0.1:$PG_PORT within ${READY_TIMEOUT_SECONDS}s;" \
        "see /var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log"
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

create_role_and_database() {
  # The role owns the database, so tests may create and drop schemas in it.
  if [ "$(as_postgres_sql "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != "1" ]; then
    log "creating role $PG_USER"
    as_postgres_sql "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'"
  else
    # Keep the password the URL says, even if someone changed it.
    as_postgres_sql "ALTER ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'"
  fi
  if [ "$(as_postgres_sql "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != "1" ]; then
    log "creating database $PG_DB owned by $PG_USER"
    as_postgres_sql "CREATE DATABASE $PG_DB OWNER $PG_USER"
  fi

  # A last check over TCP with the password, as the tests will connect.
  if ! PGPASSWORD="$PG_PASSWORD" psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -tA \
    -c 'SELECT 1' </dev/null >/dev/null; then
    log "cannot log in as $PG_USER to $PG_DB on 127.0.0.1:$PG_PORT"
    exit 1
  fi
  URL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
  log "ready"
}

main() {
  check_arguments
  install_server
  configure_and_start
  create_role_and_database
}

# main runs with stdout sent to stderr, so that the URL is alone on stdout. The server it starts must not hold
# the caller's stdout open (a caller reading it, as in $(...), would wait for the server to exit): bash keeps
# the saved stdout of a redirected function call close-on-exec, so no child inherits it.
main >&2
echo "$URL"
