"""What is specific to the OpenCL runtime: program sources, SPIR-V and
binaries, build errors with their log, argument checks from
clGetKernelArgInfo, the program-binary cache, host-pointer buffers, and no
devices without a loader. The rest of the suite runs on OpenCL devices
through the `device` fixture like on every runtime."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import nexus
import numpy as np
import pytest
from conftest import devices_of, run_kernel

KERNELS = pathlib.Path(__file__).resolve().parent / "kernels"


ocl = devices_of("opencl")


@pytest.fixture
def cache_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    d = tmp_path / "clcache"
    monkeypatch.setenv("NEXUS_OPENCL_CACHE", str(d))
    return d


SCALE = b"""
__kernel void scale(__global float *x, float a, int n) {
    int i = get_global_id(0);
    if (i < n) x[i] = a * x[i];
}
"""


def run_scale(device: nexus.Device, lib: nexus.Library, n: int = 1000, a: float = 3.0) -> np.ndarray:
    x = np.arange(n, dtype=np.float32)
    buf = device.create_buffer(x)
    s = device.create_schedule()
    cmd = s.create_command(lib.get_kernel("scale"))
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, a)
    cmd.set_arg(2, n)
    cmd.finalize(64, n)
    s.run()
    out = np.empty(n, np.float32)
    buf.copy(out)
    np.testing.assert_array_equal(out, a * x)
    return out


def test_device_properties(ocl: nexus.Device) -> None:
    info = ocl.get_info()
    assert info.get_str("Runtime") == "opencl"
    assert info.get_str("Type") in ("cpu", "gpu")
    for key in ("Name", "Vendor", "Version", "DriverVersion", "Platform"):
        assert info.get_str(key)
    assert info.get_int("ComputeUnits") >= 1
    assert info.get_int("MaxThreadsPerGroup") >= 1
    assert ocl.get_property_int("MemorySize") > 0
    assert ocl.get_property_str(["MemorySubsystem", "MemoryTypes", 0, "Type"]) == "L1"
    assert isinstance(info.get_str_vec("Extensions"), list)


def test_source_as_bytes_and_as_a_string(ocl: nexus.Device) -> None:
    run_scale(ocl, ocl.load_library(SCALE))
    lib = ocl.load_library(SCALE.decode())  # a str of OpenCL C, as PyOpenCL's Program takes
    assert lib.get_property_str("Type") == "source"
    run_scale(ocl, lib, a=0.5)
    assert lib.get_property_str_vec("Kernels") == ["scale"]


def test_build_error_carries_the_log(ocl: nexus.Device, cache_dir: pathlib.Path) -> None:
    with pytest.raises(nexus.Error) as e:
        ocl.load_library(b"__kernel void broken(__global float *x) { x[0] = no_such_name; }")
    assert e.value.status == nexus.status.NXS_CompileError
    assert "no_such_name" in str(e.value)  # the build log
    assert "opencl:" in str(e.value)


def test_spirv_is_loaded_or_refused_clearly(ocl: nexus.Device) -> None:
    # A SPIR-V header and nothing else: not a valid module anywhere.
    module = np.array([0x07230203, 0x00010000, 0, 1, 0], dtype="<u4").tobytes()
    with pytest.raises(nexus.Error, match="SPIR-V") as e:
        ocl.load_library(module)
    if not ocl.get_property_str("ILVersion"):
        assert e.value.status == nexus.status.NXS_NotSupported
        assert "does not take" in str(e.value)


def test_binary_from_the_cache_loads(ocl: nexus.Device, cache_dir: pathlib.Path) -> None:
    assert ocl.load_library(SCALE).get_property_str("Cache") == "miss"
    binaries = list(cache_dir.glob("*.bin"))
    assert len(binaries) == 1
    lib = ocl.load_library(binaries[0].read_bytes())
    assert lib.get_property_str("Type") == "binary"
    kernel = lib.get_kernel("scale")
    assert kernel.get_property_int("ArgumentCount") == 3
    run_scale(ocl, lib)
    with pytest.raises(nexus.Error, match="not OpenCL C source, SPIR-V or a program binary"):
        ocl.load_library(b"\x7fELF\x02\x01\x01" + b"\x00" * 200)


def test_cache_hit_on_second_load(ocl: nexus.Device, cache_dir: pathlib.Path) -> None:
    first = ocl.load_library(SCALE)
    assert first.get_property_str("Cache") == "miss"
    assert len(list(cache_dir.glob("*.bin"))) == 1 and len(list(cache_dir.glob("*.json"))) == 1
    second = ocl.load_library(SCALE)
    assert second.get_property_str("Cache") == "hit"
    # Argument info survives the cache (a binary alone does not carry it).
    assert second.get_kernel("scale").get_property_int("ArgumentCount") == 3
    run_scale(ocl, second)
    other = ocl.load_library(SCALE.replace(b"a * x[i]", b"x[i] * a"))
    assert other.get_property_str("Cache") == "miss"


def test_unwritable_cache_never_fails(ocl: nexus.Device, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("NEXUS_OPENCL_CACHE", str(blocker / "sub"))
    run_scale(ocl, ocl.load_library(SCALE))
    monkeypatch.setenv("NEXUS_OPENCL_CACHE", "0")
    assert ocl.load_library(SCALE).get_property_str("Cache") == "off"


def test_arguments_are_checked_against_the_kernel(ocl: nexus.Device) -> None:
    lib = ocl.load_library(str(KERNELS / "kernels.cl"))
    vadd = lib.get_kernel("vadd")
    assert vadd.get_property_int("ArgumentCount") == 4
    # __local pointers and nxs_shared_memory_size are bound by nexus.
    assert lib.get_kernel("shared_fill").get_property_int("ArgumentCount") == 2
    assert lib.get_kernel("group_sum").get_property_int("ArgumentCount") == 3
    n = 64
    a = ocl.create_buffer(np.ones(n, np.float32))

    def run(*args) -> None:
        run_kernel(ocl, vadd, args, 64, n)

    with pytest.raises(ValueError, match=r"vadd.*argument 3.*8 bytes.*4 bytes"):
        run(a, a, a, (n, nexus.data_type.I64))
    with pytest.raises(ValueError, match="vadd"):
        run(a, a, a, a)  # a buffer for the int
    with pytest.raises(ValueError, match=r"kernel 'vadd' argument 0 is a int64 scalar, but its parameter 0 is 'a'"):
        run((1, nexus.data_type.I64), a, a, n)  # 8 bytes where a buffer goes: sizes match, kinds do not
    with pytest.raises(ValueError, match="takes 4 arguments, the command sets 3"):
        run(a, a, a)
    run(a, a, a, n)
    out = np.empty(n, np.float32)
    a.copy(out)
    np.testing.assert_array_equal(out, np.full(n, 2, np.float32))


def test_group_size_over_the_kernel_limit_is_refused(ocl: nexus.Device) -> None:
    lib = ocl.load_library(SCALE)
    limit = lib.get_kernel("scale").get_property_int("MaxThreadsPerGroup")
    buf = ocl.create_buffer(np.zeros(16, np.float32))
    s = ocl.create_schedule()
    cmd = s.create_command(lib.get_kernel("scale"))
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, 1.0)
    cmd.set_arg(2, 16)
    cmd.finalize(limit + 1, limit + 1)
    with pytest.raises(ValueError, match="exceeds its limit"):
        s.run()


def test_signal_and_wait_across_two_streams(ocl: nexus.Device) -> None:
    lib = ocl.load_library(str(KERNELS / "kernels.cl"))
    n = 4096
    buf = ocl.create_buffer(np.zeros(n, np.float32))
    a_stream, b_stream = ocl.create_stream(), ocl.create_stream()
    ready, done = ocl.create_event(), ocl.create_event()
    consumer = ocl.create_schedule()
    consumer.create_wait_command(ready, 2)
    cmd = consumer.create_command(lib.get_kernel("affine_f32"))  # x = 2x + 1 after the producer's fill
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, 2.0)
    cmd.set_arg(2, 1.0)
    cmd.set_arg(3, n)
    cmd.finalize(256, n)
    consumer.create_signal_command(done, 1)
    producer = ocl.create_schedule()
    cmd = producer.create_command(lib.get_kernel("fill_f32"))
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, 5.0)
    cmd.set_arg(2, n)
    cmd.finalize(256, n)
    producer.create_signal_command(ready, 2)
    consumer.run(b_stream, blocking=False)
    with pytest.raises(TimeoutError):
        done.wait(1, timeout=0.2)
    producer.run(a_stream, blocking=False)
    done.wait(1, timeout=30)
    assert ready.get_value() == 2
    out = np.empty(n, np.float32)
    buf.copy(out)
    np.testing.assert_array_equal(out, np.full(n, 11, np.float32))


def test_host_pointer_buffers_on_cpu_devices(ocl: nexus.Device) -> None:
    ocl.create_buffer(16)  # the context (and what it allows) is made on first use
    if ocl.get_property_str("Type") != "cpu" or ocl.get_property_int("HostPointerBuffers") != 1:
        pytest.skip("buffers are host memory only on CPU devices that use it in place")
    lib = ocl.load_library(str(KERNELS / "kernels.cl"))
    n = 1024
    buf = ocl.create_buffer(np.zeros(n, np.float32))
    assert buf.__dlpack_device__() == (1, 0)
    view = np.from_dlpack(buf)  # the buffer's memory, in place
    s = ocl.create_schedule()
    cmd = s.create_command(lib.get_kernel("fill_f32"))
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, 7.0)
    cmd.set_arg(2, n)
    cmd.finalize(128, n)
    s.run()
    np.testing.assert_array_equal(view, np.full(n, 7, np.float32))
    buf.write(np.full(n, 3, np.float32))  # host writes land in the same memory
    np.testing.assert_array_equal(view, np.full(n, 3, np.float32))
    s.run()
    np.testing.assert_array_equal(view, np.full(n, 7, np.float32))


def test_no_loader_means_zero_devices() -> None:
    code = (
        "import nexus\n"
        "r = nexus.get_runtime('opencl')\n"
        "print(len(r.get_devices()), 'opencl' in [x.get_name() for x in nexus.get_runtimes()])\n"
        "print(r.get_property_str('Status'))\n"
    )
    env = {**os.environ, "NEXUS_OPENCL_LIBRARY": "/nonexistent/libOpenCL.so.1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "0 False", proc.stdout
    assert "/nonexistent" in lines[1]


def test_listing_leaves_ocl_icd_filenames_intact_for_child_processes() -> None:
    """The ICD loader CUDA ships (libOpenCL.so.1 under /usr/local/cuda) splits
    OCL_ICD_FILENAMES in place, in the environment itself: after listing,
    child processes saw only the first ICD (NVIDIA's OpenCL vanished from
    them). nexus puts the value back. The variable names two ICDs, one
    missing; Debian's ocl-icd leaves it alone, the lent GPU machine's did not."""
    if not nexus.get_runtime("opencl").get_devices():
        pytest.skip("no OpenCL loader and ICD")
    code = (
        "import ctypes, subprocess, sys, nexus\n"
        "libc = ctypes.CDLL(None); libc.getenv.restype = ctypes.c_char_p\n"
        "nexus.get_runtime('opencl').get_devices()\n"
        "print(libc.getenv(b'OCL_ICD_FILENAMES').decode())\n"
        "print(subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"OCL_ICD_FILENAMES\"])'],"
        " capture_output=True, text=True).stdout.strip())\n"
    )
    value = "libpocl.so.2:/nonexistent/libOpenCL-vendor.so"
    env = {**os.environ, "OCL_ICD_FILENAMES": value}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [value, value], proc.stdout


def test_views_bind_sub_buffers(ocl: nexus.Device) -> None:
    lib = ocl.load_library(str(KERNELS / "kernels.cl"))
    n = 1024
    buf = ocl.create_buffer(np.zeros(n, np.float32))

    def fill(target: nexus.Buffer, count: int) -> None:
        s = ocl.create_schedule()
        cmd = s.create_command(lib.get_kernel("fill_f32"))
        cmd.set_buffer(0, target)
        cmd.set_arg(1, 4.0)
        cmd.set_arg(2, count)
        cmd.finalize(64, count)
        s.run()

    fill(buf[256:512], 256)  # byte 1024: a multiple of every device's base alignment
    out = np.empty(n, np.float32)
    buf.copy(out)
    want = np.zeros(n, np.float32)
    want[256:512] = 4
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="sub-buffers start at multiples of"):
        fill(buf[1:5], 4)


def test_a_stream_turns_to_profiling_in_stream_order(ocl: nexus.Device) -> None:
    """A stream's first profiled run moves it to a driver queue with
    profiling. Runs keep stream order across the move: a plain run held
    behind a wait on the old queue, then a profiled run (moving the
    stream); a plain run held on the new queue, then another profiled run.
    Each profiled fill must come second (any other order leaves 1 or 3)."""
    a, b = (ocl.create_buffer(np.zeros(4096, np.float32)) for _ in range(2))
    first, second, marks = ocl.create_event(), ocl.create_event(), ocl.create_event()

    def held_fill(event: nexus.Event, buf: nexus.Buffer, value: float) -> nexus.Schedule:
        s = ocl.create_schedule()
        s.create_wait_command(event, 1)
        s.create_fill_command(buf, value)
        return s

    def profiled_fill(buf: nexus.Buffer) -> nexus.Schedule:
        s = ocl.create_schedule(profile=True)
        s.create_fill_command(buf, 2.0)  # a device command first
        s.create_signal_command(marks, 1)
        return s

    stream = ocl.create_stream()
    held_fill(first, a, 1.0).run(stream, blocking=False)  # on the plain queue
    pa = profiled_fill(a)
    pa.run(stream, blocking=False)  # moves the stream
    held_fill(second, b, 3.0).run(stream, blocking=False)  # on the new queue
    profiled_fill(b).run(stream, blocking=False)
    first.signal(1)
    second.signal(1)
    stream.synchronize()
    np.testing.assert_array_equal(a.numpy(), np.full(4096, 2, np.float32))
    np.testing.assert_array_equal(b.numpy(), np.full(4096, 2, np.float32))
    assert marks.get_value() == 1
    assert pa.get_commands()[0].get_property_flt("ElapsedTime") >= 0


def test_profiled_schedule_reports_device_times(ocl: nexus.Device) -> None:
    """Profiled schedules read each command's start and end from its event
    (their stream's queue turns to CL_QUEUE_PROFILING_ENABLE): times are
    ordered, and a large fill takes longer than a tiny one."""
    lib = ocl.load_library(str(KERNELS / "kernels.cl"))
    small, big = ocl.zeros(64), ocl.zeros(1 << 22)
    ev = ocl.create_event()
    s = ocl.create_schedule(profile=True)
    for buf, n in ((small, 64), (big, 1 << 22)):
        cmd = s.create_command(lib.get_kernel("fill_f32"))
        cmd.set_buffer(0, buf)
        cmd.set_arg(1, 1.0)
        cmd.set_arg(2, n)
        cmd.finalize(64, n)
    s.create_signal_command(ev, 1)
    s.create_copy_command(big, small, size=64 * 4)
    for _ in range(3):
        s.run()
    cmds = s.get_commands()
    starts = [c.get_property_flt("StartTime") for c in cmds]
    times = [c.get_property_flt("ElapsedTime") for c in cmds]
    assert starts == sorted(starts)
    assert all(t >= 0 for t in times)
    assert times[1] > times[0]
    assert times[2] == 0  # the signal runs on the host, between commands
    assert s.get_property_flt("ElapsedTime") >= times[1]
    assert ev.get_value() == 1
