"""The bad-input catalogue: every way a caller can misuse the API, as data.

Each row (`Case`) names one misuse, the call that commits it (a function of a
`Ctx`: the device under test, a loaded test library, a temporary folder, a
second device when one exists), the exception type that call must raise and a
fragment its message must contain. `tests/test_misuse.py` runs every row on
every device present; `scripts/reliability_report.py` counts them.

Rows are plain data: add one by appending a `Case` to `CASES`. A row that
needs a second device says `needs="two_devices"`; one that only makes sense
on one runtime says its name (`needs="cpu"` for ELF files, `needs="opencl"`). A row that shows a bug in
the core or the bindings carries `xfail="<reason>"` and is run as a strict
expected failure until the bug is fixed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import pickle
from typing import Any, Callable, Optional

import nexus
import nexus.catalog
import numpy as np

RELEASED = "was released"
MALFORMED = "malformed property path"


@dataclasses.dataclass
class Ctx:
    """What a case may use. Every helper makes fresh objects."""

    device: nexus.Device
    kernels: nexus.Library
    library_path: str
    tmp_path: pathlib.Path
    other: Optional[nexus.Device] = None

    @property
    def runtime(self) -> nexus.Runtime:
        return nexus.get_runtime(self.device.get_property_str("Runtime"))

    def buf(self, n: int = 16, dtype: Any = np.float32) -> nexus.Buffer:
        return self.device.create_buffer(np.arange(n, dtype=dtype))

    def released(self, obj: Any) -> Any:
        obj.release()
        return obj

    def vadd(self, schedule: Optional[nexus.Schedule] = None, n: int = 16) -> nexus.Command:
        """An unfinalized vadd command with every argument set."""
        if schedule is None:
            schedule = self.device.create_schedule()
        cmd = schedule.create_command(self.kernels.get_kernel("vadd"))
        a = self.buf(n)
        cmd.set_buffer(0, a)
        cmd.set_buffer(1, a)
        cmd.set_buffer(2, self.buf(n))
        cmd.set_arg(3, n)
        return cmd

    def signal_cmd(self) -> nexus.Command:
        return self.device.create_schedule().create_signal_command(self.device.create_event(), 1)

    def file(self, name: str, data: bytes) -> pathlib.Path:
        path = self.tmp_path / name
        path.write_bytes(data)
        return path


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    cls: str  # the class (or "module") whose call is misused
    call: Callable[[Ctx], Any]
    exc: type
    fragment: str  # must appear in str(exception)
    status: Optional[str] = None  # nexus.status member name, checked for nexus.Error
    needs: str = ""  # "", "two_devices", or the one runtime the case is for ("cpu", "opencl")
    xfail: str = ""  # non-empty: a known bug, run as a strict expected failure
    xfail_on: tuple = ()  # runtimes the xfail applies to; empty: every runtime
    isolate: bool = False  # run in a child interpreter (the call may kill the process)


# ------------------------------------------------------------ call helpers
# Small named functions where a lambda would need statements.


def _vulkan_push_constant_size(c: Ctx) -> Any:
    """vadd's n (an int32 push constant) given as an int64."""
    s = c.device.create_schedule()
    cmd = c.vadd(s)
    cmd.set_arg(3, 16, data_type=nexus.data_type.I64)
    cmd.finalize(16, 16)
    return s.run()


def _opencl_scalar_for_buffer(c: Ctx) -> Any:
    """vadd with an 8-byte scalar where a buffer goes: the sizes match, the kinds do not."""
    s = c.device.create_schedule()
    cmd = s.create_command(c.kernels.get_kernel("vadd"))
    b = c.buf()
    cmd.set_arg(0, 1, data_type=nexus.data_type.I64)
    cmd.set_buffer(1, b)
    cmd.set_buffer(2, b)
    cmd.set_arg(3, 16)
    cmd.finalize(16, 16)
    return s.run()


def _unfinalized_run(c: Ctx) -> Any:
    s = c.device.create_schedule()
    c.vadd(s)
    return s.run()


def _unset_arg_run(c: Ctx) -> Any:
    s = c.device.create_schedule()
    cmd = s.create_command(c.kernels.get_kernel("vadd"))
    b = c.buf()
    cmd.set_buffer(0, b)
    cmd.set_buffer(2, b)
    cmd.set_arg(3, 16)
    cmd.finalize(16, 16)
    return s.run()


def _unset_last_arg_run(c: Ctx) -> Any:
    s = c.device.create_schedule()
    cmd = s.create_command(c.kernels.get_kernel("vadd"))
    b = c.buf()
    cmd.set_buffer(0, b)
    cmd.set_buffer(1, b)
    cmd.set_buffer(2, b)
    cmd.set_arg(5, 16)  # 3 and 4 left unset
    cmd.finalize(16, 16)
    return s.run()


def _double_finalize(c: Ctx) -> Any:
    cmd = c.vadd()
    cmd.finalize(16, 16)
    return cmd.finalize(16, 16)


def _double_finalize_after_run(c: Ctx) -> Any:
    s = c.device.create_schedule()
    cmd = c.vadd(s)
    cmd.finalize(16, 16)
    s.run()
    return cmd.finalize(8, 16)


