"""CPU runtime benchmarks, side by side with numpy in one process.

    python bench/bench_cpu.py [--n-log2 26] [--repeat 15]

Prints, as ratios:
- vector add of 2^26 float32: nexus kernel vs numpy.add(a, b, out=c);
- round trip of a prebuilt one-group empty-kernel schedule, run(blocking=True),
  against a plain Python call as the floor.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import nexus
import nexus.cpu
import numpy as np

# Two versions of c = a + b: the plain loop, and one with streaming
# (non-temporal) stores, which skip reading c into the cache before writing
# it: 3 memory streams instead of 4 for a bandwidth-bound kernel.
VADD = r"""
#include <nexus_cpu.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
NXS_KERNEL void vadd(void **args, const nxs_launch *l) {
    const float *restrict a = NXS_BUFFER(args, 0, const float);
    const float *restrict b = NXS_BUFFER(args, 1, const float);
    float *restrict c = NXS_BUFFER(args, 2, float);
    size_t end = nxs_group_end(l, 0);
    for (size_t i = nxs_group_start(l, 0); i < end; ++i) c[i] = a[i] + b[i];
}
NXS_KERNEL void vadd_stream(void **args, const nxs_launch *l) {
    const float *restrict a = NXS_BUFFER(args, 0, const float);
    const float *restrict b = NXS_BUFFER(args, 1, const float);
    float *restrict c = NXS_BUFFER(args, 2, float);
    size_t i = nxs_group_start(l, 0), end = nxs_group_end(l, 0);
#if defined(__AVX__)
    for (; i + 8 <= end && ((uintptr_t)(c + i) & 31) == 0; i += 8)
        _mm256_stream_ps(c + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    _mm_sfence();
#endif
    for (; i < end; ++i) c[i] = a[i] + b[i];
}
"""


def median_time(fn, repeat: int, inner: int = 1) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-log2", type=int, default=26)
    p.add_argument("--repeat", type=int, default=31)
    args = p.parse_args()

    device = nexus.get_runtime("cpu").get_device(0)
    print(f"machine: {device.get_property_str('Name')}, {os.cpu_count()} logical cores, "
          f"python {platform.python_version()}, numpy {np.__version__}")

    # --- vector add -------------------------------------------------------
    n = 1 << args.n_log2
    rng = np.random.default_rng(0)
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    c = np.empty_like(a)
    lib = device.load_library(nexus.cpu.build_library(VADD, flags=["-march=native"]))
    ab, bb, cb = device.create_buffer(a), device.create_buffer(b), device.create_buffer(c)
    schedules = {}
    for name in ("vadd", "vadd_stream"):
        sched = device.create_schedule()
        cmd = sched.create_command(lib.get_kernel(name))
        for i, buf in enumerate((ab, bb, cb)):
            cmd.set_buffer(i, buf)
        cmd.finalize(1 << 16, n)
        c.fill(np.nan)
        cb.write(c)
        sched.run()
        cb.copy(c)
        assert np.array_equal(c, a + b), name
        schedules[name] = sched

    # Paired samples (numpy, then each nexus variant, in every round) so
    # that machine noise hits both sides alike; the ratio is the median of
    # per-round ratios.
    gbs = lambda t: 3 * 4 * n / t / 1e9  # noqa: E731
    times: dict[str, list[float]] = {"numpy": [], **{k: [] for k in schedules}}
    for _ in range(args.repeat):
        times["numpy"].append(median_time(lambda: np.add(a, b, out=c), 1))
        for name, sched in schedules.items():
            times[name].append(median_time(sched.run, 1))
    t_np = statistics.median(times["numpy"])
    print(f"\nvector add 2^{args.n_log2} float32 ({device.get_property_int('Threads')} threads), {args.repeat} paired rounds")
    print(f"  numpy.add(out=)        {t_np * 1e3:8.2f} ms  {gbs(t_np):6.1f} GB/s")
    for name in schedules:
        t_nx = statistics.median(times[name])
        ratio = statistics.median(tn / tx for tn, tx in zip(times["numpy"], times[name]))
        print(f"  nexus {name:<16} {t_nx * 1e3:8.2f} ms  {gbs(t_nx):6.1f} GB/s   {ratio:.2f}x numpy (target >= 1.2x)")

    # --- launch round trip --------------------------------------------------
    empty = device.get_builtin_library().get_kernel("empty")
    s1 = device.create_schedule()
    s1.create_command(empty).finalize(1, 1)
    s1.run()

    def noop() -> None:
        pass

    inner = 20000
    t_run = median_time(s1.run, args.repeat, inner)
    t_call = median_time(noop, args.repeat, inner)
    print("\none-group empty kernel, run(blocking=True) round trip")
    print(f"  nexus schedule.run()   {t_run * 1e6:6.2f} us   (target <= 5 us; PyOpenCL on PoCL: 32 us)")
    print(f"  plain Python call      {t_call * 1e6:6.2f} us   (floor)")


if __name__ == "__main__":
    main()
