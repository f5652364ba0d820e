"""Chart tests with the real Helm engine (PyPI helm-python-sdk) and Kubernetes schemas (PyPI
kubernetes-validate). Run by tests/it/helm.rs: python helm/tests/test_chart.py PORTCULLIS_BINARY.

1. lint --strict and render for the default values and every ci/*.yaml value set;
2. every rendered manifest validates strictly (Kubernetes 1.37 schemas; Prometheus Operator
   kinds against the CRD schemas kept in tests/fixtures/crds/);
3. the policy in every rendered ConfigMap passes `portcullis check-config`;
4. malformed values and the memory backend with several replicas or an HPA are refused;
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


def check_policy(binary, name, text, scratch):
    # Files the chart mounts under /etc/portcullis/ come from Secrets: stand-ins with the shape
    # Portcullis demands (a 16+ character admin token, a password).
    root = pathlib.Path(scratch) / name
    for rel, content in [("admin/token", "stand-in-admin-token-0123456789"), ("redis/password", "pw")]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    policy = root / "policy.yaml"
    policy.write_text(text.replace("/etc/portcullis/", f"{root}/"))
    out = subprocess.run([binary, "check-config", str(policy)], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{name}: rendered policy refused by check-config:\n{out.stderr}")


def render_all(binary, scratch):
    for name, values in value_sets():
        report = helm.lint(str(CHART), values, strict=True, kube_version="v" + KUBE)
        problems = report.get("errors") or [m for m in report.get("messages", []) if m["severity"] >= 2]
        if problems:
            fail(f"{name}: helm lint --strict: {problems}")
        chart = helm.Chart.load(str(CHART))
        rendered = chart.render(values, name="portcullis", namespace="authz", is_install=True)
        kinds = []
        for path, text in sorted(rendered.items()):
            if path.endswith("NOTES.txt"):
                if "portcullis" not in text:
                    fail(f"{name}: NOTES.txt is empty")
                continue
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                kinds.append(doc["kind"])
                validate_manifest(f"{name}:{path}", doc)
                if doc["kind"] == "ConfigMap" and "policy.yaml" in doc.get("data", {}):
                    check_policy(binary, name, doc["data"]["policy.yaml"], scratch)
        print(f"ok {name}: {len(kinds)} manifests: {', '.join(sorted(kinds))}")
        if "ConfigMap" not in kinds or "Deployment" not in kinds:
            fail(f"{name}: expected a ConfigMap and a Deployment, got {kinds}")
        yield name, kinds


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


def main():
    binary = sys.argv[1]
    scratch = tempfile.mkdtemp(prefix="portcullis-helm-")
    try:
        seen = dict(render_all(binary, scratch))
        if len(seen) < 4:
            fail(f"expected the default values and at least three ci/ value sets, got {list(seen)}")
        expectations = {
            "redis-values.yaml": ["Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget"],
            "scaling-values.yaml": ["HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"],
            "sidecar-values.yaml": ["Deployment", "ConfigMap", "Service"],
        }
        for name, kinds in expectations.items():
            missing = [k for k in kinds if k not in seen.get(name, [])]
            if missing:
                fail(f"{name}: missing {missing}")
        memory = {"policy": {"state": {"backend": "memory"}}}
        refused("memory backend with 2 replicas", {**memory, "replicaCount": 2}, "policy.state.backend: redis")
        refused("memory backend with an HPA", {**memory, "autoscaling": {"enabled": True}}, "policy.state.backend: redis")
        refused("unknown mode", {"mode": "daemonset"}, "mode")
        refused("replicaCount 0", {"replicaCount": 0}, "replicaCount")
        refused("port as text", {"ports": {"grpc": "grpc", "health": 9190, "admin": 9192}}, "grpc")
        refused("unknown top-level value", {"replicas": 2}, "replicas")
        refused("unknown policy key", {"policy": {"routez": []}}, "routez")
        refused("policy key of the wrong type", {"policy": {"routes": "all"}}, "routes")
        refused("admin without a token secret", {"admin": {"enabled": True}}, "tokenSecret")
        refused("sidecar without an app image", {"mode": "sidecar"}, "sidecar.app.image")

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
