# shellcheck shell=bash
# postgres and redis for scripts/services. Sourced, not executed.

# ============================================================ postgres ======
# A project-private cluster in .etter/postgres/data (never the system one).
# PostgreSQL refuses to run as root: as root the cluster belongs to (and runs
# as) the OS user $ETTER_PG_OS_USER (default postgres); otherwise the caller.

PG_PORT="${ETTER_PG_PORT:-55432}"
PG_OS_USER="${ETTER_PG_OS_USER:-postgres}"
PG_URL="postgres://etter:etter@$ETTER_HOST:$PG_PORT/etter"
PG_ADMIN_URL="postgres://etter:etter@$ETTER_HOST:$PG_PORT/postgres"
# TLS (ssl = on, plaintext still accepted): host localhost so that the certificate name matches
PG_TLS_URL="postgres://etter:etter@localhost:$PG_PORT/etter?sslmode=verify-full&sslrootcert=$TLS_CA"

_pg_bin_dir() {
  local d want=""
  [[ -f ${PG_DATA:-}/PG_VERSION ]] && want=$(<"$PG_DATA/PG_VERSION")
  if [[ -n $want ]]; then
    d=/usr/lib/postgresql/$want/bin
    [[ -x $d/initdb ]] && { echo "$d"; return 0; }
    return 1
  fi
  # shellcheck disable=SC2012
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x $d/initdb ]] && { echo "$d"; return 0; }
  done
  return 1
}

# where the cluster lives: .etter/postgres, unless (as root) the OS user
# cannot reach it (e.g. the repo is below /root); then a private dir in /var/lib
_pg_paths() {
  PG_BASE="$ETTER_DIR/postgres"
  if is_root && [[ -L $PG_BASE ]]; then
    PG_BASE=$(readlink -f "$PG_BASE")
  fi
  PG_DATA="$PG_BASE/data"
  PG_SOCK="$PG_BASE/run"
  PG_LOG="$PG_BASE/postgres.log"
  # copies of the server certificate and key owned by the OS user (PostgreSQL refuses a
  # key readable by others, and cannot read root's 0600 .etter/tls/server.key)
  PG_TLS="$PG_BASE/tls"
}
_pg_paths

# run a PostgreSQL binary as the cluster's OS user
_pg() {
  if is_root; then
    # from / : the OS user may not be allowed into the caller's cwd
    (cd / && runuser -u "$PG_OS_USER" -- "$@")
  else
    "$@"
  fi
}

svc_postgres_apt() {
  _pg_bin_dir >/dev/null || echo postgresql
  tls_apt
}

