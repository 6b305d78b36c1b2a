//! The host side of one device stream: tickets, held runs, completion.
//!
//! Shared by the GPU runtimes whose streams are driver queues (CUDA, HIP):
//! the runtime supplies a `DeviceStream` (queue work, ask whether the
//! stream is idle, record and query markers) and its encoded schedules
//! implement `HeldRun`; everything else is here.
//!
//! Every run gets a ticket (1, 2, ... in submission order). Runs go straight
//! to the driver, except behind a wait the GPU cannot be trusted with (see
//! `timeline::WaitPlan`): parked on the GPU, a wait for a value no queued
//! work will write holds a hardware queue that other streams share, and
//! anything that synchronises the device (freeing memory, loading a kernel
//! lazily, another library's `cudaDeviceSynchronize`) would block behind it
//! until the signal comes, or forever (measured on H100, CUDA 13). So the
//! rest of that run, and every later run on the stream, is held here and
//! sent by a worker thread once the wait can be decided. Every wait that
//! reaches the GPU therefore waits only for work already queued.
//!
//! Completion is learned without a driver call per run: `poll` asks whether
//! the stream is idle, and markers recorded every `CHECKPOINT_EVERY` runs
//! tell how far a busy stream has got. What a run uses (its encoded steps,
//! holding buffers, kernels, events and foreign owners) stays in `inflight`
//! until its ticket is known complete.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{lock, poll, release};
use crate::error::{Error, Result, Status};
use crate::hal;

/// A marker is recorded after every this many runs sent.
const CHECKPOINT_EVERY: u32 = 32;
/// Submitting polls for completion once this many runs are in flight, on
/// every `POLL_EVERY`th submission (a driver query per launch would cost
/// more than the launch's own bookkeeping).
const RETIRE_AT: usize = 64;
const POLL_EVERY: u64 = 16;

/// One driver stream, as the queue drives it.
pub trait DeviceStream: Send + Sync + 'static {
    /// A point recorded in the stream (a driver event), reused once reached.
    type Marker: Send + 'static;
    /// The name of the thread that sends held runs.
    const WORKER_NAME: &'static str;

    /// `Ok(true)` when everything sent has completed; an error means the
    /// device failed, and with it every run not known complete.
    fn is_idle(&self) -> Result<bool>;
    /// Records a marker after everything sent so far (reusing `spare`);
    /// `None` when that fails (completion is then learned by `is_idle`).
    fn mark(&self, spare: Option<Self::Marker>) -> Option<Self::Marker>;
    fn is_reached(&self, marker: &Self::Marker) -> bool;
    /// Called on the release thread after the queue is dropped: lets the
    /// stream's work finish before the stream and markers are freed.
    fn finish(&self);
}

/// An encoded schedule as a stream queues it, step by step.
pub trait HeldRun<S>: Send + Sync {
    /// Queues steps `from..` on `stream` and returns `None`, or stops at
    /// the first wait that cannot be decided yet and returns its index.
    /// `idle` tells whether everything sent before this call has completed.
    fn send(
        &self,
        stream: &S,
        from: usize,
        idle: &mut dyn FnMut() -> bool,
    ) -> Result<Option<usize>>;
    /// Blocks until the wait at step `at` can be decided; `true` when it
    /// then passes only once the stream has drained.
    fn wait_decidable(&self, at: usize) -> bool;
}

type Run<S> = Arc<dyn HeldRun<S>>;

/// The rest of a run, from a wait that could not be queued yet.
struct Held<S: DeviceStream> {
    run: Run<S>,
    from: usize,
    ticket: u64,
    /// The run's own steps that went to the driver before it was held
    /// (they belong to no ticket wholly sent, so `drained` misses them).
    sent: Sent<S::Marker>,
}

/// How far a held run's own sent steps reach.
enum Sent<M> {
    Nothing,
    /// Up to this marker, recorded after them.
    UpTo(M),
    /// Recording a marker failed: only an idle stream says they are done.
    Unmarked,
}

