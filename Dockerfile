# The titan-dr operator image: `titan-dr` and the static `titan-step` on a distroless base, as
# user 65532.
#
#   docker build -t registry.example/titan-dr:0.1.0 .
#
# Not built by the tests: the development machines have no container engine. The Deployment
# in manifests/ and charts/titan-dr expects exactly this: the binary as entrypoint, `operator`
# as its argument, a non-root user, nothing written outside /backups and /tmp.

# --- build: the release binaries, with the registry and target folder cached between builds.
# titan-step is linked fully static: step pods' init containers copy it into images that may
# have no libc at all (scripts/build-titan-step.sh builds it the same way).
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin titan-dr \
    && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p titan-step \
        --target x86_64-unknown-linux-gnu \
    && install -D -m 0755 target/release/titan-dr /out/titan-dr \
    && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/titan-step /out/titan-step

# --- runtime: glibc and libgcc only (distroless/cc), no shell; uid/gid 65532 is `nonroot`
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/titan-dr /usr/local/bin/titan-dr
# TITAN_STEP_PATH: what every step pod's init container copies out of this image.
COPY --from=build /out/titan-step /usr/local/bin/titan-step
USER 65532:65532
WORKDIR /backups
ENTRYPOINT ["/usr/local/bin/titan-dr"]
CMD ["operator"]