_pg_prepare_dirs() {
  if is_root; then
    if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
    fi
    mkdir -p "$PG_BASE"
    chown "$PG_OS_USER:" "$PG_BASE"
    if ! runuser -u "$PG_OS_USER" -- test -w "$PG_BASE"; then
      # the OS user cannot traverse a parent of the repo: keep the cluster outside
      local alt
      alt="/var/lib/etter-postgres/$(instance_key)"
      warn "user $PG_OS_USER cannot reach $PG_BASE; keeping the cluster in $alt (symlinked)"
      mkdir -p "$alt"
      chown "$PG_OS_USER:" "$alt" "$(dirname "$alt")"
      chmod 755 "$(dirname "$alt")"
      rmdir "$PG_BASE" 2>/dev/null || rm -rf "$PG_BASE"
      ln -s "$alt" "$ETTER_DIR/postgres"
      _pg_paths
    fi
    mkdir -p "$PG_SOCK"
    chown "$PG_OS_USER:" "$PG_SOCK"
  else
    mkdir -p "$PG_BASE" "$PG_SOCK"
  fi
  # unix socket paths are limited to 107 bytes
  if ((${#PG_SOCK} + 20 > 107)); then
    PG_SOCK="/tmp/etter-pg-$(instance_key)"
    mkdir -p "$PG_SOCK"
    is_root && chown "$PG_OS_USER:" "$PG_SOCK"
  fi
}

_pg_running() {
  [[ -f $PG_DATA/postmaster.pid ]] || return 1
  local bin
  bin=$(_pg_bin_dir) || return 1
  _pg "$bin/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

# copy the project's server certificate for the cluster's OS user (when it changed)
_pg_tls_files() {
  local f
  mkdir -p "$PG_TLS"
  chmod 700 "$PG_TLS"
  is_root && chown "$PG_OS_USER:" "$PG_TLS"
  for f in server.pem server.key ca.pem; do
    cmp -s "$TLS_DIR/$f" "$PG_TLS/$f" && continue
    cp -f "$TLS_DIR/$f" "$PG_TLS/$f.tmp"
    chmod 600 "$PG_TLS/$f.tmp"
    is_root && chown "$PG_OS_USER:" "$PG_TLS/$f.tmp"
    mv -f "$PG_TLS/$f.tmp" "$PG_TLS/$f"
  done
}

# (re)write etter.conf; true when it changed. Before every start, so that ETTER_PG_PORT
# changes take effect, and while running (then reloaded), so that a cluster made before
# TLS gets it and new certificates are loaded.
_pg_write_conf() {
  local tmp="$PG_DATA/etter.conf.tmp"
  cat >"$tmp" <<EOF
# managed by scripts/services (rewritten by every up)
listen_addresses = '$ETTER_HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
synchronous_commit = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
# TLS with the project CA's server certificate; plaintext stays accepted (pg_hba: host)
ssl = on
ssl_cert_file = '$PG_TLS/server.pem'
ssl_key_file = '$PG_TLS/server.key'
ssl_ca_file = '$PG_TLS/ca.pem'
# certificates: $(tls_fingerprint)
EOF
  if cmp -s "$tmp" "$PG_DATA/etter.conf"; then
    rm -f "$tmp"
    return 1
  fi
  is_root && chown "$PG_OS_USER:" "$tmp"
  mv -f "$tmp" "$PG_DATA/etter.conf"
}

# a TLS connection that verifies the certificate chain and the host name
_pg_tls_ok() {
  [[ $(PGCONNECT_TIMEOUT=5 "$1/psql" -X -At "$PG_TLS_URL" \
    -c 'select ssl from pg_stat_ssl where pid = pg_backend_pid()' 2>/dev/null) == t ]]
}

svc_postgres_up() {
  local bin t0
  t0=$(_now_us)
  bin=$(_pg_bin_dir) || die "PostgreSQL binaries not found (expected /usr/lib/postgresql/*/bin/initdb${PG_DATA:+, version $(cat "$PG_DATA/PG_VERSION" 2>/dev/null)}); delete .etter/postgres to start over"
  ensure_tls
  _pg_prepare_dirs
  _pg_tls_files
  if _pg_running && [[ $(sed -n 4p "$PG_DATA/postmaster.pid") != "$PG_PORT" ]]; then
    say "postgres: running on another port than $PG_PORT; restarting"
    svc_postgres_down
  fi
  if ! _pg_running; then
    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
      say "postgres: initdb $PG_DATA"
      rm -rf "$PG_DATA"
      mkdir -p "$PG_DATA"
      is_root && chown "$PG_OS_USER:" "$PG_DATA"
      chmod 700 "$PG_DATA"
      _pg touch "$PG_LOG"
      quiet "initdb" "$ETTER_LOG_DIR/postgres-initdb.log" \
        _pg "$bin/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256
      _pg sh -c "echo \"include_if_exists = 'etter.conf'\" >> '$PG_DATA/postgresql.conf'"
    fi
    _pg_write_conf || true
    if port_in_use "$PG_PORT"; then
      die "postgres: port $PG_PORT is already in use by another program (set ETTER_PG_PORT)"
    fi
    # pg_ctl copes with a stale postmaster.pid left by a reboot
    # 9>&- 8>&-: keep the lock fds of scripts/services out of the server
    if ! _pg "$bin/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -s >"$ETTER_LOG_DIR/postgres-ctl.log" 2>&1 9>&- 8>&-; then
      cat "$ETTER_LOG_DIR/postgres-ctl.log" >&2
      die_with_log "postgres did not start" "$PG_LOG"
    fi
  elif _pg_write_conf; then
    # ssl and its files take effect on a reload
    say "postgres: configuration changed (TLS); reloading"
    _pg "$bin/pg_ctl" reload -D "$PG_DATA" -s >/dev/null || die "postgres: pg_ctl reload failed"
  fi
  wait_ready postgres 60 "$PG_LOG" "" "" "$bin/pg_isready" -q -h "$PG_SOCK" -p "$PG_PORT"
  # role + database (idempotent), over the private unix socket as superuser
  quiet "postgres: creating role/database etter" "$ETTER_LOG_DIR/postgres-setup.log" \
    _pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'etter') THEN
    CREATE ROLE etter LOGIN CREATEDB PASSWORD 'etter';
  END IF;
END $$;
ALTER ROLE etter LOGIN CREATEDB CREATEROLE PASSWORD 'etter';
-- The tests drop their scratch databases WITH (FORCE) as etter; FORCE must also end an
-- autovacuum worker busy in the database (a backend of no role), which takes pg_signal_backend.
GRANT pg_signal_backend TO etter;
SELECT 'CREATE DATABASE etter OWNER etter' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'etter')\gexec
SQL
  # the real thing: a password login over TCP
  if ! PGCONNECT_TIMEOUT=5 "$bin/psql" -X -q -At "$PG_URL" -c 'select 1' >/dev/null 2>"$ETTER_LOG_DIR/postgres-check.log"; then
    die_with_log "postgres: cannot log in as etter over TCP" "$ETTER_LOG_DIR/postgres-check.log"
  fi
  # and over TLS (a reload is applied asynchronously: poll briefly)
  wait_ready "postgres TLS" 15 "$PG_LOG" "" "" _pg_tls_ok "$bin"
  env_set ETTER_STORE__URL "$PG_URL"
  env_set ETTER_TEST__POSTGRES_ADMIN_URL "$PG_ADMIN_URL"
  env_set ETTER_TEST__POSTGRES_TLS_URL "$PG_TLS_URL"
  say "postgres ready on $ETTER_HOST:$PG_PORT, TLS too ($(_elapsed "$t0"))"
}

svc_postgres_down() {
  local bin
  if _pg_running; then
    bin=$(_pg_bin_dir)
    _pg "$bin/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 -s || die "postgres did not stop"
    say "postgres stopped"
  fi
}

# like a crash: pg_ctl stop -m immediate ends the server and its backends at once, without a
# shutdown checkpoint, so that the next start runs crash recovery from the WAL
svc_postgres_crash() {
  local bin pid port t0
  if ! _pg_running; then
    say "postgres was not running"
    return 0
  fi
  t0=$(_now_us)
  bin=$(_pg_bin_dir)
  pid=$(sed -n 1p "$PG_DATA/postmaster.pid")
  port=$(sed -n 4p "$PG_DATA/postmaster.pid")
  _pg "$bin/pg_ctl" stop -D "$PG_DATA" -m immediate -w -t 60 -s || die "postgres: pg_ctl stop -m immediate failed"
  wait_crashed postgres 30 "$pid" "" "${port:-$PG_PORT}"
  say "postgres crashed: immediate shutdown of pid $pid, no checkpoint (crash recovery on the next start); port ${port:-$PG_PORT} free ($(_elapsed "$t0"))"
}

svc_postgres_status() {
  local port
  if _pg_running; then
    # the port it really runs on (line 4 of postmaster.pid)
    port=$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null) || true
    echo "running ${PG_URL/:$PG_PORT\//:${port:-$PG_PORT}/}"
  else
    echo "stopped $PG_URL"
  fi
}

# =============================================================== redis ======
# A private redis-server on $ETTER_REDIS_PORT (plaintext) and $ETTER_REDIS_TLS_PORT
# (TLS with the project CA's server certificate; client certificates optional),
# daemonized with a pid file.

REDIS_PORT="${ETTER_REDIS_PORT:-56379}"
REDIS_TLS_PORT="${ETTER_REDIS_TLS_PORT:-56380}"
REDIS_DIR="$ETTER_DIR/redis"
REDIS_PID="$ETTER_RUN_DIR/redis.pid"
REDIS_LOG="$ETTER_LOG_DIR/redis.log"
REDIS_URL="redis://$ETTER_HOST:$REDIS_PORT/"
REDIS_TLS_URL="rediss://localhost:$REDIS_TLS_PORT/"

svc_redis_apt() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || echo redis-server
  tls_apt
}

