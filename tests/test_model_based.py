"""Model-based test of the execution model (DESIGN.md, "Execution model").

Hypothesis draws random programs over 1-3 streams (plus the default
stream) and 1-3 host threads; every program runs on every device, and
every value a program observes (Buffer.copy) is compared with a
sequential numpy model.

Operations: runs of schedules (blocking or not, new or re-run) of kernels
with a known effect on 1024-element float32 buffers (fill, x = a*x + b,
copy, c = a + b), wait and signal commands, Buffer.write, Buffer.copy,
Device.copy_buffer, host signals that release held runs, event resets
(a host signal lowering the value, and a signal command lowering it inside
a schedule), and release()/del of buffers, schedules and events after
their last use.

Why the model is deterministic and programs cannot deadlock:
- Each host thread has its own buffers and events; streams are shared.
  Within a thread, results follow program order: a stream runs in order,
  a buffer used on another stream than the last one is handed over with a
  signal on the old stream and a wait on the new one, and host copies and
  writes act after every earlier run using the buffer (the contract).
- Every wait command waits for a value already signalled by the host or
  by a signal command submitted earlier, except the one wait that opens a
  "hold block": a run waiting on the thread's gate event, after which the
  thread only submits non-blocking runs until it signals the gate from the
  host. A thread never blocks inside its own hold block, so every held run
  is released.
- A reset (lowering an event) happens only once every wait on that event
  that was submitted before has executed (the thread waits for a signal
  queued behind them on each stream first).
- Signal commands of an event are all on one stream and increase, so
  events never go down except by the explicit resets.

Each kind of event (stream hand-overs, the gate, the reset event and its
acknowledgement) is drawn as the device's own or, where the device's
schedules take them, an event of the CPU runtime: signal and wait commands
on another runtime's event are carried out on the host, in stream order.

NEXUS_MODEL_EXAMPLES sets the number of programs per device (default 200);
NEXUS_MODEL_REPORT names a file that gets one JSON line per device with
the programs run, operations and checks. NEXUS_MODEL_WORKAROUNDS=1 makes
the programs synchronise explicitly before host copies and blocking
default-stream runs: a diagnostic that tells a runtime ordering bug (the
test then passes) from a bug in this test.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field

import nexus
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

N = 1024  # elements per buffer
GROUP = 256
PROGRAM_TIMEOUT = 30.0  # seconds a program may take before it counts as deadlocked
WAIT = 30.0
WORKAROUNDS = os.environ.get("NEXUS_MODEL_WORKAROUNDS") == "1"
DEFAULT = -1  # the key of the device's default stream

_STATS: dict[str, dict[str, int]] = {}
_DEADLOCK: dict[str, str] = {}  # device -> its first deadlock's report: later examples fail at once with it


# ------------------------------------------------------------------ model


def nice(v: np.ndarray) -> bool:
    """Values every runtime computes exactly (float32, FMA or not):
    multiples of 1/256 below 2**12 in magnitude."""
    return bool(np.all(np.abs(v) < 2**12) and np.all(v * 256 == np.round(v * 256)))


def apply(model: dict, cmd: tuple) -> None:
    kind = cmd[0]
    if kind == "fill":
        _, b, v = cmd
        model[b] = np.full(N, v)
    elif kind == "affine":
        _, b, a, c = cmd
        model[b] = a * model[b] + c
    elif kind == "copy":
        _, dst, src = cmd
        model[dst] = model[src].copy()
    elif kind == "add":
        _, a, b, c = cmd
        model[c] = model[a] + model[b]
    # signal and wait commands do not touch buffers


def buffers_of(cmds) -> set:
    out = set()
    for c in cmds:
        if c[0] == "fill" or c[0] == "affine":
            out.add(c[1])
        elif c[0] == "copy":
            out.update(c[1:3])
        elif c[0] == "add":
            out.update(c[1:4])
    return out


def events_of(cmds) -> set:
    return {c[1] for c in cmds if c[0] in ("signal", "wait")}


@dataclass
class ThreadProgram:
    ops: list = field(default_factory=list)
    specs: dict = field(default_factory=dict)  # schedule id -> list of commands
    foreign: frozenset = frozenset()  # kinds of event ("E", "G", "R", "A") made on the CPU runtime

    def describe(self) -> str:
        lines = [f"  events of the CPU runtime: {sorted(self.foreign)}"] if self.foreign else []
        for i, op in enumerate(self.ops):
            if op[0] == "run":
                lines.append(f"  {i}: run s{op[1]} {self.specs[op[1]]} on {'default' if op[2] == DEFAULT else op[2]}"
                             f"{' blocking' if op[3] else ''}")
            elif op[0] in ("create", "write"):
                lines.append(f"  {i}: {op[0]} b{op[1]} {op[2][:4]}...")
            elif op[0] == "copy":
                lines.append(f"  {i}: copy b{op[1]} expect {op[2][:4]}...")
            else:
                lines.append(f"  {i}: {op}")
        return "\n".join(lines)


class ThreadGen:
    """Draws one thread's program while keeping its sequential model."""

    def __init__(self, data, stream_keys: list[int], max_ops: int, foreign_ok: bool) -> None:
        self.data = data
        self.foreign_ok = foreign_ok
        self.stream_keys = stream_keys
        self.prog = ThreadProgram()
        self.model: dict[int, np.ndarray] = {}
        self.owner: dict[int, int | None] = {}
        self.live: list[int] = []
        self.next_buf = 0
        self.next_sched = 0
        self.rerunnable: list[int] = []
        self.count = {s: 0 for s in stream_keys}  # last value given to ("E", s) by a signal command
        self.gval = 0  # the gate's value (host signals only)
        self.gate_waits: set[int] = set()  # streams with a wait on the gate since the last drain
        self.r_waits: set[int] = set()  # streams with a wait on "R" since the last drain
        self.acks = 0
        self.block: str | None = None
        self.block_left = 0
        self.max_ops = max_ops

    def draw(self, strategy):
        return self.data.draw(strategy)

    def emit(self, *op) -> None:
        self.prog.ops.append(op)

    def new_spec(self, cmds: list, rerunnable: bool) -> int:
        sid = self.next_sched
        self.next_sched += 1
        self.prog.specs[sid] = cmds
        if rerunnable:
            self.rerunnable.append(sid)
        return sid

    def new_buffer(self, values: np.ndarray) -> int:
        b = self.next_buf
        self.next_buf += 1
        self.model[b] = values.astype(np.float64)
        self.owner[b] = None
        self.live.append(b)
        return b

    def pattern(self) -> np.ndarray:
        k = self.draw(st.integers(0, 5))
        c = self.draw(st.integers(0, 16))
        return (((np.arange(N) * k + c) % 17) - 8) * 0.5

    # -- pieces

    def handoff(self, stream: int, bufs) -> None:
        """Orders `stream` after the streams that used `bufs` last."""
        for o in sorted({self.owner[b] for b in bufs if self.owner[b] not in (None, stream)}):
            self.count[o] += 1
            v = self.count[o]
            self.emit("run", self.new_spec([("signal", ("E", o), v)], False), o, False)
            self.emit("run", self.new_spec([("wait", ("E", o), v)], False), stream, False)
        for b in bufs:
            self.owner[b] = stream

    def drain(self, streams: set) -> None:
        """Host-waits until everything submitted so far to `streams` is done."""
        for s in sorted(streams):
            self.count[s] += 1
            self.emit("run", self.new_spec([("signal", ("E", s), self.count[s])], False), s, False)
            self.emit("wait", ("E", s), self.count[s])
        streams.clear()

    def kernel_cmd(self, model: dict) -> tuple:
        kind = self.draw(st.sampled_from(["fill", "affine", "affine", "copy", "add"]))
        pick = st.sampled_from(self.live)
        if kind == "fill":
            cmd = ("fill", self.draw(pick), self.draw(st.integers(-16, 16)) / 2)
        elif kind == "affine":
            b = self.draw(pick)
            a = self.draw(st.sampled_from([-1.0, 0.5, 1.0, 2.0]))
            c = float(self.draw(st.integers(-4, 4)))
            if not nice(a * model[b] + c):
                a, c = -1.0, 0.0
            cmd = ("affine", b, a, c)
        elif kind == "copy":
            cmd = ("copy", self.draw(pick), self.draw(pick))
        else:
            a, b, c = self.draw(pick), self.draw(pick), self.draw(pick)
            cmd = ("add", a, b, c) if nice(model[a] + model[b]) else ("copy", c, a)
        apply(model, cmd)
        return cmd

    def kernel_cmds(self, lo: int, hi: int) -> list:
        return [self.kernel_cmd(self.model) for _ in range(self.draw(st.integers(lo, hi)))]

    # -- operations

    def op_run(self) -> None:
        s = self.draw(st.sampled_from(self.stream_keys))
        blocking = False if self.block else self.draw(st.booleans())
        cmds = self.kernel_cmds(1, 3)
        prefix, rerunnable = [], True
        waitable = [("E", k) for k in self.stream_keys if self.count[k] > 0]
        if self.gval > 0:
            waitable.append("G")
        if waitable and self.draw(st.booleans()):
            ev = self.draw(st.sampled_from(waitable))
            top = self.gval if ev == "G" else self.count[ev[1]]
            prefix.append(("wait", ev, self.draw(st.integers(1, top))))
            if ev == "G":
                self.gate_waits.add(s)
                rerunnable = False  # a reset may come before a re-run
        self.handoff(s, buffers_of(cmds))
        suffix = []
        if self.draw(st.booleans()):
            self.count[s] += 1
            suffix.append(("signal", ("E", s), self.count[s]))
            rerunnable = False
        self.emit("run", self.new_spec(prefix + cmds + suffix, rerunnable), s, blocking)

    def op_rerun(self) -> bool:
        options = [sid for sid in self.rerunnable if buffers_of(self.prog.specs[sid]) <= set(self.live)]
        if not options:
            return False
        sid = self.draw(st.sampled_from(options))
        trial = {b: v for b, v in self.model.items()}
        for c in self.prog.specs[sid]:
            apply(trial, c)
        if not all(nice(trial[b]) for b in buffers_of(self.prog.specs[sid])):
            return False
        s = self.draw(st.sampled_from(self.stream_keys))
        blocking = False if self.block else self.draw(st.booleans())
        self.handoff(s, buffers_of(self.prog.specs[sid]))
        self.model = trial
        self.emit("run", sid, s, blocking)
        return True

    def op_write(self) -> None:
        b = self.draw(st.sampled_from(self.live))
        values = self.pattern()
        self.model[b] = values
        self.owner[b] = None  # a write acts after every earlier run using b
        self.emit("write", b, values.astype(np.float32))

    def op_copy(self, b: int | None = None) -> None:
        if b is None:
            b = self.draw(st.sampled_from(self.live))
        self.owner[b] = None  # a copy acts after every earlier run using b
        self.emit("copy", b, self.model[b].astype(np.float32))

    def op_copy_buffer(self) -> None:
        src = self.draw(st.sampled_from(self.live))
        self.owner[src] = None
        dst = self.new_buffer(self.model[src].copy())
        self.emit("copy_buffer", src, dst)

    def op_hold(self) -> None:
        """A run held behind the gate; the block ends with the host signal."""
        s = self.draw(st.sampled_from(self.stream_keys))
        cmds = self.kernel_cmds(0, 2)
        self.handoff(s, buffers_of(cmds))
        self.emit("run", self.new_spec([("wait", "G", self.gval + 1)] + cmds, False), s, False)
        self.gate_waits.add(s)
        self.block, self.block_left = "G", self.draw(st.integers(0, 4))

    def op_hold_after_reset(self) -> None:
        """A run that resets "R" (at 5) to 0 itself, then waits for 1 from the host."""
        self.drain(self.r_waits)
        self.emit("signal", "R", 5)
        self.acks += 1
        s = self.draw(st.sampled_from(self.stream_keys))
        cmds = self.kernel_cmds(0, 2)
        self.handoff(s, buffers_of(cmds))
        head = [("signal", "R", 0), ("signal", "A", self.acks), ("wait", "R", 1)]
        self.emit("run", self.new_spec(head + cmds, False), s, False)
        self.r_waits.add(s)
        self.block, self.block_left = "R", self.draw(st.integers(0, 4))

    def end_block(self) -> None:
        if self.block == "G":
            self.gval += 1
            self.emit("signal", "G", self.gval)
        elif self.block == "R":
            self.emit("wait", "A", self.acks)  # the reset has run: now 1 releases the wait
            self.emit("signal", "R", 1)
        self.block = None

    def op_reset_gate(self) -> None:
        self.drain(self.gate_waits)
        self.emit("signal", "G", 0)
        self.gval = 0

    # -- the whole thread

    def generate(self) -> ThreadProgram:
        if self.foreign_ok:
            self.prog.foreign = frozenset(self.draw(st.sets(st.sampled_from(["E", "G", "R", "A"]))))
        for _ in range(self.draw(st.integers(1, 3))):
            b = self.new_buffer(self.pattern())
            self.emit("create", b, self.model[b].astype(np.float32))
        for _ in range(self.draw(st.integers(1, self.max_ops))):
            if self.block:
                if self.block_left == 0:
                    self.end_block()
                    continue
                self.block_left -= 1
                if not (self.draw(st.booleans()) and self.op_rerun()):
                    self.op_run()
                continue
            kind = self.draw(st.sampled_from(
                ["run", "run", "run", "rerun", "write", "copy", "copy", "copy_buffer", "hold", "hold_r", "reset"]))
            if kind == "run" or (kind == "rerun" and not self.op_rerun()):
                self.op_run()
            elif kind == "write":
                self.op_write()
            elif kind == "copy":
                self.op_copy()
            elif kind == "copy_buffer":
                self.op_copy_buffer()
            elif kind == "hold":
                self.op_hold()
            elif kind == "hold_r":
                self.op_hold_after_reset()
            elif kind == "reset" and self.gval > 0:
                self.op_reset_gate()
        if self.block:
            self.end_block()
        for b in list(self.live):
            self.op_copy(b)
        self.add_releases()
        return self.prog

    def add_releases(self) -> None:
        """After each object's last use: release() it, drop the reference, or keep it."""
        last: dict[tuple, int] = {}
        for i, op in enumerate(self.prog.ops):
            refs = []
            if op[0] == "run":
                cmds = self.prog.specs[op[1]]
                refs = [("schedule", op[1])] + [("buffer", b) for b in buffers_of(cmds)]
                refs += [("event", e) for e in events_of(cmds)]
            elif op[0] in ("create", "write", "copy"):
                refs = [("buffer", op[1])]
            elif op[0] == "copy_buffer":
                refs = [("buffer", op[1]), ("buffer", op[2])]
            elif op[0] in ("signal", "wait"):
                refs = [("event", op[1])]
            for r in refs:
                last[r] = i
        for ref, i in sorted(last.items(), key=lambda kv: -kv[1]):
            action = self.draw(st.sampled_from(["release", "drop", "keep"]))
            if action != "keep":
                self.prog.ops.insert(i + 1, (action, *ref))


