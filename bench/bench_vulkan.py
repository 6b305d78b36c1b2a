"""nexus Vulkan vs wgpu-py on the same Vulkan device, in one process.

Cases (issue 11): dispatch + wait round trip of an empty kernel, and a
vector add of 2^24 float32 (bandwidth), the same WGSL (bench/kernels/
bench.wgsl) on both sides; nexus Vulkan beside nexus CUDA where a CUDA
device exists. Run: python bench/bench_vulkan.py   (needs `pip install wgpu`)
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
ROUND_TRIPS = 2000
ADDS = 20


def median(fn, count: int, repeats: int = 5) -> float:
    fn(max(1, count // 10))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(count)
        out.append((time.perf_counter() - t0) / count)
    return statistics.median(out)


def nexus_cases(dev: nexus.Device) -> tuple[float, float]:
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

    def rt(k: int) -> None:
        for _ in range(k):
            empty.run()

    def va(k: int) -> None:
        for _ in range(k):
            add.run()

    t_rt, t_va = median(rt, ROUND_TRIPS), median(va, ADDS)
    assert np.array_equal(c.numpy()[:: N // 7], np.full(8, 3, np.float32)[: len(c.numpy()[:: N // 7])])
    return t_rt, 3 * 4 * N / t_va / 1e9


def wgpu_cases() -> tuple[float, float, str]:
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

    t_rt, t_va = median(rt, ROUND_TRIPS), median(va, ADDS)
    out = np.frombuffer(device.queue.read_buffer(c), np.float32)
    assert np.all(out == 3)
    return t_rt, 3 * 4 * N / t_va / 1e9, adapter.info["device"]


def main() -> None:
    vk = nexus.get_runtime("vulkan")
    if len(vk) == 0:
        print("no Vulkan device (install a Vulkan driver: mesa-vulkan-drivers for lavapipe)")
        sys.exit(1)
    dev = vk.get_device(0)
    nx_rt, nx_bw = nexus_cases(dev)
    wg_rt, wg_bw, wg_name = wgpu_cases()
    print(f"device: nexus '{dev.get_property_str('Name')}', wgpu '{wg_name}'")
    print(f"empty dispatch + wait round trip   nexus {nx_rt * 1e6:9.2f} us   wgpu-py {wg_rt * 1e6:9.2f} us   "
          f"ratio {nx_rt / wg_rt:.3f}   (target <= 0.5)")
    print(f"vector add 2^24 float32            nexus {nx_bw:9.2f} GB/s wgpu-py {wg_bw:9.2f} GB/s ratio {nx_bw / wg_bw:.3f}"
          f"   (target >= 0.95)")
    cuda = nexus.get_runtime("cuda")
    if len(cuda):
        print("(nexus CUDA beside nexus Vulkan: run bench/bench_cuda.py on the same machine)")


if __name__ == "__main__":
    main()
