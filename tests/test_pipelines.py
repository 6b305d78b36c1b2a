"""Copy and fill commands ordered with kernels, and profiled schedules
(issue 14)."""

from __future__ import annotations

import nexus
import numpy as np
import pytest
from conftest import set_args

# Runtimes whose spin_fill_f32 spins on a clock (OpenCL C and WGSL have
# none: theirs is a loop of a fixed length, shorter on a fast GPU).
WALL_CLOCK_SPIN = {"cpu", "cuda", "hip"}
# Runtimes whose schedules do not take copy and fill commands yet.
NO_TRANSFER_COMMANDS: set = set()


def needs_transfers(device: nexus.Device) -> None:
    runtime = device.get_property_str("Runtime")
    if runtime in NO_TRANSFER_COMMANDS:
        s = device.create_schedule()
        s.create_fill_command(device.zeros(4), 1.0)
        with pytest.raises(nexus.Error, match="not supported"):
            s.run()
        pytest.skip(f"copy and fill commands are not implemented on {runtime} yet")


def fill_cmd(s: nexus.Schedule, kernels: nexus.Library, buf: nexus.Buffer, value: float, n: int) -> None:
    cmd = s.create_command(kernels.get_kernel("fill_f32"))
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, value)
    cmd.set_arg(2, n)
    cmd.finalize(64, n)


def test_copy_and_fill_commands_are_ordered_with_kernels(device: nexus.Device, lib_path: str) -> None:
    needs_transfers(device)
    kernels = device.load_library(lib_path)
    n = 1000
    a, b, c = device.zeros(n), device.zeros(n), device.zeros(2 * n)
    s = device.create_schedule()
    fill_cmd(s, kernels, a, 3.0, n)                       # a = 3
    s.create_copy_command(a, b)                          # b = a
    s.create_fill_command(a, 5.0)                        # a = 5 (after the copy)
    s.create_copy_command(b, c, size=n * 4, dst_offset=n * 4)  # upper half of c = b
    s.create_copy_command(a, c, size=100 * 4, src_offset=10 * 4)  # c[0:100] = a[10:110]
    for _ in range(3):
        assert s.run() == nexus.status.NXS_Success
        np.testing.assert_array_equal(a.numpy(), np.full(n, 5, np.float32))
        np.testing.assert_array_equal(b.numpy(), np.full(n, 3, np.float32))
        expect = np.zeros(2 * n, np.float32)
        expect[:100] = 5
        expect[n:] = 3
        np.testing.assert_array_equal(c.numpy(), expect)
    kinds = [cmd.get_property_str("Type") for cmd in s.get_commands()]
    assert kinds == ["kernel", "copy", "fill", "copy", "copy"]
    assert s.get_commands()[3].get_property_int("Size") == n * 4


@pytest.mark.parametrize("dtype,value", [(np.uint8, 7), (np.int16, -3), (np.int32, 123456), (np.float64, 2.5), (np.int64, -(2**40))])
def test_fill_with_values_of_every_width(device: nexus.Device, dtype, value) -> None:
    needs_transfers(device)
    buf = device.empty(37 if np.dtype(dtype).itemsize == 1 else 64, dtype)
    s = device.create_schedule()
    s.create_fill_command(buf, value)
    s.run()
    np.testing.assert_array_equal(buf.numpy(), np.full(buf.shape, value, dtype))


def test_copy_between_views_of_one_buffer(device: nexus.Device) -> None:
    needs_transfers(device)
    buf = device.create_buffer(np.arange(16, dtype=np.float32))
    s = device.create_schedule()
    s.create_copy_command(buf[0:4], buf[8:12])
    s.run()
    expect = np.arange(16, dtype=np.float32)
    expect[8:12] = expect[0:4]
    np.testing.assert_array_equal(buf.numpy(), expect)


def test_copy_and_fill_commands_check_their_arguments(device: nexus.Device) -> None:
    a, b = device.zeros(16), device.zeros(8)
    s = device.create_schedule()
    with pytest.raises(ValueError, match="out of range"):
        s.create_copy_command(a, b, size=64)
    with pytest.raises(ValueError, match="out of range"):
        s.create_copy_command(a, b, src_offset=100)
    with pytest.raises(ValueError, match="must be >= 0"):
        s.create_copy_command(a, b, dst_offset=-4)
    with pytest.raises(ValueError, match="must be >= 1 byte"):
        s.create_copy_command(a, b, size=0)
    with pytest.raises(ValueError, match="overlap"):
        s.create_copy_command(a[0:8], a[4:12])
    with pytest.raises(TypeError, match="Buffer"):
        s.create_copy_command(np.zeros(4), b)
    with pytest.raises(ValueError, match="does not fit"):
        s.create_fill_command(device.zeros(4, np.uint8), 300)
    with pytest.raises(TypeError, match="must be a number"):
        s.create_fill_command(a, "1")
    other = nexus.get_runtime("cpu").get_device(0)
    # CUDA copies reach host memory (the CPU runtime's buffers); the others
    # refuse a buffer of another device and say so.
    if other != device and device.get_property_str("Runtime") != "cuda":
        with pytest.raises(nexus.Error, match="is on device .* cannot reach that memory"):
            s.create_copy_command(other.zeros(4), b)
    assert len(s.get_commands()) == 0


