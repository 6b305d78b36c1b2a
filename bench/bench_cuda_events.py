"""Event latencies on CUDA: nexus timeline events vs CuPy events, one process.

Each iteration builds its schedules (a timeline value is fixed per schedule),
so nexus rows include two schedule builds; the "build alone" row gives that
share. Cases:
  - kernel + signal on one stream, host waits on the event;
  - producer first: stream A kernel + signal, stream B waits (on the GPU) +
    kernel + signal, host waits; CuPy: the same with cudaEvent record /
    cudaStreamWaitEvent and a stream sync;
  - consumer first: as above with B queued before A (B is held on the host
    until A's signal is queued; CuPy has no such wait);
  - held run released by a host signal;
  - producer first with schedules built once (events reset from the host).
Run: python bench/bench_cuda_events.py
"""

from __future__ import annotations

import statistics
import time

import nexus

N = 2000
dev = nexus.get_runtime("cuda").get_device(0)
empty = dev.get_builtin_library().get_kernel("empty")


def sched(*ops):
    s = dev.create_schedule()
    for op in ops:
        if op[0] == "k":
            s.create_command(empty).finalize(1, 1)
        elif op[0] == "w":
            s.create_wait_command(op[1], op[2])
        else:
            s.create_signal_command(op[1], op[2])
    return s


def per_iter(body, repeats: int = 5) -> float:
    """Median over repeats of microseconds per call of body(i), i increasing."""
    i = [1]
    body(i[0])
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(N):
            i[0] += 1
            body(i[0])
        out.append((time.perf_counter() - t) / N * 1e6)
    return statistics.median(out)


def main() -> None:
    sa, sb = dev.create_stream(), dev.create_stream()
    rows = []
    e0 = dev.create_event()
    rows.append(("kernel + signal, host waits on the event", per_iter(lambda i: (sched(("k",), ("s", e0, i)).run(sa, blocking=False), e0.wait(i))), None))

    def two_streams(producer_first: bool):
        """A: kernel + signal; B: wait + kernel + signal; host waits for B."""
        ev, fin = dev.create_event(), dev.create_event()

        def step(i):
            a = sched(("k",), ("s", ev, i))
            b = sched(("w", ev, i), ("k",), ("s", fin, i))
            first, second = ((a, sa), (b, sb)) if producer_first else ((b, sb), (a, sa))
            first[0].run(first[1], blocking=False)
            second[0].run(second[1], blocking=False)
            fin.wait(i)

        return step

    producer_first, consumer_first = two_streams(True), two_streams(False)

    # The producer-first pair with schedules built once: the host resets both
    # events to 0 each iteration, so the fixed value 1 is reached anew.
    pev, pfin = dev.create_event(), dev.create_event()
    pa = sched(("k",), ("s", pev, 1))
    pb = sched(("w", pev, 1), ("k",), ("s", pfin, 1))

    def prebuilt(i):
        pev.signal(0)
        pfin.signal(0)
        pa.run(sa, blocking=False)
        pb.run(sb, blocking=False)
        pfin.wait(1)
    ev2, fin2 = dev.create_event(), dev.create_event()

    go, done = dev.create_event(), dev.create_event()

    def host_release(i):
        s = sched(("w", go, i), ("k",), ("s", done, i))
        s.run(sa, blocking=False)
        go.signal(i)
        done.wait(i)

    cupy_pair = None
    try:
        import cupy as cp

        kk = cp.RawKernel(r'extern "C" __global__ void empty() {}', "empty")
        ca, cb = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)

        def cupy_pair(i):
            kk((1,), (1,), (), stream=ca)
            e = cp.cuda.Event(disable_timing=True)
            e.record(ca)
            cb.wait_event(e)
            kk((1,), (1,), (), stream=cb)
            cb.synchronize()
    except Exception as e:  # pragma: no cover
        print(f"(no CuPy: {e})")
    rows.append(("producer first, GPU-side wait", per_iter(producer_first), per_iter(cupy_pair) if cupy_pair else None))
    rows.append(("producer first, prebuilt schedules", per_iter(prebuilt), per_iter(cupy_pair) if cupy_pair else None))
    rows.append(("consumer first, held then GPU-side wait", per_iter(consumer_first), None))
    rows.append(("held run released by a host signal", per_iter(host_release), None))
    rows.append(("two schedule builds alone", per_iter(lambda i: (sched(("k",), ("s", ev2, i)), sched(("w", ev2, i), ("k",), ("s", fin2, i)))), None))
    for name, ours, peer in rows:
        line = f"{name:44s} nexus {ours:8.2f} us"
        if peer is not None:
            line += f"   cupy {peer:8.2f} us   ratio {ours / peer:.2f}"
        print(line)
    print(f"\nGPU: {dev.get_property_str('Name')} ({dev.get_property_str('Architecture')})")


if __name__ == "__main__":
    main()
