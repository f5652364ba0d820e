#!/usr/bin/env bash
# Soak: Portcullis (release) under a fixed open-loop rate of cached hits, cache misses and
# denies for DURATION seconds, with more unique tokens than cache.max_entries so the cache fills
# and keeps evicting. RSS is sampled every 5 s; the report compares RSS once the cache is full
# (after the first quarter) with the end. Fails on any unexpected answer, any RPC error, or RSS
# growing by more than 10 %.
#   scripts/soak.sh 600 2000        # ten minutes at 2000 checks/s
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-60}
rate=${2:-1000}
unique=${UNIQUE:-30000}
max_entries=${MAX_ENTRIES:-10000}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --quiet --bin portcullis --example load
port=$((20000 + RANDOM % 10000)); health=$((port + 1))
sed -e "s|listen: { grpc: \"127.0.0.1:9191\", health: \"127.0.0.1:9190\" }|listen: { grpc: \"127.0.0.1:$port\", health: \"127.0.0.1:$health\" }|" \
    -e "s|keys/|$PWD/tests/fixtures/keys/|g" -e "s|file: members.yaml|file: $PWD/tests/fixtures/members.yaml|" \
    -e "s|file: api-keys.yaml|file: $PWD/tests/fixtures/api-keys.yaml|" \
    -e "s|limits: { max_inflight_checks: 64 }|limits: { max_inflight_checks: 4096 }|" \
    tests/fixtures/policy.yaml > "$work/policy.yaml"
printf 'cache: { ttl: 10m, max_entries: %s }\ntelemetry: { audit: { allow_sample_rate: 0.0, file: %s/audit.log } }\n' "$max_entries" "$work" >> "$work/policy.yaml"
RUST_LOG=warn target/release/portcullis serve --config "$work/policy.yaml" 2>"$work/portcullis.err" &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$health/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

( while kill -0 "$pid" 2>/dev/null; do
    echo "$(date +%s) $(awk '/VmRSS/ {print $2}' /proc/$pid/status)"; sleep 5
  done ) > "$work/rss.txt" &
sampler=$!
echo "==> soak: ${duration}s at ${rate}/s (mix 70:20:10, $unique unique tokens, cache.max_entries $max_entries), pid $pid"
target/release/examples/load --target "127.0.0.1:$port" --rate "$rate" --duration "$duration" --mix 70:20:10 \
  --unique "$unique" --connections 4 | tee "$work/load.json"
kill "$sampler" 2>/dev/null || true
python3 - "$work/rss.txt" "$work/load.json" <<'PY'
import json, sys
samples = [int(l.split()[1]) for l in open(sys.argv[1]) if len(l.split()) == 2]
load = json.load(open(sys.argv[2]))
warm = samples[len(samples) // 4:]
if len(warm) < 2:
    sys.exit("too few RSS samples")
base, end, peak = warm[0], warm[-1], max(warm)
growth = (end - base) / base * 100
print(f"RSS after warm-up {base} KiB, end {end} KiB, peak {peak} KiB, min {min(warm)} KiB; growth {growth:+.1f}% over {len(warm)} samples")
print(f"checks {load['sent']}, unexpected {load['unexpected']}, rpc errors {load['rpc_errors']}, latency us {load['latency_us']}")
if load["unexpected"] or load["rpc_errors"] or growth > 10 or (peak - base) / base > 0.10:
    sys.exit("soak failed")
print("soak ok")
PY
