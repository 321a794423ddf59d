#!/usr/bin/env bash
# The Python SDK against ZenML's local orchestrator, on the same pipeline files (bench/python),
# the import line being the only difference: whole-process time of `python FILE.py`, median of
# RUNS after one warm-up, caching off on both sides.
#
#   bench/python-sdk-bench.sh FERRY_BINARY ZENML_VENV_PYTHON [RUNS]
#   (ZenML: python3 -m venv /tmp/zenv && /tmp/zenv/bin/pip install zenml==0.98.0)
set -euo pipefail
ferry="$(realpath "${1:?usage: bench/python-sdk-bench.sh FERRY ZENML_PYTHON [RUNS]}")"
zenml_python="${2:?the python of a venv with zenml installed}"
runs="${3:-5}"
here="$(cd "$(dirname "$0")" && pwd)"
sdk="$here/../python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

median() { sort -n | awk '{ a[NR]=$1 } END { print a[int((NR+1)/2)] }'; }

time_runs() { # DIR PYTHON FILE [ENV...]: median milliseconds of `PYTHON FILE`
    local dir="$1" python="$2" file="$3"
    shift 3
    (
        cd "$dir"
        env "$@" "$python" "$file" >/dev/null 2>&1 # warm-up
        for _ in $(seq "$runs"); do
            start=$(date +%s%N)
            env "$@" "$python" "$file" >/dev/null 2>&1 || { echo "$file failed" >&2; exit 1; }
            echo $((($(date +%s%N) - start) / 1000000))
        done
    ) | median
}

mkdir -p "$work/ferry" "$work/zenml"
(cd "$work/zenml" && ZENML_ANALYTICS_OPT_IN=false ZENML_CONFIG_PATH="$work/zenml/.config" "$zenml_python" -m zenml init >/dev/null 2>&1 || true)
echo "| pipeline | ferry | ZenML 0.98 local | ratio |"
echo "|---|---:|---:|---:|"
for name in chain fanout; do
    cp "$here/python/$name.py" "$work/ferry/$name.py"
    sed 's/^from ferry import pipeline, step$/from zenml import pipeline, step/' "$here/python/$name.py" >"$work/zenml/$name.py"
    f=$(time_runs "$work/ferry" python3 "$name.py" FERRY_BIN="$ferry" PYTHONPATH="$sdk")
    z=$(time_runs "$work/zenml" "$zenml_python" "$name.py" ZENML_ANALYTICS_OPT_IN=false ZENML_CONFIG_PATH="$work/zenml/.config" ZENML_LOGGING_VERBOSITY=ERROR)
    awk -v n="$name" -v f="$f" -v z="$z" 'BEGIN { printf "| %s (10 steps) | %d ms | %d ms | %.1f× |\n", n, f, z, z / f }'
done
