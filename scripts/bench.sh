#!/usr/bin/env bash
# The side-by-side benchmark of issue 12 (bench/sidebyside.py): Portcullis and the transport
# floor directly, and Envoy with no auth, jwt_authn + rbac, and ext_authz to the floor and to
# Portcullis (TCP, UDS, with and without allowed_headers), in alternating rounds; then latency at
# 25/50/75 % of the floor's maximum (plot in bench/results/latency.png), instructions per check
# (callgrind) and RSS. Needs 2 CPUs: the generator runs on CPU 0, the system under test on CPU 1.
#   scripts/bench.sh                       # everything, 3 rounds of 8 s (about 25 minutes)
#   scripts/bench.sh --rounds 1 --skip latency,callgrind,memory,criterion
# Issue 25: the ratios (min/median/max over rounds) against the empty and the answer-equivalent
# floor and against jwt_authn + rbac (cache 100 and 200,000), CPU-µs per request of each
# process, the memory test (RSS idle and with 100,000 identities cached, from /proc) and the
# criterion benches (verification against raw aws-lc, the cached decision).
# Installs what it needs when missing: Envoy and matplotlib into .venv (PyPI), taskset and
# valgrind (Debian util-linux, valgrind) when root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh

ensure_envoy
ensure_debian_tool taskset util-linux
ensure_debian_tool valgrind valgrind
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  log "installing matplotlib (PyPI) into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'matplotlib==3.*'
fi
[ "$(nproc)" -ge 2 ] || { echo "the benchmark pins the generator and the system under test to two CPUs; this machine has $(nproc)" >&2; exit 1; }
log "building release binaries (portcullis, the Envoy module, examples load, floor and memory)"
cargo build --release --quiet --bin portcullis --example load --example floor --example memory
cargo build --release --quiet -p portcullis-envoy
case " $* " in
  *criterion*) ;;
  *)
    mkdir -p bench/results
    log "criterion: cargo bench --bench check (built on both CPUs, run pinned to CPU 1) → bench/results/criterion.txt"
    cargo bench --quiet --no-run --bench check
    taskset -c 1 cargo bench --quiet --bench check 2>&1 | tee bench/results/criterion.txt
    ;;
esac
exec "$venv/bin/python" bench/sidebyside.py --envoy "$PWD/$venv/bin/envoy" "$@"
