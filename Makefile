# The two commands of the README. Both install what they need first (scripts/install-deps.sh).
SHELL := /bin/bash
CARGO ?= cargo
PORT ?= 8080

.PHONY: run cluster test deps build lint unit bench clean

## run: build ha and start one node on ./data: HTTP on :$(PORT), PostgreSQL on :5432,
## embedded NATS JetStream on :4222
run: deps
	$(CARGO) build --release --bin ha
	@mkdir -p data
	@echo "starting ha in ./data — stop it with Ctrl-C"
	cd data && HA_NATS_SERVER_BIN=$(CURDIR)/.tools/bin/nats-server ../target/release/ha --port $(PORT)

## cluster: build ha and start a local 3-node cluster (see scripts/cluster.sh)
cluster: deps
	$(CARGO) build --release --bin ha
	scripts/cluster.sh

## test: install every test dependency, then lint and run every test
test: deps lint
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

deps:
	@scripts/install-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: the benchmarks of docs/benchmarks.md (release build)
bench: deps
	$(CARGO) build --release --workspace --bins
	./target/release/ha-bench
	./target/release/ha-bench-repl
	./target/release/ha-bench-snapshot
	scripts/bench-pg.sh

clean:
	$(CARGO) clean
