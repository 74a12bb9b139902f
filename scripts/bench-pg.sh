#!/usr/bin/env bash
# PostgreSQL-wire benchmark: pgbench custom scripts (point SELECT by primary key, single-row
# INSERT) at -c 1 and -c 8, -M simple and -M prepared, against ha (standalone, release build) and
# against ha with replication on (embedded nats-server, R1 stream: every write published and
# acknowledged before it commits; once with the default `--nats-sync always`, the server syncing
# before each acknowledgement, and once lazily, `--nats-sync 2m`), and against a PostgreSQL 15
# started here (temp dir, initdb defaults: fsync on), in the same run.
# Prints a Markdown table (TPS and average latency) and, with --write, replaces the
# "PostgreSQL wire (pgbench)" section of docs/benchmarks.md. Everything is removed on exit.
#
# Usage: scripts/bench-pg.sh [--write] [SECONDS]   (needs pgbench/initdb from postgresql-15)
set -euo pipefail
cd "$(dirname "$0")/.."
WRITE=0; if [[ "${1:-}" == "--write" ]]; then WRITE=1; shift; fi
SECS=${1:-5}
PGBIN=/usr/lib/postgresql/15/bin
WORK=$(mktemp -d); chmod 777 "$WORK"
HA_PID=""; HAR_PID=""; HAL_PID=""; PG_STARTED=0
cleanup() {
  [[ -n "$HA_PID" ]] && kill "$HA_PID" 2>/dev/null || true
  [[ -n "$HAR_PID" ]] && kill "$HAR_PID" 2>/dev/null || true
  [[ -n "$HAL_PID" ]] && kill "$HAL_PID" 2>/dev/null || true
  [[ $PG_STARTED == 1 ]] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [[ -z "${HA_BIN:-}" ]]; then
  cargo build --release -q -p ha --bin ha
  HA_BIN=${CARGO_TARGET_DIR:-target}/release/ha
fi

# ha, standalone
HA_PG=$(free_port)
"$HA_BIN" --port 0 --nats-port 0 --pg-port "$HA_PG" "file:$WORK/ha.db" >"$WORK/ha.log" 2>&1 &
HA_PID=$!
for _ in $(seq 100); do grep -qs "pg listening" "$WORK/ha.log" && break; sleep 0.1; done
grep -q "pg listening" "$WORK/ha.log" || { cat "$WORK/ha.log"; exit 1; }

# ha, replicated (embedded nats-server): NAME PG_PORT [ARGS...]; prints its pid
replicated() {
  mkdir -p "$WORK/$1"
  HA_NATS_SERVER_BIN=${HA_NATS_SERVER_BIN:-$PWD/.tools/bin/nats-server} "$HA_BIN" --port 0 \
    --nats-port "$(free_port)" --pg-port "$2" "${@:3}" "file:$WORK/$1/ha.db" >"$WORK/$1.log" 2>&1 &
  echo $!
}
ready() { # NAME
  for _ in $(seq 100); do grep -qs "ha is ready" "$WORK/$1.log" && return; sleep 0.1; done
  cat "$WORK/$1.log"; exit 1
}
HAR_PG=$(free_port); HAR_PID=$(replicated r "$HAR_PG"); ready r
HAL_PG=$(free_port); HAL_PID=$(replicated l "$HAL_PG" --nats-sync 2m); ready l

# PostgreSQL 15
PG_PORT=$(free_port)
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1" -w start >/dev/null
PG_STARTED=1

setup='DROP TABLE IF EXISTS kv; CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER);
       INSERT INTO kv(k, v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) SELECT i, i FROM n;
       DROP TABLE IF EXISTS log; CREATE TABLE log(id INTEGER PRIMARY KEY, v INTEGER);'
setup_pg='DROP TABLE IF EXISTS kv; CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER);
          INSERT INTO kv SELECT i, i FROM generate_series(1, 10000) i;
          DROP TABLE IF EXISTS log; CREATE TABLE log(id SERIAL PRIMARY KEY, v INTEGER);'
PGPASSWORD=ha psql -X -q "host=127.0.0.1 port=$HA_PG user=ha dbname=ha" -c "$setup"
PGPASSWORD=ha psql -X -q "host=127.0.0.1 port=$HAR_PG user=ha dbname=ha" -c "$setup"
PGPASSWORD=ha psql -X -q "host=127.0.0.1 port=$HAL_PG user=ha dbname=ha" -c "$setup"
psql -X -q "host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres" -c "$setup_pg"

printf '\\set k random(1, 10000)\nSELECT v FROM kv WHERE k = :k;\n' >"$WORK/select.sql"
printf '\\set k random(1, 10000)\nINSERT INTO log(v) VALUES (:k);\n' >"$WORK/insert.sql"

# Prints "TPS LATENCY_MS" for one pgbench run (exits on a failed run: no silent zeros).
bench() { # port user script clients mode
  local out
  out=$(PGPASSWORD=ha pgbench -n -f "$WORK/$3.sql" -T "$SECS" -c "$4" -j "$4" -M "$5" \
        -h 127.0.0.1 -p "$1" -U "$2" "$2" 2>"$WORK/pgbench.err") || { cat "$WORK/pgbench.err" >&2; exit 1; }
  awk '/^tps/ {t=int($3)} /^latency average/ {l=$4} END {print t, l}' <<<"$out"
}

rows=()
for script in select insert; do
  for c in 1 8; do
    for mode in simple prepared; do
      read -r h hl < <(bench "$HA_PG" ha "$script" "$c" "$mode")
      read -r r rl < <(bench "$HAR_PG" ha "$script" "$c" "$mode")
      read -r l _ < <(bench "$HAL_PG" ha "$script" "$c" "$mode")
      read -r p pl < <(bench "$PG_PORT" postgres "$script" "$c" "$mode")
      ratio=$(python3 -c "print(f'{$h/$p:.2f}' if $p else '-')")
      rratio=$(python3 -c "print(f'{$r/$p:.2f}' if $p else '-')")
      rows+=("| $script | $c | $mode | $h | $hl | $r | $rl | $l | $p | $pl | $ratio | $rratio |")
      echo "${rows[-1]}" >&2
    done
  done
done

table=$(printf '## PostgreSQL wire (pgbench)\n\n`scripts/bench-pg.sh`: pgbench `-n -f SCRIPT -T %s -j C -c C -M MODE`, same machine, same run (%s, %s cores).\n`select`: point SELECT by primary key over 10,000 rows; `insert`: single-row autocommit INSERT.\nha: release build, SCRAM auth, WAL file database; standalone (`--nats-port 0`), and replicated (embedded nats-server, R1 stream, each commit acknowledged by JetStream first: syncing before each acknowledgement, the default, and lazily, `--nats-sync 2m`).\nPostgreSQL 15: initdb defaults (fsync on, synchronous_commit on). Latency is pgbench'"'"'s average, ms.\n\n| script | clients | mode | ha tps | ha ms | ha replicated tps | ha repl. ms | repl. lazy sync tps | PostgreSQL 15 tps | PG ms | ha / PG | replicated / PG |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n' "$SECS" "$(date -u +%Y-%m-%d)" "$(nproc)"; printf '%s\n' "${rows[@]}")
echo "$table"
if [[ $WRITE == 1 ]]; then
  f=docs/benchmarks.md
  [[ -f $f ]] || printf '# Benchmarks\n' >"$f"
  python3 - "$f" "$table" <<'PY'
import re, sys
path, table = sys.argv[1], sys.argv[2]
text = open(path).read()
rows = "\n".join(l for l in table.splitlines() if l.startswith("|")) + "\n"
sec = re.compile(r"^## PostgreSQL wire \(pgbench\)\n.*?(?=^## |\Z)", re.S | re.M)
m = sec.search(text)
if m:
    # Replace only the table: the prose around it is written by hand.
    body = re.sub(r"(^\|.*\n)+", lambda _: rows, m.group(0), count=1, flags=re.M)
    text = text[: m.start()] + body + text[m.end():]
else:
    text = text.rstrip("\n") + "\n\n" + table + "\n"
open(path, "w").write(text)
PY
fi