def _run_with_released_buffer(c: Ctx) -> Any:
    s = c.device.create_schedule()
    cmd = s.create_command(c.kernels.get_kernel("vadd"))
    a, out = c.buf(), c.buf()
    cmd.set_buffer(0, a)
    cmd.set_buffer(1, a)
    cmd.set_buffer(2, out)
    cmd.set_arg(3, 16)
    cmd.finalize(16, 16)
    s.run()
    out.release()
    return s.run()


def _run_released_schedule(c: Ctx) -> Any:
    s = c.device.create_schedule()
    c.vadd(s).finalize(16, 16)
    s.run()
    s.release()
    return s.run()


def _run_on_released_stream(c: Ctx) -> Any:
    s = c.device.create_schedule()
    c.vadd(s).finalize(16, 16)
    return s.run(c.released(c.device.create_stream()))


def _run_signal_on_released_event(c: Ctx) -> Any:
    ev = c.device.create_event()
    s = c.device.create_schedule()
    s.create_signal_command(ev, 1)
    ev.release()
    return s.run()


def _context_manager_buffer(c: Ctx) -> Any:
    with c.buf() as b:
        pass
    return b.copy(np.empty(16, np.float32))


def _context_manager_event(c: Ctx) -> Any:
    with c.device.create_event() as ev:
        ev.signal(1)
    return ev.wait(1, timeout=1)


def _context_manager_schedule_on_error(c: Ctx) -> Any:
    try:
        with c.device.create_schedule() as s:
            raise KeyError("inside")
    except KeyError:
        pass
    return s.run()


def _context_manager_stream(c: Ctx) -> Any:
    with c.device.create_stream() as st:
        pass
    return st.synchronize()


def _context_manager_library(c: Ctx) -> Any:
    with c.device.load_library(c.library_path) as lib:
        pass
    return lib.get_kernel("vadd")


def _concrete_library(c: Ctx) -> pathlib.Path:
    """The file the test library was loaded from: the build its catalog chose."""
    try:
        return pathlib.Path(c.kernels.get_property_str("CatalogFile"))
    except nexus.Error:
        return pathlib.Path(c.library_path)


