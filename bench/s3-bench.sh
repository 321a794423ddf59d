#!/usr/bin/env bash
# Throughput of a large file through the storage-s3 plugin vs object_store called directly vs
# boto3, against the same local SeaweedFS. Prints a markdown table.
#
#   bench/s3-bench.sh [SIZE_MIB] [ROUNDS]     # defaults: 200 MiB, 3 rounds (medians)
#
# Starts its own servers (scripts/servers.sh, on FERRY_S3_PORT, default 8363) and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-200}
rounds=${2:-3}
export FERRY_TOOLS_DIR="${FERRY_TOOLS_DIR:-$PWD/.tools}"
export FERRY_S3_PORT="${FERRY_S3_PORT:-8363}"
. scripts/servers.sh
ferry_tools_install
trap ferry_servers_stop EXIT
ferry_servers_start >/dev/null

cargo build --release -p storage-s3 --example throughput >/dev/null 2>&1
cargo build --release -p storage-s3 >/dev/null 2>&1

out=$(KEEP_SOURCE=1 target/release/examples/throughput "$size" "$rounds")
source_file=$(printf '%s\n' "$out" | sed -n 's/^source //p')
boto=$("$FERRY_TEST_PYTHON" - "$source_file" "$rounds" <<'PY'
import os, statistics, sys, time
import boto3
path, rounds = sys.argv[1], int(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=os.environ["FERRY_TEST_S3_ENDPOINT"],
                  aws_access_key_id=os.environ["FERRY_TEST_S3_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["FERRY_TEST_S3_SECRET_ACCESS_KEY"],
                  region_name=os.environ["FERRY_TEST_S3_REGION"])
bucket = os.environ["FERRY_TEST_S3_BUCKET"]
mb = os.path.getsize(path) / 1e6
up, down = [], []
for i in range(rounds):
    key = f"bench/boto3-{i}.bin"
    t = time.perf_counter(); s3.upload_file(path, bucket, key); up.append(mb / (time.perf_counter() - t))
    t = time.perf_counter(); s3.download_file(bucket, key, path + ".boto3"); down.append(mb / (time.perf_counter() - t))
    s3.delete_object(Bucket=bucket, Key=key)
os.remove(path + ".boto3")
print(f"boto3 put {statistics.median(up):.0f} MB/s")
print(f"boto3 get {statistics.median(down):.0f} MB/s")
PY
)
rm -rf "$(dirname "$source_file")"
get() { printf '%s\n%s\n' "$out" "$boto" | sed -n "s/^$1 $2 \([0-9]*\) MB\/s/\1/p"; }
cat <<MD
## storage-s3 throughput: ${size} MiB file, median of ${rounds}

- server: SeaweedFS $FERRY_SEAWEEDFS_VERSION (\`weed mini\`, SigV4 checks on) at $FERRY_TEST_S3_ENDPOINT
- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)
- command: \`bench/s3-bench.sh $size $rounds\`

| client | put MB/s | get MB/s |
|---|---:|---:|
| ferry storage-s3 plugin (through the stable ABI) | $(get plugin put) | $(get plugin get) |
| object_store directly, in-process | $(get direct put) | $(get direct get) |
| boto3 $FERRY_BOTO3_VERSION (upload_file/download_file) | $(get boto3 put) | $(get boto3 get) |

plugin ÷ direct: put $(awk "BEGIN {printf \"%.2f\", $(get plugin put)/$(get direct put)}"), get $(awk "BEGIN {printf \"%.2f\", $(get plugin get)/$(get direct get)}")
MD
