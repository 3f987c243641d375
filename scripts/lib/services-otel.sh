# shellcheck shell=bash
# otel-collector for scripts/services: an OpenTelemetry Collector built from its Go modules with
# the OpenTelemetry Collector Builder (ocb) — the OTLP receiver and the file exporter, nothing
# else — so the tests can read the spans both binaries export. Sourced, not executed.
#
# It receives OTLP over gRPC on 127.0.0.1:$ETTER_OTEL_PORT (default 54317), over HTTP on the
# next port, and over gRPC with TLS on the one after (the project's test CA; client certificates
# required: ETTER_TEST__OTLP_TLS_ENDPOINT), and appends every batch of spans as one line of OTLP
# JSON to .etter/otel-collector/traces.jsonl (ETTER_TEST__OTLP_TRACES_FILE). Cold build ≈ 2 min.
OTEL_DIR="$ETTER_DIR/otel-collector"
OTEL_PORT="${ETTER_OTEL_PORT:-54317}"
OTEL_HTTP_PORT=$((OTEL_PORT + 1))
OTEL_TLS_PORT=$((OTEL_PORT + 2))
# core v0.161.0 goes with stable v1.67.0 and contrib v0.161.0 (the newest file exporter approved)
OTEL_CORE_VERSION=v0.161.0
OTEL_STABLE_VERSION=v1.67.0
OTEL_CONTRIB_VERSION=v0.161.0
OTEL_BIN="$ETTER_BIN_DIR/otelcol-etter"
OTEL_STAMP="$ETTER_BIN_DIR/.otelcol-etter.version"
OTEL_PID="$ETTER_RUN_DIR/otel-collector.pid"
OTEL_LOG="$ETTER_LOG_DIR/otel-collector.log"
OTEL_TRACES="$OTEL_DIR/traces.jsonl"

svc_otel_collector_apt() { :; }

# the configuration file names the instance: another instance's collector (same binary) never matches
OTEL_PATTERN="$OTEL_BIN --config $OTEL_DIR/config.yaml "
_otel_running() { pid_alive "$OTEL_PID" "$OTEL_PATTERN"; }

_otel_built() { [[ -x $OTEL_BIN && -f $OTEL_STAMP && $(<"$OTEL_STAMP") == "$1" ]]; }

_otel_build() {
  local want="otlp receiver, file exporter: core $OTEL_CORE_VERSION, stable $OTEL_STABLE_VERSION, contrib $OTEL_CONTRIB_VERSION"
  _otel_built "$want" && return 0
  local t0 go
  t0=$(_now_us)
  go=$(_go_bin) || die "otel-collector: go is needed to build it"
  # $OTEL_BIN is in $ETTER_TOOLS_DIR/bin, shared by instances
  tools_lock
  if _otel_built "$want"; then
    tools_unlock
    return 0
  fi
  _go_tool ocb go.opentelemetry.io/collector/cmd/builder "$OTEL_CORE_VERSION"
  mkdir -p "$OTEL_DIR/build"
  cat >"$OTEL_DIR/builder.yaml" <<YAML
# managed by scripts/services
dist:
  name: otelcol-etter
  description: OTLP in, files out, for the Etter pipeline's tests
  output_path: $OTEL_DIR/build
  version: ${OTEL_CORE_VERSION#v}
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $OTEL_CORE_VERSION
exporters:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter $OTEL_CONTRIB_VERSION
providers:
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider $OTEL_STABLE_VERSION
  # the collector's default scheme for \${NAME} in its configuration
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider $OTEL_STABLE_VERSION
YAML
  say "otel-collector: building it with ocb ($want)"
  env PATH="$(dirname "$go"):$PATH" CGO_ENABLED=0 "$ETTER_BIN_DIR/ocb" --config "$OTEL_DIR/builder.yaml" \
    >"$ETTER_LOG_DIR/otel-collector-build.log" 2>&1 ||
    { tail -n 20 "$ETTER_LOG_DIR/otel-collector-build.log" >&2; die "otel-collector: the build failed (see $ETTER_LOG_DIR/otel-collector-build.log)"; }
  install -m 0755 "$OTEL_DIR/build/otelcol-etter" "$OTEL_BIN"
  printf '%s\n' "$want" >"$OTEL_STAMP"
  tools_unlock
  say "otel-collector built: $OTEL_BIN ($(_elapsed "$t0"))"
}

_otel_config() {
  cat <<YAML
# managed by scripts/services (rewritten by every up; a change restarts the collector)
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: $ETTER_HOST:$OTEL_PORT
      http:
        endpoint: $ETTER_HOST:$OTEL_HTTP_PORT
  otlp/tls:
    protocols:
      grpc:
        endpoint: $ETTER_HOST:$OTEL_TLS_PORT
        tls:
          cert_file: $TLS_SERVER_CERT
          key_file: $TLS_SERVER_KEY
          client_ca_file: $TLS_CA
exporters:
  file:
    path: $OTEL_TRACES
    format: json
    # written at once, so a test reads what arrived without waiting for a flush
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp, otlp/tls]
      exporters: [file]
YAML
}

