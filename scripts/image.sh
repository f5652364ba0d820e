#!/usr/bin/env bash
# Builds the container image without a daemon (buildah), runs it, and checks it answers: the
# embedded dev policy becomes ready (/readyz 200) and its self-check makes one allowed and one
# denied Check over gRPC inside the container. Also checks the image runs as 65532 and carries
# the OCI labels.
#
#   scripts/image.sh                     the Dockerfile (needs its base images: a registry, or a
#                                        mirror through BUILD_IMAGE / RUNTIME_IMAGE)
#   scripts/image.sh --local [--binary PATH]
#                                        the same runtime layout from local parts: the binary
#                                        (default target/release/portcullis), the glibc it links
#                                        and the CA bundle, in a scratch image with distroless'
#                                        user and paths. scripts/test.sh runs this (through
#                                        tests/it/image.rs), because this machine reaches no
#                                        container registry.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_debian_tool buildah buildah
ensure_debian_tool curl curl

mode=dockerfile binary=target/release/portcullis
while [ $# -gt 0 ]; do
  case "$1" in
    --local) mode=local ;;
    --binary) binary="$2"; shift ;;
    *) echo "usage: scripts/image.sh [--local [--binary PATH]]" >&2; exit 64 ;;
  esac
  shift
done
tag="localhost/portcullis:test-$$"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
labels=(
  --label "org.opencontainers.image.title=portcullis"
  --label "org.opencontainers.image.description=Authorization sidecar for Envoy ext_authz v3"
  --label "org.opencontainers.image.version=$version"
  --label "org.opencontainers.image.licenses=Apache-2.0"
  --label "org.opencontainers.image.source=https://github.com/portcullis/portcullis"
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
)
containers=()
cleanup() {
  for c in "${containers[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  buildah rmi "$tag" >/dev/null 2>&1 || true
  [ -n "${rootfs:-}" ] && rm -rf "$rootfs"
}
trap cleanup EXIT

if [ "$mode" = dockerfile ]; then
  log "buildah bud (Dockerfile)"
  buildah bud --layers "${labels[@]}" \
    ${BUILD_IMAGE:+--build-arg BUILD_IMAGE="$BUILD_IMAGE"} \
    ${RUNTIME_IMAGE:+--build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE"} \
    -t "$tag" -f Dockerfile .
else
  [ -x "$binary" ] || { echo "no binary at $binary (cargo build --release first, or --binary PATH)" >&2; exit 1; }
  log "image from local parts: $binary"
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs"/{usr/local/bin,etc/ssl/certs,tmp,home/nonroot}
  cp "$binary" "$rootfs/usr/local/bin/portcullis"
  # The shared libraries the binary links (what distroless/cc provides), at their own paths.
  for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
  chmod 1777 "$rootfs/tmp"
  ctr=$(buildah from scratch); containers+=("$ctr")
  buildah copy "$ctr" "$rootfs" / >/dev/null
  buildah config "${labels[@]}" --user 65532:65532 --port 9191 --port 9190 --port 9192 \
    --entrypoint '["/usr/local/bin/portcullis"]' \
    --cmd '["serve", "--config", "/etc/portcullis/policy/policy.yaml"]' "$ctr"
  buildah commit --quiet "$ctr" "$tag" >/dev/null
fi

log "inspect"
inspect=$(buildah inspect --type image "$tag")
grep -q '"User": "65532:65532"' <<<"$inspect" || { echo "the image does not run as 65532:65532" >&2; exit 1; }
grep -q '"org.opencontainers.image.version": "'"$version"'"' <<<"$inspect" || { echo "OCI labels missing" >&2; exit 1; }

log "run: portcullis dev inside the image"
ctr=$(buildah from "$tag"); containers+=("$ctr")
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc=$(port) health=$(port)
out=$(mktemp)
buildah run --isolation chroot --user 65532:65532 "$ctr" \
  /usr/local/bin/portcullis dev --grpc "127.0.0.1:$grpc" --health "127.0.0.1:$health" >"$out" 2>&1 &
runner=$!
ready=""
for _ in $(seq 1 100); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$health/readyz")" = 200 ]; then ready=1; break; fi
  sleep 0.1
done
for _ in $(seq 1 100); do grep -q "without a token" "$out" && break; sleep 0.1; done
kill "$runner" 2>/dev/null || true
pkill -f "portcullis dev --grpc 127.0.0.1:$grpc" 2>/dev/null || true
wait "$runner" 2>/dev/null || true
cat "$out"
[ -n "$ready" ] || { echo "the container never became ready" >&2; exit 1; }
grep -q "with the token -> allow (200)" "$out" || { echo "no allowed Check from inside the image" >&2; exit 1; }
grep -q "without a token -> deny (401) credential_missing" "$out" || { echo "no denied Check" >&2; exit 1; }
rm -f "$out"
log "image ok: $tag ($mode)"
