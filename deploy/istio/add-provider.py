#!/usr/bin/env python3
"""Adds (or replaces, by name) Portcullis' extension provider in istiod's Helm values without
dropping the providers already there. Helm replaces lists, so `--reuse-values -f
istiod-values.yaml` alone would leave Portcullis as the only provider — and Istio turns a
CUSTOM policy whose provider vanished into deny-all. Usage:

  helm get values istiod -n istio-system -o json > current.json
  python3 deploy/istio/add-provider.py current.json deploy/istio/istiod-values.yaml > merged.json
  helm upgrade istiod istio/istiod -n istio-system --reuse-values -f merged.json

Only the standard library: the provider file is read as the simple YAML it is, or as JSON.
"""
import json
import sys


def providers_of(values):
    return ((values or {}).get("meshConfig") or {}).get("extensionProviders") or []


def merge(current, ours):
    """`current` with every provider of `ours` added, or replacing the one of the same name."""
    merged = json.loads(json.dumps(current or {}))
    mesh = merged.setdefault("meshConfig", {})
    kept = [p for p in providers_of(current) if p.get("name") not in {o.get("name") for o in ours}]
    mesh["extensionProviders"] = kept + list(ours)
    return {"meshConfig": mesh}


def load_provider_file(path):
    text = open(path, encoding="utf-8").read()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml  # PyYAML, when present
        return yaml.safe_load(text)
    except ImportError:
        sys.exit(f"{path}: convert it to JSON or install PyYAML")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    current = json.load(open(sys.argv[1], encoding="utf-8"))
    ours = providers_of(load_provider_file(sys.argv[2]))
    if not ours:
        sys.exit(f"{sys.argv[2]}: no meshConfig.extensionProviders")
    json.dump(merge(current, ours), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
