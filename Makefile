# sidecar-operator — developer and user entry points. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
# Modest parallelism: the machine has 2 cores and the control plane runs beside the tests.
TEST_THREADS ?= 2

.PHONY: help demo binaries cluster test test-unit test-e2e test-faults bench bench-peers fmt fmt-check lint crds deploy clean-cache

help: ## List targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

demo: ## Start a local control plane, install the CRD, run the operator on the examples and show the sidecars
	@bash hack/demo.sh

binaries: ## Build the pinned control-plane binaries into the cache (idempotent)
	@bash hack/control-plane.sh build >/dev/null

cluster: binaries ## Run a local control plane in the foreground; kubeconfig in target/cluster/kubeconfig
	@$(CARGO) build -q -p sidecar-testenv --bin sidecar-testenv
	@exec target/debug/sidecar-testenv --kubeconfig-out target/cluster/kubeconfig

test: binaries ## Run every test: unit tests and tests against the real control plane
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=$(TEST_THREADS)

# Integration-test targets (tests/<name>.rs, tests/<name>/main.rs of each crate) and those of
# them that start a control plane: the behaviour tests (tests/e2e), the operator binary's
# (crates/operator/tests/deploy), the harness's own (crates/testenv/tests/control_plane)
# and the CI-sized benchmark (bench/tests/ci.rs). Every other target needs no cluster.
CLUSTER_TESTS := e2e deploy control_plane ci
TEST_TARGETS := $(basename $(notdir $(wildcard crates/*/tests/*.rs bench/tests/*.rs))) \
	$(notdir $(patsubst %/main.rs,%,$(wildcard crates/*/tests/*/main.rs bench/tests/*/main.rs)))
UNIT_TESTS := $(sort $(filter-out $(CLUSTER_TESTS),$(TEST_TARGETS)))

test-unit: ## Run every test that needs no control plane (unit, doc and cluster-free integration tests)
	$(CARGO) test --workspace --lib --bins $(addprefix --test ,$(UNIT_TESTS)) -- --test-threads=$(TEST_THREADS)
	$(CARGO) test --workspace --doc

test-e2e: binaries ## Run only the control-plane tests (FILTER=substring to select)
	$(CARGO) test --workspace $(addprefix --test ,$(CLUSTER_TESTS)) -- --test-threads=$(TEST_THREADS) $(FILTER)

bench: binaries ## Benchmark vs the physical floor on a local control plane (BENCH_N=1000, BENCH_ROUNDS=3); report in target/bench/
	$(CARGO) build --release -p sidecar-operator
	$(CARGO) run --release -p sidecar-bench -- --n $${BENCH_N:-1000} --rounds $${BENCH_ROUNDS:-3} $(BENCH_ARGS)

bench-peers: binaries ## The operator against Kyverno doing the same job, same run (BENCH_N=1000, BENCH_ROUNDS=1; builds Kyverno once, ~12 min)
	bash hack/peers.sh build >/dev/null
	$(CARGO) build --release -p sidecar-operator
	$(CARGO) run --release -p sidecar-bench -- --n $${BENCH_N:-1000} --rounds $${BENCH_ROUNDS:-1} \
	  --kyverno-bin-dir "$$(bash hack/peers.sh bindir)" --kyverno-crds "$$(bash hack/peers.sh crds)" \
	  --idle-secs 10 --churn-secs 0 --cluster-namespaces 0 --repair-n 0 --admission true \
	  --timeout-secs 600 --out target/bench-peers $(BENCH_ARGS)

crds: ## Regenerate crds/ (both CRDs, and the chart's copies) from the Rust types; copy the admission policy into the chart (commit the result)
	$(CARGO) run -q -p sidecar-api --bin crdgen sidecarpolicies > crds/sidecarpolicies.sidecars.dev.yaml
	$(CARGO) run -q -p sidecar-api --bin crdgen clustersidecarpolicies > crds/clustersidecarpolicies.sidecars.dev.yaml
	cp crds/sidecarpolicies.sidecars.dev.yaml crds/clustersidecarpolicies.sidecars.dev.yaml charts/sidecar-operator/crds/
	cp crds/admission-policy.yaml charts/sidecar-operator/files/

deploy: ## Regenerate deploy/ from the Helm chart (helm template; commit the result)
	@bash hack/deploy.sh write

test-faults: binaries ## Long forms of the fault tests (500-Pod crash rounds, 20 s API outage, ...)
	SIDECAR_LONG_FAULTS=1 $(CARGO) test -p sidecar-e2e --test e2e -- --test-threads=$(TEST_THREADS) faults::

fmt: ## Format the Rust code
	$(CARGO) fmt --all

fmt-check: ## Fail if the Rust code is not formatted
	$(CARGO) fmt --all -- --check

lint: ## clippy with -D warnings, and a rustfmt check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean-cache: ## Remove the cached control-plane binaries (forces a cold rebuild)
	rm -rf "$$(bash hack/control-plane.sh bindir)"