# --------------------------------------------------------------- executor


class ThreadExec:
    def __init__(self, device: nexus.Device, kernels: nexus.Library, streams: dict, prog: ThreadProgram,
                 cpu_device: nexus.Device) -> None:
        self.device, self.kernels, self.streams, self.prog = device, kernels, streams, prog
        self.cpu_device = cpu_device
        self.buffers: dict = {}
        self.schedules: dict = {}
        self.events: dict = {}
        self.sync_events: dict = {}
        self.pos = -1
        self.checks = 0
        self.error: str | None = None
        self.k = {name: kernels.get_kernel(name) for name in ["fill_f32", "affine_f32", "copy_f32", "vadd"]}

    def event(self, key):
        if key not in self.events:
            kind = key if isinstance(key, str) else key[0]
            owner = self.cpu_device if kind in self.prog.foreign else self.device
            self.events[key] = owner.create_event()
        return self.events[key]

    def schedule(self, sid: int) -> nexus.Schedule:
        if sid not in self.schedules:
            s = self.device.create_schedule()
            for c in self.prog.specs[sid]:
                kind = c[0]
                if kind == "signal":
                    s.create_signal_command(self.event(c[1]), c[2])
                elif kind == "wait":
                    s.create_wait_command(self.event(c[1]), c[2])
                else:
                    if kind == "fill":
                        kernel, args = self.k["fill_f32"], (self.buffers[c[1]], float(c[2]))
                    elif kind == "affine":
                        kernel, args = self.k["affine_f32"], (self.buffers[c[1]], float(c[2]), float(c[3]))
                    elif kind == "copy":
                        kernel, args = self.k["copy_f32"], (self.buffers[c[1]], self.buffers[c[2]])
                    else:
                        kernel, args = self.k["vadd"], tuple(self.buffers[b] for b in c[1:4])
                    cmd = s.create_command(kernel)
                    for i, a in enumerate(args):
                        if isinstance(a, nexus.Buffer):
                            cmd.set_buffer(i, a)
                        else:
                            cmd.set_arg(i, a)
                    cmd.set_arg(len(args), N)
                    cmd.finalize(GROUP, N)
            self.schedules[sid] = s
        return self.schedules[sid]

    def stream(self, key: int):
        return None if key == DEFAULT else self.streams[key]

    def sync(self, keys) -> None:
        """Diagnostic (NEXUS_MODEL_WORKAROUNDS): waits for everything on `keys` so far."""
        for key in keys:
            ev = self.sync_events.setdefault(key, [self.device.create_event(), 0])
            ev[1] += 1
            s = self.device.create_schedule()
            s.create_signal_command(ev[0], ev[1])
            s.run(self.stream(key), blocking=False)
            ev[0].wait(ev[1], timeout=WAIT)

    def check(self, b: int, expect: np.ndarray) -> None:
        out = np.empty(N, np.float32)
        self.buffers[b].copy(out)
        self.checks += 1
        if not np.array_equal(out, expect):
            bad = int(np.flatnonzero(out != expect)[0])
            raise AssertionError(f"op {self.pos}: buffer b{b}[{bad}] is {out[bad]}, the model says {expect[bad]}")

    def do(self, op: tuple) -> None:
        kind = op[0]
        if kind == "create":
            self.buffers[op[1]] = self.device.create_buffer(op[2])
        elif kind == "run":
            _, sid, key, blocking = op
            s = self.schedule(sid)
            if WORKAROUNDS and blocking and key == DEFAULT:
                s.run(None, blocking=False)
                self.sync([DEFAULT])
            else:
                s.run(self.stream(key), blocking=blocking)
        elif kind in ("write", "copy", "copy_buffer"):
            if WORKAROUNDS:
                self.sync([DEFAULT, *self.streams])
            if kind == "write":
                self.buffers[op[1]].write(op[2])
            elif kind == "copy":
                self.check(op[1], op[2])
            else:
                self.buffers[op[2]] = self.device.copy_buffer(self.buffers[op[1]])
        elif kind == "signal":
            self.event(op[1]).signal(op[2])
        elif kind == "wait":
            self.event(op[1]).wait(op[2], timeout=WAIT)
        elif kind in ("release", "drop"):
            table = {"buffer": self.buffers, "schedule": self.schedules, "event": self.events}[op[1]]
            if op[2] in table:
                if kind == "release":
                    table[op[2]].release()
                del table[op[2]]
        else:
            raise AssertionError(f"unknown op {op}")

    def run(self) -> None:
        try:
            for i, op in enumerate(self.prog.ops):
                self.pos = i
                self.do(op)
            self.pos = len(self.prog.ops)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = f"{type(e).__name__}: {e}"
            self.unblock()

    def unblock(self) -> None:
        """After a failure: releases this thread's held runs, so other threads finish."""
        for key in ("G", "R"):
            ev = self.events.get(key)
            if ev is not None:
                try:
                    ev.signal(1 << 40)
                except nexus.Error:
                    pass


