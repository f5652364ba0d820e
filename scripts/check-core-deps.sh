#!/usr/bin/env bash
# The pure decision core's invariant, checked: portcullis-core depends on no async runtime,
# gRPC, protobuf, Redis, HTTP or network crate (ARCHITECTURE.md). Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tokio|tokio-[a-z-]+|tonic|tonic-[a-z-]+|prost|prost-[a-z-]+|redis|reqwest|hyper|hyper-[a-z-]+|h2|http|http-body|axum|axum-[a-z-]+|tower|tower-[a-z-]+|mio|socket2|async-trait|futures|futures-[a-z-]+|rustls|rustls-[a-z-]+|jsonwebtoken|aws-lc-rs|metrics|tracing|opentelemetry|opentelemetry-[a-z-]+) '
deps=$(cargo tree -p portcullis-core -e normal --prefix none --format '{p}' --locked | sort -u)
if bad=$(grep -E "$forbidden" <<<"$deps"); then
  echo "portcullis-core must stay pure, but depends on:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "portcullis-core depends only on: $(sed 's/ .*//' <<<"$deps" | sort -u | tr '\n' ' ')"
