"""Buffers people can use like arrays (issue 13): shape and dtype, host
access, views, device arrays as kernel arguments, and the calls code written
for upstream nexus makes."""

from __future__ import annotations

import sys

import nexus
import numpy as np
import pytest
from conftest import library_path


def is_host(device: nexus.Device) -> bool:
    return device.get_property_str("Runtime") == "cpu"


def run_vadd(device: nexus.Device, lib_path: str, a, b, c, n: int, **finalize) -> None:
    kernels = device.load_library(lib_path)
    s = device.create_schedule()
    cmd = s.create_command(kernels.get_kernel("vadd"))
    for i, x in enumerate((a, b, c)):
        cmd.set_arg(i, x)
    cmd.set_arg(3, n)
    cmd.finalize(64, **finalize) if finalize else cmd.finalize(64, n)
    assert s.run() == nexus.status.NXS_Success


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint8, np.int16, np.float16])
def test_a_buffer_made_from_an_array_keeps_its_shape_and_dtype(device: nexus.Device, dtype) -> None:
    a = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    b = device.create_buffer(a)
    assert b.shape == (2, 3, 4)
    assert b.ndim == 3
    assert b.dtype == np.dtype(dtype)
    assert b.itemsize == a.itemsize
    assert b.strides == a.strides
    assert b.size == 24 and b.nbytes == a.nbytes
    assert b.get_size() == a.nbytes and b.get_property_int("Size") == a.nbytes
    assert len(b) == 2
    assert b.get_property_int_vec("Shape") == [2, 3, 4]
    out = b.numpy()
    assert out.shape == a.shape and out.dtype == a.dtype
    np.testing.assert_array_equal(out, a)
    np.testing.assert_array_equal(np.asarray(b), a)
    assert b.get_data() == a.tobytes()


def test_create_buffer_of_a_size_stays_bytes(device: nexus.Device) -> None:
    b = device.create_buffer(40)
    assert (b.nbytes, b.size, b.shape, b.dtype) == (40, 40, (40,), np.dtype(np.uint8))


def test_empty_zeros_and_shape_tuples(device: nexus.Device) -> None:
    z = device.zeros((3, 5), np.float64)
    assert z.shape == (3, 5) and z.dtype == np.float64
    np.testing.assert_array_equal(z.numpy(), np.zeros((3, 5)))
    e = device.empty(7, "int32")
    assert e.shape == (7,) and e.dtype == np.int32 and e.nbytes == 28
    s = device.create_buffer((4, 2), nexus.data_type.F32)
    assert s.shape == (4, 2) and s.dtype == np.float32 and s.nbytes == 32
    assert device.zeros(4).dtype == np.float32


def test_copy_into_any_writable_host_object(device: nexus.Device) -> None:
    a = np.arange(8, dtype=np.float32)
    b = device.create_buffer(a)
    out = np.zeros(8, np.float32)
    b.copy(out)
    np.testing.assert_array_equal(out, a)
    raw = bytearray(32)
    b.copy(raw)
    assert bytes(raw) == a.tobytes()
    view = memoryview(bytearray(32)).cast("f")
    b.copy(view)
    assert list(view) == list(a)

    class OnlyDLPack:  # a host object that speaks DLPack and nothing else
        def __init__(self, arr: np.ndarray) -> None:
            self.arr = arr

        def __dlpack__(self, **kw):
            return self.arr.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.arr.__dlpack_device__()

    target = np.zeros(8, np.float32)
    b.copy(OnlyDLPack(target))
    np.testing.assert_array_equal(target, a)
    # ... and it is a valid source too.
    c = device.create_buffer(OnlyDLPack(a * 3))
    np.testing.assert_array_equal(c.numpy(), a * 3)


def test_copy_into_torch_cpu_tensor(device: nexus.Device) -> None:
    torch = pytest.importorskip("torch")
    a = np.arange(4, dtype=np.float32)
    t = torch.zeros(4)
    assert device.create_buffer(a).copy(t) == nexus.status.NXS_Success
    assert t.tolist() == a.tolist()


def test_numpy_view_and_array_interface_on_host_memory(cpu_device: nexus.Device) -> None:
    b = cpu_device.create_buffer(np.zeros(4, np.int32))
    view = b.numpy()
    view[2] = 9
    np.testing.assert_array_equal(b.numpy(copy=True), [0, 0, 9, 0])
    ai = b.__array_interface__
    assert ai["shape"] == (4,) and ai["typestr"] == "<i4" and ai["data"][0] == b.data_ptr()
    # The view keeps the memory: releasing the buffer does not free it.
    b.release()
    assert view.sum() == 9


def test_dlpack_of_a_cpu_buffer_is_kdlcpu(cpu_device: nexus.Device) -> None:
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    b = cpu_device.create_buffer(a)
    assert b.__dlpack_device__() == (1, 0)
    back = np.from_dlpack(b)
    assert back.shape == (2, 3)
    np.testing.assert_array_equal(back, a)


