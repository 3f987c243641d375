# shellcheck shell=bash
# neo4j for scripts/services: Neo4j Community (Maven Central) embedded in our
# own launcher, tools/neo4j-launcher, running on Java 17 (or 21). Sourced.

NEO4J_PORT="${ETTER_NEO4J_PORT:-57687}"
NEO4J_HEAP="${ETTER_NEO4J_HEAP:-512m}"
NEO4J_PAGECACHE="${ETTER_NEO4J_PAGECACHE:-256m}"
NEO4J_PASSWORD="${ETTER_NEO4J_PASSWORD:-}"
NEO4J_HOME="$ETTER_DIR/neo4j"
NEO4J_PID="$ETTER_RUN_DIR/neo4j.pid"
NEO4J_LOG="$ETTER_LOG_DIR/neo4j.log"
NEO4J_SRC="$REPO_ROOT/tools/neo4j-launcher"
NEO4J_TARGET="$NEO4J_SRC/target"
NEO4J_STAMP="$NEO4J_TARGET/.etter-build.sha256"
NEO4J_MAIN=dev.etter.neo4j.Launcher
NEO4J_URI="bolt://$ETTER_HOST:$NEO4J_PORT"
# Bolt TLS, optional on the same port (bolt:// and bolt+s://), with the project CA's server
# certificate copied into a Neo4j SSL policy directory (the launcher's --tls-dir)
NEO4J_TLS_DIR="$NEO4J_HOME/certificates/bolt"
NEO4J_TLS_URI="bolt+s://localhost:$NEO4J_PORT"

# a JDK 17 or 21 (Neo4j 5.26 supports both); never a newer one
_java_home() {
  local d
  if [[ -n ${ETTER_NEO4J_JAVA_HOME:-} ]]; then echo "$ETTER_NEO4J_JAVA_HOME"; return 0; fi
  for d in /usr/lib/jvm/java-17-openjdk-* /usr/lib/jvm/java-21-openjdk-*; do
    [[ -x $d/bin/java && -x $d/bin/javac ]] && { echo "$d"; return 0; }
  done
  return 1
}

svc_neo4j_apt() {
  _java_home >/dev/null || echo openjdk-17-jdk-headless
  command -v mvn >/dev/null 2>&1 || echo maven
  tls_apt
}

_neo4j_want_stamp() {
  {
    cat "$NEO4J_SRC/pom.xml"
    find "$NEO4J_SRC/src" -type f -print0 | LC_ALL=C sort -z | xargs -0 cat
    _java_home
  } | sha256sum | cut -d' ' -f1
}

_neo4j_built() {
  [[ -f $NEO4J_TARGET/neo4j-launcher.jar && -d $NEO4J_TARGET/lib && -f $NEO4J_STAMP &&
    $(<"$NEO4J_STAMP") == "$(_neo4j_want_stamp)" ]]
}

_neo4j_build() {
  local t0 jh
  t0=$(_now_us)
  # tools/neo4j-launcher/target is the repository's: shared by every instance
  tools_lock
  if _neo4j_built; then
    tools_unlock
    return 0
  fi
  jh=$(_java_home) || die "neo4j: no JDK 17/21 found under /usr/lib/jvm (set ETTER_NEO4J_JAVA_HOME)"
  say "neo4j: building tools/neo4j-launcher (mvn package)"
  # drop old dependency jars so that a version bump never leaves two on the classpath
  rm -rf "${NEO4J_TARGET:?}/lib" "$NEO4J_STAMP"
  quiet "neo4j launcher build (mvn)" "$ETTER_LOG_DIR/neo4j-build.log" \
    env JAVA_HOME="$jh" PATH="$jh/bin:$PATH" mvn -B -q -f "$NEO4J_SRC/pom.xml" package
  _neo4j_want_stamp >"$NEO4J_STAMP"
  tools_unlock
  say "neo4j: launcher built ($(_elapsed "$t0"))"
}

# the home directory names the instance: another instance's launcher never matches
NEO4J_PATTERN="$NEO4J_MAIN --home $NEO4J_HOME "
_neo4j_running() { pid_alive "$NEO4J_PID" "$NEO4J_PATTERN"; }

# private.key + public.crt (Neo4j's names) from .etter/tls; true when they changed
_neo4j_tls_files() {
  local changed=1 src dst
  mkdir -p "$NEO4J_TLS_DIR"
  chmod 700 "$NEO4J_TLS_DIR"
  for src in server.key server.pem; do
    dst=$NEO4J_TLS_DIR/public.crt
    [[ $src == server.key ]] && dst=$NEO4J_TLS_DIR/private.key
    cmp -s "$TLS_DIR/$src" "$dst" && continue
    install -m 600 "$TLS_DIR/$src" "$dst"
    changed=0
  done
  return "$changed"
}

