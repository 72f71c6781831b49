#!/usr/bin/env bash
# Runs the libFuzzer targets of a B158_FUZZ=ON build, one after the other on one core, each for
# SECONDS (default 60) from its seed corpus plus what earlier runs kept; stops with a non-zero
# status at the first crash, leak, undefined behaviour or hang (the input is saved in
# <build>/fuzz/crashes/). Builds nothing: build first with
#   CC=clang B158_BUILD_DIR=build-fuzz B158_CMAKE_ARGS=-DB158_FUZZ=ON bash tools/setup.sh build
# usage: bash tests/fuzz/run.sh [SECONDS] [TARGET...]   (targets: gguf model vocab tokenize-bpe
#        tokenize-spm chat server-request; default all). B158_BUILD_DIR picks the build folder (default
#        build-fuzz), B158_FUZZ_ARGS adds libFuzzer flags (e.g. -runs=10000000).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${B158_BUILD_DIR:-$root/build-fuzz}
fuzz=$build/fuzz
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=(gguf model vocab tokenize-bpe tokenize-spm chat server-request)
[ $# -gt 0 ] && targets=("$@")

case "$secs" in
'' | *[!0-9]*)
    echo "usage: bash tests/fuzz/run.sh [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

dict_for() {
    case "$1" in
    gguf | model | vocab) echo "$root/tests/fuzz/gguf.dict" ;;
    tokenize-*) echo "$root/tests/fuzz/text.dict" ;;
    chat) echo "$root/tests/fuzz/chat.dict" ;;
    server-request) echo "$root/tests/fuzz/request.dict" ;;
    esac
}

mkdir -p "$fuzz/crashes" "$fuzz/logs"
for t in "${targets[@]}"; do
    bin=$fuzz/fuzz-$t
    if [ ! -x "$bin" ] || [ ! -d "$fuzz/seeds/$t" ]; then
        echo "run.sh: $bin or its seeds are missing; build with B158_FUZZ=ON first (see the" \
            "top of this script)" >&2
        exit 2
    fi
    mkdir -p "$fuzz/corpus/$t"
    log=$fuzz/logs/$t.log
    echo "== fuzz-$t: ${secs} s"
    rc=0
    # shellcheck disable=SC2086 # B158_FUZZ_ARGS holds several flags on purpose
    ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -dict="$(dict_for "$t")" -artifact_prefix="$fuzz/crashes/$t-" ${B158_FUZZ_ARGS:-} \
        "$fuzz/corpus/$t" "$fuzz/seeds/$t" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        tail -n 60 "$log" >&2
        echo "run.sh: fuzz-$t failed (exit $rc); full log $log, input in $fuzz/crashes/" >&2
        exit 1
    fi
    # libFuzzer's last status line (executions, coverage) and its final statistics
    grep -aE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
    grep -aE '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
done
