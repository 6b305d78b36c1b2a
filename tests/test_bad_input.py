"""Bad input raises a clear exception naming the object and the value."""

from __future__ import annotations

import pathlib

import nexus
import numpy as np
import pytest


def test_unknown_property_name_enum_and_path(device: nexus.Device) -> None:
    with pytest.raises(nexus.Error, match="NoSuchName"):
        device.get_property_str("NoSuchName")
    with pytest.raises(nexus.Error, match="unknown property enum value 9999"):
        device.get_property_str(9999)
    with pytest.raises(nexus.Error, match=r"\[\"MemorySubsystem\", 42\]"):
        device.get_property_int(["MemorySubsystem", 42])
    with pytest.raises(ValueError, match="empty"):
        device.get_property_int([])
    with pytest.raises(TypeError):
        device.get_property_int(["MemorySubsystem", 1.5])
    with pytest.raises(TypeError):
        device.get_property_int(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1, -(2**40), 2**60])
def test_bad_buffer_sizes(device: nexus.Device, size: int) -> None:
    with pytest.raises(ValueError, match=f"buffer size {size}"):
        device.create_buffer(size)


def test_huge_size_beyond_int64(device: nexus.Device) -> None:
    with pytest.raises(ValueError, match="out of range"):
        device.create_buffer(2**70)


@pytest.mark.parametrize("bad", [1.5, "16", None, True])
def test_buffer_from_wrong_type(device: nexus.Device, bad) -> None:
    with pytest.raises(TypeError):
        device.create_buffer(bad)


def test_buffer_from_empty_array(device: nexus.Device) -> None:
    with pytest.raises(ValueError, match="empty"):
        device.create_buffer(np.zeros(0, np.float32))


def test_copy_destination_checks(device: nexus.Device) -> None:
    buf = device.create_buffer(np.arange(16, dtype=np.float32))
    with pytest.raises(ValueError, match="holds 32 bytes"):
        buf.copy(np.zeros(8, np.float32))
    strided = np.zeros(32, np.float32)[::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        buf.copy(strided)
    ro = np.zeros(16, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        buf.copy(ro)
    with pytest.raises(ValueError, match="read-only"):
        buf.copy(b"\0" * 64)
    with pytest.raises(TypeError):
        buf.copy(42)
    # A larger destination is fine, and so is any writable buffer-protocol object.
    big = np.zeros(20, np.float32)
    buf.copy(big)
    np.testing.assert_array_equal(big[:16], np.arange(16))
    raw = bytearray(64)
    buf.copy(raw)
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32), np.arange(16))


def test_non_contiguous_source_is_copied_contiguously(device: nexus.Device) -> None:
    src = np.arange(20, dtype=np.int32)[::2]
    buf = device.create_buffer(src)
    out = np.empty(10, np.int32)
    buf.copy(out)
    np.testing.assert_array_equal(out, src)


def test_argument_index_limits(device: nexus.Device) -> None:
    kernel = device.get_builtin_library().get_kernel("add_vectors")
    cmd = device.create_schedule().create_command(kernel)
    buf = device.create_buffer(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"argument index 64 is out of range \(0..=63\)"):
        cmd.set_buffer(64, buf)
    with pytest.raises(ValueError, match="argument index -1"):
        cmd.set_arg(-1, 3)
    with pytest.raises(TypeError, match="argument index must be an int"):
        cmd.set_arg("0", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="nexus.Buffer"):
        cmd.set_buffer(0, np.zeros(4))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bool"):
        cmd.set_arg(0, True)
    with pytest.raises(TypeError, match="Buffer, an int or a float"):
        cmd.set_arg(0, "x")
    with pytest.raises(ValueError, match="does not fit int32"):
        cmd.set_arg(0, 2**31)
    with pytest.raises(ValueError, match="does not fit uint32"):
        cmd.set_arg(0, -1, data_type=nexus.data_type.U32)
    with pytest.raises(ValueError, match="scalar kernel arguments"):
        cmd.set_arg(0, 1, data_type=nexus.data_type.F16)
    with pytest.raises(ValueError, match="unknown data_type 99"):
        cmd.set_arg(0, 1, data_type=99)


@pytest.mark.parametrize("group,grid", [(0, 10), (10, 0), (-1, 10), ([1, 2, 3, 4], 10), ([], 10), (2**33, 10)])
def test_finalize_rejects_bad_sizes(device: nexus.Device, group, grid) -> None:
    kernel = device.get_builtin_library().get_kernel("empty")
    cmd = device.create_schedule().create_command(kernel)
    with pytest.raises(ValueError, match="group_size|grid_size"):
        cmd.finalize(group, grid)


def test_finalize_wrong_types_and_twice(device: nexus.Device) -> None:
    kernel = device.get_builtin_library().get_kernel("empty")
    cmd = device.create_schedule().create_command(kernel)
    with pytest.raises(TypeError, match="group_size"):
        cmd.finalize(1.5, 10)
    with pytest.raises(TypeError, match="grid_size"):
        cmd.finalize(1, "10")
    cmd.finalize(1, 1)
    with pytest.raises(nexus.Error, match="already finalized"):
        cmd.finalize(1, 1)


