#!/usr/bin/env bash
# Row 1 of issue 19: a chain of 10 `true` steps on the local stack, whole process
# (`ferry run --no-cache`), against ten sequential `sh -c true` spawns: medians and the ratio.
#
#   bench/overhead-bench.sh target/release/ferry [RUNS]
set -euo pipefail
ferry="$(realpath "${1:?usage: bench/overhead-bench.sh FERRY [RUNS]}")"
runs="${2:-30}"
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cp "$here/pipelines/chain10.yaml" "$dir/pipeline.yaml"

median_ms() { sort -n | awk '{ a[NR]=$1 } END { printf "%.2f", a[int((NR+1)/2)] / 1e6 }'; }
ferry_ns() { local s; s=$(date +%s%N); "$ferry" -C "$dir" run --no-cache >/dev/null 2>&1; echo $(($(date +%s%N) - s)); }
spawn_ns() { local s; s=$(date +%s%N); for _ in 1 2 3 4 5 6 7 8 9 10; do sh -c true; done; echo $(($(date +%s%N) - s)); }

ferry_ns >/dev/null; spawn_ns >/dev/null # warm-up
f=$(for _ in $(seq "$runs"); do ferry_ns; done | median_ms)
s=$(for _ in $(seq "$runs"); do spawn_ns; done | median_ms)
awk -v f="$f" -v s="$s" -v n="$runs" 'BEGIN { printf "chain of 10 `true` steps: ferry %.1f ms, 10 × `sh -c true` %.1f ms, ratio %.2f× (median of %d)\n", f, s, f / s, n }'
