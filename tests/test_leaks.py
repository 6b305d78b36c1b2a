"""Leaks: creating and dropping many objects keeps process memory flat.

Each test warms up (first-use allocations: pools, caches, thread stacks),
measures the resident set size (/proc/self/statm), churns through the
objects, and checks RSS is back within `BOUND` of the start. Counts are the
issue's (100,000 objects, 10,000 schedule runs); `NEXUS_LONG_TESTS=1`
multiplies them by 10. Figures are written to `$NEXUS_LEAK_RECORD` (JSON
lines) when set, for scripts/reliability_report.py.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys

import nexus
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")

SCALE = 10 if os.environ.get("NEXUS_LONG_TESTS") == "1" else 1
OBJECTS = 100_000 * SCALE
RUNS = 10_000 * SCALE
MiB = 1 << 20
BOUND = 32 * MiB


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _record(name: str, device: nexus.Device, count: int, before: int, after: int) -> None:
    path = os.environ.get("NEXUS_LEAK_RECORD")
    line = {"test": name, "device": repr(device), "count": count, "rss_before": before, "rss_after": after}
    print(f"\n{name}: {count} on {device!r}: RSS {before / MiB:.1f} -> {after / MiB:.1f} MiB")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


def churn(name: str, device: nexus.Device, count: int, make, per: int = 1) -> None:
    """Runs `make(i)` (which creates and drops `per` objects) `count` times after a warm-up."""
    for i in range(min(count // 10, 10_000)):
        make(i)
    before = rss()
    for i in range(count):
        make(i)
    after = rss()
    _record(name, device, count * per, before, after)
    assert after - before < BOUND, f"{name}: RSS grew by {(after - before) / MiB:.1f} MiB over {count} iterations"


def test_buffers_are_freed(device: nexus.Device) -> None:
    src = np.arange(64, dtype=np.float32)

    def make(i: int) -> None:
        if i % 2:
            device.create_buffer(256)
        else:
            device.create_buffer(src)

    churn("buffers", device, OBJECTS, make)


def test_events_are_freed(device: nexus.Device) -> None:
    def make(i: int) -> None:
        ev = device.create_event()
        ev.signal(1)

    churn("events", device, OBJECTS, make)
    # get_events() lists live events only: the dropped ones are gone.
    assert len(device.get_events()) < 1000


def test_schedules_are_freed(device: nexus.Device) -> None:
    churn("schedules", device, OBJECTS, lambda i: device.create_schedule())


def test_commands_are_freed(device: nexus.Device) -> None:
    kernel = device.get_builtin_library().get_kernel("add_vectors")
    buf = device.create_buffer(np.zeros(64, np.float32))
    ev = device.create_event()
    per_schedule = 100

    def make(i: int) -> None:
        # 100 commands per schedule; the schedule and its commands are dropped together.
        s = device.create_schedule()
        for j in range(per_schedule):
            if j % 3 == 0:
                s.create_signal_command(ev, 1)
            else:
                cmd = s.create_command(kernel)
                cmd.set_buffer(0, buf)
                cmd.set_arg(1, buf)
                cmd.set_buffer(2, buf)
                cmd.finalize(64, 64)

    churn("commands", device, OBJECTS // per_schedule, make, per=per_schedule)


def test_schedule_runs_are_freed(device: nexus.Device, kernels: nexus.Library) -> None:
    n = 256
    x = np.arange(n, dtype=np.float32)
    a = device.create_buffer(x)
    c = device.create_buffer(np.zeros(n, np.float32))
    stream = device.create_stream()
    done = device.create_event()
    vadd = kernels.get_kernel("vadd")
    counter = [0]

    def make(i: int) -> None:
        s = device.create_schedule()
        cmd = s.create_command(vadd)
        cmd.set_buffer(0, a)
        cmd.set_buffer(1, a)
        cmd.set_buffer(2, c)
        cmd.set_arg(3, n)
        cmd.finalize(64, n)
        if i % 2:
            s.run()
        else:
            counter[0] += 1
            s.create_signal_command(done, counter[0])
            s.run(stream, blocking=False)
            if i % 100 == 0:
                done.wait(counter[0], timeout=60)

    churn("schedule runs", device, RUNS, make)
    done.wait(counter[0], timeout=60)
    out = np.empty(n, np.float32)
    c.copy(out)
    np.testing.assert_array_equal(out, 2 * x)


def test_one_schedule_run_many_times(device: nexus.Device, kernels: nexus.Library) -> None:
    n = 256
    a = device.create_buffer(np.ones(n, np.float32))
    s = device.create_schedule()
    cmd = s.create_command(kernels.get_kernel("vadd"))
    cmd.set_buffer(0, a)
    cmd.set_buffer(1, a)
    cmd.set_buffer(2, a)  # a = a + a each run
    cmd.set_arg(3, n)
    cmd.finalize(64, n)
    churn("runs of one schedule", device, RUNS, lambda i: s.run())


def test_release_frees_at_once(device: nexus.Device) -> None:
    size = 256 * MiB
    before = rss()
    buf = device.create_buffer(np.ones(size // 4, np.float32))  # touched: resident on the CPU
    held = rss()
    buf.release()
    after = rss()
    _record("release 256 MiB", device, 1, held, after)
    if device.get_property_str("Runtime") == "cpu":
        assert held - before > size // 2, "the buffer was never resident"
        assert held - after > size // 2, f"release() kept {(after - before) / MiB:.0f} MiB"
    with pytest.raises(nexus.Error, match="was released") as e:
        buf.copy(np.empty(size // 4, np.float32))
    assert e.value.status == nexus.status.NXS_Released
    buf.release()  # a second release is a no-op
    assert "released" in repr(buf)


def test_context_managers_free_at_once(device: nexus.Device) -> None:
    size = 128 * MiB
    before = rss()
    with device.create_buffer(np.ones(size // 4, np.float32)) as buf:
        assert buf.nbytes == size
    after = rss()
    if device.get_property_str("Runtime") == "cpu":
        assert after - before < size // 2
    with device.create_event() as ev, device.create_stream() as st, device.create_schedule() as s:
        s.create_signal_command(ev, 1)
        s.run(st)
    for call in (lambda: buf.write(np.zeros(4, np.float32)), lambda: ev.get_value(), st.synchronize, s.run):
        with pytest.raises(nexus.Error, match="was released"):
            call()


def test_dropping_queued_work_keeps_it_alive(device: nexus.Device, kernels: nexus.Library) -> None:
    """Objects dropped by Python while their work is queued are kept until it ran."""
    n = 1024
    x = np.arange(n, dtype=np.float32)
    out = device.create_buffer(np.zeros(n, np.float32))
    go, done = device.create_event(), device.create_event()
    stream = device.create_stream()
    s = device.create_schedule()
    s.create_wait_command(go, 1)
    a = device.create_buffer(x)
    cmd = s.create_command(kernels.get_kernel("vadd"))
    cmd.set_buffer(0, a)
    cmd.set_buffer(1, a)
    cmd.set_buffer(2, out)
    cmd.set_arg(3, n)
    cmd.finalize(64, n)
    s.create_signal_command(done, 1)
    s.run(stream, blocking=False)
    del s, cmd, a, stream
    gc.collect()
    go.signal(1)
    done.wait(1, timeout=60)
    got = np.empty(n, np.float32)
    out.copy(got)
    np.testing.assert_array_equal(got, 2 * x)
