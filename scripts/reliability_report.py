#!/usr/bin/env python3
"""Runs the reliability suites (issues 5 and 9) and regenerates tests/RELIABILITY.md.

    python3 scripts/reliability_report.py [--long] [--fuzz-cases N] [--output PATH]

Runs, each under a hang guard:
  1. the bad-input catalogue   pytest tests/test_misuse.py
  2. the parser fuzzers        cargo test -p nexus --test proptest_parsers -- --nocapture
  3. leaks                     pytest tests/test_leaks.py
  4. threads, GIL, Ctrl-C      pytest tests/test_threads.py
  5. shutdown and fork         pytest tests/test_shutdown_fork.py
  6. execution model           pytest tests/test_execution_model.py (a test per defect)
  7. model-based programs      pytest tests/test_model_based.py (NEXUS_MODEL_EXAMPLES,
                               200, or 2000 with --long, random programs per device)
and writes the figures: cases tried, fuzz executions per target, RSS before
and after each churn, threads x runs, crashes and hangs. A crash is a suite
that died from a signal or printed "Fatal Python error"/a panic; a hang is a
suite that hit its guard. `--long` sets NEXUS_LONG_TESTS=1 (10x counts).
Exits non-zero when any suite failed, crashed or hung.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
MiB = 1 << 20


def run(name: str, cmd: list[str], env: dict[str, str], guard: int) -> dict:
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=guard)
        out = proc.stdout + proc.stderr
        rc, hung = proc.returncode, False
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, hung = None, True
    took = time.monotonic() - start
    crashed = (rc is not None and rc < 0) or "Fatal Python error" in out or ("panicked" in out and "test result: ok" not in out)
    summary = ""
    for line in reversed(out.splitlines()):
        if re.search(r"\b(passed|failed|test result)\b", line):
            summary = line.strip("= ").strip()
            break
    status = "hung" if hung else "crashed" if crashed else "ok" if rc == 0 else "failed"
    print(f"   {status} in {took:.1f} s: {summary}", flush=True)
    if status != "ok":
        print(out[-4000:], flush=True)
    return {"name": name, "status": status, "seconds": took, "summary": summary, "output": out, "crashed": crashed, "hung": hung}


def read_jsonl(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", action="store_true", help="10x counts (NEXUS_LONG_TESTS=1)")
    ap.add_argument("--fuzz-cases", type=int, default=int(os.environ.get("NEXUS_FUZZ_CASES", "2000")))
    ap.add_argument("--output", type=pathlib.Path, default=ROOT / "tests" / "RELIABILITY.md")
    args = ap.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nexus-reliability-"))
    env = dict(os.environ)
    env["NEXUS_FUZZ_CASES"] = str(args.fuzz_cases)
    env["NEXUS_MISUSE_RECORD"] = str(tmp / "misuse.json")
    env["NEXUS_LEAK_RECORD"] = str(tmp / "leaks.jsonl")
    env["NEXUS_THREAD_RECORD"] = str(tmp / "threads.jsonl")
    env["NEXUS_MODEL_REPORT"] = str(tmp / "model.jsonl")
    if args.long:
        env["NEXUS_LONG_TESTS"] = "1"
    env.setdefault("NEXUS_MODEL_EXAMPLES", "2000" if args.long else "200")
    scale = 10 if args.long else 1
    py = [sys.executable, "-m", "pytest", "-q", "-s", "-rxXfE", "-p", "no:cacheprovider"]

    suites = [
        run("bad-input catalogue", py + ["tests/test_misuse.py"], env, 600),
        run("parser fuzzing (proptest)", ["cargo", "test", "-p", "nexus", "--test", "proptest_parsers", "--", "--nocapture"], env, 1800),
        run("leaks", py + ["tests/test_leaks.py"], env, 600 * scale),
        run("threads, GIL, Ctrl-C", py + ["tests/test_threads.py"], env, 600 * scale),
        run("shutdown and fork", py + ["tests/test_shutdown_fork.py"], env, 600),
        run("execution model (a test per defect)", py + ["tests/test_execution_model.py"], env, 1200),
        run("model-based programs", py + ["tests/test_model_based.py"], env, 1800 * scale),
    ]

    misuse = json.loads((tmp / "misuse.json").read_text()) if (tmp / "misuse.json").exists() else {"cases": 0, "runs": {}}
    fuzz = re.findall(r"fuzz-target (\S+): (\d+) executions in ([\d.]+) s", suites[1]["output"])
    leaks = read_jsonl(tmp / "leaks.jsonl")
    threads = read_jsonl(tmp / "threads.jsonl")
    model = read_jsonl(tmp / "model.jsonl")
    crashes = sum(s["crashed"] for s in suites)
    hangs = sum(s["hung"] for s in suites)
    failed = [s["name"] for s in suites if s["status"] != "ok"]
    xfails = sorted({m for s in suites for m in re.findall(r"XFAIL (\S+) - (.*)", s["output"])})

    try:
        import nexus

        device_list = [f"{r.get_name()}: {d!r}" for r in nexus.get_runtimes() for d in r.get_devices()]
    except Exception as e:  # noqa: BLE001 - the report still records the run
        device_list = [f"(nexus not importable: {e})"]

    md: list[str] = []
    w = md.append
    w("# Reliability report (issues 5 and 9)")
    w("")
    w("Generated by `python3 scripts/reliability_report.py" + (" --long" if args.long else "") + f" --fuzz-cases {args.fuzz_cases}`; do not edit by hand.")
    w("")
    w(f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    w(f"- host: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    w(f"- devices: {'; '.join(device_list)}")
    w(f"- long variants (NEXUS_LONG_TESTS=1): {'yes' if args.long else 'no'}")
    w("")
    w("## Summary")
    w("")
    w("| figure | value |")
    w("|---|---|")
    runs = misuse.get("runs", {})
    w(f"| bad-input cases in the catalogue | {misuse.get('cases', 0)} |")
    w(f"| case runs (cases x devices): passed / skipped / known bug | {runs.get('passed', 0)} / {runs.get('skipped', 0)} / {runs.get('known bug (xfail)', 0)} |")
    w(f"| fuzz executions (all targets) | {sum(int(n) for _, n, _ in fuzz)} |")
    own = [t for t in threads if "runs_per_thread" in t]
    w("| thread stress: threads x runs, results checked | " + ", ".join(f"{t['threads']} x {t['runs_per_thread']} ({t['test']})" for t in own) + " |")
    w(f"| max RSS growth over a churn | {max((r['rss_after'] - r['rss_before']) / MiB for r in leaks if r['count'] > 1) if leaks else float('nan'):+.1f} MiB |")
    w("| model-based programs compared with a sequential model | " + (", ".join(f"{m['programs']} on {m['device']}" for m in model) or "none") + " |")
    w(f"| crashes | {crashes} |")
    w(f"| hangs | {hangs} |")
    w(f"| suites failed | {len(failed)}{' (' + ', '.join(failed) + ')' if failed else ''} |")
    w("")
    w("## Suites")
    w("")
    w("| suite | status | time | result |")
    w("|---|---|---|---|")
    for s in suites:
        w(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} s | {s['summary']} |")
    w("")
    w("## Fuzzing (proptest, `NEXUS_FUZZ_CASES` cases per target)")
    w("")
    w("| target | executions | time |")
    w("|---|---|---|")
    for name, n, secs in fuzz:
        w(f"| `{name}` | {n} | {secs} s |")
    w("")
    w("## Memory (process RSS, /proc/self/statm, after a warm-up)")
    w("")
    w("| churn | device | objects / runs | RSS before | RSS after | change |")
    w("|---|---|---|---|---|---|")
    for churn in leaks:
        d = (churn["rss_after"] - churn["rss_before"]) / MiB
        w(f"| {churn['test']} | {churn['device']} | {churn['count']:,} | {churn['rss_before'] / MiB:.1f} MiB | {churn['rss_after'] / MiB:.1f} MiB | {d:+.1f} MiB |")
    w("")
    w("(\"release 256 MiB\" is before = with the buffer held, after = after `release()`.)")
    w("")
    w("## Threads")
    w("")
    w("| test | device | figures |")
    w("|---|---|---|")
    for t in threads:
        figures = ", ".join(f"{k}={v}" for k, v in t.items() if k not in ("test", "device"))
        w(f"| {t['test']} | {t['device']} | {figures} |")
    w("")
    w("## Model-based programs (tests/test_model_based.py)")
    w("")
    w("Random programs of runs on 1-3 streams, writes, copies, host and in-schedule signals, waits and resets, and releases, over 1-3 host threads, each compared with a sequential numpy model.")
    w("")
    w("| device | programs | host threads | operations | runs | copies checked | host releases | host resets | in-schedule resets | time |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for m in model:
        w(f"| {m['device']} | {m['programs']} | {m['threads']} | {m['ops']} | {m['runs']} | {m['checks']} | {m['host_releases']} | {m['host_resets']} | {m['in_stream_resets']} | {m['seconds']:.1f} s |")
    w("")
    w("## Known bugs (strict expected failures)")
    w("")
    if xfails:
        for test, reason in xfails:
            w(f"- `{test}`: {reason}")
    else:
        w("None.")
    w("")
    args.output.write_text("\n".join(md))
    print(f"wrote {args.output}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
