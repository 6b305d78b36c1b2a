"""Runs the bad-input catalogue (tests/misuse_cases.py) on every device.

Each case must raise its exception type with its message fragment; a case
that crashed the interpreter would end the run, so the run finishing is the
proof that none did. The number of cases is printed (`-s`) and written to
`$NEXUS_MISUSE_RECORD` when set (used by scripts/reliability_report.py).
"""

from __future__ import annotations

import builtins
import json
import os
import pathlib
import subprocess
import sys

import nexus
import pytest
from conftest import library_path
from misuse_cases import CASES, Case, Ctx, classes_covered

_results: dict[str, str] = {}


def _other_device(device: nexus.Device) -> nexus.Device | None:
    for runtime in nexus.get_runtimes():
        for other in runtime.get_devices():
            if other != device:
                return other
    return None


def _params() -> list:
    return [pytest.param(case, id=case.id) for case in CASES]


def _device_index(device: nexus.Device) -> int:
    runtime = nexus.get_runtime(device.get_property_str("Runtime"))
    return next(i for i, d in enumerate(runtime.get_devices()) if d == device)


class _ChildRaised(Exception):
    """What a child interpreter reported for an isolated case."""


def _run_isolated(case: Case, device: nexus.Device, lib_path: str, tmp_path: pathlib.Path) -> None:
    """Runs the case in a fresh interpreter; re-raises what it raised there."""
    script = pathlib.Path(__file__).resolve().parent / "misuse_cases.py"
    runtime = device.get_property_str("Runtime")
    proc = subprocess.run(
        [sys.executable, str(script), case.id, runtime, str(_device_index(device)), lib_path, str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    line = next((out for out in proc.stdout.splitlines() if out.startswith("MISUSE-RESULT ")), None)
    if line is None:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise AssertionError(f"{case.id}: the child process died ({how}) without raising: {proc.stderr[-2000:]}")
    out = json.loads(line.split(" ", 1)[1])
    if out["raised"] is None:
        return
    # Rebuild the exception in this process so the same checks apply.
    name = out["raised"].rsplit(".", 1)[1]
    exc_type = nexus.Error if name == "Error" else getattr(builtins, name, _ChildRaised)
    err = exc_type(out["message"])
    if out["status"] is not None:
        err.status = nexus.status.Status(out["status"])
    raise err


@pytest.mark.parametrize("case", _params())
def test_misuse_case(
    case: Case, device: nexus.Device, build_dir: pathlib.Path, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    runtime = device.get_property_str("Runtime")
    known_bug = bool(case.xfail) and (not case.xfail_on or runtime in case.xfail_on)
    if known_bug:
        request.applymarker(pytest.mark.xfail(strict=True, reason=case.xfail))
    key = f"{runtime}{_device_index(device)}:{case.id}"
    if case.needs not in ("", "two_devices") and runtime != case.needs:
        _results[key] = "skipped"
        pytest.skip("CPU-runtime case" if case.needs == "cpu" else f"{case.needs}-runtime case")
    other = _other_device(device)
    if case.needs == "two_devices" and other is None:
        _results[key] = "skipped"
        pytest.skip("needs two devices")
    lib_path = library_path(device, "kernels", build_dir)
    ctx = Ctx(device=device, kernels=device.load_library(lib_path), library_path=lib_path, tmp_path=tmp_path, other=other)
    _results[key] = "known bug (xfail)" if known_bug else "failed"
    with pytest.raises(case.exc) as info:
        if case.isolate:
            _run_isolated(case, device, lib_path, tmp_path)
        else:
            case.call(ctx)
    message = str(info.value)
    assert type(info.value) is case.exc or (case.exc is nexus.Error and isinstance(info.value, nexus.Error)), (
        f"{case.id}: raised {type(info.value).__name__}, expected exactly {case.exc.__name__}: {message}"
    )
    assert case.fragment in message, f"{case.id}: {case.fragment!r} not in {message!r}"
    if case.status is not None:
        assert isinstance(info.value, nexus.Error), case.id
        assert info.value.status == getattr(nexus.status, case.status), (case.id, info.value.status)
    _results[key] = "xpassed" if known_bug else "passed"


def test_catalogue_shape() -> None:
    """At least 60 cases, every class of the API covered, ids unique."""
    assert len(CASES) >= 60, len(CASES)
    want = {"module", "Runtime", "Device", "Buffer", "Library", "Kernel", "Event", "Schedule", "Command", "Stream", "Properties"}
    assert want <= classes_covered(), want - classes_covered()
    print(f"\nmisuse catalogue: {len(CASES)} cases over {len(classes_covered())} classes")


def teardown_module() -> None:
    record = os.environ.get("NEXUS_MISUSE_RECORD")
    if not record:
        return
    counts: dict[str, int] = {}
    for status in _results.values():
        counts[status] = counts.get(status, 0) + 1
    pathlib.Path(record).write_text(json.dumps({"cases": len(CASES), "runs": counts, "results": _results}, indent=1))
