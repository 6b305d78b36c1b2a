"""What is specific to the Metal runtime: MSL source and .metallib
libraries, compile errors, scalars through setBytes, threadgroup memory,
reflection-based checks, events (MTLSharedEvent epochs) across command
queues, zero-copy host arrays and blit fills. The rest of the suite runs on
Metal devices through the `device` fixture (tests/kernels/*.metal).

Skipped where there is no Metal device: everywhere but macOS. These tests
have not been run yet (see README, "Metal"; scripts/metal_check.sh)."""

from __future__ import annotations

import mmap
import pathlib
import shutil
import subprocess

import nexus
import numpy as np
import pytest
from conftest import devices_of
from conftest import read_buffer as read
from conftest import run_kernel as run

KERNELS = pathlib.Path(__file__).resolve().parent / "kernels"
WAIT = 30

if not nexus.get_runtime("metal").get_devices():
    pytest.skip("no Metal device", allow_module_level=True)


mtl = devices_of("metal")


@pytest.fixture
def kernels_mtl(mtl: nexus.Device) -> nexus.Library:
    return mtl.load_library(str(KERNELS / "kernels.metal"))




SCALE_MSL = """
#include <metal_stdlib>
using namespace metal;
kernel void scale(device float *x [[buffer(0)]], constant float &factor [[buffer(1)]],
                  constant uint &n [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    if (i < n) x[i] *= factor;
}
"""


def test_listed_with_properties(mtl: nexus.Device) -> None:
    info = mtl.get_info()
    assert info.get_str("Runtime") == "metal"
    assert info.get_str("Type") == "gpu"
    assert info.get_int("RegistryID") != 0
    assert info.get_int("UnifiedMemory") in (0, 1)
    assert info.get_int("MaxThreadsPerGroup") >= 256
    assert info.get_int("MaxGroupMemory") >= 16384
    assert info.get_int("RecommendedMaxWorkingSetSize") > 0
    assert len(info.get_int_vec("MaxGroupSize")) == 3
    families = info.get_str_vec("GPUFamilies")
    assert families, "every Metal device supports some family"
    if info.get_str("Name").startswith("Apple M"):
        # Apple silicon: matched with device_lib/apple-gpu-m<N>.json.
        assert info.get_str("Architecture") in ("m1", "m2", "m3", "m4")
        assert info.get_str("Vendor") == "Apple"
        assert info.get_int("UnifiedMemory") == 1
    assert "metal" in [r.get_name() for r in nexus.get_runtimes()]


