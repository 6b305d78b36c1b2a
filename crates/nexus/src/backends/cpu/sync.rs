//! Timeline events and in-order streams of the CPU runtime.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::schedule::CpuSchedule;
use crate::error::{Error, Result, Status};
use crate::hal;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A kernel that panicked cannot leave these states inconsistent: they
    // are plain counters, so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 64-bit timeline value guarded by a condition variable.
#[derive(Default)]
pub struct CpuEvent {
    value: Mutex<u64>,
    changed: Condvar,
}

impl hal::Event for CpuEvent {
    fn signal(&self, value: u64) -> Result<()> {
        *lock(&self.value) = value;
        self.changed.notify_all();
        Ok(())
    }

    fn value(&self) -> u64 {
        *lock(&self.value)
    }

    fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<bool> {
        let mut v = lock(&self.value);
        match timeout {
            None => {
                while *v < value {
                    v = self.changed.wait(v).unwrap_or_else(|e| e.into_inner());
                }
                Ok(true)
            }
            Some(t) => {
                let deadline = Instant::now() + t;
                while *v < value {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(false);
                    }
                    v = self
                        .changed
                        .wait_timeout(v, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                Ok(true)
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct Queue {
    /// Process that owns the worker; a forked child starts its own.
    worker_pid: Option<u32>,
    jobs: VecDeque<Arc<CpuSchedule>>,
    submitted: u64,
    completed: u64,
    closing: bool,
    /// First failure of an asynchronous run, reported by the next synchronize.
    error: Option<Error>,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    done: Condvar,
}

/// An in-order queue executed by its own worker thread, started on first use.
pub struct CpuStream {
    shared: Arc<Shared>,
}

impl CpuStream {
    pub fn new() -> Self {
        let queue = Queue {
            worker_pid: None,
            jobs: VecDeque::new(),
            submitted: 0,
            completed: 0,
            closing: false,
            error: None,
        };
        CpuStream {
            shared: Arc::new(Shared {
                queue: Mutex::new(queue),
                work: Condvar::new(),
                done: Condvar::new(),
            }),
        }
    }

    /// Queues a schedule; returns its ticket (completion count to wait for).
    pub fn submit(&self, job: Arc<CpuSchedule>) -> Result<u64> {
        let mut q = lock(&self.shared.queue);
        let pid = crate::process::id();
        if q.worker_pid != Some(pid) {
            // First use, or a forked child: the parent's worker is not here.
            q.jobs.clear();
            q.completed = q.submitted;
            let shared = self.shared.clone();
            std::thread::Builder::new()
                .name("nexus-cpu-stream".into())
                .spawn(move || worker(shared))
                .map_err(|e| {
                    Error::new(
                        Status::InvalidStream,
                        format!("CPU stream: cannot start its worker thread: {e}"),
                    )
                })?;
            q.worker_pid = Some(pid);
        }
        q.jobs.push_back(job);
        q.submitted += 1;
        let ticket = q.submitted;
        drop(q);
        self.shared.work.notify_one();
        Ok(ticket)
    }

    pub fn wait_for(&self, ticket: u64) -> Result<()> {
        while !self.wait_for_timeout(ticket, Duration::from_secs(3600))? {}
        Ok(())
    }

    /// `Ok(false)` if `ticket` is not complete after `timeout`.
    pub fn wait_for_timeout(&self, ticket: u64, timeout: Duration) -> Result<bool> {
        self.shared.wait_ticket(ticket, timeout)
    }

    /// What a blocking caller waits on for one submission.
    pub fn pending(&self, ticket: u64) -> StreamTicket {
        StreamTicket {
            shared: self.shared.clone(),
            ticket,
        }
    }
}

impl Shared {
    fn wait_ticket(&self, ticket: u64, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.queue);
        // A forked child has no worker: what the parent queued never runs here.
        while q.completed < ticket && q.worker_pid == Some(crate::process::id()) {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            q = self
                .done
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        match q.error.take() {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }
}

fn worker(shared: Arc<Shared>) {
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                if q.closing {
                    return;
                }
                q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = job.execute();
        let mut q = lock(&shared.queue);
        q.completed += 1;
        if let Err(e) = result {
            q.error.get_or_insert(e);
        }
        drop(q);
        shared.done.notify_all();
    }
}

impl Drop for CpuStream {
    fn drop(&mut self) {
        // The worker finishes what was queued, then exits.
        lock(&self.shared.queue).closing = true;
        self.shared.work.notify_all();
    }
}

/// One submission on a stream, waited on in slices.
pub struct StreamTicket {
    // The queue, not the stream: dropping a ticket must not close the stream.
    shared: Arc<Shared>,
    ticket: u64,
}

impl hal::Pending for StreamTicket {
    fn wait(&self, timeout: Duration) -> Result<bool> {
        self.shared.wait_ticket(self.ticket, timeout)
    }
}

impl hal::Stream for CpuStream {
    fn synchronize(&self) -> Result<()> {
        let ticket = lock(&self.shared.queue).submitted;
        self.wait_for(ticket)
    }

    fn synchronize_for(&self, timeout: Duration) -> Result<bool> {
        let ticket = lock(&self.shared.queue).submitted;
        self.wait_for_timeout(ticket, timeout)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
