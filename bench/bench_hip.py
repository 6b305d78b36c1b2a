"""The launch cases of bench_cuda.py on the `hip` device, beside the same
cases on the `cuda` device of the same GPU when there is one.

On an NVIDIA GPU through the HIP-on-CUDA test double
(tests/support/hip_on_cuda.c, NEXUS_HIP_LIBRARY pointing at it) the `hip`
figures measure nexus's own HIP path plus the double's thin translation,
not AMD hardware; the `cuda` column is the same work through nexus's CUDA
runtime. Cases: async launch of a prebuilt one-kernel schedule, launch +
wait round trip, replay of a 1000-kernel schedule (a HIP/CUDA graph).
Run: python bench/bench_hip.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import nexus

QUICK = "--quick" in sys.argv
REPEATS = 3 if QUICK else 7
EMPTY = b'#include <hip/hip_runtime.h>\nextern "C" __global__ void empty() {}\n'
EMPTY_CU = b'extern "C" __global__ void empty() {}\n'


def median_time(fn, count: int, repeats: int = REPEATS) -> float:
    """Median over `repeats` of (seconds for `fn(count)`) / count."""
    fn(max(1, count // 10))  # warm up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(count)
        out.append((time.perf_counter() - t0) / count)
    return statistics.median(out)


def launch_cases(dev: nexus.Device, source: bytes) -> dict[str, float]:
    empty = dev.load_library(source).get_kernel("empty")
    sched = dev.create_schedule()
    sched.create_command(empty).finalize(1, 1)
    sched.run()

    def run_async(n: int) -> None:
        for _ in range(n):
            sched.run(blocking=False)
        sched.run()

    def round_trip(n: int) -> None:
        for _ in range(n):
            sched.run()

    big = dev.create_schedule()
    for _ in range(1000):
        big.create_command(empty).finalize(1, 1)
    big.run()

    def replay(n: int) -> None:
        for _ in range(n):
            big.run(blocking=False)
        big.run()

    return {
        "async launch, 1-kernel schedule (us)": median_time(run_async, 2000 if QUICK else 20000) * 1e6,
        "launch + wait round trip (us)": median_time(round_trip, 1000 if QUICK else 10000) * 1e6,
        "replay of a 1000-kernel schedule (us)": median_time(replay, 20 if QUICK else 200) * 1e6,
    }


def main() -> None:
    hip = nexus.get_runtime("hip")
    if not hip.get_devices():
        print("no HIP device (set NEXUS_HIP_LIBRARY to the HIP-on-CUDA test double on an NVIDIA GPU)")
        sys.exit(1)
    dev = hip.get_device(0)
    rows = {"hip": launch_cases(dev, EMPTY)}
    cuda = nexus.get_runtime("cuda")
    if cuda.get_devices():
        rows["cuda"] = launch_cases(cuda.get_device(0), EMPTY_CU)
    for case in rows["hip"]:
        line = f"{case:<42} hip {rows['hip'][case]:10.2f}"
        if "cuda" in rows:
            line += f"   cuda {rows['cuda'][case]:10.2f}   hip/cuda {rows['hip'][case] / rows['cuda'][case]:6.3f}"
        print(line, flush=True)
    info = dev.get_info()
    print(f"\nHIP device: {info.get_str('Name')} ({info.get_str('Architecture')}); "
          f"library {os.environ.get('NEXUS_HIP_LIBRARY', 'libamdhip64')}")
    out_dir = os.environ.get("OUT")
    if out_dir:
        with open(os.path.join(out_dir, "bench_hip.json"), "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
