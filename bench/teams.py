#!/usr/bin/env python3
"""Writes a policy of N team fragments (issue 36's "100-team fragments policy"): each team owns
an exact host and a wildcard, 50 prefix routes with methods and one regex route; the main file
has a guard and a catch-all. Time its load (what a start and a reload do) with:
  python3 bench/teams.py /tmp/teams100 100
  time target/release/portcullis check-config /tmp/teams100/policy.yaml
"""
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    out, teams = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100
    (out / "teams").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "tests/fixtures/keys/jwks.json", out / "jwks.json")
    (out / "policy.yaml").write_text(
        'listen: { grpc: "127.0.0.1:0", health: "127.0.0.1:0" }\n'
        "issuers:\n"
        "  - { issuer: https://issuer.test/, audiences: [api], algorithms: [RS256], jwks: { file: jwks.json } }\n"
        "include: [teams/*.yaml]\n"
        "routes:\n"
        "  - { name: no-debug, match: { path_prefix: /, query: { debug: { present: true } } }, deny: true }\n"
        "  - { match: { path_prefix: / }, require: { scopes: [read] } }\n")
    for t in range(teams):
        lines = [f'hosts: [team{t}.example.com, "*.team{t}.apps.example.com"]', "routes:"]
        for r in range(50):
            lines.append(f"  - {{ match: {{ host: team{t}.example.com, path_prefix: /v{r}/, methods: [GET, POST] }}, "
                         f"require: {{ scopes: [t{t}r{r}] }} }}")
        lines.append(f'  - {{ match: {{ host: "*.team{t}.apps.example.com", path_regex: "^/items/[0-9]+$" }}, '
                     f"require: {{ roles: [team{t}] }} }}")
        (out / "teams" / f"team{t:03}.yaml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
