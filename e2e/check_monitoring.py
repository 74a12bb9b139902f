#!/usr/bin/env python3
"""Renders charts/ha with every monitoring object on (real Helm SDK) and checks what it ships:
the PrometheusRule's groups pass `promtool check rules` (pinned by scripts/install-deps.sh), the
Grafana dashboard is valid JSON with the grafana_dashboard label, and the ServiceMonitor scrapes
with a token Secret. Prints one JSON object on stdout for the caller (tests/tests/charts.rs) to
check against a running node: the metric names every rule and panel uses, and the scrape's
Secret name, key and token value as the chart's Secret holds it.

Usage: check_monitoring.py PATH/TO/promtool
"""
import base64
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import helm_python
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
VALUES = {"monitoring": {"serviceMonitor": True, "prometheusRule": True, "grafanaDashboard": True}}
# A metric name in PromQL: the node's are all prefixed `ha_`; `up` is Prometheus's own.
METRIC = re.compile(r"\b(ha_[a-z0-9_]+|up)\b")


def main():
    promtool = sys.argv[1]
    chart = helm_python.Chart.load(ROOT / "charts" / "ha")
    try:
        rendered = chart.render(VALUES, name="shop", namespace="ns", is_install=True)
    finally:
        chart.close()
    docs = [d for path, text in rendered.items() if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    rule = kinds["PrometheusRule"][0]
    monitor = kinds["ServiceMonitor"][0]
    dashboard_cm = next(c for c in kinds["ConfigMap"] if c["metadata"]["name"].endswith("-dashboard"))
    assert dashboard_cm["metadata"]["labels"].get("grafana_dashboard") == "1", dashboard_cm["metadata"]

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f)
        f.flush()
        check = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    if check.returncode != 0:
        print(f"promtool check rules failed:\n{check.stdout}{check.stderr}", file=sys.stderr)
        return 1

    rule_exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads(next(iter(dashboard_cm["data"].values())))
    panel_exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = sorted({m for e in rule_exprs + panel_exprs for m in METRIC.findall(e)})

    endpoint = monitor["spec"]["endpoints"][0]
    cred = endpoint["authorization"]["credentials"]
    secret = next(s for s in kinds["Secret"] if s["metadata"]["name"] == cred["name"])
    token = base64.b64decode(secret["data"][cred["key"]]).decode()
    print(json.dumps({
        "metrics": used,
        "alerts": alerts,
        "promtool": check.stdout.strip(),
        "panels": len(dashboard["panels"]),
        "scrape": {"port": endpoint["port"], "path": endpoint["path"], "secret": cred["name"],
                   "key": cred["key"], "token": token},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
