#!/usr/bin/env bash
# ferry's overhead on a Kubernetes stack, against the official control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd 1.37; testing/kube-cluster, whose node runs pods
# as local processes) and SeaweedFS. The figures include the real controllers' own latency
# (Job controller, scheduler, node), as a user's cluster would:
#   * submit: `ferry run --detach` from start to return, i.e. package (unchanged, from the index)
#     + HEAD of the package + run record + Job/ConfigMap/Secret created + Job resumed;
#   * return latency: from the last step's exit (its finished_at in the run record) to
#     `ferry run` returning, following by watch;
#   * end to end: a one-step `true` pipeline, `ferry run` start to return.
#   * steps mode: 50 independent `true` steps at once (parallelism 50), `ferry run` start to
#     return; and a chain of 10, where the gap between one step's end and the next step's
#     start (from the run record) is the coordinator's per-step overhead.
# Prints a markdown table of medians.
#
#   bench/k8s-bench.sh [ROUNDS]        # default 20
#
# Starts its own servers (SeaweedFS on FERRY_S3_PORT, default 8373; a cluster of its own from
# the binaries `scripts/kube-cluster.sh build` makes, on free ports) and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
export FERRY_TOOLS_DIR="${FERRY_TOOLS_DIR:-$PWD/.tools}"
export FERRY_S3_PORT="${FERRY_S3_PORT:-8373}"
. scripts/servers.sh
ferry_tools_install
work=$(mktemp -d /tmp/ferry-k8s-bench.XXXXXX)
server_pid=
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    ferry_servers_stop
    rm -rf "$work"
}
trap cleanup EXIT
ferry_servers_start >/dev/null

scripts/kube-cluster.sh build
bin_dir=$(scripts/kube-cluster.sh bin-dir)
cargo build --release -p cli -p backend-kubernetes -p storage-s3 -p kube-cluster >/dev/null 2>&1
release=$PWD/target/release
"$release/kube-cluster" up --dir "$work/cluster" --bin-dir "$bin_dir" --image "ferry:bench=$release" \
    >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 1200); do grep -q ready "$work/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/server.out" || { cat "$work/server.err" >&2; exit 1; }
# Steps mode: the coordinator's service account with the README's Role.
"$FERRY_TEST_KUBECTL" --kubeconfig "$work/cluster/kubeconfig" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: { name: ferry-coordinator, namespace: default }
---
$(awk '/^apiVersion: rbac.authorization.k8s.io\/v1$/ { p = 1 } p && /^```$/ { exit } p' README.md | sed 's/namespace: ml/namespace: default/')
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: ferry-coordinator, namespace: default }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: ferry-coordinator }
subjects: [{ kind: ServiceAccount, name: ferry-coordinator, namespace: default }]
YAML

mkdir -p "$work/project/pipe"
printf 'name: bench\nsteps:\n  one:\n    run: "true"\n    cache: false\n' >"$work/project/pipe/pipeline.yaml"
cat >"$work/project/ferry.toml" <<TOML
stack = "k8s"
[stacks.k8s.orchestrator]
plugin = "kubernetes"
settings = { kubeconfig = "$work/cluster/kubeconfig", image = "ferry:bench" }
[stacks.k8s.store]
plugin = "storage-s3"
settings = { url = "s3://$FERRY_TEST_S3_BUCKET/k8s-bench", endpoint = "$FERRY_TEST_S3_ENDPOINT", region = "$FERRY_TEST_S3_REGION", access_key_id = "$FERRY_TEST_S3_ACCESS_KEY_ID", secret_access_key = "$FERRY_TEST_S3_SECRET_ACCESS_KEY" }
TOML

# steps mode: the same stack with one Job per step, and two pipelines
mkdir -p "$work/steps/wide" "$work/steps/chain"
sed 's/image = "ferry:bench" }/image = "ferry:bench", mode = "steps", parallelism = 50, service_account = "ferry-coordinator" }/; s#k8s-bench"#k8s-bench-steps"#' \
    "$work/project/ferry.toml" >"$work/steps/ferry.toml"
{ echo "name: wide"; echo "steps:"; for i in $(seq 50); do printf '  s%02d:\n    run: "true"\n    cache: false\n' "$i"; done; } >"$work/steps/wide/pipeline.yaml"
{ echo "name: chain"; echo "steps:"; for i in $(seq 10); do printf '  c%02d:\n    run: "true"\n    cache: false\n' "$i"; [[ $i -gt 1 ]] && printf '    needs: [c%02d]\n' $((i - 1)); done; } >"$work/steps/chain/pipeline.yaml"