def test_a_profiled_schedule_reports_elapsed_times(device: nexus.Device, lib_path: str) -> None:
    kernels = device.load_library(lib_path)
    n = 1 << 16
    buf = device.zeros(n)
    s = device.create_schedule(profile=True)
    fill_cmd(s, kernels, buf, 1.0, n)
    fill_cmd(s, kernels, buf, 2.0, n)
    assert s.get_property_int("Profile") == 1
    s.run()
    np.testing.assert_array_equal(buf.numpy(), np.full(n, 2, np.float32))
    total = s.get_property_flt("ElapsedTime")
    assert total >= 0
    runtime = device.get_property_str("Runtime")
    if runtime in ("cpu", "cuda", "hip", "vulkan", "opencl"):
        times = [c.get_property_flt("ElapsedTime") for c in s.get_commands()]
        assert all(t >= 0 for t in times)
        starts = [c.get_property_flt("StartTime") for c in s.get_commands()]
        assert starts == sorted(starts)
        assert total >= max(times)
    plain = device.create_schedule()
    fill_cmd(plain, kernels, buf, 3.0, n)
    plain.run()
    assert plain.get_property_int("Profile") == 0
    with pytest.raises(nexus.Error, match="ElapsedTime"):
        plain.get_property_flt("ElapsedTime")


def test_profiled_commands_keep_their_order(device: nexus.Device, lib_path: str) -> None:
    """Timestamps between a profiled schedule's commands (on CUDA, kernels
    linked to their stamps by programmatic edges) do not loosen the order:
    each command reads what a slow kernel before it wrote (many groups that
    spin, then write; one started early would see the fill's zeros), across
    fills and a copy, run by run on two streams. A spinning command's
    ElapsedTime covers its spin where the spin is on a clock."""
    needs_transfers(device)
    kernels = device.load_library(lib_path)
    n, spin_us = 4096, 300

    def kernel(name: str, *args) -> None:
        cmd = s.create_command(kernels.get_kernel(name))
        set_args(cmd, args)
        cmd.finalize(64, n)

    a, b = device.zeros(n), device.zeros(n)
    s = device.create_schedule(profile=True)
    s.create_fill_command(a, 0.0)
    s.create_fill_command(b, 0.0)
    kernel("spin_fill_f32", a, 1.0, n, spin_us)   # a = 1, late
    kernel("affine_f32", a, 2.0, 1.0, n)          # a = 3
    kernel("spin_fill_f32", b, 5.0, n, 50)        # b = 5
    s.create_copy_command(a, b)                   # b = 3
    kernel("affine_f32", b, 10.0, 0.0, n)         # b = 30
    streams = [device.create_stream(), device.create_stream()]
    for i in range(4):
        s.run(streams[i % 2])
        np.testing.assert_array_equal(a.numpy(), np.full(n, 3, np.float32), err_msg=f"run {i}")
        np.testing.assert_array_equal(b.numpy(), np.full(n, 30, np.float32), err_msg=f"run {i}")
        spin = s.get_commands()[2].get_property_flt("ElapsedTime")
        if device.get_property_str("Runtime") in WALL_CLOCK_SPIN:
            assert spin >= 0.9 * spin_us / 1e3, f"run {i}: the spin took {spin} ms"
        assert 0 < spin <= s.get_property_flt("ElapsedTime")
    # A profiled schedule that starts with a kernel (on CUDA, a stamp with
    # nothing before it in the graph) still follows the stream's earlier work.
    slow, then = device.create_schedule(), device.create_schedule(profile=True)
    s = slow
    kernel("spin_fill_f32", a, 1.0, n, spin_us)   # a = 1, late
    s = then
    kernel("affine_f32", a, 4.0, 1.0, n)          # a = 5
    for stream in streams:
        slow.run(stream, blocking=False)
        then.run(stream)
        np.testing.assert_array_equal(a.numpy(), np.full(n, 5, np.float32))


def test_host_buffers_take_part_in_copy_commands(device: nexus.Device) -> None:
    needs_transfers(device)
    n = 1000
    host_in = device.create_host_buffer(n, np.float32)
    assert host_in.shape == (n,) and host_in.dtype == np.float32
    host_in.write(np.arange(n, dtype=np.float32))
    on_device = device.zeros(n)
    host_out = device.create_host_buffer((10, 100))
    s = device.create_schedule()
    s.create_copy_command(host_in, on_device)        # host -> device
    s.create_copy_command(on_device, host_out)       # device -> host
    for _ in range(2):
        s.run()
        np.testing.assert_array_equal(host_out.numpy(), np.arange(n, dtype=np.float32).reshape(10, 100))
    with pytest.raises(ValueError, match="every dimension must be >= 1"):
        device.create_host_buffer(0)


