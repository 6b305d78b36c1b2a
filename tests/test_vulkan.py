"""What is specific to the Vulkan runtime: SPIR-V, WGSL and GLSL kernels,
push-constant scalars, group sizes, reflection-based argument checks,
compile errors, the loader override, events (timeline semaphores in
epochs) across streams, and the staging path. The rest of the suite runs
on Vulkan devices through the `device` fixture."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import nexus
import numpy as np
import pytest
from conftest import devices_of
from conftest import read_buffer as read
from conftest import run_kernel as run

KERNELS = pathlib.Path(__file__).resolve().parent / "kernels"
WAIT = 30

if not nexus.get_runtime("vulkan").get_devices():
    pytest.skip("no Vulkan device", allow_module_level=True)


vk = devices_of("vulkan")




SCALE_WGSL = """
@id(0) override gx: u32 = 64u;
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
struct Args { factor: f32, n: u32 }
var<immediate> args: Args;

@compute @workgroup_size(gx)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < args.n) {
        x[gid.x] = x[gid.x] * args.factor;
    }
}
"""

GLSL = """#version 450
layout(constant_id = 0) const uint GX = 1;
layout(local_size_x = 64) in;
layout(set = 0, binding = 0) buffer Out { float data[]; } out_buf;
layout(set = 0, binding = 1) readonly buffer In { float data[]; } in_buf;
layout(push_constant) uniform Params { float factor; int n; } params;
void main() {
    uint i = gl_GlobalInvocationID.x;
    if (int(i) < params.n) out_buf.data[i] = in_buf.data[i] * params.factor;
}
"""


def test_listed_with_runtime_properties(vk: nexus.Device) -> None:
    info = vk.get_info()
    assert info.get_str("Runtime") == "vulkan"
    assert info.get_str("Type") in ("cpu", "gpu")
    for key in ("DriverName", "DriverVersion", "ApiVersion"):
        assert info.get_str(key)
    assert info.get_int("SubgroupSize") >= 1
    assert len(info.get_int_vec("MaxGroupSize")) == 3
    assert info.get_int("MaxGroupMemory") > 0
    kinds = info.get_str_vec(["MemorySubsystem", "SupportedMemoryTypes"])
    assert "Shared" in kinds and "Device" in kinds
    if info.get_str("DriverName") == "llvmpipe":
        assert info.get_str("Type") == "cpu"


def test_spirv_file_and_bytes(vk: nexus.Device) -> None:
    """A SPIR-V module (scale.spv: naga's output of a WGSL kernel with a
    fixed workgroup size of 64) from a file and from bytes."""
    path = KERNELS / "scale.spv"
    for lib in (vk.load_library(str(path)), vk.load_library(path.read_bytes())):
        assert lib.get_property_str("Type") == "spirv"
        k = lib.get_kernel("scale")
        n = 1000
        x = vk.create_buffer(np.arange(n, dtype=np.float32))
        run(vk, k, [x, 2.0, (n, nexus.data_type.U32)], 64, n)
        np.testing.assert_array_equal(read(x), np.arange(n, dtype=np.float32) * 2)


def test_wgsl_source_file_and_bytes(vk: nexus.Device, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "scale.wgsl"
    path.write_text(SCALE_WGSL)
    for lib in (vk.load_library(str(path)), vk.load_library(SCALE_WGSL.encode())):
        assert lib.get_property_str("Type") == "wgsl"
        n = 777
        x = vk.create_buffer(np.ones(n, np.float32))
        run(vk, lib.get_kernel("scale"), [x, 3.0, (n, nexus.data_type.U32)], 32, n)  # group size from override 0
        np.testing.assert_array_equal(read(x), np.full(n, 3, np.float32))


def test_glsl_source(vk: nexus.Device, tmp_path: pathlib.Path) -> None:
    """GLSL compute: `layout(constant_id = 0)` makes the group size the
    command's (here 128, not the declared 64)."""
    path = tmp_path / "scale.comp"
    path.write_text(GLSL)
    lib = vk.load_library(path)
    assert lib.get_property_str("Type") == "glsl"
    n = 1000
    src = vk.create_buffer(np.arange(n, dtype=np.float32))
    dst = vk.create_buffer(np.zeros(n, np.float32))
    run(vk, lib.get_kernel("main"), [dst, src, 0.5, n], 128, n)
    np.testing.assert_array_equal(read(dst), np.arange(n, dtype=np.float32) * 0.5)


