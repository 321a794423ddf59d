#!/usr/bin/env python3
"""Timing logic for bench/package-bench.sh (python3 standard library only).

Usage: package_bench.py FERRY UNPACK WORK_DIR RUNS [--clean]

Compares `ferry package` with GNU tar + the zstd CLI (and tar -z) on two generated trees and
prints a markdown section:

  (a) "source": ~20,000 source-like text files, ~150 MB, nested directories, a few larger files;
  (b) "binary": one 500 MB file of random bytes plus a few small files.

Both trees get an empty ferry.toml so they are ferry project roots. They are generated once
(seeded, so the same bytes every time) under WORK_DIR and reused while their marker file
matches; `--clean` removes WORK_DIR instead of benchmarking.

Timing notes:
- Wall time of whole processes (python perf_counter around the child), median / min / max of RUNS.
- The page cache cannot be dropped without root, so every tree is read once before measuring
  (warm cache for every tool alike) and `sync` runs, untimed, before each timed command so one
  command's dirty pages are not written back on the next one's clock.
- "ferry cold" deletes TREE/.ferry (ferry's package cache) first, untimed.
- Peak RSS comes from `/usr/bin/time -f %M` (ferry's own RSS; not the python parent's).
"""

import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

GNU_TIME = "/usr/bin/time"
GEN_VERSION = 1  # bump when the generators change, so old trees are regenerated

SRC_FILES = 20_000
SRC_BYTES = 150 * 1000 * 1000
SRC_LARGE = [4_000_000, 3_500_000, 3_000_000, 2_500_000, 2_000_000, 2_000_000, 1_500_000, 1_500_000]
BIN_BYTES = 500 * 1000 * 1000

# Targets
TIME_RATIO_MAX = 0.8     # ferry cold / (tar | zstd -3 -T0), issue 19
UNPACK_RATIO_MAX = 1.0   # ferry unpack (digest verified first) / (zstd -dc | tar -x), issue 19
SIZE_SAME_TOLERANCE = 1.005  # "same or smaller": ferry size ≤ tar+zstd size × this
WARM_MAX_S = 1.0
RSS_MAX_MIB = 100.0

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def log(msg):
    print(f"package-bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Tree generation

SYLLABLES = ["ka", "lo", "ri", "mon", "ta", "ex", "val", "str", "fer", "ry", "pi", "pe", "li",
             "ne", "or", "ch", "est", "ra", "tor", "buf", "io", "sch", "ed", "ul", "er", "cfg",
             "st", "ep", "ar", "ti", "fa", "ct", "wo", "rk", "qu", "eue", "in", "dex", "map"]
TYPES = ["u64", "String", "Vec<u8>", "Option<Step>", "Result<()>", "&str", "bool", "Config",
         "PathBuf", "HashMap<String, Value>", "Arc<Mutex<State>>", "i32", "Duration"]
EXTS = [("rs", 30), ("py", 20), ("ts", 12), ("go", 10), ("md", 6), ("json", 6), ("yaml", 6),
        ("toml", 4), ("txt", 3), ("sh", 3)]


def make_line_pool(rng, n):
    words = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3)))
                    for _ in range(4000)})
    w = lambda: rng.choice(words)  # noqa: E731
    templates = [
        lambda i: f"{i}let {w()} = {w()}({w()}, {rng.randint(0, 9999)});",
        lambda i: f"{i}if {w()}.{w()}() > {rng.randint(0, 512)} {{",
        lambda i: f"{i}}}",
        lambda i: f"{i}// {w()} {w()} {w()} the {w()} {w()} when {w()} is {w()}",
        lambda i: f"{i}return {w()}.{w()}_{w()}({w()});",
        lambda i: f"{i}fn {w()}_{w()}(&self, {w()}: {rng.choice(TYPES)}) -> {rng.choice(TYPES)} {{",
        lambda i: f'{i}{w()}.{w()} = "{w()}-{rng.randint(0, 99999)}";',
        lambda i: f"{i}for {w()} in {w()}.iter().filter(|x| x.{w()}()) {{",
        lambda i: f'{i}"{w()}_{w()}": {rng.randint(0, 10**6)},',
        lambda i: f"{i}def {w()}_{w()}(self, {w()}, {w()}={rng.randint(0, 64)}):",
        lambda i: f"{i}assert_eq!({w()}.len(), {rng.randint(0, 100)}, \"{w()} {w()}\");",
        lambda i: "",
    ]
    weights = [12, 8, 10, 8, 6, 4, 6, 4, 4, 4, 3, 6]
    indents = ["", "    ", "        ", "            ", "                "]
    out = []
    for t in rng.choices(templates, weights, k=n):
        out.append(t(rng.choice(indents)))
    return out


