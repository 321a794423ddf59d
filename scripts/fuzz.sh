#!/usr/bin/env bash
# Fuzz ferry's parsers of outside input with cargo-fuzz (libFuzzer), each for a bounded time:
#   pipeline_yaml  pipeline files          config_toml  ferry.toml
#   run_record     run records and plans   unpack       code packages (.tar.zst)
# The entry points are orchestrator_host::fuzz::*; the checked-in corpora under
# orchestrator-host/fuzz/corpus/ are also replayed by the ordinary test suite
# (orchestrator-host/tests/fuzz_corpus.rs).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default 60 s each, every target
#
# Needs the nightly toolchain (cargo-fuzz builds with sanitizer flags) and installs cargo-fuzz
# into the project-local tools folder. New inputs found along the way go to a scratch copy, not
# the checked-in corpus. A crash stops the script: the input is in
# orchestrator-host/fuzz/artifacts/<target>/; fix the bug, then copy the input into
# orchestrator-host/fuzz/corpus/<target>/ so that it stays a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2; }
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(pipeline_yaml config_toml run_record unpack)
tools="${FERRY_TOOLS_DIR:-$PWD/.tools}"
FERRY_CARGO_FUZZ_VERSION=0.13.1

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 1
fi
if [[ "$("$tools/cargo/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $FERRY_CARGO_FUZZ_VERSION" ]]; then
    echo "fuzz: installing cargo-fuzz $FERRY_CARGO_FUZZ_VERSION into $tools/cargo" >&2
    cargo install --quiet --locked --root "$tools/cargo" cargo-fuzz --version "$FERRY_CARGO_FUZZ_VERSION"
fi
export PATH="$tools/cargo/bin:$PATH"

scratch=$(mktemp -d /tmp/ferry-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
cd orchestrator-host
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    echo "== fuzz $target for ${seconds}s" >&2
    # New units go to the first corpus directory (the scratch copy); the checked-in one seeds.
    # `grep` hides the progress lines; with pipefail the pipeline fails when cargo-fuzz does
    # (a crash), and the `|| true` inside the braces keeps a quiet grep from counting as one.
    if ! cargo +nightly fuzz run "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
        { grep -E "^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==|SUMMARY|Done)" || true; }; then
        echo "fuzz: $target failed; see orchestrator-host/fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
