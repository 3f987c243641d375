# shellcheck shell=bash
# Shared helpers for scripts/services. Sourced, not executed.
#
# Conventions: every runtime file of an instance lives under $ETTER_DIR (default <repo>/.etter):
#   .etter/services.env   connection settings (export ETTER_...=... lines)
#   .etter/logs/          service logs
#   .etter/run/           pid files
#   .etter/tls/           the instance's CA and certificates
#   .etter/<service>/     data
# Installed tools (no running state) live under $ETTER_TOOLS_DIR (default $ETTER_DIR), so
# that a second instance (another ETTER_DIR, other ports) can share them:
#   venv/ (or $ETTER_VENV)   the python tooling (temporal CLI, dev server)
#   bin/                     go-built tools (grpcurl, helm, promtool, otelcol-etter, ...)
#   temporal-cluster/bin/    the Temporal server and its SQL tool

# a relative path is taken from the repository root (as scripts/codegen does with ETTER_VENV)
_abs_path() {
  case $1 in
    /*) printf '%s' "$1" ;;
    *) printf '%s' "$REPO_ROOT/$1" ;;
  esac
}

ETTER_DIR=$(_abs_path "${ETTER_DIR:-$REPO_ROOT/.etter}")
ETTER_TOOLS_DIR=$(_abs_path "${ETTER_TOOLS_DIR:-$ETTER_DIR}")
ETTER_ENV_FILE="$ETTER_DIR/services.env"
ETTER_LOG_DIR="$ETTER_DIR/logs"
ETTER_RUN_DIR="$ETTER_DIR/run"
ETTER_BIN_DIR="$ETTER_TOOLS_DIR/bin"
ETTER_HOST=127.0.0.1

# a short key naming this instance (for paths outside $ETTER_DIR): the repository's for the
# default instance (as before), else the instance directory's
instance_key() {
  if [[ $ETTER_DIR == "$REPO_ROOT/.etter" ]]; then
    printf '%s' "$REPO_ROOT"
  else
    printf '%s' "$ETTER_DIR"
  fi | sha256sum | cut -c1-12
}

# ---------------------------------------------------------------- output ----

_now_us() { echo "${EPOCHREALTIME/./}"; }

# elapsed seconds (one decimal) since a _now_us stamp
_elapsed() {
  local d=$(( $(_now_us) - $1 ))
  printf '%d.%ds' $(( d / 1000000 )) $(( (d % 1000000) / 100000 ))
}

say() { printf '[services] %s\n' "$*" >&2; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
die() {
  printf '[services] ERROR: %s\n' "$*" >&2
  exit 1
}

# die with the last lines of a log file
die_with_log() {
  local msg=$1 log=$2 n=${3:-40}
  printf '[services] ERROR: %s\n' "$msg" >&2
  if [[ -f $log ]]; then
    printf '[services] ---- last %d lines of %s ----\n' "$n" "$log" >&2
    tail -n "$n" "$log" >&2 || true
    printf '[services] ---- end of %s ----\n' "$log" >&2
  fi
  exit 1
}

# run a command quietly; on failure show its output and die
quiet() {
  local what=$1 log=$2
  shift 2
  mkdir -p "$(dirname "$log")"
  if ! "$@" >"$log" 2>&1; then
    die_with_log "$what failed (command: $*)" "$log" 60
  fi
}

ensure_dirs() { mkdir -p "$ETTER_DIR" "$ETTER_LOG_DIR" "$ETTER_RUN_DIR" "$ETTER_TOOLS_DIR" "$ETTER_BIN_DIR"; }

# tools_lock / tools_unlock : around an install into $ETTER_TOOLS_DIR, which instances share
# (their own locks, $ETTER_DIR/.services.lock, do not exclude each other). Nests; held on fd 8,
# which is closed for the daemons (start_bg). Callers check again under the lock whether
# another run installed the tool meanwhile.
_TOOLS_LOCKED=0
tools_lock() {
  if ((_TOOLS_LOCKED)); then
    _TOOLS_LOCKED=$((_TOOLS_LOCKED + 1))
    return 0
  fi
  mkdir -p "$ETTER_TOOLS_DIR"
  exec 8>"$ETTER_TOOLS_DIR/.tools.lock"
  if ! flock -n 8; then
    say "waiting for another scripts/services run installing into $ETTER_TOOLS_DIR"
    flock -w 1800 8 || die "could not get the lock $ETTER_TOOLS_DIR/.tools.lock"
  fi
  _TOOLS_LOCKED=1
}
tools_unlock() {
  ((_TOOLS_LOCKED)) || return 0
  _TOOLS_LOCKED=$((_TOOLS_LOCKED - 1))
  ((_TOOLS_LOCKED)) || exec 8>&-
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# ------------------------------------------------------------------ apt -----

_APT_UPDATED=0

# run as root: directly, or through passwordless sudo
as_root() {
  if is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 126
  fi
}

# apt_install PKG... : install Debian packages (quietly), apt-get update at most once per run
apt_install() {
  (($#)) || return 0
  if ! is_root && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
    die "missing Debian package(s): $*. Not root and no passwordless sudo: run 'sudo apt-get install -y $*' and retry."
  fi
  local log="$ETTER_LOG_DIR/apt.log" t0
  t0=$(_now_us)
  : >"$log"
  if ((!_APT_UPDATED)); then
    say "apt-get update"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q >>"$log" 2>&1; then
      die_with_log "apt-get update failed" "$log"
    fi
    _APT_UPDATED=1
  fi
  say "apt-get install $*"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
      --no-install-recommends "$@" >>"$log" 2>&1; then
    die_with_log "apt-get install $* failed" "$log"
  fi
  say "apt: installed $* ($(_elapsed "$t0"))"
}

# --------------------------------------------------------------- env file ---

declare -A _ENV_PENDING=()
declare -a _ENV_ORDER=()

# env_set KEY VALUE : remember a setting; env_flush writes it
env_set() {
  if [[ -z ${_ENV_PENDING[$1]+x} ]]; then _ENV_ORDER+=("$1"); fi
  _ENV_PENDING[$1]=$2
}

_env_quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:@%+=,-]*$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# merge pending settings into $ETTER_ENV_FILE atomically (tmp file + mv)
env_flush() {
  ((${#_ENV_ORDER[@]})) || return 0
  local tmp="$ETTER_ENV_FILE.tmp.$$" line key k
  declare -A seen=()
  {
    if [[ -f $ETTER_ENV_FILE ]]; then
      while IFS= read -r line || [[ -n $line ]]; do
        if [[ $line =~ ^export\ ([A-Za-z_][A-Za-z0-9_]*)= ]]; then
          key=${BASH_REMATCH[1]}
          if [[ -n ${_ENV_PENDING[$key]+x} ]]; then
            printf 'export %s=%s\n' "$key" "$(_env_quote "${_ENV_PENDING[$key]}")"
            seen[$key]=1
            continue
          fi
        fi
        printf '%s\n' "$line"
      done <"$ETTER_ENV_FILE"
    else
      printf '# Written by scripts/services up; source it: . .etter/services.env\n'
    fi
    for k in "${_ENV_ORDER[@]}"; do
      [[ -n ${seen[$k]+x} ]] && continue
      printf 'export %s=%s\n' "$k" "$(_env_quote "${_ENV_PENDING[$k]}")"
    done
  } >"$tmp"
  mv -f "$tmp" "$ETTER_ENV_FILE"
  _ENV_PENDING=()
  _ENV_ORDER=()
}

# ------------------------------------------------------------ processes -----

# pid_alive PIDFILE PATTERN : pid file names a live process whose command line
# contains PATTERN (guards against stale pid files after a reboot / pid reuse)
pid_alive() {
  local pidfile=$1 pattern=$2 pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

# value after FLAG in the command line of the process named by PIDFILE
pid_arg() {
  local pidfile=$1 flag=$2 pid
  pid=$(<"$pidfile") || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -A1 -xF -- "$flag" | sed -n 2p
}

# TCP port accepts connections on the loopback host
port_open() {
  (exec 3<>"/dev/tcp/$ETTER_HOST/$1") 2>/dev/null
}

# port_in_use PORT : a program listens on PORT, or holds it as the local end of a connection:
# an outgoing connection's ephemeral port (Linux picks those from ip_local_port_range, 32768-60999
# by default, which holds most of the default ports), and then the service cannot bind it. TIME-WAIT
# and orphaned sockets (those of a crashed server) do not count: they do not keep a server out.
port_in_use() {
  local users
  port_open "$1" && return 0
  command -v ss >/dev/null 2>&1 || return 1
  users=$(ss -Htanp "( sport = :$1 )" 2>/dev/null | awk '$1 != "LISTEN" && $1 != "TIME-WAIT" && /users:/')
  [[ -n $users ]] || return 1
  warn "port $1 is the local port of a connection: $(head -n 1 <<<"$users" | tr -s ' ')"
  warn "(an ephemeral port, range $(tr '\t' - </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)): ports below 32768 never are"
  return 0
}

# start_bg PIDFILE LOG CMD... : start CMD detached in its own session (setsid,
# nohup); its pid (== its process group id) goes to PIDFILE
start_bg() {
  local pidfile=$1 log=$2
  shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$log")"
  # keep the previous log of the service for post-mortems
  if [[ -s $log ]]; then mv -f "$log" "$log.1"; fi
  # 9>&- 8>&-: the lock fds of scripts/services must not leak into the daemon
  setsid nohup "$@" </dev/null >"$log" 2>&1 9>&- 8>&- &
  echo $! >"$pidfile"
}

# stop_pid NAME PIDFILE PATTERN [TIMEOUT] : SIGTERM the process group, wait, then SIGKILL
stop_pid() {
  local name=$1 pidfile=$2 pattern=$3 timeout=${4:-60} pid i
  if ! pid_alive "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(<"$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 5; i++)); do
    [[ -d /proc/$pid ]] || break
    sleep 0.2
  done
  if [[ -d /proc/$pid ]]; then
    warn "$name did not stop within ${timeout}s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$pidfile"
}

# ---------------------------------------------------------------- crash -----

# pid_gone PID : no such process any more, or only its zombie (its ports are closed then)
pid_gone() {
  local stat
  { stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 0
  stat=${stat##*) } # the fields after "(comm) ": state ppid pgrp ...
  [[ ${stat%% *} == Z ]]
}

# pgid_led PID : prints PID when it leads its own process group (start_bg's setsid, a
# daemon's own setsid), so that the group can be killed without hitting anyone else
pgid_led() {
  local stat fields
  { stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
  read -r -a fields <<<"${stat##*) }"
  [[ ${fields[2]} == "$1" ]] && echo "$1"
}

# group_gone PGID : no live process is left in the process group
group_gone() {
  local p
  for p in $(pgrep -g "$1" 2>/dev/null); do
    pid_gone "$p" || return 1
  done
}

# wait_crashed NAME TIMEOUT_S PID PGID PORT... : until PID (and the group PGID, when not
# empty) is gone and none of the PORTs accepts connections any more
wait_crashed() {
  local name=$1 timeout=$2 pid=$3 pgid=$4 p busy end
  shift 4
  end=$((SECONDS + timeout))
  while :; do
    busy=""
    if pid_gone "$pid" && { [[ -z $pgid ]] || group_gone "$pgid"; }; then
      for p in "$@"; do
        if port_open "$p"; then busy+=" $p"; fi
      done
      [[ -z $busy ]] && return 0
    fi
    ((SECONDS < end)) ||
      die "$name: ${busy:+ports$busy still open}${busy:-process $pid still there} ${timeout}s after the crash"
    sleep 0.05
  done
}

# crash_pid NAME PIDFILE PORT... : crash the (running, checked by the caller) service of
# PIDFILE: SIGKILL to its process group (when it leads one) and to it; back once it is gone
# and its PORTs are free. The pid file stays behind, as after a real crash: `up` copes.
crash_pid() {
  local name=$1 pidfile=$2 pid pgid t0 p ports=()
  shift 2
  for p in "$@"; do [[ -n $p ]] && ports+=("$p"); done
  t0=$(_now_us)
  pid=$(<"$pidfile")
  pgid=$(pgid_led "$pid") || pgid=""
  if [[ -n $pgid ]]; then kill -KILL -- "-$pgid" 2>/dev/null || true; fi
  kill -KILL "$pid" 2>/dev/null || true
  wait_crashed "$name" 30 "$pid" "$pgid" "${ports[@]}"
  say "$name crashed: SIGKILL to pid $pid${pgid:+ and its process group}; ports ${ports[*]} free ($(_elapsed "$t0"))"
}

# wait_ready NAME DEADLINE_S LOG PIDFILE PATTERN CHECK_CMD... : poll CHECK_CMD until it
# succeeds; fail early if the process died, or at the deadline, with a log tail
# A process seen not running twice in a row (0.5 s apart) has exited: a single miss can be the
# moment between fork and exec, or a launcher re-executing itself (the JVM's does), when
# /proc/PID/cmdline does not show the program yet.
wait_ready() {
  local name=$1 deadline=$2 log=$3 pidfile=$4 pattern=$5
  shift 5
  local end=$((SECONDS + deadline)) missed=0
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [[ -n $pidfile ]] && ! pid_alive "$pidfile" "$pattern"; then
      missed=$((missed + 1))
      if ((missed >= 2)); then
        die_with_log "$name exited during startup" "$log"
      fi
    else
      missed=0
    fi
    if ((SECONDS >= end)); then
      die_with_log "$name not ready within ${deadline}s" "$log"
    fi
    sleep 0.5
  done
}

sha256_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
