#!/usr/bin/env bash
# Builds the `ferry` wheel into target/wheels: the CLI, the in-tree plugins and the Python SDK.
#
#   scripts/build-wheel.sh [--release]     # default: the dev profile (what the tests install)
#
# Needs maturin (the test command installs it into .tools/venv).
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
profile=dev target=debug
if [[ "${1:-}" == "--release" ]]; then profile=release target=release; fi
maturin="${MATURIN:-${FERRY_TOOLS_DIR:-$PWD/.tools}/venv/bin/maturin}"
plugins=(backend-kubernetes storage-s3 storage-gcs storage-azure example-store)
args=()
for p in "${plugins[@]}"; do args+=(-p "$p"); done
cargo build --profile "$profile" --locked "${args[@]}"
data=python/wheel-data/data/lib/ferry/plugins
rm -rf python/wheel-data
mkdir -p "$data"
for p in "${plugins[@]}"; do
    cp "target/$target/lib${p//-/_}.so" "$data/"
done
(cd python && "$maturin" build --profile "$profile" --locked -o ../target/wheels --quiet)
rm -rf python/wheel-data
ls -1 target/wheels/ferry-*.whl | tail -1
