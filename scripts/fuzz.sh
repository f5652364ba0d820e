#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS each, starting from the committed
# corpus fuzz/corpus/<target>/ (read-only; new inputs go to a scratch folder).
#   scripts/fuzz.sh 60                 # the CI smoke
#   scripts/fuzz.sh 600 config jwks    # ten minutes of two targets; logs in fuzz/logs/
# Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags; `-s none` builds without
# a sanitizer (libFuzzer's coverage and crash detection still apply). A crash fails the run and
# leaves its input under fuzz/artifacts/<target>/; turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(credential_and_token check_request config jwks cidr_file)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz (crates.io)"
  cargo install --locked cargo-fuzz >/dev/null
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
logs=${FUZZ_LOG_DIR:-$(mktemp -d)}
mkdir -p "$logs"
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  echo "==> fuzzing $t for ${seconds}s (log: $logs/$t.log)"
  if ! cargo fuzz run -s none "$t" "$work" "fuzz/corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$logs/$t.log" 2>&1; then
    tail -40 "$logs/$t.log"
    echo "fuzz target $t failed; the input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$logs/$t.log" || { echo "no libFuzzer summary for $t" >&2; exit 1; }
  rm -rf "$work"
done
