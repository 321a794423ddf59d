#!/bin/sh
# Whole-process wall time of `ferry run` on trivial pipelines; prints a markdown table.
#
#   bench/run-bench.sh [FERRY]        # FERRY defaults to target/release/ferry
#   RUNS=50 bench/run-bench.sh target/release/ferry
#
# Build first: cargo build --release -p cli. Exit status is 1 if the fan-out check
# finds the middle steps did not run in parallel. Needs python3 (standard library only).
set -eu

ferry=${1:-target/release/ferry}
runs=${RUNS:-20}
here=$(cd "$(dirname "$0")" && pwd)

if [ ! -x "$ferry" ]; then
    echo "run-bench.sh: no ferry binary at $ferry (build it, or pass its path as \$1)" >&2
    exit 2
fi
case $ferry in
    /*) ;;
    *) ferry=$(cd "$(dirname "$ferry")" && pwd)/$(basename "$ferry") ;;
esac
command -v python3 >/dev/null || { echo "run-bench.sh: python3 is required" >&2; exit 2; }

exec python3 "$here/bench.py" "$ferry" "$here/pipelines" "$runs"
