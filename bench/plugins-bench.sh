#!/usr/bin/env bash
# Plugin discovery and load time: whole-process `ferry plugins list` with 10 plugin files on
# FERRY_PLUGIN_PATH (the 7 plugins this repository builds, plus 3 of them copied under other
# file names), against `ferry plugins list` with an empty plugin directory and `ferry --version`
# (process start alone). Each `plugins list` dlopens every file, checks its interface version
# and layout (abi_stable) and reads its metadata. Prints a markdown table of medians.
#
#   bench/plugins-bench.sh [ROUNDS]        # default 50
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-50}
cargo build --release -p cli -p backend-kubernetes -p storage-s3 -p storage-gcs -p storage-azure \
    -p example-store -p panicking-store -p remote-fixture >/dev/null 2>&1
release=$PWD/target/release
work=$(mktemp -d /tmp/ferry-plugins-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
# ferry alone in its directory, so that only FERRY_PLUGIN_PATH holds plugins.
mkdir -p "$work/bin" "$work/plugins" "$work/empty" "$work/home"
cp "$release/ferry" "$work/bin/ferry"
for lib in backend_kubernetes storage_s3 storage_gcs storage_azure example_store panicking_store remote_fixture; do
    cp "$release/lib$lib.so" "$work/plugins/"
done
for lib in storage_s3 storage_gcs example_store; do
    cp "$release/lib$lib.so" "$work/plugins/lib${lib}_copy.so"
done
[[ $(ls "$work/plugins" | wc -l) == 10 ]]

python3 - "$work" "$rounds" <<'PY'
import os, statistics, subprocess, sys, time
work, rounds = sys.argv[1], int(sys.argv[2])
ferry = f"{work}/bin/ferry"
def timed(args, plugin_path):
    env = {"PATH": os.environ["PATH"], "HOME": f"{work}/home", "XDG_DATA_HOME": f"{work}/home/data",
           "XDG_CONFIG_HOME": f"{work}/home/config", "FERRY_PLUGIN_PATH": plugin_path}
    subprocess.run([ferry, *args], env=env, cwd=work, check=True, capture_output=True)  # warm
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        subprocess.run([ferry, *args], env=env, cwd=work, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return times
ms = lambda xs: f"{statistics.median(xs) * 1000:.1f} ms | {min(xs) * 1000:.1f} ms | {max(xs) * 1000:.1f} ms"
print(f"| measure ({rounds} rounds) | median | min | max |")
print("| --- | ---: | ---: | ---: |")
print(f"| `ferry --version` (process start) | {ms(timed(['--version'], f'{work}/empty'))} |")
print(f"| `ferry plugins list`, no plugin files | {ms(timed(['plugins', 'list'], f'{work}/empty'))} |")
print(f"| `ferry plugins list`, 10 plugin files | {ms(timed(['plugins', 'list'], f'{work}/plugins'))} |")
PY