def test_running_unfinalized_or_incomplete_commands(device: nexus.Device) -> None:
    lib = device.get_builtin_library()
    sched = device.create_schedule()
    cmd = sched.create_command(lib.get_kernel("add_vectors"))
    buf = device.create_buffer(np.zeros(4, np.float32))
    cmd.set_buffer(0, buf)
    cmd.set_buffer(2, buf)
    with pytest.raises(nexus.Error, match=r"Command 0 \(kernel 'add_vectors'\) was never finalized"):
        sched.run()
    cmd.finalize(4, 4)
    with pytest.raises(ValueError, match="argument 1 is not set"):
        sched.run()
    cmd.set_buffer(1, buf)
    sched.run()
    # An empty schedule is a no-op that succeeds (DESIGN.md), blocking or not.
    assert device.create_schedule().run() == nexus.status.NXS_Success
    assert device.create_schedule().run(blocking=False) == nexus.status.NXS_Success


def test_builtin_kernel_with_too_few_arguments(cpu_device: nexus.Device) -> None:
    sched = cpu_device.create_schedule()
    cmd = sched.create_command(cpu_device.get_builtin_library().get_kernel("add_vectors"))
    cmd.set_buffer(0, cpu_device.create_buffer(16))
    cmd.finalize(4, 4)
    with pytest.raises(ValueError, match="takes 3 arguments, the command sets 1"):
        sched.run()


def test_library_files(device: nexus.Device, tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.so"
    with pytest.raises(nexus.Error, match="does not exist") as e:
        device.load_library(str(missing))
    assert str(missing) in str(e.value)
    assert e.value.status == nexus.status.NXS_InvalidLibrary
    text = tmp_path / "notes.txt"
    text.write_text("this is not a library\n")
    with pytest.raises(nexus.Error, match="notes.txt"):
        device.load_library(text)
    with pytest.raises(nexus.Error, match="not a file"):
        device.load_library(tmp_path)
    with pytest.raises(TypeError, match="path"):
        device.load_library(42)  # type: ignore[arg-type]
    with pytest.raises(nexus.Error, match="empty"):
        device.load_library(b"")


def test_corrupt_shared_object(cpu_device: nexus.Device, tmp_path: pathlib.Path) -> None:
    corrupt = tmp_path / "corrupt.so"
    corrupt.write_bytes(b"\x7fELF" + b"\x00" * 60)
    with pytest.raises(nexus.Error, match="not a loadable CPU kernel library"):
        cpu_device.load_library(corrupt)


def test_missing_kernel_name(device: nexus.Device, kernels: nexus.Library) -> None:
    with pytest.raises(nexus.Error, match="kernel 'no_such_kernel' not found") as e:
        kernels.get_kernel("no_such_kernel")
    assert e.value.status == nexus.status.NXS_InvalidKernel
    with pytest.raises(ValueError):
        kernels.get_kernel("")
    with pytest.raises(TypeError):
        kernels.get_kernel(3)  # type: ignore[arg-type]


def test_event_misuse(device: nexus.Device) -> None:
    with pytest.raises(ValueError, match="unknown event_type 7"):
        device.create_event(7)
    ev = device.create_event()
    with pytest.raises(ValueError, match="negative"):
        ev.signal(-1)
    with pytest.raises(ValueError, match="timeout"):
        ev.wait(1, timeout=-1)
    with pytest.raises(TimeoutError, match="timed out"):
        ev.wait(1, timeout=0.05)
    with pytest.raises(TypeError):
        ev.wait("1")  # type: ignore[arg-type]


def test_runtime_and_device_lookup() -> None:
    with pytest.raises(nexus.Error, match="unknown runtime 'vulkan9'"):
        nexus.get_runtime("vulkan9")
    cpu = nexus.get_runtime("cpu")
    # An index out of range is an IndexError (DESIGN.md).
    with pytest.raises(IndexError, match="no device 5"):
        cpu.get_device(5)
    with pytest.raises(IndexError, match="no device -1"):
        cpu.get_device(-1)
    assert len(nexus.get_runtime("metal").get_devices()) == 0


def test_stream_of_another_device_is_refused() -> None:
    runtimes = nexus.get_runtimes()
    devices = [d for r in runtimes for d in r.get_devices()]
    if len(devices) < 2:
        pytest.skip("needs two devices")
    a, b = devices[0], devices[-1]
    sched = a.create_schedule()
    sched.create_signal_command(a.create_event(), 1)
    with pytest.raises(nexus.Error, match="stream is on device"):
        sched.run(b.create_stream())


def test_declared_argument_count_is_enforced(cpu_device: nexus.Device, kernels: nexus.Library) -> None:
    # kernels.c declares NXS_KERNEL_ARGS(vadd, 4): a command setting three
    # arguments is refused instead of letting the kernel read past them.
    if cpu_device.get_property_str("Runtime") != "cpu" or kernels.get_property_str("Type") != "shared_object":
        pytest.skip("CPU shared-object kernels only")
    buf = cpu_device.create_buffer(np.zeros(8, np.float32))
    sched = cpu_device.create_schedule()
    cmd = sched.create_command(kernels.get_kernel("vadd"))
    for i in range(3):
        cmd.set_buffer(i, buf)
    cmd.finalize(8, 8)
    with pytest.raises(ValueError, match="kernel 'vadd' takes 4 arguments, the command sets 3"):
        sched.run()
    cmd.set_arg(3, 8)
    sched.run()
