#!/usr/bin/env bash
# A long run of the differential fuzzer (tests/it/differential.rs): N generated requests (default
# 11112, × 9 upstreams ≈ 100,000 sent through Envoy) from SEED (default 1), against every real
# upstream framework. Installs what it needs like scripts/test.sh. Record the count and the
# result in BENCHMARKS.md ("Differential fuzzer").
#   scripts/differential.sh [N] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_envoy
ensure_upstream_frameworks
export PORTCULLIS_ENVOY="$PWD/$venv/bin/envoy"
export PORTCULLIS_PYTHON="$PWD/$venv/bin/python"
export PORTCULLIS_DIFFERENTIAL_REQUESTS="${1:-11112}"
export PORTCULLIS_DIFFERENTIAL_SEED="${2:-1}"
log "differential fuzzer: $PORTCULLIS_DIFFERENTIAL_REQUESTS requests from seed $PORTCULLIS_DIFFERENTIAL_SEED"
start=$(date +%s)
cargo test --locked --test it differential -- --nocapture 2>&1 | grep -E '^differential:|disagreement|: generated #|^    trick|test result'
log "took $(( $(date +%s) - start )) s"
