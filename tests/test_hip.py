"""HIP-only tests.

Without an AMD GPU (CI, this machine) the runtime is still checked: it is
known by name, loads the HIP library when one is installed, and lists zero
devices (hipErrorNoDevice is logged, never raised); a missing library means
zero devices too. (hiprtc compiling for gfx90a without a GPU is a Rust unit
test: `cargo test -p nexus --features hip hiprtc`.)

With a HIP device (an AMD GPU, or an NVIDIA GPU through the HIP-on-CUDA test
double, tests/support/hip_on_cuda.c with NEXUS_HIP_LIBRARY pointing at it),
the device tests below run as well, and the whole suite runs on the `hip`
device with the test kernels in tests/kernels/*.hip."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import nexus
import numpy as np
import pytest
from conftest import assert_runs_overlap_on_two_streams, set_args

HIP = nexus.get_runtime("hip")
KERNELS = pathlib.Path(__file__).resolve().parent / "kernels"

SCALE_HIP = r"""
#include <hip/hip_runtime.h>
extern "C" __global__ void scale(float *x, float a, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= a;
}
"""

needs_device = pytest.mark.skipif(len(HIP.get_devices()) == 0, reason="no HIP device")


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


# ------------------------------------------------------------ no device needed


def test_the_runtime_is_known_by_name() -> None:
    assert HIP.get_name() == "hip"
    assert HIP.get_property_str("Vendor") == "AMD"
    assert len(HIP.get_devices()) >= 0


def test_a_missing_library_means_zero_devices() -> None:
    r = _run(
        "import nexus; rt = nexus.get_runtime('hip'); print(len(rt.get_devices()), rt.get_property_str('Status'))",
        NEXUS_HIP_LIBRARY="/nonexistent/libamdhip64.so",
    )
    assert r.returncode == 0, r.stderr
    count, status = r.stdout.strip().split(" ", 1)
    assert count == "0"
    assert "/nonexistent/libamdhip64.so" in status


def _installed_hip() -> str | None:
    for d in ["/usr/lib/x86_64-linux-gnu", "/opt/rocm/lib", "/usr/lib64", "/usr/lib"]:
        for name in ["libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"]:
            p = pathlib.Path(d) / name
            if p.exists():
                return str(p)
    return None


@pytest.mark.skipif(_installed_hip() is None, reason="no HIP library installed")
@pytest.mark.skipif(len(HIP.get_devices()) > 0, reason="a HIP device is present")
def test_the_real_library_loads_and_lists_no_device_without_a_gpu() -> None:
    """CI installs Debian's libamdhip64-5: it loads, initialises and reports
    no device (hipErrorNoDevice), which nexus logs and answers with zero
    devices; the runtime's properties say which HIP it found."""
    lib = _installed_hip()
    assert lib is not None
    r = _run(
        "import nexus; rt = nexus.get_runtime('hip'); print(len(rt.get_devices())); print(rt.get_property_str('Status'))",
        NEXUS_HIP_LIBRARY=lib,
    )
    assert r.returncode == 0, r.stderr
    count, status = r.stdout.strip().split("\n", 1)
    assert count == "0"
    # The library was found: the failure is HIP's own (no device), not a load error.
    assert "hipErrorNoDevice" in status, status
    assert "hip" not in [rt.get_name() for rt in nexus.get_runtimes()]


# -------------------------------------------------------------- with a device


@pytest.fixture(scope="module")
def dev() -> nexus.Device:
    return HIP.get_device(0)


@pytest.fixture(scope="module")
def scale_kernel(dev: nexus.Device) -> nexus.Kernel:
    return dev.load_library(SCALE_HIP.encode()).get_kernel("scale")


def scale_cmd(schedule: nexus.Schedule, kernel: nexus.Kernel, buf: nexus.Buffer, a: float, n: int) -> None:
    cmd = schedule.create_command(kernel)
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, a)
    cmd.set_arg(2, n, data_type=nexus.data_type.U32)
    cmd.finalize(256, n)


