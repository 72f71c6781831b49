#!/usr/bin/env bash
# The GPU variant's kernels compiled for GPUs this machine does not have, by the compilers under
# those vendors' OpenCL (compile-level facts only: timings need the GPU):
#   NVIDIA  clang's nvptx64 backend to PTX (sm_80), assembled by NVIDIA's ptxas for sm_90 (from
#           its PyPI wheel, pinned by SHA-256): every inline PTX statement, registers, spills;
#           the fused layer also with the profiling clock, and for sm_80 (A100: its prefetch).
#   AMD     clang's amdgcn backend (ROCm's OpenCL compiles with LLVM's too) for gfx90a (CDNA2,
#           wave64) and gfx1030 (RDNA2, wave32): VGPRs, scratch, occupancy.
# Each kernel program as the runtime joins it (prelude + common.cl + its files, host/kernels.h)
# with the prelude the runtime writes for that vendor's GPU (every macro of host/runtime.c's
# prelude is set here; one missing fails). Fails when a program does not compile or a kernel that
# runs on GPUs spills more than 64 bytes a work-item (ptxas stack frame and spill stores, amdgcn
# ScratchSize).
#
#   bash tools/gpu-isa-check.sh [DIR]     (default build/gpu-isa: a table, .ptx, .s, ptxas logs)
#
# Needs clang, libclc-14, curl and cmake (its unzip), installed with apt when missing. PTXAS=path
# uses that ptxas. Without ptxas (PTXAS=none, or its wheel unreachable) the NVIDIA rows come from
# the PTX alone (target "PTX"): a __local_depot there is a stack, its bytes the spill column.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=$(realpath -m "${1:-build/gpu-isa}")
mkdir -p "$dir"
clc=/usr/lib/clc

