"""Threads: many Python threads on one device, the GIL and Ctrl-C.

- 8 threads, each with its own stream and schedules, 1,000 runs each, every
  result checked against numpy; the same with all threads on one stream;
  one schedule run by 4 threads at once, each on its own stream.
- Blocking calls release the GIL: a Python thread makes progress (and is the
  one that unblocks the call) while another thread is blocked in nexus.
- Ctrl-C (SIGINT) during a long wait raises KeyboardInterrupt promptly.

Scenarios that would deadlock if a call held the GIL run in a child
interpreter with a timeout, so a regression fails instead of hanging.
`NEXUS_LONG_TESTS=1` runs 10x the runs. Figures go to `$NEXUS_THREAD_RECORD`
(JSON lines) when set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import nexus
import numpy as np
import pytest

THREADS = 8
RUNS = 1000 * (10 if os.environ.get("NEXUS_LONG_TESTS") == "1" else 1)
HANG_GUARD = 120  # seconds: only a hang gets near this


def _record(name: str, device: nexus.Device, **figures) -> None:
    print(f"\n{name} on {device!r}: {figures}")
    path = os.environ.get("NEXUS_THREAD_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": name, "device": repr(device), **figures}) + "\n")


def _worker_loop(device, kernels, stream_for, tid: int, errors: list, runs: int) -> None:
    try:
        n = 1000 + 37 * tid  # a different size per thread
        rng = np.random.default_rng(tid)
        b_host = rng.standard_normal(n, dtype=np.float32)
        a = device.create_buffer(np.zeros(n, np.float32))
        b = device.create_buffer(b_host)
        c = device.create_buffer(np.zeros(n, np.float32))
        done = device.create_event()
        out = np.empty(n, np.float32)
        stream = stream_for(tid)
        schedule = None
        for i in range(runs):
            if i % 50 == 0:  # re-record every 50 runs: recording is exercised too
                schedule = device.create_schedule()
                cmd = schedule.create_command(kernels.get_kernel("vadd"))
                cmd.set_buffer(0, a)
                cmd.set_buffer(1, b)
                cmd.set_buffer(2, c)
                cmd.set_arg(3, n)
                cmd.finalize(128, n)
                signal_cmd = schedule.create_signal_command(done, 0)
            x = np.full(n, float(i), np.float32) + np.float32(tid)
            a.write(x)
            if i % 2:
                schedule.run(stream, blocking=True)
            else:
                # a fresh signal value each run: re-record the signal command
                sched = device.create_schedule()
                cmd = sched.create_command(kernels.get_kernel("vadd"))
                cmd.set_buffer(0, a)
                cmd.set_buffer(1, b)
                cmd.set_buffer(2, c)
                cmd.set_arg(3, n)
                cmd.finalize(128, n)
                sched.create_signal_command(done, i + 1)
                sched.run(stream, blocking=False)
                done.wait(i + 1, timeout=HANG_GUARD)
            c.copy(out)
            if not np.array_equal(out, x + b_host):
                errors.append(f"thread {tid} run {i}: wrong result")
                return
        del signal_cmd
    except BaseException as e:  # noqa: BLE001 - reported by the main thread
        errors.append(f"thread {tid}: {type(e).__name__}: {e}")


def _start_and_join(threads: list[threading.Thread], errors: list[str]) -> float:
    """Starts the threads, waits for them (a hang fails), checks the errors
    they reported; returns the seconds they took."""
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_GUARD)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    return time.monotonic() - start


def _run_threads(device, kernels, stream_for) -> float:
    errors: list[str] = []
    threads = [
        threading.Thread(target=_worker_loop, args=(device, kernels, stream_for, t, errors, RUNS), daemon=True)
        for t in range(THREADS)
    ]
    return _start_and_join(threads, errors)


def test_threads_each_on_own_stream(device: nexus.Device, kernels: nexus.Library) -> None:
    streams = [device.create_stream() for _ in range(THREADS)]
    took = _run_threads(device, kernels, lambda tid: streams[tid])
    _record("threads, own streams", device, threads=THREADS, runs_per_thread=RUNS, results_checked=THREADS * RUNS, seconds=round(took, 2))


def test_threads_share_one_stream(device: nexus.Device, kernels: nexus.Library) -> None:
    shared = device.create_stream()
    took = _run_threads(device, kernels, lambda tid: shared)
    _record("threads, one shared stream", device, threads=THREADS, runs_per_thread=RUNS, results_checked=THREADS * RUNS, seconds=round(took, 2))


def test_threads_on_default_stream(device: nexus.Device, kernels: nexus.Library) -> None:
    took = _run_threads(device, kernels, lambda tid: None)
    _record("threads, default stream", device, threads=THREADS, runs_per_thread=RUNS, results_checked=THREADS * RUNS, seconds=round(took, 2))


def test_one_schedule_run_by_threads_on_their_own_streams(device: nexus.Device, kernels: nexus.Library) -> None:
    """One schedule of several kernels (one CUDA graph exec), run at once by
    threads on streams of their own: every run computes the same c = a + b
    twice and d = c + b, so any interleaving leaves the same result, and
    concurrent launches of the one encoded schedule neither crash nor hang."""
    n = 4096
    rng = np.random.default_rng(7)
    a_host, b_host = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    a, b = device.create_buffer(a_host), device.create_buffer(b_host)
    c, d = device.create_buffer(np.zeros(n, np.float32)), device.create_buffer(np.zeros(n, np.float32))
    schedule = device.create_schedule()
    for out, x, y in ((c, a, b), (c, a, b), (d, c, b)):
        cmd = schedule.create_command(kernels.get_kernel("vadd"))
        for i, buf in enumerate((x, y, out)):
            cmd.set_buffer(i, buf)
        cmd.set_arg(3, n)
        cmd.finalize(64, n)
    schedule.run()  # encoded before the threads start
    errors: list[str] = []
    runs = max(RUNS // 10, 20)

    def worker(tid: int) -> None:
        try:
            stream = device.create_stream()
            for i in range(runs):
                schedule.run(stream, blocking=(i % 7 == 0))
            stream.synchronize()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(f"thread {tid}: {type(e).__name__}: {e}")

    _start_and_join([threading.Thread(target=worker, args=(t,), daemon=True) for t in range(4)], errors)
    out = np.empty(n, np.float32)
    c.copy(out)
    np.testing.assert_array_equal(out, a_host + b_host)
    d.copy(out)
    np.testing.assert_array_equal(out, (a_host + b_host) + b_host)


def test_threads_create_and_release_concurrently(device: nexus.Device) -> None:
    """Objects made in one thread and released in another while a third uses them."""
    errors: list[str] = []
    stop = threading.Event()
    ev = device.create_event()

    def churn(tid: int) -> None:
        try:
            for i in range(2000):
                b = device.create_buffer(np.full(64, i, np.int32))
                e = device.create_event()
                e.signal(i)
                if i % 2:
                    b.release()
                    e.release()
                else:
                    out = np.empty(64, np.int32)
                    b.copy(out)
                    assert out[0] == i
                ev.signal(tid * 10_000 + i)
        except BaseException as e:  # noqa: BLE001
            errors.append(f"{tid}: {e!r}")

    def release_race() -> None:
        # release() racing with copy() on the same buffer: either wins, no crash
        while not stop.is_set():
            b = device.create_buffer(np.zeros(1024, np.float32))
            t = threading.Thread(target=b.release)
            t.start()
            try:
                b.copy(np.empty(1024, np.float32))
            except nexus.Error as e:
                assert e.status == nexus.status.NXS_Released
            t.join()

    racer = threading.Thread(target=release_race, daemon=True)
    racer.start()
    workers = [threading.Thread(target=churn, args=(t,), daemon=True) for t in range(THREADS)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(HANG_GUARD)
    stop.set()
    racer.join(HANG_GUARD)
    assert not errors, errors
    assert not racer.is_alive()


# ------------------------------------------------------------ the GIL and Ctrl-C, in a child

_PRELUDE = """
import sys, threading, time
import numpy as np
import nexus
device = nexus.get_runtime(sys.argv[1]).get_device(int(sys.argv[2]))
kernels = device.load_library(sys.argv[3])
"""


def _child(device: nexus.Device, lib_path: str, body: str, **popen) -> subprocess.Popen:
    runtime = device.get_property_str("Runtime")
    index = next(i for i, d in enumerate(nexus.get_runtime(runtime).get_devices()) if d == device)
    code = _PRELUDE + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", code, runtime, str(index), lib_path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )


def _finish(proc: subprocess.Popen, timeout: float = HANG_GUARD) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the child hung (killed after {timeout} s): {out}\n{err}")
    return out, err


def test_blocking_run_releases_the_gil(device: nexus.Device, lib_path: str) -> None:
    """The thread that unblocks a blocking run is a Python thread that needs the GIL."""
    proc = _child(device, lib_path, """
        go = device.create_event()
        counter = [0]
        def helper():
            while counter[0] < 200_000:   # pure Python work: needs the GIL
                counter[0] += 1
            go.signal(1)
        s = device.create_schedule()
        s.create_wait_command(go, 1)
        t = threading.Thread(target=helper)
        t.start()
        s.run(blocking=True)               # returns only once helper() ran
        t.join()
        print("OK", counter[0])
    """)
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    assert out.split() == ["OK", "200000"]


def test_synchronize_releases_the_gil(device: nexus.Device, lib_path: str) -> None:
    proc = _child(device, lib_path, """
        go = device.create_event()
        stream = device.create_stream()
        s = device.create_schedule()
        s.create_wait_command(go, 1)
        s.run(stream, blocking=False)
        counter = [0]
        def helper():
            while counter[0] < 200_000:
                counter[0] += 1
            go.signal(1)
        t = threading.Thread(target=helper)
        t.start()
        stream.synchronize()               # returns only once helper() ran
        t.join()
        print("OK", counter[0])
    """)
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    assert out.split() == ["OK", "200000"]


def test_long_copy_releases_the_gil(device: nexus.Device, lib_path: str) -> None:
    """A Python thread keeps running while the main thread copies 512 MiB."""
    proc = _child(device, lib_path, """
        buf = device.create_buffer(np.ones(128 << 20, np.float32))
        host = np.empty(128 << 20, np.float32)
        ticks = [0]
        stop = threading.Event()
        def spin():
            while not stop.is_set():
                ticks[0] += 1
        t = threading.Thread(target=spin)
        t.start()
        time.sleep(0.01)
        before = ticks[0]
        for _ in range(4):
            buf.copy(host)
        after = ticks[0]
        stop.set(); t.join()
        print("OK" if after > before else "STARVED", after - before)
    """)
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    assert out.split()[0] == "OK", out


def _interrupt(device: nexus.Device, lib_path: str, body: str) -> tuple[float, str, str, int]:
    """Starts `body` in a child, sends SIGINT once it printed READY; returns (seconds to exit, out, err, rc)."""
    script = (
        "try:\n"
        + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
        + "\nexcept KeyboardInterrupt:\n"
        + "    print('KeyboardInterrupt', flush=True)\n"
        + "    sys.exit(42)\n"
        + "print('RETURNED', flush=True)\n"
    )
    proc = _child(device, lib_path, script)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        pytest.fail(f"the child did not start: {line!r} {proc.communicate()}")
    time.sleep(0.3)  # let it enter the blocking call
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = _finish(proc, timeout=6)
    return time.monotonic() - start, out, err, proc.returncode


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_event_wait(device: nexus.Device, lib_path: str) -> None:
    took, out, err, rc = _interrupt(device, lib_path, """
        ev = device.create_event()
        print("READY", flush=True)
        ev.wait(1)              # no timeout: only Ctrl-C ends it
    """)
    _record("ctrl-c during event.wait", device, seconds_to_exit=round(took, 3))
    assert rc == 42 and "KeyboardInterrupt" in out, (rc, out, err)
    assert took < 5, f"KeyboardInterrupt took {took:.2f} s"  # generous: the wait polls every 50 ms


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_timed_wait(device: nexus.Device, lib_path: str) -> None:
    took, out, err, rc = _interrupt(device, lib_path, """
        ev = device.create_event()
        print("READY", flush=True)
        ev.wait(1, timeout=3600)
    """)
    assert rc == 42 and "KeyboardInterrupt" in out, (rc, out, err)
    assert took < 5


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_blocking_run(device: nexus.Device, lib_path: str) -> None:
    took, out, err, rc = _interrupt(device, lib_path, """
        ev = device.create_event()
        s = device.create_schedule()
        s.create_wait_command(ev, 1)
        print("READY", flush=True)
        s.run(blocking=True)    # waits for an event nobody signals
    """)
    assert rc == 42 and "KeyboardInterrupt" in out, (rc, out, err)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_synchronize(device: nexus.Device, lib_path: str) -> None:
    took, out, err, rc = _interrupt(device, lib_path, """
        ev = device.create_event()
        st = device.create_stream()
        s = device.create_schedule()
        s.create_wait_command(ev, 1)
        s.run(st, blocking=False)
        print("READY", flush=True)
        st.synchronize()
    """)
    assert rc == 42 and "KeyboardInterrupt" in out, (rc, out, err)
