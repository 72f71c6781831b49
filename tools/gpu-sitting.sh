#!/usr/bin/env bash
# One sitting on a machine with an OpenCL GPU: the tests on the device, the kernel timings, the
# decode paths side by side, the fused layer's own profile, the 2B-4T model against its FP16
# baseline and the paper's table, each stage under a share of one time budget so that the log
# always comes back. For GPU machines lent for minutes: build elsewhere, carry the build folder
# (and the shared libraries the machine lacks), run this from the repository root.
#
#   bash tools/gpu-sitting.sh [BUILD_DIR] [check|tables|all]     (default build, all)
#
#   check   tests, kernels at one token, fused and unfused profiles, A/B of the tuning switches
#   tables  kernels at 1 and 512 tokens, decode rows, 2B-4T both engines, --verify, paper table
# Environment:
#   B158_OCL_LIB=FILE  an OpenCL driver library (libnvidia-opencl.so.1 on images without an ICD
#                      file): an ICD file naming it is written and OCL_ICD_VENDORS points at it;
#                      "auto" looks for NVIDIA's in the usual places
#   B158_LIBS=DIR      put first on LD_LIBRARY_PATH (carried libOpenCL, libclblast, libcunit...)
#   B158_BUDGET=S      seconds for the whole run (default 420); OUT=DIR where logs go (default
#                      BUILD_DIR/gpu-sitting)
#   B158_SITTING_MODEL=GGUF   the decode model (default: a 2B-4T-shaped one from b158-gen-model,
#                      in /tmp); B158_SITTING_PRESETS the paper table's (default 700M,1.3B,3B,3.9B)
set -u
root=$(pwd -P)
build=$(realpath -m "${1:-build}")
part=${2:-all}
out=${OUT:-$build/gpu-sitting}
end=${B158_BUDGET:-420}
bin=$build/bin
model=${B158_SITTING_MODEL:-/tmp/b158-sitting-2b4t.gguf}
presets=${B158_SITTING_PRESETS:-700M,1.3B,3B,3.9B}
mkdir -p "$out"
case "$part" in check | tables | all) ;; *)
    echo "usage: bash tools/gpu-sitting.sh [BUILD_DIR] [check|tables|all]" >&2
    exit 2
    ;;
esac
[ -x "$bin/b158-cl-bench" ] || { echo "gpu-sitting: no $bin/b158-cl-bench (build first)" >&2; exit 2; }

say() { printf '\n== %s (t=%ss)\n' "$*" "$SECONDS"; }
# stage LIMIT CMD...: CMD under the smaller of LIMIT and what the budget has left
stage() {
    local t=$((end - SECONDS - 5))
    [ "$t" -gt "$1" ] && t=$1
    shift
    [ "$t" -lt 10 ] && { echo "SKIPPED: out of time" >&2; return 124; }
    timeout "$t" "$@"
    local rc=$?
    [ $rc -ne 0 ] && echo "rc $rc" >&2
    return $rc
}
# decode LABEL [VAR=VALUE...] -- BENCH ARGS: the ternary engine's row of b158-cl-bench
decode() {
    local label=$1 envs=()
    shift
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    echo "-- $label ${envs[*]}"
    stage 60 env "${envs[@]}" "$bin/b158-cl-bench" -m "$model" --engine b158 "$@" 2>&1 |
        grep -E '^\| |host time inside' | grep -v -E '^\| model |^\|---' | tail -2
}

if [ -n "${B158_OCL_LIB:-}" ]; then
    lib=$B158_OCL_LIB
    if [ "$lib" = auto ]; then
        lib=$(find /usr/local/nvidia /usr/lib/x86_64-linux-gnu /usr/lib64 -name 'libnvidia-opencl.so.1' \
            2>/dev/null | head -1)
    fi
    [ -e "$lib" ] || { echo "gpu-sitting: no OpenCL driver library '$lib'" >&2; exit 3; }
    mkdir -p /tmp/b158-icd && echo "$lib" >/tmp/b158-icd/gpu.icd
    export OCL_ICD_VENDORS=/tmp/b158-icd
    LD_LIBRARY_PATH=$(dirname "$lib"):${LD_LIBRARY_PATH:-}
    export LD_LIBRARY_PATH
fi
[ -n "${B158_LIBS:-}" ] && export LD_LIBRARY_PATH=$B158_LIBS:${LD_LIBRARY_PATH:-}
export B158_REQUIRE_DEVICE=1 B158_CACHE_DIR=${B158_CACHE_DIR:-/tmp/b158-sitting-cache}

say "machine and device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
git -C "$root" log -1 --format='commit %h %s' 2>/dev/null
stage 30 "$bin/b158-cl-run" --list-devices || exit 4
# ctest and the tools hold the configure-time source path: point it here when the build moved
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")
if [ -n "$src" ] && [ "$src" != "$root" ] && [ ! -e "$src" ]; then
    mkdir -p "$(dirname "$src")" && ln -s "$root" "$src"
fi
[ -e "$model" ] || stage 90 "$bin/b158-gen-model" -o "$model" --preset 2B-4T >/dev/null &

