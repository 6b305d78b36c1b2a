"""Several GPUs of one runtime (issue 14): copy commands between them (peer
copies where the hardware allows, staged by the driver otherwise),
copy_buffer across devices without the host, and events shared across
devices. Runs where a runtime has two GPUs whose copies reach each other
(the lent two-GPU machine); skipped elsewhere."""

from __future__ import annotations

import random

import nexus
import numpy as np
import pytest

WAIT = 60.0


def _gpu_pairs() -> list[tuple[str, int, int]]:
    pairs = []
    for rt in nexus.get_runtimes():
        gpus = [i for i, d in enumerate(rt.get_devices()) if d.get_property_str("Type") == "gpu"]
        if rt.get_name() == "cuda" and len(gpus) >= 2:
            pairs.append((rt.get_name(), gpus[0], gpus[1]))
    return pairs


PAIRS = _gpu_pairs()
pytestmark = pytest.mark.skipif(not PAIRS, reason="needs two GPUs of one runtime")


@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0]}{p[1]}-{p[0]}{p[2]}")
def gpus(request: pytest.FixtureRequest) -> tuple[nexus.Device, nexus.Device]:
    name, a, b = request.param
    rt = nexus.get_runtime(name)
    return rt.get_device(a), rt.get_device(b)


def test_copy_commands_between_two_gpus_in_both_directions(gpus) -> None:
    g0, g1 = gpus
    n = 1 << 20
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    a0 = g0.create_buffer(x)
    b1 = g1.zeros(n)
    c0 = g0.zeros(n)
    s = g1.create_schedule()                      # the copy runs on g1's stream
    s.create_copy_command(a0, b1)                 # g0 -> g1
    s.create_copy_command(b1, c0, size=1000 * 4, src_offset=5 * 4, dst_offset=7 * 4)  # g1 -> g0
    assert s.run() == nexus.status.NXS_Success
    np.testing.assert_array_equal(b1.numpy(), x)
    want = np.zeros(n, np.float32)
    want[7:1007] = x[5:1005]
    np.testing.assert_array_equal(c0.numpy(), want)


def test_copy_buffer_across_gpus_keeps_shape_and_follows_earlier_runs(gpus) -> None:
    g0, g1 = gpus
    import threading
    src = g0.zeros((256, 1024))
    go = g0.create_event()
    s = g0.create_schedule()
    s.create_wait_command(go, 1)                  # held until the timer signals
    s.create_fill_command(src, 3.5)
    s.run(g0.create_stream(), blocking=False)
    threading.Timer(0.3, go.signal, args=(1,)).start()
    moved = g1.copy_buffer(src)                   # must wait for g0's held fill
    assert moved.get_device() == g1
    assert moved.shape == (256, 1024)
    np.testing.assert_array_equal(moved.numpy(), np.full((256, 1024), 3.5, np.float32))


def test_a_peer_copy_ordered_by_events_across_devices(gpus) -> None:
    """g0 fills, signals; g1 waits on the GPU, copies g0's buffer, signals."""
    g0, g1 = gpus
    n = 1 << 16
    src = g0.zeros(n)
    dst = g1.zeros(n)
    ready = g0.create_event()
    done = g1.create_event()
    consumer = g1.create_schedule()
    consumer.create_wait_command(ready, 1)
    consumer.create_copy_command(src, dst)
    consumer.create_signal_command(done, 1)
    producer = g0.create_schedule()
    producer.create_fill_command(src, 9.0)
    producer.create_signal_command(ready, 1)
    consumer.run(g1.create_stream(), blocking=False)   # queued first: waits for the signal
    producer.run(g0.create_stream(), blocking=False)
    done.wait(1, timeout=WAIT)
    np.testing.assert_array_equal(dst.numpy(), np.full(n, 9, np.float32))


@pytest.mark.parametrize("seed", range(4))
def test_random_programs_of_fills_and_copies_across_gpus_match_a_model(gpus, seed: int) -> None:
    """Model-based: random fills and copies over buffers of both GPUs, each
    step on a random device's stream, chained by events so they run in
    order; the result is compared with the same program run on numpy."""
    g0, g1 = gpus
    rng = random.Random(seed)
    n = 4096
    devices = [g0, g1]
    bufs = [(d, d.zeros(n)) for d in devices for _ in range(2)]
    model = [np.zeros(n, np.float32) for _ in bufs]
    streams = {id(d): [d.create_stream(), d.create_stream()] for d in devices}
    prev = None
    for _step in range(40):
        dev = rng.choice(devices)
        s = dev.create_schedule()
        if prev is not None:
            s.create_wait_command(prev, 1)
        if rng.random() < 0.3:
            i = rng.randrange(len(bufs))
            if bufs[i][0] != dev:
                i = next(j for j, (d, _) in enumerate(bufs) if d == dev)
            value = float(rng.randrange(100))
            s.create_fill_command(bufs[i][1], value)
            model[i][:] = value
        else:
            i, j = rng.sample(range(len(bufs)), 2)
            count = rng.randrange(1, n)
            so, do = rng.randrange(n - count + 1), rng.randrange(n - count + 1)
            s.create_copy_command(bufs[i][1], bufs[j][1], size=count * 4, src_offset=so * 4, dst_offset=do * 4)
            model[j][do:do + count] = model[i][so:so + count]
        ev = dev.create_event()
        s.create_signal_command(ev, 1)
        s.run(rng.choice(streams[id(dev)]), blocking=False)
        prev = ev
    assert prev is not None
    prev.wait(1, timeout=WAIT)
    for (dev, b), want in zip(bufs, model):
        np.testing.assert_array_equal(b.numpy(), want, err_msg=f"buffer on {dev}")
