#!/usr/bin/env bash
# Layering rules the compiler cannot see (ARCHITECTURE.md "Invariants"). Run by .ci/run.
# 1. One clock: wall time is read only in src/clock.rs; everything else takes the injected
#    `Clock` (a monotonic `Instant` may time a check for the latency histogram, nothing else).
# 2. Protocol types stay at the boundary: only src/server/ (and dev helpers, main's client) name
#    the generated proto modules.
# 3. In the Envoy module only abi.rs touches raw pointers.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
if hits=$(grep -rnE 'SystemTime::now|governor::clock::DefaultClock|DefaultDirectRateLimiter|chrono::Utc::now' \
  --include='*.rs' src crates | grep -v '^src/clock.rs:'); then
  echo "wall time read outside src/clock.rs (use the injected Clock):" >&2
  echo "$hits" >&2
  fail=1
fi
if hits=$(grep -rnE 'Instant::now' --include='*.rs' src crates | grep -v '^src/server/authz.rs:.*let started = Instant::now'); then
  echo "monotonic time read outside the check latency timer (use the injected Clock):" >&2
  echo "$hits" >&2
  fail=1
fi
if hits=$(grep -rnE 'proto::envoy|prost::' --include='*.rs' src crates | grep -vE '^src/(server|dev)/|^src/main.rs:'); then
  echo "protocol types outside src/server (convert in src/server/convert.rs):" >&2
  echo "$hits" >&2
  fail=1
fi
if hits=$(grep -rnE 'unsafe|\*const |\*mut ' --include='*.rs' crates/portcullis-envoy/src | grep -v '^crates/portcullis-envoy/src/abi.rs:'); then
  echo "raw pointers or unsafe outside crates/portcullis-envoy/src/abi.rs:" >&2
  echo "$hits" >&2
  fail=1
fi
exit $fail
