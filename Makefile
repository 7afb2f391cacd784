# titan-dr: every entry point of the project.
.PHONY: test fuzz lint unit crds control-plane node images cluster-up cluster-down demo bench build titan-step

CARGO ?= cargo

## The main job: the demo on the local cluster.
demo: build
	scripts/with-cluster.sh examples/titan/demo.sh

## Every test: formatting, lints, unit and integration tests (starts the cluster when none runs).
test: lint
	scripts/with-cluster.sh $(CARGO) test --workspace

## The fuzz targets for FUZZ_SECONDS each (CI runs them for 5 s each within `make test`).
fuzz:
	TITAN_FUZZ_SECONDS=$${FUZZ_SECONDS:-300} $(CARGO) test --release --test fuzz -- --nocapture

lint:
	$(CARGO) fmt --all --check
	python3 scripts/long-fns.py
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

## containerd, CNI plugins, CoreDNS, local-path-provisioner and pause, from Go modules.
node:
	scripts/build-node.sh

## The cluster's OCI images (operator, toolbox, redis, Titan service, pause, CoreDNS, provisioner),
## rebuilt only when their inputs change; imported into the node when it runs.
images:
	scripts/build-images.sh $$( [ -S target/cluster/containerd/containerd.sock ] && echo --import )

cluster-up:
	scripts/cluster-up.sh

cluster-down:
	scripts/cluster-down.sh

bench: build
	scripts/with-cluster.sh scripts/bench.sh
