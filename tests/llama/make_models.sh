#!/bin/bash
# make_models.sh - write the llama.cpp tests' models into DIR (once; cached):
#   test.gguf        4 layers, 256 wide, 4 heads, 2 kv heads of 64
#   test-other.gguf  the same but 4 kv heads: another geometry
#   bench.gguf       (with "bench") 8 layers, 512 wide, 8 heads, 4 kv heads
# Usage: tests/llama/make_models.sh DIR [bench]
set -euo pipefail
dir=$1
src=$dir/llama.cpp
# Debian's python3 has python3-numpy; a python3 earlier on PATH may not.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
export PYTHONPATH=$src/gguf-py
vocab=$src/models/ggml-vocab-llama-spm.gguf

# Models are rewritten when the generator changes.
gen=$(sha256sum tests/llama/make_model.py | cut -c1-16)
make_one() {   # name layers embd heads kv_heads ffn seed
    local out=$dir/$1.gguf
    [ -s "$out" ] && [ "$(cat "$out.gen" 2>/dev/null)" = "$gen" ] && return 0
    "$py" tests/llama/make_model.py "$out.tmp" "$vocab" "$2" "$3" "$4" "$5" "$6" "$7"
    mv "$out.tmp" "$out"
    echo "$gen" > "$out.gen"
}
make_one test 4 256 4 2 512 1
make_one test-other 4 256 4 4 512 2
if [ "${2:-}" = bench ]; then
    make_one bench 8 512 8 4 1408 3
fi