def execute(device: nexus.Device, kernels: nexus.Library, n_streams: int, programs: list[ThreadProgram],
            stats: dict, label: str, cpu_device: nexus.Device) -> None:
    if label in _DEADLOCK:
        raise AssertionError("an earlier program deadlocked (later programs are not run):\n" + _DEADLOCK[label])
    streams = {i: device.create_stream() for i in range(n_streams)}
    execs = [ThreadExec(device, kernels, streams, p, cpu_device) for p in programs]
    threads = [threading.Thread(target=x.run, daemon=True) for x in execs]
    deadline = time.monotonic() + PROGRAM_TIMEOUT
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stats["programs"] += 1
    stats["threads"] += len(programs)
    stats["ops"] += sum(len(p.ops) for p in programs)
    stats["checks"] += sum(x.checks for x in execs)
    stats["foreign_event_threads"] += sum(bool(p.foreign) for p in programs)
    for p in programs:
        for op in p.ops:
            if op[0] == "signal" and op[1] == "G":
                stats["host_releases" if op[2] else "host_resets"] += 1
            elif op[0] == "signal" and op[1] == "R":
                stats["host_releases" if op[2] == 1 else "in_stream_resets"] += 1  # 5: set before the reset
            elif op[0] in ("release", "drop"):
                stats[op[0] + "s"] += 1
            elif op[0] == "run":
                stats["runs"] += 1

    def describe() -> str:
        return "\n".join(
            f"thread {i} (at op {x.pos}{', ' + x.error if x.error else ''}):\n{p.describe()}"
            for i, (x, p) in enumerate(zip(execs, programs))
        ) + f"\n{n_streams} stream(s)"

    if any(t.is_alive() for t in threads):
        report = f"the program did not finish within {PROGRAM_TIMEOUT} s (deadlock):\n{describe()}"
        _DEADLOCK.setdefault(label, report)
        for x in execs:
            x.unblock()
        raise AssertionError(report)
    errors = [x.error for x in execs if x.error]
    if errors:
        raise AssertionError(f"{errors}\n{describe()}")
    # Every stream drains (nothing is left held).
    for key in [DEFAULT, *streams]:
        ev = device.create_event()
        s = device.create_schedule()
        s.create_signal_command(ev, 1)
        s.run(None if key == DEFAULT else streams[key], blocking=False)
        try:
            ev.wait(1, timeout=WAIT)
        except TimeoutError:
            report = f"stream {key} did not drain after the program:\n{describe()}"
            _DEADLOCK.setdefault(label, report)
            raise AssertionError(report) from None


