# The runtime image of the `kubernetes` orchestrator: ferry and its plugins on Debian slim.
#
#   docker build -t registry.example/ml/ferry:0.1.0 .
#
# glibc, not musl: ferry loads plugins with dlopen, which a fully static binary cannot do.
# Steps run in this image. It has python3 (what examples/ml needs); projects add their
# requirements in an image of their own, and set it as the stack's `image`:
#
#   FROM registry.example/ml/ferry:0.1.0
#   USER root
#   RUN apt-get update && apt-get install -y --no-install-recommends python3-numpy \
#       && rm -rf /var/lib/apt/lists/*
#   USER 10001
#
# Keep `USER 10001` last: the backend renders runAsUser 10001 (its `run_as_user` setting), and
# a step that is not root cannot read the store credentials its agent holds.
# backend-kubernetes/tests/dockerfile.rs checks these claims against what the backend renders.
#
# Not built in this repository's CI (its machines cannot build containers); the same binary
# and agent are tested against the official control plane in testing/kube-cluster, whose node
# runs pods as local processes.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cli -p backend-kubernetes -p storage-s3 -p storage-gcs -p storage-azure

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
# ferry looks for plugins in ../lib/ferry/plugins next to its executable.
COPY --from=build /src/target/release/libbackend_kubernetes.so /src/target/release/libstorage_s3.so \
    /src/target/release/libstorage_gcs.so /src/target/release/libstorage_azure.so /usr/local/lib/ferry/plugins/
# The Job's workingDir: the agent unpacks the code package here.
RUN useradd --uid 10001 --create-home ferry && mkdir /workspace && chown ferry /workspace
USER 10001
WORKDIR /workspace
ENTRYPOINT ["ferry"]
CMD ["--help"]