# the TLS handshake on the Bolt port verifies against the project CA (Bolt TLS starts at once)
_neo4j_tls_ok() {
  openssl s_client -connect "localhost:$NEO4J_PORT" -CAfile "$TLS_CA" -verify_hostname localhost \
    -verify_return_error </dev/null >/dev/null 2>&1
}

_neo4j_ready() {
  grep -q '^ETTER_NEO4J_READY' "$NEO4J_LOG" 2>/dev/null && port_open "$NEO4J_PORT"
}

svc_neo4j_up() {
  local t0 jh tls_changed=0
  t0=$(_now_us)
  ensure_tls
  if ! _neo4j_built; then
    if _neo4j_running; then
      say "neo4j: launcher sources changed; restarting"
      svc_neo4j_down
    fi
    _neo4j_build
  fi
  jh=$(_java_home) || die "neo4j: no JDK 17/21 found under /usr/lib/jvm"
  _neo4j_tls_files && tls_changed=1
  if _neo4j_running && [[ $(pid_arg "$NEO4J_PID" --port) != "$NEO4J_PORT" ]]; then
    say "neo4j: running on another port than $NEO4J_PORT; restarting"
    svc_neo4j_down
  elif _neo4j_running &&
    [[ $tls_changed == 1 || $(pid_arg "$NEO4J_PID" --tls-dir) != "$NEO4J_TLS_DIR" ]]; then
    say "neo4j: Bolt TLS off or certificates changed; restarting"
    svc_neo4j_down
  fi
  if ! _neo4j_running; then
    rm -f "$NEO4J_PID"
    if port_in_use "$NEO4J_PORT"; then
      die "neo4j: port $NEO4J_PORT is already in use by another program (set ETTER_NEO4J_PORT)"
    fi
    mkdir -p "$NEO4J_HOME"
    start_bg "$NEO4J_PID" "$NEO4J_LOG" \
      env ETTER_NEO4J_PASSWORD="$NEO4J_PASSWORD" \
      "$jh/bin/java" \
      -Xms64m "-Xmx$NEO4J_HEAP" -XX:MaxDirectMemorySize=128m -XX:MaxMetaspaceSize=256m \
      -XX:ReservedCodeCacheSize=96m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
      -XX:-OmitStackTraceInFastThrow -Djdk.nio.maxCachedBufferSize=1024 \
      -Dio.netty.tryReflectionSetAccessible=true -Dfile.encoding=UTF-8 \
      --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
      --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED \
      -cp "$NEO4J_TARGET/neo4j-launcher.jar:$NEO4J_TARGET/lib/*" "$NEO4J_MAIN" \
      --home "$NEO4J_HOME" --address "$ETTER_HOST" --port "$NEO4J_PORT" --pagecache "$NEO4J_PAGECACHE" \
      --tls-dir "$NEO4J_TLS_DIR"
  fi
  wait_ready neo4j "${ETTER_NEO4J_DEADLINE:-180}" "$NEO4J_LOG" "$NEO4J_PID" "$NEO4J_PATTERN" _neo4j_ready
  env_set ETTER_GRAPH__URI "$NEO4J_URI"
  env_set ETTER_GRAPH__USER neo4j
  env_set ETTER_GRAPH__PASSWORD "$NEO4J_PASSWORD"
  wait_ready "neo4j Bolt TLS" 10 "$NEO4J_LOG" "$NEO4J_PID" "$NEO4J_PATTERN" _neo4j_tls_ok
  env_set ETTER_TEST__GRAPH_TLS_URI "$NEO4J_TLS_URI"
  say "neo4j ready on $ETTER_HOST:$NEO4J_PORT, Bolt TLS optional ($(_elapsed "$t0"))"
}

svc_neo4j_down() {
  if _neo4j_running; then
    stop_pid neo4j "$NEO4J_PID" "$NEO4J_PATTERN" 90
    say "neo4j stopped"
  fi
  rm -f "$NEO4J_PID"
}

# like a crash: SIGKILL of the JVM (the store's file locks go with it; the next start recovers
# from the transaction log)
svc_neo4j_crash() {
  if _neo4j_running; then
    crash_pid neo4j "$NEO4J_PID" "$(pid_arg "$NEO4J_PID" --port)"
  else
    say "neo4j was not running"
  fi
}

svc_neo4j_status() {
  local port
  if _neo4j_running; then
    port=$(pid_arg "$NEO4J_PID" --port) || port=$NEO4J_PORT
    if [[ -n $(pid_arg "$NEO4J_PID" --tls-dir) ]]; then
      echo "running bolt://$ETTER_HOST:${port:-$NEO4J_PORT} tls=bolt+s://localhost:${port:-$NEO4J_PORT}"
    else
      echo "running bolt://$ETTER_HOST:${port:-$NEO4J_PORT} tls=off"
    fi
  else
    echo "stopped $NEO4J_URI"
  fi
}
