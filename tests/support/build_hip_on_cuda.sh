#!/usr/bin/env bash
# Builds the HIP-on-CUDA test double (tests/support/hip_on_cuda.c) with gcc
# alone: libcuda.so.1 and NVRTC are opened at run time, so no CUDA header or
# library is needed here. Usage: build_hip_on_cuda.sh [OUTPUT.so]
# (default: tests/support/libhip_on_cuda.so). Prints the library's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/libhip_on_cuda.so}"
cc="${CC:-gcc}"
"$cc" -std=c11 -O2 -g -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror \
  -o "$out" "$here/hip_on_cuda.c" -ldl -lpthread
echo "$out"