@needs_device
def test_device_properties(dev: nexus.Device) -> None:
    info = dev.get_info()
    assert info.get_str("Runtime") == "hip"
    assert info.get_str("Type") == "gpu"
    assert info.get_str("Architecture").startswith("gfx")
    assert info.get_int("ComputeUnits") > 0
    assert info.get_int("WarpSize") in (32, 64)
    assert info.get_int("MaxThreadsPerGroup") >= 256
    assert info.get_int(["MemorySubsystem", "MemoryTypes", 4, "Size"]) == info.get_int("MemorySize")
    assert ":" in info.get_str("PCIBusID")
    assert len(info.get_str("Name")) > 0


@needs_device
def test_stream_memory_operations_follow_the_device_and_the_switch(dev: nexus.Device) -> None:
    memops = dev.get_property_int("StreamMemoryOperations")
    assert memops in (0, 1)
    if os.environ.get("NEXUS_HIP_STREAM_MEMOPS", "").strip() == "0":
        assert memops == 0


@needs_device
def test_hip_source_through_hiprtc(dev: nexus.Device, scale_kernel: nexus.Kernel) -> None:
    lib = dev.load_library(SCALE_HIP.encode())
    assert lib.get_property_str("Type") == "hip"
    assert lib.get_property_str("CompileCache") in ("hit", "miss", "off")
    n = 1000
    buf = dev.create_buffer(np.ones(n, np.float32))
    s = dev.create_schedule()
    scale_cmd(s, scale_kernel, buf, 5.0, n)
    s.run()
    out = np.empty(n, np.float32)
    buf.copy(out)
    assert (out == 5).all()
    k = dev.load_library(str(KERNELS / "kernels.hip")).get_kernel("vadd")
    assert k.get_property_int("MaxThreadsPerGroup") >= 256


@needs_device
def test_compile_error_carries_the_log(dev: nexus.Device) -> None:
    src = b'#include <hip/hip_runtime.h>\nextern "C" __global__ void broken(float *x) { x[0] = undefined_symbol_xyz; }'
    with pytest.raises(nexus.Error) as e:
        dev.load_library(src)
    assert "undefined_symbol_xyz" in str(e.value)
    assert dev.get_property_str("Architecture") in str(e.value)
    assert e.value.status == nexus.status.NXS_CompileError


@needs_device
def test_bad_image_and_missing_kernel(dev: nexus.Device) -> None:
    with pytest.raises(nexus.Error) as e:
        dev.load_library(b"\x7fELF this is no code object")
    assert e.value.status == nexus.status.NXS_InvalidLibrary or "hipModuleLoadData" in str(e.value)
    lib = dev.load_library(SCALE_HIP.encode())
    with pytest.raises(nexus.Error) as e2:
        lib.get_kernel("nope")
    assert "nope" in str(e2.value)


@needs_device
def test_builtin_add_vectors_bounds(dev: nexus.Device) -> None:
    n = 1000
    a = np.random.default_rng(4).standard_normal(n + 24, dtype=np.float32)
    ab, bb = dev.create_buffer(a), dev.create_buffer(a)
    cb = dev.create_buffer(np.full(n + 24, -7, np.float32))
    s = dev.create_schedule()
    cmd = s.create_command(dev.get_builtin_library().get_kernel("add_vectors"))
    for i, b in enumerate([ab, bb, cb]):
        cmd.set_buffer(i, b)
    cmd.finalize(256, n)
    s.run()
    out = np.empty(n + 24, np.float32)
    cb.copy(out)
    np.testing.assert_array_equal(out[:n], 2 * a[:n])
    assert (out[n:] == -7).all()


