"""Regression tests for the execution model (DESIGN.md, "Execution model").

One test per defect found in review (a few defects have several distinct
mechanisms, each with its own test); every test's docstring starts with
"Defect N:". Tests run on every device unless the defect is specific to a
runtime (then they skip elsewhere), and tests that need torch or CuPy skip
without them.

Nothing here may hang the suite: event waits have timeouts, blocking calls
that could hang run in a daemon thread joined with a timeout (`within`),
and scenarios whose failure is a crash or a frozen interpreter run in a
child process under a timeout (`run_child`).
"""

from __future__ import annotations

import inspect
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import nexus
import numpy as np
import pytest
from conftest import set_args

HANG_GUARD = 60  # seconds a child process or a blocking call may take: only a hang gets near it
WAIT = 30  # seconds an event wait may take where the work is queued and bound to finish
SPIN_US = 50_000  # how long a "slow" kernel spins (50 ms)
N = 1024  # elements of the small float32 buffers most tests use


# --------------------------------------------------------------- helpers
# The helpers below are also copied into child processes (inspect.getsource),
# so a child records commands exactly as the in-process tests do.


def command(schedule, kernel, *args, grid, group=256, shared_memory=0):
    """Records a kernel command: Buffers through set_buffer, (value,
    data_type) pairs and plain ints/floats through set_arg, then finalize."""
    cmd = schedule.create_command(kernel)
    set_args(cmd, args)
    if isinstance(grid, int) and isinstance(group, int):
        group = min(group, grid)
    cmd.finalize(group, grid, shared_memory=shared_memory)
    return cmd


def fill_cmd(schedule, kernels, buf, value, n):
    """buf[:n] = value (float32)."""
    return command(schedule, kernels.get_kernel("fill_f32"), buf, float(value), n, grid=n)


def spin_cmd(schedule, kernels, buf, value, n, microseconds):
    """buf[:n] = value after spinning `microseconds`: n <= 1024 work-items in
    one group where the kernel allows it (NVIDIA's OpenCL allows 256), so
    the launch takes about the spin time once on every runtime."""
    assert n <= 1024
    kernel = kernels.get_kernel("spin_fill_f32")
    group = min(n, kernel.get_property_int("MaxThreadsPerGroup"))
    return command(schedule, kernel, buf, float(value), n, int(microseconds), grid=n, group=group)


def finish(device, stream, timeout=30.0):
    """Waits (with a timeout) until everything submitted so far to `stream`
    (None: the device's default stream) is done, through a signal command
    queued behind it."""
    ev = device.create_event()
    s = device.create_schedule()
    s.create_signal_command(ev, 1)
    s.run(stream, blocking=False)
    ev.wait(1, timeout=timeout)


# ------------------------------------------------------ in-process guards


def within(fn, timeout: float = HANG_GUARD, what: str = "the call"):
    """Runs fn() in a daemon thread; fails the test if it does not return
    within `timeout` seconds (a hang), re-raises what it raised."""
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"{what} did not return within {timeout} s (hang)")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def runtime_of(device: nexus.Device) -> str:
    return device.get_property_str("Runtime")


def require_cuda(device: nexus.Device) -> None:
    if runtime_of(device) != "cuda":
        pytest.skip("CUDA-specific defect")


def require_cpu(device: nexus.Device) -> None:
    if runtime_of(device) != "cpu":
        pytest.skip("CPU-specific defect")