def gen_source_tree(root, seed=1):
    rng = random.Random(seed)
    pool = make_line_pool(rng, 300_000)
    avg_line = sum(len(x) + 1 for x in pool) / len(pool)
    top = ["services", "libs", "tools", "tests", "docs", "pipelines", "infra", "notebooks"]
    names = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
                    for _ in range(400)})
    dirs = sorted({os.path.join(rng.choice(top), *(rng.choice(names) for _ in range(rng.randint(0, 3))))
                   for _ in range(1100)})

    n_small = SRC_FILES - len(SRC_LARGE)
    raw = [rng.lognormvariate(0, 1.0) for _ in range(n_small)]
    scale = (SRC_BYTES - sum(SRC_LARGE)) / sum(raw)
    sizes = [max(60, int(r * scale)) for r in raw] + SRC_LARGE
    ext_names, ext_w = zip(*EXTS)
    for idx, size in enumerate(sizes):
        if idx >= n_small:
            d, ext = os.path.join("data", "fixtures"), "json"
        else:
            d, ext = rng.choice(dirs), rng.choices(ext_names, ext_w)[0]
        path = os.path.join(root, d, f"{rng.choice(names)}_{idx}.{ext}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        k = max(1, int(size / avg_line))
        data = ("\n".join(rng.choices(pool, k=k)) + "\n").encode()
        with open(path, "wb") as f:
            f.write(data)
    with open(os.path.join(root, "ferry.toml"), "w"):
        pass


def gen_binary_tree(root, seed=2):
    os.makedirs(root, exist_ok=True)
    chunk = 16 * 1024 * 1024
    with open(os.path.join(root, "model.bin"), "wb") as f:
        left = BIN_BYTES
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))  # random bytes: incompressible, seed irrelevant
            left -= n
    small = {
        "README.md": "# model bundle\n\nWeights and a tiny driver.\n" * 5,
        "train.py": "import sys\n\ndef main():\n    print('training', sys.argv)\n\nmain()\n" * 10,
        "config/params.yaml": "lr: 0.001\nepochs: 10\nbatch: 64\n" * 20,
        "scripts/run.sh": "#!/bin/sh\nexec python3 train.py \"$@\"\n",
    }
    for rel, text in small.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    with open(os.path.join(root, "ferry.toml"), "w"):
        pass


def ensure_tree(work, name, gen):
    root = os.path.join(work, name)
    marker = os.path.join(work, f".{name}.generated")
    want = json.dumps({"version": GEN_VERSION, "files": SRC_FILES, "bytes": SRC_BYTES,
                       "bin": BIN_BYTES})
    if os.path.isdir(root) and os.path.exists(marker) and open(marker).read() == want:
        log(f"reusing {root}")
        return root, False
    shutil.rmtree(root, ignore_errors=True)
    if os.path.exists(marker):
        os.remove(marker)
    log(f"generating {root} …")
    start = time.perf_counter()
    gen(root)
    os.sync()
    with open(marker, "w") as f:
        f.write(want)
    log(f"generated {root} in {time.perf_counter() - start:.1f} s")
    return root, True


