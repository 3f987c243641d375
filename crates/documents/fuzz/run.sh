#!/usr/bin/env bash
# Runs one fuzz target for a bounded time, seeded with the document fixtures.
#
#   crates/documents/fuzz/run.sh [extract|docx_xml|uri] [seconds]      (default: extract, 60)
#
# Needs a nightly toolchain (`rustup toolchain list`) and cargo-fuzz (`cargo install cargo-fuzz
# --locked`). New inputs accumulate in corpus/<target>/; a crash is saved in artifacts/<target>/
# and the script exits non-zero; reproduce it with `cargo +nightly fuzz run <target> <file>`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
target="${1:-extract}"
seconds="${2:-60}"
fixtures=../../../testdata/documents
corpus="corpus/$target"
mkdir -p "$corpus"

seeds=()
case "$target" in
  extract) seeds=("$fixtures") ;;
  docx_xml)
    # The body parser's seeds are the document.xml of the DOCX fixtures.
    for docx in "$fixtures"/*.docx; do
      unzip -p "$docx" word/document.xml >"$corpus/$(basename "$docx" .docx).xml" 2>/dev/null || true
    done
    ;;
  uri)
    printf '%s' 'file:///srv/documents/liberty/claims_adjuster_jd.pdf' >"$corpus/file"
    printf '%s' 's3://etter-docs/liberty/jd%20v2.docx' >"$corpus/s3"
    ;;
  *) echo "unknown target: $target (extract, docx_xml, uri)" >&2; exit 2 ;;
esac

exec cargo +nightly fuzz run "$target" "$corpus" "${seeds[@]}" -- \
  -max_total_time="$seconds" -dict=documents.dict -timeout=10 -rss_limit_mb=3072 -print_final_stats=1
