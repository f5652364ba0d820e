#!/usr/bin/env python3
"""Side-by-side benchmark (issue 12): Portcullis against the transport floor directly, and Envoy
with ext_authz (floor, Portcullis over TCP and UDS) against Envoy's own jwt_authn + rbac and no
auth at all, in alternating rounds on one machine. Run through scripts/bench.sh, which builds the
binaries and provides Envoy and matplotlib.

The generator (`load`) is pinned to CPU 0, the system under test (Portcullis or the floor, and
Envoy) to CPU 1. Each measurement starts its servers fresh, so every run begins with an empty
cache. Figures per measurement: achieved requests/s (closed loop, the maximum), latency
percentiles from the intended send time (open loop at 25/50/75 % of the floor's maximum), and
CPU-µs per request of each server process from /proc. Instructions per check come from callgrind
(valgrind), RSS from /proc.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
KEYS = ROOT / "tests" / "fixtures" / "keys"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TENANT_PATH = "/tenants/acme/items"
GEN_CPU, SUT_CPU = "0", "1"
# `--allow-sample-rate`: audit every allow (None, the default) or this share of them.
AUDIT_ALLOW_SAMPLE = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU of a process and all its threads so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_until(ready, proc, what, timeout=20.0):
    """Polls `ready()` until it holds; fails when the process exits or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout} s")


def wait_port(port, proc, what, timeout=20.0):
    def listening():
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True

    wait_until(listening, proc, what, timeout)


def wait_http_ok(url, proc, what, timeout=20.0):
    import urllib.request

    def ok():
        with urllib.request.urlopen(url, timeout=0.5) as r:
            return r.status == 200

    wait_until(ok, proc, what, timeout)


class Server:
    """A process of the system under test, pinned to SUT_CPU."""

    def __init__(self, name, cmd, work, pin=True):
        self.name = name
        self.log = open(work / f"{name}.log", "ab")
        prefix = ["taskset", "-c", SUT_CPU] if pin else []
        self.proc = subprocess.Popen(prefix + cmd, stdout=self.log, stderr=self.log, cwd=work)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def portcullis_policy(work, grpc, health, uds=None, max_entries=200_000, name="policy.yaml"):
    """The test policy with absolute paths, a cache for 200k identities, audit at its default
    sampling (every decision) to a file, no drain delay."""
    text = (ROOT / "tests/fixtures/policy.yaml").read_text()
    listen = f'listen: {{ grpc: "127.0.0.1:{grpc}", health: "127.0.0.1:{health}" }}'
    if uds:
        listen = f'listen: {{ grpc: "unix:{uds}", health: "127.0.0.1:{health}" }}'
    replacements = [
        ('listen: { grpc: "127.0.0.1:9191", health: "127.0.0.1:9190" }', listen),
        ("keys/", f"{KEYS}/"),
        ("file: members.yaml", f"file: {ROOT}/tests/fixtures/members.yaml"),
        ("file: api-keys.yaml", f"file: {ROOT}/tests/fixtures/api-keys.yaml"),
        ("limits: { max_inflight_checks: 64 }", "limits: { max_inflight_checks: 4096 }"),
    ]
    for old, new in replacements:
        if old not in text:
            raise RuntimeError(f"tests/fixtures/policy.yaml no longer contains {old!r}")
        text = text.replace(old, new)
    text += (
        f"cache: {{ ttl: 10m, max_entries: {max_entries}, max_bytes: 192MiB }}\n"
        f"telemetry: {{ audit: {{ file: {work}/audit.log{audit_sampling()} }} }}\n"
        "shutdown: { drain_delay: 0s, drain_timeout: 1s }\n"
    )
    path = work / name
    path.write_text(text)
    return path


def audit_sampling():
    return "" if AUDIT_ALLOW_SAMPLE is None else f", allow_sample_rate: {AUDIT_ALLOW_SAMPLE}"


def start_portcullis(work, uds=None, max_entries=200_000, wrap=None):
    grpc, health = free_port(), free_port()
    policy = portcullis_policy(work, grpc, health, uds, max_entries)
    cmd = [str(RELEASE / "portcullis"), "serve", "--config", str(policy)]
    env_cmd = ["env", "RUST_LOG=warn"] + (wrap or []) + cmd
    server = Server("portcullis", env_cmd, work, pin=wrap is None)
    wait_http_ok(f"http://127.0.0.1:{health}/readyz", server.proc, "portcullis", timeout=120)
    server.target = f"127.0.0.1:{grpc}"
    return server


