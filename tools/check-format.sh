#!/usr/bin/env bash
# Fails when a C source, header or OpenCL kernel differs from what clang-format (Debian 12's,
# with the repository's .clang-format) makes of it. `bash tools/check-format.sh --fix` rewrites.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v clang-format >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        clang-format >&2
fi
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cl')
if [ "${1:-}" = "--fix" ]; then
    clang-format -i "${files[@]}"
elif ! clang-format --dry-run --Werror "${files[@]}" 2>/dev/null; then
    echo "check-format.sh: these files need clang-format (bash tools/check-format.sh --fix):" >&2
    for f in "${files[@]}"; do
        clang-format --dry-run --Werror "$f" 2>/dev/null || echo "  $f" >&2
    done
    exit 1
fi
