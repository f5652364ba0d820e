# Multi-stage build of a small non-root image:
#   docker build -t ghcr.io/portcullis/portcullis:0.1.0 .
# Build stage: the pinned toolchain; protos compile with protox (no protoc needed).
FROM rust:1.91-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY crates crates
COPY benches benches
RUN cargo build --release --locked --bin portcullis && strip target/release/portcullis

# Runtime: distroless with glibc and CA roots, no shell, uid 65532 (the chart runs it read-only).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER 65532:65532
EXPOSE 9191 9190 9192
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis/policy/policy.yaml"]
