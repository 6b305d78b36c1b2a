"""The spec's surface, the CPU build helper, `python -m nexus`, the README and the stubs."""

from __future__ import annotations

import inspect
import os
import pathlib
import re
import shutil
import subprocess
import sys

import nexus
import nexus.cpu
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SPEC_METHODS = {
    nexus.Runtime: ["get_devices", "get_device"],
    nexus.Device: ["get_info", "create_buffer", "copy_buffer", "create_event", "get_events", "load_library", "create_schedule", "create_stream"],
    nexus.Buffer: ["copy"],
    nexus.Library: ["get_kernel"],
    nexus.Event: ["signal", "wait"],
    nexus.Schedule: ["create_command", "create_signal_command", "create_wait_command", "run"],
    nexus.Command: ["set_buffer", "set_arg", "finalize", "get_event"],
    nexus.Properties: ["get_str", "get_int", "get_flt", "get_str_vec", "get_int_vec", "get_flt_vec", "get_property_keys"],
}
GETTERS = ["get_property_str", "get_property_int", "get_property_flt", "get_property_str_vec", "get_property_int_vec", "get_property_flt_vec"]


def test_spec_surface() -> None:
    for fn in ("get_runtimes", "get_device_info", "lookup_device_info", "create_buffer", "get_runtime"):
        assert callable(getattr(nexus, fn))
    for cls, methods in SPEC_METHODS.items():
        for m in methods + GETTERS:
            assert callable(getattr(cls, m, None)), f"{cls.__name__}.{m}"
    for cls in (nexus.Kernel, nexus.Stream):
        for m in GETTERS:
            assert callable(getattr(cls, m))
    assert issubclass(nexus.Error, RuntimeError)


def test_spec_defaults() -> None:
    def defaults(fn) -> dict:
        return {k: v.default for k, v in inspect.signature(fn).parameters.items() if v.default is not inspect.Parameter.empty}

    assert defaults(nexus.Schedule.run) == {"stream": None, "blocking": True}
    assert defaults(nexus.Device.create_event) == {"event_type": None}
    assert defaults(nexus.Schedule.create_signal_command) == {"value": None}
    assert defaults(nexus.Event.wait) == {"value": None, "timeout": None}


def test_system_buffer_and_copy_buffer(device: nexus.Device) -> None:
    a = np.arange(100, dtype=np.float64)
    sysbuf = nexus.create_buffer(a)
    assert sysbuf.get_property_str("Runtime") == "cpu"
    moved = device.copy_buffer(sysbuf)
    assert moved.get_property_str("Runtime") == device.get_property_str("Runtime")
    back = nexus.get_runtime("cpu").get_device(0).copy_buffer(moved)
    out = np.empty_like(a)
    back.copy(out)
    np.testing.assert_array_equal(out, a)
    sized = nexus.create_buffer(64)
    assert sized.get_property_int("Size") == 64
    assert len(sized) == 64


def test_reprs(device: nexus.Device) -> None:
    buf = device.create_buffer(np.zeros(4, np.float32))
    lib = device.get_builtin_library()
    kernel = lib.get_kernel("add_vectors")
    sched = device.create_schedule()
    cmd = sched.create_command(kernel)
    for obj, pattern in [
        (nexus.get_runtime("cpu"), r"Runtime 'cpu' with 1 device"),
        (device, r"Device \w+:\d+ "),
        (buf, r"Buffer\(16 bytes, float32\)"),
        (lib, r"Library '<builtin>'"),
        (kernel, r"Kernel 'add_vectors'"),
        (sched, r"Schedule of 1 command"),
        (cmd, r"Command 0 \(kernel 'add_vectors'\)"),
        (device.create_event(), r"Event\(Shared\).*value=0"),
        (device.create_stream(), r"Stream on"),
    ]:
        assert re.search(pattern, repr(obj)), repr(obj)