def test_msl_source_file_and_bytes(mtl: nexus.Device, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "scale.metal"
    path.write_text(SCALE_MSL)
    for lib in (mtl.load_library(str(path)), mtl.load_library(SCALE_MSL.encode())):
        assert lib.get_property_str("Type") == "msl"
        n = 777
        x = mtl.create_buffer(np.ones(n, np.float32))
        run(mtl, lib.get_kernel("scale"), [x, 3.0, (n, nexus.data_type.U32)], 32, n)
        np.testing.assert_array_equal(read(x), np.full(n, 3, np.float32))


def test_metallib_file_and_bytes(mtl: nexus.Device, tmp_path: pathlib.Path) -> None:
    """A .metallib built with Xcode's command-line tools (skipped without them)."""
    if shutil.which("xcrun") is None:
        pytest.skip("no xcrun (Xcode command-line tools)")
    src = tmp_path / "scale.metal"
    src.write_text(SCALE_MSL)
    air, lib_path = tmp_path / "scale.air", tmp_path / "scale.metallib"
    try:
        subprocess.run(["xcrun", "-sdk", "macosx", "metal", "-c", str(src), "-o", str(air)], check=True,
                       capture_output=True)
        subprocess.run(["xcrun", "-sdk", "macosx", "metallib", str(air), "-o", str(lib_path)], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot build a metallib here: {e.stderr.decode(errors='replace')[:200]}")
    assert lib_path.read_bytes()[:4] == b"MTLB"
    for lib in (mtl.load_library(str(lib_path)), mtl.load_library(lib_path.read_bytes())):
        assert lib.get_property_str("Type") == "metallib"
        n = 1000
        x = mtl.create_buffer(np.arange(n, dtype=np.float32))
        run(mtl, lib.get_kernel("scale"), [x, 2.0, (n, nexus.data_type.U32)], 64, n)
        np.testing.assert_array_equal(read(x), np.arange(n, dtype=np.float32) * 2)


def test_compile_error_raises_with_the_compiler_log(mtl: nexus.Device) -> None:
    bad = SCALE_MSL.replace("x[i] *= factor", "x[i] *= undeclared_thing")
    with pytest.raises(nexus.Error) as e:
        mtl.load_library(bad.encode())
    assert e.value.status == nexus.status.NXS_CompileError
    assert "undeclared_thing" in str(e.value), str(e.value)
    with pytest.raises(nexus.Error) as e:
        mtl.load_library(b"\xff\xfe\x00garbage")
    assert e.value.status == nexus.status.NXS_InvalidLibrary


def test_missing_kernel_names_the_library_contents(mtl: nexus.Device) -> None:
    lib = mtl.load_library(SCALE_MSL.encode())
    with pytest.raises(nexus.Error, match="scale"):
        lib.get_kernel("nope")


def test_set_bytes_scalars_of_every_type(mtl: nexus.Device, kernels_mtl: nexus.Library) -> None:
    n = 300
    x = mtl.create_buffer(np.arange(n, dtype=np.uint32))
    run(mtl, kernels_mtl.get_kernel("affine_u32"),
        [x, (3, nexus.data_type.U32), (7, nexus.data_type.U64), 2.0, n], 64, n)
    np.testing.assert_array_equal(read(x, np.uint32), np.arange(n, dtype=np.uint32) * 3 + 9)
    y = mtl.create_buffer(np.ones(n))
    xs = mtl.create_buffer(np.arange(n, dtype=np.float64))
    run(mtl, kernels_mtl.get_kernel("axpy_f64"), [y, xs, np.float64(0.5), np.int64(n)], 32, n)
    np.testing.assert_array_equal(read(y, np.float64), 0.5 * np.arange(n) + 1)


def test_reflection_checks_scalar_sizes_and_missing_arguments(mtl: nexus.Device,
                                                              kernels_mtl: nexus.Library) -> None:
    k = kernels_mtl.get_kernel("affine_u32")
    assert k.get_property_int("ArgumentCount") == 5
    x = mtl.create_buffer(np.zeros(4, np.uint32))
    with pytest.raises(ValueError, match=r"affine_u32.*argument 2.*4 bytes.*8 bytes"):
        run(mtl, k, [x, (3, nexus.data_type.U32), (7, nexus.data_type.U32), 2.0, 4], 4, 4)


def test_threadgroup_memory_and_its_size(mtl: nexus.Device, kernels_mtl: nexus.Library) -> None:
    """shared_memory is the threadgroup memory at [[threadgroup(0)]] (rounded
    up to 16 bytes) and its exact size is at [[buffer(30)]]; it belongs to
    one command only."""
    k = kernels_mtl.get_kernel("shared_fill")
    n = 512
    out = mtl.create_buffer(np.zeros(n, np.int32))
    s = mtl.create_schedule()
    for i, smem in enumerate((1000, 16, 4096)):
        cmd = s.create_command(k)
        cmd.set_buffer(0, out)
        cmd.set_arg(1, n if i != 1 else 0)
        cmd.finalize(128, n, shared_memory=smem)
    s.run()
    np.testing.assert_array_equal(read(out, np.int32), np.full(n, 4096, np.int32))
    limit = mtl.get_info().get_int("MaxGroupMemory")
    with pytest.raises(ValueError, match="shared_memory"):
        run(mtl, k, [out, 4], 4, 4, shared_memory=limit + 16)
    group = kernels_mtl.get_kernel("group_sum")
    m, g = 1000, 64
    src = mtl.create_buffer(np.ones(m, np.float32))
    sums = mtl.create_buffer(np.zeros(-(-m // g), np.float32))
    run(mtl, group, [src, sums, m], g, m, shared_memory=g * 4)
    expect = np.full(-(-m // g), g, np.float32)
    expect[-1] = m - g * (len(expect) - 1)
    np.testing.assert_array_equal(read(sums), expect)


def test_group_too_large_is_a_value_error(mtl: nexus.Device, kernels_mtl: nexus.Library) -> None:
    x = mtl.create_buffer(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="maxTotalThreadsPerThreadgroup"):
        run(mtl, kernels_mtl.get_kernel("fill_f32"), [x, 1.0, 4], [64, 64, 1], [64, 64, 1])








def test_page_aligned_host_array_is_used_in_place(mtl: nexus.Device, kernels_mtl: nexus.Library) -> None:
    page = mmap.PAGESIZE
    n = page // 4 * 3
    raw = np.zeros(n + page // 4, np.float32)
    start = (-raw.ctypes.data % page) // 4
    arr = raw[start:start + n]
    assert arr.ctypes.data % page == 0
    buf = mtl.create_buffer(arr, copy=False)
    run(mtl, kernels_mtl.get_kernel("fill_f32"), [buf, 5.0, n], 64, n)
    np.testing.assert_array_equal(arr, np.full(n, 5, np.float32))  # no copy back


def test_fill_with_multi_byte_patterns(mtl: nexus.Device) -> None:
    for dtype, value in ((np.uint8, 7), (np.int32, -3), (np.float32, 1.5), (np.float64, 2.25)):
        n = 100_003
        buf = mtl.create_buffer(np.zeros(n, dtype))
        s = mtl.create_schedule()
        s.create_fill_command(buf, value)
        s.run()
        np.testing.assert_array_equal(read(buf, dtype), np.full(n, value, dtype))


def test_builtin_library(mtl: nexus.Device) -> None:
    lib = mtl.get_builtin_library()
    n = 1000
    a = mtl.create_buffer(np.arange(n, dtype=np.float32))
    b = mtl.create_buffer(np.ones(n, np.float32))
    c = mtl.create_buffer(np.full(n + 100, -1, np.float32))
    run(mtl, lib.get_kernel("add_vectors"), [a, b, c], 64, n)
    out = read(c)
    np.testing.assert_array_equal(out[:n], np.arange(n) + 1)
    np.testing.assert_array_equal(out[n:], -1)
    run(mtl, lib.get_kernel("empty"), [], 1, 1)


def test_profiled_schedule_reports_gpu_times(mtl: nexus.Device, kernels_mtl: nexus.Library) -> None:
    n = 1 << 16
    x = mtl.create_buffer(np.zeros(n, np.float32))
    s = mtl.create_schedule(profile=True)
    for v in (1.0, 2.0):
        cmd = s.create_command(kernels_mtl.get_kernel("fill_f32"))
        cmd.set_buffer(0, x)
        cmd.set_arg(1, v)
        cmd.set_arg(2, n)
        cmd.finalize(256, n)
    s.run()
    np.testing.assert_array_equal(read(x), np.full(n, 2, np.float32))
