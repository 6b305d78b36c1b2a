"""Shutdown and fork: the interpreter exits cleanly with work still queued,
and a child made by os.fork() after nexus was used works or fails clearly,
never hangs. Every scenario runs in a child process under a timeout.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import nexus
import pytest
from conftest import library_path

HANG_GUARD = 60  # seconds; a clean exit takes well under one

_PRELUDE = """
import os, sys, threading, time
import numpy as np
import nexus
device = nexus.get_runtime(sys.argv[1]).get_device(int(sys.argv[2]))
kernels = device.load_library(sys.argv[3])

def vadd(schedule, a, b, c, n):
    cmd = schedule.create_command(kernels.get_kernel("vadd"))
    cmd.set_buffer(0, a); cmd.set_buffer(1, b); cmd.set_buffer(2, c); cmd.set_arg(3, n)
    cmd.finalize(64, n)
    return cmd
"""


def run_child(device: nexus.Device, lib_path: str, body: str) -> subprocess.CompletedProcess:
    runtime = device.get_property_str("Runtime")
    index = next(i for i, d in enumerate(nexus.get_runtime(runtime).get_devices()) if d == device)
    code = _PRELUDE + textwrap.dedent(body)
    try:
        return subprocess.run(
            [sys.executable, "-c", code, runtime, str(index), lib_path],
            capture_output=True, text=True, timeout=HANG_GUARD,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the child hung (killed after {HANG_GUARD} s): {e.stdout!r} {e.stderr!r}")


def assert_clean(proc: subprocess.CompletedProcess, marker: str = "DONE") -> None:
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stderr[-3000:]}"
    assert marker in proc.stdout, proc.stdout
    assert "Fatal Python error" not in proc.stderr, proc.stderr
    assert "panicked" not in proc.stderr, proc.stderr


# ------------------------------------------------------------ shutdown


def test_exit_with_schedule_blocked_on_a_stream(device: nexus.Device, lib_path: str) -> None:
    """A stream held forever by a wait command nobody signals does not block exit."""
    proc = run_child(device, lib_path, """
        n = 4096
        a = device.create_buffer(np.ones(n, np.float32))
        c = device.create_buffer(np.zeros(n, np.float32))
        never = device.create_event()
        stream = device.create_stream()
        s = device.create_schedule()
        s.create_wait_command(never, 1)
        vadd(s, a, a, c, n)
        for _ in range(10):
            s.run(stream, blocking=False)    # 10 runs queued behind the wait
        print("DONE", flush=True)
    """)
    assert_clean(proc)


def test_exit_with_blocked_default_stream(device: nexus.Device, lib_path: str) -> None:
    proc = run_child(device, lib_path, """
        never = device.create_event()
        s = device.create_schedule()
        s.create_wait_command(never, 1)
        s.run(blocking=False)                # on the device's default stream
        print("DONE", flush=True)
    """)
    assert_clean(proc)


def test_exit_with_work_running_on_many_streams(device: nexus.Device, lib_path: str) -> None:
    """Exit while kernels are still executing on several streams."""
    proc = run_child(device, lib_path, """
        n = 1 << 20
        a = device.create_buffer(np.ones(n, np.float32))
        streams = [device.create_stream() for _ in range(4)]
        outs = [device.create_buffer(np.zeros(n, np.float32)) for _ in streams]
        for st, c in zip(streams, outs):
            s = device.create_schedule()
            for _ in range(20):
                vadd(s, a, a, c, n)
            for _ in range(5):
                s.run(st, blocking=False)
        print("DONE", flush=True)
    """)
    assert_clean(proc)


def test_exit_while_a_thread_is_blocked_in_wait(device: nexus.Device, lib_path: str) -> None:
    """A daemon thread blocked in event.wait() does not hold the interpreter at exit."""
    proc = run_child(device, lib_path, """
        ev = device.create_event()
        t = threading.Thread(target=lambda: ev.wait(1), daemon=True)
        t.start()
        time.sleep(0.2)
        print("DONE", flush=True)
    """)
    assert_clean(proc)


def test_exit_while_a_thread_is_blocked_in_run(device: nexus.Device, lib_path: str) -> None:
    proc = run_child(device, lib_path, """
        ev = device.create_event()
        s = device.create_schedule()
        s.create_wait_command(ev, 1)
        t = threading.Thread(target=s.run, daemon=True)   # blocking run, never released
        t.start()
        time.sleep(0.2)
        print("DONE", flush=True)
    """)
    assert_clean(proc)


def test_sys_exit_from_inside_with_blocks(device: nexus.Device, lib_path: str) -> None:
    proc = run_child(device, lib_path, """
        with device.create_stream() as st, device.create_event() as ev:
            s = device.create_schedule()
            s.create_wait_command(ev, 1)
            s.run(st, blocking=False)
            print("DONE", flush=True)
            sys.exit(0)
    """)
    assert_clean(proc)


# ------------------------------------------------------------ fork

_FORK_BODY = """
n = 50_000
x = np.arange(n, dtype=np.float32)
a = device.create_buffer(x)
c = device.create_buffer(np.zeros(n, np.float32))
stream = device.create_stream()
done = device.create_event()
s = device.create_schedule()
vadd(s, a, a, c, n)                 # 50_000 / 64 groups: runs on the thread pool
s.run()
s2 = device.create_schedule()
vadd(s2, a, a, c, n)
s2.create_signal_command(done, 1)
s2.run(stream, blocking=False)       # and on a stream's worker
done.wait(1, timeout=30)

