# The two commands of the README. Both install what they need first (scripts/install-deps.sh).
SHELL := /bin/bash
CARGO ?= cargo
PORT ?= 8080

.PHONY: run test deps build lint unit bench clean

## run: build ha and start one node on ./data (HTTP on :$(PORT))
run: deps
	$(CARGO) build --release --bin ha
	@mkdir -p data
	@echo "starting ha in ./data — stop it with Ctrl-C"
	cd data && ../target/release/ha --port $(PORT)

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

clean:
	$(CARGO) clean
