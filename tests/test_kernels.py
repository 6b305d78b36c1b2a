"""Kernel launches on every device, results checked against numpy."""

from __future__ import annotations

import nexus
import numpy as np
import pytest


def run_one(device: nexus.Device, kernel: nexus.Kernel, args: list, group, grid, shared_memory: int = 0) -> None:
    schedule = device.create_schedule()
    cmd = schedule.create_command(kernel)
    for i, a in enumerate(args):
        if isinstance(a, nexus.Buffer):
            assert cmd.set_buffer(i, a) == nexus.status.NXS_Success
        elif isinstance(a, tuple):
            cmd.set_arg(i, a[0], data_type=a[1])
        else:
            cmd.set_arg(i, a)
    cmd.finalize(group, grid, shared_memory)
    assert schedule.run() == nexus.status.NXS_Success


@pytest.mark.parametrize("n,group", [(1, 1), (1000, 64), (1 << 20, 256), (12345, 1000)])
def test_vadd_sizes(device: nexus.Device, kernels: nexus.Library, n: int, group: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    bufs = [device.create_buffer(a), device.create_buffer(b), device.create_buffer(np.full(n, np.nan, np.float32))]
    kernel = kernels.get_kernel("vadd")
    limit = kernel.get_property_int("MaxThreadsPerGroup")
    if group > limit:  # NVIDIA's OpenCL: 256 work-items per group
        with pytest.raises(ValueError, match=f"kernel 'vadd': (a )?group of {group} work-items exceeds its limit of {limit}"):
            run_one(device, kernel, [*bufs, n], group, n)
        group = limit
    run_one(device, kernel, [*bufs, n], group, n)
    c = np.empty(n, np.float32)
    bufs[2].copy(c)
    np.testing.assert_array_equal(c, a + b)


def test_scalar_types(device: nexus.Device, kernels: nexus.Library) -> None:
    n = 4099
    rng = np.random.default_rng(1)
    y = rng.standard_normal(n)
    x = rng.standard_normal(n)
    yb = device.create_buffer(y)
    run_one(device, kernels.get_kernel("axpy_f64"), [yb, device.create_buffer(x), (2.5, nexus.data_type.F64), (n, nexus.data_type.I64)], 128, n)
    out = np.empty(n)
    yb.copy(out)
    np.testing.assert_allclose(out, 2.5 * x + y, rtol=1e-14, atol=1e-15)  # GPUs fuse into an FMA

    u = rng.integers(0, 1000, n, dtype=np.uint32)
    ub = device.create_buffer(u)
    args = [ub, (3, nexus.data_type.U32), (2**32 + 7, nexus.data_type.U64), 2.0, n]
    run_one(device, kernels.get_kernel("affine_u32"), args, 64, n)
    got = np.empty(n, np.uint32)
    ub.copy(got)
    np.testing.assert_array_equal(got, u * 3 + 7 + 2)


def test_numpy_scalars_keep_their_type(device: nexus.Device, kernels: nexus.Library) -> None:
    n = 100
    y = np.ones(n)
    x = np.arange(n, dtype=np.float64)
    yb = device.create_buffer(y)
    run_one(device, kernels.get_kernel("axpy_f64"), [yb, device.create_buffer(x), np.float64(0.5), np.int64(n)], 32, n)
    out = np.empty(n)
    yb.copy(out)
    np.testing.assert_array_equal(out, 0.5 * x + 1)


def test_argument_limit(device: nexus.Device, kernels: nexus.Library) -> None:
    assert nexus.MAX_KERNEL_ARGS == 64
    try:
        sum_args = kernels.get_kernel("sum_args")
    except nexus.Error:
        pytest.skip(f"the test kernels of {device} have no 64-argument kernel (Metal: at most 30 arguments)")
    values = list(range(-31, 32))
    assert len(values) == 63
    out = device.create_buffer(np.zeros(1, np.int64))
    run_one(device, sum_args, [out, *values], 1, 1)
    got = np.zeros(1, np.int64)
    out.copy(got)
    assert got[0] == sum(values)


def test_three_dimensional_grid(device: nexus.Device, kernels: nexus.Library) -> None:
    nx, ny, nz = 37, 11, 5
    out = device.create_buffer(np.full(nx * ny * nz, -1, np.int32))
    run_one(device, kernels.get_kernel("index3d"), [out, nx, ny, nz], [8, 4, 2], [nx, ny, nz])
    got = np.empty(nx * ny * nz, np.int32)
    out.copy(got)
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    np.testing.assert_array_equal(got.reshape(nz, ny, nx), x + 1000 * y + 1000000 * z)


def test_group_shared_memory(device: nexus.Device, kernels: nexus.Library) -> None:
    n, group = 10000, 128
    groups = -(-n // group)
    data = np.random.default_rng(3).standard_normal(n, dtype=np.float32)
    out = device.create_buffer(np.zeros(groups, np.float32))
    run_one(device, kernels.get_kernel("group_sum"), [device.create_buffer(data), out, n], group, n, shared_memory=group * 4)
    got = np.empty(groups, np.float32)
    out.copy(got)
    padded = np.zeros(groups * group, np.float32)
    padded[:n] = data
    np.testing.assert_allclose(got, padded.reshape(groups, group).sum(axis=1), rtol=1e-4, atol=1e-4)


def test_schedule_runs_many_times_and_sees_rebound_arguments(device: nexus.Device, kernels: nexus.Library) -> None:
    n = 1000
    a = np.arange(n, dtype=np.float32)
    ab, cb = device.create_buffer(a), device.create_buffer(np.zeros(n, np.float32))
    schedule = device.create_schedule()
    cmd = schedule.create_command(kernels.get_kernel("vadd"))
    for i, buf in enumerate([ab, ab, cb]):
        cmd.set_buffer(i, buf)
    cmd.set_arg(3, n)
    cmd.finalize(100, n)
    out = np.empty(n, np.float32)
    for _ in range(20):
        schedule.run()
    cb.copy(out)
    np.testing.assert_array_equal(out, 2 * a)
    assert schedule.get_property_int("Runs") == 20
    # Rebinding an argument after recording takes effect on the next run.
    cmd.set_buffer(1, device.create_buffer(np.ones(n, np.float32)))
    schedule.run()
    cb.copy(out)
    np.testing.assert_array_equal(out, a + 1)


def test_several_kernels_in_one_schedule_run_in_order(device: nexus.Device, kernels: nexus.Library) -> None:
    n = 5000
    x = np.random.default_rng(5).standard_normal(n, dtype=np.float32)
    b0 = device.create_buffer(x)
    b1 = device.create_buffer(np.zeros(n, np.float32))
    b2 = device.create_buffer(np.zeros(n, np.float32))
    vadd = kernels.get_kernel("vadd")
    schedule = device.create_schedule()
    for src, dst in [(b0, b1), (b1, b2), (b2, b1)]:  # b1 = 2x, b2 = 4x, b1 = 8x
        cmd = schedule.create_command(vadd)
        cmd.set_buffer(0, src)
        cmd.set_buffer(1, src)
        cmd.set_buffer(2, dst)
        cmd.set_arg(3, n)
        cmd.finalize(256, n)
    schedule.run()
    out = np.empty(n, np.float32)
    b1.copy(out)
    np.testing.assert_array_equal(out, 8 * x)


def test_builtin_library(device: nexus.Device) -> None:
    n = 3000
    a = np.random.default_rng(9).standard_normal(n, dtype=np.float32)
    bufs = [device.create_buffer(a), device.create_buffer(a), device.create_buffer(np.zeros(n, np.float32))]
    lib = device.get_builtin_library()
    run_one(device, lib.get_kernel("add_vectors"), bufs, 128, n)
    out = np.empty(n, np.float32)
    bufs[2].copy(out)
    np.testing.assert_array_equal(out, 2 * a)
    run_one(device, lib.get_kernel("empty"), [], 1, 1)