def start_floor(work, wrap=None, equivalent=False):
    """The floor: an empty OK, or (equivalent) Portcullis' own answer to the bench request."""
    port = free_port()
    cmd = [str(RELEASE / "examples" / "floor"), f"127.0.0.1:{port}"]
    if equivalent:
        policy = portcullis_policy(work, free_port(), free_port(), name="floor-policy.yaml")
        cmd += ["--equivalent", str(policy), "--path", TENANT_PATH]
    server = Server("floor", (wrap or []) + cmd, work, pin=wrap is None)
    wait_port(port, server.proc, "floor", timeout=120)
    server.target = f"127.0.0.1:{port}"
    return server


# ---- Envoy configurations (one worker, a direct 200 response instead of an upstream) ----

def http_filter(name, type_name, config):
    return {"name": name, "typed_config": {"@type": f"type.googleapis.com/{type_name}", **config}}


def ext_authz_filter(allowed_headers):
    config = {
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "status_on_error": {"code": "ServiceUnavailable"},
        "validate_mutations": True,
        "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "0.5s"},
    }
    if allowed_headers:
        names = ["authorization", "cookie", "x-api-key", "x-tenant-id", "origin", "referer", "x-csrf-token",
                 "x-forwarded-for", "x-request-id", "traceparent"]
        config["allowed_headers"] = {"patterns": [{"exact": n} for n in names]}
    return http_filter("envoy.filters.http.ext_authz", "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                       config)


def jwt_rbac_filters(jwt_cache=200_000):
    """Envoy's in-process equivalent of the Portcullis `tenants` route for tenant acme: a valid
    EdDSA access token of the test issuer (iss, aud, exp, token_use) whose `tenants` claim holds
    acme, for paths under /tenants/acme/."""
    jwks = (KEYS / "jwks.json").read_text()
    jwt = http_filter("envoy.filters.http.jwt_authn", "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication", {
        "providers": {"test": {
            "issuer": "https://issuer.test/",
            "audiences": ["api"],
            "local_jwks": {"inline_string": jwks},
            "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
            "payload_in_metadata": "jwt_payload",
            "clock_skew_seconds": 30,
            "max_lifetime": "43200s",
            "jwt_cache_config": {"jwt_cache_size": jwt_cache},
        }},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "test"}}],
    })

    def claim(name, value):
        return {"metadata": {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "jwt_payload"}, {"key": name}],
                             "value": value}}

    rbac = http_filter("envoy.filters.http.rbac", "envoy.extensions.filters.http.rbac.v3.RBAC", {
        "rules": {"action": "ALLOW", "policies": {"tenant-acme": {
            "permissions": [{"url_path": {"path": {"prefix": "/tenants/acme/"}}}],
            "principals": [{"and_ids": {"ids": [
                claim("tenants", {"list_match": {"one_of": {"string_match": {"exact": "acme"}}}}),
                claim("token_use", {"string_match": {"exact": "access"}}),
            ]}}],
        }}},
    })
    return [jwt, rbac]


def module_filter(policy):
    """Portcullis inside Envoy (issue 34): the dynamic module with the bench policy."""
    return http_filter("portcullis", "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter", {
        "dynamic_module_config": {"name": "portcullis_envoy", "do_not_close": True},
        "filter_name": "portcullis",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": f"policy_file: {policy}"},
    })


