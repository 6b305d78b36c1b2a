"""Events, streams and asynchronous runs."""

from __future__ import annotations

import threading
import time

import nexus
import numpy as np
import pytest


def vadd_command(schedule: nexus.Schedule, kernels: nexus.Library, a, b, c, n: int) -> nexus.Command:
    cmd = schedule.create_command(kernels.get_kernel("vadd"))
    cmd.set_buffer(0, a)
    cmd.set_buffer(1, b)
    cmd.set_buffer(2, c)
    cmd.set_arg(3, n)
    cmd.finalize(256, n)
    return cmd


@pytest.mark.parametrize("event_type", list(nexus.event_type.EventType))
def test_event_types_signal_and_wait(device: nexus.Device, event_type: nexus.event_type.EventType) -> None:
    ev = device.create_event(event_type)
    assert ev.get_value() == 0
    ev.signal(5)
    ev.wait(5)
    ev.wait(3)  # already past: returns at once
    assert ev.get_value() == 5
    assert ev.get_property_str("EventType") == event_type.name


def test_wait_times_out(device: nexus.Device) -> None:
    ev = device.create_event()
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="value 1"):
        ev.wait(1, timeout=0.2)
    assert time.monotonic() - start >= 0.19


def test_event_values_set_lower_and_repeat(device: nexus.Device) -> None:
    """Values may go down (a host or in-stream reset) and be signalled again,
    on every runtime (Vulkan timeline semaphores and Metal shared events
    never decrease: nexus starts a new epoch)."""
    ev = device.create_event()
    s = device.create_schedule()
    s.create_signal_command(ev, 3)
    for _ in range(3):  # the same value signalled by every run
        s.run()
        assert ev.get_value() == 3
    ev.signal(1)  # a host reset below a device-signalled value
    assert ev.get_value() == 1
    ev.signal(2)
    assert ev.get_value() == 2
    lower = device.create_schedule()
    lower.create_signal_command(ev, 0)  # an in-stream reset
    lower.run()
    assert ev.get_value() == 0
    ev.wait(0, timeout=1)
    with pytest.raises(TimeoutError):
        ev.wait(1, timeout=0.1)
    s.run()
    ev.wait(3, timeout=30)


def test_get_events_lists_live_events(device: nexus.Device) -> None:
    evs = [device.create_event() for _ in range(3)]
    evs[1].signal(7)
    values = sorted(e.get_value() for e in device.get_events())
    assert 7 in values and len(values) >= 3


def test_nonblocking_run_waits_in_stream_order(device: nexus.Device, kernels: nexus.Library) -> None:
    n = 4096
    a = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    ab = device.create_buffer(a)
    cb = device.create_buffer(np.zeros(n, np.float32))
    go, done = device.create_event(), device.create_event()
    schedule = device.create_schedule()
    schedule.create_wait_command(go, 1)
    vadd_command(schedule, kernels, ab, ab, cb, n)
    schedule.create_signal_command(done, 1)
    assert schedule.run(blocking=False) == nexus.status.NXS_Success
    # The stream is held by the wait command: the kernel cannot have run.
    with pytest.raises(TimeoutError):
        done.wait(1, timeout=0.1)
    go.signal(1)
    done.wait(1, timeout=30)
    out = np.empty(n, np.float32)
    cb.copy(out)
    np.testing.assert_array_equal(out, 2 * a)


def test_two_stream_pipeline(device: nexus.Device, kernels: nexus.Library) -> None:
    """Stream B consumes what stream A produced, ordered by an event only."""
    n = 100_000
    rng = np.random.default_rng(11)
    x = rng.standard_normal(n, dtype=np.float32)
    xb = device.create_buffer(x)
    mid = device.create_buffer(np.zeros(n, np.float32))
    out = device.create_buffer(np.zeros(n, np.float32))
    stream_a, stream_b = device.create_stream(), device.create_stream()
    ready, finished = device.create_event(), device.create_event()

    consumer = device.create_schedule()
    consumer.create_wait_command(ready, 1)
    vadd_command(consumer, kernels, mid, xb, out, n)  # out = 2x + x
    consumer.create_signal_command(finished, 1)

    producer = device.create_schedule()
    vadd_command(producer, kernels, xb, xb, mid, n)  # mid = 2x
    producer.create_signal_command(ready, 1)

    consumer.run(stream_b, blocking=False)  # queued first, waits for A
    producer.run(stream_a, blocking=False)
    finished.wait(1, timeout=30)
    got = np.empty(n, np.float32)
    out.copy(got)
    np.testing.assert_array_equal(got, 2 * x + x)
    stream_a.synchronize()
    stream_b.synchronize()


