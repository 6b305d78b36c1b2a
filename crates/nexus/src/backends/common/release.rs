//! Deferred frees.
//!
//! Freeing device memory, pinned memory or a module can wait for the
//! device (cuMemFree synchronises), and the work it waits for may itself
//! wait for a host signal the dropping thread is about to give: freeing
//! inline could deadlock. So such frees run on one release thread per
//! process, and an allocation that fails waits for them (`drain`) before
//! it tries again.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::lock;

type Job = Box<dyn FnOnce() + Send>;

struct Reaper {
    /// The release thread's queue, with the process that started it (a
    /// forked child starts its own).
    sender: Mutex<Option<(u32, Sender<Job>)>>,
    /// Frees queued and not yet done.
    pending: Mutex<u64>,
    idle: Condvar,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(|| Reaper {
        sender: Mutex::new(None),
        pending: Mutex::new(0),
        idle: Condvar::new(),
    })
}

fn finished() {
    let r = reaper();
    let mut pending = lock(&r.pending);
    *pending = pending.saturating_sub(1);
    if *pending == 0 {
        r.idle.notify_all();
    }
}

/// Runs `job` (a free) on the release thread.
pub fn defer(job: Job) {
    let r = reaper();
    let mut slot = lock(&r.sender);
    let pid = crate::process::id();
    let fresh = slot.as_ref().map(|(p, _)| *p) != Some(pid);
    {
        // A forked child's count restarts: the parent's frees never run here.
        let mut pending = lock(&r.pending);
        *pending = if fresh { 1 } else { *pending + 1 };
    }
    if fresh {
        let (tx, rx) = channel::<Job>();
        // Frees are deferred only for memory a driver gave: the driver is
        // loaded by now, so this exit handler runs before its own.
        crate::process::watch_exit_after_driver_opened(crate::process::ChildExit::RunTeardown);
        let spawned = std::thread::Builder::new()
            .name("nexus-release".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    if crate::process::exiting() {
                        // The driver may be gone: leak, never call it.
                        std::mem::forget(job);
                    } else {
                        job();
                    }
                    finished();
                }
            });
        if spawned.is_err() {
            drop(slot);
            job();
            finished();
            return;
        }
        *slot = Some((pid, tx));
    }
    if let Some((_, tx)) = slot.as_ref() {
        if let Err(e) = tx.send(job) {
            drop(slot);
            (e.0)();
            finished();
        }
    }
}

/// Waits up to `timeout` for every free queued so far: `true` when none is
/// left.
pub fn drain(timeout: Duration) -> bool {
    let r = reaper();
    let deadline = Instant::now() + timeout;
    let mut pending = lock(&r.pending);
    while *pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        pending = r
            .idle
            .wait_timeout(pending, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn drain_waits_for_deferred_frees() {
        let freed = Arc::new(AtomicBool::new(false));
        let f = freed.clone();
        super::defer(Box::new(move || {
            std::thread::sleep(Duration::from_millis(30));
            f.store(true, Ordering::SeqCst);
        }));
        assert!(super::drain(Duration::from_secs(10)));
        assert!(freed.load(Ordering::SeqCst));
    }
}
