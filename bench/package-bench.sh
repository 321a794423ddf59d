#!/bin/sh
# `ferry package` vs GNU tar + zstd CLI (and tar -z) on two generated trees; prints markdown.
#
#   bench/package-bench.sh [FERRY]          # FERRY defaults to target/release/ferry
#   RUNS=5 bench/package-bench.sh           # median of 5 runs per row (default 3)
#   BENCH_DIR=/path bench/package-bench.sh  # work dir (default /tmp/ferry-package-bench)
#   UNPACK=/path/to/unpack bench/package-bench.sh
#   bench/package-bench.sh --clean          # remove the work dir (generated trees) and exit
#
# Trees (generated once, reused via a marker file): (a) ~20,000 source-like files, ~150 MB;
# (b) one 500 MB random file + a few small files. Needs ~5 GB free in BENCH_DIR, GNU tar,
# zstd, gzip, bash, /usr/bin/time and python3 (standard library only). The unpack rows use
# target/release/examples/unpack next to FERRY and say "n/a (binary missing)" without it.
# Build first: cargo build --release -p cli && cargo build --release -p orchestrator-host --example unpack
# (one command with both -p and --example builds only the example).
set -eu

clean=
if [ "${1:-}" = "--clean" ]; then clean=--clean; shift; fi

ferry=${1:-target/release/ferry}
runs=${RUNS:-3}
work=${BENCH_DIR:-/tmp/ferry-package-bench}
here=$(cd "$(dirname "$0")" && pwd)
command -v python3 >/dev/null || { echo "package-bench.sh: python3 is required" >&2; exit 2; }

if [ -n "$clean" ]; then
    exec python3 "$here/package_bench.py" /nonexistent /nonexistent "$work" 1 --clean
fi

if [ ! -x "$ferry" ]; then
    echo "package-bench.sh: no ferry binary at $ferry (build it, or pass its path as \$1)" >&2
    exit 2
fi
case $ferry in
    /*) ;;
    *) ferry=$(cd "$(dirname "$ferry")" && pwd)/$(basename "$ferry") ;;
esac
unpack=${UNPACK:-$(dirname "$ferry")/examples/unpack}

exec python3 "$here/package_bench.py" "$ferry" "$unpack" "$work" "$runs"