# the pid file names a redis-server working in this instance's $REDIS_DIR (not another
# instance's redis that got the pid of a stale file)
_redis_running() {
  pid_alive "$REDIS_PID" redis-server &&
    [[ $(readlink -f "/proc/$(<"$REDIS_PID")/cwd" 2>/dev/null) == "$(readlink -f "$REDIS_DIR")" ]]
}

_redis_ping() {
  [[ $(redis-cli -h "$ETTER_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

# verifies the certificate against the project CA
_redis_tls_ping() {
  [[ $(redis-cli --tls --cacert "$TLS_CA" -h localhost -p "$REDIS_TLS_PORT" ping 2>/dev/null) == PONG ]]
}

# the configuration for the current settings; a running server with another one is restarted
_redis_conf() {
  cat <<EOF
# managed by scripts/services (rewritten on every start)
bind $ETTER_HOST
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile $REDIS_PID
logfile $REDIS_LOG
dir $REDIS_DIR
save ""
appendonly no
tls-port $REDIS_TLS_PORT
tls-cert-file $TLS_SERVER_CERT
tls-key-file $TLS_SERVER_KEY
tls-ca-cert-file $TLS_CA
tls-auth-clients optional
# certificates: $(tls_fingerprint)
EOF
}

svc_redis_up() {
  local t0 conf p
  t0=$(_now_us)
  ensure_tls
  mkdir -p "$REDIS_DIR" "$ETTER_RUN_DIR" "$ETTER_LOG_DIR"
  conf=$(_redis_conf)
  if _redis_running && [[ $(<"$REDIS_DIR/redis.conf") != "$conf" ]]; then
    say "redis: running with other ports or certificates; restarting"
    svc_redis_down
  fi
  if ! _redis_running; then
    rm -f "$REDIS_PID"
    for p in "$REDIS_PORT" "$REDIS_TLS_PORT"; do
      if port_in_use "$p"; then
        die "redis: port $p is already in use by another program (set ETTER_REDIS_PORT / ETTER_REDIS_TLS_PORT)"
      fi
    done
    printf '%s\n' "$conf" >"$REDIS_DIR/redis.conf"
    if ! redis-server "$REDIS_DIR/redis.conf" >"$ETTER_LOG_DIR/redis-start.log" 2>&1 9>&- 8>&-; then
      cat "$ETTER_LOG_DIR/redis-start.log" >&2
      die_with_log "redis-server did not start" "$REDIS_LOG"
    fi
  fi
  wait_ready redis 30 "$REDIS_LOG" "" "" _redis_ping
  # the pid file is written by the daemonized server; make sure it is ours
  wait_ready redis 10 "$REDIS_LOG" "" "" _redis_running
  wait_ready "redis TLS" 10 "$REDIS_LOG" "" "" _redis_tls_ping
  env_set ETTER_REDIS__URL "$REDIS_URL"
  env_set ETTER_TEST__REDIS_TLS_URL "$REDIS_TLS_URL"
  say "redis ready on $ETTER_HOST:$REDIS_PORT, TLS on $REDIS_TLS_PORT ($(_elapsed "$t0"))"
}

svc_redis_down() {
  if _redis_running; then
    # by pid, never by port (the port may belong to another checkout's redis)
    stop_pid redis "$REDIS_PID" redis-server 30
    say "redis stopped"
  fi
  rm -f "$REDIS_PID"
}

_redis_ports() {
  local port tls
  port=$(awk '$1 == "port" {print $2}' "$REDIS_DIR/redis.conf" 2>/dev/null) || true
  tls=$(awk '$1 == "tls-port" {print $2}' "$REDIS_DIR/redis.conf" 2>/dev/null) || true
  echo "${port:-$REDIS_PORT} ${tls:-$REDIS_TLS_PORT}"
}

# like a crash: SIGKILL (no save, no pid file removal)
svc_redis_crash() {
  if _redis_running; then
    # shellcheck disable=SC2046
    crash_pid redis "$REDIS_PID" $(_redis_ports)
  else
    say "redis was not running"
  fi
}

svc_redis_status() {
  local port tls
  if _redis_running; then
    port=$(awk '$1 == "port" {print $2}' "$REDIS_DIR/redis.conf" 2>/dev/null) || true
    tls=$(awk '$1 == "tls-port" {print $2}' "$REDIS_DIR/redis.conf" 2>/dev/null) || true
    echo "running redis://$ETTER_HOST:${port:-$REDIS_PORT}/ tls=$([[ -n $tls ]] && echo "rediss://localhost:$tls/" || echo none)"
  else
    echo "stopped $REDIS_URL tls=$REDIS_TLS_URL"
  fi
}
