# Thin wrappers; the scripts hold the logic so a newcomer without make loses nothing.
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help setup build release test lint fmt doc run bench bench-full fuzz fuzz-long go-stubs check-go certs-localhost clean sim sim-full

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

setup: ## install Debian packages the project needs (idempotent)
	bash scripts/setup.sh

build: ## debug build of the workspace
	$(CARGO) build --workspace

release: ## optimised build
	$(CARGO) build --workspace --release

test: ## everything CI runs (fmt, clippy, docs, tests, Go, fuzz smoke)
	./scripts/test.sh

lint: ## fmt check + clippy -D warnings
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

doc: ## API docs
	$(CARGO) doc --workspace --no-deps

run: ## start a local mesh on the embedded defaults
	./scripts/run.sh

bench: ## mesh (native + gRPC, pair + line) vs NATS vs Zenoh vs TCP, short (~3 min; the first build of Zenoh takes longer): bench/results/
	$(CARGO) build --release -p mesh-node --bin mesh -p mesh-bench --features mesh-bench/zenoh --bins
	target/release/mesh-bench --quick --mesh-bin target/release/mesh

bench-full: ## as bench plus exactly-once (none, batch), TLS, a ring of two domains, 1 MiB; 10 s per point; criterion benches too
	$(CARGO) build --release -p mesh-node --bin mesh -p mesh-bench --features mesh-bench/zenoh --bins
	target/release/mesh-bench --full --mesh-bin target/release/mesh
	$(CARGO) bench --workspace

.PHONY: soak hostile
SOAK_SECS ?= 600
soak: ## pair at 80% of its max rate for SOAK_SECS=600 s (exactly-once, file WAL), RSS and fds sampled: bench/results/soak.*
	$(CARGO) build --release -p mesh-node --bin mesh -p mesh-bench --bin mesh-soak
	target/release/mesh-soak --mesh-bin target/release/mesh --duration-secs $(SOAK_SECS)

hostile: ## legitimate throughput with and without hostile peers (>80% kept), RSS: bench/results/hostile.json
	$(CARGO) build --release -p mesh-node --bin mesh -p mesh-bench --bin mesh-hostile
	target/release/mesh-hostile --mesh-bin target/release/mesh --rounds 5 --round-secs 5

fuzz: ## run every fuzz target for 5 minutes
	bash scripts/fuzz.sh 300

fuzz-long: ## run every fuzz target for an hour
	bash scripts/fuzz.sh 3600

go-stubs: ## regenerate the Go stubs from proto/mesh.proto
	bash scripts/gen-go.sh

check-go: ## check Go stubs are fresh and the Go example builds
	bash scripts/check-go.sh

certs-localhost: ## mesh CA + node certificates for a local mesh (needs the mesh binary)
	$(CARGO) run --release --bin mesh -- certs --out certs --nodes 1,2,3 --host localhost

clean:
	$(CARGO) clean

.PHONY: chaos chaos-ci
CHAOS_SECS ?= 600
chaos: ## long chaos run (release, CHAOS_SECS=600 s of faults under traffic in network namespaces); SEED=n replays a run
	bash scripts/chaos.sh --release --duration-s $(CHAOS_SECS) --rate 1000 $(if $(SEED),--seed $(SEED))

chaos-ci: ## the reduced chaos run CI does (debug build, every fault kind once, ~1 min); SEED=n for another
	bash scripts/chaos.sh --seed $(or $(SEED),1)

sim: ## control-plane simulation, reduced (20 domains x 50 nodes, every router live, checks)
	$(CARGO) run --release -p mesh-sim -- --domains 20 --nodes-per-domain 50 --seed 1 --walk

sim-full: ## control-plane simulation of 1,000,000 nodes (release, ~15-25 min, ~5 GB): bench/results/sim-1m.*
	$(CARGO) build --release -p mesh-sim
	mkdir -p bench/results
	target/release/mesh-sim --domains 1000 --nodes-per-domain 1000 --size-spread 0.5 --seed 1 \
		--sample-domains 4 --failure-domains 50 --threads 2 \
		--json bench/results/sim-1m.json --plot bench/results/sim-1m.svg --summary bench/results/sim-1m.txt
