"""Asynchronous pipelines (issue 14), in one process.

- overlap: H2D copy, kernel, D2H copy of 64 chunks of 4 MiB on two streams;
  nexus schedules with copy commands between pinned host buffers and device
  buffers, vs CuPy with async copies on two streams (CUDA);
- profiling overhead: a profiled vs an unprofiled 1-kernel blocking run;
- asyncio: 10,000 concurrent `await event.wait_async` released by one
  signal (time, and native threads added to the process);
- peer copy of 1 GiB from GPU 0 to GPU 1 (two CUDA GPUs): a nexus copy
  command and `copy_buffer`, vs torch `.to("cuda:1")` (bandwidth).
Run: python bench/bench_pipelines.py [--cpu]   (--cpu: the CPU device only)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

import nexus
import numpy as np

KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
CHUNKS, CHUNK = 64, 4 << 20


def threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def median(fn, repeats: int = 5) -> float:
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def overlap(dev: nexus.Device) -> None:
    import cupy as cp

    n = CHUNK // 4
    vadd = dev.load_library(os.path.join(KERNELS, "vadd.ptx")).get_kernel("vadd")
    hosts_in = [dev.create_host_buffer(n) for _ in range(CHUNKS)]
    hosts_out = [dev.create_host_buffer(n) for _ in range(CHUNKS)]
    for h in hosts_in:
        h.write(np.ones(n, np.float32))
    dbuf = [(dev.empty(n), dev.empty(n)) for _ in range(2)]
    streams = [dev.create_stream() for _ in range(2)]
    schedules = []
    for i in range(CHUNKS):
        a, c = dbuf[i % 2]
        s = dev.create_schedule()
        s.create_copy_command(hosts_in[i], a)
        cmd = s.create_command(vadd)
        for j, b in enumerate((a, a, c)):
            cmd.set_buffer(j, b)
        cmd.set_arg(3, n)
        cmd.finalize(256, n)
        s.create_copy_command(c, hosts_out[i])
        schedules.append(s)

    def run_nexus() -> None:
        for i, s in enumerate(schedules):
            s.run(stream=streams[i % 2], blocking=False)
        for st in streams:
            st.synchronize()

    cp_vadd = cp.RawModule(path=os.path.join(KERNELS, "vadd.ptx")).get_function("vadd")
    pinned_in = [cp.cuda.alloc_pinned_memory(CHUNK) for _ in range(CHUNKS)]
    pinned_out = [cp.cuda.alloc_pinned_memory(CHUNK) for _ in range(CHUNKS)]
    arr_in = [np.frombuffer(p, np.float32, n) for p in pinned_in]
    arr_out = [np.frombuffer(p, np.float32, n) for p in pinned_out]
    for a in arr_in:
        a[:] = 1
    cbuf = [(cp.empty(n, cp.float32), cp.empty(n, cp.float32)) for _ in range(2)]
    cstreams = [cp.cuda.Stream(non_blocking=True) for _ in range(2)]

    def run_cupy() -> None:
        for i in range(CHUNKS):
            a, c = cbuf[i % 2]
            st = cstreams[i % 2]
            a.set(arr_in[i], stream=st)
            cp_vadd((n // 256,), (256,), (a, a, c, np.int32(n)), stream=st)
            c.get(stream=st, out=arr_out[i])
        for st in cstreams:
            st.synchronize()

    t_nx, t_cp = median(run_nexus), median(run_cupy)
    ok = all(np.array_equal(h.numpy(), np.full(n, 2, np.float32)) for h in hosts_out[:4])
    print(f"overlap 64 x 4 MiB, 2 streams    nexus {t_nx * 1e3:8.2f} ms   cupy {t_cp * 1e3:8.2f} ms   "
          f"ratio {t_nx / t_cp:.3f}  (target <= 1.0)  correct={ok}")


def profiling_overhead(dev: nexus.Device, kernel: nexus.Kernel, buffers, n: int, commands: int = 1) -> None:
    def make(profile: bool) -> nexus.Schedule:
        s = dev.create_schedule(profile=profile)
        for _ in range(commands):
            cmd = s.create_command(kernel)
            for j, b in enumerate(buffers):
                cmd.set_buffer(j, b)
            if kernel.name == "vadd":
                cmd.set_arg(3, n)
            cmd.finalize(256, n)
        return s

    plain, profiled = make(False), make(True)
    count = 2000

    def loop(s: nexus.Schedule):
        def f() -> None:
            for _ in range(count):
                s.run()
        return f

    # Interleaved, so both see the same GPU clock and host noise, in
    # alternating order; the extra is the median of the pairs' differences.
    def pair(i: int) -> tuple:
        order = [plain, profiled][:: 1 if i % 2 == 0 else -1]
        t = {s: median(loop(s), 1) / count for s in order}
        return t[plain], t[profiled]
    pairs = [pair(i) for i in range(10)]
    t_plain = statistics.median(p for p, _ in pairs)
    t_prof = statistics.median(q for _, q in pairs)
    extra = statistics.median(q - p for p, q in pairs)
    print(f"profiled {commands}-kernel run            plain {t_plain * 1e6:8.2f} us   profiled {t_prof * 1e6:8.2f} us   "
          f"extra {extra * 1e6:6.2f} us (target <= 1.5 us)  "
          f"ElapsedTime {profiled.get_commands()[0].get_property_flt('ElapsedTime') * 1e3:.1f} us")


def asyncio_waits(dev: nexus.Device) -> None:
    event = dev.create_event()
    before = threads()

    async def main() -> float:
        waits = [event.wait_async(1) for _ in range(10000)]
        t0 = time.perf_counter()
        event.signal(1)
        await asyncio.gather(*waits)
        return time.perf_counter() - t0

    t = asyncio.run(main())
    print(f"10,000 wait_async, one signal    {t * 1e3:8.2f} ms from the signal   "
          f"threads added {threads() - before} (target: 1 on first use)")


def peer_copy() -> None:
    import torch
    rt = nexus.get_runtime("cuda")
    if len(rt.get_devices()) < 2 or torch.cuda.device_count() < 2:
        print("peer copy: needs two CUDA GPUs (skipped)")
        return
    g0, g1 = rt.get_device(0), rt.get_device(1)
    size = 1 << 30
    src, dst = g0.empty(size // 4), g1.empty(size // 4)
    s = g1.create_schedule()
    s.create_copy_command(src, dst)
    t_nexus = median(s.run, 9)
    t_copy_buffer = median(lambda: g1.copy_buffer(src).release(), 5)
    x = torch.empty(size // 4, dtype=torch.float32, device="cuda:0")

    def torch_copy() -> None:
        x.to("cuda:1")
        torch.cuda.synchronize("cuda:1")
    t_torch = median(torch_copy, 9)
    gbs = lambda t: size / t / 1e9  # noqa: E731
    print(f"peer copy 1 GiB GPU0->GPU1       nexus copy command {gbs(t_nexus):7.1f} GB/s   "
          f"copy_buffer {gbs(t_copy_buffer):7.1f} GB/s   torch .to {gbs(t_torch):7.1f} GB/s   "
          f"nexus/torch bandwidth {t_torch / t_nexus:.2f} (target >= 0.95)")


def main() -> None:
    if "--cpu" in sys.argv:
        dev = nexus.get_runtime("cpu").get_device(0)
        n = 1 << 10
        bufs = [dev.create_buffer(np.ones(n, np.float32)) for _ in range(3)]
        profiling_overhead(dev, dev.get_builtin_library().get_kernel("add_vectors"), bufs, n)
        asyncio_waits(dev)
        return
    dev = nexus.get_runtime("cuda").get_device(0)
    print(f"GPU: {dev.get_info().get_str('Name')}")
    overlap(dev)
    n = 1 << 10
    bufs = [dev.create_buffer(np.ones(n, np.float32)) for _ in range(3)]
    empty = dev.load_library(os.path.join(KERNELS, "vadd.ptx")).get_kernel("vadd")
    profiling_overhead(dev, empty, bufs, n)
    profiling_overhead(dev, empty, bufs, n, commands=3)
    asyncio_waits(dev)
    peer_copy()


if __name__ == "__main__":
    main()
