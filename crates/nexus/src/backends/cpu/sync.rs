//! Timeline events and in-order streams of the CPU runtime.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::schedule::CpuSchedule;
use crate::backends::common::lock;
use crate::error::{Error, Result, Status};
use crate::hal::{self, Submissions};

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

    fn value(&self) -> Result<u64> {
        Ok(*lock(&self.value))
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
    /// Runs waiting for the worker, with their tickets.
    jobs: VecDeque<(u64, Arc<CpuSchedule>)>,
    submitted: u64,
    /// A run is executing on its caller's thread (see `try_inline`): the
    /// worker starts nothing until it is done, so stream order holds.
    inline: bool,
    closing: bool,
    /// Threads blocked on `done`; completions wake them only when there are.
    waiters: usize,
    /// Failures of runs no waiter has taken yet, by ticket.
    failures: BTreeMap<u64, Error>,
}

pub(crate) struct Shared {
    queue: Mutex<Queue>,
    /// Tickets 1..=completed are done (written under the queue lock, read
    /// without it by `is_complete`).
    completed: AtomicU64,
    /// Whether `failures` is non-empty: the success path never locks for it.
    any_failure: AtomicBool,
    work: Condvar,
    done: Condvar,
}

/// An in-order queue executed by its own worker thread, started on first use.
pub struct CpuStream {
    pub(crate) shared: Arc<Shared>,
}

impl Default for CpuStream {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuStream {
    pub fn new() -> Self {
        let queue = Queue {
            worker_pid: None,
            jobs: VecDeque::new(),
            submitted: 0,
            inline: false,
            closing: false,
            waiters: 0,
            failures: BTreeMap::new(),
        };
        CpuStream {
            shared: Arc::new(Shared {
                queue: Mutex::new(queue),
                completed: AtomicU64::new(0),
                any_failure: AtomicBool::new(false),
                work: Condvar::new(),
                done: Condvar::new(),
            }),
        }
    }

    /// Runs `job` on the calling thread if the stream is idle (nothing
    /// queued or running), returning its ticket; `None` if the stream is
    /// busy, so the run must queue behind what came before.
    pub fn try_inline(&self, job: &CpuSchedule) -> Option<u64> {
        let ticket = {
            let mut q = lock(&self.shared.queue);
            if q.inline || q.submitted != self.shared.completed.load(Ordering::Acquire) {
                return None;
            }
            q.inline = true;
            q.submitted += 1;
            q.submitted
        };
        let result = job.execute();
        let mut q = lock(&self.shared.queue);
        q.inline = false;
        if let Err(e) = result {
            self.shared.fail(&mut q, ticket, e);
        }
        self.shared.completed.fetch_max(ticket, Ordering::AcqRel);
        // Wake-ups cost a system call each: only when someone waits.
        let (waiters, queued) = (q.waiters, !q.jobs.is_empty());
        drop(q);
        if waiters > 0 {
            self.shared.done.notify_all();
        }
        if queued {
            self.shared.work.notify_one();
        }
        Some(ticket)
    }

    /// Queues a schedule; returns its ticket.
    pub fn submit(&self, job: Arc<CpuSchedule>) -> Result<u64> {
        let mut q = lock(&self.shared.queue);
        let pid = crate::process::id();
        if q.worker_pid != Some(pid) {
            if q.worker_pid.is_some() {
                // A forked child: the parent's worker, and any run it or
                // another thread was executing, are not here.
                q.jobs.clear();
                q.inline = false;
                self.shared.completed.store(q.submitted, Ordering::Release);
            }
            // (On first use another thread may be running a run inline:
            // its ticket completes when it returns, as usual.)
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
        q.submitted += 1;
        let ticket = q.submitted;
        q.jobs.push_back((ticket, job));
        drop(q);
        self.shared.work.notify_one();
        Ok(ticket)
    }

    /// Waits for everything submitted so far; reports the first failure no
    /// run's own waiter took.
    fn synchronize_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let ticket = lock(&self.shared.queue).submitted;
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if self.shared.wait(ticket, slice) {
                break;
            }
            if deadline.is_some() {
                return Ok(false);
            }
        }
        if !self.shared.any_failure.load(Ordering::Acquire) {
            return Ok(true);
        }
        let mut q = lock(&self.shared.queue);
        let first = q.failures.keys().next().copied();
        let result = match first.filter(|t| *t <= ticket) {
            Some(t) => {
                let e = q.failures.remove(&t);
                q.failures.retain(|k, _| *k > ticket);
                e.map_or(Ok(true), Err)
            }
            None => Ok(true),
        };
        self.shared
            .any_failure
            .store(!q.failures.is_empty(), Ordering::Release);
        result
    }
}

impl Shared {
    fn fail(&self, q: &mut Queue, ticket: u64, e: Error) {
        q.failures.insert(ticket, e);
        self.any_failure.store(true, Ordering::Release);
    }
}

impl hal::Submissions for Shared {
    fn is_complete(&self, ticket: u64) -> bool {
        self.completed.load(Ordering::Acquire) >= ticket
    }

    fn wait(&self, ticket: u64, timeout: Duration) -> bool {
        if self.is_complete(ticket) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.queue);
        // A forked child has no worker: what the parent queued never runs
        // here, and nothing in this process waits for it.
        while self.completed.load(Ordering::Acquire) < ticket
            && (q.inline || q.worker_pid == Some(crate::process::id()))
        {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            q.waiters += 1;
            q = self
                .done
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            q.waiters -= 1;
        }
        true
    }

    fn take_failure(&self, ticket: u64) -> Option<Error> {
        if !self.any_failure.load(Ordering::Acquire) {
            return None;
        }
        let mut q = lock(&self.queue);
        let e = q.failures.remove(&ticket);
        self.any_failure
            .store(!q.failures.is_empty(), Ordering::Release);
        e
    }
}

fn worker(shared: Arc<Shared>) {
    loop {
        let (ticket, job) = {
            let mut q = lock(&shared.queue);
            loop {
                if !q.inline {
                    if let Some(job) = q.jobs.pop_front() {
                        break job;
                    }
                    if q.closing {
                        return;
                    }
                }
                q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = job.execute();
        // The run's resources go before it is reported complete.
        drop(job);
        let mut q = lock(&shared.queue);
        if let Err(e) = result {
            shared.fail(&mut q, ticket, e);
        }
        shared.completed.fetch_max(ticket, Ordering::AcqRel);
        let waiters = q.waiters;
        drop(q);
        if waiters > 0 {
            shared.done.notify_all();
        }
    }
}

impl Drop for CpuStream {
    fn drop(&mut self) {
        // The worker finishes what was queued, then exits.
        lock(&self.shared.queue).closing = true;
        self.shared.work.notify_all();
    }
}

impl hal::Stream for CpuStream {
    fn synchronize(&self) -> Result<()> {
        self.synchronize_until(None).map(|_| ())
    }

    fn synchronize_for(&self, timeout: Duration) -> Result<bool> {
        self.synchronize_until(Some(Instant::now() + timeout))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
