"""nexus Vulkan vs wgpu-py on the same Vulkan device, in one process.

Cases (issue 11): dispatch + wait round trip of an empty kernel, and a
vector add of 2^24 float32 (bandwidth), the same WGSL (bench/kernels/
bench.wgsl) on both sides; nexus Vulkan beside nexus CUDA where a CUDA
device exists. Run: python bench/bench_vulkan.py   (needs `pip install wgpu`)

Rounds of the two sides alternate (nexus, wgpu-py, nexus, ...) and each
figure is the median of its rounds: on a shared machine the load drifts
over seconds, and timing one side entirely before the other measured the
drift (the same build read 0.82x and 0.96x of wgpu-py's bandwidth from one
run to the next).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import nexus
import numpy as np

try:
    import wgpu
except Exception as e:  # pragma: no cover
    print(f"wgpu-py is needed for the side-by-side benchmark: {e}")
    sys.exit(1)

WGSL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "bench.wgsl")
N = 1 << 24
ROUND_TRIPS = 3000
ADDS = 20


REPEATS = 7


def interleaved(cases: dict[str, tuple], repeats: int = REPEATS) -> dict[str, float]:
    """Seconds per call of each `(fn, count)`, the median over `repeats`
    rounds that alternate between the cases; one warm-up round first."""
    for fn, count in cases.values():
        fn(max(1, count // 10))
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (fn, count) in cases.items():
            t0 = time.perf_counter()
            fn(count)
            times[name].append((time.perf_counter() - t0) / count)
    return {name: statistics.median(t) for name, t in times.items()}


def nexus_loops(empty: nexus.Schedule, add: nexus.Schedule, c: nexus.Buffer):
    """The two cases as loops of `k` blocking runs, and the result check."""

    def rt(k: int) -> None:
        for _ in range(k):
            empty.run()

    def va(k: int) -> None:
        for _ in range(k):
            add.run()

    def check() -> None:
        assert np.all(c.numpy() == 3)

    return rt, va, check


def nexus_cases(dev: nexus.Device):
    lib = dev.load_library(WGSL)
    empty = dev.create_schedule()
    empty.create_command(lib.get_kernel("empty")).finalize(64, 64)
    a = dev.create_buffer(np.ones(N, np.float32))
    b = dev.create_buffer(np.full(N, 2, np.float32))
    c = dev.zeros(N)
    add = dev.create_schedule()
    cmd = add.create_command(lib.get_kernel("vadd"))
    for i, buf in enumerate((a, b, c)):
        cmd.set_buffer(i, buf)
    cmd.finalize([256, 1], [N // 2, 2])

    return nexus_loops(empty, add, c)


def wgpu_cases():
    adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    device = adapter.request_device_sync()
    module = device.create_shader_module(code=open(WGSL).read())
    empty = device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "empty"})
    vadd = device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "vadd"})
    usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
    a = device.create_buffer_with_data(data=np.ones(N, np.float32), usage=usage)
    b = device.create_buffer_with_data(data=np.full(N, 2, np.float32), usage=usage)
    c = device.create_buffer(size=4 * N, usage=usage)
    bind = device.create_bind_group(
        layout=vadd.get_bind_group_layout(0),
        entries=[{"binding": i, "resource": {"buffer": x, "offset": 0, "size": 4 * N}} for i, x in enumerate((a, b, c))],
    )

    def dispatch(pipeline, groups, bind_group=None) -> None:
        enc = device.create_command_encoder()
        p = enc.begin_compute_pass()
        p.set_pipeline(pipeline)
        if bind_group is not None:
            p.set_bind_group(0, bind_group)
        p.dispatch_workgroups(*groups)
        p.end()
        device.queue.submit([enc.finish()])
        # wgpuDevicePoll(wait=true): blocks until the submitted work is
        # done (on_submitted_work_done_sync is broken in wgpu-py 0.32).
        device._poll_wait()

    def rt(k: int) -> None:
        for _ in range(k):
            dispatch(empty, (1, 1, 1))

    def va(k: int) -> None:
        for _ in range(k):
            dispatch(vadd, (N // 2 // 256, 2, 1), bind)

    def check() -> None:
        out = np.frombuffer(device.queue.read_buffer(c), np.float32)
        assert np.all(out == 3)

    return rt, va, check, adapter.info["device"]


def main() -> None:
    vk = nexus.get_runtime("vulkan")
    if len(vk) == 0:
        print("no Vulkan device (install a Vulkan driver: mesa-vulkan-drivers for lavapipe)")
        sys.exit(1)
    dev = vk.get_device(0)
    nx_rt_fn, nx_va_fn, nx_check = nexus_cases(dev)
    wg_rt_fn, wg_va_fn, wg_check, wg_name = wgpu_cases()
    # Many short rounds: a round trip's time moves with where the driver's
    # threads land, which changes over a run on a shared machine.
    rts = interleaved({"nexus": (nx_rt_fn, 200), "wgpu": (wg_rt_fn, 200)}, repeats=ROUND_TRIPS // 100)
    vas = interleaved({"nexus": (nx_va_fn, ADDS // 4), "wgpu": (wg_va_fn, ADDS // 4)})
    nx_check()
    wg_check()
    nx_rt, wg_rt = rts["nexus"], rts["wgpu"]
    nx_bw, wg_bw = 3 * 4 * N / vas["nexus"] / 1e9, 3 * 4 * N / vas["wgpu"] / 1e9
    print(f"device: nexus '{dev.get_property_str('Name')}', wgpu '{wg_name}'")
    print(f"empty dispatch + wait round trip   nexus {nx_rt * 1e6:9.2f} us   wgpu-py {wg_rt * 1e6:9.2f} us   "
          f"ratio {nx_rt / wg_rt:.3f}   (target <= 0.5)")
    print(f"vector add 2^24 float32            nexus {nx_bw:9.2f} GB/s wgpu-py {wg_bw:9.2f} GB/s ratio {nx_bw / wg_bw:.3f}"
          f"   (target >= 0.95)")
    cuda = nexus.get_runtime("cuda")
    if len(cuda):
        cu_rt_fn, cu_va_fn, cu_check = cuda_cases(cuda.get_device(0))
        rts = interleaved({"vulkan": (nx_rt_fn, 200), "cuda": (cu_rt_fn, 200)}, repeats=ROUND_TRIPS // 100)
        vas = interleaved({"vulkan": (nx_va_fn, ADDS // 4), "cuda": (cu_va_fn, ADDS // 4)})
        cu_check()
        vk_bw, cu_bw = 3 * 4 * N / vas["vulkan"] / 1e9, 3 * 4 * N / vas["cuda"] / 1e9
        print(f"nexus Vulkan vs nexus CUDA on '{cuda.get_device(0).get_property_str('Name')}':")
        print(f"  round trip   vulkan {rts['vulkan'] * 1e6:9.2f} us   cuda {rts['cuda'] * 1e6:9.2f} us   "
              f"ratio {rts['vulkan'] / rts['cuda']:.3f}")
        print(f"  vector add   vulkan {vk_bw:9.2f} GB/s cuda {cu_bw:9.2f} GB/s ratio {vk_bw / cu_bw:.3f}")


def cuda_cases(dev: nexus.Device):
    """The same two cases on nexus CUDA (PTX of the same kernels)."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
    empty = dev.create_schedule()
    empty.create_command(dev.load_library(os.path.join(here, "empty.ptx")).get_kernel("empty")).finalize(64, 64)
    a = dev.create_buffer(np.ones(N, np.float32))
    b = dev.create_buffer(np.full(N, 2, np.float32))
    c = dev.zeros(N)
    add = dev.create_schedule()
    cmd = add.create_command(dev.load_library(os.path.join(here, "vadd.ptx")).get_kernel("vadd"))
    for i, buf in enumerate((a, b, c)):
        cmd.set_buffer(i, buf)
    cmd.set_arg(3, N, data_type=nexus.data_type.U32)
    cmd.finalize(256, N)

    return nexus_loops(empty, add, c)


if __name__ == "__main__":
    main()