def test_device_stays_usable_while_a_stream_waits(device: nexus.Device, kernels: nexus.Library, build_dir) -> None:
    """A stream held by a wait nobody has signalled yet holds only itself:
    new buffers, new libraries, runs on other streams and releases all work."""
    from conftest import library_path

    n = 50_000
    never = device.create_event()
    parked = device.create_stream()
    held = device.create_schedule()
    held.create_wait_command(never, 1)
    held.run(parked, blocking=False)

    x = np.arange(n, dtype=np.float32)
    a = device.create_buffer(x)  # allocated after the park
    c = device.create_buffer(np.zeros(n, np.float32))
    fresh = device.load_library(library_path(device, "kernels", build_dir))  # loaded after the park
    s = device.create_schedule()
    cmd = s.create_command(fresh.get_kernel("vadd"))
    cmd.set_buffer(0, a)
    cmd.set_buffer(1, a)
    cmd.set_buffer(2, c)
    cmd.set_arg(3, n)
    cmd.finalize(256, n)
    s.run()  # default stream, blocking
    s.run(device.create_stream())  # another stream, blocking
    got = np.empty(n, np.float32)
    c.copy(got)
    np.testing.assert_array_equal(got, 2 * x)
    for _ in range(3):  # allocate and free while the stream is still held
        tmp = device.create_buffer(np.ones(1 << 20, np.uint8))
        tmp.release()
    del s, cmd, fresh
    never.signal(1)
    parked.synchronize()


def test_runs_behind_a_held_run_keep_stream_order(device: nexus.Device, kernels: nexus.Library) -> None:
    n = 10_000
    x = np.arange(n, dtype=np.float32)
    a = device.create_buffer(x)
    c = device.create_buffer(np.zeros(n, np.float32))
    go, done = device.create_event(), device.create_event()
    stream = device.create_stream()
    first = device.create_schedule()
    first.create_wait_command(go, 1)
    vadd_command(first, kernels, a, a, c, n)  # c = 2x
    second = device.create_schedule()
    vadd_command(second, kernels, c, a, c, n)  # c = c + x: 3x only after the first
    second.create_signal_command(done, 1)
    first.run(stream, blocking=False)
    second.run(stream, blocking=False)  # no wait of its own, still behind the first
    with pytest.raises(TimeoutError):
        done.wait(1, timeout=0.1)
    go.signal(1)
    done.wait(1, timeout=30)
    stream.synchronize()
    got = np.empty(n, np.float32)
    c.copy(got)
    np.testing.assert_array_equal(got, 3 * x)


def test_chain_of_waits_released_by_one_host_signal(device: nexus.Device, kernels: nexus.Library) -> None:
    """B waits for a signal in A's run, which itself waits for the host; B is queued first."""
    n = 10_000
    x = np.arange(n, dtype=np.float32)
    xb = device.create_buffer(x)
    mid = device.create_buffer(np.zeros(n, np.float32))
    out = device.create_buffer(np.zeros(n, np.float32))
    go, ready, done = device.create_event(), device.create_event(), device.create_event()
    stream_a, stream_b = device.create_stream(), device.create_stream()
    b = device.create_schedule()
    b.create_wait_command(ready, 1)
    vadd_command(b, kernels, mid, xb, out, n)  # out = mid + x
    b.create_signal_command(done, 1)
    a = device.create_schedule()
    a.create_wait_command(go, 1)
    vadd_command(a, kernels, xb, xb, mid, n)  # mid = 2x
    a.create_signal_command(ready, 1)
    b.run(stream_b, blocking=False)
    a.run(stream_a, blocking=False)
    with pytest.raises(TimeoutError):
        done.wait(1, timeout=0.1)
    go.signal(1)
    done.wait(1, timeout=30)
    got = np.empty(n, np.float32)
    out.copy(got)
    np.testing.assert_array_equal(got, 3 * x)
    assert ready.get_value() == 1


def test_timeline_values_across_many_runs(device: nexus.Device, kernels: nexus.Library) -> None:
    n = 256
    a = device.create_buffer(np.ones(n, np.float32))
    c = device.create_buffer(np.zeros(n, np.float32))
    ev = device.create_event()
    stream = device.create_stream()
    for i in range(1, 51):
        s = device.create_schedule()
        vadd_command(s, kernels, a, a, c, n)
        s.create_signal_command(ev, i)
        s.run(stream, blocking=False)
    ev.wait(50, timeout=30)
    assert ev.get_value() == 50


def test_blocking_wait_releases_the_gil(device: nexus.Device) -> None:
    ev = device.create_event()
    counter = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        with pytest.raises(TimeoutError):
            ev.wait(1, timeout=0.3)
        before = counter[0]
        time.sleep(0)
        with pytest.raises(TimeoutError):
            ev.wait(1, timeout=0.3)
        assert counter[0] > before  # the other thread ran while we waited
    finally:
        stop.set()
        t.join()


def test_signal_from_another_thread(device: nexus.Device) -> None:
    ev = device.create_event()
    t = threading.Timer(0.05, lambda: ev.signal(3))
    t.start()
    ev.wait(3, timeout=10)
    t.join()
    assert ev.get_value() == 3


def test_event_of_another_device_orders_work() -> None:
    """Events are shared: a schedule on one device signals an event another device's schedule waits on."""
    devices = [d for r in nexus.get_runtimes() for d in r.get_devices()]
    if len(devices) < 2:
        pytest.skip("needs two devices")
    a, b = devices[0], devices[-1]
    ev = a.create_event()
    done = b.create_event()
    waiter = b.create_schedule()
    waiter.create_wait_command(ev, 1)
    waiter.create_signal_command(done, 1)
    waiter.run(blocking=False)
    with pytest.raises(TimeoutError):
        done.wait(1, timeout=0.1)
    signaller = a.create_schedule()
    signaller.create_signal_command(ev, 1)
    signaller.run()
    done.wait(1, timeout=30)
