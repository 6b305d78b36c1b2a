"""CUDA-only tests: driver properties, module formats, GPU-side event waits,
graph replay, staged copies and zero-copy interop with torch and CuPy.
Skipped where the CUDA runtime lists no device."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time

import nexus
import numpy as np
import pytest
from conftest import assert_runs_overlap_on_two_streams

CUDA = nexus.get_runtime("cuda")
if len(CUDA.get_devices()) == 0:
    pytest.skip("no CUDA device", allow_module_level=True)

KERNELS = pathlib.Path(__file__).resolve().parent / "kernels"

# x[i] *= a for i < n (sm_50 PTX, JIT-compiled for the device).
SCALE_PTX = r"""
.version 6.0
.target sm_50
.address_size 64
.visible .entry scale(.param .u64 p0, .param .f32 p1, .param .u32 p2)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [p0];
    ld.param.f32 %f1, [p1];
    ld.param.u32 %r2, [p2];
    mov.u32 %r3, %ctaid.x;
    mov.u32 %r4, %ntid.x;
    mov.u32 %r5, %tid.x;
    mad.lo.s32 %r1, %r3, %r4, %r5;
    setp.ge.u32 %p1, %r1, %r2;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd2, %rd3;
    ld.global.f32 %f2, [%rd4];
    mul.f32 %f3, %f2, %f1;
    st.global.f32 [%rd4], %f3;
