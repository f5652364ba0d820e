#!/usr/bin/env bash
# Builds the Envoy dynamic module for the Envoy minor the tests run (scripts/tools.sh
# ENVOY_VERSION) and names the artifact by it:
#   dist/portcullis-envoy-<version>-envoy<minor>-<arch>/libportcullis_envoy.so
# after checking it against that Envoy's exports (scripts/check-module-abi.sh). A module is
# built for one Envoy minor; README "Inside Envoy".
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_envoy
minor=$(echo "$ENVOY_VERSION" | cut -d. -f1,2)
"$venv/bin/envoy" --version | grep -q "/$minor\." || { echo "the Envoy in $venv is not $minor" >&2; exit 1; }
cargo build --release --locked -p portcullis-envoy
scripts/check-module-abi.sh target/release/libportcullis_envoy.so "$venv/bin/envoy"
version=$(grep -m1 '^version' crates/portcullis-envoy/Cargo.toml | cut -d'"' -f2)
out="dist/portcullis-envoy-$version-envoy$minor-$(uname -m)"
mkdir -p "$out"
cp target/release/libportcullis_envoy.so "$out/"
echo "$out/libportcullis_envoy.so"
