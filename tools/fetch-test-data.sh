#!/usr/bin/env bash
# Test inputs that are not in the repository: llama.cpp's tokenizer vocabularies and reference
# vectors (public domain), taken from the llama-cpp-python sdist on PyPI that bundles llama.cpp,
# pinned by SHA-256 (the archive and every file used). tests/data/README.md says what each is.
#
#   bash tools/fetch-test-data.sh [DIR]      (default build/test-data)
#
# ctest runs it first (fixture "test-data"), so the tests that need these files fail, not skip,
# when PyPI cannot be reached. It does nothing once DIR holds the files with the right hashes.
set -euo pipefail
dir=$(realpath -m "${1:-build/test-data}")
sdist=llama_cpp_python-0.3.16.tar.gz
url=https://files.pythonhosted.org/packages/e4/b4/c8cd17629ced0b9644a71d399a91145aedef109c0333443bef015e45b704/$sdist
sdist_sha256=34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6
files=(
    "ggml-vocab-llama-spm.gguf 16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69"
    "ggml-vocab-llama-spm.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
    "ggml-vocab-llama-spm.gguf.out ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29"
    "ggml-vocab-gpt-2.gguf cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac"
    "ggml-vocab-gpt-2.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
    "ggml-vocab-gpt-2.gguf.out 48e8c4cb3ad5c37915b225f872222567c1c4dd4d66951aa53460c8d152ff6d60"
    "ggml-vocab-llama-bpe.gguf 97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e"
    "ggml-vocab-llama-bpe.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
    "ggml-vocab-llama-bpe.gguf.out 118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b"
)

sums() { for f in "${files[@]}"; do read -r name sum <<<"$f" && echo "$sum  $dir/tokenizers/$name"; done; }
sums | sha256sum -c --quiet - >/dev/null 2>&1 && exit 0

for tool in curl sha256sum tar; do
    command -v $tool >/dev/null || { echo "fetch-test-data.sh: $tool is missing" >&2; exit 1; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/b158-test-data.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetch-test-data.sh: fetching $sdist (48 MB) from PyPI" >&2
if ! curl -fsSL --retry 3 --max-time 900 -o "$tmp/$sdist" "$url"; then
    echo "fetch-test-data.sh: cannot download $url; the tokenizer tests need it" >&2
    exit 1
fi
echo "$sdist_sha256  $tmp/$sdist" | sha256sum -c --quiet - >&2
members=()
for f in "${files[@]}"; do
    read -r name _ <<<"$f"
    members+=("${sdist%.tar.gz}/vendor/llama.cpp/models/$name")
done
tar -xzf "$tmp/$sdist" -C "$tmp" "${members[@]}"
mkdir -p "$dir/tokenizers"
cp "$tmp/${sdist%.tar.gz}/vendor/llama.cpp/models/"* "$dir/tokenizers/"
sums | sha256sum -c --quiet - >&2
echo "fetch-test-data.sh: tokenizer vocabularies and vectors in $dir/tokenizers" >&2