if [ "$part" != tables ]; then
    say "tests on the device (the server's suites left out)"
    stage 150 ctest --test-dir "$build" --output-on-failure --timeout 120 -j 8 -E '^test-server' \
        >"$out/ctest.log" 2>&1
    grep -E 'tests passed|\*\*\*|Total Test' "$out/ctest.log" | tail -25
fi
wait
say "kernels, one token"
stage 60 "$bin/b158-cl-bench" --kernels --variant gpu --reps 20 --tokens 1 --shape 3840x2560 \
    --shape 2560x2560 --shape 13824x2560 --shape 2560x6912 --shape 128256x2560 --block 2B-4T |
    tee "$out/kernels.md"
if [ "$part" != tables ]; then
    for lanes in 8 16 32; do
        say "kernels, one token, B158_GEMV_LANES=$lanes"
        stage 60 env B158_GEMV_LANES=$lanes "$bin/b158-cl-bench" --kernels --variant gpu --reps 20 \
            --tokens 1 --shape 3840x2560 --shape 2560x2560 --shape 13824x2560 --shape 2560x6912 \
            --shape 3200x8640 --block 2B-4T | grep -E '^\| gpu \| (ternary|2B-4T)'
    done
fi
if [ "$part" != check ]; then
    say "kernels, 512 tokens"
    stage 60 "$bin/b158-cl-bench" --kernels --variant gpu --reps 20 --tokens 512 --shape 13824x2560 \
        --shape 2560x6912 | grep -E '^\|'
fi
if [ "$part" != tables ]; then
    for mode in B158_FUSED_DECODE=0 B158_FUSED_DECODE=1 B158_GEMV_CHAIN=1; do
        say "profile, $mode"
        stage 60 env "$mode" "$bin/b158-cl-bench" -m "$model" -p 64 -n 32 -r 1 \
            --engine b158 --profile >"$out/profile-${mode#B158_}.md" 2>&1
        grep -E '^\||wall per step' "$out/profile-${mode#B158_}.md" | head -60
    done
    say "decode A/B (-p 512 -n 128 -r 2)"
    a=(-p 512 -n 128 -r 2)
    decode default -- "${a[@]}"
    decode chain B158_GEMV_CHAIN=1 -- "${a[@]}"
    decode greedy -- "${a[@]}" --greedy
    decode greedy-not-ahead B158_SPECULATE=0 -- "${a[@]}" --greedy
    decode chain-greedy B158_GEMV_CHAIN=1 -- "${a[@]}" --greedy
    decode chain-depth1024 B158_GEMV_CHAIN=1 -- -p 512 -n 128 -r 2 -d 1024
    decode splitkeys1 B158_ATT_SPLIT_KEYS=1 -- "${a[@]}"
    decode lanes8 B158_GEMV_LANES=8 -- "${a[@]}"
    decode rowstep8 B158_ROW_STEP=8 -- "${a[@]}"
    decode lanes16 B158_GEMV_LANES=16 -- "${a[@]}"
    decode chain-lanes8 B158_GEMV_CHAIN=1 B158_GEMV_LANES=8 -- "${a[@]}"
    decode chain-sleep64 B158_GEMV_CHAIN=1 B158_POLL_SLEEP=64 -- "${a[@]}"
    decode chain-sleep512 B158_GEMV_CHAIN=1 B158_POLL_SLEEP=512 -- "${a[@]}"
    decode fused B158_FUSED_DECODE=1 -- "${a[@]}"
    decode depth256 -- -p 512 -n 128 -r 2 -d 256
    decode depth256-splitkeys1 B158_ATT_SPLIT_KEYS=1 -- -p 512 -n 128 -r 2 -d 256
    decode depth256-splitkeys2048 B158_ATT_SPLIT_KEYS=2048 -- -p 512 -n 128 -r 2 -d 256
    decode depth1024 -- -p 512 -n 128 -r 2 -d 1024
    decode default-again -- "${a[@]}"
fi
if [ "$part" != check ]; then
    say "decode rows (-p 512 -n 128 -r 3)"
    a=(-p 512 -n 128 -r 3)
    decode default -- "${a[@]}"
    decode chain B158_GEMV_CHAIN=1 -- "${a[@]}"
    decode greedy -- "${a[@]}" --greedy
    decode greedy-not-ahead B158_SPECULATE=0 -- "${a[@]}" --greedy
    decode fused B158_FUSED_DECODE=1 -- "${a[@]}"
    decode depth1024 -- -p 512 -n 128 -r 2 -d 1024
    decode depth3584 -- -p 512 -n 128 -r 2 -d 3584
    say "model against its FP16 baseline"
    stage 90 "$bin/b158-cl-bench" -m "$model" -p 512 -n 128 -r 3 --fp16 kernels | tee "$out/model.md" |
        grep -E '^\|'
    say "verify against the CPU reference"
    stage 90 "$bin/b158-cl-run" -m "$model" --verify -n 4 -p "Hello" 2>&1 | grep -E '^verify|error'
    say "paper table"
    stage 240 "$bin/b158-cl-bench" --preset "$presets" -p 128 -n 32 -r 2 --fp16 kernels |
        tee "$out/paper.md" | grep -E '^\|'
fi
say "done"
