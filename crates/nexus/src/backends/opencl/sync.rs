//! Host timelines for events, and in-order command queues as streams.
//!
//! An event is a 64-bit value on the host (`Timeline`). The host signals
//! and waits on it directly. A signal or wait command runs on the host
//! when the stream reaches it (a callback of the command before it, see
//! `schedule.rs`); a wait for a value not reached then registers a
//! continuation, which the signal that reaches the value runs. The
//! commands after a group of signals and waits wait for a user event the
//! group completes, so the value a wait sees is the value when it
//! executes in its stream (resets included).
//!
//! Every run on a stream gets a ticket; a callback on the run's last
//! command moves `Done::completed`, which `hal::Submissions` reads. What a
//! run uses stays in the stream's `inflight` list until its ticket is
//! complete.

use std::any::Any;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::ffi::result::{Event, Queue};
use super::ffi::sys::{cl_event, CL_COMPLETE};
use super::schedule::Steps;
use super::Dev;
use crate::backends::common::{lock, poll};
use crate::error::{Error, Result, Status};
use crate::hal::{self, Submissions};

/// Runs once a timeline reaches a value.
pub(crate) type Continuation = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct TState {
    value: u64,
    waiters: Vec<(u64, Continuation)>,
}

/// A 64-bit value with the continuations waiting for it.
#[derive(Default)]
pub(crate) struct Timeline {
    state: Mutex<TState>,
    changed: Condvar,
}

impl Timeline {
    pub(crate) fn value(&self) -> u64 {
        lock(&self.state).value
    }

    /// Sets the value (a reset if lower) and runs, with no lock held, the
    /// continuations it satisfies.
    pub(crate) fn set(&self, value: u64) {
        let ready: Vec<Continuation> = {
            let mut st = lock(&self.state);
            st.value = value;
            if st.waiters.iter().any(|(v, _)| *v <= value) {
                let (ready, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.waiters)
                    .into_iter()
                    .partition(|(v, _)| *v <= value);
                st.waiters = rest;
                ready.into_iter().map(|(_, c)| c).collect()
            } else {
                Vec::new()
            }
        };
        self.changed.notify_all();
        for c in ready {
            c();
        }
    }

    /// `true` if the value is at least `value` now; else registers
    /// `then()` to run when a signal reaches it and returns `false`.
    pub(crate) fn reached_or_register(
        &self,
        value: u64,
        then: impl FnOnce() -> Continuation,
    ) -> bool {
        let mut st = lock(&self.state);
        if st.value >= value {
            return true;
        }
        st.waiters.push((value, then()));
        false
    }

