# Multi-stage build of a small non-root image, without a daemon:
#   scripts/image.sh            (buildah bud, then runs the image and checks it answers)
#   docker build -t ghcr.io/portcullis/portcullis:0.1.0 .
# The base images can come from a mirror: --build-arg BUILD_IMAGE=… RUNTIME_IMAGE=….
ARG BUILD_IMAGE=docker.io/library/rust:1.91-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# Build stage: the pinned toolchain; protos compile with protox (no protoc needed). The release
# profile keeps line tables (Cargo.toml), so backtraces name files and lines: not stripped.
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY crates crates
COPY benches benches
COPY bench bench
RUN cargo build --release --locked --bin portcullis

# Runtime: distroless with glibc and CA roots, no shell, uid 65532 (the chart runs it read-only).
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Authorization sidecar for Envoy ext_authz v3" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/portcullis/portcullis"
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER 65532:65532
EXPOSE 9191 9190 9192
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis/policy/policy.yaml"]
