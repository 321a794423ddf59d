#!/usr/bin/env bash
# `ferry ui` with a large local store: the time to the first byte and to the whole first page
# of the runs list with 10,000 runs, and a 100 MB step log streamed whole (the server's peak
# RSS says it was not held in memory).
#
#   bench/ui-bench.sh target/release/ferry [RUNS]
set -euo pipefail
ferry="$(realpath "${1:?usage: bench/ui-bench.sh FERRY [RUNS]}")"
runs="${2:-10000}"
dir="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT

python3 - "$dir" "$runs" <<'PY'
import json, os, sys, datetime
root, n = sys.argv[1], int(sys.argv[2])
base = datetime.datetime(2026, 1, 1)
for i in range(n):
    t = base + datetime.timedelta(seconds=i)
    run_id = t.strftime("%Y%m%d-%H%M%S-000-") + f"{i % 0xffffff:06x}"
    d = os.path.join(root, ".ferry/artifacts/runs", run_id)
    os.makedirs(d)
    steps = {f"s{k}": {"status": "succeeded", "attempts": 1, "started_at": t.isoformat() + "Z",
                       "finished_at": t.isoformat() + "Z", "outputs": []} for k in range(5)}
    rec = {"schema_version": 1, "run_id": run_id, "pipeline": f"p{i % 7}", "stack": "local",
           "orchestrator": "local", "status": "succeeded", "created_at": t.isoformat() + "Z",
           "started_at": t.isoformat() + "Z", "finished_at": t.isoformat() + "Z",
           "steps": steps, "step_order": list(steps)}
    with open(os.path.join(d, "run.json"), "w") as f:
        json.dump(rec, f)
last = run_id
log = os.path.join(root, ".ferry/artifacts/runs", last, "steps/s0")
os.makedirs(log)
with open(os.path.join(log, "log"), "wb") as f:
    line = b"epoch 1 loss 0.12345 " + b"x" * 79 + b"\n"
    for _ in range(1_000_000):
        f.write(line)
print(last)
PY
last="$(ls "$dir/.ferry/artifacts/runs" | sort | tail -1)"
(cd "$dir" && exec "$ferry" ui --port 0 >"$dir/ui.out" 2>&1) &
server=$!
for _ in $(seq 100); do grep -q http "$dir/ui.out" 2>/dev/null && break; sleep 0.05; done
url="$(grep -o 'http://[^ ]*' "$dir/ui.out" | head -1)"
url="${url%/}"

echo "runs in the store: $runs"
times=()
for _ in 1 2 3 4 5 6; do
    times+=("$(curl -s -o /dev/null -w '%{time_starttransfer} %{time_total}' "$url/")")
done
printf '%s\n' "${times[@]:1}" | sort -n -k2 | awk '{ a[NR]=$0 } END { split(a[int((NR+1)/2)], m, " "); printf "first page (50 runs), median of 5 after one warm-up: first byte %.0f ms, whole page %.0f ms\n", m[1]*1000, m[2]*1000 }'
size=$(stat -c %s "$dir/.ferry/artifacts/runs/$last/steps/s0/log")
read -r total bytes < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "$url/runs/$last/steps/s0/log")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
printf 'a %d MB log streamed whole: %d bytes in %.2f s; the server peak RSS %d MiB\n' $((size / 1000000)) "$bytes" "$total" $((rss / 1024))