"$FERRY_TEST_PYTHON" - "$release/ferry" "$work/project" "$rounds" "$work/steps" <<'PY'
import json, statistics, subprocess, sys, time
from datetime import datetime
ferry, project, rounds, steps_project = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def run(*args, cwd=project):
    return subprocess.run([ferry, *args], cwd=cwd, capture_output=True, text=True, check=True)
def when(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
run("run", "pipe")  # warm: the package is built, indexed and uploaded once
submit, end_to_end, latency = [], [], []
for _ in range(rounds):
    t = time.perf_counter(); out = run("run", "pipe", "--detach"); submit.append(time.perf_counter() - t)
    run("logs", "-f", out.stdout.strip())
for _ in range(rounds):
    t = time.perf_counter(); run("run", "pipe"); returned = time.time(); end_to_end.append(time.perf_counter() - t)
    runs = json.loads(run("runs", "list", "--output", "json").stdout)
    record = json.loads(run("runs", "show", runs[0]["run_id"], "--output", "json").stdout)
    finished = datetime.fromisoformat(record["steps"]["one"]["finished_at"].replace("Z", "+00:00")).timestamp()
    latency.append(returned - finished)
steps_rounds = max(3, rounds // 4)
run("run", "wide", cwd=steps_project)  # warm
wide, chain, gaps, command_gaps = [], [], [], []
# Who spends each stretch between one step's command exiting and the next one's starting.
phase_names = [
    "ferry: the agent stores the step's log, outputs and result",
    "cluster: the agent's last record write and exit, the pod and Job completing, the coordinator's watch",
    "ferry: the coordinator reads the result, records it and decides the next step",
    "ferry + API server: the next step's Job built and created",
    "cluster: Job controller creates the pod, scheduler binds it, the node starts `ferry agent`",
    "ferry: the agent starts (store, package fetched and unpacked, plan) up to the command",
]
phases = {name: [] for name in phase_names}
for _ in range(steps_rounds):
    t = time.perf_counter(); run("run", "wide", cwd=steps_project); wide.append(time.perf_counter() - t)
for _ in range(steps_rounds):
    t = time.perf_counter(); run("run", "chain", cwd=steps_project); chain.append(time.perf_counter() - t)
    runs = json.loads(run("runs", "list", "--output", "json", cwd=steps_project).stdout)
    steps = json.loads(run("runs", "show", runs[0]["run_id"], "--output", "json", cwd=steps_project).stdout)["steps"]
    for i in range(2, 11):
        a, b = steps[f"c{i - 1:02d}"], steps[f"c{i:02d}"]
        gaps.append(when(b["started_at"]) - when(a["finished_at"]))
        # The same gap from the command's exit to the next command's start, split by who
        # spent it (StepTimings and the attempts' times; one machine, so one clock).
        marks = [when(a["attempt_history"][-1]["finished_at"]), when(a["finished_at"]),
                 when(a["timings"]["seen_finished_at"]), when(b["timings"]["scheduled_at"]),
                 when(b["timings"]["submitted_at"]), when(b["timings"]["agent_started_at"]),
                 when(b["attempt_history"][-1]["started_at"])]
        for name, start, end in zip(phase_names, marks, marks[1:]):
            phases[name].append(end - start)
        command_gaps.append(marks[-1] - marks[0])
ms = lambda xs: f"{statistics.median(xs) * 1000:.0f} ms (min {min(xs) * 1000:.0f}, max {max(xs) * 1000:.0f})"
print(f"| measure ({rounds} rounds, median) | time |")
print("| --- | --- |")
print(f"| `ferry run --detach`, unchanged package: start → Job created and started → return | {ms(submit)} |")
print(f"| last step's exit → `ferry run` returns | {ms(latency)} |")
print(f"| one-step pipeline, `ferry run` start → return | {ms(end_to_end)} |")
print(f"| steps mode, 50 independent steps at once: `ferry run` start → return ({steps_rounds} rounds) | {ms(wide)} |")
print(f"| steps mode, chain of 10: `ferry run` start → return ({steps_rounds} rounds) | {ms(chain)} |")
print(f"| steps mode: one step's end → the next step's start, in the chain ({len(gaps)} gaps) | {ms(gaps)} |")
print(f"| steps mode: one command's exit → the next command's start ({len(command_gaps)} gaps) | {ms(command_gaps)} |")
print()
print("| where a gap between dependent steps goes (median of each stretch) | ms |")
print("| --- | ---: |")
for name in phase_names:
    print(f"| {name} | {statistics.median(phases[name]) * 1000:.1f} |")
own = [sum(v) for v in zip(*(phases[n] for n in phase_names if n.startswith("ferry:")))]
print(f"| **ferry's own time per gap** (the three `ferry:` stretches; sum per gap, median) | **{statistics.median(own) * 1000:.1f}** |")
PY
