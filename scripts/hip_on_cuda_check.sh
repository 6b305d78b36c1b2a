#!/usr/bin/env bash
# Runs the whole test suite over the `hip` device on an NVIDIA GPU machine,
# through the HIP-on-CUDA test double (tests/support/hip_on_cuda.c), plus
# the HIP launch benchmark (bench/bench_hip.py). No AMD GPU is involved:
# this checks every path of nexus's HIP runtime against a real GPU, with
# CUDA and NVRTC standing in for HIP and hiprtc.
#
# Prepare as for scripts/device_run.sh: a nexus wheel in wheelhouse/
# (`maturin build --release -o wheelhouse`; `hip` is a default feature) and
# the test dependencies as wheels in .whl/ (without them, the python3 on the
# PATH must already import nexus and pytest). Then, on the GPU machine, with
# both carried:
#   bash scripts/hip_on_cuda_check.sh [pytest args...]
# Logs go to $OUT (or ./device-out): build.log, devices.txt, pytest-hip.log
# (the suite, every test parametrised over the hip device; the cuda and cpu
# devices are deselected), test_hip.log, pytest-hip-no-memops.log (event
# tests with NEXUS_HIP_STREAM_MEMOPS=0) and bench_hip.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-device-out}"
mkdir -p "$out"

lib="$(pwd)/tests/support/libhip_on_cuda.so"
bash tests/support/build_hip_on_cuda.sh "$lib" > "$out/build.log" 2>&1 \
  || { cat "$out/build.log"; echo "building the test double failed"; exit 1; }
export NEXUS_HIP_LIBRARY="$lib"

if ! python3 -c "import nexus" 2>/dev/null && [ -d wheelhouse ] && [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    || { echo "installing test wheels failed"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/nexus wheelhouse/nexus-*.whl \
    || { echo "installing the nexus wheel failed"; exit 1; }
  export PYTHONPATH=/tmp/nexus:/tmp/site
fi
export PYTHONUNBUFFERED=1
# A fresh compile cache: every hiprtc (NVRTC) compile runs at least once.
export NEXUS_CACHE_DIR="$(mktemp -d)"

{ nvidia-smi -L; python3 -c "import nexus; print([(r.get_name(), len(r.get_devices())) for r in nexus.get_runtimes()]); print(nexus.get_runtime('hip').get_device(0).get_info().get_str('Architecture'))"; } \
  2>&1 | tee "$out/devices.txt"
python3 -c "import nexus, sys; sys.exit(0 if len(nexus.get_runtime('hip').get_devices()) else 1)" \
  || { echo "the hip runtime lists no device through the double (see devices.txt)"; exit 1; }

rc=0
python3 -m pytest tests/test_hip.py -q -p no:cacheprovider -rfEs 2>&1 | tee "$out/test_hip.log" | tail -20
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
# Every device-parametrised test, on the hip device only (ids "hip0", ...).
python3 -m pytest tests -q -p no:cacheprovider -rfEs -k "hip" "$@" 2>&1 | tee "$out/pytest-hip.log" | tail -40
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
# Signals and waits without stream memory operations: stream callbacks and
# host-held waits, the path of AMD devices that lack them.
NEXUS_HIP_STREAM_MEMOPS=0 python3 -m pytest tests/test_hip.py tests/test_events_streams.py tests/test_execution_model.py \
  -q -p no:cacheprovider -rfEs -k "hip" 2>&1 | tee "$out/pytest-hip-no-memops.log" | tail -20
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
python3 bench/bench_hip.py 2>&1 | tee "$out/bench_hip.log"
exit $rc
