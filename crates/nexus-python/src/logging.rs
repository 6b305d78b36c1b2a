//! The core's `log` records, forwarded to Python's `logging.getLogger("nexus")`.
//! `NEXUS_LOG` (error, warn, info, debug, trace, off) sets the level; warn by default.

use pyo3::prelude::*;

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
        // Records only come from calls made by Python code, so the
        // interpreter is alive; a failure to log must not become an error.
        Python::attach(|py| {
            let _ = py
                .import("logging")
                .and_then(|logging| logging.call_method1("getLogger", ("nexus",)))
                .and_then(|logger| logger.call_method1("log", (level, message)));
        });
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
