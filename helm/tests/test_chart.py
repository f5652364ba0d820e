"""Chart tests with the real Helm engine (PyPI helm-python-sdk) and Kubernetes schemas (PyPI
kubernetes-validate). Run by tests/it/helm.rs: python helm/tests/test_chart.py PORTCULLIS_BINARY.

1. lint --strict and render for the default values and every ci/*.yaml value set;
2. every rendered manifest validates strictly (Kubernetes 1.37 schemas; Prometheus Operator
   kinds against the CRD schemas kept in tests/fixtures/crds/);
3. the policy in every rendered ConfigMap passes `portcullis check-config`;
4. malformed values, and the memory backend with several replicas or an HPA where the policy
   needs shared state, are refused;
5b. the mesh-readiness checks (issue 22): Pod Security "restricted" for every pod, the sidecar
   socket's group, drain settings and grace period, no roll on policy change by default, no
   PDB with one replica, IPv6 wildcard listeners, reflection off, NetworkPolicy rules for
   gateways/ambient and health, per-pod alerts, every escape-hatch key honoured, and no
   policy warning from check-config for the shipped value sets;
5. values.schema.json embeds the policy schema that `portcullis config-schema` generates, and
   the chart's Envoy sidecar file is deploy/envoy/sidecar-uds.yaml byte for byte.
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "portcullis"
KUBE = "1.37.0"
CRDS = ROOT / "tests" / "fixtures" / "crds"
failures = []


def fail(message):
    failures.append(message)
    print("FAIL", message)


def value_sets():
    yield "default", {}
    for path in sorted((CHART / "ci").glob("*.yaml")):
        yield path.name, helm.values_from_yaml(path.read_text())


def crd_schema(kind):
    path = CRDS / f"{kind.lower()}.schema.json"
    return json.loads(path.read_text()) if path.exists() else None


def validate_manifest(name, doc):
    try:
        kubernetes_validate.validate(doc, KUBE, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        schema = crd_schema(doc.get("kind", ""))
        if schema is None:
            fail(f"{name}: no schema for {doc.get('apiVersion')} {doc.get('kind')}")
            return
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError as e:
            fail(f"{name}: {doc['kind']}: {e.message}")
    except kubernetes_validate.ValidationError as e:
        fail(f"{name}: {doc.get('kind')}: {str(e).splitlines()[0]}")


def check_policy(binary, name, values, text, scratch):
    # Files the chart mounts under /etc/portcullis/ come from Secrets and ConfigMaps: stand-ins
    # with the shape Portcullis demands (a 16+ character admin token, a password, a fragment).
    root = pathlib.Path(scratch) / name
    stand_ins = [("admin/token", "stand-in-admin-token-0123456789"), ("redis/password", "pw")]
    for i, cm in enumerate(values.get("fragments", {}).get("configMaps", [])):
        host = f"team{i}.example.com"
        stand_ins.append((f"fragments/{cm}/routes.yaml", f"hosts: [{host}]\nroutes:\n  - {{ match: {{ host: {host}, path_prefix: / }}, require: {{ scopes: [read] }} }}\n"))
    for rel, content in stand_ins:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    policy = root / "policy.yaml"
    policy.write_text(text.replace("/etc/portcullis/", f"{root}/"))
    out = subprocess.run([binary, "check-config", str(policy)], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{name}: rendered policy refused by check-config:\n{out.stderr}")
    elif "warning" in out.stderr:
        fail(f"{name}: check-config warns about the rendered policy:\n{out.stderr}")


def render_all(binary, scratch):
    for name, values in value_sets():
        report = helm.lint(str(CHART), values, strict=True, kube_version="v" + KUBE)
        problems = report.get("errors") or [m for m in report.get("messages", []) if m["severity"] >= 2]
        if problems:
            fail(f"{name}: helm lint --strict: {problems}")
        chart = helm.Chart.load(str(CHART))
        rendered = chart.render(values, name="portcullis", namespace="authz", is_install=True)
        kinds = []
        docs = []
        for path, text in sorted(rendered.items()):
            if path.endswith("NOTES.txt"):
                if "portcullis" not in text:
                    fail(f"{name}: NOTES.txt is empty")
                continue
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                kinds.append(doc["kind"])
                docs.append(doc)
                validate_manifest(f"{name}:{path}", doc)
                if doc["kind"] == "ConfigMap" and "policy.yaml" in doc.get("data", {}):
                    check_policy(binary, name, values, doc["data"]["policy.yaml"], scratch)
        print(f"ok {name}: {len(kinds)} manifests: {', '.join(sorted(kinds))}")
        if "ConfigMap" not in kinds or "Deployment" not in kinds:
            fail(f"{name}: expected a ConfigMap and a Deployment, got {kinds}")
        mesh_checks(name, values, docs)
        yield name, kinds


def restricted_failures(pod):
    """Pod Security Standards "restricted" (v1.37), the parts a chart controls."""
    problems = []
    psc = pod.get("securityContext", {})
    if psc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("pod seccompProfile is not RuntimeDefault")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.append(f"{where}: runAsNonRoot is not set")
        if sc.get("runAsUser") == 0 or sc.get("privileged"):
            problems.append(f"{where}: runs as root or privileged")
        if not c.get("resources", {}).get("limits", {}).get("memory"):
            problems.append(f"{where}: no memory limit")
    for v in pod.get("volumes", []):
        if "hostPath" in v:
            problems.append(f"volume {v['name']}: hostPath")
    return problems


def mesh_checks(name, values, docs):
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployment = by_kind["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    for problem in restricted_failures(pod):
        fail(f"{name}: Pod Security restricted: {problem}")
    containers = {c["name"]: c for c in pod["containers"]}
    policy_doc = next((d for d in by_kind.get("ConfigMap", []) if "policy.yaml" in d.get("data", {})), None)
    policy = yaml.safe_load(policy_doc["data"]["policy.yaml"]) if policy_doc else None
    mode = values.get("mode", "shared")
    replicated = values.get("replicaCount", 1) > 1 or values.get("autoscaling", {}).get("enabled")
    # The sidecar socket: Portcullis makes it 0660 with a group both containers have.
    if mode == "sidecar":
        group = values.get("sidecar", {}).get("socketGroup", 101)
        if group not in pod.get("securityContext", {}).get("supplementalGroups", []):
            fail(f"{name}: the socket group {group} is not a supplemental group of the pod")
        if policy["listen"].get("socket") != {"mode": "0660", "group": str(group)}:
            fail(f"{name}: listen.socket is {policy['listen'].get('socket')}")
        app = containers["app"]
        for key in ["resources", "securityContext"]:
            if key not in app:
                fail(f"{name}: the app container has no {key}")
        if values.get("sidecar", {}).get("app", {}).get("readinessProbe") and "readinessProbe" not in app:
            fail(f"{name}: the app container's readinessProbe is not rendered")
        if "preStop" not in containers["envoy"].get("lifecycle", {}):
            fail(f"{name}: Envoy has no preStop drain")
    # Drain: the policy's delay and timeout fit in the grace period.
    if policy is not None:
        shutdown = policy.get("shutdown", {})
        delay, timeout = (int(shutdown.get(k, "0s").rstrip("s")) for k in ("drain_delay", "drain_timeout"))
        if delay < 1:
            fail(f"{name}: shutdown.drain_delay is {shutdown}")
        if pod["terminationGracePeriodSeconds"] < delay + timeout:
            fail(f"{name}: terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} < {delay}+{timeout}")
        if policy["listen"].get("reflection"):
            fail(f"{name}: gRPC reflection is on")
        wildcard = values.get("listenAddress", "[::]")
        if not policy["listen"]["health"].startswith(wildcard + ":"):
            fail(f"{name}: health listens on {policy['listen']['health']}, want {wildcard}")
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if ("checksum/policy" in annotations) != bool(values.get("rollOnPolicyChange")):
        fail(f"{name}: checksum/policy annotation does not follow rollOnPolicyChange")
    if "checksum/restart-only" not in annotations:
        fail(f"{name}: no checksum of the restart-only policy sections")
    # A PDB only where it can protect something.
    if ("PodDisruptionBudget" in by_kind) != bool(replicated):
        fail(f"{name}: PodDisruptionBudget with replicated={replicated}: {list(by_kind)}")
    # Every pod has its own service account (its mesh identity), not `default`.
    if pod.get("serviceAccountName") in (None, "default") and values.get("serviceAccount", {}).get("create", True):
        fail(f"{name}: pods run as the default service account")
    netpol = by_kind.get("NetworkPolicy", [None])[0]
    if netpol is not None:
        text = json.dumps(netpol)
        if mode == "shared":
            for want in ["istio-ingress", "gateway.istio.io/managed", "istio.io/dataplane-mode"]:
                if want not in text:
                    fail(f"{name}: NetworkPolicy gRPC rule lacks {want}")
        for rule in netpol["spec"].get("ingress", []):
            if not rule.get("from"):
                fail(f"{name}: a NetworkPolicy rule admits every source: {rule}")
    for rule_doc in by_kind.get("PrometheusRule", []):
        rules = {r["alert"]: r["expr"] for g in rule_doc["spec"]["groups"] for r in g["rules"]}
        for alert in ["PortcullisDevMode", "PortcullisReloadErrors", "PortcullisKeysUnavailable", "PortcullisOverloaded",
                      "PortcullisStaleDecisions", "PortcullisRateLimitFallback", "PortcullisAuditDropped"]:
            if alert not in rules:
                fail(f"{name}: no {alert} alert")
        if "by (namespace, pod)" not in rules.get("PortcullisStateBackendDown", ""):
            fail(f"{name}: PortcullisStateBackendDown is not per pod")
    if name == "everything-values.yaml":
        everything_checks(name, values, by_kind, pod, containers)


def everything_checks(name, values, by_kind, pod, containers):
    portcullis = containers["portcullis"]
    expect = {
        "image.digest": portcullis["image"].endswith("@" + values["image"]["digest"]),
        "fullnameOverride": by_kind["Deployment"][0]["metadata"]["name"] == "edge-authz",
        "nameOverride": by_kind["Deployment"][0]["metadata"]["labels"]["app.kubernetes.io/name"] == "authz",
        "serviceAccount": by_kind["ServiceAccount"][0]["metadata"]["annotations"] == values["serviceAccount"]["annotations"]
        and pod["serviceAccountName"] == "edge-authz",
        "extraEnv": portcullis.get("env") == values["extraEnv"],
        "envFrom": portcullis.get("envFrom") == values["envFrom"],
        "extraVolumes": any(v["name"] == "cluster-ca" for v in pod["volumes"]),
        "extraVolumeMounts": any(m["name"] == "cluster-ca" for m in portcullis["volumeMounts"]),
        # null removes a default (OpenShift assigns ids); the other defaults stay.
        "podSecurityContext": "fsGroup" not in pod["securityContext"] and pod["securityContext"]["runAsNonRoot"],
        "securityContext": not {"runAsUser", "runAsGroup"} & set(portcullis["securityContext"])
        and portcullis["securityContext"]["allowPrivilegeEscalation"] is False,
        "topologySpreadConstraints": pod.get("topologySpreadConstraints") == values["topologySpreadConstraints"],
        "service.annotations": by_kind["Service"][0]["metadata"].get("annotations") == values["service"]["annotations"],
        "podDisruptionBudget.minAvailable": by_kind["PodDisruptionBudget"][0]["spec"].get("minAvailable") == 2,
        "podAnnotations": pod is not None and by_kind["Deployment"][0]["spec"]["template"]["metadata"]["annotations"].get("sidecar.istio.io/inject") == "false",
        "nodeSelector": pod.get("nodeSelector") == values["nodeSelector"],
        "tolerations": pod.get("tolerations") == values["tolerations"],
        "affinity": pod.get("affinity") == values["affinity"],
        "priorityClassName": pod.get("priorityClassName") == values["priorityClassName"],
        "terminationGracePeriodSeconds": pod["terminationGracePeriodSeconds"] == 40,
        "networkPolicy.healthFrom": "10.0.0.0/16" in json.dumps(by_kind["NetworkPolicy"][0]),
        "fragments.configMaps": all(
            {"name": f"fragment-{i}", "configMap": {"name": cm}} in pod["volumes"]
            and {"name": f"fragment-{i}", "mountPath": f"/etc/portcullis/fragments/{cm}", "readOnly": True} in portcullis["volumeMounts"]
            for i, cm in enumerate(values["fragments"]["configMaps"])
        )
        and "/etc/portcullis/fragments/*/*.yaml" in yaml.safe_load(next(c for c in by_kind["ConfigMap"] if "policy.yaml" in c.get("data", {}))["data"]["policy.yaml"])["include"],
        "commonLabels": all(d["metadata"].get("labels", {}).get("team") == "platform" for k in ["Deployment", "Service", "ServiceAccount"] for d in by_kind[k]),
        "prometheusScrapeAnnotations": "prometheus.io/scrape" not in by_kind["Deployment"][0]["spec"]["template"]["metadata"]["annotations"],
        "revisionHistoryLimit": by_kind["Deployment"][0]["spec"]["revisionHistoryLimit"] == 3,
        "strategy": by_kind["Deployment"][0]["spec"].get("strategy") == values["strategy"],
        "probes.readiness": portcullis["readinessProbe"] == values["probes"]["readiness"]
        and portcullis["livenessProbe"]["httpGet"]["path"] == "/livez",
        "initContainers": [c["name"] for c in pod.get("initContainers", [])] == ["wait-for-ca"],
        "extraContainers": "log-shipper" in containers,
        "extraObjects": any(c["metadata"]["name"] == "portcullis-extra" for c in by_kind["ConfigMap"]),
        "service.headless": by_kind["Service"][0]["spec"].get("clusterIP") == "None",
        "helmTest": any(p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
                        and p["spec"]["containers"][0]["image"] == values["helmTest"]["image"] for p in by_kind.get("Pod", [])),
    }
    for key, ok in expect.items():
        if not ok:
            fail(f"{name}: {key} is not honoured")
        else:
            print(f"ok {name}: {key}")


def policy_check_hook(binary, scratch):
    """Issue 35: a semantically bad policy renders and lints, but the pre-install/pre-upgrade hook
    Job's own command, run against the hook ConfigMap it mounts, exits non-zero and names the
    values that are wrong; a good policy passes it."""
    bad = {"policy": {"routes": [
        {"match": {"path_regex": "(["}, "require": {"scopes": ["read"]}},
        {"match": {"path_prefix": "/"}, "require": {"scopes": ["read"]}, "rate_limit": "nope"},
    ]}}
    for label, values, want_ok in [("default", {}, True), ("bad policy", bad, False)]:
        report = helm.lint(str(CHART), values, strict=True, kube_version="v" + KUBE)
        if report.get("errors"):
            fail(f"policy check ({label}): helm lint refused it, the hook is what must: {report}")
        rendered = helm.Chart.load(str(CHART)).render(values, name="portcullis", namespace="authz", is_install=True)
        docs = [d for p, t in rendered.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
        hooks = [d for d in docs if "pre-install" in d.get("metadata", {}).get("annotations", {}).get("helm.sh/hook", "")]
        job = next((d for d in hooks if d["kind"] == "Job"), None)
        config = next((d for d in hooks if d["kind"] == "ConfigMap"), None)
        if job is None or config is None:
            fail(f"policy check ({label}): no pre-install hook Job and ConfigMap: {[d['kind'] for d in hooks]}")
            continue
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volume = next(v for v in pod["volumes"] if v["name"] == "policy")
        if volume["configMap"]["name"] != config["metadata"]["name"]:
            fail(f"policy check ({label}): the Job mounts {volume}, not the hook ConfigMap")
        weights = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in hooks}
        if not weights["ConfigMap"] < weights["Job"]:
            fail(f"policy check ({label}): the ConfigMap must be created before the Job: {weights}")
        problems = restricted_failures(pod)
        if problems:
            fail(f"policy check ({label}): the Job's pod is not restricted: {problems}")
        # Run the Job's own command against the policy it would mount.
        root = pathlib.Path(scratch) / f"hook-{label.replace(' ', '-')}"
        root.mkdir(parents=True, exist_ok=True)
        policy = root / "policy.yaml"
        policy.write_text(config["data"]["policy.yaml"].replace("/etc/portcullis/", f"{root}/"))
        args = [str(policy) if a == "/etc/portcullis/policy/policy.yaml" else a for a in container["args"]]
        out = subprocess.run([binary, *args], capture_output=True, text=True)
        if want_ok and out.returncode != 0:
            fail(f"policy check ({label}): the hook refuses the default policy:\n{out.stderr}")
        elif not want_ok:
            named = all(s in out.stderr for s in ["routes[0].match.path_regex", "routes[1].rate_limit"])
            if out.returncode == 0 or not named:
                fail(f"policy check ({label}): exit {out.returncode}, problems not named:\n{out.stderr}")
            else:
                print(f"ok the policy-check hook fails the release (exit {out.returncode}) and names the values:")
                for line in out.stderr.splitlines():
                    if "routes[" in line:
                        print(f"   policy.{line.split(': ', 1)[1] if ': ' in line else line}")


def refused(name, values, expect):
    try:
        helm.Chart.load(str(CHART)).render(values, name="portcullis", namespace="authz")
    except helm.HelmError as e:
        if expect not in str(e):
            fail(f"{name}: refused, but the message lacks {expect!r}: {e}")
        else:
            print(f"ok refused {name}")
        return
    fail(f"{name}: rendered, but must be refused")


def state_journal(binary, scratch, admin):
    """Issue 32: the memory backend with run-time writes journals to a PersistentVolumeClaim,
    or is refused; the journal means one replica and the Recreate strategy."""
    one = {**admin, "replicaCount": 1}
    refused("memory backend, admin API, no state journal", one, "stateVolume.existingClaim")
    journaled = {**one, "stateVolume": {"existingClaim": "portcullis-state"}}
    out = helm.Chart.load(str(CHART)).render(journaled, name="portcullis", namespace="authz")
    docs = [d for p, t in out.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    claims = [v for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == "portcullis-state"]
    container = next(c for c in pod["containers"] if c["name"] == "portcullis")
    mounted = [m for m in container["volumeMounts"] if m["mountPath"] == "/var/lib/portcullis"]
    policy = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap" and "policy.yaml" in d.get("data", {}))["data"]["policy.yaml"])
    if not claims or not mounted or deployment["spec"].get("strategy") != {"type": "Recreate"}:
        fail(f"state journal: volume {claims}, mount {mounted}, strategy {deployment['spec'].get('strategy')}")
    elif policy.get("state", {}).get("dir") != "/var/lib/portcullis":
        fail(f"state journal: the policy's state is {policy.get('state')}")
    else:
        print("ok the memory backend journals to the claimed volume (one replica, Recreate)")
    check_policy(binary, "state journal", journaled, yaml.safe_dump(policy), scratch)
    refused("a state journal for two replicas", {**journaled, "replicaCount": 2, "acknowledgePerReplicaState": True}, "one replica")


def render(values, name="portcullis", namespace="authz"):
    out = helm.Chart.load(str(CHART)).render(values, name=name, namespace=namespace)
    return [d for p, t in out.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]


def two_releases():
    """Two releases in one namespace: no object name, rule group or dashboard uid in common,
    and each release's alerts select its own pods."""
    values = {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}
    seen = {}
    for name in ["payments-authz", "search-authz"]:
        docs = render(values, name=name)
        names = {(d["kind"], d["metadata"]["name"]) for d in docs}
        rules = next(d for d in docs if d["kind"] == "PrometheusRule")
        groups = {g["name"] for g in rules["spec"]["groups"]}
        exprs = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
        board = next(d for d in docs if d["kind"] == "ConfigMap" and "portcullis.json" in d.get("data", {}))
        uid = json.loads(board["data"]["portcullis.json"])["uid"]
        if not all(f'pod=~"{name}-' in e or f'pod=~\"{name}-' in e for e in exprs):
            fail(f"{name}: an alert does not select this release's pods: {[e for e in exprs if name not in e][:2]}")
        seen[name] = (names, groups, uid)
    (a_names, a_groups, a_uid), (b_names, b_groups, b_uid) = seen.values()
    if a_names & b_names or a_groups & b_groups or a_uid == b_uid:
        fail(f"two releases collide: {a_names & b_names} {a_groups & b_groups} {a_uid} {b_uid}")
    else:
        print("ok two releases in one namespace: distinct objects, rule groups and dashboard uids")