if ! command -v clang >/dev/null || ! command -v curl >/dev/null || ! command -v cmake >/dev/null ||
    [ ! -f $clc/nvptx64--nvidiacl.bc ] || [ ! -d /etc/ssl/certs ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        clang libclc-14 curl ca-certificates cmake >&2
fi

# ptxas from NVIDIA's nvcc wheel (CUDA 12.9: sm_90 and every older target)
ptxas=${PTXAS:-}
[ "$ptxas" = none ] && ptxas="" && skip_ptxas=1
whl=25/48/b54a06168a2190572a312bfe4ce443687773eb61367ced31e064953dd2f7/nvidia_cuda_nvcc_cu12-12.9.86-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
sum=5d6a0d32fdc7ea39917c20065614ae93add6f577d840233237ff08e9a38f58f0
if [ -z "$ptxas" ] && [ -z "${skip_ptxas:-}" ]; then
    ptxas=$dir/cuda/ptxas
    if [ ! -x "$ptxas" ]; then
        mkdir -p "$dir/cuda"
        if curl -fsSL --retry 3 --max-time 900 -o "$dir/cuda/nvcc.whl" \
            "https://files.pythonhosted.org/packages/$whl" &&
            echo "$sum  $dir/cuda/nvcc.whl" | sha256sum -c --quiet - >&2; then
            (cd "$dir/cuda" && cmake -E tar xf nvcc.whl nvidia/cuda_nvcc/bin/ptxas &&
                mv nvidia/cuda_nvcc/bin/ptxas . && chmod +x ptxas && rm -rf nvidia nvcc.whl)
        else
            echo "WARNING: ptxas could not be fetched; NVIDIA rows from the PTX alone" >&2
            ptxas=""
        fi
    fi
fi

# The runtime's GPU-variant prelude per vendor (host/runtime.c, choose_tuning): NVIDIA has
# no fp16, dp4a / cvt / fence.acq_rel.gpu / globaltimer / L2 prefetch / warp shuffles through
# inline PTX; AMD (ROCm) has fp16, v_dot4 and its agent-scope fence through LLVM builtins, none
# of the NVIDIA paths, no sub-groups, OpenCL C 2.0 (no integer dot product built-ins).
# stage_clock: NVIDIA's profiling runs only, so checked in a second config, with membar.gl (the
# fence where fence.acq_rel does not build, and B158_DEVICE_FENCE=2's) and a poll sleep (an A/B).
common="B158_GPU=1 B158_WG=256 B158_GEMV_ROWS=32 B158_GEMV_AHEAD=5 B158_GEMV_EARLY=1 B158_ROW_STEP=9
B158_GEMM_TN=64 B158_GEMM_TM=64
B158_GEMM_CPU_M=4 B158_AVX512_ROWS=1 B158_HEAD_DIM_MAX=256 B158_X86_AVX512BW=0
B158_X86_AVX512VNNI=0 B158_INT_DOT=0"
nvidia="$common B158_HAS_FP16=0 B158_PTX_DP4A=1 B158_PTX_CVT=1 B158_AMD_DOT=0 B158_DEVICE_FENCE=4
B158_STAGE_CLOCK=0 B158_PREFETCH=3 B158_SUBGROUPS=2 B158_POLL_SLEEP=0"
declare -A pre=(
    [nvidia]=$nvidia
    [nvidia-profile]=$(sed 's/B158_STAGE_CLOCK=0/B158_STAGE_CLOCK=2/; s/B158_DEVICE_FENCE=4/B158_DEVICE_FENCE=1/; s/B158_POLL_SLEEP=0/B158_POLL_SLEEP=128/' <<<"$nvidia")
    [nvidia-sm80]=${nvidia/B158_PREFETCH=3/B158_PREFETCH=2}
    [amd]="$common B158_HAS_FP16=1 B158_PTX_DP4A=0 B158_PTX_CVT=0 B158_AMD_DOT=1
           B158_DEVICE_FENCE=2 B158_STAGE_CLOCK=0 B158_PREFETCH=0 B158_SUBGROUPS=0 B158_POLL_SLEEP=0"
)
want=$(grep -oE '#define B158_[A-Z0-9_]+ %d' host/runtime.c | awk '{print $2}' | sort -u)
for cfg in "${!pre[@]}"; do
    have=$(tr ' ' '\n' <<<"${pre[$cfg]}" | sed -n 's/=.*//p' | sort -u)
    missing=$(comm -23 <(echo "$want") <(echo "$have"))
    if [ -n "$missing" ]; then
        echo "gpu-isa-check: prelude '$cfg' lacks $(tr '\n' ' ' <<<"$missing")(host/runtime.c has them)" >&2
        exit 1
    fi
done
prelude() { tr ' ' '\n' <<<"${pre[$1]}" | sed -n 's/^\(B158_[A-Z0-9_]*\)=\(.*\)/#define \1 \2/p'; }

# The programs the runtime builds: host/kernels.h's file lists, each after common.cl; one whose
# files all come again in a larger program (ternary.cl in the fused layer's) is that program's
# code, so only the larger one is compiled
mapfile -t all < <(sed -n 's/.*X([A-Z0-9_]*, "[a-z0-9_]*", "\([^"]*\)").*/\1/p' \
    host/kernels.h | sort -u)
programs=()
for p in "${all[@]}"; do
    covered=0
    for q in "${all[@]}"; do
        [ "$q" = "$p" ] && continue
        covered=1
        for f in $p; do [[ " $q " == *" $f "* ]] || covered=0; done
        [ $covered = 1 ] && break
    done
    [ $covered = 1 ] || programs+=("$p")
done
cl_flags=(-x cl -cl-std=CL1.2 -Xclang -finclude-default-header -O2
    "-Dinline=__attribute__((always_inline))" -Wno-everything)
# A few bytes of spill are loop invariants reloaded per outer iteration (the fused layer on
# gfx1030: 16 bytes); what fails is kilobytes, as the portable 4-way dot product gave it (3.4 KB)
spill_max=64
fail=0
table=$dir/table.md
{
    echo "| target | program | kernel | registers | spill / scratch bytes | dot4 |"
    echo "|---|---|---|---:|---:|---:|"
} >"$table"

# one row per kernel: target, program, kernel, registers, spill bytes, dot4 count
row() {
    echo "| $1 | $2 | $3 | $4 | $5 | $6 |" >>"$table"
    if ! [[ $5 =~ ^[0-9]+$ ]]; then
        echo "gpu-isa-check: no spill figure for $3 ($2) on $1 in the compiler's report" >&2
        fail=1
        return
    fi
    case $3 in
    *_cpu | *_avx512 | *_vnni) ;; # the CPU variant, never run on GPUs
    *) if [ "$5" -gt "$spill_max" ]; then
        echo "gpu-isa-check: $3 ($2) spills on $1: $5 bytes a work-item" >&2
        fail=1
    fi ;;
    esac
}

# clang to assembly: target label, program, source, output, target flags; a failure is reported
compile() {
    local what=$1 prog=$2 src=$3 out=$4
    shift 4
    if ! clang "${cl_flags[@]}" "$@" -S "$src" -o "$out" 2>"${out%.*}.err"; then
        echo "gpu-isa-check: $prog does not compile for $what:" >&2
        head -20 "${out%.*}.err" >&2
        fail=1
        return 1
    fi
}