    pub(crate) fn wait(&self, value: u64, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = lock(&self.state);
        while st.value < value {
            st = match deadline {
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.changed
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        true
    }
}

/// An event of this runtime: a host timeline.
#[derive(Default)]
pub struct OclEvent {
    pub(crate) timeline: Arc<Timeline>,
}

impl hal::Event for OclEvent {
    fn signal(&self, value: u64) -> Result<()> {
        self.timeline.set(value);
        Ok(())
    }

    fn value(&self) -> Result<u64> {
        Ok(self.timeline.value())
    }

    fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<bool> {
        Ok(self.timeline.wait(value, timeout))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Where one stream's runs stand. Completion is learned by polling the
/// last event of the oldest runs not known complete (no callback per run:
/// a callback costs a thread hop per completion).
#[derive(Default)]
pub(crate) struct Done {
    /// Tickets up to `completed` are done.
    completed: AtomicU64,
    /// Runs not known complete: (ticket, its last command's event).
    tails: Mutex<VecDeque<(u64, Event)>>,
    /// Failures by ticket, until taken or the stream is synchronised.
    failures: Mutex<Vec<(u64, Error)>>,
    /// Tickets of runs with wait commands, not known complete: a run
    /// behind one may wait for the host indefinitely.
    waits: Mutex<VecDeque<u64>>,
}

impl Done {
    pub(crate) fn complete(&self, ticket: u64) {
        self.completed.fetch_max(ticket, Ordering::SeqCst);
    }

    pub(crate) fn fail(&self, ticket: u64, e: Error) {
        lock(&self.failures).push((ticket, e));
    }

    pub(crate) fn track(&self, ticket: u64, tail: Event) {
        lock(&self.tails).push_back((ticket, tail));
    }

    /// The last event of the newest run not known complete: what the
    /// stream's next command follows (`None`: everything is done).
    pub(crate) fn last_tail(&self) -> Option<Event> {
        lock(&self.tails).back().map(|(_, e)| e.clone())
    }

    /// Whether `ticket` is complete, polling the oldest runs if not yet known.
    pub(crate) fn poll(&self, ticket: u64) -> bool {
        if self.is_complete(ticket) {
            return true;
        }
        self.advance();
        self.is_complete(ticket)
    }

    /// Polls the last events of the oldest runs not known complete.
    pub(crate) fn advance(&self) {
        let mut tails = lock(&self.tails);
        while let Some((t, ev)) = tails.front() {
            let status = ev.status();
            if status > 0 {
                break;
            }
            let t = *t;
            if status < 0 {
                self.fail(
                    t,
                    Error::new(
                        Status::DriverError,
                        format!(
                            "a run on this OpenCL stream failed: {}",
                            super::ffi::result::error_name(status)
                        ),
                    ),
                );
            }
            self.complete(t);
            tails.pop_front();
        }
    }

    pub(crate) fn note_waits(&self, ticket: u64) {
        lock(&self.waits).push_back(ticket);
    }

    /// The last event of run `ticket` when nothing before it (itself
    /// included) waits for the host: blocking on it then ends when the
    /// device has done the work.
    fn bounded_tail(&self, ticket: u64) -> Option<(u64, Event)> {
        // The first run at or after `ticket` not known complete (another
        // thread may have retired `ticket` itself since the caller looked).
        let (t, tail) = lock(&self.tails)
            .iter()
            .find(|(t, _)| *t >= ticket)
            .map(|(t, e)| (*t, e.clone()))?;
        let completed = self.completed.load(Ordering::SeqCst);
        let mut waits = lock(&self.waits);
        while waits.front().is_some_and(|&w| w <= completed) {
            waits.pop_front();
        }
        if waits.front().is_some_and(|&w| w <= t) {
            return None;
        }
        Some((t, tail))
    }

    /// Blocks in the driver when the run is bounded (the waiting thread
    /// then leaves the cores to the implementation's workers, which a
    /// polling loop would compete with), else polls (`poll::poll_until`),
    /// yielding only briefly for the same reason.
    fn wait_until(&self, ticket: u64, deadline: Option<Instant>) -> bool {
        const BUSY: Duration = Duration::from_micros(20);
        if self.is_complete(ticket) {
            return true;
        }
        let long_enough = deadline.is_none_or(|d| {
            d.saturating_duration_since(Instant::now()) >= Duration::from_millis(1)
        });
        if long_enough {
            if let Some((t, tail)) = self.bounded_tail(ticket) {
                if tail.wait().is_ok() && tail.status() == CL_COMPLETE {
                    // Runs complete in order: every run up to `t` is done.
                    self.complete(t);
                    let mut tails = lock(&self.tails);
                    while tails.front().is_some_and(|(x, _)| *x <= t) {
                        tails.pop_front();
                    }
                    return true;
                }
                self.advance();
            }
        }
        poll::poll_until(deadline, BUSY, || self.poll(ticket))
    }
}

impl hal::Submissions for Done {
    fn is_complete(&self, ticket: u64) -> bool {
        self.completed.load(Ordering::SeqCst) >= ticket
    }

    fn wait(&self, ticket: u64, timeout: Duration) -> bool {
        if timeout.is_zero() {
            // A poll (the binding's first look after a blocking submit):
            // no clock read.
            return self.poll(ticket);
        }
        self.wait_until(ticket, Some(Instant::now() + timeout))
    }

    fn take_failure(&self, ticket: u64) -> Option<Error> {
        let mut f = lock(&self.failures);
        let at = f.iter().position(|(t, _)| *t == ticket)?;
        Some(f.remove(at).1)
    }
}

pub(crate) struct SState {
    pub submitted: u64,
    /// The driver queue the stream's commands go to: without profiling
    /// until the first profiled run (PoCL takes four clock readings per
    /// command of a profiling queue, ~0.08 us of a 0.7 us round trip).
    pub queue: Queue,
    profiling: bool,
    /// The queue before the switch to profiling, kept until the stream
    /// goes: releasing a queue may wait for its commands, which can be
    /// behind a host wait this thread is about to signal.
    _before_profiling: Option<Queue>,
    /// What runs not yet known complete keep alive.
    inflight: VecDeque<(u64, Arc<Steps>)>,
}

/// One stream: an in-order command queue with its tickets.
pub(crate) struct StreamQueue {
    pub(crate) dev: Arc<Dev>,
    pub(crate) state: Mutex<SState>,
    pub(crate) done: Arc<Done>,
}

fn new_queue(dev: &Dev, profiling: bool) -> Result<Queue> {
    Queue::new(dev.a, dev.ctx()?, dev.id.0, profiling).map_err(|mut e| {
        e.message = format!("{} on {}", e.message, dev.label());
        e
    })
}

impl StreamQueue {
    pub(crate) fn new(dev: &Arc<Dev>) -> Result<Arc<Self>> {
        let q = Arc::new(StreamQueue {
            dev: dev.clone(),
            state: Mutex::new(SState {
                submitted: 0,
                queue: new_queue(dev, false)?,
                profiling: false,
                _before_profiling: None,
                inflight: VecDeque::new(),
            }),
            done: Arc::new(Done::default()),
        });
        dev.register_stream(&q);
        Ok(q)
    }

    /// Moves the stream to a queue with profiling, for good: its first
    /// command is a barrier on a marker of everything the old queue holds
    /// (commands without events of their own included), which keeps
    /// stream order.
    fn start_profiling(&self, st: &mut SState) -> Result<()> {
        let queue = new_queue(&self.dev, true)?;
        let marker = st.queue.barrier(None)?;
        st.queue.flush()?;
        queue.barrier(Some(&marker))?;
        st._before_profiling = Some(std::mem::replace(&mut st.queue, queue));
        st.profiling = true;
        Ok(())
    }

    /// Queues one run of `steps`; returns its ticket.
    pub(crate) fn submit(&self, steps: &Arc<Steps>) -> Result<u64> {
        let mut retired = Vec::new();
        let mut st = lock(&self.state);
        if steps.is_profiled() && !st.profiling {
            self.start_profiling(&mut st)?;
        }
        self.retire_locked(&mut st, &mut retired);
        st.submitted += 1;
        let ticket = st.submitted;
        // Kernels, copies and fills follow in queue order; only host steps
        // need the event they come after (a retain and release saved).
        let prev = match steps.has_host_steps {
            true => self.done.last_tail(),
            false => None,
        };
        let (tail, result) = steps.enqueue(&st.queue, prev);
        if steps.has_waits {
            self.done.note_waits(ticket);
        }
        // A run that enqueued nothing completes with the one before it.
        match tail.or_else(|| self.done.last_tail()) {
            Some(t) => self.done.track(ticket, t),
            None => self.done.complete(ticket),
        }
        st.inflight.push_back((ticket, steps.clone()));
        let flushed = st.queue.flush();
        drop(st);
        drop(retired);
        match result {
            Err(e) => {
                self.done.fail(ticket, e.clone());
                Err(e)
            }
            Ok(()) => flushed.map(|_| ticket),
        }
    }

    fn retire_locked(&self, st: &mut SState, retired: &mut Vec<Arc<Steps>>) {
        // A driver query only when many runs wait to be retired: waiters
        // move `completed` on the usual paths.
        if st.inflight.len() >= 64 {
            self.done.advance();
        }
        let completed = self.done.completed.load(Ordering::SeqCst);
        while st.inflight.front().is_some_and(|(t, _)| *t <= completed) {
            if let Some((_, s)) = st.inflight.pop_front() {
                retired.push(s);
            }
        }
    }

    /// Drops what completed runs kept alive.
    pub(crate) fn retire(&self) {
        let mut retired = Vec::new();
        self.retire_locked(&mut lock(&self.state), &mut retired);
        drop(retired);
    }

    /// Everything submitted so far is done (`false` once `deadline` passed
    /// first); reports the first failure no run's own waiter took.
    pub(crate) fn synchronize(&self, deadline: Option<Instant>) -> Result<bool> {
        let ticket = lock(&self.state).submitted;
        if !self.done.wait_until(ticket, deadline) {
            return Ok(false);
        }
        self.retire();
        let mut f = lock(&self.done.failures);
        let first = f.iter().position(|(t, _)| *t <= ticket);
        match first {
            Some(i) => {
                let e = f.remove(i).1;
                f.retain(|(t, _)| *t > ticket);
                Err(e)
            }
            None => Ok(true),
        }
    }
}

/// A user stream: its own in-order queue.
pub struct OclStream {
    pub(crate) queue: Arc<StreamQueue>,
}

impl OclStream {
    pub(crate) fn new(dev: &Arc<Dev>) -> Result<Self> {
        Ok(OclStream {
            queue: StreamQueue::new(dev)?,
        })
    }
}

impl hal::Stream for OclStream {
    fn synchronize(&self) -> Result<()> {
        self.queue.synchronize(None).map(|_| ())
    }

    fn synchronize_for(&self, timeout: Duration) -> Result<bool> {
        self.queue.synchronize(Some(Instant::now() + timeout))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Drops what a dropped stream's last runs keep, on the release thread,
/// once they are complete.
unsafe extern "C" fn drop_when_done(_event: cl_event, _status: i32, user: *mut c_void) {
    // SAFETY: `user` is the box `StreamQueue::drop` leaked for this call.
    let keep = unsafe { Box::from_raw(user as *mut VecDeque<(u64, Arc<Steps>)>) };
    crate::backends::common::release::defer(Box::new(move || drop(keep)));
}

impl Drop for StreamQueue {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let inflight = std::mem::take(&mut st.inflight);
        if inflight.is_empty() {
            return;
        }
        let completed = self.done.completed.load(Ordering::SeqCst);
        let keep: VecDeque<_> = inflight
            .into_iter()
            .filter(|(t, _)| *t > completed)
            .collect();
        match self.done.last_tail() {
            Some(last) if !keep.is_empty() && super::ffi::result::same_process() => {
                let _ = st.queue.flush();
                let user = Box::into_raw(Box::new(keep)) as *mut c_void;
                // SAFETY: drop_when_done takes back exactly this box, once.
                if unsafe { last.on_complete(drop_when_done, user) }.is_err() {
                    // SAFETY: the callback was not set: keep the runs' resources forever
                    // rather than free memory a queued kernel may still use.
                    std::mem::forget(unsafe {
                        Box::from_raw(user as *mut VecDeque<(u64, Arc<Steps>)>)
                    });
                }
            }
            _ if !super::ffi::result::same_process() => std::mem::forget(keep),
            _ => drop(keep),
        }
    }
}
