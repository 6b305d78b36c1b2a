"""asyncio (issue 14): awaiting runs, events and streams from an event loop,
resolved by one completion thread per process."""

from __future__ import annotations

import asyncio
import threading

import nexus
import numpy as np
import pytest


def fill_schedule(device: nexus.Device, lib_path: str, buf: nexus.Buffer, value: float, n: int) -> nexus.Schedule:
    kernels = device.load_library(lib_path)
    s = device.create_schedule()
    cmd = s.create_command(kernels.get_kernel("fill_f32"))
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, value)
    cmd.set_arg(2, n)
    cmd.finalize(64, n)
    return s


def test_run_async_resolves_when_the_run_is_done(device: nexus.Device, lib_path: str) -> None:
    n = 4096
    buf = device.zeros(n)
    s = fill_schedule(device, lib_path, buf, 3.5, n)

    async def main() -> int:
        return await s.run_async()

    assert asyncio.run(main()) == nexus.status.NXS_Success
    np.testing.assert_array_equal(buf.numpy(), np.full(n, 3.5, np.float32))


def test_run_async_on_a_stream_and_synchronize_async(device: nexus.Device, lib_path: str) -> None:
    n = 1024
    bufs = [device.zeros(n) for _ in range(4)]
    stream = device.create_stream()

    async def main() -> None:
        runs = [fill_schedule(device, lib_path, b, float(i), n).run_async(stream) for i, b in enumerate(bufs)]
        assert await asyncio.gather(*runs) == [nexus.status.NXS_Success] * 4
        assert await stream.synchronize_async() == nexus.status.NXS_Success

    asyncio.run(main())
    for i, b in enumerate(bufs):
        np.testing.assert_array_equal(b.numpy(), np.full(n, i, np.float32))


def test_many_waits_released_by_one_signal_use_one_thread(device: nexus.Device) -> None:
    event = device.create_event()

    async def main() -> list:
        waits = [event.wait_async(7) for _ in range(2000)]
        asyncio.get_running_loop().call_later(0.02, event.signal, 7)
        return await asyncio.gather(*waits)

    before = {t.name for t in threading.enumerate()}
    assert asyncio.run(main()) == [nexus.status.NXS_Success] * 2000
    assert event.get_value() == 7
    # Python threads are unchanged: the completion thread is native, and one.
    assert {t.name for t in threading.enumerate()} == before


def test_wait_async_times_out_with_timeout_error(device: nexus.Device) -> None:
    event = device.create_event()

    async def main() -> None:
        with pytest.raises(TimeoutError, match="waiting for value 3"):
            await event.wait_async(3, timeout=0.05)

    asyncio.run(main())
    with pytest.raises(ValueError, match="timeout -1"):
        asyncio.run(_call(lambda: event.wait_async(1, timeout=-1)))


async def _call(f):
    return await f()


def test_cancelled_waits_leave_the_device_consistent(device: nexus.Device, lib_path: str) -> None:
    event = device.create_event()
    n = 512
    buf = device.zeros(n)

    async def main() -> None:
        task = asyncio.ensure_future(event.wait_async(1))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The runtime goes on: a run after the cancelled wait completes.
        await fill_schedule(device, lib_path, buf, 2.0, n).run_async()

    asyncio.run(main())
    np.testing.assert_array_equal(buf.numpy(), np.full(n, 2, np.float32))
    event.signal(1)


def test_a_failed_run_raises_from_the_await(cpu_device: nexus.Device) -> None:
    s = cpu_device.create_schedule()
    s.create_command(cpu_device.get_builtin_library().get_kernel("add_vectors"))

    async def main() -> None:
        await s.run_async()

    with pytest.raises(nexus.Error, match="never finalized"):
        asyncio.run(main())


def test_waits_outside_a_running_loop_raise(device: nexus.Device) -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        device.create_event().wait_async(1)
