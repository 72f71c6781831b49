#!/usr/bin/env bash
# Intel's OpenCL CPU runtime, a second OpenCL implementation for the same CPU (with cl_khr_fp16,
# subgroups and integer dot product, which PoCL 3.1 lacks), unpacked from its PyPI wheels
# (pinned by SHA-256; no pip, no Python) into DIR with an ICD file for it alone.
#
#   bash tools/intel-opencl.sh [DIR]      (default build/intel-opencl)
#
# prints the two variables that make the ICD loader see only this runtime, and a third for its
# kernel compiler:
#   export OCL_ICD_VENDORS=DIR/icd LD_LIBRARY_PATH=DIR/lib CL_CONFIG_LLVM_OPTIONS=...
# The third works around a use-after-free in this release's ReduceCrossBarrierValues pass (it
# holds a reference to one block's entry of a DenseMap while inserting other blocks, which can
# move it; valgrind shows the invalid 8-byte writes in copyAndReplaceUses, building the fused
# decode program): one run of test-forward's fused_decode suite in 20 aborted with "malloc():
# unsorted double linked list corrupted" inside the compiler. A copy threshold of 0 makes the pass keep every value that crosses a barrier in
# its per-work-item buffer instead of copying it, so it never gets there; the code is otherwise
# the same optimised code.
# CI runs every test a second time on it (.ci/run), the CLBlast FP16 baseline included.
set -euo pipefail
dir=$(realpath -m "${1:-build/intel-opencl}")
pkgs=https://files.pythonhosted.org/packages
wheels=(
    "b9/ae/f011c86c610c631624d7caec75020d307080ddb0815d286b597b17e4e6e2/intel_opencl_rt-2026.2.0-py2.py3-none-manylinux_2_28_x86_64.whl 6b6215a420598b4999ee01caca6d5cbe106aa4155c46c52377619c5aafce9f67"
    "7a/60/c9232e85f37a7f9e40d800679341b27eae240e4992221b861e0f3882d109/intel_cmplr_lib_rt-2026.2.0-py2.py3-none-manylinux_2_28_x86_64.whl 9f713083073a820d2496a6da8e8d4f3482aba6640f74521d25ea48dcebe72748"
    "59/fd/8ca476c7b2513b1e64e08d3f5404c8ed19b34d0213000b5e23b3a91676c2/tbb-2023.2.0-py2.py3-none-manylinux_2_28_x86_64.whl 7d80615b6e970f11671fa05b6eaa9483ac864fbfe525ac280271a78b37870b7c"
)
if [ ! -f "$dir/icd/intel-cpu.icd" ]; then
    if ! command -v curl >/dev/null || [ ! -d /etc/ssl/certs ]; then
        sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            curl ca-certificates >&2
    fi
    for tool in curl sha256sum cmake; do
        command -v $tool >/dev/null || { echo "intel-opencl.sh: $tool is missing" >&2; exit 1; }
    done
    rm -rf "$dir" && mkdir -p "$dir/whl" "$dir/lib" "$dir/icd"
    for w in "${wheels[@]}"; do
        read -r path sum <<<"$w"
        file="$dir/whl/${path##*/}"
        echo "intel-opencl.sh: fetching ${path##*/}" >&2
        curl -fsSL --retry 3 --max-time 900 -o "$file" "$pkgs/$path"
        echo "$sum  $file" | sha256sum -c --quiet - >&2
        (mkdir -p "$dir/x" && cd "$dir/x" && cmake -E tar xf "$file")
    done
    # the libraries of the three wheels side by side; the ICD loader stays Debian's
    cp -a "$dir"/x/*.data/data/lib/. "$dir/lib/"
    rm -rf "$dir/x" "$dir/whl" "$dir"/lib/libOpenCL.so*
    echo "$dir/lib/libintelocl.so" >"$dir/icd/intel-cpu.icd"
fi
echo "export OCL_ICD_VENDORS=$dir/icd LD_LIBRARY_PATH=$dir/lib" \
    "CL_CONFIG_LLVM_OPTIONS=-sycl-barrier-copy-instruction-threshold=0"
