"""OpenCL runtime benchmarks, side by side with PyOpenCL on the same device
in one process (issue 15).

    python bench/bench_opencl.py [--device 0] [--n-log2 24] [--repeat 31]

Prints:
- the round trip of a one-work-item empty kernel: nexus `run()` of a
  prebuilt schedule vs PyOpenCL's `knl(queue, (1,), (1,)); queue.finish()`
  (and `enqueue_nd_range_kernel(...).wait()`), as nexus time / PyOpenCL
  time (target <= 0.5);
- a vector add of 2^24 float32 with the same OpenCL C kernel and group size
  on both, as PyOpenCL time / nexus time (target >= 1.0), with the nexus CPU
  runtime's builtin add_vectors beside it.
Needs `pip install .[bench]` (PyOpenCL). `POCL_DEVICES=basic` selects
PoCL's device that runs commands on the calling thread: its round trip
shows the libraries' own costs, where the default thread device's is
mostly PoCL's hand-off to its workers (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import nexus
import numpy as np

VADD = """
__kernel void vadd(__global const float *a, __global const float *b, __global float *c, int n) {
    int i = get_global_id(0);
    if (i < n) c[i] = a[i] + b[i];
}
__kernel void empty(void) {}
"""


def timed(fn, inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def paired(fns: dict, repeat: int, inner: int) -> dict:
    """Median seconds per call of each function, sampled in alternating rounds."""
    samples: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            samples[k].append(timed(f, inner))
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--n-log2", type=int, default=24)
    p.add_argument("--repeat", type=int, default=31)
    args = p.parse_args()

    import pyopencl as cl

    device = nexus.get_runtime("opencl").get_device(args.device)
    name = device.get_property_str("Name")
    matches = [d for pl in cl.get_platforms() for d in pl.get_devices() if d.name == name]
    if not matches:
        raise SystemExit(f"PyOpenCL does not see {name!r}")
    ctx = cl.Context([matches[0]])
    queue = cl.CommandQueue(ctx)
    prg = cl.Program(ctx, VADD).build()
    print(f"machine: {platform.node()}, {os.cpu_count()} logical cores, python {platform.python_version()}, "
          f"numpy {np.__version__}, PyOpenCL {cl.VERSION_TEXT}")
    print(f"device: {name} ({device.get_property_str('Platform')}, {device.get_property_str('DriverVersion')})")

    # --- round trip -----------------------------------------------------------
    lib = device.load_library(VADD.encode())
    s_empty = device.create_schedule()
    s_empty.create_command(lib.get_kernel("empty")).finalize(1, 1)
    k_empty = cl.Kernel(prg, "empty")

    def cl_finish() -> None:
        k_empty(queue, (1,), (1,))
        queue.finish()

    def cl_wait() -> None:
        cl.enqueue_nd_range_kernel(queue, k_empty, (1,), (1,)).wait()

    for f in (s_empty.run, cl_finish, cl_wait):
        timed(f, 500)
    t = paired({"nexus": s_empty.run, "finish": cl_finish, "wait": cl_wait}, args.repeat, 300)
    print("\nempty kernel, enqueue + wait round trip (lower is better)")
    print(f"  nexus schedule.run()                      {t['nexus'] * 1e6:7.2f} us")
    print(f"  PyOpenCL knl(); queue.finish()            {t['finish'] * 1e6:7.2f} us   nexus/PyOpenCL = {t['nexus'] / t['finish']:.2f} (target <= 0.5)")
    print(f"  PyOpenCL enqueue_nd_range_kernel().wait() {t['wait'] * 1e6:7.2f} us   nexus/PyOpenCL = {t['nexus'] / t['wait']:.2f}")

    # --- vector add -------------------------------------------------------------
    n = 1 << args.n_log2
    group = 256
    rng = np.random.default_rng(0)
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    want = a + b
    ab, bb, cb = device.create_buffer(a), device.create_buffer(b), device.create_buffer(np.zeros(n, np.float32))
    s_vadd = device.create_schedule()
    cmd = s_vadd.create_command(lib.get_kernel("vadd"))
    for i, buf in enumerate((ab, bb, cb)):
        cmd.set_buffer(i, buf)
    cmd.set_arg(3, n)
    cmd.finalize(group, n)
    s_vadd.run()
    got = np.empty(n, np.float32)
    cb.copy(got)
    assert np.array_equal(got, want), "nexus OpenCL vadd"

    mf = cl.mem_flags
    ca = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a)
    cbuf = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=b)
    cc = cl.Buffer(ctx, mf.WRITE_ONLY, a.nbytes)
    k_vadd = cl.Kernel(prg, "vadd")
    k_vadd.set_args(ca, cbuf, cc, np.int32(n))

    def cl_vadd() -> None:
        cl.enqueue_nd_range_kernel(queue, k_vadd, (n,), (group,))
        queue.finish()

    cl_vadd()
    cl.enqueue_copy(queue, got, cc)
    assert np.array_equal(got, want), "PyOpenCL vadd"

    cpu = nexus.get_runtime("cpu").get_device(0)
    xa, xb, xc = cpu.create_buffer(a), cpu.create_buffer(b), cpu.create_buffer(np.zeros(n, np.float32))
    s_cpu = cpu.create_schedule()
    cmd = s_cpu.create_command(cpu.get_builtin_library().get_kernel("add_vectors"))
    for i, buf in enumerate((xa, xb, xc)):
        cmd.set_buffer(i, buf)
    cmd.finalize(1 << 16, n)
    s_cpu.run()
    xc.copy(got)
    assert np.array_equal(got, want), "nexus CPU add_vectors"

    for f in (s_vadd.run, cl_vadd, s_cpu.run):
        timed(f, 3)
    t = paired({"nexus": s_vadd.run, "pyopencl": cl_vadd, "cpu": s_cpu.run}, args.repeat, 1)
    gbs = lambda s: 3 * 4 * n / s / 1e9  # noqa: E731
    print(f"\nvector add 2^{args.n_log2} float32, group {group} (higher ratio is better)")
    print(f"  PyOpenCL                    {t['pyopencl'] * 1e3:7.2f} ms  {gbs(t['pyopencl']):6.1f} GB/s")
    print(f"  nexus OpenCL                {t['nexus'] * 1e3:7.2f} ms  {gbs(t['nexus']):6.1f} GB/s   PyOpenCL/nexus = {t['pyopencl'] / t['nexus']:.2f}x (target >= 1.0)")
    print(f"  nexus CPU builtin add_vectors {t['cpu'] * 1e3:5.2f} ms  {gbs(t['cpu']):6.1f} GB/s   (nexus OpenCL / CPU time = {t['nexus'] / t['cpu']:.2f})")


if __name__ == "__main__":
    main()