def envoy_config(listen, admin, mode, authz=None, uds=None, allowed_headers=False, jwt_cache=200_000,
                 policy=None):
    filters = []
    if mode == "jwt_rbac":
        filters = jwt_rbac_filters(jwt_cache)
    elif mode == "module":
        filters = [module_filter(policy)]
    elif mode == "ext_authz":
        filters = [ext_authz_filter(allowed_headers)]
    filters.append(http_filter("envoy.filters.http.router", "envoy.extensions.filters.http.router.v3.Router", {}))
    hcm = {
        "stat_prefix": "bench",
        "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
        "http_filters": filters,
    }
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "ingress",
                           "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                           "filter_chains": [{"filters": [http_filter(
                               "envoy.filters.network.http_connection_manager",
                               "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                               hcm)]}]}],
            "clusters": [],
        },
    }
    if mode == "ext_authz":
        address = {"pipe": {"path": uds}} if uds else {
            "socket_address": {"address": "127.0.0.1", "port_value": int(authz.rsplit(":", 1)[1])}}
        config["static_resources"]["clusters"].append({
            "name": "authz", "type": "STATIC", "connect_timeout": "0.25s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "authz", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": address}}]}]},
        })
    return config


def start_envoy(work, envoy_bin, mode, **kw):
    listen, admin = free_port(), free_port()
    path = work / f"envoy-{mode}.json"
    path.write_text(json.dumps(envoy_config(listen, admin, mode, **kw), indent=1))
    # The module is found by name in the release folder (scripts/bench.sh builds it).
    server = Server("envoy", ["env", f"ENVOY_DYNAMIC_MODULES_SEARCH_PATH={RELEASE}", envoy_bin, "-c", str(path),
                              "--concurrency", "1", "--use-dynamic-base-id", "-l", "error"], work)
    wait_http_ok(f"http://127.0.0.1:{admin}/ready", server.proc, "envoy")
    wait_port(listen, server.proc, "envoy")
    server.target = f"127.0.0.1:{listen}"
    return server


# ---- modes ----

# name: (load --mix, --unique). "fill" puts 100k distinct identities in the cache (memory step).
MIXES = {"cached": ("100:0:0", 1), "unique": ("0:100:0", 150_000), "deny_mix": ("50:0:50", 1),
         "fill": ("0:100:0", 100_000)}


class Mode:
    def __init__(self, name, via, sut, tokens="cached", uds=False, allowed_headers=False, jwt_cache=200_000):
        self.name, self.via, self.sut, self.tokens = name, via, sut, tokens
        self.uds, self.allowed_headers, self.jwt_cache = uds, allowed_headers, jwt_cache

    def start(self, work, envoy_bin):
        """Starts the servers of this mode; returns (target, [servers])."""
        servers = []
        authz_target, uds = None, None
        if self.sut == "portcullis":
            uds = str(work / "portcullis.sock") if self.uds else None
            servers.append(start_portcullis(work, uds=uds))
            authz_target = servers[-1].target
        elif self.sut in ("floor", "floor_equivalent"):
            servers.append(start_floor(work, equivalent=self.sut == "floor_equivalent"))
            authz_target = servers[-1].target
        if self.via == "direct":
            return authz_target, servers
        policy = None
        if self.sut == "module":
            policy = portcullis_policy(work, free_port(), free_port(), name="module-policy.yaml")
        envoy_mode = {"none": "none", "jwt_rbac": "jwt_rbac", "module": "module"}.get(self.sut, "ext_authz")
        envoy = start_envoy(work, envoy_bin, envoy_mode, authz=authz_target, uds=uds,
                            allowed_headers=self.allowed_headers, jwt_cache=self.jwt_cache, policy=policy)
        servers.append(envoy)
        return envoy.target, servers


DIRECT = [
    Mode("direct floor", "direct", "floor"),
    Mode("direct floor equivalent", "direct", "floor_equivalent"),
    Mode("direct portcullis cached", "direct", "portcullis"),
    Mode("direct portcullis unique", "direct", "portcullis", tokens="unique"),
    Mode("direct portcullis deny mix", "direct", "portcullis", tokens="deny_mix"),
]
ENVOY = [
    Mode("envoy no auth", "envoy", "none"),
    Mode("envoy jwt_authn+rbac cached", "envoy", "jwt_rbac"),
    Mode("envoy jwt_authn+rbac unique", "envoy", "jwt_rbac", tokens="unique"),
    Mode("envoy jwt_authn+rbac cache100 unique", "envoy", "jwt_rbac", tokens="unique", jwt_cache=100),
    Mode("envoy ext_authz floor", "envoy", "floor"),
    Mode("envoy ext_authz floor equivalent", "envoy", "floor_equivalent"),
    Mode("envoy ext_authz portcullis tcp cached", "envoy", "portcullis"),
    Mode("envoy ext_authz portcullis tcp unique", "envoy", "portcullis", tokens="unique"),
    Mode("envoy ext_authz portcullis tcp cached allowed_headers", "envoy", "portcullis", allowed_headers=True),
    Mode("envoy ext_authz portcullis uds cached", "envoy", "portcullis", uds=True),
    Mode("envoy ext_authz portcullis uds unique", "envoy", "portcullis", tokens="unique", uds=True),
    Mode("envoy module cached", "envoy", "module"),
    Mode("envoy module unique", "envoy", "module", tokens="unique"),
]


