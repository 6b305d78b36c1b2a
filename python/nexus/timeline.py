"""Traces of nexus work: ``nexus.trace(path)`` records, ``render_svg`` draws.

``with nexus.trace("run.json"):`` records every run, command, host copy,
signal and wait as Chrome trace JSON (open it in Perfetto or
chrome://tracing). ``python -m nexus trace run.json -o timeline.svg`` draws
it as a self-contained SVG: one lane per device stream, commands as boxes,
signal-to-wait arrows.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
from typing import Any, Iterator, Union

from . import _nexus

_COLORS = {
    "kernel": "#4e79a7",
    "copy": "#f28e2b",
    "fill": "#edc948",
    "signal": "#59a14f",
    "wait": "#e15759",
    "run": "#76b7b2",
}


@contextlib.contextmanager
def trace(path: Union[str, "os.PathLike[str]"], timeout: float = 60.0) -> Iterator[None]:
    """Records nexus work inside the ``with`` block into ``path`` (Chrome
    trace JSON). On exit it waits up to ``timeout`` seconds for the recorded
    runs to finish, so their device timestamps are known."""
    _nexus._trace_start()
    try:
        yield
    finally:
        data = _nexus._trace_stop(timeout)
        with open(path, "w", encoding="utf-8") as f:
            f.write(data)


def render_svg(trace_data: Union[str, dict[str, Any]], width: int = 1200) -> str:
    """The timeline of a trace (JSON text or the parsed object) as SVG."""
    data = json.loads(trace_data) if isinstance(trace_data, str) else trace_data
    events = data.get("traceEvents", []) if isinstance(data, dict) else []
    boxes = [e for e in events if e.get("ph") == "X"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M"}
    lanes: list[tuple[str, Any]] = []
    for e in boxes:
        key = (e["pid"], e["tid"])
        if key not in lanes:
            lanes.append(key)
    lanes.sort(key=lambda k: (str(k[0]), str(k[1])))
    if not boxes:
        return ('<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40">'
                '<text x="10" y="25" font-family="sans-serif" font-size="14">empty trace</text></svg>')
    t0 = min(e["ts"] for e in boxes)
    t1 = max(e["ts"] + e["dur"] for e in boxes)
    span = max(t1 - t0, 1e-6)
    label_w, lane_h, top = 260, 34, 40
    plot_w = width - label_w - 20

    def x(ts: float) -> float:
        return label_w + (ts - t0) / span * plot_w

    def y(key: Any) -> float:
        return top + lanes.index(key) * lane_h

    height = top + len(lanes) * lane_h + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#333"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="14" font-weight="bold">nexus timeline — {span / 1000:.3f} ms</text>',
    ]
    for key in lanes:
        yy = y(key)
        lane = names.get(key, str(key[1]))
        out.append(f'<rect x="0" y="{yy}" width="{width}" height="{lane_h}" fill="#f7f7f7" stroke="#ddd"/>')
        out.append(f'<text x="8" y="{yy + 21}">{html.escape(f"{key[0]} / {lane}"[:60])}</text>')
    for e in boxes:
        key = (e["pid"], e["tid"])
        xx, yy = x(e["ts"]), y(key) + 5
        w = max(e["dur"] / span * plot_w, 1.0)
        color = _COLORS.get(e.get("cat", ""), "#9c755f")
        title = html.escape(f'{e["name"]}: {e["dur"]:.1f} us')
        out.append(f'<rect x="{xx:.2f}" y="{yy}" width="{w:.2f}" height="{lane_h - 10}" fill="{color}" '
                   f'stroke="#333" stroke-width="0.5"><title>{title}</title></rect>')
        if w > 60:
            out.append(f'<text x="{xx + 3:.2f}" y="{yy + 16}" fill="white">{html.escape(e["name"][: int(w / 6)])}</text>')
    starts = {e["id"]: e for e in events if e.get("ph") == "s"}
    for f in (e for e in events if e.get("ph") == "f"):
        s = starts.get(f["id"])
        if s is None:
            continue
        skey = next((k for k in lanes if k[0] == s["pid"] and k[1] == s["tid"]), None)
        fkey = next((k for k in lanes if k[0] == f["pid"] and k[1] == f["tid"]), None)
        if skey is None or fkey is None:
            continue
        out.append(f'<line x1="{x(s["ts"]):.2f}" y1="{y(skey) + lane_h / 2}" x2="{x(f["ts"]):.2f}" '
                   f'y2="{y(fkey) + lane_h / 2}" stroke="#333" stroke-width="1.2" marker-end="url(#arrow)"/>')
    out.append(f'<text x="{label_w}" y="{height - 8}">0</text>')
    out.append(f'<text x="{width - 80}" y="{height - 8}">{span / 1000:.3f} ms</text>')
    out.append("</svg>")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    """``python -m nexus trace RUN.json [-o timeline.svg]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nexus trace", description="Draw a nexus trace as SVG.")
    parser.add_argument("trace", help="Chrome trace JSON written by nexus.trace()")
    parser.add_argument("-o", "--output", default=None, help="SVG file (default: the trace's name with .svg)")
    parser.add_argument("--width", type=int, default=1200)
    args = parser.parse_args(argv)
    with open(args.trace, encoding="utf-8") as f:
        svg = render_svg(f.read(), args.width)
    output = args.output or os.path.splitext(args.trace)[0] + ".svg"
    with open(output, "w", encoding="utf-8") as f:
        f.write(svg)
    print(f"wrote {output}")
    return 0