def takes_foreign_events(device: nexus.Device, cpu_device: nexus.Device) -> bool:
    """Whether the device's schedules take events of the CPU runtime (a
    runtime may refuse them with an error saying so)."""
    ev = cpu_device.create_event()
    s = device.create_schedule()
    try:
        s.create_signal_command(ev, 1)
        s.run()
    except nexus.Error:
        return False
    return ev.get_value() == 1


def test_random_programs_match_the_model(device: nexus.Device, kernels: nexus.Library,
                                         cpu_device: nexus.Device) -> None:
    """Random programs of runs, writes, copies, signals, waits, resets and
    releases over several streams and threads give exactly what a
    sequential numpy model of each thread says."""
    label = f"{device.get_property_str('Runtime')}:{device.get_info().get_str('Name')}"
    stats = _STATS.setdefault(label, dict.fromkeys(
        ["programs", "threads", "ops", "runs", "checks", "host_releases", "host_resets", "in_stream_resets",
         "releases", "drops", "foreign_event_threads"], 0))
    foreign_ok = takes_foreign_events(device, cpu_device)
    max_examples = int(os.environ.get("NEXUS_MODEL_EXAMPLES", "200"))

    @settings(max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(data=st.data())
    def program(data) -> None:
        n_streams = data.draw(st.integers(1, 3), label="streams")
        n_threads = data.draw(st.integers(1, 3), label="threads")
        keys = [DEFAULT, *range(n_streams)]
        progs = [ThreadGen(data, keys, max_ops=20, foreign_ok=foreign_ok).generate() for _ in range(n_threads)]
        execute(device, kernels, n_streams, progs, stats, label, cpu_device)

    start = time.monotonic()
    try:
        program()
    finally:
        stats["seconds"] = round(time.monotonic() - start, 2)
        print(f"\nmodel-based test on {label}: {stats}")
        path = os.environ.get("NEXUS_MODEL_REPORT")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"device": label, "max_examples": max_examples, **stats}) + "\n")
