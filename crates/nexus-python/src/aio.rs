//! asyncio: `await schedule.run_async()`, `await event.wait_async(v)`,
//! `await stream.synchronize_async()`.
//!
//! Each returns an asyncio future of the running loop. One completion thread
//! per process (started on first use) polls every pending wait with no lock
//! held while it polls, and resolves the futures it finds done through
//! `loop.call_soon_threadsafe`: there is no thread per wait, and the GIL is
//! taken only to hand results over, with the pending list unlocked. A
//! cancelled future is dropped from the list at the next poll; what it
//! waited for (a queued run) still completes on the device as usual.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::errors::to_py;

/// What a pending wait reports when polled.
pub enum Poll {
    Pending,
    /// Done: the value the future resolves to (`None`: NXS_Success).
    Done,
    Failed(nexus::Error),
}

type Check = Box<dyn FnMut() -> Poll + Send>;

struct Pending {
    check: Check,
    deadline: Option<Instant>,
    /// The error a timeout raises.
    on_timeout: Option<Box<dyn FnOnce() -> nexus::Error + Send>>,
    future: Py<PyAny>,
    event_loop: Py<PyAny>,
    cancelled: Arc<AtomicBool>,
}

struct Completer {
    pending: Mutex<Vec<Pending>>,
    arrived: Condvar,
}

fn completer() -> &'static Completer {
    static C: OnceLock<Completer> = OnceLock::new();
    static STARTED: OnceLock<()> = OnceLock::new();
    let c = C.get_or_init(|| Completer {
        pending: Mutex::new(Vec::new()),
        arrived: Condvar::new(),
    });
    STARTED.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("nexus-asyncio".into())
            .spawn(|| run(completer()));
    });
    c
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cancellation flag the future's done-callback sets.
#[pyclass(module = "nexus", frozen)]
pub struct _Cancel {
    flag: Arc<AtomicBool>,
}

#[pymethods]
impl _Cancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.extract::<bool>()? {
            self.flag.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// A future of the running loop, resolved when `check` reports done.
pub fn future<'py>(
    py: Python<'py>,
    check: Check,
    timeout: Option<Duration>,
    on_timeout: Option<Box<dyn FnOnce() -> nexus::Error + Send>>,
) -> PyResult<Bound<'py, PyAny>> {
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let fut = event_loop.call_method0("create_future")?;
    let cancelled = Arc::new(AtomicBool::new(false));
    fut.call_method1(
        "add_done_callback",
        (_Cancel {
            flag: cancelled.clone(),
        },),
    )?;
    let c = completer();
    lock(&c.pending).push(Pending {
        check,
        deadline: timeout.map(|t| Instant::now() + t),
        on_timeout,
        future: fut.clone().unbind(),
        event_loop: event_loop.unbind(),
        cancelled,
    });
    c.arrived.notify_one();
    Ok(fut)
}

enum Outcome {
    Ok,
    Err(nexus::Error),
}

/// The completion thread: polls, then resolves what finished (GIL taken
/// with no lock held), sleeping a little longer each idle round (up to
/// 1 ms) and blocking when nothing is pending.
fn run(c: &'static Completer) {
    let mut sleep = Duration::from_micros(20);
    loop {
        let mut batch = {
            let mut pending = lock(&c.pending);
            while pending.is_empty() {
                pending = c.arrived.wait(pending).unwrap_or_else(|e| e.into_inner());
                sleep = Duration::from_micros(20);
            }
            std::mem::take(&mut *pending)
        };
        let now = Instant::now();
        let mut finished: Vec<(Pending, Outcome)> = Vec::new();
        let mut still: Vec<Pending> = Vec::with_capacity(batch.len());
        for mut p in batch.drain(..) {
            if p.cancelled.load(Ordering::Acquire) {
                finished.push((p, Outcome::Ok)); // dropped below without resolving
                continue;
            }
            match (p.check)() {
                Poll::Done => finished.push((p, Outcome::Ok)),
                Poll::Failed(e) => finished.push((p, Outcome::Err(e))),
                Poll::Pending if p.deadline.is_some_and(|d| now >= d) => {
                    let e = match p.on_timeout.take() {
                        Some(f) => f(),
                        None => nexus::Error::new(nexus::Status::Timeout, "timed out"),
                    };
                    finished.push((p, Outcome::Err(e)));
                }
                Poll::Pending => still.push(p),
            }
        }
        let idle = finished.is_empty();
        if !finished.is_empty() {
            Python::attach(|py| {
                let _ = resolve_all(py, finished);
            });
        }
        if !still.is_empty() {
            lock(&c.pending).extend(still);
        }
        if idle {
            // Nothing finished: back off (a GPU run takes microseconds, a
            // host signal may take seconds).
            let pending = lock(&c.pending);
            let _ = c.arrived.wait_timeout(pending, sleep);
            sleep = (sleep * 2).min(Duration::from_millis(1));
        } else {
            sleep = Duration::from_micros(20);
        }
    }
}

/// (future, result, error) as `nexus._aio._resolve` takes them.
type Resolution = (Py<PyAny>, Py<PyAny>, Py<PyAny>);

/// Hands the outcomes to their futures: one `call_soon_threadsafe` per
/// event loop for the whole batch (10,000 waits released by one signal
/// wake each loop once, not 10,000 times).
fn resolve_all(py: Python<'_>, finished: Vec<(Pending, Outcome)>) -> PyResult<()> {
    let aio = py.import("nexus._aio")?;
    let resolve_many = aio.getattr("_resolve_many")?;
    let mut by_loop: Vec<(Py<PyAny>, Vec<Resolution>)> = Vec::new();
    for (p, outcome) in finished {
        if p.cancelled.load(Ordering::Acquire) {
            continue;
        }
        let (value, error) = match outcome {
            Outcome::Ok => (crate::errors::success(py), py.None()),
            Outcome::Err(e) => (py.None(), to_py(e).into_value(py).into_any()),
        };
        let item = (p.future.clone_ref(py), value, error);
        match by_loop.iter_mut().find(|(l, _)| l.is(&p.event_loop)) {
            Some((_, items)) => items.push(item),
            None => by_loop.push((p.event_loop.clone_ref(py), vec![item])),
        }
    }
    for (event_loop, items) in by_loop {
        // A closed loop refuses; its futures are gone with it.
        let _ = event_loop.call_method1(py, "call_soon_threadsafe", (&resolve_many, items));
    }
    Ok(())
}