@needs_device
def test_stream_waits_for_a_host_signal(dev: nexus.Device, scale_kernel: nexus.Kernel) -> None:
    n = 1 << 16
    buf = dev.create_buffer(np.ones(n, np.float32))
    gate, done = dev.create_event(), dev.create_event()
    s = dev.create_schedule()
    s.create_wait_command(gate, 1)
    scale_cmd(s, scale_kernel, buf, 3.0, n)
    s.create_signal_command(done, 1)
    stream = dev.create_stream()
    s.run(stream=stream, blocking=False)
    time.sleep(0.05)
    assert done.get_value() == 0
    gate.signal(1)
    done.wait(1, timeout=10)
    stream.synchronize()
    out = np.empty(n, np.float32)
    buf.copy(out)
    assert (out == 3).all()


@needs_device
def test_two_stream_pipeline_with_gpu_side_wait(dev: nexus.Device, scale_kernel: nexus.Kernel) -> None:
    n = 1 << 20
    x = np.random.default_rng(2).standard_normal(n, dtype=np.float32)
    buf = dev.create_buffer(x)
    produced, consumed = dev.create_event(), dev.create_event()
    s1, s2 = dev.create_stream(), dev.create_stream()
    producer = dev.create_schedule()
    scale_cmd(producer, scale_kernel, buf, 2.0, n)
    producer.create_signal_command(produced, 1)
    consumer = dev.create_schedule()
    consumer.create_wait_command(produced, 1)
    scale_cmd(consumer, scale_kernel, buf, 3.0, n)
    consumer.create_signal_command(consumed, 1)
    consumer.run(stream=s2, blocking=False)
    producer.run(stream=s1, blocking=False)
    consumed.wait(1, timeout=10)
    out = np.empty(n, np.float32)
    buf.copy(out)
    np.testing.assert_array_equal(out, x * np.float32(2) * np.float32(3))


@needs_device
def test_graph_replay_of_a_multi_kernel_schedule(dev: nexus.Device) -> None:
    vadd = dev.load_library(str(KERNELS / "kernels.hip")).get_kernel("vadd")
    n = 100_000
    x = dev.create_buffer(np.zeros(n, np.float32))
    ones = dev.create_buffer(np.ones(n, np.float32))
    s = dev.create_schedule()
    for _ in range(10):
        cmd = s.create_command(vadd)
        cmd.set_buffer(0, x)
        cmd.set_buffer(1, ones)
        cmd.set_buffer(2, x)
        cmd.set_arg(3, n)
        cmd.finalize(256, n)
    for _ in range(99):
        s.run(blocking=False)
    s.run()
    out = np.empty(n, np.float32)
    x.copy(out)
    assert (out == 1000).all()


@needs_device
def test_one_schedule_overlaps_itself_on_two_streams(dev: nexus.Device) -> None:
    """Launches of one HIP graph exec are ordered whatever the stream, so
    each stream gets an exec of its own: one schedule (two kernels, one
    graph) run on two streams overlaps, each run seeing the other start."""
    fill = dev.load_library(str(KERNELS / "kernels.hip")).get_kernel("fill_f32")

    def then_fill(s: nexus.Schedule, y: nexus.Buffer) -> None:
        cmd = s.create_command(fill)
        set_args(cmd, [y, 7.0, 16])
        cmd.finalize(16, 16)
    assert_runs_overlap_on_two_streams(dev, then_fill)


@needs_device
@pytest.mark.parametrize("nbytes", [1, 4097, (8 << 20) * 2 + 13])
def test_pageable_copies(dev: nexus.Device, nbytes: int) -> None:
    data = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
    buf = dev.create_buffer(data)
    out = np.zeros(nbytes, np.uint8)
    buf.copy(out)
    np.testing.assert_array_equal(out, data)


@needs_device
def test_dlpack_names_rocm_memory(dev: nexus.Device) -> None:
    buf = dev.create_buffer(np.arange(16, dtype=np.float32))
    assert buf.__dlpack_device__() == (10, dev.get_property_int("ID"))