def test_build_library_from_text_and_errors(cpu_device: nexus.Device, tmp_path: pathlib.Path) -> None:
    if nexus.cpu.find_compiler() is None:
        pytest.skip("no C compiler")
    src = """
#include <nexus_cpu.h>
NXS_KERNEL void fill(void **args, const nxs_launch *l) {
    int32_t *out = NXS_BUFFER(args, 0, int32_t);
    int32_t v = NXS_SCALAR(args, 1, int32_t);
    for (size_t i = nxs_group_start(l, 0); i < nxs_group_end(l, 0); ++i) out[i] = v + (int32_t)i;
}
"""
    path = nexus.cpu.build_library(src, tmp_path / "fill.so")
    assert path == str(tmp_path / "fill.so") and os.path.exists(path)
    kernel = cpu_device.load_library(path).get_kernel("fill")
    buf = cpu_device.create_buffer(np.zeros(1000, np.int32))
    sched = cpu_device.create_schedule()
    cmd = sched.create_command(kernel)
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, 7)
    cmd.finalize(64, 1000)
    sched.run()
    out = np.empty(1000, np.int32)
    buf.copy(out)
    np.testing.assert_array_equal(out, np.arange(1000) + 7)

    with pytest.raises(nexus.Error, match="error") as e:
        nexus.cpu.build_library("int broken( {", tmp_path / "broken.so")
    assert "compiling" in str(e.value)
    with pytest.raises(nexus.Error, match="does not exist"):
        nexus.cpu.build_library("/no/such/file.c")
    assert os.path.exists(nexus.cpu.header_path())


def test_python_dash_m_nexus() -> None:
    proc = subprocess.run([sys.executable, "-m", "nexus"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cpu" in proc.stdout
    assert re.search(r"self-check cpu:0: PASS", proc.stdout), proc.stdout
    assert "generic-cpu-" in proc.stdout  # the database entry each device matched


def _readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_example_runs(tmp_path: pathlib.Path) -> None:
    if nexus.cpu.find_compiler() is None:
        pytest.skip("no C compiler")
    blocks = _readme_python_blocks()
    assert blocks, "README has no python example"
    for i, block in enumerate(blocks):
        script = tmp_path / f"example{i}.py"
        script.write_text(block)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, f"README example {i}:\n" + proc.stdout + proc.stderr
        assert "OK" in proc.stdout, f"README example {i} printed no OK"


def test_import_starts_nothing() -> None:
    """Import starts no thread; listing devices starts none of nexus's own
    (a GPU driver may start its own helper thread when it is opened)."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs /proc")
    code = (
        "import os, threading, numpy\n"
        "def names():\n"
        "    return sorted(open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task'))\n"
        "before = names()\n"
        "import nexus\n"
        "after_import = names()\n"
        "nexus.get_runtimes()\n"
        "print(before == after_import, [n for n in names() if n.startswith('nexus')], threading.active_count())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "[]", "1"], proc.stdout


def test_stubs_match_the_module() -> None:
    if shutil.which("stubtest") is None and subprocess.run([sys.executable, "-c", "import mypy.stubtest"], capture_output=True).returncode:
        pytest.skip("mypy is not installed (pip install .[test])")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "nexus"],
        capture_output=True, text=True, timeout=600, cwd=ROOT / "tests",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_known_runtimes_lists_every_runtime_in_listing_order() -> None:
    known = [r.get_name() for r in nexus.known_runtimes()]
    assert {"cpu", "cuda", "hip", "metal"} <= set(known)
    assert len(known) == len(set(known))
    # get_runtimes() is the known runtimes that have a device, best first:
    # runtimes with a GPU in known order, then the CPU runtime, then runtimes
    # whose devices are all CPUs or software devices (lavapipe, PoCL).
    listed = [r.get_name() for r in nexus.get_runtimes()]
    assert all(len(nexus.get_runtime(n)) == 0 for n in known if n not in listed)

    def has_gpu(name: str) -> bool:
        return any(d.get_property_str("Type") == "gpu" for d in nexus.get_runtime(name).get_devices())

    gpu = [n for n in known if n in listed and n != "cpu" and has_gpu(n)]
    software = [n for n in known if n in listed and n != "cpu" and not has_gpu(n)]
    assert listed == gpu + ["cpu"] + software
    for name in listed:
        types = [d.get_property_str("Type") for d in nexus.get_runtime(name).get_devices()]
        assert types == sorted(types, key=lambda t: t != "gpu"), f"{name}: GPUs first, got {types}"
    assert nexus.known_runtimes()[known.index("cpu")].get_devices()
