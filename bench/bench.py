#!/usr/bin/env python3
"""Timing logic for bench/run-bench.sh (python3 standard library only).

Usage: bench.py FERRY PIPELINES_DIR RUNS

Measures whole-process wall time of `ferry -C DIR run --no-cache FILE` on the trivial pipelines in
PIPELINES_DIR, each in a fresh temporary project directory, and prints a markdown table.

Wall times are measured on unwrapped runs. Peak RSS is measured on a few extra runs wrapped in
`/usr/bin/time -f %M` (the maximum resident set size of ferry and of the step processes it waited
for, which here are all tiny). It is not taken from Python's own rusage of its children: Linux
carries the RSS high-water mark of the process that called exec() over to the new program, so a
child forked from Python reports at least Python's own ~10 MiB. Without /usr/bin/time the script
falls back to resource.getrusage(RUSAGE_CHILDREN) and marks the figures as upper bounds (≤).
"""

import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# (file, number of steps, extra ferry args, description)
PIPELINES = [
    ("one.yaml", 1, [], "1 step"),
    ("chain10.yaml", 10, [], "chain of 10"),
    ("fanout.yaml", 10, [], "fan-out 1 → 8 → 1"),
]
SLEEP_PIPELINE = "fanout-sleep.yaml"
SLEEP_STEPS, SLEEP_SECONDS, SLEEP_PARALLELISM = 8, 0.2, 8
VERSION_RUNS = 50
RSS_RUNS = 5
GNU_TIME = "/usr/bin/time"


def run(argv):
    """Run argv to completion with output discarded; return (wall seconds, exit code, stderr)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        code = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        wall = time.perf_counter() - start
        err.seek(0)
        return wall, code, err.read().decode(errors="replace")


def checked(argv):
    """Wall seconds of one successful run of argv."""
    wall, code, err = run(argv)
    if code != 0:
        sys.exit(f"bench: `{' '.join(argv)}` exited with {code}:\n{err}")
    return wall


def peak_rss(argv):
    """Peak RSS in KiB of one successful run of argv."""
    if os.access(GNU_TIME, os.X_OK):
        with tempfile.NamedTemporaryFile("r") as out:
            checked([GNU_TIME, "-f", "%M", "-o", out.name, *argv])
            return int(out.read().split()[-1])
    # Fallback: a fresh, small python wrapper per measurement, so the figure is this run's
    # (an upper bound: it includes the wrapper's own RSS, see above).
    wrapper = ("import resource, subprocess, sys; "
               "code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", wrapper, *argv], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: `{' '.join(argv)}` exited with {out.returncode}:\n{out.stderr}")
    return int(out.stdout.split()[-1])


def rss_text(kib):
    bound = "" if os.access(GNU_TIME, os.X_OK) else "≤ "
    return f"{bound}{kib / 1024:.1f} MiB"


def p90(values):
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def bench_pipeline(ferry, pipelines_dir, file, runs, extra=()):
    """Median and p90 wall time and max peak RSS of `runs` runs (after one warm-up run)."""
    project = tempfile.mkdtemp(prefix="ferry-bench-")
    try:
        shutil.copy(os.path.join(pipelines_dir, file), project)
        argv = [ferry, "-C", project, "run", "--no-cache", *extra, file]
        checked(argv)  # warm-up: page cache, store directories
        walls = [checked(argv) for _ in range(runs)]
        rss = max(peak_rss(argv) for _ in range(min(runs, RSS_RUNS)))
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return statistics.median(walls), p90(walls), rss


def main():
    ferry, pipelines_dir, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if runs < 1:
        sys.exit("bench: RUNS must be at least 1")

    version_out = subprocess.run([ferry, "--version"], capture_output=True, text=True, check=True)
    version = version_out.stdout.strip()

    # The steps' own cost: what spawning the step command directly costs (ferry runs `run:`
    # with `sh -c`), median of many spawns.
    step_cost = statistics.median(checked(["sh", "-c", "true"]) for _ in range(max(50, runs)))

    rows = []
    for file, steps, extra, what in PIPELINES:
        print(f"bench: {file} × {runs} …", file=sys.stderr)
        median, high, rss = bench_pipeline(ferry, pipelines_dir, file, runs, extra)
        overhead = (median - steps * step_cost) / steps
        rows.append((f"`{file}` ({what})", steps, ms(median), ms(high), ms(overhead), rss_text(rss)))

    print(f"bench: {SLEEP_PIPELINE} × {runs} …", file=sys.stderr)
    parallelism = [f"--set=stacks.local.orchestrator.settings.parallelism={SLEEP_PARALLELISM}"]
    s_median, s_high, s_rss = bench_pipeline(ferry, pipelines_dir, SLEEP_PIPELINE, runs, parallelism)
    rows.append((f"`{SLEEP_PIPELINE}` (8 × `sleep {SLEEP_SECONDS}`, parallelism {SLEEP_PARALLELISM})",
                 SLEEP_STEPS + 2, ms(s_median), ms(s_high), "–", rss_text(s_rss)))

    print(f"bench: ferry --version × {VERSION_RUNS} …", file=sys.stderr)
    v_walls = [checked([ferry, "--version"]) for _ in range(VERSION_RUNS)]
    v_rss = max(peak_rss([ferry, "--version"]) for _ in range(RSS_RUNS))
    rows.append(("`ferry --version`", "–", ms(statistics.median(v_walls)), ms(p90(v_walls)), "–",
                 rss_text(v_rss)))

    serial = SLEEP_STEPS * SLEEP_SECONDS
    parallel = s_median < serial / 2

    print("## ferry benchmark\n")
    print(f"- binary: `{ferry}` ({version})")
    print(f"- machine: {os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().release}")
    print(f"- {runs} runs per pipeline after 1 warm-up, each `ferry -C <tmp> run --no-cache <file>`; "
          f"`ferry --version` × {VERSION_RUNS}")
    print(f"- step's own cost: `sh -c true` spawned directly takes {ms(step_cost)} (median); "
          f"overhead/step = (median − steps × that) / steps")
    if os.access(GNU_TIME, os.X_OK):
        print(f"- peak RSS: largest `/usr/bin/time -f %M` over {RSS_RUNS} extra runs (not timed)\n")
    else:
        print(f"- peak RSS: /usr/bin/time not found, so the largest RUSAGE_CHILDREN of a python "
              f"wrapper over {RSS_RUNS} extra runs: an upper bound that includes the wrapper's own "
              f"RSS (≈ {peak_rss(['true']) / 1024:.1f} MiB for `true`)\n")
    print("| pipeline | steps | median | p90 | overhead/step | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    verdict = "yes" if parallel else "**NO**"
    print(f"\nFan-out parallel: {verdict} — `{SLEEP_PIPELINE}` median {ms(s_median)} vs "
          f"{serial:.1f} s if its {SLEEP_STEPS} sleeps ran one after another "
          f"(ideal ≈ {SLEEP_SECONDS:.1f} s + overhead).")
    return 0 if parallel else 1


if __name__ == "__main__":
    sys.exit(main())