def tree_stats(root):
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root and ".ferry" in dirnames:
            dirnames.remove(".ferry")
        for fn in filenames:
            files += 1
            size += os.lstat(os.path.join(dirpath, fn)).st_size
    return files, size


def warm_read(root):
    """Read every file once so all tools see a warm page cache."""
    buf = bytearray(1 << 20)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root and ".ferry" in dirnames:
            dirnames.remove(".ferry")
        for fn in filenames:
            with open(os.path.join(dirpath, fn), "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


# ---------------------------------------------------------------------------------------------
# Measurement helpers

def run(argv):
    """Run argv (after an untimed sync); return (wall seconds, exit code, stderr text)."""
    os.sync()
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        code = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        wall = time.perf_counter() - start
        err.seek(0)
        return wall, code, ANSI.sub("", err.read().decode(errors="replace"))


def checked(argv):
    wall, code, err = run(argv)
    if code != 0:
        sys.exit(f"package-bench: `{shell_text(argv)}` exited with {code}:\n{err}")
    return wall, err


def sh(cmd):
    return ["bash", "-c", "set -o pipefail; " + cmd]


def shell_text(argv):
    if argv[:2] == ["bash", "-c"]:
        return argv[2].replace("set -o pipefail; ", "")
    return " ".join(argv)


def peak_rss_kib(argv):
    with tempfile.NamedTemporaryFile("r") as out:
        checked([GNU_TIME, "-f", "%M", "-o", out.name, *argv])
        return int(out.read().split()[-1])


def human(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def secs(s):
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def rm(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def parse_summary(err):
    m = re.search(r"package (\d+) files, (.+?) \((.+?) uncompressed\) · digest (\S+)", err)
    if not m:
        sys.exit(f"package-bench: cannot find ferry's package summary in its stderr:\n{err}")
    return {"files": int(m.group(1)), "size": m.group(2), "uncompressed": m.group(3),
            "digest": m.group(4)}


class Series:
    def __init__(self):
        self.walls = []

    def add(self, wall):
        self.walls.append(wall)

    @property
    def median(self):
        return statistics.median(self.walls)

    def cells(self):
        if not self.walls:
            return ["–", "–", "–"]
        return [secs(self.median), secs(min(self.walls)), secs(max(self.walls))]


# ---------------------------------------------------------------------------------------------
# Benchmark of one tree

def unpack_dir(out_dir):
    """Where the unpack rows write: $UNPACK_DIR, else /dev/shm (tmpfs). On ext4, creating
    20,000 files right after deleting the last 20,000 makes the allocator search past inodes
    of the still-uncommitted deletes: the same command then takes 0.4 s or 14 s, for ferry and
    tar alike, which measures the file system rather than either tool."""
    chosen = os.environ.get("UNPACK_DIR")
    if not chosen:
        chosen = "/dev/shm/ferry-package-bench-unpack" if os.path.isdir("/dev/shm") else out_dir
    os.makedirs(chosen, exist_ok=True)
    return chosen


def fs_of(path):
    fs = subprocess.run(["df", "-T", path], capture_output=True, text=True).stdout.splitlines()
    return fs[-1].split()[1] if len(fs) > 1 else "?"


def bench_tree(ferry, unpack, tree, out_dir, runs):
    name = os.path.basename(tree)
    fer_out = os.path.join(out_dir, f"{name}.ferry.tar.zst")
    zst_out = os.path.join(out_dir, f"{name}.tar.zst")
    srt_out = os.path.join(out_dir, f"{name}.sorted.tar.zst")
    gz_out = os.path.join(out_dir, f"{name}.tar.gz")
    un_dir = unpack_dir(out_dir)
    un_ferry = os.path.join(un_dir, f"{name}.unpack-ferry")
    un_tar = os.path.join(un_dir, f"{name}.unpack-tar")
    un_tar2 = os.path.join(un_dir, f"{name}.unpack-tar-ferryarchive")
    cache = os.path.join(tree, ".ferry")

    cmd = {
        "ferry_cold": [ferry, "-C", tree, "package", "--out", fer_out],
        "ferry_cold_noout": [ferry, "-C", tree, "package"],
        "ferry_warm": [ferry, "-C", tree, "package"],
        "ferry_warm_out": [ferry, "-C", tree, "package", "--out", fer_out],
        "upload": [ferry, "-C", tree, "package", "--upload"],
        "tar_zstd": sh(f"tar -cf - --exclude=./.ferry -C {tree} . | zstd -3 -T0 -q -o {zst_out}"),
        "tar_sort_zstd": sh(f"tar --sort=name -cf - --exclude=./.ferry -C {tree} . "
                            f"| zstd -3 -T0 -q -o {srt_out}"),
        "tar_gz": ["tar", "-czf", gz_out, "--exclude=./.ferry", "-C", tree, "."],
        "untar_zstd": sh(f"zstd -dc {zst_out} | tar -x -C {un_tar}"),
        "untar_ferry": sh(f"zstd -dc {fer_out} | tar -x -C {un_tar2}"),
    }
    s = {k: Series() for k in ["ferry_cold", "ferry_cold_noout", "ferry_warm", "ferry_warm_out",
                               "tar_zstd", "tar_sort_zstd", "tar_gz", "upload1", "upload2",
                               "unpack", "untar_zstd", "untar_ferry"]}
    sizes = {}
    digests = set()
    summary = None

    log(f"{name}: warm-up read of the tree …")
    rm(cache)
    warm_read(tree)

    for i in range(runs):
        log(f"{name}: run {i + 1}/{runs} …")
        rm(cache)
        for key, out in (("tar_zstd", zst_out), ("tar_sort_zstd", srt_out), ("tar_gz", gz_out)):
            rm(out)
            wall, _ = checked(cmd[key])
            s[key].add(wall)
            sizes[key] = os.path.getsize(out)

        rm(cache)
        rm(fer_out)
        wall, err = checked(cmd["ferry_cold"])
        s["ferry_cold"].add(wall)
        sizes["ferry_cold"] = os.path.getsize(fer_out)
        summary = parse_summary(err)
        digests.add(summary["digest"])

        wall, err = checked(cmd["ferry_warm"])
        s["ferry_warm"].add(wall)
        digests.add(parse_summary(err)["digest"])
        rm(fer_out)
        wall, _ = checked(cmd["ferry_warm_out"])
        s["ferry_warm_out"].add(wall)

        rm(cache)
        wall, _ = checked(cmd["ferry_cold_noout"])
        s["ferry_cold_noout"].add(wall)

    # Upload: first into an empty store, then again (must be skipped).
    log(f"{name}: upload …")
    rm(os.path.join(cache, "artifacts"))
    wall, err1 = checked(cmd["upload"])
    s["upload1"].add(wall)
    second_msgs = []
    for _ in range(runs):
        wall, err2 = checked(cmd["upload"])
        s["upload2"].add(wall)
        second_msgs.append("unchanged, 0 bytes uploaded" in err2)
    first_line = next((l for l in err1.splitlines() if l.startswith(("uploaded", "unchanged"))), "?")
    unchanged_ok = all(second_msgs)

    # Unpack
    have_unpack = os.access(unpack, os.X_OK)
    digest = summary["digest"]
    cmd["unpack"] = [unpack, fer_out, digest, un_ferry]
    unpack_ok = None
    for i in range(runs):
        log(f"{name}: unpack run {i + 1}/{runs} …")
        for key, d in (("untar_zstd", un_tar), ("untar_ferry", un_tar2)):
            rm(d)
            os.makedirs(d)
            wall, _ = checked(cmd[key])
            s[key].add(wall)
        if have_unpack:
            rm(un_ferry)
            wall, code, err = run(cmd["unpack"])
            if code != 0:
                sys.exit(f"package-bench: `{shell_text(cmd['unpack'])}` exited with {code}:\n{err}")
            s["unpack"].add(wall)
    if have_unpack:
        unpack_ok = tree_stats(un_ferry) == tree_stats(un_tar)
    for d in (un_ferry, un_tar, un_tar2):
        rm(d)

    # Peak RSS of a cold ferry package (with --out, the command measured above).
    log(f"{name}: peak RSS …")
    rm(cache)
    rm(fer_out)
    rss = peak_rss_kib(cmd["ferry_cold"])

    rm(cache)
    return {
        "name": name, "tree": tree, "cmd": cmd, "s": s, "sizes": sizes, "summary": summary,
        "digests": digests, "upload_first": first_line, "unchanged_ok": unchanged_ok,
        "have_unpack": have_unpack, "unpack_ok": unpack_ok, "rss_kib": rss,
    }


# ---------------------------------------------------------------------------------------------
# Report

def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "not found"


def machine_info(ferry, unpack, work):
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = human(int(line.split()[1]) * 1024)
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    fs_type = fs_of(work)
    un_dir = unpack_dir(os.path.join(work, "out"))
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return [
        f"- CPU: `nproc` = {nproc} ({cpu})",
        f"- memory: {mem} (MemTotal)",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- work dir: `{work}` ({fs_type}); unpack rows write to `{un_dir}` ({fs_of(un_dir)}; "
        f"`UNPACK_DIR` chooses)",
        f"- ferry: `{ferry}` — {tool_version([ferry, '--version'])}, "
        f"mtime {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(os.path.getmtime(ferry)))}",
        f"- unpack: `{unpack}` — " + ("present" if os.access(unpack, os.X_OK) else "**missing**"),
        f"- {tool_version(['tar', '--version'])}; {tool_version(['zstd', '--version']).strip('* ')}; "
        f"{tool_version(['gzip', '--version'])}; python {platform.python_version()}",
    ]


def mark(ok):
    return "✅ met" if ok else "❌ not met"


def report(r, runs, tree_desc):
    s, sizes = r["s"], r["sizes"]
    base_t, base_sz = s["tar_zstd"].median, sizes["tar_zstd"]

    def ratio(key):
        t = s[key].median / base_t
        z = f"{sizes[key] / base_sz:.3f}" if key in sizes else "–"
        return f"{t:.2f}", z

    na = "n/a (binary missing)"
    rows = [
        ("A", "ferry package, cold, `--out`", "ferry_cold", "ferry_cold"),
        ("B", "ferry package, cold, no `--out` (info)", "ferry_cold_noout", None),
        ("C", "tar \\| zstd -3 -T0 (baseline)", "tar_zstd", "tar_zstd"),
        ("D", "tar --sort=name \\| zstd -3 -T0 (info)", "tar_sort_zstd", "tar_sort_zstd"),
        ("E", "tar -czf", "tar_gz", "tar_gz"),
        ("F", "ferry package, warm (unchanged tree)", "ferry_warm", None),
        ("G", "ferry package, warm, `--out`", "ferry_warm_out", None),
        ("H", "ferry package --upload, 1st (empty store, 1 run)", "upload1", None),
        ("I", "ferry package --upload, 2nd", "upload2", None),
        ("J", "unpack (ferry example) of A", "unpack", None),
        ("K", "zstd -dc \\| tar -x of C", "untar_zstd", None),
        ("L", "zstd -dc \\| tar -x of A (info: ferry's archive is a plain tar.zst)", "untar_ferry", None),
    ]
    out = [f"### Tree ({tree_desc})", ""]
    summ = r["summary"]
    out.append(f"`{r['tree']}`: ferry packaged {summ['files']} files, {summ['uncompressed']} "
               f"uncompressed → {summ['size']}; digest `{summ['digest']}` "
               f"({'same' if len(r['digests']) == 1 else '**DIFFERENT**'} across all cold/warm runs).")
    out.append("")
    out.append("| | what | median | min | max | output | time ÷ C | size ÷ C |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for tag, label, key, size_key in rows:
        if key == "unpack" and not r["have_unpack"]:
            out.append(f"| {tag} | {label} | {na} | | | | | |")
            continue
        med, lo, hi = s[key].cells()
        size = human(sizes[size_key]) if size_key else ""
        if key == "upload1":
            lo = hi = ""
        tr, zr = ratio(key) if key in ("ferry_cold", "ferry_cold_noout", "tar_sort_zstd", "tar_gz",
                                       "unpack", "untar_ferry") else ("", "")
        if key in ("unpack", "untar_ferry"):
            tr = f"{s[key].median / s['untar_zstd'].median:.2f} (÷ K)"
            zr = ""
        if key == "ferry_cold_noout":
            zr = ""
        out.append(f"| {tag} | {label} | {med} | {lo} | {hi} | {size} | {tr} | {zr} |")
    out.append("")
    out.append(f"- 1st upload said: `{r['upload_first']}`; 2nd upload said "
               f"\"unchanged, 0 bytes uploaded\" in {'all' if r['unchanged_ok'] else '**not all**'} "
               f"{runs} runs.")
    if r["have_unpack"]:
        out.append(f"- unpack result matches `tar -x` (file count and bytes): "
                   f"{'yes' if r['unpack_ok'] else '**NO**'}")
    out.append(f"- peak RSS, `ferry package --out` cold (`/usr/bin/time -f %M`): "
               f"{r['rss_kib'] / 1024:.1f} MiB")
    out.append("")
    out.append("<details><summary>exact commands</summary>\n")
    out.append("```sh")
    out.append(f"# before every cold run (untimed): rm -rf {r['tree']}/.ferry")
    for tag, key in (("A", "ferry_cold"), ("B", "ferry_cold_noout"), ("C", "tar_zstd"),
                     ("D", "tar_sort_zstd"), ("E", "tar_gz"), ("F", "ferry_warm"),
                     ("G", "ferry_warm_out"), ("H/I", "upload"), ("J", "unpack"),
                     ("K", "untar_zstd"), ("L", "untar_ferry")):
        out.append(f"# {tag}\n{shell_text(r['cmd'][key])}")
    out.append(f"# peak RSS\n{GNU_TIME} -f %M {shell_text(r['cmd']['ferry_cold'])}")
    out.append("```\n</details>\n")
    return out


def main():
    args = sys.argv[1:]
    clean = "--clean" in args
    args = [a for a in args if a != "--clean"]
    ferry, unpack, work, runs = args[0], args[1], args[2], int(args[3])
    if clean:
        rm(work)
        log(f"removed {work}")
        return 0
    if runs < 1:
        sys.exit("package-bench: RUNS must be at least 1")
    for tool in ("tar", "zstd", "gzip", "bash"):
        if not shutil.which(tool):
            sys.exit(f"package-bench: {tool} is required")
    if not os.access(GNU_TIME, os.X_OK):
        sys.exit(f"package-bench: {GNU_TIME} is required for peak RSS")
    probe = subprocess.run([ferry, "package", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"package-bench: {ferry} has no `package` subcommand (stale build?):\n"
                 f"{probe.stderr.strip()}")

    os.makedirs(work, exist_ok=True)
    started = time.perf_counter()
    load_before = open("/proc/loadavg").read().split()[:3]
    src, gen_a = ensure_tree(work, "tree-a-source", gen_source_tree)
    binary, gen_b = ensure_tree(work, "tree-b-binary", gen_binary_tree)
    generated = gen_a or gen_b
    out_dir = os.path.join(work, "out")
    results = []
    try:
        rm(out_dir)
        os.makedirs(out_dir)
        for tree in (src, binary):
            results.append(bench_tree(ferry, unpack, tree, out_dir, runs))
    finally:
        rm(out_dir)
        for tree in (src, binary):
            rm(os.path.join(tree, ".ferry"))

    a, b = results
    load_after = open("/proc/loadavg").read().split()[:3]
    lines = ["## ferry package benchmark", ""]
    lines += machine_info(ferry, unpack, work)
    lines.append(f"- load average (1/5/15 min) before: {' '.join(load_before)}, after: "
                 f"{' '.join(load_after)} (the benchmark itself keeps ~1-2 cores busy; anything "
                 f"else running shows up as a wide min–max: trust min more than max)")
    fa, ba = tree_stats(src)
    fb, bb = tree_stats(binary)
    lines += [
        f"- trees: (a) {fa} files, {human(ba)}, generated source-like text (seeded); "
        f"(b) {fb} files, {human(bb)}, one {BIN_BYTES // 10**6} MB `os.urandom` file + small files",
        f"- RUNS = {runs}: median / min / max of {runs} run(s) per row (row H: 1 run). The page cache "
        f"cannot be dropped (no root), so each tree was read once before measuring: all numbers "
        f"are **warm-cache**. `sync` runs untimed before every timed command.",
        "- tar rows archive the same files as ferry (TREE/.ferry is deleted before them and "
        "excluded anyway); C is plain GNU tar order, D adds `--sort=name` (ferry's archive is "
        "sorted). Row A includes ferry writing its cache copy in TREE/.ferry/packages and "
        "copying it to `--out`.",
        "",
    ]
    lines += report(a, runs, f"a: {fa} source-like files, {human(ba)}")
    lines += report(b, runs, f"b: one {BIN_BYTES // 10**6} MB random file + {fb - 1} small files")

    lines += ["### Targets", "", "| target | tree | measured | result |", "|---|---|---|---|"]
    for r, label in ((a, "a"), (b, "b")):
        tr = r["s"]["ferry_cold"].median / r["s"]["tar_zstd"].median
        zr = r["sizes"]["ferry_cold"] / r["sizes"]["tar_zstd"]
        lines.append(f"| ferry cold ÷ tar\\|zstd -3 -T0 time ≤ {TIME_RATIO_MAX:.1f} | {label} | "
                     f"{tr:.2f} ({secs(r['s']['ferry_cold'].median)} vs "
                     f"{secs(r['s']['tar_zstd'].median)}) | {mark(tr <= TIME_RATIO_MAX)} |")
        lines.append(f"| ferry output same or smaller than tar\\|zstd (≤ ×{SIZE_SAME_TOLERANCE}) | "
                     f"{label} | {zr:.4f} ({human(r['sizes']['ferry_cold'])} vs "
                     f"{human(r['sizes']['tar_zstd'])}) | {mark(zr <= SIZE_SAME_TOLERANCE)} |")
    # Issue 19 sets the unpack target for the 20,000-file tree; (b) is shown for information.
    for r, label in ((a, "a"),):
        if not r["have_unpack"]:
            continue
        ur = r["s"]["unpack"].median / r["s"]["untar_zstd"].median
        lines.append(f"| ferry unpack ÷ zstd -dc\\|tar -x time ≤ {UNPACK_RATIO_MAX:.1f} | {label} | "
                     f"{ur:.2f} ({secs(r['s']['unpack'].median)} vs "
                     f"{secs(r['s']['untar_zstd'].median)}) | {mark(ur <= UNPACK_RATIO_MAX)} |")
    warm = a["s"]["ferry_warm"].median
    lines.append(f"| warm re-package < {WARM_MAX_S:.0f} s | a | {secs(warm)} | {mark(warm < WARM_MAX_S)} |")
    for r, label in ((a, "a"), (b, "b")):
        lines.append(f"| 2nd upload prints \"unchanged, 0 bytes uploaded\" | {label} | "
                     f"{'yes' if r['unchanged_ok'] else 'no'} | {mark(r['unchanged_ok'])} |")
    rss = b["rss_kib"] / 1024
    lines.append(f"| peak RSS < {RSS_MAX_MIB:.0f} MiB | b | {rss:.1f} MiB | {mark(rss < RSS_MAX_MIB)} |")
    lines.append("")
    lines.append(f"_Script run time: {time.perf_counter() - started:.0f} s "
                 f"({'including' if generated else 'no'} tree generation)._")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