DONE:
    ret;
}
"""

SCALE_CU = r"""
extern "C" __global__ void scale(float *x, float a, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= a;
}
"""


@pytest.fixture(scope="module")
def dev() -> nexus.Device:
    return CUDA.get_device(0)


@pytest.fixture(scope="module")
def scale_kernel(dev: nexus.Device) -> nexus.Kernel:
    return dev.load_library(SCALE_PTX.encode()).get_kernel("scale")


@pytest.fixture(scope="module")
def kernels(dev: nexus.Device) -> nexus.Library:
    return dev.load_library(str(KERNELS / "kernels.cu"))


def scale_cmd(schedule: nexus.Schedule, kernel: nexus.Kernel, buf: nexus.Buffer, a: float, n: int) -> None:
    cmd = schedule.create_command(kernel)
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, a)
    cmd.set_arg(2, n, data_type=nexus.data_type.U32)
    cmd.finalize(256, n)


def nvcc() -> str | None:
    return shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if os.path.exists(p)), None)


# ------------------------------------------------------------------ devices


def test_device_properties(dev: nexus.Device) -> None:
    info = dev.get_info()
    assert info.get_str("Vendor") == "NVIDIA"
    assert info.get_str("Type") == "gpu"
    arch = info.get_str("Architecture")
    major, minor = info.get_str("ComputeCapability").split(".")
    assert arch == f"sm_{major}{minor}"
    l2 = info.get_int("L2Size")
    assert l2 > 0
    assert info.get_int(["MemorySubsystem", "MemoryTypes", 1, "Size"]) == l2
    assert info.get_str(["MemorySubsystem", "MemoryTypes", 0, "Type"]) == "L1"
    assert info.get_int(["MemorySubsystem", "MemoryTypes", 4, "Size"]) == info.get_int("MemorySize")
    assert info.get_int("ComputeUnits") > 0
    assert info.get_int("WarpSize") == 32
    assert info.get_int("MaxThreadsPerGroup") >= 1024
    assert info.get_int("MaxGroupMemory") >= 48 * 1024
    assert info.get_int("ClockMHz") > 0
    assert info.get_str("UUID").startswith("GPU-")
    assert ":" in info.get_str("PCIBusID")
    assert len(info.get_str("Name")) > 0
    assert nexus.get_runtimes()[0].get_name() == "cuda"
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        assert info.get_int("ComputeUnits") == p.multi_processor_count
        assert info.get_int("MemorySize") == p.total_memory


# ---------------------------------------------------------------- libraries


def test_ptx_bytes_and_file(dev: nexus.Device, scale_kernel: nexus.Kernel, tmp_path: pathlib.Path) -> None:
    n = 10007
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    buf = dev.create_buffer(x)
    s = dev.create_schedule()
    scale_cmd(s, scale_kernel, buf, 3.0, n)
    s.run()
    out = np.empty_like(x)
    buf.copy(out)
    np.testing.assert_array_equal(out, x * np.float32(3.0))
    p = tmp_path / "scale.ptx"
    p.write_text(SCALE_PTX)
    lib = dev.load_library(str(p))
    assert lib.get_property_str("Type") == "ptx"
    assert lib.get_kernel("scale").get_property_int("Registers") > 0


def test_cuda_source_through_nvrtc(dev: nexus.Device, kernels: nexus.Library) -> None:
    k = kernels.get_kernel("vadd")
    assert k.get_property_int("Registers") > 0
    assert k.get_property_int("MaxThreadsPerGroup") >= 256
    lib = dev.load_library(SCALE_CU.encode())
    assert lib.get_property_str("Type") == "cuda"
    n = 1000
    buf = dev.create_buffer(np.ones(n, np.float32))
    s = dev.create_schedule()
    scale_cmd(s, lib.get_kernel("scale"), buf, 5.0, n)
    s.run()
    out = np.empty(n, np.float32)
    buf.copy(out)
    assert (out == 5).all()


def test_compile_error_carries_the_log(dev: nexus.Device) -> None:
    src = b'extern "C" __global__ void broken(float *x) { x[0] = undefined_symbol_xyz; }'
    with pytest.raises(nexus.Error) as e:
        dev.load_library(src)
    assert "undefined_symbol_xyz" in str(e.value)
    assert e.value.status == nexus.status.NXS_CompileError


def test_bad_ptx_and_missing_kernel(dev: nexus.Device, scale_kernel: nexus.Kernel) -> None:
    with pytest.raises(nexus.Error):
        dev.load_library(b".version 6.0\n.target sm_50\n.address_size 64\n.visible .entry f( { ret; }")
    lib = dev.load_library(SCALE_PTX.encode())
    with pytest.raises(nexus.Error) as e:
        lib.get_kernel("nope")
    assert "nope" in str(e.value)


def test_kernel_parameters_are_checked(dev: nexus.Device, kernels: nexus.Library, scale_kernel: nexus.Kernel) -> None:
    """Where the driver reports parameters (12.4+), a command that sets too few
    arguments, or a buffer where the kernel takes a 32-bit value, is refused
    before it can make the kernel read garbage pointers."""
    vadd = kernels.get_kernel("vadd")
    try:
        count = vadd.get_property_int("ArgumentCount")
    except nexus.Error:
        pytest.skip("this driver does not report kernel parameters")
    assert count == 4
    assert scale_kernel.get_property_int("ArgumentCount") == 3
    buf = dev.create_buffer(np.zeros(8, np.float32))
    s = dev.create_schedule()
    cmd = s.create_command(vadd)
    for i in range(3):
        cmd.set_buffer(i, buf)
    cmd.finalize(8, 8)
    with pytest.raises(ValueError, match="kernel 'vadd' takes 4 arguments, the command sets 3"):
        s.run()
    cmd.set_buffer(3, buf)  # `int n` given a device pointer
    with pytest.raises(ValueError, match="kernel 'vadd' argument 3 is a buffer .* parameter 3 is 4 bytes"):
        s.run()
    cmd.set_arg(3, 8)
    s.run()
    out = np.empty(8, np.float32)
    buf.copy(out)
    assert (out == 0).all()


def test_cubin_and_fatbin(dev: nexus.Device, tmp_path: pathlib.Path) -> None:
    cc = nvcc()
    if cc is None:
        pytest.skip("nvcc not found")
    arch = dev.get_info().get_str("Architecture")
    src = tmp_path / "scale.cu"
    src.write_text(SCALE_CU)
    for kind in ["cubin", "fatbin"]:
        out = tmp_path / f"scale.{kind}"
        subprocess.run([cc, f"-{kind}", f"-arch={arch}", "-o", str(out), str(src)], check=True)
        for source in [str(out), out.read_bytes()]:
            lib = dev.load_library(source)
            assert lib.get_property_str("Type") == kind
            n = 333
            buf = dev.create_buffer(np.full(n, 2, np.float32))
            s = dev.create_schedule()
            scale_cmd(s, lib.get_kernel("scale"), buf, 4.0, n)
            s.run()
            got = np.empty(n, np.float32)
            buf.copy(got)
            assert (got == 8).all()


# ------------------------------------------------------------ spec examples


def test_spec_example_usage_with_a_cuda_kernel() -> None:
    """The spec's example unchanged: get_runtimes()[0] is CUDA here. (Both spec
    snippets also run on every device in test_spec_examples.py.)"""
    runtimes = nexus.get_runtimes()
    runtime = runtimes[0]
    devices = runtime.get_devices()
    device = devices[0]
    data = np.ones(1024, dtype=np.float32)
    buf = device.create_buffer(data)
    lib = device.load_library(str(KERNELS / "spec_kernel.cu"))
    kernel = lib.get_kernel("add_vectors")
    schedule = device.create_schedule()
    command = schedule.create_command(kernel)
    command.set_buffer(0, buf)
    command.finalize(32, 1024)
    schedule.run()
    out = np.zeros(1024, np.float32)
    buf.copy(out)
    assert (out == 2).all()


# ------------------------------------------------------- streams and events


def test_host_event_signal_wait_and_timeout(dev: nexus.Device) -> None:
    for t in [nexus.event_type.Shared, nexus.event_type.Signal, nexus.event_type.Fence]:
        e = dev.create_event(t)
        assert e.get_value() == 0
        e.signal(7)
        assert e.wait(7) == nexus.status.NXS_Success
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError):
            e.wait(8, timeout=0.05)
        assert time.perf_counter() - t0 < 2


def test_events_use_stream_memory_operations(dev: nexus.Device) -> None:
    # Every GPU nexus targets (sm_70+, driver 12+) has them; without them
    # signals fall back to host functions, which is correct but slow.
    assert dev.get_property_int("StreamMemoryOperations") == 1


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
    assert done.get_value() == 0  # held back by the wait (on the host: nothing queued signals it)
    gate.signal(1)
    done.wait(1, timeout=10)
    stream.synchronize()
    out = np.empty(n, np.float32)
    buf.copy(out)
    assert (out == 3).all()


def test_two_stream_pipeline_with_gpu_side_wait(dev: nexus.Device, scale_kernel: nexus.Kernel, kernels: nexus.Library) -> None:
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
    consumer.run(stream=s2, blocking=False)  # queued first; waits on the GPU
    producer.run(stream=s1, blocking=False)
    consumed.wait(1, timeout=10)
    out = np.empty(n, np.float32)
    buf.copy(out)
    np.testing.assert_array_equal(out, x * np.float32(2) * np.float32(3))


def test_cpu_event_in_a_cuda_schedule(dev: nexus.Device, scale_kernel: nexus.Kernel) -> None:
    cpu = nexus.get_runtime("cpu").get_device(0)
    ev = cpu.create_event()
    n = 4096
    buf = dev.create_buffer(np.ones(n, np.float32))
    s = dev.create_schedule()
    scale_cmd(s, scale_kernel, buf, 2.0, n)
    s.create_signal_command(ev, 5)
    s.run(blocking=False)
    ev.wait(5, timeout=10)
    out = np.empty(n, np.float32)
    buf.copy(out)
    assert (out == 2).all()


def test_graph_replay_of_a_multi_kernel_schedule(dev: nexus.Device, kernels: nexus.Library) -> None:
    n = 100_000
    x = dev.create_buffer(np.zeros(n, np.float32))
    ones = dev.create_buffer(np.ones(n, np.float32))
    vadd = kernels.get_kernel("vadd")
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
    assert s.get_property_int("Runs") == 100


def test_one_schedule_overlaps_itself_on_two_streams(dev: nexus.Device) -> None:
    """The driver orders every launch of one CUDA graph exec after the one
    before, whatever the stream: each stream must get an exec of its own,
    or one schedule run on two streams could not overlap. Here each run
    waits on the device for the other one to start, so both report seeing
    the other only when they ran at the same time."""
    # A kernel and a fill: one CUDA graph.
    assert_runs_overlap_on_two_streams(dev, lambda s, y: s.create_fill_command(y, 7.0))


@pytest.mark.parametrize("runs", [1, 3])
def test_profiled_schedule_times_every_kind_of_step(dev: nexus.Device, scale_kernel: nexus.Kernel, runs: int) -> None:
    """Device timestamps around a lone kernel (sent directly on its first
    run on a stream, from its graph after), a graph of a fill and two
    kernels, a copy to a pinned host buffer (a step of its own) and a
    signal: every command gets a start and an end, in command order."""
    n = 4096
    x = dev.create_buffer(np.ones(n, np.float32))
    host = dev.create_host_buffer(n, np.float32)
    event = dev.create_event()
    s = dev.create_schedule(profile=True)
    scale_cmd(s, scale_kernel, x, 2.0, n)
    s.create_signal_command(event, 1)
    s.create_fill_command(x, 1.0)
    scale_cmd(s, scale_kernel, x, 3.0, n)
    scale_cmd(s, scale_kernel, x, 5.0, n)
    s.create_copy_command(x, host)
    s.create_signal_command(event, 2)
    streams = [dev.create_stream(), dev.create_stream()]
    for i in range(runs):
        time.sleep(0.05)  # the times below must be one run's, not span runs
        s.run(streams[i % 2])
    assert event.get_value() == 2
    np.testing.assert_array_equal(host.numpy(), np.full(n, 15, np.float32))
    starts = [c.get_property_flt("StartTime") for c in s.get_commands()]
    ends = [c.get_property_flt("EndTime") for c in s.get_commands()]
    assert starts[0] == 0
    assert starts == sorted(starts)
    assert all(e >= st for st, e in zip(starts, ends))
    assert all(nxt >= e for e, nxt in zip(ends, starts[1:]))
    assert 0 < s.get_property_flt("ElapsedTime") < 50


def test_builtin_add_vectors_bounds(dev: nexus.Device) -> None:
    n = 1000  # not a multiple of the group size: the tail must be untouched
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


# -------------------------------------------------------------------- copies


@pytest.mark.parametrize("nbytes", [1, 4097, (8 << 20) * 2 + 13, 64 << 20])
def test_pageable_copies(dev: nexus.Device, nbytes: int) -> None:
    data = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
    buf = dev.create_buffer(data)
    out = np.zeros(nbytes, np.uint8)
    buf.copy(out)
    np.testing.assert_array_equal(out, data)
    data2 = data[::-1].copy()
    buf.write(data2)
    buf.copy(out)
    np.testing.assert_array_equal(out, data2)


def test_pinned_copies(dev: nexus.Device) -> None:
    torch = pytest.importorskip("torch")
    n = 16 << 20
    src = torch.randint(0, 255, (n,), dtype=torch.uint8).pin_memory()
    dst = torch.zeros(n, dtype=torch.uint8).pin_memory()
    buf = dev.create_buffer(src.numpy())
    buf.copy(dst.numpy())
    assert torch.equal(src, dst)


# ------------------------------------------------------------------- interop


def test_torch_interop_both_ways(dev: nexus.Device, scale_kernel: nexus.Kernel) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    n = 5000
    t = torch.arange(n, dtype=torch.float32, device="cuda")
    torch.cuda.synchronize()
    buf = dev.create_buffer(t)  # wraps, no copy
    assert buf.get_property_int("Size") == n * 4
    s = dev.create_schedule()
    scale_cmd(s, scale_kernel, buf, 2.0, n)
    s.run()
    assert torch.equal(t, 2 * torch.arange(n, dtype=torch.float32, device="cuda"))
    # nexus -> torch, both protocols, same memory
    nb = dev.create_buffer(np.arange(n, dtype=np.float32))
    t2 = torch.as_tensor(nb, device="cuda")
    assert t2.data_ptr() == nb.__cuda_array_interface__["data"][0]
    assert torch.equal(t2.cpu(), torch.arange(n, dtype=torch.float32))
    t3 = torch.from_dlpack(nb)
    assert t3.data_ptr() == t2.data_ptr() and t3.dtype == torch.float32
    t3 += 1
    torch.cuda.synchronize()
    out = np.empty(n, np.float32)
    nb.copy(out)
    np.testing.assert_array_equal(out, np.arange(n, dtype=np.float32) + 1)
    # a CUDA tensor into a host (CPU) buffer is copied
    hb = nexus.create_buffer(t)
    out2 = np.empty(n, np.float32)
    hb.copy(out2)
    np.testing.assert_array_equal(out2, 2 * np.arange(n, dtype=np.float32))
    # the wrapped tensor stays alive as long as the buffer
    w = dev.create_buffer(torch.ones(n, device="cuda"))
    torch.cuda.synchronize()
    import gc

    gc.collect()
    out3 = np.empty(n, np.float32)
    w.copy(out3)
    assert (out3 == 1).all()


def test_cupy_interop_both_ways(dev: nexus.Device, scale_kernel: nexus.Kernel) -> None:
    cp = pytest.importorskip("cupy")
    n = 3000
    a = cp.arange(n, dtype=cp.float32)
    cp.cuda.Device().synchronize()
    buf = dev.create_buffer(a)
    s = dev.create_schedule()
    scale_cmd(s, scale_kernel, buf, 4.0, n)
    s.run()
    assert bool((a == 4 * cp.arange(n, dtype=cp.float32)).all())
    nb = dev.create_buffer(np.arange(n, dtype=np.int64))
    c1 = cp.asarray(nb)
    assert c1.dtype == cp.int64 and c1.data.ptr == nb.__cuda_array_interface__["data"][0]
    c2 = cp.from_dlpack(nb)
    assert int(c2.sum()) == n * (n - 1) // 2
    cpu_buf = nexus.create_buffer(np.arange(10, dtype=np.float64))
    np.testing.assert_array_equal(np.from_dlpack(cpu_buf), np.arange(10, dtype=np.float64))


class _DLPackOnly:
    """Exposes an array through DLPack alone (no __cuda_array_interface__)."""

    def __init__(self, array) -> None:
        self.array = array

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__() if stream is None else self.array.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def test_dlpack_import_wraps_without_a_copy(dev: nexus.Device, scale_kernel: nexus.Kernel) -> None:
    cp = pytest.importorskip("cupy")
    n = 5000
    a = cp.arange(n, dtype=cp.float32)
    buf = dev.create_buffer(_DLPackOnly(a))
    assert buf.get_property_int("Size") == 4 * n
    s = dev.create_schedule()
    scale_cmd(s, scale_kernel, buf, 2.0, n)
    s.run()
    expect = 2 * np.arange(n, dtype=np.float32)
    np.testing.assert_array_equal(cp.asnumpy(a), expect)  # same memory
    del a  # the buffer keeps the DLPack tensor, and so the memory, alive
    import gc

    gc.collect()
    out = np.empty(n, np.float32)
    buf.copy(out)
    np.testing.assert_array_equal(out, expect)
    # A CUDA tensor given to the CPU device is copied over.
    host = nexus.get_runtime("cpu").get_device(0).create_buffer(_DLPackOnly(cp.ones(7, dtype=cp.int32)))
    got = np.empty(7, np.int32)
    host.copy(got)
    assert (got == 1).all()
    # Non-contiguous views are refused by name.
    with pytest.raises(ValueError, match="C-contiguous"):
        dev.create_buffer(_DLPackOnly(cp.arange(20, dtype=cp.float32)[::2]))


def test_two_gpus_share_events_and_buffers(scale_kernel: nexus.Kernel) -> None:
    """GPU 1 waits (on the GPU) for a signal GPU 0's stream queues, and
    buffers copy between the two."""
    if len(CUDA.get_devices()) < 2:
        pytest.skip("needs two CUDA devices")
    g0, g1 = CUDA.get_device(0), CUDA.get_device(1)
    n = 4096
    x = np.arange(n, dtype=np.float32)
    b0, b1 = g0.create_buffer(x), g1.create_buffer(x)
    ready, done = g0.create_event(), g1.create_event()
    k1 = g1.load_library(SCALE_PTX.encode()).get_kernel("scale")
    consumer = g1.create_schedule()
    consumer.create_wait_command(ready, 1)
    scale_cmd(consumer, k1, b1, 3.0, n)
    consumer.create_signal_command(done, 1)
    producer = g0.create_schedule()
    scale_cmd(producer, scale_kernel, b0, 2.0, n)
    producer.create_signal_command(ready, 1)
    consumer.run(g1.create_stream(), blocking=False)  # queued first: held until the signal is queued
    producer.run(g0.create_stream(), blocking=False)
    done.wait(1, timeout=30)
    out = np.empty(n, np.float32)
    b1.copy(out)
    np.testing.assert_array_equal(out, 3 * x)
    moved = g1.copy_buffer(b0)
    moved.copy(out)
    np.testing.assert_array_equal(out, 2 * x)
