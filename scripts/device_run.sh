#!/usr/bin/env bash
# Runs nexus's checks on a lent GPU machine (no network there).
#
# Build here first: `maturin build --release -o wheelhouse` (and, for the
# side-by-side bench, the previous commit's wheel into wheelhouse/old), and
# download the test dependencies as wheels into .whl (see the device tool's
# README). Then, on the GPU machine, with wheelhouse and .whl carried:
#   bash scripts/device_run.sh tests|sanitizer|bench|drivers|all [pytest args...]
# Logs go to $OUT (or ./device-out).
#
# `drivers` runs the suite over NVIDIA's Vulkan and OpenCL devices and the
# Vulkan bench beside wgpu-py. NVIDIA's Vulkan driver needs the glvnd
# libraries beside the loader: download them once into .gl (git-ignored;
# the device tool's README has the apt-get download line: libvulkan1 libegl1
# libglvnd0 libopengl0 libgl1 libglx0 libgles2) and carry .gl too; wgpu-py
# and its dependencies go as wheels into wheelhouse/bench.
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-tests}"
shift || true
out="${OUT:-device-out}"
mkdir -p "$out"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  || { echo "installing test wheels failed"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/nexus wheelhouse/nexus-*.whl \
  || { echo "installing the nexus wheel failed"; exit 1; }
export PYTHONPATH=/tmp/nexus:/tmp/site
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$out/gpu.txt"
python3 -c "import nexus; print([(r.get_name(), len(r.get_devices())) for r in nexus.get_runtimes()])" | tee -a "$out/gpu.txt"

case "$mode" in
  tests)
    export NEXUS_MODEL_EXAMPLES="${NEXUS_MODEL_EXAMPLES:-1000}"
    export NEXUS_MODEL_REPORT="$out/model_counts.txt"
    python3 -m pytest tests -q -p no:cacheprovider -rfEs "$@" 2>&1 | tee "$out/pytest.log" | tail -40
    ;;
  sanitizer)
    # memcheck and racecheck over the CUDA-facing tests (the CPU device is
    # deselected: the sanitizer only sees GPU work). API errors are not
    # reported: nexus probes on purpose (cuPointerGetAttribute on pageable
    # memory, cuFuncGetParamInfo past the last parameter) and the tests
    # provoke driver errors. Child-process hang guards are stretched.
    export NEXUS_TEST_TIME_SCALE="${NEXUS_TEST_TIME_SCALE:-10}"
    for tool in memcheck racecheck; do
      compute-sanitizer --tool "$tool" --report-api-errors no --error-exitcode 99 --print-limit 20 \
        python3 -m pytest tests/test_cuda.py tests/test_execution_model.py tests/test_events_streams.py \
        tests/test_pipelines.py tests/test_multi_gpu.py tests/test_arrays.py \
        -q -p no:cacheprovider -k "cuda" "$@" 2>&1 | tee "$out/sanitizer-$tool.log" | tail -15
      echo "compute-sanitizer $tool exit: ${PIPESTATUS[0]}" | tee -a "$out/sanitizer.txt"
    done
    ;;
  bench)
    python3 bench/bench_cuda.py 2>&1 | tee "$out/bench_cuda.log" | tail -20
    python3 bench/bench_cuda_events.py 2>&1 | tee "$out/bench_cuda_events.log" | tail -12
    if ls wheelhouse/old/nexus-*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/nexus-old wheelhouse/old/nexus-*.whl
      echo "--- previous commit, same machine ---"
      PYTHONPATH=/tmp/nexus-old:/tmp/site python3 bench/bench_cuda.py 2>&1 | tee "$out/bench_cuda_old.log" | tail -20
    fi
    ;;
  drivers)
    for f in .gl/*.deb; do dpkg-deb -x "$f" /; done
    ldconfig
    export VK_DRIVER_FILES="${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}"
    python3 -c "import nexus; print([(r.get_name(), len(r.get_devices())) for r in nexus.get_runtimes()])" | tee -a "$out/gpu.txt"
    for rt in vulkan opencl; do
      timeout 280 python3 -m pytest tests -q -p no:cacheprovider -rfE -k "${rt}0 or ${rt}1" "$@" 2>&1 \
        | tee "$out/pytest-$rt.log" | tail -15
    done
    if ls wheelhouse/bench/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bench wheelhouse/bench/*.whl
      XDG_RUNTIME_DIR=/tmp PYTHONPATH="$PYTHONPATH:/tmp/bench" python3 bench/bench_vulkan.py 2>&1 | tee "$out/bench_vulkan.log" | tail -8
    fi
    ;;
  all)
    # One call for a whole check on a two-GPU machine (carry wheelhouse,
    # .whl and .gl): the benchmarks alone first, then the suites side by
    # side (CUDA with the model-based test, NVIDIA's Vulkan and OpenCL,
    # PoCL's thread tests, the HIP double), each with its own time limit;
    # every log goes into logs.tar.gz (the device tool returns few files).
    budget="${NEXUS_SUITE_SECONDS:-420}"
    for f in .gl/*.deb; do dpkg-deb -x "$f" /; done
    ldconfig
    export VK_DRIVER_FILES="${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}"
    python3 -c "import nexus; print([(r.get_name(), len(r.get_devices())) for r in nexus.get_runtimes()])" | tee -a "$out/gpu.txt"
    mkdir -p "$out/logs"
    python3 bench/bench_pipelines.py 2>&1 | tee "$out/logs/bench_pipelines.log"
    if ls wheelhouse/bench/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bench wheelhouse/bench/*.whl
      XDG_RUNTIME_DIR=/tmp PYTHONPATH="$PYTHONPATH:/tmp/bench" timeout 120 python3 bench/bench_vulkan.py 2>&1 | tee "$out/logs/bench_vulkan.log"
    fi
    per_test=()
    python3 -c "import pytest_timeout" 2>/dev/null && per_test=(--timeout=180)
    suite() {  # name, then pytest arguments
      local name="$1"; shift
      timeout "$budget" python3 -m pytest -q -p no:cacheprovider -rfE "${per_test[@]}" "$@" > "$out/logs/pytest-$name.log" 2>&1
      echo "$name: exit $? :: $(tail -1 "$out/logs/pytest-$name.log")" >> "$out/logs/summary.txt"
    }
    NEXUS_MODEL_EXAMPLES=1000 suite cuda tests -k "cuda" &
    suite vulkan tests -k "vulkan0" &
    suite opencl tests -k "opencl0 or opencl1" &
    suite pocl-threads tests/test_threads.py -k "opencl2" &
    OUT="$out/logs/hip" timeout "$budget" bash scripts/hip_on_cuda_check.sh "${per_test[@]}" > "$out/logs/hip.log" 2>&1 &
    wait
    echo "hip: $(tail -3 "$out/logs/hip.log" | tr '\n' ' ')" >> "$out/logs/summary.txt"
    cat "$out/logs/summary.txt"
    tar -czf "$out/logs.tar.gz" -C "$out" logs && rm -rf "$out/logs"
    ;;
  *)
    echo "unknown mode $mode (tests, sanitizer, bench, drivers, all)"
    exit 2
    ;;
esac
