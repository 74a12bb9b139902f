#!/usr/bin/env bash
# The pod simulation's scenarios against a real Kubernetes cluster (kind, or any cluster in
# KUBECONFIG): build both images, load them into kind, helm install the operator chart, apply an
# HaCluster, then psql and curl through the client Service, delete a pod, scale to 5, and wait on
# the HaCluster's Ready condition after each step. Skips (exit 0, with the reason) when no cluster
# is reachable. Cleans up the namespace it created, also on failure.
#
#   e2e/kind/run.sh                      # uses the current kubectl context
#   KIND_CLUSTER=ha e2e/kind/run.sh      # also `kind load` the images into that kind cluster
set -euo pipefail
cd "$(dirname "$0")/../.."

NS=${HA_E2E_NAMESPACE:-ha-e2e-$$}
TAG=${HA_E2E_TAG:-e2e}
TIMEOUT=${HA_E2E_TIMEOUT:-600s}

skip() { echo "SKIP e2e/kind: $*"; exit 0; }
command -v kubectl >/dev/null || skip "kubectl is not installed"
kubectl version --request-timeout=5s >/dev/null 2>&1 || skip "no Kubernetes cluster reachable (KUBECONFIG=${KUBECONFIG:-~/.kube/config})"
for tool in docker helm psql curl; do
  command -v "$tool" >/dev/null || { echo "e2e/kind needs $tool" >&2; exit 1; }
done

cleanup() {
  set +e
  kill "${PF_PID:-}" 2>/dev/null
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1
  helm uninstall ha-operator -n "$NS-system" >/dev/null 2>&1
  kubectl delete namespace "$NS-system" --wait=false >/dev/null 2>&1
}
trap cleanup EXIT

echo "== images"
docker build -q -f Dockerfile.node -t "ha:$TAG" .
docker build -q -f Dockerfile.operator -t "ha-operator:$TAG" .
if [ -n "${KIND_CLUSTER:-}" ]; then
  kind load docker-image --name "$KIND_CLUSTER" "ha:$TAG" "ha-operator:$TAG"
fi

echo "== operator"
kubectl create namespace "$NS-system"
helm install ha-operator charts/ha-operator -n "$NS-system" --wait --timeout "$TIMEOUT" \
  --set image.repository=ha-operator --set image.tag="$TAG" --set image.pullPolicy=Never
kubectl wait --for=condition=Established crd/haclusters.ha.sqlite.dev --timeout=60s

echo "== cluster"
kubectl create namespace "$NS"
cat <<YAML | kubectl apply -n "$NS" -f -
apiVersion: ha.sqlite.dev/v1alpha1
kind: HaCluster
metadata:
  name: e2e
spec:
  replicas: 3
  image: ha:$TAG
  imagePullPolicy: Never
  storage:
    size: 1Gi
YAML
kubectl wait -n "$NS" --for=condition=Ready hac/e2e --timeout="$TIMEOUT"
kubectl get hac -n "$NS"

echo "== psql and curl through the client Service"
kubectl port-forward -n "$NS" svc/e2e 15432:5432 18080:8080 >/dev/null 2>&1 &
PF_PID=$!
for _ in $(seq 50); do curl -fs localhost:18080/healthz >/dev/null 2>&1 && break; sleep 0.2; done
USER=$(kubectl get secret -n "$NS" e2e-credentials -o jsonpath='{.data.username}' | base64 -d)
PASS=$(kubectl get secret -n "$NS" e2e-credentials -o jsonpath='{.data.password}' | base64 -d)
curl -fsS -d '{"sql": "CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT)"}' localhost:18080/
PGPASSWORD=$PASS psql -h localhost -p 15432 -U "$USER" -d ha -v ON_ERROR_STOP=1 \
  -c "INSERT INTO items(v) SELECT 'row' FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3)"
# Rows in items on one pod, through a port-forward to that pod; polls until it equals $2.
expect_rows() {
  local pod=$1 want=$2 port=$((20000 + RANDOM % 10000)) got="" pid
  kubectl port-forward -n "$NS" "pod/$pod" "$port:8080" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 150); do
    got=$(curl -fs -d '{"sql": "SELECT count(*) FROM items"}' "localhost:$port/" 2>/dev/null | sed -n 's/.*"rows":\[\[\([0-9]*\)\]\].*/\1/p')
    [ "$got" = "$want" ] && break
    sleep 0.2
  done
  kill "$pid" 2>/dev/null
  [ "$got" = "$want" ] || { echo "FAIL: $pod has ${got:-no answer} rows, want $want" >&2; exit 1; }
  echo "$pod: $got rows"
}
expect_rows e2e-0 3
expect_rows e2e-2 3

echo "== delete a pod; it comes back on its volume and catches up"
kubectl delete pod -n "$NS" e2e-1 --wait=true
kubectl wait -n "$NS" --for=condition=Ready pod/e2e-1 --timeout="$TIMEOUT"
kubectl wait -n "$NS" --for=condition=Ready hac/e2e --timeout="$TIMEOUT"
expect_rows e2e-1 3

echo "== scale to 5"
kubectl patch hac e2e -n "$NS" --type merge -p '{"spec": {"replicas": 5}}'
kubectl wait -n "$NS" --for=jsonpath='{.status.readyReplicas}'=5 hac/e2e --timeout="$TIMEOUT"
kubectl wait -n "$NS" --for=condition=Ready hac/e2e --timeout="$TIMEOUT"
expect_rows e2e-3 3
expect_rows e2e-4 3
kubectl get hac -n "$NS" -o wide
echo "PASS e2e/kind"