def read(buf: nexus.Buffer, dtype=np.float32, timeout: float = HANG_GUARD) -> np.ndarray:
    out = np.empty(buf.nbytes // np.dtype(dtype).itemsize, dtype)
    within(lambda: buf.copy(out), timeout, "Buffer.copy")
    return out


def cuda_library():
    """(name, module) of an installed CUDA array library (torch or CuPy), or None."""
    try:
        import torch

        if torch.cuda.is_available():
            return "torch", torch
    except ImportError:
        pass
    try:
        import cupy

        return "cupy", cupy
    except ImportError:
        return None


# ------------------------------------------------------- child processes

_PRELUDE = """
import faulthandler, gc, os, sys, threading, time
if os.environ.get("NEXUS_TEST_DUMP_AFTER"):
    faulthandler.dump_traceback_later(float(os.environ["NEXUS_TEST_DUMP_AFTER"]), exit=False)
import numpy as np
import nexus
device = nexus.get_runtime(sys.argv[1]).get_device(int(sys.argv[2]))
kernels = device.load_library(sys.argv[3])
IS_CUDA = device.get_property_str("Runtime") == "cuda"
ARGS = sys.argv[4:]
"""

_CHILD_HELPERS = "\n\n".join(inspect.getsource(f) for f in [set_args, command, fill_cmd, spin_cmd, finish, cuda_library])


def _device_index(device: nexus.Device) -> int:
    runtime = runtime_of(device)
    return next(i for i, d in enumerate(nexus.get_runtime(runtime).get_devices()) if d == device)


def child_script(body: str) -> str:
    return _PRELUDE + _CHILD_HELPERS + "\n\n" + textwrap.dedent(body)


def child_argv(device: nexus.Device, lib_path: str, *extra: str) -> list[str]:
    return [sys.executable, "-c", "", runtime_of(device), str(_device_index(device)), lib_path, *extra]


def run_child(device: nexus.Device, lib_path: str, body: str, *extra: str, timeout: float = HANG_GUARD,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `body` (after the prelude and helpers) in a fresh interpreter;
    fails the test if it runs past `timeout` (a hang or a freeze)."""
    # Under compute-sanitizer everything runs many times slower.
    timeout *= float(os.environ.get("NEXUS_TEST_TIME_SCALE", "1"))
    argv = child_argv(device, lib_path, *extra)
    argv[2] = child_script(body)
    # A hung child prints every thread's Python stack before it is killed.
    env = {**os.environ, **(env or {}), "NEXUS_TEST_DUMP_AFTER": str(max(1.0, timeout - 5))}
    try:
        return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        hung = f"the child process hung (killed after {timeout} s)\nstdout: {out or ''}\nstderr: {(err or '')[-3000:]}"
    pytest.fail(hung)


def describe(proc: subprocess.CompletedProcess) -> str:
    how = f"exit code {proc.returncode}"
    if proc.returncode < 0:
        how += f" (killed by {signal.Signals(-proc.returncode).name})"
    return f"{how}\nstdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"


def assert_clean(proc: subprocess.CompletedProcess, marker: str = "DONE") -> None:
    assert proc.returncode == 0, describe(proc)
    assert marker in proc.stdout, describe(proc)
    assert "Fatal Python error" not in proc.stderr, describe(proc)
    assert "panicked" not in proc.stderr, describe(proc)


def skip_if_child_skipped(proc: subprocess.CompletedProcess) -> None:
    m = re.search(r"^SKIP (.*)$", proc.stdout, re.MULTILINE)
    if m:
        pytest.skip(m.group(1))


# =====================================================================
# Defect 1: release() and zero-copy views
# =====================================================================


def test_release_keeps_dlpack_export_alive(device: nexus.Device, lib_path: str) -> None:
    """Defect 1: Buffer.release() freed memory that a DLPack view of the
    buffer (np.from_dlpack on the CPU, torch/CuPy on CUDA) still used."""
    proc = run_child(device, lib_path, """
        n = 16 << 20   # 64 MiB: freed with munmap, so a dangling view faults
        x = np.arange(n, dtype=np.float32)
        buf = device.create_buffer(x)
        try:
            kind = buf.__dlpack_device__()[0]
        except BufferError:
            print("SKIP this device's memory is not exported in place", flush=True)
            sys.exit(0)
        if kind not in (1, 2):
            print(f"SKIP no DLPack consumer for device type {kind} in this process", flush=True)
            sys.exit(0)
        if kind == 2:
            lib = cuda_library()
            if lib is None:
                print("SKIP needs torch or CuPy to import a CUDA DLPack capsule", flush=True)
                sys.exit(0)
            name, mod = lib
            view = mod.from_dlpack(buf)
            to_numpy = (lambda v: v.cpu().numpy()) if name == "torch" else mod.asnumpy
        else:
            assert buf.__dlpack_device__() == (1, 0)
            view = np.from_dlpack(buf)
            to_numpy = np.asarray
        assert tuple(view.shape) == (n,), view.shape
        buf.release()
        del buf
        gc.collect()
        # New allocations of the same size reuse freed memory, if it was freed.
        churn = [device.create_buffer(np.full(n, -1, np.float32)) for _ in range(3)]
        got = to_numpy(view)
        print("VIEW", "OK" if np.array_equal(got, x) else f"CHANGED first={got[:4]}", flush=True)
        print("DONE", flush=True)
    """)
    skip_if_child_skipped(proc)
    assert_clean(proc)
    assert "VIEW OK" in proc.stdout, describe(proc)
    if runtime_of(device) == "cpu":
        # And in this process: the view still reads the data after release().
        n = 1 << 16
        x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
        buf = device.create_buffer(x)
        view = np.from_dlpack(buf)
        assert view.dtype == np.float32 and view.shape == (n,)
        buf.release()
        churn = [device.create_buffer(np.full(n, 7, np.float32)) for _ in range(4)]
        np.testing.assert_array_equal(view, x)
        del churn


def test_release_keeps_cuda_array_interface_view_alive(device: nexus.Device, lib_path: str) -> None:
    """Defect 1: Buffer.release() freed memory that a view made through
    __cuda_array_interface__ (torch.as_tensor / cupy.asarray) still used."""
    require_cuda(device)
    proc = run_child(device, lib_path, """
        lib = cuda_library()
        if lib is None:
            print("SKIP needs torch or CuPy", flush=True)
            sys.exit(0)
        name, mod = lib
        n = 4 << 20
        x = np.arange(n, dtype=np.float32)
        buf = device.create_buffer(x)
        if name == "torch":
            view = mod.as_tensor(buf, device="cuda")
            to_numpy = lambda v: v.cpu().numpy()
        else:
            view = mod.asarray(buf)
            to_numpy = mod.asnumpy
        buf.release()
        del buf
        gc.collect()
        churn = [device.create_buffer(np.full(n, -1, np.float32)) for _ in range(3)]
        got = to_numpy(view)
        print("VIEW", "OK" if np.array_equal(got, x) else f"CHANGED first={got[:4]}", flush=True)
        print("DONE", flush=True)
    """)
    skip_if_child_skipped(proc)
    assert_clean(proc)
    assert "VIEW OK" in proc.stdout, describe(proc)


def test_release_keeps_buffer_made_from_a_buffer_alive(device: nexus.Device, lib_path: str) -> None:
    """Defect 1: device.create_buffer(other_buffer) wraps other_buffer's
    memory on CUDA; other_buffer.release() freed it under the new buffer."""
    require_cuda(device)
    proc = run_child(device, lib_path, """
        n = 4 << 20
        x = np.arange(n, dtype=np.float32)
        first = device.create_buffer(x)
        second = device.create_buffer(first)
        wrapped = second.__cuda_array_interface__["data"][0] == first.__cuda_array_interface__["data"][0]
        print("WRAPPED", wrapped, flush=True)
        first.release()
        del first
        gc.collect()
        churn = [device.create_buffer(np.full(n, -1, np.float32)) for _ in range(3)]
        out = np.empty(n, np.float32)
        second.copy(out)
        print("VIEW", "OK" if np.array_equal(out, x) else f"CHANGED first={out[:4]}", flush=True)
        print("DONE", flush=True)
    """)
    assert_clean(proc)
    assert "VIEW OK" in proc.stdout, describe(proc)


# =====================================================================
# Defect 2: memory imported from torch lives until queued work is done
# =====================================================================


def test_torch_tensor_lives_until_queued_work_on_it_is_done(device: nexus.Device, lib_path: str) -> None:
    """Defect 2: a buffer wrapping a torch tensor did not keep the tensor
    (its memory) alive until the queued nexus work on it was done: after
    `del t, buf`, new torch tensors got the memory and the kernel still
    running overwrote them."""
    require_cuda(device)
    proc = run_child(device, lib_path, """
        try:
            import torch
        except ImportError:
            print("SKIP needs torch", flush=True); sys.exit(0)
        if not torch.cuda.is_available():
            print("SKIP torch without CUDA", flush=True); sys.exit(0)
        n = 1 << 22
        stream = device.create_stream()
        overwritten = []
        for trial in range(3):
            t = torch.zeros(n, device="cuda")
            torch.cuda.synchronize()
            buf = device.create_buffer(t)          # wraps t's memory
            s = device.create_schedule()
            spin_cmd(s, kernels, buf, 7.0, 1024, 200_000)   # 200 ms, then writes...
            fill_cmd(s, kernels, buf, 7.0, n)               # ...the whole tensor
            s.run(stream, blocking=False)
            del t, buf, s
            gc.collect()
            fresh = [torch.full((n,), 3.0, device="cuda") for _ in range(4)]
            torch.cuda.synchronize()
            stream.synchronize()
            torch.cuda.synchronize()
            overwritten.append(sum(int((f != 3).sum()) for f in fresh))
        print("OVERWRITTEN", overwritten, flush=True)
        print("DONE", flush=True)
    """)
    skip_if_child_skipped(proc)
    assert_clean(proc)
    assert "OVERWRITTEN [0, 0, 0]" in proc.stdout, describe(proc)


# =====================================================================
# Defect 3: builtin add_vectors with a grid larger than its buffers
# =====================================================================


def test_builtin_add_vectors_refuses_grid_larger_than_buffers(device: nexus.Device, lib_path: str) -> None:
    """Defect 3: the builtin add_vectors ran a grid larger than its buffers
    (writing past them); it must raise ValueError naming the kernel before
    anything runs."""
    proc = run_child(device, lib_path, """
        n = 1024
        a = device.create_buffer(np.ones(n, np.float32))
        b = device.create_buffer(np.ones(n, np.float32))
        c = device.create_buffer(np.full(n, -1, np.float32))
        s = device.create_schedule()
        cmd = s.create_command(device.get_builtin_library().get_kernel("add_vectors"))
        for i, x in enumerate([a, b, c]):
            cmd.set_buffer(i, x)
        try:
            cmd.finalize(256, 1 << 26)      # 64 Mi work-items over 1 Ki-element buffers
            s.run()
            print("RESULT ran", flush=True)
        except ValueError as e:
            print("RESULT ValueError", e, flush=True)
        except Exception as e:
            print("RESULT", type(e).__name__, e, flush=True)
        out = np.empty(n, np.float32)
        c.copy(out)
        print("UNTOUCHED", bool((out == -1).all()), flush=True)
        print("DONE", flush=True)
    """)
    assert_clean(proc)
    m = re.search(r"^RESULT (.*)$", proc.stdout, re.MULTILINE)
    assert m and m.group(1).startswith("ValueError"), describe(proc)
    assert "add_vectors" in m.group(1), describe(proc)
    assert "UNTOUCHED True" in proc.stdout, describe(proc)
    # The same in this process (safe now that the child showed no crash).
    n = 1024
    bufs = [device.create_buffer(np.ones(n, np.float32)) for _ in range(3)]
    s = device.create_schedule()
    cmd = s.create_command(device.get_builtin_library().get_kernel("add_vectors"))
    for i, x in enumerate(bufs):
        cmd.set_buffer(i, x)
    with pytest.raises(ValueError, match="add_vectors"):
        cmd.finalize(256, 4 * n)
        s.run()
    np.testing.assert_array_equal(read(bufs[2]), np.ones(n, np.float32))


# =====================================================================
# Defect 4: __cuda_array_interface__ with an invalid stream
# =====================================================================


def test_cuda_array_interface_with_an_invalid_stream_never_crashes(device: nexus.Device, lib_path: str) -> None:
    """Defect 4: create_buffer(obj) synchronised whatever `stream` obj's
    __cuda_array_interface__ named, so a bad handle (0x1234) crashed the
    process. No handle can be proven live without the driver dereferencing
    it, so nexus synchronises the whole device for any handle other than the
    protocol's constants (1, 2): the import works and sees the data. The
    protocol's disallowed 0, and negative values, raise ValueError."""
    require_cuda(device)
    proc = run_child(device, lib_path, """
        n = 16
        src = device.create_buffer(np.arange(n, dtype=np.float32))
        ptr = src.__cuda_array_interface__["data"][0]

        class Foreign:
            def __init__(self, stream):
                self.__cuda_array_interface__ = {
                    "shape": (n,), "typestr": "<f4", "data": (ptr, False),
                    "version": 3, "strides": None, "stream": stream,
                }

        for stream in [0x1234, 1, 2, 0, -5]:
            try:
                b = device.create_buffer(Foreign(stream))
                out = np.empty(n, np.float32)
                b.copy(out)
                print("ACCEPTED", hex(stream), bool((out == np.arange(n)).all()), flush=True)
            except (ValueError, nexus.Error) as e:
                print("REFUSED", hex(stream), type(e).__name__, e, flush=True)
        print("DONE", flush=True)
    """)
    assert_clean(proc)
    for handle in ("0x1234", "0x1", "0x2"):
        assert f"ACCEPTED {handle} True" in proc.stdout, describe(proc)
    assert "REFUSED 0x0 ValueError" in proc.stdout, describe(proc)
    assert "REFUSED -0x5 ValueError" in proc.stdout, describe(proc)


# =====================================================================
# Defect 5: load_library(bytes) and a predictable temp path
# =====================================================================


def test_load_library_bytes_does_not_follow_planted_symlinks(device: nexus.Device, lib_path: str,
                                                             tmp_path: pathlib.Path) -> None:
    """Defect 5: load_library(bytes) staged the image at the predictable
    /tmp/nexus-lib-{pid}-{n}.so and followed a symlink planted there,
    overwriting the file it pointed at."""
    victims = tmp_path / "victims"
    victims.mkdir()
    for k in range(21):
        (victims / f"victim-{k}.txt").write_bytes(b"precious data %d\n" % k)
    proc = run_child(device, lib_path, """
        import tempfile
        victims, image = ARGS[0], ARGS[1]
        planted = []
        for d in sorted({"/tmp", tempfile.gettempdir()}):
            for k in range(21):   # the names a process-wide counter gives the first 21 loads
                p = os.path.join(d, f"nexus-lib-{os.getpid()}-{k}.so")
                if not os.path.lexists(p):
                    os.symlink(os.path.join(victims, f"victim-{k}.txt"), p)
                    planted.append(p)
        data = open(image, "rb").read()
        try:
            for _ in range(3):
                lib = device.load_library(data)
            n = 1000
            buf = device.create_buffer(np.zeros(n, np.float32))
            s = device.create_schedule()
            fill_cmd(s, lib, buf, 5.0, n)
            s.run()
            out = np.empty(n, np.float32)
            buf.copy(out)
            print("WORKS", bool((out == 5).all()), flush=True)
        finally:
            for p in planted:
                if os.path.islink(p):
                    os.remove(p)
        changed = [k for k in range(21)
                   if open(os.path.join(victims, f"victim-{k}.txt"), "rb").read() != b"precious data %d\\n" % k]
        print("OVERWRITTEN", changed, flush=True)
        print("DONE", flush=True)
    """, str(victims), device.load_library(lib_path).get_property_str("CatalogFile"))  # the build's own bytes
    for d in {"/tmp", tempfile.gettempdir()}:  # links a crashed child left behind
        for link in pathlib.Path(d).glob("nexus-lib-*.so"):
            if link.is_symlink() and str(victims) in os.readlink(link):
                link.unlink()
    changed = [k for k in range(21) if (victims / f"victim-{k}.txt").read_bytes() != b"precious data %d\n" % k]
    assert not changed, (
        f"load_library(bytes) wrote through the symlinks planted at nexus-lib-<pid>-{changed}.so\n{describe(proc)}"
    )
    assert_clean(proc)
    assert "OVERWRITTEN []" in proc.stdout, describe(proc)
    assert "WORKS True" in proc.stdout, describe(proc)


# =====================================================================
# Defects 6-8: deadlocks
# =====================================================================


def test_schedule_properties_while_another_thread_runs_it(device: nexus.Device, lib_path: str) -> None:
    """Defect 6: reading a schedule's properties ("Status", ...) in one
    thread while another thread runs (and so re-encodes) the same schedule
    took two locks in opposite orders: the process froze."""
    proc = run_child(device, lib_path, """
        sys.setswitchinterval(1e-5)           # hand the GIL over often: many more interleavings
        n = 1024
        buf = device.create_buffer(np.zeros(n, np.float32))
        s = device.create_schedule()
        cmd = fill_cmd(s, kernels, buf, 0.0, n)
        stop_at = time.monotonic() + 4.0
        runs = [0, 0, 0]

        def runner(j):
            i = 0
            while time.monotonic() < stop_at:
                cmd.set_arg(1, float(i))      # an edit: the next run re-encodes
                s.run()
                i += 1
            runs[j] = i

        threads = [threading.Thread(target=runner, args=(j,), daemon=True) for j in range(3)]
        for t in threads:
            t.start()
        reads = 0
        while any(t.is_alive() for t in threads):
            s.get_property_str("Status")
            s.get_property_int("Runs")
            s.get_properties()
            reads += 1
        for t in threads:
            t.join()
        print("DONE", runs, reads, flush=True)
    """, timeout=45)
    assert_clean(proc)


def test_dropping_dlpack_import_while_schedule_runs_in_another_thread(device: nexus.Device, lib_path: str) -> None:
    """Defect 7: the last reference to a DLPack-imported CUDA buffer was
    dropped under a schedule lock while encoding in one thread; its deleter
    needs the GIL, which another thread held while waiting for that lock:
    the process froze."""
    require_cuda(device)
    proc = run_child(device, lib_path, """
        try:
            import torch
        except ImportError:
            print("SKIP needs torch", flush=True); sys.exit(0)
        if not torch.cuda.is_available():
            print("SKIP torch without CUDA", flush=True); sys.exit(0)

        class DLPackOnly:
            def __init__(self, t):
                self.t = t
            def __dlpack__(self, stream=None):
                return self.t.__dlpack__() if stream is None else self.t.__dlpack__(stream=stream)
            def __dlpack_device__(self):
                return self.t.__dlpack_device__()

        sys.setswitchinterval(1e-5)           # hand the GIL over often: many more interleavings
        n = 1 << 16
        s = device.create_schedule()
        cmd = command(s, kernels.get_kernel("affine_f32"),
                      device.create_buffer(DLPackOnly(torch.zeros(n, device="cuda"))), 1.0, 1.0, n, grid=n)
        stop_at = time.monotonic() + 3.0

        def runner():
            while time.monotonic() < stop_at:
                s.run()                        # encodes after every edit below

        threads = [threading.Thread(target=runner, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        swaps = 0
        while any(t.is_alive() for t in threads):
            b = device.create_buffer(DLPackOnly(torch.zeros(n, device="cuda")))
            cmd.set_buffer(0, b)               # the previous buffer's last reference is the encoding
            del b
            s.get_property_str("Status")
            swaps += 1
        for t in threads:
            t.join()
        print("DONE", swaps, flush=True)
    """, timeout=45)
    skip_if_child_skipped(proc)
    assert_clean(proc)


def test_logging_from_background_threads_does_not_deadlock(device: nexus.Device, lib_path: str) -> None:
    """Defect 8: a background thread (a held run's worker) logged through
    Python's logging while holding a lock the main thread, holding the GIL,
    waited for: the process froze. With NEXUS_LOG=info and a handler on the
    "nexus" logger, held runs released from the host must all complete."""
    proc = run_child(device, lib_path, """
        import logging
        records = []

        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())
                device.get_property_str("Runtime")   # a handler may call nexus too

        logger = logging.getLogger("nexus")
        logger.addHandler(Keep())
        logger.setLevel(logging.DEBUG)
        n = 1024
        buf = device.create_buffer(np.zeros(n, np.float32))
        done = device.create_event()
        stream = device.create_stream()
        for i in range(1, 41):
            gate = device.create_event()
            s = device.create_schedule()
            s.create_wait_command(gate, 1)
            fill_cmd(s, kernels, buf, float(i), n)
            s.create_signal_command(done, i)
            s.run(stream, blocking=False)           # held behind the gate
            if i % 2:
                threading.Timer(0.001, gate.signal, (1,)).start()
            for _ in range(20):                       # the main thread keeps calling nexus
                device.get_events()
                s.get_property_str("Status")
                gate.get_value()
                device.create_buffer(np.zeros(16, np.float32)).release()
            gate.signal(1)
            done.wait(i, timeout=30)
        out = np.empty(n, np.float32)
        buf.copy(out)
        assert (out == 40).all(), out[:4]
        print("DONE", len(records), flush=True)
    """, env={"NEXUS_LOG": "info"})
    assert_clean(proc)


# =====================================================================
# Defect 9: a wait after a host reset
# =====================================================================


def test_wait_after_host_reset_holds_only_its_stream(device: nexus.Device, kernels: nexus.Library) -> None:
    """Defect 9: after an event signalled to 5 was reset from the host
    (signal(0)), a wait(ev, 1) was treated as satisfied (or parked on the
    GPU): the kernel behind it must not run until the host signals 1, and
    meanwhile other streams, blocking runs on the default stream, copies
    and allocations go on."""
    n = N
    ev, done = device.create_event(), device.create_event()
    stream_a, stream_b = device.create_stream(), device.create_stream()
    setter = device.create_schedule()
    setter.create_signal_command(ev, 5)              # 5 by a stream signal...
    setter.run(stream_b, blocking=False)
    ev.wait(5, timeout=WAIT)
    ev.signal(0)                                      # ...then a host reset
    held_buf = device.create_buffer(np.zeros(n, np.float32))
    held = device.create_schedule()
    held.create_wait_command(ev, 1)
    fill_cmd(held, kernels, held_buf, 1.0, n)
    held.create_signal_command(done, 1)
    try:
        held.run(stream_a, blocking=False)
        # Other streams run.
        xb = device.create_buffer(np.zeros(n, np.float32))
        done_b = device.create_event()
        sb = device.create_schedule()
        fill_cmd(sb, kernels, xb, 2.0, n)
        sb.create_signal_command(done_b, 1)
        sb.run(stream_b, blocking=False)
        done_b.wait(1, timeout=WAIT)
        # Blocking runs on the default stream return.
        xc = device.create_buffer(np.zeros(n, np.float32))
        sc = device.create_schedule()
        fill_cmd(sc, kernels, xc, 3.0, n)
        within(sc.run, WAIT, "a blocking run on the default stream while stream A waits")
        # Copies and allocations of other buffers go on.
        np.testing.assert_array_equal(read(xb, timeout=WAIT), np.full(n, 2, np.float32))
        np.testing.assert_array_equal(read(xc, timeout=WAIT), np.full(n, 3, np.float32))
        moved = within(lambda: device.copy_buffer(xb), WAIT, "copy_buffer while stream A waits")
        np.testing.assert_array_equal(read(moved, timeout=WAIT), np.full(n, 2, np.float32))
        for _ in range(3):
            within(lambda: device.create_buffer(np.ones(1 << 20, np.uint8)).release(), WAIT, "an allocation")
        # The held run has not run: the wait is decided by the value now (0).
        with pytest.raises(TimeoutError):
            done.wait(1, timeout=0.3)
        assert ev.get_value() == 0
        ev.signal(1)
        done.wait(1, timeout=WAIT)
        np.testing.assert_array_equal(read(held_buf, timeout=WAIT), np.ones(n, np.float32))
    finally:
        ev.signal(1)


# =====================================================================
# Defect 10: a blocking run overtaking earlier runs on the default stream
# =====================================================================


def test_blocking_run_on_default_stream_does_not_overtake_earlier_runs(device: nexus.Device,
                                                                      kernels: nexus.Library) -> None:
    """Defect 10: on the CPU a blocking run() on the default stream ran at
    once on the calling thread, overtaking a run(blocking=False) submitted
    to the default stream before it."""
    n = N
    for trial in range(5):
        buf = device.create_buffer(np.zeros(n, np.float32))
        slow = device.create_schedule()
        spin_cmd(slow, kernels, buf, 1.0, n, 30_000)
        fast = device.create_schedule()
        fill_cmd(fast, kernels, buf, 2.0, n)
        slow.run(blocking=False)
        within(fast.run, WAIT, "a blocking run on the default stream")
        finish(device, None)                          # everything on the default stream is done
        got = read(buf)
        assert (got == 2).all(), f"trial {trial}: the blocking run overtook the earlier run (buffer holds {got[0]})"


# =====================================================================
# Defect 11: host copies ordered after runs that use the buffer
# =====================================================================


@pytest.mark.parametrize("on", ["default_stream", "user_stream"])
def test_host_copies_wait_for_earlier_runs_using_the_buffer(device: nexus.Device, kernels: nexus.Library,
                                                            on: str) -> None:
    """Defect 11: Buffer.copy, Buffer.write, Device.copy_buffer and DLPack
    exports did not wait for earlier runs that use the buffer: right after
    a run(blocking=False) of a slow kernel writing the buffer, copy() read
    the old data."""
    n = N
    stream = None if on == "default_stream" else device.create_stream()
    keep = []

    def slow_write(buf, value):
        s = device.create_schedule()
        spin_cmd(s, kernels, buf, value, n, SPIN_US)
        s.run(stream, blocking=False)
        keep.append(s)

    buf = device.create_buffer(np.zeros(n, np.float32))
    # copy()
    slow_write(buf, 1.0)
    got = read(buf)
    assert (got == 1).all(), f"copy() did not wait for the run writing the buffer (read {got[0]})"
    # copy_buffer()
    slow_write(buf, 2.0)
    moved = within(lambda: device.copy_buffer(buf), what="copy_buffer")
    got = read(moved)
    assert (got == 2).all(), f"copy_buffer() did not wait for the run writing the buffer (read {got[0]})"
    # write() after a run writing the buffer: the write lands last.
    slow_write(buf, 3.0)
    within(lambda: buf.write(np.full(n, 4, np.float32)), what="Buffer.write")
    finish(device, stream)
    got = read(buf)
    assert (got == 4).all(), f"write() was overwritten by an earlier run (read {got[0]})"
    # write() never changes data an earlier run is still reading.
    dst, scratch = device.create_buffer(np.zeros(n, np.float32)), device.create_buffer(np.zeros(n, np.float32))
    s = device.create_schedule()
    spin_cmd(s, kernels, scratch, 9.0, n, SPIN_US)           # delays the read below
    command(s, kernels.get_kernel("copy_f32"), dst, buf, n, grid=n)
    s.run(stream, blocking=False)
    within(lambda: buf.write(np.full(n, 5, np.float32)), what="Buffer.write")
    finish(device, stream)
    got = read(dst)
    assert (got == 4).all(), f"write() changed data an earlier run was still to read (it read {got[0]})"
    np.testing.assert_array_equal(read(buf), np.full(n, 5, np.float32))
    # DLPack export (host buffers: numpy reads them in place).
    if runtime_of(device) == "cpu":
        slow_write(buf, 6.0)
        view = within(lambda: np.from_dlpack(buf), what="__dlpack__")
        assert (view == 6).all(), f"__dlpack__ did not wait for the run writing the buffer (read {view[0]})"


@pytest.mark.parametrize("on", ["default_stream", "user_stream"])
def test_copy_waits_for_a_held_run_using_the_buffer(device: nexus.Device, kernels: nexus.Library, on: str) -> None:
    """Defect 11: a copy of a buffer that a held run (waiting for an event)
    writes returned the old data at once; it must wait for that run."""
    n = N
    stream = None if on == "default_stream" else device.create_stream()
    go = device.create_event()
    buf = device.create_buffer(np.zeros(n, np.float32))
    s = device.create_schedule()
    s.create_wait_command(go, 1)
    fill_cmd(s, kernels, buf, 7.0, n)
    timer = threading.Timer(0.3, go.signal, (1,))
    try:
        s.run(stream, blocking=False)
        start = time.monotonic()
        timer.start()
        got = read(buf, timeout=WAIT)
        took = time.monotonic() - start
    finally:
        timer.cancel()
        go.signal(1)
    assert (got == 7).all(), f"copy() returned data from before the held run (read {got[0]} after {took:.3f} s)"
    assert took >= 0.25


# =====================================================================
# Defect 12: a wait after an in-stream reset
# =====================================================================


@pytest.mark.parametrize("event_of", ["this_device", "cpu_device"])
@pytest.mark.parametrize("on", ["default_stream", "user_stream"])
def test_wait_after_in_stream_reset_is_not_satisfied_by_the_old_value(device: nexus.Device, cpu_device: nexus.Device,
                                                                      kernels: nexus.Library, on: str,
                                                                      event_of: str) -> None:
    """Defect 12: in one schedule [signal(ev, 0), wait(ev, 1), kernel] with
    ev at 5, the wait was decided by the value when the run was queued (5)
    instead of when it executes (0): the kernel ran without the host
    signalling 1. With another runtime's event (signal and wait steps on
    the host), and on the HIP path without stream memory operations, the
    held rest of the run took the stream for idle before the reset that the
    run had already sent had executed."""
    n = N
    stream = None if on == "default_stream" else device.create_stream()
    ev = (device if event_of == "this_device" else cpu_device).create_event()
    done = device.create_event()
    ev.signal(5)
    buf = device.create_buffer(np.zeros(n, np.float32))
    slow = device.create_buffer(np.zeros(256, np.float32))
    s = device.create_schedule()
    # Work before the reset keeps the stream busy past the moment the rest
    # of the run is looked at again (so an early look sees the old value).
    spin_cmd(s, kernels, slow, 1.0, 256, 100_000)
    s.create_signal_command(ev, 0)
    s.create_wait_command(ev, 1)
    fill_cmd(s, kernels, buf, 1.0, n)
    s.create_signal_command(done, 1)
    try:
        s.run(stream, blocking=False)
        with pytest.raises(TimeoutError):
            done.wait(1, timeout=0.5)
        assert ev.get_value() == 0
        ev.signal(1)
        done.wait(1, timeout=WAIT)
    finally:
        ev.signal(1)
    np.testing.assert_array_equal(read(buf, timeout=WAIT), np.ones(n, np.float32))


# =====================================================================
# Defect 13: a CPU buffer from a CuPy array made on a non-default stream
# =====================================================================


def test_cpu_buffer_from_cupy_array_sees_its_final_data(device: nexus.Device, cpu_device: nexus.Device) -> None:
    """Defect 13: cpu_device.create_buffer(cupy_array) copied the array
    without synchronising the stream named in its
    __cuda_array_interface__, so it read data a CuPy kernel on a
    non-default stream had not written yet."""
    require_cuda(device)
    cp = pytest.importorskip("cupy")
    n = 1 << 20
    slow_fill = cp.RawKernel(r"""
    extern "C" __global__ void slow_fill(float *x, float v, int n) {
        unsigned long long start, now;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
        do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < 100000000ull);
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n) x[i] = v;
    }
    """, "slow_fill")
    for trial in range(3):
        with cp.cuda.Stream(non_blocking=True):
            a = cp.zeros(n, dtype=cp.float32)
            slow_fill(((n + 255) // 256,), (256,), (a, cp.float32(42.0), cp.int32(n)))
            host = cpu_device.create_buffer(a)
        got = read(host)
        assert (got == 42).all(), f"trial {trial}: the CPU buffer holds data from before the CuPy kernel ({got[0]})"


# =====================================================================
# Defect 14: shared memory belongs to one command
# =====================================================================


def test_shared_memory_is_per_command(device: nexus.Device, kernels: nexus.Library) -> None:
    """Defect 14: the shared memory size of one command leaked into another
    command of the same kernel (CUDA set it on the function at encode):
    encoding a 60 KiB command after a 100 KiB one made the 100 KiB one fail
    on its next run."""
    try:
        limit = device.get_info().get_int("MaxGroupMemoryOptin")
    except nexus.Error:
        limit = device.get_info().get_int("MaxGroupMemory")
    if limit < 100 * 1024:
        pytest.skip(f"the device allows {limit} bytes of shared memory per group")
    n = 512
    kernel = kernels.get_kernel("shared_fill")
    out_a = device.create_buffer(np.zeros(n, np.int32))
    out_b = device.create_buffer(np.zeros(n, np.int32))
    a = device.create_schedule()
    command(a, kernel, out_a, n, grid=n, group=256, shared_memory=100 * 1024)
    b = device.create_schedule()
    command(b, kernel, out_b, n, grid=n, group=256, shared_memory=60 * 1024)
    within(a.run, WAIT, "run of schedule A")
    within(b.run, WAIT, "run of schedule B")
    within(a.run, WAIT, "second run of schedule A")
    np.testing.assert_array_equal(read(out_a, np.int32), np.full(n, 100 * 1024, np.int32))
    np.testing.assert_array_equal(read(out_b, np.int32), np.full(n, 60 * 1024, np.int32))
    # A third command without shared memory sees none.
    out_c = device.create_buffer(np.ones(n, np.int32))
    c = device.create_schedule()
    command(c, kernel, out_c, n, grid=n, group=256)
    within(c.run, WAIT, "run of schedule C")
    np.testing.assert_array_equal(read(out_c, np.int32), np.zeros(n, np.int32))


# =====================================================================
# Defect 15: launches whose group count overflows
# =====================================================================


@pytest.mark.parametrize("grid", [[2**31, 2**31, 4], [2**32 - 1] * 3], ids=["wraps_to_zero", "2**96"])
def test_launch_whose_group_count_overflows_is_refused(device: nexus.Device, lib_path: str, grid: list) -> None:
    """Defect 15: the number of groups of a launch (the product over axes)
    overflowed 64 bits: [2**31, 2**31, 4] groups counted as 0 and the run
    "succeeded" without running anything. It must raise ValueError at
    finalize or run."""
    proc = run_child(device, lib_path, """
        import json
        grid = json.loads(ARGS[0])
        s = device.create_schedule()
        cmd = s.create_command(device.get_builtin_library().get_kernel("empty"))
        try:
            cmd.finalize([1, 1, 1], grid)
            s.run()
            print("RESULT ran", flush=True)
        except ValueError as e:
            print("RESULT ValueError", e, flush=True)
        except Exception as e:
            print("RESULT", type(e).__name__, e, flush=True)
        print("DONE", flush=True)
    """, str(grid), timeout=30)
    assert_clean(proc)
    m = re.search(r"^RESULT (.*)$", proc.stdout, re.MULTILINE)
    assert m and m.group(1).startswith("ValueError"), describe(proc)


# =====================================================================
# Defect 16: scalar sizes checked against the kernel's parameters
# =====================================================================


def test_scalar_of_wrong_size_is_refused_where_parameters_are_known(device: nexus.Device,
                                                                    kernels: nexus.Library) -> None:
    """Defect 16: where the driver reports parameter sizes (CUDA), a scalar
    of the wrong size (a float32 for a double, an int64 for an int) was
    launched anyway; it must raise ValueError naming the kernel, the
    argument and both sizes. (A buffer for an int parameter raises too.)"""
    require_cuda(device)
    axpy = kernels.get_kernel("axpy_f64")
    try:
        axpy.get_property_int("ArgumentCount")
    except nexus.Error:
        pytest.skip("this driver does not report kernel parameters")
    n = 1000
    x = np.arange(n, dtype=np.float64)
    y = device.create_buffer(np.zeros(n, np.float64))
    xb = device.create_buffer(x)
    s = device.create_schedule()
    cmd = command(s, axpy, y, xb, 1.5, (n, nexus.data_type.I64), grid=n)  # 1.5 is passed as float32
    with pytest.raises(ValueError) as e:
        s.run()
    msg = str(e.value)
    assert "axpy_f64" in msg and re.search(r"\b2\b", msg), msg
    assert re.search(r"\b4\b", msg) and re.search(r"\b8\b", msg), msg
    np.testing.assert_array_equal(read(y, np.float64), np.zeros(n))  # nothing ran
    cmd.set_arg(2, 1.5, data_type=nexus.data_type.F64)
    s.run()
    np.testing.assert_array_equal(read(y, np.float64), 1.5 * x)
    # An 8-byte int64 where vadd takes a 4-byte int, and a buffer there.
    a = device.create_buffer(np.ones(n, np.float32))
    s2 = device.create_schedule()
    cmd2 = command(s2, kernels.get_kernel("vadd"), a, a, a, (n, nexus.data_type.I64), grid=n)
    with pytest.raises(ValueError) as e:
        s2.run()
    msg = str(e.value)
    assert "vadd" in msg and re.search(r"\b3\b", msg) and re.search(r"\b8\b", msg) and re.search(r"\b4\b", msg), msg
    cmd2.set_buffer(3, a)
    with pytest.raises(ValueError, match="vadd"):
        s2.run()
    np.testing.assert_array_equal(read(a), np.ones(n, np.float32))


# =====================================================================
# Defect 17: an asynchronous failure reaches the failed run's waiter
# =====================================================================


def test_async_failure_is_reported_to_the_failed_runs_waiter(device: nexus.Device, lib_path: str) -> None:
    """Defect 17: a failure of a run that happened after it was queued (a
    kernel that traps) was reported to whichever waiter came next, or not
    at all: the blocking run of the failed schedule must raise nexus.Error.
    (A trap poisons the CUDA context: this runs in a child process. No
    reliable asynchronous failure exists on the CPU runtime.)"""
    require_cuda(device)
    proc = run_child(device, lib_path, """
        trap = device.load_library(
            b'extern "C" __global__ void trap_kernel(float *x, int n) { if (threadIdx.x == 0) __trap(); x[0] = n; }'
        ).get_kernel("trap_kernel")
        n = 1024
        buf = device.create_buffer(np.zeros(n, np.float32))
        done = device.create_event()
        stream = device.create_stream()
        s = device.create_schedule()
        command(s, trap, buf, n, grid=n)
        s.create_signal_command(done, 1)
        try:
            s.run(stream)
            print("RESULT no error", flush=True)
        except nexus.Error as e:
            print("RESULT nexus.Error", e, flush=True)
        except BaseException as e:
            print("RESULT", type(e).__name__, e, flush=True)
        print("DONE", flush=True)
    """)
    assert "RESULT nexus.Error" in proc.stdout, describe(proc)
    assert_clean(proc)


def test_held_run_failure_goes_to_its_own_waiter(device: nexus.Device, lib_path: str) -> None:
    """Defect 17: a run held behind a wait that failed when it was finally
    queued (a launch the driver refuses: 40 KiB of static plus 40 KiB of
    dynamic shared memory, over the 48 KiB allowed without opting in)
    reported its error to whichever waiter of the stream woke first: the
    failed run's own blocking run must raise, the next run's must not."""
    require_cuda(device)
    proc = run_child(device, lib_path, """
        big = device.load_library(b'''
        extern "C" __global__ void big_static(int *out, int n) {
            __shared__ int s[10 * 1024];              // 40 KiB of static shared memory
            extern __shared__ int dyn[];
            s[threadIdx.x] = n;
            dyn[threadIdx.x] = n;
            __syncthreads();
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) out[i] = s[(threadIdx.x + 1) % blockDim.x] + dyn[threadIdx.x];
        }''').get_kernel("big_static")
        n = 256
        fill = kernels.get_kernel("fill_i32")
        bad_buf = device.create_buffer(np.zeros(n, np.int32))
        good_buf = device.create_buffer(np.zeros(n, np.int32))
        stream = device.create_stream()
        for trial in range(10):
            gate = device.create_event()
            bad = device.create_schedule()
            bad.create_wait_command(gate, 1)
            command(bad, big, bad_buf, n, grid=n, shared_memory=40 * 1024)
            good = device.create_schedule()
            command(good, fill, good_buf, trial + 1, n, grid=n)
            res = {}

            def run(name, schedule):
                try:
                    schedule.run(stream)
                    res[name] = "ok"
                except Exception as e:
                    res[name] = f"{type(e).__name__}: {e}"

            t1 = threading.Thread(target=run, args=("bad", bad), daemon=True)
            t1.start()
            time.sleep(0.1)                   # the bad run is queued (held) first...
            t2 = threading.Thread(target=run, args=("good", good), daemon=True)
            t2.start()                        # ...and the good one behind it
            time.sleep(0.1)
            gate.signal(1)
            t1.join(30)
            t2.join(30)
            out = np.empty(n, np.int32)
            good_buf.copy(out)
            print("TRIAL", trial, "bad:", res.get("bad"), "| good:", res.get("good"),
                  "| good data:", bool((out == trial + 1).all()), flush=True)
        print("DONE", flush=True)
    """)
    assert_clean(proc)
    trials = re.findall(r"^TRIAL (\d+) bad: (.*) \| good: (.*) \| good data: (\w+)$", proc.stdout, re.MULTILINE)
    assert len(trials) == 10, describe(proc)
    for trial, bad, good, data in trials:
        assert bad != "ok" and bad != "None", f"trial {trial}: the failed run's waiter saw no error\n{describe(proc)}"
        assert good == "ok", f"trial {trial}: the next run's waiter got the error: {good}\n{describe(proc)}"
        assert data == "True", describe(proc)


# =====================================================================
# Defect 18: allocation after frees still pending
# =====================================================================


def test_allocation_waits_for_pending_frees(device: nexus.Device, lib_path: str) -> None:
    """Defect 18: an allocation failed with out-of-memory while memory
    freed by the user was still pending release (queued work used it): it
    must wait for those frees and retry. Allocates ~60% of device memory
    (CPU: 256 MiB) 20 times (CPU: 5), dropping each with work queued on it."""
    proc = run_child(device, lib_path, """
        if IS_CUDA:
            size, loops = int(device.get_info().get_int("MemorySize") * 0.6), 20
        else:
            size, loops = 256 << 20, 5
        stream = device.create_stream()
        for i in range(loops):
            try:
                b = device.create_buffer(size)
            except nexus.Error as e:
                print("FAILED at", i, e.status, e, flush=True)
                sys.exit(3)
            s = device.create_schedule()
            spin_cmd(s, kernels, b, float(i), 1024, 20_000)   # work queued on it...
            s.run(stream, blocking=False)
            if i % 2:
                b.release()                                    # ...then released or dropped
            del b, s
        stream.synchronize()
        print("DONE", flush=True)
    """, timeout=120)
    assert_clean(proc)


# =====================================================================
# Defect 19: CUDA events in a forked child
# =====================================================================


def test_cuda_event_in_forked_child_raises(device: nexus.Device, lib_path: str) -> None:
    """Defect 19: in a child forked after CUDA was used, a CUDA event's
    signal/wait/get_value crashed or silently used the parent's memory;
    each must raise nexus.Error naming fork/spawn."""
    require_cuda(device)
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    proc = run_child(device, lib_path, """
        ev = device.create_event()
        s = device.create_schedule()
        s.create_signal_command(ev, 2)
        s.run()
        ev.wait(2, timeout=10)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            lines = []
            for name, op in [("signal", lambda: ev.signal(3)), ("wait", lambda: ev.wait(1, timeout=1)),
                             ("get_value", ev.get_value)]:
                try:
                    op()
                    lines.append(f"OP {name} WORKED")
                except nexus.Error as e:
                    clear = "fork" in str(e) or "spawn" in str(e)
                    lines.append(f"OP {name} ERROR clear={clear} {e}")
                except BaseException as e:
                    lines.append(f"OP {name} OTHER {type(e).__name__} {e}")
            print("\\n".join(lines), flush=True)
            os._exit(0)
        deadline = time.monotonic() + 30
        while True:
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                _, status = os.waitpid(pid, 0)
                print("CHILD HUNG", flush=True)
                break
            time.sleep(0.05)
        print("CHILD", os.waitstatus_to_exitcode(status), flush=True)
        print("DONE", flush=True)
    """)
    assert_clean(proc)
    assert "CHILD 0" in proc.stdout, describe(proc)
    for op in ["signal", "wait", "get_value"]:
        assert re.search(rf"^OP {op} ERROR clear=True", proc.stdout, re.MULTILINE), describe(proc)


# =====================================================================
# Defect 20: smaller ones
# =====================================================================


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("on", ["default_stream", "user_stream"])
@pytest.mark.parametrize("export", ["__dlpack__", "__cuda_array_interface__"])
def test_export_of_a_buffer_in_a_held_run_answers_ctrl_c(device: nexus.Device, lib_path: str, export: str,
                                                         on: str) -> None:
    """Defect 20: __cuda_array_interface__ and __dlpack__ of a buffer that a
    held run uses wait for that run (as copies do) and must answer Ctrl-C
    while they wait."""
    if export == "__cuda_array_interface__":
        require_cuda(device)
    else:
        try:
            device.zeros(4).__dlpack_device__()
        except BufferError:
            pytest.skip(f"{device} memory is not exported through DLPack (no address other libraries use)")
    expr = "buf.__dlpack__()" if export == "__dlpack__" else "buf.__cuda_array_interface__"
    body = child_script(f"""
        n = 1024
        ev = device.create_event()
        buf = device.create_buffer(np.zeros(n, np.float32))
        s = device.create_schedule()
        s.create_wait_command(ev, 1)
        fill_cmd(s, kernels, buf, 1.0, n)
        s.run({"None" if on == "default_stream" else "device.create_stream()"}, blocking=False)
        try:
            print("READY", flush=True)
            x = {expr}
            print("RETURNED", flush=True)
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
            sys.exit(42)
    """)
    argv = child_argv(device, lib_path)
    argv[2] = body
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            proc.kill()
            pytest.fail(f"the child did not start: {line!r} {proc.communicate()}")
        time.sleep(0.5)  # let it enter the export
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{export} did not answer Ctrl-C within 10 s\n{out}\n{err[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "RETURNED" not in out, f"{export} returned while a held run still had to write the buffer: {out}"
    assert proc.returncode == 42 and "KeyboardInterrupt" in out, (proc.returncode, out, err[-3000:])


def test_schedule_run_from_inside_a_cpu_kernel(device: nexus.Device, lib_path: str) -> None:
    """Defect 20: a CPU kernel that calls back into Python (a ctypes
    function pointer passed as a uint64 scalar) whose callback runs another
    schedule made that run raise PanicException (the launcher's per-thread
    state was borrowed twice)."""
    require_cpu(device)
    proc = run_child(device, lib_path, """
        import ctypes
        n = 1024
        inner_buf = device.create_buffer(np.zeros(n, np.float32))
        inner = device.create_schedule()
        fill_cmd(inner, kernels, inner_buf, 5.0, n)
        one_group = device.create_schedule()
        command(one_group, kernels.get_kernel("affine_f32"), inner_buf, 1.0, 1.0, n, grid=n, group=n)
        calls, errors = [], []

        @ctypes.CFUNCTYPE(None, ctypes.c_int64)
        def callback(arg):
            try:
                inner.run()                  # blocking, default stream
                one_group.run()              # one group: runs on this very thread
                calls.append(arg)
            except BaseException as e:
                errors.append(f"{type(e).__module__}.{type(e).__name__}: {e}")

        address = ctypes.cast(callback, ctypes.c_void_p).value
        outer = device.create_schedule()
        command(outer, kernels.get_kernel("callback"), (address, nexus.data_type.U64),
                (7, nexus.data_type.I64), grid=1)
        stream = device.create_stream()
        outer.run(stream)                    # blocking, on a stream's worker
        done = device.create_event()
        outer2 = device.create_schedule()
        command(outer2, kernels.get_kernel("callback"), (address, nexus.data_type.U64),
                (8, nexus.data_type.I64), grid=1)
        outer2.create_signal_command(done, 1)
        outer2.run(stream, blocking=False)   # non-blocking, then an event wait
        done.wait(1, timeout=30)
        out = np.empty(n, np.float32)
        inner_buf.copy(out)
        print("CALLS", calls, flush=True)
        print("ERRORS", errors, flush=True)
        print("VALUE", out[0], bool((out == out[0]).all()), flush=True)
        print("DONE", flush=True)
    """)
    assert_clean(proc)
    assert "ERRORS []" in proc.stdout, describe(proc)
    assert "CALLS [7, 8]" in proc.stdout, describe(proc)
    assert "VALUE 6.0 True" in proc.stdout, describe(proc)


def test_readonly_cuda_array_interface_import_is_a_copy(device: nexus.Device) -> None:
    """Defect 20: the readonly flag of an imported __cuda_array_interface__
    was ignored: nexus wrapped read-only memory writably. The buffer must be
    a copy; writing it leaves the source unchanged."""
    require_cuda(device)
    n = 4096
    x = np.arange(n, dtype=np.float32)
    src = device.create_buffer(x)
    ptr = src.__cuda_array_interface__["data"][0]

    class ReadOnly:
        def __init__(self) -> None:
            self.__cuda_array_interface__ = {"shape": (n,), "typestr": "<f4", "data": (ptr, True),
                                             "version": 3, "strides": None}

    buf = device.create_buffer(ReadOnly())
    np.testing.assert_array_equal(read(buf), x)
    assert buf.__cuda_array_interface__["data"][0] != ptr, "a read-only array was wrapped, not copied"
    buf.write(np.zeros(n, np.float32))
    np.testing.assert_array_equal(read(src), x)


def test_releasing_unrelated_objects_does_not_change_running_schedules(device: nexus.Device,
                                                                       kernels: nexus.Library) -> None:
    """Defect 20: releasing an object a schedule does not use (which makes
    every schedule re-validate) changed the results of runs of that
    schedule already queued or held."""
    n = N
    x = device.create_buffer(np.zeros(n, np.float32))
    s = device.create_schedule()
    for _ in range(2):  # two kernels: one CUDA graph
        command(s, kernels.get_kernel("affine_f32"), x, 1.0, 1.0, n, grid=n)
    stream = device.create_stream()
    gate = device.create_event()
    held = device.create_schedule()
    held.create_wait_command(gate, 1)
    command(held, kernels.get_kernel("affine_f32"), x, 2.0, 0.0, n, grid=n)
    expect = np.zeros(n, np.float32)
    builtin = device.get_builtin_library()
    try:
        for i in range(60):
            if i == 30:
                held.run(stream, blocking=False)  # the rest of the runs queue behind it
                expect = expect * 2
            s.run(stream, blocking=False)
            expect = expect + 2
            kind = i % 5
            if kind == 0:
                device.create_buffer(np.ones(64, np.float32)).release()
            elif kind == 1:
                device.create_event().release()
            elif kind == 2:
                junk = device.create_schedule()
                fill_cmd(junk, kernels, device.create_buffer(np.ones(n, np.float32)), 3.0, n)
                junk.release()
            elif kind == 3:
                device.create_stream().release()
            else:
                lib = device.get_builtin_library()
                lib.release()
        gate.signal(1)
        finish(device, stream)
    finally:
        gate.signal(1)
    del builtin
    np.testing.assert_array_equal(read(x), expect)


# =====================================================================
# Found by the model-based test: the first run queued on a stream while
# another thread runs a blocking run inline on it
# =====================================================================


def test_first_queued_run_on_a_stream_busy_with_an_inline_run(device: nexus.Device,
                                                             kernels: nexus.Library) -> None:
    """A stream's first queued run reset its bookkeeping as after a fork:
    it marked a blocking run that another thread was executing inline as
    done, the queued run overtook it, and the stream's completed count later
    moved backwards, so waiters hung. The queued run must run after the
    inline one and both must complete."""
    n = 256
    for trial in range(5):
        stream = device.create_stream()
        buf = device.create_buffer(np.zeros(n, np.float32))
        slow = device.create_schedule()
        spin_cmd(slow, kernels, buf, 1.0, n, 50_000)
        fast = device.create_schedule()
        fill_cmd(fast, kernels, buf, 2.0, n)
        done = device.create_event()
        fast.create_signal_command(done, 1)
        # Encoded before the race (a first run compiles pipelines on some
        # drivers, longer than the 10 ms the slow run has to start).
        slow.run(stream)
        started = threading.Event()

        def blocking_slow_run(started=started, slow=slow, stream=stream) -> None:
            started.set()
            slow.run(stream, blocking=True)

        t = threading.Thread(target=blocking_slow_run, daemon=True)
        t.start()
        started.wait()
        time.sleep(0.01)  # the slow run is executing (inline on the CPU)
        fast.run(stream, blocking=False)
        done.wait(1, timeout=10)
        t.join(10)
        assert not t.is_alive(), "the blocking run never returned"
        finish(device, stream, timeout=10)
        np.testing.assert_array_equal(read(buf, timeout=10), np.full(n, 2.0, np.float32),
                                      err_msg=f"trial {trial}: the queued run overtook the running one")