svc_otel_collector_up() {
  local t0 conf p
  t0=$(_now_us)
  _otel_build
  ensure_tls
  mkdir -p "$OTEL_DIR" "$ETTER_RUN_DIR" "$ETTER_LOG_DIR"
  conf=$(_otel_config)
  # the certificates' fingerprint: new certificates restart it too
  conf+=$'\n'"# certificates $(tls_fingerprint)"
  if _otel_running && [[ $(<"$OTEL_DIR/config.yaml") != "$conf" ]]; then
    say "otel-collector: configuration changed; restarting"
    svc_otel_collector_down
  fi
  if ! _otel_running; then
    rm -f "$OTEL_PID"
    for p in "$OTEL_PORT" "$OTEL_HTTP_PORT" "$OTEL_TLS_PORT"; do
      if port_in_use "$p"; then
        die "otel-collector: port $p is already in use by another program (set ETTER_OTEL_PORT; 3 ports)"
      fi
    done
    printf '%s\n' "$conf" >"$OTEL_DIR/config.yaml"
    start_bg "$OTEL_PID" "$OTEL_LOG" "$OTEL_BIN" --config "$OTEL_DIR/config.yaml"
  fi
  wait_ready otel-collector 30 "$OTEL_LOG" "$OTEL_PID" "$OTEL_PATTERN" port_open "$OTEL_PORT"
  wait_ready otel-collector 30 "$OTEL_LOG" "$OTEL_PID" "$OTEL_PATTERN" port_open "$OTEL_TLS_PORT"
  env_set ETTER_TEST__OTLP_ENDPOINT "http://$ETTER_HOST:$OTEL_PORT"
  env_set ETTER_TEST__OTLP_TLS_ENDPOINT "https://localhost:$OTEL_TLS_PORT"
  env_set ETTER_TEST__OTLP_TRACES_FILE "$OTEL_TRACES"
  say "otel-collector ready on $ETTER_HOST:$OTEL_PORT, spans to ${OTEL_TRACES#"$REPO_ROOT"/} ($(_elapsed "$t0"))"
}

svc_otel_collector_down() {
  if _otel_running; then
    stop_pid otel-collector "$OTEL_PID" "$OTEL_PATTERN" 30
    say "otel-collector stopped"
  fi
  rm -f "$OTEL_PID"
}

svc_otel_collector_crash() {
  if _otel_running; then
    crash_pid otel-collector "$OTEL_PID" "$OTEL_PORT" "$OTEL_HTTP_PORT" "$OTEL_TLS_PORT"
  else
    say "otel-collector was not running"
  fi
}

svc_otel_collector_status() {
  if _otel_running; then
    echo "running http://$ETTER_HOST:$OTEL_PORT (OTLP gRPC) spans=$OTEL_TRACES"
  else
    echo "stopped http://$ETTER_HOST:$OTEL_PORT"
  fi
}
