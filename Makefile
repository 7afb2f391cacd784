# titan-dr: every entry point of the project.
.PHONY: test lint unit crds control-plane cluster-up cluster-down demo bench build titan-step

CARGO ?= cargo

## The main job: the demo on a local control plane.
demo: build
	scripts/with-cluster.sh examples/titan/demo.sh

## Every test: formatting, lints, unit and integration tests (starts the control plane when none runs).
test: lint
	scripts/with-cluster.sh $(CARGO) test --workspace

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Tests that need no control plane: unit tests, CRD drift, the local executor end to end.
unit:
	$(CARGO) test --lib --bins --test crds --test local_run
	$(CARGO) test -p titan-step

build:
	$(CARGO) build --workspace --bins

## titan-step, the step containers' entrypoint, fully static; prints the binary's path.
titan-step:
	scripts/build-titan-step.sh

## Regenerate the committed CRDs from the Rust types, and their copies in manifests/ and charts/.
crds:
	$(CARGO) run --quiet --bin titan-dr -- crds > crds/crds.yaml
	scripts/sync-deploy.sh

control-plane:
	scripts/build-control-plane.sh

cluster-up:
	scripts/cluster-up.sh

cluster-down:
	scripts/cluster-down.sh

bench: build
	scripts/with-cluster.sh scripts/bench.sh
