"""nexus vs CuPy on the same GPU, in one process.

Prints a table with the ratio nexus/CuPy for each case (for times, < 1
means nexus is faster; for bandwidths, > 1 means nexus is faster).
Cases (issue 4): async launch of a prebuilt one-kernel schedule, launch +
wait round trip, replay of a 1000-kernel schedule, host<->device copies of
256 MiB (pinned and pageable), and a vector add of 2^26 float32 with the
same PTX. Run: python bench/bench_cuda.py [--quick] [--launch] [--copies]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import nexus
import numpy as np

try:
    import cupy as cp
except Exception as e:  # pragma: no cover
    print(f"CuPy is needed for the side-by-side benchmark: {e}")
    sys.exit(1)

QUICK = "--quick" in sys.argv
ONLY_COPIES = "--copies" in sys.argv  # the copy section alone (staging sweeps)
ONLY_LAUNCHES = "--launch" in sys.argv  # the launch section alone (A/B runs of the launch path)
REPEATS = 3 if QUICK else 7

# The same PTX for both sides: bench/kernels/{empty,vadd}.ptx.
KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")


def median_time(fn, count: int, repeats: int = REPEATS) -> float:
    """Median over `repeats` of (seconds for `fn(count)`) / count."""
    fn(max(1, count // 10))  # warm up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(count)
        out.append((time.perf_counter() - t0) / count)
    return statistics.median(out)


def main() -> None:
    dev = nexus.get_runtime("cuda").get_device(0)
    info = dev.get_info()
    gpu = info.get_str("Name")
    paths = {name: os.path.join(KERNELS, f"{name}.ptx") for name in ("empty", "vadd")}
    cp_empty = cp.RawModule(path=paths["empty"]).get_function("empty")
    cp_vadd = cp.RawModule(path=paths["vadd"]).get_function("vadd")
    nx_empty = dev.load_library(paths["empty"]).get_kernel("empty")
    nx_vadd = dev.load_library(paths["vadd"]).get_kernel("vadd")
    cp_stream = cp.cuda.Stream(non_blocking=True)
    rows = []

    def row(case: str, unit: str, nx: float, cu: float, target: str, higher_is_better: bool) -> None:
        ratio = nx / cu
        rows.append({"case": case, "unit": unit, "nexus": nx, "cupy": cu, "ratio": ratio, "target": target,
                     "nexus_better": ratio > 1 if higher_is_better else ratio < 1})
        print(f"{case:<44} nexus {nx:10.3f} {unit:<6} cupy {cu:10.3f} {unit:<6} ratio {ratio:6.3f}   target {target}", flush=True)

    if not ONLY_COPIES:
        launches(dev, nx_empty, cp_empty, cp_stream, row)
    if not ONLY_LAUNCHES:
        copies(dev, cp_stream, row)
    if not ONLY_COPIES and not ONLY_LAUNCHES:
        vector_add(dev, nx_vadd, cp_vadd, cp_stream, row)
    print(f"\nGPU: {gpu} ({info.get_str('Architecture')}), CuPy {cp.__version__}", flush=True)
    out_dir = os.environ.get("OUT")
    if out_dir and not ONLY_COPIES and not ONLY_LAUNCHES:
        with open(os.path.join(out_dir, "bench_cuda.json"), "w") as f:
            json.dump({"gpu": gpu, "rows": rows}, f, indent=1)


def launches(dev, nx_empty, cp_empty, cp_stream, row) -> None:
    # 1. async launch of a prebuilt one-kernel schedule
    sched = dev.create_schedule()
    cmd = sched.create_command(nx_empty)
    cmd.finalize(1, 1)
    sched.run()

    def nx_async(n: int) -> None:
        for _ in range(n):
            sched.run(blocking=False)
        dev_sync()

    def dev_sync() -> None:
        sched.run(blocking=True)

    def cp_async(n: int) -> None:
        with cp_stream:
            for _ in range(n):
                cp_empty((1,), (1,), ())
        cp_stream.synchronize()

    N = 2000 if QUICK else 20000
    row("async launch, 1-kernel schedule", "us", median_time(nx_async, N) * 1e6, median_time(cp_async, N) * 1e6, "<= 4 us", False)

    # 2. launch + wait round trip
    def nx_rt(n: int) -> None:
        for _ in range(n):
            sched.run()

    def cp_rt(n: int) -> None:
        with cp_stream:
            for _ in range(n):
                cp_empty((1,), (1,), ())
                cp_stream.synchronize()

    N = 1000 if QUICK else 10000
    row("launch + wait round trip", "us", median_time(nx_rt, N) * 1e6, median_time(cp_rt, N) * 1e6, "<= 10 us", False)

    # 3. replay of a 1000-kernel schedule (CUDA graph on both sides)
    K = 1000
    big = dev.create_schedule()
    for _ in range(K):
        big.create_command(nx_empty).finalize(1, 1)
    big.run()
    with cp_stream:
        cp_stream.begin_capture()
        for _ in range(K):
            cp_empty((1,), (1,), ())
        graph = cp_stream.end_capture()
    graph.launch(cp_stream)
    cp_stream.synchronize()

    def nx_graph(n: int) -> None:
        for _ in range(n):
            big.run(blocking=False)
        big.run()

    def cp_graph(n: int) -> None:
        for _ in range(n + 1):
            graph.launch(cp_stream)
        cp_stream.synchronize()

    N = 5 if QUICK else 20
    row("1000-kernel schedule replay, per kernel", "us", median_time(nx_graph, N) * 1e6 / K * N / (N + 1),
        median_time(cp_graph, N) * 1e6 / K * N / (N + 1), "<= 1.0 us", False)



def copies(dev, cp_stream, row) -> None:
    # 4. host <-> device, 256 MiB
    nbytes = (64 if QUICK else 256) << 20
    host = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    back = np.empty_like(host)
    pinned = cp.cuda.alloc_pinned_memory(nbytes)
    pin = np.frombuffer(pinned, np.uint8, nbytes)
    pin[:] = host
    pinned2 = cp.cuda.alloc_pinned_memory(nbytes)
    pin_back = np.frombuffer(pinned2, np.uint8, nbytes)
    nbuf = dev.create_buffer(nbytes)
    darr = cp.empty(nbytes, cp.uint8)
    gb = nbytes / 1e9

    def bw(fn) -> float:
        return gb / median_time(lambda n: [fn() for _ in range(n)], 3 if QUICK else 5)

    def cp_h2d(src):
        def f():
            darr.set(src, stream=cp_stream)
            cp_stream.synchronize()
        return f

    def cp_d2h(dst):
        def f():
            darr.get(out=dst, stream=cp_stream)
            cp_stream.synchronize()
        return f

    row("H2D pinned 256 MiB", "GB/s", bw(lambda: nbuf.write(pin)), bw(cp_h2d(pin)), ">= 0.95x", True)
    row("D2H pinned 256 MiB", "GB/s", bw(lambda: nbuf.copy(pin_back)), bw(cp_d2h(pin_back)), ">= 0.95x", True)
    row("H2D pageable 256 MiB", "GB/s", bw(lambda: nbuf.write(host)), bw(cp_h2d(host)), ">= 2x", True)
    row("D2H pageable 256 MiB", "GB/s", bw(lambda: nbuf.copy(back)), bw(cp_d2h(back)), ">= 2x", True)
    nbuf.copy(back)
    assert np.array_equal(back, host)


def vector_add(dev, nx_vadd, cp_vadd, cp_stream, row) -> None:
    # 5. vector add 2^26 float32, same PTX
    n = 1 << 26
    a = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
    b = np.random.default_rng(2).standard_normal(n, dtype=np.float32)
    na, nb_, nc = dev.create_buffer(a), dev.create_buffer(b), dev.create_buffer(n * 4)
    ca, cb, cc = cp.asarray(a), cp.asarray(b), cp.empty(n, cp.float32)
    vs = dev.create_schedule()
    c = vs.create_command(nx_vadd)
    c.set_buffer(0, na)
    c.set_buffer(1, nb_)
    c.set_buffer(2, nc)
    c.set_arg(3, n, data_type=nexus.data_type.U32)
    c.finalize(256, n)
    vs.run()
    out = np.empty(n, np.float32)
    nc.copy(out)
    assert np.array_equal(out, a + b)
    blocks = (n + 255) // 256

    def nx_v(k: int) -> None:
        for _ in range(k):
            vs.run(blocking=False)
        vs.run()

    def cp_v(k: int) -> None:
        with cp_stream:
            for _ in range(k + 1):
                cp_vadd((blocks,), (256,), (ca, cb, cc, np.uint32(n)))
        cp_stream.synchronize()

    R = 20 if QUICK else 100
    moved = 3 * 4 * n / 1e9
    row("vector add 2^26 f32 (same PTX)", "GB/s", moved / (median_time(nx_v, R) * R / (R + 1)),
        moved / (median_time(cp_v, R) * R / (R + 1)), ">= 0.98x", True)



if __name__ == "__main__":
    main()