def sidecar_shape():
    """Sidecar mode: the app gets a preStop as long as Envoy's drain and its full container
    spec; the NetworkPolicy admits the namespace (and ingress) to Envoy's port."""
    values = yaml.safe_load((CHART / "ci" / "sidecar-values.yaml").read_text())
    docs = render(values)
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    app = next(c for c in pod["containers"] if c["name"] == "app")
    envoy = next(c for c in pod["containers"] if c["name"] == "envoy")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    envoy_rule = [r for r in policy["spec"]["ingress"] if any(p["port"] == 10000 for p in r["ports"])]
    problems = []
    if app.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command") != ["sleep", "5"]:
        problems.append(f"app preStop: {app.get('lifecycle')}")
    for key in ["command", "args", "envFrom", "volumeMounts", "startupProbe"]:
        if key not in app:
            problems.append(f"app {key} not rendered")
    if "4" not in envoy["args"]:
        problems.append(f"envoy concurrency: {envoy['args']}")
    if not envoy_rule or {"podSelector": {}} not in envoy_rule[0]["from"]:
        problems.append(f"NetworkPolicy for the app: {envoy_rule}")
    own = "static_resources: {}  # {{ .Release.Name }}\n"
    overridden = render({**values, "sidecar": {**values["sidecar"], "envoy": {**values["sidecar"]["envoy"], "config": own}}})
    envoy_cm = next(d for d in overridden if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-envoy"))
    if envoy_cm["data"]["envoy.yaml"] != "static_resources: {}  # portcullis\n":
        problems.append(f"sidecar.envoy.config not used: {envoy_cm['data']['envoy.yaml'][:80]!r}")
    if problems:
        fail("sidecar mode: " + "; ".join(problems))
    else:
        print("ok sidecar mode: app preStop, full app spec, Envoy concurrency, the namespace admitted")


def main():
    binary = sys.argv[1]
    scratch = tempfile.mkdtemp(prefix="portcullis-helm-")
    try:
        seen = dict(render_all(binary, scratch))
        if len(seen) < 5:
            fail(f"expected the default values and at least three ci/ value sets, got {list(seen)}")
        expectations = {
            "redis-values.yaml": ["Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount"],
            "everything-values.yaml": ["Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount"],
            "scaling-values.yaml": ["HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"],
            "sidecar-values.yaml": ["Deployment", "ConfigMap", "Service"],
        }
        for name, kinds in expectations.items():
            missing = [k for k in kinds if k not in seen.get(name, [])]
            if missing:
                fail(f"{name}: missing {missing}")
        memory = {"policy": {"state": {"backend": "memory"}, "ip": {"auto_block": {"failures": 5, "window": "15m", "block_for": "30m"}}}}
        refused("memory backend, auto_block, 2 replicas", {**memory, "replicaCount": 2}, "policy.state.backend: redis")
        refused("memory backend, auto_block, an HPA", {**memory, "autoscaling": {"enabled": True}}, "ip.auto_block")
        admin = {"admin": {"enabled": True, "tokenSecret": {"name": "t", "key": "token"}}, "replicaCount": 2}
        refused("memory backend, admin API, 2 replicas", admin, "the admin API")
        ephemeral = {"policy": {"state": {"backend": "memory", "acknowledge_ephemeral_state": True}}}
        for label, values in [
            ("a policy that needs no shared state", {"replicaCount": 3}),
            ("acknowledged per-replica state", {**admin, **ephemeral, "acknowledgePerReplicaState": True}),
        ]:
            try:
                helm.Chart.load(str(CHART)).render(values, name="portcullis", namespace="authz")
                print(f"ok several memory replicas with {label}")
            except helm.HelmError as e:
                fail(f"several memory replicas with {label} refused: {e}")
        state_journal(binary, scratch, admin)
        refused("grace period shorter than the drain", {"terminationGracePeriodSeconds": 10}, "terminationGracePeriodSeconds")
        refused("PDB with both bounds", {"replicaCount": 2, "podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}}, "not both")
        refused("a NetworkPolicy peer for everyone", {"networkPolicy": {"grpcFrom": [{"namespaceSelector": {}}]}}, "admits everyone")
        refused("an ipBlock for the internet", {"networkPolicy": {"healthFrom": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}}, "admits everyone")
        refused("an image digest that is not one", {"image": {"repository": "x", "digest": "latest"}}, "digest")
        refused("unknown mode", {"mode": "daemonset"}, "mode")
        refused("replicaCount 0", {"replicaCount": 0}, "replicaCount")
        refused("port as text", {"ports": {"grpc": "grpc", "health": 9190, "admin": 9192}}, "grpc")
        refused("unknown top-level value", {"replicas": 2}, "replicas")
        refused("unknown policy key", {"policy": {"routez": []}}, "routez")
        refused("policy key of the wrong type", {"policy": {"routes": "all"}}, "routes")
        refused("admin without a token secret", {"admin": {"enabled": True}}, "tokenSecret")
        refused("sidecar without an app image", {"mode": "sidecar"}, "sidecar.app.image")

        policy_check_hook(binary, scratch)
        two_releases()
        sidecar_shape()
        scaling = render(yaml.safe_load((CHART / "ci" / "scaling-values.yaml").read_text()))
        hpa = next(d for d in scaling if d["kind"] == "HorizontalPodAutoscaler")
        monitor = next(d for d in scaling if d["kind"] == "ServiceMonitor")
        service = next(d for d in scaling if d["kind"] == "Service")
        endpoint = monitor["spec"]["endpoints"][0]
        if "behavior" not in hpa["spec"] or "relabelings" not in endpoint or "metricRelabelings" not in endpoint:
            fail(f"scaling-values.yaml: autoscaling.behavior or serviceMonitor relabelings not rendered: {hpa['spec']} {endpoint}")
        elif service["spec"]["type"] != "LoadBalancer":
            fail(f"scaling-values.yaml: service.type not rendered: {service['spec']}")
        else:
            print("ok scaling-values.yaml: autoscaling.behavior, serviceMonitor relabelings, service.type")

        # A route change does not roll the pods; a restart-only section (state) does.
        def restart_annotations(values):
            out = helm.Chart.load(str(CHART)).render(values, name="portcullis", namespace="authz")
            docs = (d for p, t in out.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t))
            deployment = next(d for d in docs if d and d["kind"] == "Deployment")
            return deployment["spec"]["template"]["metadata"]["annotations"]
        base = restart_annotations({})
        routes = restart_annotations({"policy": {"routes": [{"match": {"path_prefix": "/"}, "public": True}]}})
        cache = restart_annotations({"policy": {"cache": {"ttl": "10s"}}})
        if base != routes:
            fail("a route change rolls the pods (it is hot-reloaded)")
        if base["checksum/restart-only"] == cache["checksum/restart-only"]:
            fail("a cache change (restart-only) does not roll the pods")

        # values.schema.json carries exactly the generated policy schema.
        copy = pathlib.Path(scratch) / "values.schema.json"
        shutil.copy(CHART / "values.schema.json", copy)
        subprocess.run([binary, "config-schema", "--embed-into", str(copy)], check=True)
        if json.loads(copy.read_text()) != json.loads((CHART / "values.schema.json").read_text()):
            fail("values.schema.json is stale: run `portcullis config-schema --embed-into helm/portcullis/values.schema.json`")
        generated = subprocess.run([binary, "config-schema"], check=True, capture_output=True, text=True).stdout
        if json.loads(generated) != json.loads((ROOT / "docs" / "policy.schema.json").read_text()):
            fail("docs/policy.schema.json is stale: run `portcullis config-schema > docs/policy.schema.json`")
        # The dashboard and alerts only use metrics Portcullis exports.
        exported = set(re.findall(r'"(portcullis_[a-z_]+)"', "".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))))
        for source in [CHART / "files" / "dashboard.json", CHART / "templates" / "prometheusrule.yaml"]:
            used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"portcullis_[a-z_]+", source.read_text())}
            unknown = sorted(used - exported)
            if unknown:
                fail(f"{source.name} uses metrics Portcullis does not export: {unknown}")
            if len(used) < 4:
                fail(f"{source.name} uses only {sorted(used)}")
        if (CHART / "files" / "envoy-sidecar.yaml").read_bytes() != (ROOT / "deploy" / "envoy" / "sidecar-uds.yaml").read_bytes():
            fail("helm/portcullis/files/envoy-sidecar.yaml differs from deploy/envoy/sidecar-uds.yaml")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("chart ok")


if __name__ == "__main__":
    main()
