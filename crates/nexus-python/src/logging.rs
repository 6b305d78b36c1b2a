//! The core's `log` records, forwarded to Python's `logging.getLogger("nexus")`.
//! `NEXUS_LOG` (error, warn, info, debug, trace, off) sets the level; warn by default.
//!
//! A record may be logged on any thread, with core locks held (a stream's
//! worker, the release thread): taking the GIL there could deadlock with a
//! thread that holds the GIL and waits for that lock. So records are only
//! queued here, and `emit` hands them to Python from binding calls, which
//! hold the GIL and no core lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;

/// Records waiting for a thread that holds the GIL and no core lock.
static QUEUED: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());
static ANY_QUEUED: AtomicBool = AtomicBool::new(false);
/// Records beyond this many are dropped (a stuck consumer must not grow
/// memory without bound).
const MAX_QUEUED: usize = 10_000;

/// Hands queued records to Python, if any (one atomic load otherwise);
/// called with the GIL held.
pub fn emit_pending() {
    if ANY_QUEUED.load(Ordering::Acquire) {
        Python::attach(emit);
    }
}

/// Hands queued records to `logging.getLogger("nexus")`.
pub fn emit(py: Python<'_>) {
    let records = {
        let mut q = QUEUED.lock().unwrap_or_else(|e| e.into_inner());
        ANY_QUEUED.store(false, Ordering::Release);
        std::mem::take(&mut *q)
    };
    // A failure to log must not become an error of the call that emits.
    let Ok(logger) = py
        .import("logging")
        .and_then(|logging| logging.call_method1("getLogger", ("nexus",)))
    else {
        return;
    };
    for (level, message) in records {
        let _ = logger.call_method1("log", (level, message));
    }
}

struct PythonLogger;

impl log::Log for PythonLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => 40,
            log::Level::Warn => 30,
            log::Level::Info => 20,
            log::Level::Debug | log::Level::Trace => 10,
        };
        let message = record.args().to_string();
        let mut q = QUEUED.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() < MAX_QUEUED {
            q.push((level, message));
        }
        ANY_QUEUED.store(true, Ordering::Release);
    }

    fn flush(&self) {}
}

pub fn install() {
    static LOGGER: PythonLogger = PythonLogger;
    let level = match std::env::var("NEXUS_LOG")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        Ok("off") => log::LevelFilter::Off,
        Ok("error") => log::LevelFilter::Error,
        Ok("info") => log::LevelFilter::Info,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        _ => log::LevelFilter::Warn,
    };
    // Another extension may have installed a logger first; then ours stays out.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
