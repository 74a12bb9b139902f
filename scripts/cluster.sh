#!/usr/bin/env bash
# Starts a local 3-node ha cluster: three nodes, each with an embedded nats-server, the three
# servers routed into one JetStream cluster (stream replicas 3). Data in ./data/cluster/nodeN.
# HTTP on 8081-8083, PostgreSQL on 5441-5443, NATS on 4231-4233 (routes 6231-6233), all on
# 127.0.0.1. NATS clients and routes authenticate as user "ha" with a random password kept in
# data/cluster/nats.pass (a clustered embedded nats-server refuses to run without credentials).
# Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${HA_BIN:-target/release/ha}
export HA_NATS_SERVER_BIN=${HA_NATS_SERVER_BIN:-$PWD/.tools/bin/nats-server}
ROUTES=nats-route://127.0.0.1:6231,nats-route://127.0.0.1:6232,nats-route://127.0.0.1:6233
mkdir -p data/cluster
PASS_FILE=data/cluster/nats.pass
[ -s "$PASS_FILE" ] || (umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$PASS_FILE")
export HA_NATS_USER=ha HA_NATS_PASS
HA_NATS_PASS=$(cat "$PASS_FILE")
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for i in 1 2 3; do
  dir=data/cluster/node$i
  mkdir -p "$dir"
  "$BIN" --name node$i --port 808$i --pg-port 544$i \
    --nats-port 423$i --nats-host 127.0.0.1 --nats-cluster-name ha-local --nats-cluster-port 623$i --nats-routes "$ROUTES" \
    --replicas 3 "file:$dir/ha.db" > "$dir/ha.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:808$i/readyz" >/dev/null && break
    kill -0 "${pids[$((i-1))]}" 2>/dev/null || { echo "node$i died:"; tail -20 "data/cluster/node$i/ha.log"; exit 1; }
    sleep 0.1
  done
done
echo "3-node cluster ready:"
for i in 1 2 3; do echo "  node$i  http://127.0.0.1:808$i   psql postgres://ha:ha@127.0.0.1:544$i/ha   log data/cluster/node$i/ha.log"; done
echo "  NATS     nats://ha:\$(cat $PASS_FILE)@127.0.0.1:4231"
echo "try: curl -s -d '{\"sql\":\"CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)\"}' localhost:8081/ && curl -s -d '{\"sql\":\"SELECT name FROM sqlite_schema\"}' localhost:8083/"
wait
