# shellcheck shell=bash
# The project CA and its certificates for scripts/services. Sourced, not executed.
#
# .etter/tls/ holds a private CA (ca.pem/ca.key), a server certificate
# (server.pem/server.key: serverAuth, DNS:localhost, IP:127.0.0.1, IP:::1) and a
# client certificate (client.pem/client.key: clientAuth, CN etter-client), all
# EC P-256 with PKCS#8 PEM keys (read by rustls, Go, PostgreSQL, redis and Java).
# Everything is made again when a file is missing, a chain does not verify, or a
# certificate (CA included) expires within 7 days; otherwise the files are left alone.

TLS_DIR="$ETTER_DIR/tls"
TLS_CA="$TLS_DIR/ca.pem"
TLS_CA_KEY="$TLS_DIR/ca.key"
TLS_SERVER_CERT="$TLS_DIR/server.pem"
TLS_SERVER_KEY="$TLS_DIR/server.key"
TLS_CLIENT_CERT="$TLS_DIR/client.pem"
TLS_CLIENT_KEY="$TLS_DIR/client.key"
TLS_DAYS="${ETTER_TLS_DAYS:-825}"
TLS_MIN_VALID_S=$((7 * 24 * 3600))
_TLS_DONE=0

# for the svc_*_apt functions of the services that use TLS
tls_apt() {
  command -v openssl >/dev/null 2>&1 || echo openssl
}

_tls_ok() {
  local f
  for f in "$TLS_CA" "$TLS_CA_KEY" "$TLS_SERVER_CERT" "$TLS_SERVER_KEY" "$TLS_CLIENT_CERT" "$TLS_CLIENT_KEY"; do
    [[ -s $f ]] || return 1
  done
  # one openssl run: both chains verify against our CA alone, still valid in 7 days
  openssl verify -no-CApath -no-CAstore -no-CAfile -CAfile "$TLS_CA" \
    -attime "$(($(date +%s) + TLS_MIN_VALID_S))" "$TLS_SERVER_CERT" "$TLS_CLIENT_CERT" >/dev/null 2>&1
}

# _tls_make DIR : a new CA + server + client certificate in DIR
_tls_make() {
  local d=$1
  cat >"$d/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  local k
  for k in ca server client; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$k.key"
    chmod 600 "$d/$k.key"
  done
  openssl req -x509 -new -config "$d/openssl.cnf" -extensions ca_ext -sha256 \
    -key "$d/ca.key" -subj "/O=Etter pipeline/CN=Etter local development CA" \
    -days "$TLS_DAYS" -set_serial "0x$(openssl rand -hex 15)" -out "$d/ca.pem"
  openssl req -new -config "$d/openssl.cnf" -key "$d/server.key" \
    -subj "/O=Etter pipeline/CN=localhost" -out "$d/server.csr"
  openssl x509 -req -sha256 -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
    -set_serial "0x$(openssl rand -hex 15)" -days "$TLS_DAYS" \
    -extfile "$d/openssl.cnf" -extensions server_ext -out "$d/server.pem"
  openssl req -new -config "$d/openssl.cnf" -key "$d/client.key" \
    -subj "/O=Etter pipeline/CN=etter-client" -out "$d/client.csr"
  openssl x509 -req -sha256 -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
    -set_serial "0x$(openssl rand -hex 15)" -days "$TLS_DAYS" \
    -extfile "$d/openssl.cnf" -extensions client_ext -out "$d/client.pem"
  openssl verify -no-CApath -no-CAstore -no-CAfile -CAfile "$d/ca.pem" "$d/server.pem" "$d/client.pem"
}

# ensure_tls : make the CA and certificates when needed (once per run), publish their paths
ensure_tls() {
  if ((!_TLS_DONE)); then
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    if ! _tls_ok; then
      local t0 tmp f
      t0=$(_now_us)
      say "tls: making a CA and server/client certificates in ${TLS_DIR#"$REPO_ROOT"/}"
      mkdir -p "$TLS_DIR"
      chmod 755 "$TLS_DIR"
      tmp=$(mktemp -d "$TLS_DIR/.new.XXXXXX")
      if ! (umask 077 && _tls_make "$tmp") >"$ETTER_LOG_DIR/tls.log" 2>&1; then
        rm -rf "$tmp"
        die_with_log "tls: making the certificates failed" "$ETTER_LOG_DIR/tls.log"
      fi
      chmod 644 "$tmp/ca.pem" "$tmp/server.pem" "$tmp/client.pem"
      for f in ca.key ca.pem server.key server.pem client.key client.pem; do
        mv -f "$tmp/$f" "$TLS_DIR/$f"
      done
      rm -rf "$tmp"
      say "tls: certificates ready, valid $TLS_DAYS days ($(_elapsed "$t0"))"
    fi
    _TLS_DONE=1
  fi
  env_set ETTER_TEST__TLS_CA "$TLS_CA"
  env_set ETTER_TEST__TLS_SERVER_CERT "$TLS_SERVER_CERT"
  env_set ETTER_TEST__TLS_SERVER_KEY "$TLS_SERVER_KEY"
  env_set ETTER_TEST__TLS_CLIENT_CERT "$TLS_CLIENT_CERT"
  env_set ETTER_TEST__TLS_CLIENT_KEY "$TLS_CLIENT_KEY"
}

# tls_fingerprint : changes whenever the certificates are made again (services that
# copy or load them at start compare it to restart/reload)
tls_fingerprint() {
  sha256_of "$TLS_CA" "$TLS_SERVER_CERT" "$TLS_SERVER_KEY" | cut -c1-16
}