check_nvidia() { # config, program, source
    local out=$dir/$1-${2// /+} sm=sm_90
    [ "$1" = nvidia-sm80 ] && sm=sm_80
    compile "nvptx64 ($1)" "$2" "$3" "$out.ptx" -target nvptx64-nvidia-nvcl -march=sm_80 \
        -Dasm=__asm__ -Xclang -cl-ext=+all -Xclang -mlink-builtin-bitcode \
        -Xclang $clc/nvptx64--nvidiacl.bc || return 0
    local kernels
    kernels=$(sed -n 's/^\.entry \([a-z0-9_]*\)(.*/\1/p' "$out.ptx")
    if [ -n "$ptxas" ]; then
        sed -e 's/^\.version .*/.version 8.0/' -e "s/^\.target sm_80.*/.target $sm/" \
            "$out.ptx" >"$out.$sm.ptx"
        if ! "$ptxas" -arch=$sm -v "$out.$sm.ptx" -o /dev/null >"$out.ptxas" 2>&1; then
            echo "gpu-isa-check: ptxas rejects $2 ($1):" >&2
            grep -v "^ptxas info" "$out.ptxas" | sed -n 1,20p >&2
            fail=1
            return
        fi
    fi
    for k in $kernels; do
        local body dots regs spill
        body=$(awk -v k="$k" 'index($0, ".entry " k "(") == 1 {f = 1} f {print} f && /^}/ {exit}' \
            "$out.ptx")
        dots=$(grep -c 'dp4a' <<<"$body" || true)
        if [ -n "$ptxas" ]; then
            read -r regs spill < <(awk -v k="'$k'" '
                $0 ~ "Function properties for " substr(k, 2, length(k) - 2) "$" {f = 1; next}
                f && /stack frame/ {s = $1 + $5} f && /Used/ {print $5, s; exit}' "$out.ptxas") ||
                true
        else
            regs=-
            spill=$(sed -n 's/.*\.local .*__local_depot[0-9]*\[\([0-9]*\)\];/\1/p' <<<"$body" |
                awk '{s += $1} END {print s + 0}')
        fi
        row "$([ -n "$ptxas" ] && echo $sm || echo PTX) ($1)" "$2" "$k" "$regs" "$spill" "$dots"
    done
}

check_amd() { # gpu, program, source
    local out=$dir/amd-$1-${2// /+}
    compile "$1" "$2" "$3" "$out.s" -target amdgcn-unknown-amdhsa -mcpu="$1" -nogpulib \
        -Xclang -mlink-builtin-bitcode -Xclang $clc/amdgcn--amdhsa.bc || return 0
    local k regs occ spill dots
    while read -r k regs occ spill dots; do
        row "$1" "$2" "$k" "$regs (occupancy $occ)" "$spill" "$dots"
    done < <(awk '/^[a-z0-9_]+:/ {name = substr($1, 1, length($1) - 1); dots[name] = 0}
         /v_dot4/ {dots[name]++}
         /^\t\.amdhsa_kernel / {k = $2}
         /^; NumVgprs:/ {v = $3} /^; ScratchSize:/ {s = $3}
         /^; Occupancy:/ {print k, v, $3, s, dots[k]}' "$out.s")
}

for p in "${programs[@]}"; do
    files="common.cl $p"
    for cfg in nvidia nvidia-profile nvidia-sm80 amd; do
        [[ $cfg = nvidia-* ]] && [[ $p != *decode.cl* ]] && continue
        src=$dir/$cfg-${p// /+}.cl
        {
            prelude $cfg
            echo "#line 1"
            for f in $files; do cat "cl_kernels/$f"; done
        } >"$src"
        if [ "$cfg" = amd ]; then
            for gpu in gfx90a gfx1030; do check_amd $gpu "$p" "$src"; done
        else
            check_nvidia $cfg "$p" "$src"
        fi
    done
done
# every kernel the engine can launch on a GPU has its row on each target (a report the parsing
# above missed must not pass as "no spills")
while read -r k; do
    [[ $k = *_cpu || $k = *_avx512 || $k = *_vnni ]] && continue
    for t in "sm_90 (nvidia)" gfx90a gfx1030; do
        [ -n "$ptxas" ] || [ "$t" != "sm_90 (nvidia)" ] || t="PTX (nvidia)"
        if ! grep -qF "| $t | " "$table" || ! grep -F "| $t | " "$table" | grep -qF " | $k | "; then
            echo "gpu-isa-check: no report for $k on $t" >&2
            fail=1
        fi
    done
done < <(sed -n 's/.*X([A-Z0-9_]*, "\([a-z0-9_]*\)", ".*/\1/p' host/kernels.h)
cat "$table"
exit $fail