def test_copy_buffer_keeps_shape_and_data_and_follows_earlier_runs(device: nexus.Device, lib_path: str) -> None:
    """copy_buffer copies on the device where it can, keeps the shape, and
    acts after earlier runs that use the source, on any stream."""
    import threading
    kernels = device.load_library(lib_path)
    n = 3 * 1024
    src = device.zeros((3, 1024))
    go = device.create_event()
    s = device.create_schedule()
    s.create_wait_command(go, 1)                 # held until the timer signals
    fill_cmd(s, kernels, src, 7.0, n)
    s.run(device.create_stream(), blocking=False)
    threading.Timer(0.3, go.signal, args=(1,)).start()
    moved = device.copy_buffer(src)              # must wait for the held fill
    assert moved.shape == (3, 1024)
    assert moved.dtype == np.float32
    np.testing.assert_array_equal(moved.numpy(), np.full((3, 1024), 7, np.float32))
    # The copy is its own memory.
    src.write(np.zeros(n, np.float32))
    np.testing.assert_array_equal(moved.numpy(), np.full((3, 1024), 7, np.float32))


def test_copy_buffer_is_not_held_by_a_waiting_default_stream(device: nexus.Device, lib_path: str) -> None:
    """A wait that holds the default stream holds that stream only:
    copy_buffer on the same device still returns."""
    import threading
    src = device.create_buffer(np.arange(256, dtype=np.float32))
    ev = device.create_event()
    held = device.create_schedule()
    held.create_wait_command(ev, 1)
    held.run(blocking=False)
    box: list = []
    t = threading.Thread(target=lambda: box.append(device.copy_buffer(src)), daemon=True)
    t.start()
    t.join(30)
    try:
        assert box, "copy_buffer did not return while the default stream waited"
        np.testing.assert_array_equal(box[0].numpy(), np.arange(256, dtype=np.float32))
    finally:
        ev.signal(1)
        done = device.create_event()
        tail = device.create_schedule()
        tail.create_signal_command(done, 1)
        tail.run(blocking=False)
        done.wait(1, timeout=30)


def test_cuda_copy_commands_reach_host_memory_of_the_cpu_runtime(device: nexus.Device) -> None:
    if device.get_property_str("Runtime") != "cuda":
        pytest.skip("CUDA copies reach host memory through unified addressing")
    cpu = nexus.get_runtime("cpu").get_device(0)
    x = np.arange(4096, dtype=np.float32)
    host_in = cpu.create_buffer(x)
    host_out = cpu.zeros(4096)
    gpu = device.zeros(4096)
    s = device.create_schedule()
    s.create_copy_command(host_in, gpu)
    s.create_copy_command(gpu, host_out, size=1024 * 4, dst_offset=100 * 4)
    assert s.run() == nexus.status.NXS_Success
    want = np.zeros(4096, np.float32)
    want[100:1124] = x[:1024]
    np.testing.assert_array_equal(host_out.numpy(), want)
    np.testing.assert_array_equal(gpu.numpy(), x)


def test_chains_of_copies_and_fills_of_every_width_run_in_order(device: nexus.Device, lib_path: str) -> None:
    """Several copies, fills and kernels in a row (on CUDA one graph of
    memcpy, memset and kernel nodes), run many times: each run sees the
    effects of the operations before it, in order."""
    needs_transfers(device)
    kernels = device.load_library(lib_path)
    n = 512
    x64 = device.zeros(n, np.int64)
    y64 = device.zeros(n, np.int64)
    x16 = device.zeros(n, np.int16)
    b8 = device.zeros(n, np.uint8)
    z64 = device.zeros(n, np.int64)
    f = device.zeros(n)
    g = device.zeros(n)
    s = device.create_schedule()
    s.create_fill_command(x64, -(2**40) + 3)        # an 8-byte pattern whose halves differ
    s.create_copy_command(x64, y64)
    s.create_fill_command(x64, 7)                   # halves differ too (7, 0)
    s.create_fill_command(x16, -2)
    s.create_fill_command(b8, 0xAB)                 # one byte
    s.create_fill_command(z64, -1)                  # eight bytes, equal halves
    fill_cmd(s, kernels, f, 1.5, n)
    s.create_copy_command(f, g, size=100 * 4)
    s.create_fill_command(f, 0.25)
    s.create_copy_command(f, g, size=50 * 4, dst_offset=200 * 4)
    for _ in range(3):
        for buf, dtype in ((x64, np.int64), (y64, np.int64), (x16, np.int16), (f, np.float32), (g, np.float32)):
            buf.write(np.full(n, -1, dtype))  # every run must write them again
        assert s.run() == nexus.status.NXS_Success
        np.testing.assert_array_equal(y64.numpy(), np.full(n, -(2**40) + 3, np.int64))
        np.testing.assert_array_equal(x64.numpy(), np.full(n, 7, np.int64))
        np.testing.assert_array_equal(x16.numpy(), np.full(n, -2, np.int16))
        np.testing.assert_array_equal(b8.numpy(), np.full(n, 0xAB, np.uint8))
        np.testing.assert_array_equal(z64.numpy(), np.full(n, -1, np.int64))
        np.testing.assert_array_equal(f.numpy(), np.full(n, 0.25, np.float32))
        want = np.full(n, -1, np.float32)
        want[:100] = 1.5
        want[200:250] = 0.25
        np.testing.assert_array_equal(g.numpy(), want)