def test_create_buffer_without_copy_uses_the_array_in_place(cpu_device: nexus.Device) -> None:
    a = np.zeros(16, np.float32)
    b = cpu_device.create_buffer(a, copy=False)
    assert b.data_ptr() == a.ctypes.data
    a[3] = 5
    assert b.numpy(copy=True)[3] == 5
    refs = sys.getrefcount(a)
    del b
    assert sys.getrefcount(a) <= refs  # the buffer let go of the array
    with pytest.raises(ValueError, match="copy=False"):
        cpu_device.create_buffer(np.arange(8, dtype=np.float32)[::2], copy=False)


def test_slices_are_views_usable_as_kernel_arguments(device: nexus.Device, lib_path: str) -> None:
    n = 256
    a = np.arange(2 * n, dtype=np.float32)
    buf_a = device.create_buffer(a)
    buf_b = device.create_buffer(np.ones(n, np.float32))
    out = device.zeros(2 * n, np.float32)
    upper = out[n : 2 * n]
    assert upper.shape == (n,) and upper.nbytes == n * 4
    assert upper.data_ptr() == out.data_ptr() + n * 4
    run_vadd(device, lib_path, buf_a[n:], buf_b, upper, n)
    expect = np.zeros(2 * n, np.float32)
    expect[n:] = a[n:] + 1
    np.testing.assert_array_equal(out.numpy(), expect)
    # The view keeps the memory alive after the parent is released.
    out.release()
    np.testing.assert_array_equal(upper.numpy(), a[n:] + 1)
    rows = device.create_buffer(np.arange(12, dtype=np.int32).reshape(4, 3))[1:3]
    assert rows.shape == (2, 3)
    np.testing.assert_array_equal(rows.numpy(), np.arange(12).reshape(4, 3)[1:3])


def test_num_groups_is_cuda_style_grids(device: nexus.Device, lib_path: str) -> None:
    n = 640
    a, b = np.arange(n, dtype=np.float32), np.full(n, 2, np.float32)
    c = device.zeros(n)
    run_vadd(device, lib_path, device.create_buffer(a), device.create_buffer(b), c, n, num_groups=10)
    np.testing.assert_array_equal(c.numpy(), a + b)


def test_set_arg_refuses_host_arrays_with_the_way_out(device: nexus.Device, lib_path: str) -> None:
    cmd = device.create_schedule().create_command(device.load_library(lib_path).get_kernel("vadd"))
    with pytest.raises(TypeError, match="create_buffer"):
        cmd.set_arg(0, np.ones(4, np.float32))
    # numpy scalars stay scalars
    assert cmd.set_arg(3, np.int32(4)) == nexus.status.NXS_Success


def test_set_arg_takes_a_cuda_tensor_in_place(device: nexus.Device, lib_path: str) -> None:
    if device.get_property_str("Runtime") != "cuda":
        pytest.skip("CUDA device arrays")
    torch = pytest.importorskip("torch")
    n = 1000
    on = f"cuda:{device.empty(1).__dlpack_device__()[1]}"  # this device's ordinal
    a = torch.arange(n, dtype=torch.float32, device=on)
    b = torch.ones(n, device=on)
    c = torch.zeros(n, device=on)
    run_vadd(device, lib_path, a, b, c, n)
    assert torch.equal(c, a + b)
    with pytest.raises(TypeError, match="create_buffer"):
        device.create_schedule().create_command(device.load_library(lib_path).get_kernel("vadd")).set_arg(0, torch.ones(4))


def test_empty_schedule_and_index_errors(device: nexus.Device) -> None:
    assert device.create_schedule().run() == nexus.status.NXS_Success
    stream = device.create_stream()
    assert device.create_schedule().run(stream=stream, blocking=False) == nexus.status.NXS_Success
    stream.synchronize()
    runtime = nexus.get_runtime(device.get_property_str("Runtime"))
    with pytest.raises(IndexError, match="no device 999"):
        runtime.get_device(999)


def test_object_lists_and_info(device: nexus.Device, lib_path: str) -> None:
    b = device.create_buffer(np.ones(4, np.float32))
    lib = device.load_library(lib_path)
    stream = device.create_stream()
    sched = device.create_schedule()
    assert any(x.data_ptr() == b.data_ptr() for x in device.get_buffers())
    assert any(x.get_property_str("Path") == lib.get_property_str("Path") for x in device.get_libraries())
    assert len(device.get_streams()) >= 1 and len(device.get_schedules()) >= 1
    b.release()
    assert all(x.data_ptr() != 0 for x in device.get_buffers())
    builtin = device.get_builtin_library()
    names = [k.name for k in builtin.get_kernels()]
    assert "add_vectors" in names
    assert builtin.get_info().get_str("Type") in ("builtin", "spirv", "program") or builtin.get_info()
    assert builtin.get_kernel("add_vectors").get_info().get_str("Name") == "add_vectors"
    del stream, sched


def test_version() -> None:
    assert isinstance(nexus.__version__, str) and nexus.__version__.count(".") >= 1


def test_runtime_create_buffer_as_upstream(cpu_device: nexus.Device, build_dir) -> None:
    runtime = nexus.get_runtime("cpu")
    assert runtime.create_buffer(1024).get_size() == 1024
    assert library_path(cpu_device, "kernels", build_dir)