struct State<S: DeviceStream> {
    held: VecDeque<Held<S>>,
    submitted: u64,
    /// Tickets up to `sent` have wholly gone to the driver.
    sent: u64,
    worker: bool,
    /// What runs not yet known complete keep alive.
    inflight: VecDeque<(u64, Run<S>)>,
    /// Markers recorded after run `ticket`, oldest first; spares for reuse.
    checkpoints: VecDeque<(u64, S::Marker)>,
    spare_markers: Vec<S::Marker>,
    since_checkpoint: u32,
    /// Failures by ticket range (inclusive), until the stream is synchronised.
    failures: Vec<(u64, u64, Error)>,
}

impl<S: DeviceStream> Default for State<S> {
    fn default() -> Self {
        State {
            held: VecDeque::new(),
            submitted: 0,
            sent: 0,
            worker: false,
            inflight: VecDeque::new(),
            checkpoints: VecDeque::new(),
            spare_markers: Vec::new(),
            since_checkpoint: 0,
            failures: Vec::new(),
        }
    }
}

pub struct StreamQueue<S: DeviceStream> {
    stream: Arc<S>,
    state: Mutex<State<S>>,
    /// Tickets up to `completed` are done on the device.
    completed: AtomicU64,
    /// Signalled when `sent` or `completed` moves.
    progress: Condvar,
    /// Wakes an idle worker when a run is held.
    arrived: Condvar,
}

/// What completed runs kept alive, dropped by the caller with no lock held.
type Retired<S> = Vec<Run<S>>;

impl<S: DeviceStream> StreamQueue<S> {
    pub fn new(stream: S) -> Arc<Self> {
        Arc::new(StreamQueue {
            stream: Arc::new(stream),
            state: Mutex::new(State::default()),
            completed: AtomicU64::new(0),
            progress: Condvar::new(),
            arrived: Condvar::new(),
        })
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        lock(&self.state)
    }

    /// Whether everything sent to the driver so far has completed.
    fn drained(&self, st: &State<S>) -> bool {
        self.completed.load(Ordering::Acquire) >= st.sent
    }

    /// Queues a run and returns its ticket.
    pub fn submit(self: &Arc<Self>, run: Run<S>) -> Result<u64> {
        let mut retired = Retired::new();
        let result = self.submit_locked(run, &mut retired);
        drop(retired);
        result
    }

    fn submit_locked(self: &Arc<Self>, run: Run<S>, retired: &mut Retired<S>) -> Result<u64> {
        let mut st = self.lock();
        if st.inflight.len() >= RETIRE_AT && st.submitted.is_multiple_of(POLL_EVERY) {
            self.poll_locked(&mut st, retired);
        }
        st.submitted += 1;
        let ticket = st.submitted;
        st.inflight.push_back((ticket, run.clone()));
        let from = if st.held.is_empty() {
            // Asked only by a wait the host already satisfied (it passes on
            // an idle stream): one query then, none on the plain path.
            let mut idle = || {
                if !self.drained(&st) {
                    self.poll_locked(&mut st, retired);
                }
                self.drained(&st)
            };
            match run.send(&self.stream, 0, &mut idle) {
                Ok(None) => {
                    st.sent = ticket;
                    self.after_sent(&mut st, ticket);
                    return Ok(ticket);
                }
                Ok(Some(i)) => i,
                Err(e) => {
                    // What did go to the driver completes as usual.
                    st.sent = ticket;
                    return Err(e);
                }
            }
        } else {
            0
        };
        let sent = if from > 0 {
            self.mark_sent(&mut st)
        } else {
            Sent::Nothing
        };
        st.held.push_back(Held {
            run,
            from,
            ticket,
            sent,
        });
        if !st.worker {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name(S::WORKER_NAME.into())
                .spawn(move || me.work());
            match spawned {
                Ok(_) => st.worker = true,
                Err(e) => {
                    st.held.pop_back();
                    st.sent = ticket;
                    return Err(Error::new(
                        Status::DriverError,
                        format!("cannot start a thread for a held run: {e}"),
                    ));
                }
            }
        }
        self.arrived.notify_one();
        Ok(ticket)
    }

