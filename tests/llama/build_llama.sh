#!/bin/bash
# build_llama.sh - fetch and build llama.cpp (CPU only) for the llama.cpp glue's
# tests and bench, once: the result is cached under OUT and later runs return
# at once. Debian ships no llama.cpp; the npm package node-llama-cpp carries
# its full source as a git bundle, so it comes from the npm registry, pinned.
#
# Usage: tests/llama/build_llama.sh [OUT]   (default build/llama)
# Prints nothing on success when already built; exits non-zero on any failure
# so that make test fails rather than skipping the llama.cpp tests.
set -euo pipefail

NODE_LLAMA_VERSION=3.21.1
out=${1:-build/llama}
src=$out/llama.cpp
stamp=$out/.built-$NODE_LLAMA_VERSION

[ -e "$stamp" ] && [ -e "$src/build/bin/libllama.so" ] && exit 0

mkdir -p "$out"
out=$(cd "$out" && pwd)
src=$out/llama.cpp
if [ ! -d "$src/.git" ]; then
    rm -rf "$out/pack" "$src"
    mkdir -p "$out/pack"
    echo "llama: fetching node-llama-cpp@$NODE_LLAMA_VERSION (llama.cpp source)"
    (cd "$out/pack" && npm pack --silent "node-llama-cpp@$NODE_LLAMA_VERSION" >/dev/null)
    tar -xzf "$out/pack/node-llama-cpp-$NODE_LLAMA_VERSION.tgz" -C "$out/pack" \
        package/llama/gitRelease.bundle
    git clone -q "$out/pack/package/llama/gitRelease.bundle" "$src" 2>/dev/null
    rm -rf "$out/pack"
fi

echo "llama: building libllama (CPU) in $src/build"
# Only the libraries: no curl/openssl (nothing is downloaded), no examples,
# server, tools, tests or common library, which would triple the build time.
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -Wno-dev >"$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log" >&2; exit 1; }
cmake --build "$src/build" -j"${LLAMA_JOBS:-2}" --target llama >"$out/build.log" 2>&1 ||
    { tail -30 "$out/build.log" >&2; exit 1; }
[ -e "$src/build/bin/libllama.so" ] || { echo "llama: no libllama.so built" >&2; exit 1; }
touch "$stamp"
