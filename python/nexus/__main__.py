"""``python -m nexus``: list runtimes and devices, then self-check each device."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import numpy as np

import nexus


def _try(get: Callable[[], Any], default: str = "-") -> Any:
    try:
        return get()
    except (nexus.Error, ValueError, TypeError):
        return default


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return str(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def self_check(device: nexus.Device) -> tuple[bool, str]:
    """c = a + b through the device's builtin library, checked against numpy."""
    n = 1 << 16
    rng = np.random.default_rng(7)
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    c = np.full(n, np.nan, dtype=np.float32)
    try:
        bufs = [device.create_buffer(x) for x in (a, b, c)]
        kernel = device.get_builtin_library().get_kernel("add_vectors")
        schedule = device.create_schedule()
        cmd = schedule.create_command(kernel)
        for i, buf in enumerate(bufs):
            cmd.set_buffer(i, buf)
        cmd.finalize(256, n)
        start = time.perf_counter()
        schedule.run()
        elapsed = time.perf_counter() - start
        bufs[2].copy(c)
    except (nexus.Error, ValueError, TypeError) as e:
        return False, f"error: {e}"
    if not np.array_equal(c, a + b):
        return False, f"wrong result ({int(np.sum(c != a + b))} of {n} elements differ)"
    return True, f"add_vectors of {n} float32 in {elapsed * 1e6:.0f} us"


def main() -> int:
    print(f"nexus {_try(lambda: nexus.get_runtime('cpu').get_property_str('Version'))}")
    print()
    header = f"{'runtime':<8} {'id':>2}  {'name':<40} {'arch':<10} {'units':>5} {'memory':>10} {'L2':>10}  database entry"
    print(header)
    print("-" * len(header))
    devices = []
    for runtime in nexus.get_runtimes():
        for i, device in enumerate(runtime.get_devices()):
            devices.append((runtime, i, device))
            info = device.get_info()

            def field(getter: str, key, default=None, info=info):
                return _try(lambda: getattr(info, getter)(key), default)

            print(
                f"{runtime.get_name():<8} {i:>2}  {str(field('get_str', 'Name'))[:40]:<40} "
                f"{field('get_str', 'Architecture'):<10} "
                f"{field('get_int', 'ComputeUnits'):>5} "
                f"{_size(field('get_int', 'MemorySize')):>10} "
                f"{_size(field('get_int', ['MemorySubsystem', 'MemoryTypes', 1, 'Size'])):>10}  "
                f"{field('get_str', 'DatabaseEntry', 'none')}"
            )
    others = [r.get_name() for r in nexus.known_runtimes() if len(r) == 0]
    if others:
        print(f"(no devices for: {', '.join(others)})")
    print()
    failures = 0
    for runtime, i, device in devices:
        ok, detail = self_check(device)
        failures += not ok
        print(f"self-check {runtime.get_name()}:{i}: {'PASS' if ok else 'FAIL'} ({detail})")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["trace"]:
        from .timeline import main as trace_main

        sys.exit(trace_main(sys.argv[2:]))
    sys.exit(main())
