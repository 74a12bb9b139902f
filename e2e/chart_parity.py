#!/usr/bin/env python3
"""Checks that charts/ha creates what ha-operator creates for the same settings: for each case, an
HaCluster is rendered by the real `ha-operator render` and the chart by the Helm SDK with the same
settings as values; the StatefulSet (whole spec: the pods' command, args, env, ports, probes,
volumes, security), ConfigMap data, Services, PodDisruptionBudget and Ingress must be equal once
the labels that name the manager (managed-by, helm.sh/chart) are set aside.

Usage: chart_parity.py PATH/TO/ha-operator
"""
import copy
import json
import pathlib
import subprocess
import sys
import tempfile

import helm_python
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMESPACE = "shop"

CASES = {
    "defaults": {},
    "production": {
        "replicas": 5,
        "imagePullPolicy": "IfNotPresent",
        "storage": {"size": "50Gi", "storageClassName": "fast-ssd"},
        "replication": {"maxAge": "72h", "timeout": "10s", "stream": "orders_cdc"},
        "postgres": {"tlsSecret": "pg-tls", "requireTls": True, "authMethod": "md5",
                     "authSecret": "pg-login"},
        "http": {"port": 9000, "tokenSecret": "api-token",
                 "ingress": {"className": "nginx", "host": "orders.example.com",
                             "tlsSecret": "web-tls", "path": "/api",
                             "annotations": {"a/b": "c"}}},
        "snapshots": {"retain": 7},
        "service": {"type": "LoadBalancer", "annotations": {"lb/kind": "internal"}},
        "pod": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                "labels": {"team": "orders"}, "annotations": {"x/y": "z"},
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "db", "operator": "Exists", "effect": "NoSchedule"}],
                "priorityClassName": "databases",
                "env": [{"name": "HA_CONCURRENT_QUERIES", "value": "100"},
                        {"name": "HA_LOG_LEVEL", "value": "debug"}],
                "args": ["--max-body-size", "32MiB"],
                "terminationGracePeriodSeconds": 60},
        "disruptionBudget": {"maxUnavailable": 2},
        "logLevel": "warn",
    },
    "external-memory-no-pg": {
        "replicas": 1,
        "database": {"memory": True, "name": "cache.db", "fromLatestSnapshot": False,
                     "extensions": ["/usr/lib/sqlite3/pcre.so", "/opt/vec0.so"],
                     "interceptor": {"configMap": "hooks", "key": "audit.rhai"}},
        "nats": {"external": {"url": "nats://n1:4222, tls://u:p@n2:4222",
                              "credentialsSecret": "nats-creds"}},
        "postgres": {"enabled": False},
        "disruptionBudget": {"enabled": False},
    },
    "backups": {
        "backup": {"url": "s3://orders-backups/prod", "endpoint": "http://minio.minio:9000",
                   "credentialsSecret": "s3-creds", "interval": "30m", "retention": "14d"},
        "bootstrap": {"fromBackup": {"url": "s3://orders-backups/old", "region": "eu-west-1",
                                     "toSeq": 1234}},
    },
    "bootstrap-only": {
        "bootstrap": {"fromBackup": {"url": "s3://b/p", "credentialsSecret": "old-creds",
                                     "toTime": "2026-12-07T01:00:00Z"}},
    },
    "two-nodes-custom-nats": {
        "replicas": 2,
        "replication": {"streamReplicas": 1, "ddlSync": False, "policy": "new"},
        "nats": {"embedded": {"port": 4333, "clusterPort": 6333, "logs": True,
                              "clusterTlsSecret": "routes-tls"}},
        "postgres": {"port": 6432},
        "http": {"disableToken": True},
        "disruptionBudget": {"maxUnavailable": 0},
        "imagePullSecrets": [{"name": "registry"}],
        "image": "registry.example.com/ha:1.2.3",
    },
}

MANAGER_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart")


class KubeLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: an unquoted RFC 3339 time stays a string (sigs.k8s.io/yaml
    does not resolve timestamps; serde_yaml does not quote them)."""


KubeLoader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def strip_manager_labels(obj):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "labels" and isinstance(v, dict):
                v = {lk: lv for lk, lv in v.items() if lk not in MANAGER_LABELS}
            out[k] = strip_manager_labels(v)
        return out
    if isinstance(obj, list):
        return [strip_manager_labels(x) for x in obj]
    return obj


# Set aside in the operator's pods only, with the reason:
# HA_NATS_SERVER_NAME=generation gives a pod on a new volume a new JetStream server name, which
# is right only where a controller removes the departed server's peer (the operator does); a
# chart-run cluster has none, so its pods keep their plain names and a re-added pod rejoins as
# the peer it was.
OPERATOR_ONLY_ENV = {"HA_NATS_SERVER_NAME"}


def without_operator_only_env(sts):
    sts = copy.deepcopy(sts)
    for c in sts.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        if "env" in c:
            c["env"] = [e for e in c["env"] if e.get("name") not in OPERATOR_ONLY_ENV]
    return sts


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    for v in out.values():
        v.sort(key=lambda d: d["metadata"]["name"])
    return out


def operator_objects(operator, name, spec):
    cluster = {"apiVersion": "ha.sqlite.dev/v1alpha1", "kind": "HaCluster",
               "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(cluster, f)
        f.flush()
        out = subprocess.run([operator, "render", "-f", f.name, "-n", NAMESPACE],
                             capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.load_all(out, Loader=KubeLoader) if d]
    return by_kind([without_operator_only_env(d) if d["kind"] == "StatefulSet" else d
                    for d in docs])


def chart_values(name, spec):
    values = copy.deepcopy(spec)
    values["fullnameOverride"] = name
    ingress = values.get("http", {}).get("ingress")
    if ingress is not None:
        ingress["enabled"] = True
    return values


def chart_objects(name, spec):
    chart = helm_python.Chart.load(ROOT / "charts" / "ha")
    try:
        rendered = chart.render(chart_values(name, spec), name="release", namespace=NAMESPACE,
                                is_install=True)
    finally:
        chart.close()
    docs = []
    for path, text in rendered.items():
        if not path.endswith("NOTES.txt"):
            docs.extend(d for d in yaml.load_all(text, Loader=KubeLoader) if d)
    return by_kind(docs)


def compare(case, op, ch):
    problems = []

    def same(what, a, b):
        a, b = strip_manager_labels(a), strip_manager_labels(b)
        if a != b:
            problems.append(f"{case}: {what} differs\n operator: {json.dumps(a, sort_keys=True, default=str)}\n"
                            f" chart:    {json.dumps(b, sort_keys=True, default=str)}")

    for kind in ("StatefulSet", "Service", "PodDisruptionBudget", "Ingress"):
        a, b = op.get(kind, []), ch.get(kind, [])
        same(f"{kind} names", [d["metadata"]["name"] for d in a], [d["metadata"]["name"] for d in b])
        for x, y in zip(a, b):
            same(f"{kind} {x['metadata']['name']} spec", x.get("spec"), y.get("spec"))
            same(f"{kind} {x['metadata']['name']} annotations",
                 x["metadata"].get("annotations"), y["metadata"].get("annotations"))
    same("ConfigMap data", [d.get("data") for d in op["ConfigMap"]],
         [d.get("data") for d in ch["ConfigMap"]])
    same("Secret names and keys",
         [(d["metadata"]["name"], sorted(d["data"])) for d in op["Secret"]],
         [(d["metadata"]["name"], sorted(d["data"])) for d in ch["Secret"]])
    return problems


def main():
    operator = sys.argv[1]
    problems = []
    for case, spec in CASES.items():
        name = "orders"
        op = operator_objects(operator, name, spec)
        ch = chart_objects(name, spec)
        found = compare(case, op, ch)
        problems.extend(found)
        sts = op["StatefulSet"][0]["spec"]["template"]["spec"]["containers"][0]
        print(f"{case}: {'OK' if not found else 'DIFFERENT'} "
              f"({len(sts.get('env', []))} env vars, {len(op)} kinds compared)")
    for p in problems:
        print("FAIL", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
