#!/bin/bash
# deps.sh - install the Debian packages kvtier needs, only those missing.
# Used by `make run` and `make test` so a fresh Debian 12 machine needs nothing else.
set -euo pipefail

pkgs=(build-essential pkg-config liburing-dev liblz4-dev libsystemd-dev
      libcjson-dev libxxhash-dev libcmocka-dev systemd
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
      clang-14 libclang-rt-14-dev
      libmemcached-dev libssl-dev memcached
      cmake g++ git python3-numpy python3-yaml
      python3 python3-torch python3-pytest)
arm_pkgs=(libcmocka-dev:arm64)

missing=()
for p in "${pkgs[@]}" "${arm_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# npm fetches llama.cpp's source for the llama.cpp tests (node-llama-cpp);
# any npm will do, e.g. one that came with a nodejs from elsewhere.
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]}; run as root or install them" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
# The aarch64 kernel test links cmocka built for arm64 (Debian multiarch).
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
