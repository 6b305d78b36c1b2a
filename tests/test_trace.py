"""Traces (issue 14): `with nexus.trace(path)` writes Chrome trace JSON of
runs, commands, host copies, signals and waits; `python -m nexus trace`
draws it as SVG."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import nexus
import numpy as np
import pytest
from conftest import library_path


def traced_pipeline(device: nexus.Device, lib_path: str, path: pathlib.Path) -> np.ndarray:
    kernels = device.load_library(lib_path)
    n = 4096
    buf = device.zeros(n)
    event = device.create_event()
    producer = device.create_schedule()
    cmd = producer.create_command(kernels.get_kernel("fill_f32"))
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, 4.0)
    cmd.set_arg(2, n)
    cmd.finalize(64, n)
    producer.create_signal_command(event, 1)
    consumer = device.create_schedule()
    consumer.create_wait_command(event, 1)
    cmd = consumer.create_command(kernels.get_kernel("affine_f32"))
    cmd.set_buffer(0, buf)
    cmd.set_arg(1, 2.0)
    cmd.set_arg(2, 1.0)
    cmd.set_arg(3, n)
    cmd.finalize(64, n)
    s1, s2 = device.create_stream(), device.create_stream()
    with nexus.trace(path):
        consumer.run(stream=s2, blocking=False)
        producer.run(stream=s1, blocking=False)
        s2.synchronize()
        out = buf.numpy(copy=True)
    return out


def test_trace_records_runs_commands_copies_and_arrows(device: nexus.Device, lib_path: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "run.json"
    out = traced_pipeline(device, lib_path, path)
    np.testing.assert_array_equal(out, np.full(4096, 9, np.float32))
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    boxes = [e for e in events if e["ph"] == "X"]
    assert all(e["dur"] > 0 and device.get_property_str("Name") in e["pid"] for e in boxes)
    names = " ".join(e["name"] for e in boxes)
    assert "device to host" in names
    runtime = device.get_property_str("Runtime")
    if runtime in ("cpu", "cuda", "hip", "vulkan", "opencl"):  # device timestamps per command
        assert "kernel 'fill_f32'" in names and "kernel 'affine_f32'" in names
        assert "signal 1" in names and "wait 1" in names
        flows = [e for e in events if e["ph"] in ("s", "f")]
        assert [e["ph"] for e in flows] == ["s", "f"], flows
    else:
        assert sum(1 for e in boxes if e["cat"] == "run") == 2
    lanes = {(e["pid"], e["tid"]) for e in boxes}
    assert len(lanes) >= 3  # two streams and the host copies
    # Nothing is recorded once the trace is over.
    device.create_schedule().run()
    assert json.loads(path.read_text()) == data


def test_trace_draws_as_svg(cpu_device: nexus.Device, build_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "run.json"
    traced_pipeline(cpu_device, library_path(cpu_device, "kernels", build_dir), path)
    svg_path = tmp_path / "timeline.svg"
    proc = subprocess.run([sys.executable, "-m", "nexus", "trace", str(path), "-o", str(svg_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    root = ET.fromstring(svg_path.read_text())
    assert root.tag.endswith("svg")
    rects = [r for r in root.iter() if r.tag.endswith("rect") and r.find("{http://www.w3.org/2000/svg}title") is not None]
    titles = " ".join(r.find("{http://www.w3.org/2000/svg}title").text for r in rects)
    assert "fill_f32" in titles and "affine_f32" in titles
    assert any(e.tag.endswith("line") for e in root.iter()), "a signal-to-wait arrow"


def test_an_empty_trace_is_valid(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.json"
    with nexus.trace(path):
        pass
    assert json.loads(path.read_text())["traceEvents"] == []
    assert "empty trace" in nexus.timeline.render_svg(path.read_text())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs headless Chromium (apt install chromium)")
def test_the_svg_renders_in_headless_chromium(cpu_device: nexus.Device, build_dir: pathlib.Path,
                                              tmp_path: pathlib.Path) -> None:
    path = tmp_path / "run.json"
    traced_pipeline(cpu_device, library_path(cpu_device, "kernels", build_dir), path)
    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "render_timeline_chromium.sh"
    proc = subprocess.run(["bash", str(script), str(path), str(tmp_path / "t.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    png = (tmp_path / "t.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_svg_labels_stay_well_formed_when_cut() -> None:
    """Labels are cut to fit their boxes before escaping, so an entity is
    never cut in half."""
    events = [{"name": "kernel 'a' & <b> " * 5, "cat": "kernel", "ph": "X", "ts": t, "dur": 50.0,
               "pid": "cpu:0 'x' & <y>", "tid": 0} for t in (0.0, 60.0)]
    svg = nexus.timeline.render_svg({"traceEvents": events}, width=1200)
    ET.fromstring(svg)
