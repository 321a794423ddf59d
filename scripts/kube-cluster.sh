#!/usr/bin/env bash
# The official Kubernetes control plane for ferry's tests, on loopback.
#
#   scripts/kube-cluster.sh build   # build etcd, kube-apiserver, kube-controller-manager and
#                                   # kube-scheduler from the published Go modules (cached)
#   scripts/kube-cluster.sh start   # build if needed, start the cluster in the background
#   scripts/kube-cluster.sh stop    # stop it (SIGTERM, then SIGKILL after 30 s)
#   scripts/kube-cluster.sh status  # is it running; where its kubeconfig is
#   scripts/kube-cluster.sh logs [LINES]
#   scripts/kube-cluster.sh bin-dir # where the built binaries are (for `kube-cluster up`)
#
# The binaries come from testing/kube-cluster/go/{kubernetes,etcd}: two small wrapper modules
# with checked-in go.mod/go.sum (k8s.io/kubernetes needs one `replace` per staging module, which
# Go ignores in a dependency, so `go install k8s.io/kubernetes/...@v1.37.2` cannot work). They
# are cached in $FERRY_TOOLS_DIR/kubernetes/<key>/bin, the key naming both versions, the Go
# version and a digest of the wrapper modules: a warm run builds nothing.
#
# `start` runs `kube-cluster up` (testing/kube-cluster, built by cargo) with state in
# $FERRY_TOOLS_DIR/run/kube: certificates, etcd data, logs/, the admin kubeconfig, and
# cluster.json, which the tests read (kube_cluster::running). Two nodes: `ferry-node` (CPU
# only) and `ferry-gpu-node` (2 nvidia.com/gpu, label ferry.dev/accelerator=nvidia-test, taint
# nvidia.com/gpu=present:NoSchedule). Both have the image `ferry:test`, whose PATH is cargo's
# target/debug (ferry and its plugins, as in the image).
# Use it by hand with:  export KUBECONFIG=.tools/run/kube/kubeconfig
set -euo pipefail

repo="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." >/dev/null && pwd)"
tools="${FERRY_TOOLS_DIR:-$repo/.tools}"
go_dir="$repo/testing/kube-cluster/go"
state="$tools/run/kube"
pid_file="$tools/run/kube-cluster.pid"
log_file="$tools/run/kube-cluster.log"
target="${CARGO_TARGET_DIR:-$repo/target}"

KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.7.3

log() { printf 'kube-cluster: %s\n' "$*" >&2; }

bin_dir() {
    local digest
    digest="$(cat "$go_dir"/kubernetes/go.mod "$go_dir"/kubernetes/go.sum \
        "$go_dir"/etcd/go.mod "$go_dir"/etcd/go.sum "$go_dir"/etcd/main.go | sha256sum | cut -c1-12)"
    printf '%s/kubernetes/k8s-%s-etcd-%s-%s-%s/bin\n' "$tools" "$KUBERNETES_VERSION" \
        "$ETCD_VERSION" "$(go env GOVERSION)" "$digest"
}

