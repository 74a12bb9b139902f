# The two commands of the README. Both install what they need first (scripts/install-deps.sh).
SHELL := /bin/bash
CARGO ?= cargo
PORT ?= 8080
# The ha-sync extension (sync/, a workspace of its own) builds into the same target directory,
# so the tests find libha_sync.so beside the ha binary.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
SYNC := --manifest-path sync/Cargo.toml --target-dir $(TARGET_DIR)

.PHONY: run cluster test deps build sync lint unit bench fuzz clean

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
	$(CARGO) build $(SYNC)
	$(CARGO) test $(SYNC)
	$(CARGO) test --workspace --no-fail-fast

## fuzz: the property tests of node/tests/fuzz.rs (HTTP decoder, SQL splitter, DDL tokenizer,
## change-set codec, pg frontend messages) with FUZZ_CASES inputs each (make test runs 256)
FUZZ_CASES ?= 1000000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p ha --test fuzz -- --test-threads 2
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p ha --lib split_agrees_with_sqlite_on_any_text

## sync: build the ha-sync SQLite extension, target/release/libha_sync.so (docs/read-replicas.md)
sync:
	$(CARGO) build --release $(SYNC)

deps:
	@scripts/install-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path sync/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy $(SYNC) --all-targets -- -D warnings

## bench: the benchmarks of docs/benchmarks.md (release build); each one's tables replace its
## previous run's in docs/benchmarks.md, stamped with the date and commit (scripts/bench-record.py)
bench: deps
	$(CARGO) build --release -p ha -p ha-tests --bins
	scripts/bench-record.py ha-bench ./target/release/ha-bench
	scripts/bench-record.py ha-bench-repl ./target/release/ha-bench-repl
	scripts/bench-record.py ha-bench-sweep ./target/release/ha-bench-sweep
	scripts/bench-record.py ha-bench-snapshot ./target/release/ha-bench-snapshot
	scripts/bench-record.py ha-bench-cpu ./target/release/ha-bench-cpu
	scripts/bench-record.py ha-bench-backup ./target/release/ha-bench-backup
	scripts/bench-record.py bench-pg scripts/bench-pg.sh

clean:
	$(CARGO) clean
	$(CARGO) clean $(SYNC)
