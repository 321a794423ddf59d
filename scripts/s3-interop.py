#!/usr/bin/env python3
"""Small boto3 client for interop checks in the Rust tests (a second, independent S3 client).

    s3-interop.py [--endpoint URL] get BUCKET KEY OUT_FILE   (OUT_FILE "-" = stdout)
    s3-interop.py [--endpoint URL] put BUCKET KEY IN_FILE    (IN_FILE "-" = stdin)
    s3-interop.py [--endpoint URL] list BUCKET [PREFIX]      (keys, one per line, sorted)
    s3-interop.py [--endpoint URL] head BUCKET KEY           (size in bytes)
    s3-interop.py [--endpoint URL] delete BUCKET KEY

Endpoint and credentials come from FERRY_TEST_S3_ENDPOINT, FERRY_TEST_S3_ACCESS_KEY_ID,
FERRY_TEST_S3_SECRET_ACCESS_KEY and FERRY_TEST_S3_REGION (default us-east-1), as exported by
scripts/servers.sh; --endpoint overrides the endpoint (e.g. $FERRY_TEST_GCS_ENDPOINT, which
accepts any signature). Path-style addressing, SigV4.

Exit status: 0 on success, 1 on any error with one line on stderr of the form
    s3-interop: get s3://BUCKET/KEY: NoSuchKey (HTTP 404): The specified key does not exist.
2 on a usage error. Run it with $FERRY_TEST_PYTHON (the venv that has boto3).
"""

import argparse
import os
import shutil
import sys


def die(msg):
    print(f"s3-interop: {msg}", file=sys.stderr)
    sys.exit(1)


def env(name, default=None):
    value = os.environ.get(name, default)
    if not value:
        die(f"{name} is not set (source .tools/run/servers.env or run under scripts/test-all.sh)")
    return value


def client(endpoint):
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        die(f"boto3 is not importable by {sys.executable} ({e}); use $FERRY_TEST_PYTHON")
    return boto3.client(
        "s3",
        endpoint_url=endpoint or env("FERRY_TEST_S3_ENDPOINT"),
        aws_access_key_id=env("FERRY_TEST_S3_ACCESS_KEY_ID"),
        aws_secret_access_key=env("FERRY_TEST_S3_SECRET_ACCESS_KEY"),
        region_name=env("FERRY_TEST_S3_REGION", "us-east-1"),
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def main():
    p = argparse.ArgumentParser(prog="s3-interop.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", help="S3 endpoint URL (default $FERRY_TEST_S3_ENDPOINT)")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get")
    g.add_argument("bucket"), g.add_argument("key"), g.add_argument("out_file")
    u = sub.add_parser("put")
    u.add_argument("bucket"), u.add_argument("key"), u.add_argument("in_file")
    ls = sub.add_parser("list")
    ls.add_argument("bucket"), ls.add_argument("prefix", nargs="?", default="")
    h = sub.add_parser("head")
    h.add_argument("bucket"), h.add_argument("key")
    d = sub.add_parser("delete")
    d.add_argument("bucket"), d.add_argument("key")
    a = p.parse_args()

    from botocore.exceptions import BotoCoreError, ClientError

    what = f"{a.cmd} s3://{a.bucket}/{getattr(a, 'key', getattr(a, 'prefix', ''))}"
    try:
        s3 = client(a.endpoint)
        if a.cmd == "get":
            body = s3.get_object(Bucket=a.bucket, Key=a.key)["Body"]
            if a.out_file == "-":
                shutil.copyfileobj(body, sys.stdout.buffer)
            else:
                with open(a.out_file, "wb") as f:
                    shutil.copyfileobj(body, f)
        elif a.cmd == "put":
            if a.in_file == "-":
                s3.put_object(Bucket=a.bucket, Key=a.key, Body=sys.stdin.buffer.read())
            else:
                with open(a.in_file, "rb") as f:
                    s3.put_object(Bucket=a.bucket, Key=a.key, Body=f)
        elif a.cmd == "list":
            keys = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=a.prefix):
                keys.extend(o["Key"] for o in page.get("Contents", []))
            for k in sorted(keys):
                print(k)
        elif a.cmd == "head":
            print(s3.head_object(Bucket=a.bucket, Key=a.key)["ContentLength"])
        elif a.cmd == "delete":
            s3.delete_object(Bucket=a.bucket, Key=a.key)
    except ClientError as e:
        err = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        code = err.get("Code") or "?"
        # HEAD responses have no body: name the usual cases.
        code = {"404": "NoSuchKey", "403": "Forbidden"}.get(code, code) if a.cmd == "head" else code
        message = err.get("Message") or ""
        die(f"{what}: {code} (HTTP {status})" + (f": {message}" if message else ""))
    except (BotoCoreError, OSError) as e:
        die(f"{what}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
