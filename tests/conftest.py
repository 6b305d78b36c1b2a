"""Shared fixtures: every test that takes `device` runs on every device present."""

from __future__ import annotations

import pathlib
import shutil

import nexus
import nexus.catalog
import nexus.cpu
import numpy as np
import pytest

KERNELS = pathlib.Path(__file__).resolve().parent / "kernels"


def _device_ids() -> list[tuple[str, int]]:
    return [(r.get_name(), i) for r in nexus.get_runtimes() for i in range(len(r.get_devices()))]


@pytest.fixture(params=_device_ids(), ids=lambda p: f"{p[0]}{p[1]}")
def device(request: pytest.FixtureRequest) -> nexus.Device:
    name, index = request.param
    return nexus.get_runtime(name).get_device(index)


def devices_of(runtime: str):
    """A fixture over the devices of one runtime (ids "<runtime><i>"), for
    the tests of that runtime's own features; skipped where it has none."""
    count = len(nexus.get_runtime(runtime).get_devices())
    params = list(range(count)) or [pytest.param(None, marks=pytest.mark.skip(reason=f"no {runtime} device"))]

    @pytest.fixture(params=params, ids=lambda i: f"{runtime}{i}")
    def runtime_device(request: pytest.FixtureRequest) -> nexus.Device:
        return nexus.get_runtime(runtime).get_device(request.param)

    return runtime_device


@pytest.fixture(scope="session")
def cpu_device() -> nexus.Device:
    return nexus.get_runtime("cpu").get_device(0)


_built: dict[str, str] = {}


def _cpu_library(stem: str, tmp_dir: pathlib.Path) -> str:
    if stem not in _built:
        _built[stem] = nexus.cpu.build_library(KERNELS / f"{stem}.c", tmp_dir / f"{stem}.so")
    return _built[stem]