    /// Bookkeeping once run `ticket` has wholly gone to the driver.
    fn after_sent(&self, st: &mut State<S>, ticket: u64) {
        st.since_checkpoint += 1;
        if st.since_checkpoint < CHECKPOINT_EVERY {
            return;
        }
        st.since_checkpoint = 0;
        let spare = st.spare_markers.pop();
        if let Some(marker) = self.stream.mark(spare) {
            st.checkpoints.push_back((ticket, marker));
        }
    }

    /// Learns how far the device has got, and moves what completed runs
    /// kept alive into `retired`.
    fn poll_locked(&self, st: &mut State<S>, retired: &mut Retired<S>) {
        let sent = st.sent;
        let reached = match self.stream.is_idle() {
            Ok(true) => sent,
            Ok(false) => {
                let mut reached = self.completed.load(Ordering::Acquire);
                while let Some((t, m)) = st.checkpoints.front() {
                    if !self.stream.is_reached(m) {
                        break;
                    }
                    reached = reached.max(*t);
                    if let Some((_, m)) = st.checkpoints.pop_front() {
                        st.spare_markers.push(m);
                    }
                }
                reached
            }
            Err(mut e) => {
                // The device failed (a kernel faulted): every run not known
                // complete failed, and nothing more will complete.
                let from = self.completed.load(Ordering::Acquire) + 1;
                e.message = format!("a run on this stream failed: {}", e.message);
                if from <= sent {
                    st.failures.push((from, sent, e));
                }
                sent
            }
        };
        if reached > self.completed.load(Ordering::Acquire) {
            self.completed.store(reached, Ordering::Release);
            while st.inflight.front().is_some_and(|(t, _)| *t <= reached) {
                if let Some((_, run)) = st.inflight.pop_front() {
                    retired.push(run);
                }
            }
            self.progress.notify_all();
        }
    }

    /// Polls once; returns whether `ticket` is complete.
    fn poll(&self, ticket: u64) -> bool {
        let mut retired = Retired::new();
        let done = {
            let mut st = self.lock();
            if st.sent >= ticket {
                self.poll_locked(&mut st, &mut retired);
            }
            self.completed.load(Ordering::Acquire) >= ticket
        };
        drop(retired);
        done
    }

