# titan-dr: every entry point of the project.
.PHONY: test test-faults fuzz lint unit crds control-plane node images cluster-up cluster-down demo bench build titan-step

CARGO ?= cargo

## The main job: the demo on the local cluster.
demo: build
	scripts/with-cluster.sh examples/titan/demo.sh

## Every test: formatting, lints, unit and integration tests (starts the cluster when none runs).
test: lint
	cd tests/argocd-health && go test -count=1 ./...
	scripts/with-cluster.sh $(CARGO) test --workspace

## The whole fault suite (make test runs a sample: 6 kills, the API server paused 30 s, etcd and the
## kubelet restarted): 200 operator kills, the API server paused 30 s and 120 s, etcd and the
## kubelet restarted at once and after 30 s, the API server restarted (last: see RELIABILITY.md).
FAULT_OUTAGES ?= apiserver:30:pause,apiserver:120:pause,etcd:0,etcd:30,kubelet:0,kubelet:30,apiserver:30
test-faults:
	TITAN_FAULT_KILLS=$${FAULT_KILLS:-200} TITAN_FAULT_OUTAGES=$(FAULT_OUTAGES) \
	  scripts/with-cluster.sh $(CARGO) test --test faults -- --nocapture --test-threads 1

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