def test_compile_error_raises_with_the_compiler_message(vk: nexus.Device, tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.wgsl"
    bad.write_text(SCALE_WGSL.replace("x[gid.x] * args.factor", "x[gid.x] * undefined_name"))
    with pytest.raises(nexus.Error, match="WGSL compile error") as e:
        vk.load_library(bad)
    assert "undefined_name" in str(e.value) and "bad.wgsl" in str(e.value)
    assert e.value.status == nexus.status.NXS_CompileError
    glsl = tmp_path / "bad.comp"
    glsl.write_text(GLSL.replace("params.factor;", "params.factor"))
    with pytest.raises(nexus.Error, match="GLSL compile error"):
        vk.load_library(glsl)


def test_bad_spirv_raises(vk: nexus.Device, tmp_path: pathlib.Path) -> None:
    data = (KERNELS / "scale.spv").read_bytes()
    corrupt = data[:20] + bytes(range(256)) * 4
    with pytest.raises(nexus.Error, match="not valid SPIR-V"):
        vk.load_library(corrupt)
    with pytest.raises(nexus.Error, match="truncated"):
        vk.load_library(data[:-3])
    path = tmp_path / "noise.spv"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(nexus.Error, match="noise.spv"):
        vk.load_library(path)
    with pytest.raises(nexus.Error, match="library"):
        vk.load_library(b"not a kernel at all")


def test_push_constant_scalars_of_every_type(vk: nexus.Device) -> None:
    if not vk.get_info().get_int("Float64") or not vk.get_info().get_int("Int64"):
        pytest.skip("the device has no 64-bit shader types")
    lib = vk.load_library(b"""
@group(0) @binding(1) var<storage, read_write> out: array<f64>;
struct Args { a: i32, b: u32, c: i64, d: u64, e: f32, f: f64 }
var<immediate> p: Args;
@compute @workgroup_size(1)
fn scalars() {
    out[0] = f64(p.a); out[1] = f64(p.b); out[2] = f64(p.c);
    out[3] = f64(p.d); out[4] = f64(p.e); out[5] = p.f;
}
""")
    k = lib.get_kernel("scalars")
    assert k.get_property_int_vec("ParameterSizes") == [4, 8, 4, 8, 8, 4, 8]
    out = vk.create_buffer(np.zeros(6, np.float64))
    # Argument 0 is a scalar (no binding 0), the buffer is argument 1.
    args = [(-7, nexus.data_type.I32), out, (4_000_000_000, nexus.data_type.U32), (-(2**40), nexus.data_type.I64),
            (2**50, nexus.data_type.U64), 1.5, (2.25, nexus.data_type.F64)]
    run(vk, k, args, 1, 1)
    np.testing.assert_array_equal(read(out, np.float64), [-7, 4e9, -(2**40), 2**50, 1.5, 2.25])


def test_group_size_mismatch_with_a_fixed_size_is_a_value_error(vk: nexus.Device) -> None:
    k = vk.load_library(str(KERNELS / "scale.spv")).get_kernel("scale")
    x = vk.create_buffer(np.ones(256, np.float32))
    with pytest.raises(ValueError, match=r"kernel 'scale' has a fixed workgroup size \[64, 1, 1\]"):
        run(vk, k, [x, 2.0, (256, nexus.data_type.U32)], 32, 256)
    np.testing.assert_array_equal(read(x), np.ones(256, np.float32))


def test_reflection_checks_arguments(vk: nexus.Device, kernels_vk: nexus.Library) -> None:
    vadd = kernels_vk.get_kernel("vadd")
    assert vadd.get_property_int("ArgumentCount") == 4
    assert vadd.get_property_int_vec("ParameterSizes") == [8, 8, 8, 4]
    a = vk.create_buffer(np.ones(16, np.float32))
    # A missing argument.
    s = vk.create_schedule()
    cmd = s.create_command(vadd)
    for i in range(3):
        cmd.set_buffer(i, a)
    with pytest.raises(ValueError, match="takes 4 arguments, the command sets 3"):
        cmd.finalize(16, 16)
        s.run()
    # A scalar of the wrong size names the kernel, the argument and both sizes.
    axpy = kernels_vk.get_kernel("axpy_f64")
    y = vk.create_buffer(np.zeros(8, np.float64))
    with pytest.raises(ValueError, match=r"kernel 'axpy_f64' argument 2 is a float32 scalar of 4 bytes.*parameter 2 is 8 bytes"):
        run(vk, axpy, [y, y, 1.5, (8, nexus.data_type.I64)], 8, 8)
    # A scalar where the kernel binds a buffer (an 8-byte scalar: same size as a buffer).
    with pytest.raises(ValueError, match=r"kernel 'vadd' argument 1 is a int64 scalar of 8 bytes, but the kernel's parameter 1 is a buffer"):
        run(vk, vadd, [a, (5, nexus.data_type.I64), a, 16], 16, 16)
    # A buffer where the kernel takes a scalar.
    with pytest.raises(ValueError, match=r"kernel 'vadd' argument 3 is a buffer"):
        run(vk, vadd, [a, a, a, a], 16, 16)


def test_binding_without_argument_position_is_refused(vk: nexus.Device) -> None:
    lib = vk.load_library(b"""
@group(0) @binding(5) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(1)
fn lonely() { x[0] = 1.0; }
""")
    with pytest.raises(nexus.Error, match="binding 5 is not an argument position"):
        lib.get_kernel("lonely")


def test_too_many_groups_and_too_much_shared_memory(vk: nexus.Device, kernels_vk: nexus.Library) -> None:
    fill = kernels_vk.get_kernel("fill_f32")
    x = vk.create_buffer(np.zeros(4, np.float32))
    limit = vk.get_info().get_int_vec("MaxGridSize")[1]
    with pytest.raises(ValueError, match="groups on axis 1"):
        run(vk, fill, [x, 1.0, 4], [1, 1, 1], [1, limit + 1, 1])
    smem = vk.get_info().get_int("MaxGroupMemory")
    with pytest.raises(ValueError, match="shared_memory"):
        run(vk, kernels_vk.get_kernel("shared_fill"), [vk.create_buffer(np.zeros(4, np.int32)), 4], 4, 4,
            shared_memory=smem + 4)


@pytest.fixture
def kernels_vk(vk: nexus.Device) -> nexus.Library:
    return vk.load_library(str(KERNELS / "kernels.wgsl"))


def test_no_loader_means_zero_devices() -> None:
    code = textwrap.dedent("""
        import nexus
        rt = nexus.get_runtime("vulkan")
        assert rt.get_devices() == [], rt.get_devices()
        assert "vulkan" not in [r.get_name() for r in nexus.get_runtimes()]
        print("OK")
    """)
    env = dict(os.environ, NEXUS_VULKAN_LOADER="/nonexistent/libvulkan.so.1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr








def test_push_constant_block_beyond_the_device_limit(vk: nexus.Device, kernels_vk: nexus.Library) -> None:
    """sum_args takes 63 int32 scalars (252 bytes): beyond a 128-byte
    maxPushConstantsSize they move to a hidden storage buffer."""
    out = vk.create_buffer(np.zeros(1, np.int64))
    run(vk, kernels_vk.get_kernel("sum_args"), [out] + list(range(1, 64)), 1, 1)
    assert read(out, np.int64)[0] == sum(range(1, 64))


def test_staging_path(vk: nexus.Device) -> None:
    """NEXUS_VULKAN_STAGING=1 puts buffers in device-local memory the host
    does not map, as on a discrete GPU: copies go through staging buffers."""
    code = textwrap.dedent(f"""
        import numpy as np, nexus
        d = nexus.get_runtime("vulkan").get_device({vk.get_property_int("ID")})
        assert d.get_info().get_int("StagingCopies") == 1
        lib = d.load_library({str(KERNELS / "kernels.wgsl")!r})
        n = 100_000
        a = d.create_buffer(np.arange(n, dtype=np.float32))
        b = d.create_buffer(np.ones(n, np.float32))
        c = d.create_buffer(n * 4)
        s = d.create_schedule()
        cmd = s.create_command(lib.get_kernel("vadd"))
        for i, x in enumerate((a, b, c)):
            cmd.set_buffer(i, x)
        cmd.set_arg(3, n)
        cmd.finalize(256, n)
        s.run()
        out = np.empty(n, np.float32)
        c.copy(out)
        assert (out == np.arange(n) + 1).all()
        part = np.full(10, 5, np.float32)
        c.write(part)
        c.copy(out)
        assert (out[:10] == 5).all() and out[10] == 11
        print("OK")
    """)
    env = dict(os.environ, NEXUS_VULKAN_STAGING="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr


def test_builtin_library(vk: nexus.Device) -> None:
    lib = vk.get_builtin_library()
    n = 1000
    a = vk.create_buffer(np.arange(n, dtype=np.float32))
    b = vk.create_buffer(np.ones(n, np.float32))
    c = vk.create_buffer(np.full(n + 100, -1, np.float32))
    run(vk, lib.get_kernel("add_vectors"), [a, b, c], 64, n)
    out = read(c)
    np.testing.assert_array_equal(out[:n], np.arange(n) + 1)
    np.testing.assert_array_equal(out[n:], -1)  # nothing past the grid
    run(vk, lib.get_kernel("empty"), [], 1, 1)


def spin_fill(s: nexus.Schedule, kernels: nexus.Library, buf: nexus.Buffer, value: float, microseconds: int) -> None:
    cmd = s.create_command(kernels.get_kernel("spin_fill_f32"))
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, value)
    cmd.set_arg(2, buf.shape[0])
    cmd.set_arg(3, microseconds)
    cmd.finalize(64, buf.shape[0])


def test_profiled_schedule_reports_device_timestamps(vk: nexus.Device, kernels_vk: nexus.Library) -> None:
    """Issue 14: timestamp queries around every command, read after a run."""
    buf = vk.zeros(1024)
    ev = vk.create_event()
    s = vk.create_schedule(profile=True)
    spin_fill(s, kernels_vk, buf, 1.0, 0)        # an empty loop
    spin_fill(s, kernels_vk, buf, 2.0, 20000)    # a long one
    s.create_signal_command(ev, 1)
    s.create_copy_command(buf[0:64], buf[512:576])
    s.run()  # lavapipe compiles a pipeline's code at its first dispatch
    for _ in range(2):  # queries are reset by every run
        s.run()
        times = [(c.get_property_flt("StartTime"), c.get_property_flt("EndTime")) for c in s.get_commands()]
        assert times[0][0] == 0  # relative to the run's first command
        assert all(0 <= start <= end for start, end in times)
        assert all(a[1] <= b[0] for a, b in zip(times, times[1:])), times  # in stream order
        empty, long = (c.get_property_flt("ElapsedTime") for c in s.get_commands()[:2])
        assert long > empty > 0
        total = s.get_property_flt("ElapsedTime")
        assert total >= times[-1][1] - times[0][0] - 1e-9
    np.testing.assert_array_equal(read(buf), np.full(1024, 2, np.float32))


def test_profiled_wait_is_timed_when_it_is_satisfied(vk: nexus.Device, kernels_vk: nexus.Library) -> None:
    ev = vk.create_event()
    buf = vk.zeros(1024)
    consumer = vk.create_schedule(profile=True)
    consumer.create_wait_command(ev, 1)
    spin_fill(consumer, kernels_vk, buf, 3.0, 100)
    stream = vk.create_stream()
    consumer.run(stream, blocking=False)
    producer = vk.create_schedule()
    producer.create_signal_command(ev, 1)
    producer.run()
    stream.synchronize()
    wait, kernel = consumer.get_commands()
    assert wait.get_property_flt("StartTime") == 0
    assert wait.get_property_flt("EndTime") <= kernel.get_property_flt("StartTime")
    assert kernel.get_property_flt("ElapsedTime") > 0


def test_runs_queued_behind_a_held_wait_stay_behind_it(vk: nexus.Device, kernels_vk: nexus.Library) -> None:
    """A run without waits is submitted by the calling thread only when
    nothing of its stream is held: here it must queue behind the held one."""
    ev = vk.create_event()
    x = vk.zeros(256)
    held = vk.create_schedule()
    held.create_wait_command(ev, 1)
    cmd = held.create_command(kernels_vk.get_kernel("fill_f32"))
    cmd.set_buffer(0, x)
    cmd.set_arg(1, 1.0)
    cmd.set_arg(2, 256)
    cmd.finalize(64, 256)
    later = vk.create_schedule()
    cmd = later.create_command(kernels_vk.get_kernel("affine_f32"))
    cmd.set_buffer(0, x)
    cmd.set_arg(1, 2.0)
    cmd.set_arg(2, 3.0)
    cmd.set_arg(3, 256)
    cmd.finalize(64, 256)
    done = vk.create_event()
    later.create_signal_command(done, 1)
    stream = vk.create_stream()
    try:
        held.run(stream, blocking=False)
        later.run(stream, blocking=False)
        with pytest.raises(TimeoutError):
            done.wait(1, timeout=0.2)
    finally:
        ev.signal(1)
    stream.synchronize()
    # fill then affine: 1 * 2 + 3, not (0 * 2 + 3) overwritten by 1.
    np.testing.assert_array_equal(read(x), np.full(256, 5, np.float32))
    for _ in range(50):  # direct submissions again once the stream drained
        later.run(stream, blocking=False)
    later.run(stream)
    assert read(x)[0] > 5