    /// The worker: waits until the first held run's wait can be decided,
    /// sends what it can, and repeats. It stays a while once nothing is
    /// held, so a pipeline that holds a run every iteration does not pay for
    /// a new thread each time.
    fn work(self: Arc<Self>) {
        const IDLE: Duration = Duration::from_secs(1);
        loop {
            let (run, from) = {
                let mut st = self.lock();
                let idle_since = Instant::now();
                while st.held.is_empty() && idle_since.elapsed() < IDLE {
                    st = self
                        .arrived
                        .wait_timeout(st, IDLE)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                match st.held.front() {
                    Some(h) => (h.run.clone(), h.from),
                    None => {
                        st.worker = false;
                        self.progress.notify_all();
                        return;
                    }
                }
            };
            if run.wait_decidable(from) {
                // The wait passes if it executes now: first let everything
                // before it in the stream finish (bounded: only work whose
                // waits are on queued signals is on the GPU), the run's own
                // steps sent before it was held included (a host signal
                // that resets the event waited on, say).
                let target = self.lock().sent;
                self.wait_device(target, None);
                poll::poll_until(None, poll::GPU_BUSY, || {
                    let st = self.lock();
                    st.held.front().is_none_or(|h| self.sent_done(&h.sent))
                });
            }
            let mut retired = Retired::new();
            let mut st = self.lock();
            let result = {
                let mut idle = || {
                    if !self.drained(&st) {
                        self.poll_locked(&mut st, &mut retired);
                    }
                    self.drained(&st) && st.held.front().is_none_or(|h| self.sent_done(&h.sent))
                };
                run.send(&self.stream, from, &mut idle)
            };
            match result {
                Ok(Some(next)) => {
                    let sent = (next > from).then(|| self.mark_sent(&mut st));
                    if let Some(h) = st.held.front_mut() {
                        h.from = next;
                        if let Some(sent) = sent {
                            let old = std::mem::replace(&mut h.sent, sent);
                            if let Sent::UpTo(m) = old {
                                st.spare_markers.push(m);
                            }
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    if let Some(h) = st.held.pop_front() {
                        st.sent = h.ticket;
                        if let Sent::UpTo(m) = h.sent {
                            st.spare_markers.push(m);
                        }
                        if let Err(e) = result {
                            // Reported to this run's waiter, and queued as a
                            // log record (the binding emits it outside locks).
                            log::error!("queueing a held run failed: {}", e.message);
                            st.failures.push((h.ticket, h.ticket, e));
                        }
                        self.after_sent(&mut st, h.ticket);
                    }
                    self.poll_locked(&mut st, &mut retired);
                    self.progress.notify_all();
                }
            }
            drop(st);
            drop(retired);
        }
    }

    /// A marker after the steps a held run has sent so far.
    fn mark_sent(&self, st: &mut State<S>) -> Sent<S::Marker> {
        match self.stream.mark(st.spare_markers.pop()) {
            Some(m) => Sent::UpTo(m),
            None => Sent::Unmarked,
        }
    }

    /// Whether a held run's own sent steps have completed (a failed device
    /// counts as done: nothing more will complete, and `poll_locked`
    /// reports the failure).
    fn sent_done(&self, sent: &Sent<S::Marker>) -> bool {
        match sent {
            Sent::Nothing => true,
            Sent::UpTo(m) => self.stream.is_reached(m) || self.stream.is_idle().is_err(),
            Sent::Unmarked => self.stream.is_idle().unwrap_or(true),
        }
    }

    /// Waits until `ticket` has gone to the driver and completed there
    /// (`false` once `deadline` passed first).
    fn wait_device(&self, ticket: u64, deadline: Option<Instant>) -> bool {
        {
            let mut st = self.lock();
            while st.sent < ticket {
                st = match deadline {
                    None => self.progress.wait(st).unwrap_or_else(|e| e.into_inner()),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return false;
                        }
                        self.progress
                            .wait_timeout(st, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
            }
        }
        poll::poll_until(deadline, poll::GPU_BUSY, || {
            self.completed.load(Ordering::Acquire) >= ticket || self.poll(ticket)
        })
    }

    /// Everything submitted so far is done; reports the failures of runs
    /// whose own waiters did not take them.
    pub fn synchronize(&self, deadline: Option<Instant>) -> Result<bool> {
        let ticket = self.lock().submitted;
        if !self.wait_device(ticket, deadline) {
            return Ok(false);
        }
        let mut st = self.lock();
        let failures = std::mem::take(&mut st.failures);
        match failures.into_iter().next() {
            Some((_, _, e)) => Err(e),
            None => Ok(true),
        }
    }

    /// Retires what completed runs keep alive, after waiting up to
    /// `timeout` for the work already sent to the driver.
    pub fn reclaim(&self, timeout: Duration) {
        let target = self.lock().sent;
        self.wait_device(target, Some(Instant::now() + timeout));
    }
}

impl<S: DeviceStream> hal::Submissions for StreamQueue<S> {
    fn is_complete(&self, ticket: u64) -> bool {
        self.completed.load(Ordering::Acquire) >= ticket
    }

    fn wait(&self, ticket: u64, timeout: Duration) -> bool {
        if timeout.is_zero() {
            // A poll: no clock read.
            return self.is_complete(ticket) || self.poll(ticket);
        }
        self.wait_device(ticket, Some(Instant::now() + timeout))
    }

    fn take_failure(&self, ticket: u64) -> Option<Error> {
        let st = self.lock();
        st.failures
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&ticket))
            .map(|(_, _, e)| e.clone())
    }
}

impl<S: DeviceStream> Drop for StreamQueue<S> {
    fn drop(&mut self) {
        // The worker holds the queue, so nothing is held any more. Runs in
        // flight keep their resources until the stream is done with them.
        let st = std::mem::take(self.state.get_mut().unwrap_or_else(|e| e.into_inner()));
        let stream = self.stream.clone();
        release::defer(Box::new(move || {
            stream.finish();
            drop(st.checkpoints);
            drop(st.spare_markers);
            drop(stream);
            drop(st.inflight);
        }));
    }
}