build() {
    local out started
    out="$(bin_dir)"
    if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" \
        && -x "$out/kube-scheduler" && -x "$out/etcd" ]]; then
        log "control plane binaries up to date in $out"
        return
    fi
    command -v go >/dev/null || { log "go is not installed (Go 1.26 is needed)"; exit 1; }
    mkdir -p "$out.partial"
    started=$SECONDS
    # Module downloads and the build cache stay in the tools folder, like everything else.
    export GOMODCACHE="$tools/go/mod" GOCACHE="$tools/go/build-cache" GOFLAGS=-buildvcs=false
    export GOTOOLCHAIN=local
    local v=$KUBERNETES_VERSION minor=${KUBERNETES_VERSION#v1.}
    minor=${minor%%.*}
    # Without these /version would report v0.0.0-master.
    local ldflags="-s -w \
        -X k8s.io/component-base/version.gitVersion=$v \
        -X k8s.io/component-base/version.gitMajor=1 \
        -X k8s.io/component-base/version.gitMinor=$minor \
        -X k8s.io/component-base/version.gitTreeState=clean \
        -X k8s.io/client-go/pkg/version.gitVersion=$v \
        -X k8s.io/client-go/pkg/version.gitMajor=1 \
        -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    log "building kube-apiserver, kube-controller-manager, kube-scheduler $v (cold: ~12 min on 2 cores)"
    (cd "$go_dir/kubernetes" && go build -trimpath -ldflags "$ldflags" -o "$out.partial/" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler)
    log "building etcd $ETCD_VERSION"
    (cd "$go_dir/etcd" && go build -trimpath \
        -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
        -o "$out.partial/etcd" .)
    rm -rf "$out"
    mv "$out.partial" "$out"
    log "built in $((SECONDS - started)) s: $out"
}

# A node agent that died by SIGKILL leaves its pods' memory-backed (tmpfs) emptyDirs mounted
# under the state directory, and rm -rf cannot remove a mount point: detach them, deepest first.
unmount_state() {
    [[ -d "$state" ]] || return 0
    awk -v d="$state/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r point; do
            umount -l "$point" || log "could not unmount $point"
        done
}

running_pid() {
    [[ -f "$pid_file" ]] || return 1
    local pid
    pid="$(cat "$pid_file")"
    kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

start() {
    if pid="$(running_pid)"; then
        log "already running (pid $pid); KUBECONFIG=$state/kubeconfig"
        return
    fi
    build
    local program="$target/debug/kube-cluster"
    # The node's image `ferry:test` is target/debug: ferry and its plugins must be built too.
    # The same command as scripts/test-all.sh, so that after it this is a no-op (building one
    # package alone would unify features differently and rebuild dependencies).
    (cd "$repo" && cargo build -q --workspace --all-targets --locked)
    unmount_state
    rm -rf "$state"
    mkdir -p "$state"
    # The node runs pods as root processes in a mount namespace of their own and a memory
    # cgroup; it needs root, as a kubelet does.
    : >"$log_file"
    setsid "$program" up --dir "$state" --bin-dir "$(bin_dir)" \
        --image "ferry:test=$target/debug" \
        --pod-env LLVM_PROFILE_FILE --pod-env RUST_BACKTRACE \
        </dev/null >"$log_file" 2>&1 &
    echo $! >"$pid_file"
    local started=$SECONDS
    until grep -q '^kube-cluster ready' "$log_file"; do
        if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
            log "the cluster failed to start; $log_file says:"
            tail -n 60 "$log_file" >&2
            exit 1
        fi
        if ((SECONDS - started > 240)); then
            log "the cluster is not ready after 240 s; $log_file says:"
            tail -n 60 "$log_file" >&2
            stop
            exit 1
        fi
        sleep 0.2
    done
    log "ready in $((SECONDS - started)) s: $(grep '^kube-cluster ready' "$log_file")"
}

stop() {
    local pid
    pid="$(running_pid)" || { rm -f "$pid_file"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "still running after 30 s: SIGKILL (its children die with it)"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
        unmount_state
    fi
    rm -f "$pid_file"
}

case "${1:-}" in
build) build ;;
bin-dir) bin_dir ;;
start) start ;;
stop) stop ;;
status)
    if pid="$(running_pid)"; then
        echo "running (pid $pid); export KUBECONFIG=$state/kubeconfig"
    else
        echo "not running"
        exit 1
    fi
    ;;
logs)
    lines="${2:-80}"
    tail -n "$lines" "$log_file" 2>/dev/null || true
    for f in "$state"/logs/*.log; do
        [[ -f "$f" ]] || continue
        printf -- '--- %s\n' "$f"
        tail -n "$lines" "$f"
    done
    ;;
*)
    echo "usage: $0 build|start|stop|status|logs [LINES]|bin-dir" >&2
    exit 2
    ;;
esac
