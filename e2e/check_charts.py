#!/usr/bin/env python3
"""Renders and lints every chart in charts/ with the real Helm SDK (helm-python-sdk, offline), once
per values file in the chart's ci/ folder, and validates every rendered object (and the chart's CRDs)
with kubernetes-validate --strict for each Kubernetes version given. Exit status 1 on any finding.

Usage: check_charts.py [--kube 1.29.0 --kube 1.33.0] [--out DIR] [chart ...]
"""
import argparse
import pathlib
import subprocess
import sys
import tempfile

import helm_python
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
VALIDATE = ROOT / ".tools" / "bin" / "kubernetes-validate"


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


# Values the ha chart must refuse (values.schema.json or the templates' checks), as ha-operator
# refuses the same settings: (values, words of the error).
REFUSED = [
    ({"replicas": 2, "replication": {"streamReplicas": 3}}, "streamReplicas cannot exceed"),
    ({"pod": {"labels": {"app.kubernetes.io/name": "x"}}}, "selector label"),
    ({"disruptionBudget": {"maxUnavailable": "lots"}}, "maxUnavailable"),
    ({"disruptionBudget": {"maxUnavailable": -1}}, "maxUnavailable"),
    ({"http": {"ingress": {"enabled": True, "host": "h", "path": "api"}}}, "path"),
    ({"http": {"disableToken": True, "ingress": {"enabled": True, "host": "h"}}}, "needs a token"),
    ({"storage": {"size": "lots"}}, "size"),
    ({"replicas": 0}, "replicas"),
    ({"replica": 3}, "replica"),
    ({"backup": {"url": "https://b.example.com/p"}}, "url"),
    ({"bootstrap": {"fromBackup": {"url": "s3://b/p", "toSeq": 5,
                                   "toTime": "2026-12-07T01:00:00Z"}}}, "at most one of toSeq"),
    ({"backup": {"url": "s3://b/n", "region": "a"},
      "bootstrap": {"fromBackup": {"url": "s3://b/o", "region": "b"}}}, "same endpoint"),
]


def check_refusals(chart_dir):
    failures = []
    for values, words in REFUSED:
        chart = helm_python.Chart.load(chart_dir)
        try:
            chart.render(values, name="test", namespace="ha-test", is_install=True)
            failures.append(f"{chart_dir.name}: {values} was accepted")
        except helm_python.HelmError as e:
            if words not in str(e):
                failures.append(f"{chart_dir.name}: {values}: error without {words!r}: {e}")
        finally:
            chart.close()
    return failures


def check_chart(chart_dir, kube_versions, out_dir):
    failures = []
    values_files = sorted((chart_dir / "ci").glob("*.yaml")) or [None]
    for values_file in values_files:
        label = f"{chart_dir.name}[{values_file.name if values_file else 'defaults'}]"
        values = (yaml.safe_load(values_file.read_text()) or {}) if values_file else {}
        for kube in kube_versions:
            report = helm_python.lint(
                chart_dir, values, strict=True, namespace="ha-test", kube_version=f"v{kube}"
            )
            problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
            problems += [{"error": e} for e in report.get("errors", [])]
            if problems:
                failures.append(f"{label}: helm lint --strict (k8s {kube}): {problems}")
        chart = helm_python.Chart.load(chart_dir)
        try:
            rendered = chart.render(values, name="test", namespace="ha-test", is_install=True)
        except helm_python.HelmError as e:
            failures.append(f"{label}: render: {e}")
            continue
        finally:
            chart.close()
        objects = []
        for path, text in sorted(rendered.items()):
            if path.endswith("NOTES.txt"):
                continue
            objects.extend(documents(text))
        for crd in sorted((chart_dir / "crds").glob("*.yaml")):
            objects.extend(documents(crd.read_text()))
        if not objects:
            failures.append(f"{label}: rendered nothing")
            continue
        manifest = out_dir / f"{chart_dir.name}-{values_file.stem if values_file else 'defaults'}.yaml"
        manifest.write_text(yaml.safe_dump_all(objects, sort_keys=True))
        for kube in kube_versions:
            proc = subprocess.run(
                [str(VALIDATE), "--strict", "--quiet", "-k", kube, str(manifest)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                failures.append(
                    f"{label}: kubernetes-validate --strict -k {kube}:\n{proc.stdout}{proc.stderr}"
                )
        kinds = sorted({o["kind"] for o in objects})
        print(f"{label}: {len(objects)} objects ({', '.join(kinds)}) -> {manifest.name}")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kube", action="append", default=[])
    ap.add_argument("--out")
    ap.add_argument("charts", nargs="*")
    args = ap.parse_args()
    kube_versions = args.kube or ["1.29.0", "1.33.0"]
    charts = [pathlib.Path(c) for c in args.charts] or sorted(
        p for p in (ROOT / "charts").iterdir() if (p / "Chart.yaml").exists()
    )
    out_dir = pathlib.Path(args.out) if args.out else pathlib.Path(tempfile.mkdtemp(prefix="charts-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for chart in charts:
        failures.extend(check_chart(chart.resolve(), kube_versions, out_dir))
        if chart.name == "ha":
            failures.extend(check_refusals(chart.resolve()))
    for f in failures:
        print("FAIL", f, file=sys.stderr)
    print(f"{len(charts)} chart(s) checked, {len(failures)} failure(s); manifests in {out_dir}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