pid = os.fork()
if pid == 0:
    code = 1
    try:
        cpu = nexus.get_runtime("cpu").get_device(0)
        lib = cpu.load_library(LIB_CPU)
        y = np.arange(n, dtype=np.float32) * 3
        yb = cpu.create_buffer(y)
        out = cpu.create_buffer(np.zeros(n, np.float32))
        sc = cpu.create_schedule()
        cmd = sc.create_command(lib.get_kernel("vadd"))
        cmd.set_buffer(0, yb); cmd.set_buffer(1, yb); cmd.set_buffer(2, out); cmd.set_arg(3, n)
        cmd.finalize(64, n)
        sc.run()                           # pool
        ev = cpu.create_event()
        sc2 = cpu.create_schedule()
        cmd = sc2.create_command(lib.get_kernel("vadd"))
        cmd.set_buffer(0, out); cmd.set_buffer(1, yb); cmd.set_buffer(2, out); cmd.set_arg(3, n)
        cmd.finalize(64, n)
        sc2.create_signal_command(ev, 1)
        sc2.run(cpu.create_stream(), blocking=False)   # a stream made in the child
        ev.wait(1, timeout=30)
        got = np.empty(n, np.float32)
        out.copy(got)
        code = 0 if np.array_equal(got, 3 * y) else 2
    except nexus.Error as e:
        print("CHILD nexus.Error:", e, flush=True)   # a clear error is acceptable
        code = 3
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
print("CHILD", os.waitstatus_to_exitcode(status), flush=True)
out = np.empty(n, np.float32)
c.copy(out)
assert np.array_equal(out, 2 * x)
s.run()                                   # the parent still works after the fork
print("DONE", flush=True)
"""


def _cpu_lib(build_dir: pathlib.Path) -> str:
    return library_path(nexus.get_runtime("cpu").get_device(0), "kernels", build_dir)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_can_use_the_cpu_runtime(device: nexus.Device, lib_path: str, build_dir: pathlib.Path) -> None:
    body = f"LIB_CPU = {_cpu_lib(build_dir)!r}\n" + _FORK_BODY
    proc = run_child(device, lib_path, body)
    assert_clean(proc)
    assert "CHILD 0" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_a_stream_is_blocked(device: nexus.Device, lib_path: str, build_dir: pathlib.Path) -> None:
    """Fork while another stream's worker is parked in a wait: the child still works."""
    body = f"LIB_CPU = {_cpu_lib(build_dir)!r}\n" + """
never = device.create_event()
blocked = device.create_stream()
sb = device.create_schedule()
sb.create_wait_command(never, 1)
sb.run(blocked, blocking=False)
""" + _FORK_BODY
    proc = run_child(device, lib_path, body)
    assert_clean(proc)
    assert "CHILD 0" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_that_never_used_nexus_exits(device: nexus.Device, lib_path: str) -> None:
    proc = run_child(device, lib_path, """
        s = device.create_schedule()
        a = device.create_buffer(np.ones(1 << 16, np.float32))
        vadd(s, a, a, a, 1 << 16)
        s.run()
        pid = os.fork()
        if pid == 0:
            os._exit(0)          # exits at once, nexus untouched
        _, status = os.waitpid(pid, 0)
        pid = os.fork()
        if pid == 0:
            print("CHILD SAYS BYE")  # left in Python's buffer: the interpreter's exit flushes it
            import ctypes
            ctypes.CDLL(None).printf(b"C STDIO BYE ")  # left in C's buffer (a pipe): exit() flushes it
            sys.exit(3)          # a normal interpreter exit in the child (atexit, finalizers)
        _, status2 = os.waitpid(pid, 0)
        print("CHILD", os.waitstatus_to_exitcode(status), os.waitstatus_to_exitcode(status2), flush=True)
        print("DONE", flush=True)
    """)
    assert_clean(proc)
    assert "CHILD 0 3" in proc.stdout, proc.stdout + proc.stderr
    assert "CHILD SAYS BYE" in proc.stdout
    assert "C STDIO BYE" in proc.stdout
