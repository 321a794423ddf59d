#!/usr/bin/env bash
# Self-test of scripts/servers.sh: install, start, S3 round trips with boto3 (scripts/s3-interop.py)
# on both buckets, an object_store-style GCS request (`Authorization: Bearer `, no signature),
# a wrong secret that must fail with 403 SignatureDoesNotMatch, an unsigned request to the S3
# server that must fail with 403, list, stop (twice), and checks that nothing is left running.
# Exits non-zero on any failure. Usage: scripts/servers-selftest.sh   (FERRY_S3_PORT optional)
set -euo pipefail
cd "$(dirname "$0")/.."
export FERRY_TOOLS_DIR="${FERRY_TOOLS_DIR:-$PWD/.tools}"
# shellcheck source=scripts/servers.sh
. scripts/servers.sh

ok() { printf 'ok   %s\n' "$*"; }
fail() {
    printf 'FAIL %s\n' "$*" >&2
    ferry_servers_logs 40 >&2 || true
    exit 1
}
now() { date +%s%N; }
ms_since() { echo $((($(now) - $1) / 1000000)); }

on_exit() { ferry_servers_stop || true; rm -rf "${scratch:-}"; }
trap on_exit EXIT
scratch="$(mktemp -d)"

t=$(now)
ferry_tools_install || fail "ferry_tools_install"
ok "install: $(ms_since "$t") ms"
t=$(now)
ferry_tools_install || fail "ferry_tools_install (second call)"
ok "install again (skipped): $(ms_since "$t") ms"

t=$(now)
ferry_servers_start || fail "ferry_servers_start"
ok "start: $(ms_since "$t") ms"

for v in FERRY_TEST_S3_ENDPOINT FERRY_TEST_S3_BUCKET FERRY_TEST_S3_ACCESS_KEY_ID \
    FERRY_TEST_S3_SECRET_ACCESS_KEY FERRY_TEST_S3_REGION FERRY_TEST_GCS_ENDPOINT \
    FERRY_TEST_GCS_BUCKET FERRY_TEST_GCS_SERVICE_ACCOUNT FERRY_TEST_PYTHON \
    FERRY_TEST_SEAWEEDFS_PID FERRY_TEST_SEAWEEDFS_GCS_PID; do
    [[ -n "${!v:-}" ]] || fail "$v not exported"
    grep -q "^$v=" "$FERRY_TOOLS_DIR/run/servers.env" || fail "$v missing from servers.env"
    if [[ $v == *SECRET* ]]; then echo "     $v=<${#FERRY_TEST_S3_SECRET_ACCESS_KEY} chars>"; else echo "     $v=${!v}"; fi
done
printenv FERRY_TEST_S3_ENDPOINT >/dev/null || fail "FERRY_TEST_S3_ENDPOINT is not exported to children"
"$FERRY_TEST_PYTHON" - "$FERRY_TEST_GCS_SERVICE_ACCOUNT" "$FERRY_TEST_GCS_ENDPOINT" <<'EOF' || fail "service account JSON"
import json, sys
sa = json.load(open(sys.argv[1]))
assert sa["gcs_base_url"] == sys.argv[2], sa
assert sa["disable_oauth"] is True, sa
for k in ("client_email", "private_key", "private_key_id"):
    assert k in sa, k
EOF
ok "exports, servers.env and service account JSON"

py="$FERRY_TEST_PYTHON"
interop=scripts/s3-interop.py
head -c 3000000 /dev/urandom >"$scratch/in.bin"

# S3 (SigV4-checked server), bucket ferry-test
"$py" $interop put ferry-test selftest/a/one.bin "$scratch/in.bin" || fail "put ferry-test"
"$py" $interop put ferry-test selftest/b.txt - <<<"hello" || fail "put ferry-test (stdin)"
size="$("$py" $interop head ferry-test selftest/a/one.bin)" || fail "head ferry-test"
[[ "$size" == 3000000 ]] || fail "head size $size"
"$py" $interop get ferry-test selftest/a/one.bin "$scratch/out.bin" || fail "get ferry-test"
cmp -s "$scratch/in.bin" "$scratch/out.bin" || fail "ferry-test round trip differs"
listing="$("$py" $interop list ferry-test selftest/)" || fail "list ferry-test"
[[ "$listing" == $'selftest/a/one.bin\nselftest/b.txt' ]] || fail "list ferry-test gave: $listing"
listing="$("$py" $interop list ferry-test selftest/a/)" || fail "list ferry-test prefix"
[[ "$listing" == "selftest/a/one.bin" ]] || fail "list ferry-test selftest/a/ gave: $listing"
ok "ferry-test: put 3 MB + stdin, head, get (identical), list with prefix"