def _truncated_library(c: Ctx) -> Any:
    data = _concrete_library(c).read_bytes()
    suffix = _concrete_library(c).suffix
    return c.device.load_library(c.file("truncated" + suffix, data[: len(data) // 2]))


def _garbage_library(c: Ctx) -> Any:
    rng = np.random.default_rng(5)
    suffix = _concrete_library(c).suffix
    return c.device.load_library(c.file("garbage" + suffix, rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()))


def _catalog_manifest(c: Ctx, name: str, manifest: Any) -> pathlib.Path:
    return c.file(name, json.dumps(manifest).encode())


def _catalog_of(builds: list) -> dict:
    return {"nexus-catalog": 1, "libraries": {"k": {"builds": builds}}}


def _truncated_catalog(c: Ctx) -> Any:
    manifest = pathlib.Path(c.library_path).parent / "nexus-catalog.json"
    data = manifest.read_bytes()
    return c.device.load_library(c.file("truncated-catalog.json", data[: len(data) // 2]))


def _catalog_cubin_without_arch(c: Ctx) -> Any:
    folder = c.tmp_path / "cubins"
    folder.mkdir(exist_ok=True)
    (folder / "k.cubin").write_bytes(b"not an ELF file")
    return nexus.catalog.build(folder)


def _wait_on_unsignalled_timeline(c: Ctx) -> Any:
    ev = c.device.create_event()
    ev.signal(3)
    return ev.wait(4, timeout=0.01)


def _nonblocking_wait_command_times_out(c: Ctx) -> Any:
    go, done = c.device.create_event(), c.device.create_event()
    s = c.device.create_schedule()
    s.create_wait_command(go, 1)
    s.create_signal_command(done, 1)
    stream = c.device.create_stream()
    s.run(stream, blocking=False)
    try:
        return done.wait(1, timeout=0.05)
    finally:
        go.signal(1)  # unblock the stream so nothing is left behind
        done.wait(1, timeout=30)


def _stream_synchronize_timeout_free(c: Ctx) -> Any:
    # synchronize on a released stream raises instead of blocking.
    st = c.device.create_stream()
    st.release()
    return st.synchronize()


def _mismatched_buffer(c: Ctx) -> Any:
    assert c.other is not None
    cmd = c.device.create_schedule().create_command(c.kernels.get_kernel("vadd"))
    return cmd.set_buffer(0, c.other.create_buffer(np.zeros(4, np.float32)))


def _mismatched_buffer_via_set_arg(c: Ctx) -> Any:
    assert c.other is not None
    cmd = c.device.create_schedule().create_command(c.kernels.get_kernel("vadd"))
    return cmd.set_arg(1, c.other.create_buffer(np.zeros(4, np.float32)))


def _kernel_of_other_device(c: Ctx) -> Any:
    assert c.other is not None
    kernel = c.other.get_builtin_library().get_kernel("empty")
    return c.device.create_schedule().create_command(kernel)


def _set_released_buffer_then_run(c: Ctx) -> Any:
    s = c.device.create_schedule()
    cmd = c.vadd(s)
    cmd.set_buffer(2, c.released(c.buf()))
    cmd.finalize(16, 16)
    return s.run()


def _copy_into_object_array(c: Ctx) -> Any:
    buf = c.device.create_buffer(np.full(2, 0x4141414141, dtype=np.int64))
    dst = np.empty(2, dtype=object)
    buf.copy(dst)  # raw bytes over two PyObject* slots
    return repr(dst)  # touching the array dereferences them


def _set_attr(obj: Any, name: str, value: Any) -> Any:
    setattr(obj, name, value)
    return obj


# ------------------------------------------------------------ the table

CASES: list[Case] = [
    # ---- module functions
    Case("get_runtime_unknown_name", "module", lambda c: nexus.get_runtime("opencl-9000"), nexus.Error, "unknown runtime 'opencl-9000'"),
    Case("get_runtime_empty_name", "module", lambda c: nexus.get_runtime(""), nexus.Error, "unknown runtime ''"),
    Case("get_runtime_none", "module", lambda c: nexus.get_runtime(None), TypeError, "not an instance of 'str'"),
    Case("get_runtime_int", "module", lambda c: nexus.get_runtime(0), TypeError, "int"),
    Case("lookup_device_info_none", "module", lambda c: nexus.lookup_device_info(None), TypeError, "not an instance of 'str'"),
    Case("lookup_device_info_bytes", "module", lambda c: nexus.lookup_device_info(b"sm_90"), TypeError, "bytes"),
    Case("module_create_buffer_negative", "module", lambda c: nexus.create_buffer(-7), ValueError, "buffer size -7"),
    Case("module_create_buffer_none", "module", lambda c: nexus.create_buffer(None), TypeError, "NoneType"),
    Case("module_create_buffer_bad_dtype", "module", lambda c: nexus.create_buffer(16, data_type=1234), ValueError, "unknown data_type 1234"),
    # ---- constructors: no class is built directly
    Case("construct_runtime", "Runtime", lambda c: nexus.Runtime(), TypeError, "cannot create"),
    Case("construct_device", "Device", lambda c: nexus.Device(), TypeError, "cannot create"),
    Case("construct_buffer", "Buffer", lambda c: nexus.Buffer(), TypeError, "cannot create"),
    Case("construct_event", "Event", lambda c: nexus.Event(), TypeError, "cannot create"),
    Case("construct_schedule", "Schedule", lambda c: nexus.Schedule(), TypeError, "cannot create"),
    Case("construct_command", "Command", lambda c: nexus.Command(), TypeError, "cannot create"),
    Case("construct_properties", "Properties", lambda c: nexus.Properties(), TypeError, "cannot create"),
    # ---- Runtime
    Case("runtime_device_index_huge", "Runtime", lambda c: c.runtime.get_device(2**40), IndexError, f"no device {2**40}"),
    Case("runtime_device_index_beyond_int64", "Runtime", lambda c: c.runtime.get_device(2**80), IndexError, f"no device {2**80}"),
    Case("runtime_device_index_negative", "Runtime", lambda c: c.runtime.get_device(-1), IndexError, "no device -1"),
    Case("runtime_device_index_str", "Runtime", lambda c: c.runtime.get_device("0"), TypeError, "device id must be an int"),
    Case("runtime_device_index_float", "Runtime", lambda c: c.runtime.get_device(0.0), TypeError, "device id must be an int"),
    Case("runtime_device_index_none", "Runtime", lambda c: c.runtime.get_device(None), TypeError, "device id must be an int"),
    Case("runtime_device_index_bool", "Runtime", lambda c: c.runtime.get_device(False), TypeError, "device id must be an int"),
    Case("runtime_unknown_property", "Runtime", lambda c: c.runtime.get_property_str("Colour"), nexus.Error, "Colour", "NXS_InvalidProperty"),
    Case("runtime_property_wrong_type", "Runtime", lambda c: c.runtime.get_property_int("Name"), nexus.Error, "not an integer", "NXS_InvalidProperty"),
    # ---- Device
    Case("device_buffer_bad_dtype", "Device", lambda c: c.device.create_buffer(64, data_type=-3), ValueError, "unknown data_type -3"),
    Case("device_buffer_dtype_object", "Device", lambda c: c.device.create_buffer(64, data_type=object), ValueError, "not one nexus buffers hold"),
    Case("device_buffer_dtype_junk", "Device", lambda c: c.device.create_buffer(64, data_type="no-such-type"), TypeError, "data type must be"),
    Case("device_buffer_shape_zero", "Device", lambda c: c.device.create_buffer((2, 0), nexus.data_type.F32), ValueError, "every dimension must be >= 1"),
    Case("device_buffer_copy_false_readonly", "Device", lambda c: c.device.create_buffer(np.frombuffer(bytes(16), np.float32), copy=False), ValueError, "copy=False"),
    Case("device_empty_negative", "Device", lambda c: c.device.empty(-4), ValueError, "every dimension must be >= 1"),
    Case("device_empty_float_shape", "Device", lambda c: c.device.empty(4.0), TypeError, "shape must be an int or a tuple"),
    Case("device_empty_huge", "Device", lambda c: c.device.empty((2**40, 2**40)), ValueError, "too large"),
    Case("device_zeros_bad_dtype", "Device", lambda c: c.device.zeros(4, "complex128"), ValueError, "complex128"),
    Case("device_buffer_empty_2d", "Device", lambda c: c.device.create_buffer(np.zeros((0, 3), np.float32)), ValueError, "empty"),
    Case("device_buffer_object", "Device", lambda c: c.device.create_buffer(object()), TypeError, "Python objects"),
    Case("device_buffer_dict", "Device", lambda c: c.device.create_buffer({"a": 1}), TypeError, "Python objects"),
    Case("device_buffer_object_array", "Device", lambda c: c.device.create_buffer(np.array([None, 1], dtype=object)), TypeError, "dtype=object"),
    Case("device_buffer_size_float_string", "Device", lambda c: c.device.create_buffer("1024"), TypeError, "str"),
    Case("device_event_type_negative", "Device", lambda c: c.device.create_event(-1), ValueError, "unknown event_type -1"),
    Case("device_event_type_str", "Device", lambda c: c.device.create_event("Shared"), TypeError, "event_type must be an int"),
    Case("device_copy_buffer_not_buffer", "Device", lambda c: c.device.copy_buffer(np.zeros(4)), TypeError, "Buffer"),
    Case("device_copy_released_buffer", "Device", lambda c: c.device.copy_buffer(c.released(c.buf())), nexus.Error, RELEASED, "NXS_Released"),
    Case("device_unknown_property", "Device", lambda c: c.device.get_property_int("Wingspan"), nexus.Error, "Wingspan", "NXS_InvalidProperty"),
    Case("device_property_negative_index", "Device", lambda c: c.device.get_property_int(["MemorySubsystem", -1]), ValueError, "index -1 is negative"),
    Case("device_property_enum_out_of_range", "Device", lambda c: c.device.get_property_int(nexus.property.Name + 10_000), nexus.Error, "unknown property enum value"),
    Case("device_property_index_on_group", "Device", lambda c: c.device.get_property_int(["Name", 0]), nexus.Error, "no property at path"),
    Case("device_property_keys_of_scalar", "Device", lambda c: c.device.get_property_keys("Name"), nexus.Error, "has no keys"),
    Case("device_property_float_vec_of_str", "Device", lambda c: c.device.get_property_flt_vec("Name"), nexus.Error, "not a list of numbers"),
    Case("path_bad_index", "Device", lambda c: c.device.get_property_int("MemorySubsystem.MemoryTypes[x]"), ValueError, MALFORMED),
    Case("path_empty_name", "Device", lambda c: c.device.get_property_int("MemorySubsystem..Size"), ValueError, MALFORMED),
    Case("path_leading_index", "Device", lambda c: c.device.get_property_int("[0].Size"), ValueError, MALFORMED),
    Case("path_unclosed_bracket", "Device", lambda c: c.device.get_property_int("MemoryTypes[1"), ValueError, MALFORMED),
    Case("path_stray_bracket", "Device", lambda c: c.device.get_property_int("MemoryTypes]1"), ValueError, MALFORMED),
    Case("path_trailing_dot", "Device", lambda c: c.device.get_property_str("Name."), ValueError, MALFORMED),
    Case("path_negative_index", "Device", lambda c: c.device.get_property_int("MemoryTypes[-1]"), ValueError, MALFORMED),
    Case("path_index_overflow", "Device", lambda c: c.device.get_property_int("MemoryTypes[" + "9" * 30 + "]"), ValueError, MALFORMED),
    Case("path_keys_malformed", "Device", lambda c: c.device.get_property_keys("a]"), ValueError, MALFORMED),
    # ---- library files
    Case("library_missing_file", "Device", lambda c: c.device.load_library(c.tmp_path / "missing" / "lib.so"), nexus.Error, "does not exist", "NXS_InvalidLibrary"),
    Case("library_text_file", "Device", lambda c: c.device.load_library(c.file("readme.so", b"just some text\n" * 10)), nexus.Error, "readme.so"),
    Case("library_truncated", "Device", _truncated_library, nexus.Error, "truncated", isolate=True),
    Case("library_random_bytes", "Device", _garbage_library, nexus.Error, "garbage"),
    Case("library_zero_byte_file", "Device", lambda c: c.device.load_library(c.file("zero.so", b"")), nexus.Error, "zero.so"),
    Case("library_bytes_garbage", "Device", lambda c: c.device.load_library(b"\x00\x01not a library"), nexus.Error, "library"),
    Case("library_elf_header_only", "Device", lambda c: c.device.load_library(c.file("header.so", b"\x7fELF\x02\x01\x01" + b"\xff" * 200)), nexus.Error, "not a loadable CPU kernel library", needs="cpu"),
    Case("library_path_with_nul", "Device", lambda c: c.device.load_library("lib\0.so"), nexus.Error, "does not exist"),
    Case("library_path_none", "Device", lambda c: c.device.load_library(None), TypeError, "NoneType"),
    Case("library_path_list", "Device", lambda c: c.device.load_library(["a.so"]), TypeError, "list"),
    # ---- kernel catalogs (load_library of a manifest; nexus.catalog.build)
    Case("catalog_truncated_manifest", "Device", _truncated_catalog, nexus.Error, "truncated-catalog.json': not valid JSON", "NXS_InvalidLibrary"),
    Case("catalog_newer_version", "Device", lambda c: c.device.load_library(_catalog_manifest(c, "v2.json", {"nexus-catalog": 2, "libraries": {}})), nexus.Error, "version 2 is newer than this nexus reads (1)", "NXS_InvalidLibrary"),
    Case("catalog_no_version", "Device", lambda c: c.device.load_library(_catalog_manifest(c, "plain.json", {"libraries": {}})), nexus.Error, "not a nexus catalog", "NXS_InvalidLibrary"),
    Case("catalog_unknown_build_field", "Device", lambda c: c.device.load_library(_catalog_manifest(c, "typo.json", _catalog_of([{"runtime": "cpu", "fromat": "so", "file": "k.so"}]))), nexus.Error, "libraries.k.builds[0]: unknown field 'fromat'", "NXS_InvalidLibrary"),
    Case("catalog_runtime_not_a_string", "Device", lambda c: c.device.load_library(_catalog_manifest(c, "rt.json", _catalog_of([{"runtime": 7, "format": "so", "file": "k.so"}]))), nexus.Error, "builds[0].runtime: expected a non-empty string", "NXS_InvalidLibrary"),
    Case("catalog_no_build_for_device", "Device", lambda c: c.device.load_library(_catalog_manifest(c, "other.json", _catalog_of([{"runtime": "no_such_runtime", "format": "so", "arch": "z80", "file": "k.so"}]))), nexus.Error, "has no build for device", "NXS_InvalidLibrary"),
    Case("catalog_build_file_missing", "Device", lambda c: c.device.load_library(_catalog_manifest(c, "gone.json", _catalog_of([{"runtime": c.device.get_property_str("Runtime"), "format": "cuda", "kind": "source", "file": "gone.src"}]))), nexus.Error, "the file of build 'gone.src' does not exist", "NXS_InvalidLibrary"),
    Case("catalog_unknown_library", "Device", lambda c: c.device.load_library(pathlib.Path(c.library_path).parent / "no_such_library"), nexus.Error, "has no library 'no_such_library'", "NXS_InvalidLibrary"),
    Case("catalog_bytes_relative_file", "Device", lambda c: c.device.load_library(json.dumps(_catalog_of([{"runtime": c.device.get_property_str("Runtime"), "format": "so", "kind": "binary", "file": "k.so"}])).encode()), nexus.Error, "has no folder", "NXS_InvalidLibrary"),
    Case("catalog_build_missing_folder", "module", lambda c: nexus.catalog.build(c.tmp_path / "missing"), ValueError, "is not a folder"),
    Case("catalog_build_empty_folder", "module", lambda c: nexus.catalog.build(c.tmp_path), ValueError, "holds no kernel build"),
    Case("catalog_build_cubin_without_arch", "module", _catalog_cubin_without_arch, ValueError, "cannot tell the architecture"),
    Case("opencl_build_error", "Device", lambda c: c.device.load_library(b"__kernel void k(__global float *x) { x[0] = no_such_name; }"), nexus.Error, "no_such_name", "NXS_CompileError", needs="opencl"),
    Case("opencl_spirv_not_taken", "Device", lambda c: c.device.load_library(np.array([0x07230203, 0x00010000, 0, 1, 0], dtype="<u4").tobytes()), nexus.Error, "SPIR-V", needs="opencl"),
    Case("opencl_scalar_for_buffer", "Command", _opencl_scalar_for_buffer, ValueError, "argument 0 is a int64 scalar, but its parameter 0 is 'a'", needs="opencl"),
    Case("vulkan_bad_spirv", "Device", lambda c: c.device.load_library(np.array([0x07230203, 0x00010300, 0, 16, 0, 0xDEADBEEF, 7], dtype="<u4").tobytes()), nexus.Error, "not valid SPIR-V", "NXS_InvalidLibrary", needs="vulkan"),
    Case("vulkan_compile_error", "Device", lambda c: c.device.load_library(b"@compute @workgroup_size(1) fn k() { let x = no_such_name; }"), nexus.Error, "no_such_name", "NXS_CompileError", needs="vulkan"),
    Case("vulkan_binding_without_argument", "Library", lambda c: c.device.load_library(b"@group(0) @binding(3) var<storage, read_write> x: array<f32>; @compute @workgroup_size(1) fn k() { x[0] = 1.0; }").get_kernel("k"), nexus.Error, "binding 3 is not an argument position", "NXS_InvalidKernel", needs="vulkan"),
    Case("vulkan_push_constant_size", "Command", _vulkan_push_constant_size, ValueError, "argument 3 is a int64 scalar of 8 bytes, but the kernel's parameter 3 is 4 bytes", needs="vulkan"),
    # ---- Buffer
    Case("buffer_copy_none", "Buffer", lambda c: c.buf().copy(None), TypeError, "NoneType"),
    Case("buffer_slice_int", "Buffer", lambda c: c.buf()[3], TypeError, "slices"),
    Case("buffer_slice_str", "Buffer", lambda c: c.buf()["a"], TypeError, "slices"),
    Case("buffer_slice_step", "Buffer", lambda c: c.buf()[::2], ValueError, "step 1"),
    Case("buffer_slice_empty", "Buffer", lambda c: c.buf()[4:4], IndexError, "empty"),
    Case("buffer_slice_released", "Buffer", lambda c: c.released(c.buf())[0:4], IndexError, RELEASED),
    Case("buffer_numpy_released", "Buffer", lambda c: c.released(c.buf()).numpy(copy=True), nexus.Error, RELEASED, "NXS_Released"),
    Case("buffer_data_ptr_released", "Buffer", lambda c: c.released(c.buf()).data_ptr(), nexus.Error, RELEASED, "NXS_Released"),
    Case("buffer_get_data_released", "Buffer", lambda c: c.released(c.buf()).get_data(), nexus.Error, RELEASED, "NXS_Released"),
    Case("buffer_copy_too_small_bytearray", "Buffer", lambda c: c.buf(16).copy(bytearray(63)), ValueError, "holds 63 bytes"),
    Case("buffer_copy_released", "Buffer", lambda c: c.released(c.buf()).copy(np.empty(16, np.float32)), nexus.Error, RELEASED, "NXS_Released"),
    Case("buffer_write_released", "Buffer", lambda c: c.released(c.buf()).write(np.zeros(16, np.float32)), nexus.Error, RELEASED, "NXS_Released"),
    Case("buffer_write_too_large", "Buffer", lambda c: c.buf(16).write(np.zeros(17, np.float32)), ValueError, "68 bytes"),
    Case("buffer_write_str", "Buffer", lambda c: c.buf().write("abc"), TypeError, "got str"),
    Case("buffer_copy_into_object_array", "Buffer", _copy_into_object_array, TypeError, "dtype=object", isolate=True),
    Case("buffer_release_then_context_copy", "Buffer", _context_manager_buffer, nexus.Error, RELEASED, "NXS_Released"),
    Case("buffer_set_after_release", "Buffer", _set_released_buffer_then_run, nexus.Error, RELEASED, "NXS_Released"),
    Case("buffer_dlpack_released", "Buffer", lambda c: c.released(c.buf()).__dlpack__(), nexus.Error, RELEASED, "NXS_Released"),
    Case("buffer_pickle", "Buffer", lambda c: pickle.dumps(c.buf()), TypeError, "pickle"),
    Case("buffer_size_readonly", "Buffer", lambda c: _set_attr(c.buf(), "size", 4), AttributeError, "size"),
    # ---- Library and Kernel
    Case("library_kernel_typo", "Library", lambda c: c.kernels.get_kernel("vad"), nexus.Error, "kernel 'vad' not found", "NXS_InvalidKernel"),
    Case("library_kernel_none", "Library", lambda c: c.kernels.get_kernel(None), TypeError, "kernel name must be a str"),
    Case("library_kernel_nul", "Library", lambda c: c.kernels.get_kernel("vadd\0x"), ValueError, "not a valid symbol name"),
    Case("builtin_has_no_test_kernel", "Library", lambda c: c.device.get_builtin_library().get_kernel("vadd"), nexus.Error, "kernel 'vadd' not found", "NXS_InvalidKernel"),
    Case("library_released_get_kernel", "Library", lambda c: c.released(c.device.load_library(c.library_path)).get_kernel("vadd"), nexus.Error, RELEASED, "NXS_Released"),
    Case("library_context_manager", "Library", _context_manager_library, nexus.Error, RELEASED, "NXS_Released"),
    Case("kernel_unknown_property", "Kernel", lambda c: c.kernels.get_kernel("vadd").get_property_int("Registerz"), nexus.Error, "Registerz", "NXS_InvalidProperty"),
    Case("kernel_name_readonly", "Kernel", lambda c: _set_attr(c.kernels.get_kernel("vadd"), "name", "x"), AttributeError, "name"),
    Case("kernel_deepcopy", "Kernel", lambda c: copy.deepcopy(c.kernels.get_kernel("vadd")), TypeError, "pickle"),
    # ---- Event
    Case("event_signal_str", "Event", lambda c: c.device.create_event().signal("3"), TypeError, "event value must be an int"),
    Case("event_signal_float", "Event", lambda c: c.device.create_event().signal(1.5), TypeError, "event value must be an int"),
    Case("event_signal_huge", "Event", lambda c: c.device.create_event().signal(2**64), ValueError, "out of range"),
    Case("event_wait_negative_value", "Event", lambda c: c.device.create_event().wait(-2, timeout=1), ValueError, "negative"),
    Case("event_wait_nan_timeout", "Event", lambda c: c.device.create_event().wait(1, timeout=float("nan")), ValueError, "timeout NaN"),
    Case("event_wait_inf_timeout", "Event", lambda c: c.device.create_event().wait(1, timeout=float("inf")), ValueError, "timeout inf"),
    Case("event_wait_str_timeout", "Event", lambda c: c.device.create_event().wait(1, timeout="1"), TypeError, "real number"),
    Case("event_wait_times_out_zero", "Event", lambda c: c.device.create_event().wait(1, timeout=0), TimeoutError, "timed out"),
    Case("event_wait_times_out_timeline", "Event", _wait_on_unsignalled_timeline, TimeoutError, "current value 3"),
    Case("event_wait_times_out_on_stream", "Event", _nonblocking_wait_command_times_out, TimeoutError, "waiting for value 1"),
    Case("event_signal_released", "Event", lambda c: c.released(c.device.create_event()).signal(1), nexus.Error, RELEASED, "NXS_Released"),
    Case("event_wait_released", "Event", lambda c: c.released(c.device.create_event()).wait(1, timeout=1), nexus.Error, RELEASED, "NXS_Released"),
    Case("event_value_released", "Event", lambda c: c.released(c.device.create_event()).get_value(), nexus.Error, RELEASED, "NXS_Released"),
    Case("event_context_manager", "Event", _context_manager_event, nexus.Error, RELEASED, "NXS_Released"),
    # ---- Stream
    Case("stream_synchronize_released", "Stream", _stream_synchronize_timeout_free, nexus.Error, RELEASED, "NXS_Released"),
    Case("stream_context_manager", "Stream", _context_manager_stream, nexus.Error, RELEASED, "NXS_Released"),
    Case("stream_run_released", "Stream", _run_on_released_stream, nexus.Error, RELEASED, "NXS_Released"),
    # ---- Schedule
    Case("schedule_command_none", "Schedule", lambda c: c.device.create_schedule().create_command(None), TypeError, "Kernel"),
    Case("schedule_command_str", "Schedule", lambda c: c.device.create_schedule().create_command("vadd"), TypeError, "Kernel"),
    Case("schedule_command_library", "Schedule", lambda c: c.device.create_schedule().create_command(c.kernels), TypeError, "Kernel"),
    Case("schedule_signal_none", "Schedule", lambda c: c.device.create_schedule().create_signal_command(None), TypeError, "Event"),
    Case("schedule_signal_negative", "Schedule", lambda c: c.device.create_schedule().create_signal_command(c.device.create_event(), -1), ValueError, "negative"),
    Case("schedule_wait_str_value", "Schedule", lambda c: c.device.create_schedule().create_wait_command(c.device.create_event(), "1"), TypeError, "event value must be an int"),
    Case("schedule_run_stream_str", "Schedule", lambda c: c.device.create_schedule().run("stream0"), TypeError, "Stream"),
    Case("schedule_run_blocking_str", "Schedule", lambda c: c.device.create_schedule().run(None, "yes"), TypeError, "bool"),
    Case("schedule_run_unfinalized", "Schedule", _unfinalized_run, nexus.Error, "was never finalized"),
    Case("schedule_run_unset_argument", "Schedule", _unset_arg_run, ValueError, "argument 1 is not set"),
    Case("schedule_run_unset_gap", "Schedule", _unset_last_arg_run, ValueError, "argument 3 is not set"),
    Case("schedule_run_released_buffer", "Schedule", _run_with_released_buffer, nexus.Error, RELEASED, "NXS_Released"),
    Case("schedule_run_released_event", "Schedule", _run_signal_on_released_event, nexus.Error, RELEASED, "NXS_Released"),
    Case("schedule_run_released", "Schedule", _run_released_schedule, nexus.Error, RELEASED, "NXS_Released"),
    Case("schedule_record_after_release", "Schedule", lambda c: c.released(c.device.create_schedule()).create_command(c.kernels.get_kernel("vadd")), nexus.Error, RELEASED, "NXS_Released"),
    Case("schedule_signal_after_release", "Schedule", lambda c: c.released(c.device.create_schedule()).create_signal_command(c.device.create_event(), 1), nexus.Error, RELEASED, "NXS_Released"),
    Case("schedule_context_manager_on_error", "Schedule", _context_manager_schedule_on_error, nexus.Error, RELEASED, "NXS_Released"),
    # ---- Command
    Case("command_double_finalize", "Command", _double_finalize, nexus.Error, "already finalized"),
    Case("command_finalize_after_run", "Command", _double_finalize_after_run, nexus.Error, "already finalized"),
    Case("command_finalize_none_grid", "Command", lambda c: c.vadd().finalize(16, None), TypeError, "grid_size"),
    Case("command_finalize_grid_and_groups", "Command", lambda c: c.vadd().finalize(16, 16, num_groups=1), TypeError, "not both"),
    Case("command_finalize_groups_axes", "Command", lambda c: c.vadd().finalize([4, 1], num_groups=[4]), ValueError, "as many axes"),
    Case("command_finalize_groups_zero", "Command", lambda c: c.vadd().finalize(4, num_groups=0), ValueError, ">= 1"),
    Case("command_set_arg_host_array", "Command", lambda c: c.vadd().set_arg(0, np.ones(16, np.float32)), TypeError, "create_buffer"),
    Case("command_finalize_zero_axis", "Command", lambda c: c.vadd().finalize([1, 1, 1], [16, 0, 1]), ValueError, "grid_size"),
    Case("command_finalize_negative_shared", "Command", lambda c: c.vadd().finalize(16, 16, shared_memory=-1), ValueError, "shared_memory"),
    Case("command_finalize_huge_shared", "Command", lambda c: c.vadd().finalize(16, 16, shared_memory=2**40), ValueError, "shared_memory"),
    Case("command_finalize_bool_group", "Command", lambda c: c.vadd().finalize(True, 16), TypeError, "group_size"),
    Case("command_set_arg_on_signal", "Command", lambda c: c.signal_cmd().set_arg(0, 1), nexus.Error, "is not a kernel command", "NXS_InvalidCommand"),
    Case("command_set_buffer_on_signal", "Command", lambda c: c.signal_cmd().set_buffer(0, c.buf()), nexus.Error, "is not a kernel command", "NXS_InvalidCommand"),
    Case("command_finalize_signal", "Command", lambda c: c.signal_cmd().finalize(1, 1), nexus.Error, "is not a kernel command", "NXS_InvalidCommand"),
    Case("command_set_arg_none", "Command", lambda c: c.vadd().set_arg(3, None), TypeError, "NoneType"),
    Case("command_set_arg_float_as_int", "Command", lambda c: c.vadd().set_arg(3, 1.5, data_type=nexus.data_type.I32), TypeError, "must be an int"),
    Case("command_set_arg_u64_overflow", "Command", lambda c: c.vadd().set_arg(3, 2**64, data_type=nexus.data_type.U64), ValueError, "does not fit uint64"),
    Case("command_set_arg_i64_underflow", "Command", lambda c: c.vadd().set_arg(3, -(2**63) - 1, data_type=nexus.data_type.I64), ValueError, "does not fit int64"),
    Case("command_set_arg_numpy_f16", "Command", lambda c: c.vadd().set_arg(3, np.float16(1)), ValueError, "scalar kernel arguments"),
    Case("command_set_arg_index_huge", "Command", lambda c: c.vadd().set_arg(2**70, 1), ValueError, "out of range"),
    Case("command_set_buffer_index_64", "Command", lambda c: c.vadd().set_buffer(nexus.MAX_KERNEL_ARGS, c.buf()), ValueError, "argument index 64"),
    Case("command_set_arg_list", "Command", lambda c: c.vadd().set_arg(3, [1, 2]), TypeError, "list"),
    # ---- Properties objects
    Case("properties_missing_name", "Properties", lambda c: c.device.get_info().get_int("Wingspan"), nexus.Error, "Wingspan", "NXS_InvalidProperty"),
    Case("properties_getitem_missing", "Properties", lambda c: c.device.get_info()["Wingspan"], nexus.Error, "no property at path [\"Wingspan\"]", "NXS_InvalidProperty"),
    Case("properties_malformed_path", "Properties", lambda c: c.device.get_info().get("MemorySubsystem..MemoryTypes"), ValueError, MALFORMED),
    Case("path_dot_before_index", "Properties", lambda c: c.device.get_info().get("MemorySubsystem.[0]"), ValueError, MALFORMED),
    Case("properties_key_none", "Properties", lambda c: c.device.get_info().get_str(None), TypeError, "property key"),
    Case("properties_key_float_item", "Properties", lambda c: c.device.get_info().get_str(["Name", 0.5]), TypeError, "float"),
    Case("properties_key_bool", "Properties", lambda c: c.device.get_info().get_str(True), TypeError, "bool"),
    Case("properties_subtree_of_scalar", "Properties", lambda c: c.device.get_info().get_properties_at("Name").get_str("x"), nexus.Error, "no property at path"),
    Case("properties_to_dict_missing", "Properties", lambda c: c.device.get_info().to_dict("Wingspan"), nexus.Error, "Wingspan"),
    Case("properties_str_vec_of_int", "Properties", lambda c: c.device.get_info().get_str_vec("ComputeUnits"), nexus.Error, "not a list of strings"),
    Case("properties_int_vec_of_str", "Properties", lambda c: c.device.get_info().get_int_vec("Name"), nexus.Error, "not a list of integers"),
    Case("properties_to_json_bad_indent", "Properties", lambda c: c.device.get_info().to_json(indent="x"), TypeError, "str"),
    Case("database_entry_missing_path", "Properties", lambda c: nexus.lookup_device_info("sm_90").get_int(["MemorySubsystem", "MemoryTypes", 99]), nexus.Error, "no property at path"),
    # ---- devices of another runtime / another device (skipped with one device)
    Case("mismatched_buffer_set_buffer", "Command", _mismatched_buffer, nexus.Error, "is a buffer on device", "NXS_InvalidBuffer", needs="two_devices"),
    Case("mismatched_buffer_set_arg", "Command", _mismatched_buffer_via_set_arg, nexus.Error, "is a buffer on device", "NXS_InvalidBuffer", needs="two_devices"),
    Case("mismatched_kernel_device", "Schedule", _kernel_of_other_device, nexus.Error, "device", needs="two_devices"),
]


def find(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


def run_in_child() -> None:
    """Entry point of the child interpreter for `isolate=True` cases.

    argv: case id, runtime name, device index, library path, tmp folder.
    Prints one JSON line: the exception raised (or none).
    """
    import json
    import sys

    case_id, runtime, index, lib_path, tmp = sys.argv[1:6]
    device = nexus.get_runtime(runtime).get_device(int(index))
    ctx = Ctx(device=device, kernels=device.load_library(lib_path), library_path=lib_path, tmp_path=pathlib.Path(tmp))
    out: dict[str, Any] = {"raised": None}
    try:
        find(case_id).call(ctx)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        out = {"raised": f"{type(e).__module__}.{type(e).__qualname__}", "message": str(e),
               "status": int(e.status) if isinstance(e, nexus.Error) else None}
    print("MISUSE-RESULT " + json.dumps(out), flush=True)


def classes_covered() -> set[str]:
    return {c.cls for c in CASES}


assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


if __name__ == "__main__":
    run_in_child()