def kernel_files(stem: str, tmp_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Runtime name -> file of test library `stem` (tests/kernels/<stem>.*):
    each file of a format nexus.catalog knows, for the runtime its extension
    names, and the C source compiled into the CPU runtime's shared library.
    A runtime added to nexus needs only its sources beside the others."""
    files: dict[str, pathlib.Path] = {}
    for src in sorted(KERNELS.glob(f"{stem}.*")):
        if src.name.count(".") != 1:
            continue
        built = pathlib.Path(_cpu_library(stem, tmp_dir)) if src.suffix == ".c" else src
        known = nexus.catalog.EXTENSIONS.get(built.suffix)
        if known is not None:
            files.setdefault(known[0], built)
    return files


# The test libraries every runtime's kernels define (tests/kernels/<stem>.*).
TEST_STEMS = ("kernels", "spec_kernel")

_catalogs: dict[str, pathlib.Path] = {}


def runtimes_with_kernels(tmp_dir: pathlib.Path) -> set[str]:
    """Runtimes present here that have test kernels."""
    present = {r.get_name() for r in nexus.get_runtimes()}
    return present & set(kernel_files("kernels", tmp_dir))


def kernel_catalog(tmp_dir: pathlib.Path) -> pathlib.Path:
    """One kernel catalog (`tmp_dir/catalog`) of the test libraries of every
    runtime present (the CPU's compiled here); built once per folder, at
    session start through `build_dir`."""
    key = str(tmp_dir)
    if key not in _catalogs:
        folder = tmp_dir / "catalog"
        folder.mkdir(exist_ok=True)
        runtimes = runtimes_with_kernels(tmp_dir)
        for stem in TEST_STEMS:
            for runtime, built in kernel_files(stem, tmp_dir).items():
                if runtime in runtimes:
                    shutil.copyfile(built, folder / f"{stem}{built.suffix}")
        nexus.catalog.build(folder)
        _catalogs[key] = folder
    return _catalogs[key]


def direct_library_path(device: nexus.Device, stem: str, tmp_dir: pathlib.Path) -> str:
    """The test library `stem` as its runtime's own file, not through the catalog."""
    runtime = device.get_property_str("Runtime")
    files = kernel_files(stem, tmp_dir)
    if runtime not in files:
        pytest.skip(f"no test kernels for runtime {runtime}")
    return str(files[runtime])


def library_path(device: nexus.Device, stem: str, tmp_dir: pathlib.Path) -> str:
    """The test library `stem` for this device: library `stem` of the test
    kernel catalog, so every runtime's tests load through catalog selection."""
    runtime = device.get_property_str("Runtime")
    if runtime not in runtimes_with_kernels(tmp_dir):
        pytest.skip(f"no test kernels for runtime {runtime}")
    return str(kernel_catalog(tmp_dir) / stem)


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("kernels")
    kernel_catalog(path)
    return path


@pytest.fixture
def kernels(device: nexus.Device, build_dir: pathlib.Path) -> nexus.Library:
    return device.load_library(library_path(device, "kernels", build_dir))


@pytest.fixture
def lib_path(device: nexus.Device, build_dir: pathlib.Path) -> str:
    """The path of the `kernels` test library for this device's runtime."""
    return library_path(device, "kernels", build_dir)


@pytest.fixture
def spec_library_path(device: nexus.Device, build_dir: pathlib.Path) -> str:
    return library_path(device, "spec_kernel", build_dir)


# Helpers the runtime-specific test files share.


# A CUDA/HIP kernel: each run counts itself in, then spins until two runs
# are in (or ~1 s of clock cycles pass) and records in `ok` whether it saw
# the other one.
GATE_SOURCE = r"""
extern "C" __global__ void gate(unsigned *count, unsigned *ok) {
    unsigned me = atomicAdd(count, 1u);
    long long start = clock64();
    while (atomicAdd(count, 0u) < 2u && clock64() - start < 2000000000LL) {}
    if (me < 2u) ok[me] = atomicAdd(count, 0u) >= 2u ? 1u : 0u;
}
"""


def assert_runs_overlap_on_two_streams(device: nexus.Device, then_fill) -> None:
    """Runs one schedule (the gate kernel, then `then_fill(schedule, y)`,
    which sets the 16 floats of `y` to 7: together one graph) on two streams
    at once. Each run's gate waits on the device for the other's, so both
    see the other only if the runs overlapped."""
    gate = device.load_library(GATE_SOURCE.encode()).get_kernel("gate")
    count = device.create_buffer(np.zeros(1, np.uint32))
    ok = device.create_buffer(np.zeros(2, np.uint32))
    y = device.zeros(16)
    s = device.create_schedule()
    cmd = s.create_command(gate)
    set_args(cmd, [count, ok])
    cmd.finalize(1, 1)
    then_fill(s, y)
    a, b = device.create_stream(), device.create_stream()
    s.run(a, blocking=False)
    s.run(b, blocking=False)
    a.synchronize()
    b.synchronize()
    np.testing.assert_array_equal(ok.numpy(), [1, 1])
    np.testing.assert_array_equal(y.numpy(), np.full(16, 7, np.float32))


def set_args(cmd, args) -> None:
    """Sets a command's arguments in order: Buffers through set_buffer,
    (value, data_type) pairs and plain numbers through set_arg. (Also
    copied into test_execution_model's child processes.)"""
    for i, a in enumerate(args):
        if isinstance(a, nexus.Buffer):
            cmd.set_buffer(i, a)
        elif isinstance(a, tuple):
            cmd.set_arg(i, a[0], data_type=a[1])
        else:
            cmd.set_arg(i, a)


def run_kernel(device: nexus.Device, kernel: nexus.Kernel, args, group, grid, stream=None, **kw) -> nexus.Schedule:
    """Runs one kernel command (arguments as `set_args` takes them), blocking."""
    s = device.create_schedule()
    cmd = s.create_command(kernel)
    set_args(cmd, args)
    cmd.finalize(group, grid, **kw)
    s.run(stream)
    return s


def read_buffer(buf: nexus.Buffer, dtype=np.float32) -> np.ndarray:
    """The buffer's contents copied to the host as `dtype`."""
    out = np.empty(buf.nbytes // np.dtype(dtype).itemsize, dtype)
    buf.copy(out)
    return out