# GCS-XML server, bucket ferry-gcs: boto3, then requests shaped like object_store's GCS client
"$py" $interop --endpoint "$FERRY_TEST_GCS_ENDPOINT" put ferry-gcs selftest/x.bin "$scratch/in.bin" || fail "put ferry-gcs"
"$py" $interop --endpoint "$FERRY_TEST_GCS_ENDPOINT" get ferry-gcs selftest/x.bin "$scratch/out2.bin" || fail "get ferry-gcs"
cmp -s "$scratch/in.bin" "$scratch/out2.bin" || fail "ferry-gcs round trip differs"
listing="$("$py" $interop --endpoint "$FERRY_TEST_GCS_ENDPOINT" list ferry-gcs)" || fail "list ferry-gcs"
[[ "$listing" == "selftest/x.bin" ]] || fail "list ferry-gcs gave: $listing"
"$py" - "$FERRY_TEST_GCS_ENDPOINT" <<'EOF' || fail "Bearer-style (object_store GCS) requests"
import http.client, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
def req(method, path, body=None):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.putrequest(method, path)
    c.putheader("Authorization", "Bearer ")  # what disable_oauth sends: an empty token
    c.putheader("Content-Length", str(len(body or b"")))
    c.endheaders(body)
    r = c.getresponse()
    return r.status, r.read()
st, _ = req("PUT", "/ferry-gcs/selftest/bearer.txt", b"gcs-ok")
assert st == 200, ("PUT", st)
st, data = req("GET", "/ferry-gcs/selftest/bearer.txt")
assert (st, data) == (200, b"gcs-ok"), ("GET", st, data)
st, data = req("GET", "/ferry-gcs?list-type=2&prefix=selftest/")
assert st == 200 and b"selftest/bearer.txt" in data, ("LIST", st, data[:200])
st, _ = req("DELETE", "/ferry-gcs/selftest/bearer.txt")
assert st == 204, ("DELETE", st)
EOF
ok "ferry-gcs: boto3 put/get (identical)/list; unsigned 'Authorization: Bearer ' put/get/list/delete"

# Auth is really checked on the S3 server
if out="$(FERRY_TEST_S3_SECRET_ACCESS_KEY=wrong-secret "$py" $interop put ferry-test selftest/evil.txt - <<<"x" 2>&1)"; then
    fail "put with a wrong secret succeeded"
fi
[[ "$out" == *"SignatureDoesNotMatch (HTTP 403)"* ]] || fail "wrong secret gave: $out"
ok "wrong secret refused: $out"
code="$(curl -s -o /dev/null -w '%{http_code}' "$FERRY_TEST_S3_ENDPOINT/ferry-test/selftest/b.txt")"
[[ "$code" == 403 ]] || fail "unsigned GET on the S3 server gave $code, want 403"
ok "unsigned GET on the S3 server refused: 403"
if out="$("$py" $interop get ferry-test selftest/missing.txt "$scratch/m" 2>&1)"; then fail "get of a missing key succeeded"; fi
[[ "$out" == *"NoSuchKey (HTTP 404)"* ]] || fail "missing key gave: $out"
ok "missing key: $out"
if out="$("$py" $interop head ferry-test selftest/missing.txt 2>&1)"; then fail "head of a missing key succeeded"; fi
[[ "$out" == *"NoSuchKey (HTTP 404)"* ]] || fail "head missing key gave: $out"
"$py" $interop delete ferry-test selftest/b.txt || fail "delete"
[[ "$("$py" $interop list ferry-test selftest/)" == "selftest/a/one.bin" ]] || fail "list after delete"
ok "head of missing key, delete"

pids=("$FERRY_TEST_SEAWEEDFS_PID" "$FERRY_TEST_SEAWEEDFS_GCS_PID")
port="${FERRY_TEST_S3_ENDPOINT##*:}"
t=$(now)
ferry_servers_stop || fail "ferry_servers_stop"
ok "stop: $(ms_since "$t") ms"
for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]]; then
        fail "weed $p still running after stop"
    fi
done
if ss -ltn 2>/dev/null | awk '{print $4}' | grep -qE "^127\.0\.0\.1:($port|$((port + 5)))$"; then
    fail "a port is still listening after stop"
fi
leftover="$(ls /tmp/seaweedfs-*-grpc-{$((port + 10000))..$((port + 10009))}.sock 2>/dev/null || true)"
[[ -z "$leftover" ]] || fail "sockets left in /tmp: $leftover"
ferry_servers_stop || fail "second ferry_servers_stop"
ok "nothing left running; second stop is a no-op"
echo "servers selftest: OK"