def run_load(target, mode, seconds, closed=None, rate=None):
    mix, unique = MIXES[mode.tokens]
    cmd = ["taskset", "-c", GEN_CPU, str(RELEASE / "examples" / "load"), "--target", target,
           "--duration", str(seconds), "--mix", mix, "--unique", str(unique), "--path", TENANT_PATH]
    if mode.via != "direct":
        cmd.append("--http")
    cmd += ["--closed", str(closed)] if closed else ["--rate", str(int(rate))]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if not out.stdout.strip():
        raise RuntimeError(f"load failed for {mode.name}: {out.stderr.strip()[-2000:]}")
    # A report with errors (Envoy's 503 once its ext_authz timeout passes, say) is a result,
    # recorded and shown, not a crash of the benchmark.
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if report["unexpected"] or report["rpc_errors"]:
        print(f"  {mode.name}: {report['unexpected']} unexpected, {report['rpc_errors']} errors "
              f"(first: {report['first_error']})", flush=True)
    return report


def measure(work, envoy_bin, mode, seconds, closed=None, rate=None):
    target, servers = mode.start(work, envoy_bin)
    try:
        before = {s.name: cpu_seconds(s.proc.pid) for s in servers}
        report = run_load(target, mode, seconds, closed=closed, rate=rate)
        for s in servers:
            used = cpu_seconds(s.proc.pid) - before[s.name]
            report[f"cpu_us_per_request_{s.name}"] = used * 1e6 / max(report["sent"], 1)
            report[f"rss_kib_{s.name}"] = rss_kib(s.proc.pid)
    finally:
        for s in reversed(servers):
            s.stop()
    report["name"] = mode.name
    return report


# Issue 25's ratios: (system under test, what it is measured against).
RATIOS = {
    "direct cached / floor": ("direct portcullis cached", "direct floor"),
    "direct cached / floor equivalent": ("direct portcullis cached", "direct floor equivalent"),
    "envoy cached / ext_authz floor equivalent": ("envoy ext_authz portcullis tcp cached",
                                                  "envoy ext_authz floor equivalent"),
    "envoy cached / ext_authz floor": ("envoy ext_authz portcullis tcp cached", "envoy ext_authz floor"),
    "envoy uds cached / ext_authz floor equivalent": ("envoy ext_authz portcullis uds cached",
                                                      "envoy ext_authz floor equivalent"),
    "envoy unique / jwt_authn+rbac unique (cache 200000)": ("envoy ext_authz portcullis tcp unique",
                                                            "envoy jwt_authn+rbac unique"),
    "envoy unique / jwt_authn+rbac unique (cache 100)": ("envoy ext_authz portcullis tcp unique",
                                                         "envoy jwt_authn+rbac cache100 unique"),
    "envoy cached / jwt_authn+rbac cached": ("envoy ext_authz portcullis tcp cached", "envoy jwt_authn+rbac cached"),
    # Issue 34: Portcullis inside Envoy.
    "module cached / jwt_authn+rbac cached": ("envoy module cached", "envoy jwt_authn+rbac cached"),
    "module unique / jwt_authn+rbac unique (cache 200000)": ("envoy module unique", "envoy jwt_authn+rbac unique"),
    "module cached / ext_authz portcullis cached": ("envoy module cached", "envoy ext_authz portcullis tcp cached"),
}


