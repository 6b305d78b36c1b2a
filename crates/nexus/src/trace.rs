//! `with nexus.trace("run.json"):` — every run, command, host copy, signal
//! and wait while a trace is active, as Chrome trace JSON (Perfetto and
//! chrome://tracing open it; `python -m nexus trace` draws it as SVG).
//!
//! While tracing, schedules encode with profiling, so each command has
//! device timestamps where the runtime records them (CPU, CUDA); elsewhere
//! a run is one box from submission to completion. Times are microseconds
//! on the host clock: a run's device times are placed from its submission,
//! and all runs are read when the trace stops (a schedule run several times
//! during a trace shows its last run's durations for each).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::backends::common::lock;
use crate::hal;

static ACTIVE: AtomicBool = AtomicBool::new(false);
static RECORDS: Mutex<Vec<Record>> = Mutex::new(Vec::new());

/// Microseconds on the trace clock.
pub(crate) fn now_us() -> f64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e6
}

pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// One command of a traced run, as it is drawn.
pub(crate) struct TracedCommand {
    pub label: String,
    pub kind: &'static str,
    /// For signals and waits: (event id, value).
    pub event: Option<(usize, u64)>,
}

pub(crate) enum Record {
    Run {
        device: String,
        stream: String,
        submitted_us: f64,
        fence: hal::Fence,
        schedule: Arc<dyn hal::Schedule>,
        commands: Vec<TracedCommand>,
    },
    HostCopy {
        device: String,
        what: &'static str,
        bytes: usize,
        start_us: f64,
        end_us: f64,
    },
}

pub(crate) fn record(r: Record) {
    if active() {
        lock(&RECORDS).push(r);
    }
}

/// Starts recording (a trace already active keeps its records).
pub fn start() {
    if !ACTIVE.swap(true, Ordering::SeqCst) {
        lock(&RECORDS).clear();
    }
}

/// Stops recording and returns the Chrome trace: waits (up to `timeout`)
/// for the recorded runs to complete, so their timestamps are known.
pub fn stop(timeout: Duration) -> Value {
    ACTIVE.store(false, Ordering::SeqCst);
    let records = std::mem::take(&mut *lock(&RECORDS));
    let deadline = Instant::now() + timeout;
    let mut events: Vec<Value> = Vec::new();
    let mut lanes: Vec<(String, String)> = Vec::new();
    let mut lane = |device: &str, stream: &str| -> usize {
        match lanes.iter().position(|(d, s)| d == device && s == stream) {
            Some(i) => i,
            None => {
                lanes.push((device.to_string(), stream.to_string()));
                lanes.len() - 1
            }
        }
    };
    // (event, value) -> where signals and waits were drawn, for arrows.
    let mut signals: Vec<((usize, u64), usize, f64)> = Vec::new();
    let mut waits: Vec<((usize, u64), usize, f64)> = Vec::new();
    for r in records {
        match r {
            Record::HostCopy {
                device,
                what,
                bytes,
                start_us,
                end_us,
            } => {
                let tid = lane(&device, "host");
                events.push(json!({
                    "name": format!("{what} {bytes} bytes"), "cat": "copy", "ph": "X",
                    "ts": start_us, "dur": (end_us - start_us).max(0.01),
                    "pid": device, "tid": tid, "args": {"bytes": bytes},
                }));
            }
            Record::Run {
                device,
                stream,
                submitted_us,
                fence,
                schedule,
                commands,
            } => {
                let left = deadline.saturating_duration_since(Instant::now());
                let done = fence.wait(left);
                let tid = lane(&device, &stream);
                let timings = if done { schedule.timings() } else { None };
                let end_host = now_us();
                match timings.filter(|t| t.len() == commands.len() && !t.is_empty()) {
                    Some(t) => {
                        // Host-clock timings are placed as they are; device
                        // timings from the run's submission.
                        let (base, origin) = if schedule.timings_on_host_clock() {
                            (0.0, 0.0)
                        } else {
                            (submitted_us, t[0].0)
                        };
                        for (c, (s, e)) in commands.iter().zip(t) {
                            let ts = base + (s - origin) * 1e3;
                            let dur = ((e - s) * 1e3).max(0.01);
                            events.push(json!({
                                "name": c.label, "cat": c.kind, "ph": "X", "ts": ts, "dur": dur,
                                "pid": device, "tid": tid,
                            }));
                            match (c.kind, c.event) {
                                ("signal", Some(k)) => signals.push((k, tid, ts + dur)),
                                ("wait", Some(k)) => waits.push((k, tid, ts + dur)),
                                _ => {}
                            }
                        }
                    }
                    None => {
                        let names: Vec<&str> = commands.iter().map(|c| c.label.as_str()).collect();
                        events.push(json!({
                            "name": format!("run of {} commands", commands.len()), "cat": "run",
                            "ph": "X", "ts": submitted_us,
                            "dur": (end_host - submitted_us).max(0.01),
                            "pid": device, "tid": tid, "args": {"commands": names, "completed": done},
                        }));
                    }
                }
            }
        }
    }
    // A flow arrow from each wait's satisfying signal (the last signal of
    // that event reaching the value; runs are placed from their submission,
    // so times across streams are approximate) to the wait's end.
    let mut flow = 0u64;
    for ((event, value), wtid, wts) in &waits {
        let from = signals
            .iter()
            .filter(|((e, v), _, _)| e == event && v >= value)
            .max_by(|a, b| a.2.total_cmp(&b.2));
        if let Some((_, stid, sts)) = from {
            flow += 1;
            let (sl, wl) = (&lanes[*stid], &lanes[*wtid]);
            events.push(json!({"name": "signal", "cat": "sync", "ph": "s", "id": flow, "ts": sts, "pid": sl.0, "tid": stid}));
            events.push(json!({"name": "signal", "cat": "sync", "ph": "f", "bp": "e", "id": flow, "ts": wts, "pid": wl.0, "tid": wtid}));
        }
    }
    for (i, (device, stream)) in lanes.iter().enumerate() {
        events.push(json!({"name": "thread_name", "ph": "M", "pid": device, "tid": i, "args": {"name": stream}}));
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"producer": "nexus"}})
}
