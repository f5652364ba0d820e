"""Validates deploy/istio/*.yaml against the Istio schemas kept in tests/fixtures/istio/ and
checks they carry the wiring deploy/README.md describes. Run by tests/it/helm.rs.

istiod-values.yaml holds values for the istiod Helm chart; its `meshConfig` is the MeshConfig
that IstioOperator's spec.meshConfig also holds, so it is validated as that."""

import json
import pathlib
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = {
    "AuthorizationPolicy": "authorizationpolicy.schema.json",
    "IstioOperator": "istiooperator.schema.json",
}
failures = []
docs = []
for path in sorted((ROOT / "deploy" / "istio").glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        if "kind" not in doc:
            if set(doc) != {"meshConfig"}:
                failures.append(f"{path.name}: istiod values hold more than meshConfig: {sorted(doc)}")
            doc = {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
                   "metadata": {"name": "istiod-values"}, "spec": {"meshConfig": doc["meshConfig"]}}
        schema = json.loads((ROOT / "tests" / "fixtures" / "istio" / SCHEMAS[doc["kind"]]).read_text())
        try:
            jsonschema.validate(doc, schema)
            docs.append(doc)
            print(f"ok {path.name}: {doc['kind']}")
        except jsonschema.ValidationError as e:
            failures.append(f"{path.name}: {e.message}")

# The negative control: the schema is not a rubber stamp.
bad = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "x"},
       "spec": {"action": "CUSTOM", "rules": [{}]}}
schema = json.loads((ROOT / "tests/fixtures/istio/authorizationpolicy.schema.json").read_text())
if jsonschema.Draft202012Validator(schema).is_valid(bad):
    failures.append("a CUSTOM AuthorizationPolicy without a provider passed the schema")

grpc = [p["envoyExtAuthzGrpc"] for d in docs if d["kind"] == "IstioOperator" for p in d["spec"]["meshConfig"]["extensionProviders"]]
policies = [d for d in docs if d["kind"] == "AuthorizationPolicy"]
if not grpc or any(g.get("failOpen") is not False or g.get("statusOnError") != "503" or g.get("timeout") != "0.5s" for g in grpc):
    failures.append(f"extension provider must be failOpen: false, statusOnError: \"503\", timeout: 0.5s: {grpc}")
if not policies or any(p["spec"]["action"] != "CUSTOM" or p["spec"]["rules"] != [{}] for p in policies):
    failures.append("AuthorizationPolicy must be action: CUSTOM with rules: [{}]")
names = {p["name"] for d in docs if d["kind"] == "IstioOperator" for p in d["spec"]["meshConfig"]["extensionProviders"]}
if any(p["spec"]["provider"]["name"] not in names for p in policies):
    failures.append("an AuthorizationPolicy names a provider the mesh config does not define")

# Issue 35: adding the provider keeps the providers already configured (Helm replaces lists:
# `--reuse-values -f istiod-values.yaml` alone would drop them, and Istio turns a CUSTOM policy
# whose provider vanished into deny-all). add-provider.py is run as documented, on values as
# `helm get values istiod -o json` prints them.
import subprocess
import tempfile
existing = {"meshConfig": {"accessLogFile": "/dev/stdout", "extensionProviders": [
    {"name": "opa", "envoyExtAuthzGrpc": {"service": "opa.opa.svc.cluster.local", "port": 9191}},
    {"name": "portcullis", "envoyExtAuthzGrpc": {"service": "old.authz.svc.cluster.local", "port": 9191}},
]}, "pilot": {"resources": {"requests": {"cpu": "500m"}}}}
with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as current:
    json.dump(existing, current)
out = subprocess.run([sys.executable, str(ROOT / "deploy/istio/add-provider.py"), current.name,
                      str(ROOT / "deploy/istio/istiod-values.yaml")], capture_output=True, text=True)
pathlib.Path(current.name).unlink()
if out.returncode != 0:
    failures.append(f"add-provider.py failed: {out.stderr}")
else:
    merged = json.loads(out.stdout)
    providers = {p["name"]: p for p in merged["meshConfig"]["extensionProviders"]}
    if set(providers) != {"opa", "portcullis"}:
        failures.append(f"add-provider.py lost or duplicated a provider: {sorted(providers)}")
    elif providers["portcullis"]["envoyExtAuthzGrpc"]["service"] != "portcullis.authz.svc.cluster.local":
        failures.append("add-provider.py did not replace the old portcullis provider")
    elif merged["meshConfig"].get("accessLogFile") != "/dev/stdout":
        failures.append("add-provider.py dropped the rest of meshConfig")
    else:
        print("ok add-provider.py keeps the existing providers (opa) and replaces portcullis")

for f in failures:
    print("FAIL", f)
sys.exit(1 if failures else 0)