def ratios(maxima):
    """Each ratio of requests/s, round by round (the two modes of a round ran back to back)."""
    out = {}
    for name, (sut, base) in RATIOS.items():
        if sut not in maxima or base not in maxima:
            continue
        by_round = {r["round"]: r["achieved_rate"] for r in maxima[base]}
        values = [r["achieved_rate"] / by_round[r["round"]] for r in maxima[sut] if by_round.get(r["round"])]
        if values:
            out[name] = summarize(values)
    return out


def summarize(values):
    values = sorted(values)
    return {"median": statistics.median(values), "min": values[0], "max": values[-1]}


# ---- instructions per check (callgrind) ----

def callgrind_total(path):
    for line in Path(path).read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def instructions_per_check(work, sut, tokens, small=500, large=2500, rate=250):
    """Instructions of the whole server process for `large` minus `small` checks, per check:
    start-up and idle cost cancel out."""
    totals, sent = [], []
    for count in (small, large):
        out = work / f"callgrind.{sut}.{tokens}.{count}"
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        server = start_portcullis(work, wrap=wrap) if sut == "portcullis" else start_floor(work, wrap=wrap)
        try:
            mode = Mode(f"callgrind {sut}", "direct", sut, tokens=tokens)
            sent.append(run_load(server.target, mode, max(1, count // rate), rate=rate)["sent"])
        finally:
            server.stop()
        totals.append(callgrind_total(out))
    return (totals[1] - totals[0]) / (sent[1] - sent[0])


# ---- memory ----

def memory(work):
    """RSS of an idle Portcullis, then with 100k identities in its cache (filled over gRPC);
    and the cache alone: 100k identities through the real verifier and cache in one process
    (examples/memory), RSS from /proc before and after."""
    server = start_portcullis(work, max_entries=200_000)
    try:
        time.sleep(1)
        idle = rss_kib(server.proc.pid)
        run_load(server.target, Mode("fill", "direct", "portcullis", tokens="fill"), 20, rate=5000)
        time.sleep(1)
        full = rss_kib(server.proc.pid)
    finally:
        server.stop()
    policy = portcullis_policy(work, free_port(), free_port(), name="memory-policy.yaml")
    out = subprocess.run([str(RELEASE / "examples" / "memory"), str(policy), "100000"],
                         capture_output=True, text=True, check=True)
    return {"idle_rss_kib": idle, "rss_kib_100k_cached": full,
            "cache_alone": json.loads(out.stdout.strip().splitlines()[-1])}


def module_memory(work, envoy_bin):
    """Issue 34: RSS of an Envoy deciding with the module, idle and with 100k identities in its
    claims cache (one cache for all workers), filled through Envoy over HTTP."""
    mode = Mode("fill module", "envoy", "module", tokens="fill")
    target, servers = mode.start(work, envoy_bin)
    envoy = servers[-1]
    try:
        time.sleep(1)
        idle = rss_kib(envoy.proc.pid)
        # Below the module's unique-token maximum (~5,000/s on this machine): an open loop
        # past it queues requests in Envoy, whose buffers would be counted as the cache's.
        run_load(target, mode, 40, rate=2500)
        time.sleep(1)
        full = rss_kib(envoy.proc.pid)
    finally:
        for s in reversed(servers):
            s.stop()
    return {"envoy_idle_rss_kib": idle, "envoy_rss_kib_100k_cached": full,
            "bytes_per_identity": (full - idle) * 1024 / 100_000}


def plot(latency, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, via in zip(axes, ["direct", "envoy"]):
        for name, points in sorted(latency.items()):
            if not name.startswith(via):
                continue
            xs = [p["load_pct"] for p in points]
            ax.plot(xs, [p["p50"] for p in points], marker="o", label=f"{name} p50")
            ax.plot(xs, [p["p99"] for p in points], marker="x", linestyle="--", label=f"{name} p99")
        ax.set_title(f"{via}: latency from intended send time")
        ax.set_xlabel("load, % of the floor's maximum requests/s")
        ax.set_ylabel("µs")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envoy", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--skip", default="", help="comma list of: max,latency,callgrind,memory,module_memory")
    parser.add_argument("--only", default="", help="comma list of words; run only the modes whose "
                        "name holds one of them (for quick comparisons while working)")
    parser.add_argument("--allow-sample-rate", type=float, default=None,
                        help="audit this share of allows (default: every decision, as shipped)")
    args = parser.parse_args()
    global AUDIT_ALLOW_SAMPLE
    AUDIT_ALLOW_SAMPLE = args.allow_sample_rate
    skip = set(filter(None, args.skip.split(",")))
    only = list(filter(None, args.only.split(",")))
    selected = [m for m in DIRECT + ENVOY if not only or any(w in m.name for w in only)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname()),
                           "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                              if l.startswith("model name")), "?")},
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    raw = open(out / "raw.jsonl", "w")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        maxima = {}
        if "max" not in skip:
            for r in range(args.rounds):
                modes = selected
                # Alternate the order between rounds so drift does not favour one mode.
                for mode in modes if r % 2 == 0 else list(reversed(modes)):
                    report = measure(work, args.envoy, mode, args.seconds, closed=args.concurrency)
                    report["round"] = r
                    raw.write(json.dumps(report) + "\n")
                    raw.flush()
                    maxima.setdefault(mode.name, []).append(report)
                    print(f"round {r} {mode.name}: {report['achieved_rate']:.0f}/s p99 "
                          f"{report['latency_us']['p99']} us", flush=True)
            results["max"] = {name: {
                "rps": summarize([x["achieved_rate"] for x in reports]),
                "errors": sum(x["unexpected"] + x["rpc_errors"] for x in reports),
                "cpu_us": {k[len("cpu_us_per_request_"):]: summarize([x[k] for x in reports])
                           for k in reports[0] if k.startswith("cpu_us_per_request_")},
            } for name, reports in maxima.items()}

            results["ratios"] = ratios(maxima)
            for name, r in results["ratios"].items():
                print(f"ratio {name}: median {r['median']:.2f}x (min {r['min']:.2f}, max {r['max']:.2f})", flush=True)

        if "latency" not in skip and maxima:
            latency = {}
            floor_modes = {"direct": "direct floor", "envoy": "envoy ext_authz floor"}
            floors = {via: results["max"][name]["rps"]["median"]
                      for via, name in floor_modes.items() if name in results["max"]}
            # Loads are fractions of the floor's maximum: a mode without its floor measured has none.
            chosen = [m for m in selected if m.tokens == "cached" and not m.uds and not m.allowed_headers
                      and m.via in floors]
            for r in range(args.latency_rounds):
                for pct in (25, 50, 75):
                    for mode in chosen if r % 2 == 0 else list(reversed(chosen)):
                        rate = floors[mode.via] * pct / 100
                        report = measure(work, args.envoy, mode, args.seconds, rate=rate)
                        report.update(round=r, load_pct=pct)
                        raw.write(json.dumps(report) + "\n")
                        raw.flush()
                        latency.setdefault((mode.name, pct), []).append(report)
                        print(f"latency r{r} {pct}% {mode.name}: {report['latency_us']}", flush=True)
            by_mode = {}
            for (name, pct), reports in sorted(latency.items(), key=lambda kv: (kv[0][0], kv[0][1])):
                point = {"load_pct": pct, "rate": reports[0]["mode"],
                         "errors": sum(x["unexpected"] + x["rpc_errors"] for x in reports)}
                for q in ("p50", "p90", "p99", "p999"):
                    point[q] = statistics.median(x["latency_us"][q] for x in reports)
                    point[q + "_spread"] = [min(x["latency_us"][q] for x in reports),
                                            max(x["latency_us"][q] for x in reports)]
                by_mode.setdefault(name, []).append(point)
            results["latency"] = by_mode
            plot(by_mode, out / "latency.png")

        if "callgrind" not in skip:
            results["instructions_per_check"] = {
                "floor": instructions_per_check(work, "floor", "cached"),
                "portcullis cached": instructions_per_check(work, "portcullis", "cached"),
                "portcullis unique": instructions_per_check(work, "portcullis", "unique"),
            }
            print(f"instructions per check: {results['instructions_per_check']}", flush=True)

        if "memory" not in skip:
            results["memory"] = memory(work)
            print(f"memory: {results['memory']}", flush=True)
        if "module_memory" not in skip:
            results["module_memory"] = module_memory(work, args.envoy)
            print(f"module memory: {results['module_memory']}", flush=True)

    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "summary.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
