//! Events as timeline semaphores, and streams.
//!
//! # Events: epochs
//!
//! A nexus event is a 64-bit value that `signal(v)` *sets*: the host may
//! lower it (a reset) and a schedule may signal the same value on every
//! run. A Vulkan timeline semaphore only ever increases, and signalling a
//! value not above its current one is invalid. So an event is a chain of
//! epochs, each a timeline semaphore holding `value + 1` once the epoch has
//! started (a fresh epoch made for the GPU starts at 0, "not started"):
//!
//! - a signal command of `v` signals `v + 1` on the newest epoch when that
//!   is above everything already planned there, else on a fresh epoch
//!   (which starts when that signal executes);
//! - a host `signal(v)` sets the newest epoch when nothing is pending on
//!   it and `v + 1` is above its value, else starts a fresh epoch at
//!   `v + 1` at once (CUDA's epochs after a host store, likewise);
//! - the event's value is that of the newest started epoch; older epochs
//!   are forgotten once a newer one has started (runs that still name
//!   them keep them alive until they complete).
//!
//! A wait command is decided when its stream's submitter reaches it: if a
//! signal reaching the value was submitted on the newest epoch (or the host
//! set it there), it becomes a GPU semaphore wait in the same submission
//! batch, with no host round trip; otherwise the submitter holds the rest
//! of the run, and later runs of its stream, on the host until a host
//! signal or another stream's submitted signal makes it decidable. A GPU
//! wait is thus only ever submitted after the signal it waits for, so a
//! wait never blocks the shared queue. As on CUDA, a GPU signal queued
//! before a host `signal()` and executing after it does not change the
//! value the host set.
//!
//! Every change of an event rings its bell (a host-only timeline
//! semaphore), which host waiters and held submitters wait on together
//! with the semaphore they expect.
//!
//! # Streams
//!
//! A stream is an in-order queue of runs over the device's one queue, with
//! a timeline semaphore (`progress`) whose value is the last completed
//! ticket: each run's last batch signals its ticket. The stream keeps what
//! each run uses (the encoded schedule, the epochs it names) until its
//! ticket completes.
//!
//! A run without wait commands, queued while nothing of its stream is held
//! or being submitted, is submitted by the calling thread under the
//! stream's lock (it never blocks: no wait to decide), so a run costs one
//! `vkQueueSubmit` and no thread hop. Runs with wait commands, and runs
//! queued behind them, go to the stream's submitter thread (started on
//! first need), which may hold them on the host until their waits can be
//! decided. At most one of the two submits at a time (`busy`), so stream
//! order holds. The submitter thread also frees what finished non-blocking
//! runs kept; a blocking caller frees its own run once it has waited.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::ffi;
use super::schedule::{Encoded, EventStep, Step};
use super::Gpu;
use crate::backends::common::{self, lock};
use crate::error::{Error, Result, Status};
use crate::hal::{self, Submissions};

/// One epoch of an event (see the module documentation).
pub(super) struct Epoch {
    pub(super) sem: ffi::Semaphore,
    /// Highest value planned on `sem` (signals recorded by submitters, or set
    /// by the host).
    reserved: AtomicU64,
    /// Highest value signalled on `sem` by a submission already made (or by
    /// the host): a wait may rely on it.
    queued: AtomicU64,
}

struct EventState {
    /// Oldest first; never empty.
    epochs: Vec<Arc<Epoch>>,
    /// Times the bell rang.
    rings: u64,
}

pub struct VkEvent {
    gpu: Arc<Gpu>,
    state: Mutex<EventState>,
    bell: ffi::Semaphore,
}

fn raw_value(value: u64) -> Result<u64> {
    value.checked_add(1).ok_or_else(|| {
        Error::new(
            Status::InvalidValue,
            format!("event value {value} is too large for a Vulkan event (at most 2**64 - 2)"),
        )
    })
}

impl VkEvent {
    pub fn new(gpu: &Arc<Gpu>) -> Result<VkEvent> {
        let first = Epoch {
            sem: ffi::Semaphore::new(&gpu.dev, 1)?,
            reserved: AtomicU64::new(1),
            queued: AtomicU64::new(1),
        };
        Ok(VkEvent {
            gpu: gpu.clone(),
            state: Mutex::new(EventState {
                epochs: vec![Arc::new(first)],
                rings: 0,
            }),
            bell: ffi::Semaphore::new(&gpu.dev, 0)?,
        })
    }

    fn ring(&self, st: &mut EventState) {
        st.rings += 1;
        if let Err(e) = self.bell.signal(st.rings) {
            log::warn!("vulkan: event bell: {e}");
        }
    }

    fn newest(st: &EventState) -> &Arc<Epoch> {
        // `epochs` is never empty (see EventState).
        &st.epochs[st.epochs.len() - 1]
    }

    /// The value now, pruning epochs older than the newest started one.
    fn current(st: &mut EventState) -> Result<u64> {
        for i in (0..st.epochs.len()).rev() {
            let v = st.epochs[i].sem.value()?;
            if v >= 1 {
                st.epochs.drain(..i);
                return Ok(v - 1);
            }
        }
        Ok(0)
    }

    /// Plans a signal command of `value` at submission: the epoch and the
    /// semaphore value to signal. `queued` is raised by `submitted` once
    /// the batch is on the queue.
    pub(super) fn plan_signal(&self, value: u64) -> Result<(Arc<Epoch>, u64)> {
        let raw = raw_value(value)?;
        let mut st = lock(&self.state);
        let newest = Self::newest(&st).clone();
        if newest.reserved.load(Ordering::Acquire) < raw {
            newest.reserved.store(raw, Ordering::Release);
            return Ok((newest, raw));
        }
        let epoch = Arc::new(Epoch {
            sem: ffi::Semaphore::new(&self.gpu.dev, 0)?,
            reserved: AtomicU64::new(raw),
            queued: AtomicU64::new(0),
        });
        st.epochs.push(epoch.clone());
        Ok((epoch, raw))
    }

    /// A planned signal is on the queue: waits may now rely on it.
    pub(super) fn submitted(&self, epoch: &Epoch, raw: u64) {
        let mut st = lock(&self.state);
        epoch.queued.fetch_max(raw, Ordering::AcqRel);
        self.ring(&mut st);
    }

    /// A wait command of `value` at submission: `Ok((epoch, raw))` to wait
    /// for on the GPU, or `Err(rings)` when it cannot be decided yet (wait
    /// for the bell to pass `rings`).
    pub(super) fn plan_wait(
        &self,
        value: u64,
    ) -> Result<std::result::Result<(Arc<Epoch>, u64), u64>> {
        let raw = raw_value(value)?;
        let st = lock(&self.state);
        let newest = Self::newest(&st);
        if newest.queued.load(Ordering::Acquire) >= raw {
            Ok(Ok((newest.clone(), raw)))
        } else {
            Ok(Err(st.rings))
        }
    }

    /// Waits up to `timeout` for the bell to pass `rings`.
    pub(super) fn wait_bell(&self, rings: u64, timeout: Duration) -> Result<bool> {
        ffi::Semaphore::wait_any(&[(&self.bell, rings + 1)], timeout)
    }
}

impl hal::Event for VkEvent {
    fn signal(&self, value: u64) -> Result<()> {
        let raw = raw_value(value)?;
        let mut st = lock(&self.state);
        let newest = Self::newest(&st).clone();
        let now = newest.sem.value()?;
        let reserved = newest.reserved.load(Ordering::Acquire);
        if now >= 1 && now == reserved && raw > now {
            newest.sem.signal(raw)?;
            newest.reserved.store(raw, Ordering::Release);
            newest.queued.store(raw, Ordering::Release);
        } else {
            let epoch = Arc::new(Epoch {
                sem: ffi::Semaphore::new(&self.gpu.dev, raw)?,
                reserved: AtomicU64::new(raw),
                queued: AtomicU64::new(raw),
            });
            // The host's value supersedes every earlier epoch.
            st.epochs.clear();
            st.epochs.push(epoch);
        }
        self.ring(&mut st);
        Ok(())
    }

    fn value(&self) -> Result<u64> {
        Self::current(&mut lock(&self.state))
    }

    fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<bool> {
        let raw = raw_value(value)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let (rings, target) = {
                let mut st = lock(&self.state);
                if Self::current(&mut st)? >= value {
                    return Ok(true);
                }
                let newest = Self::newest(&st);
                let target = (newest.queued.load(Ordering::Acquire) >= raw).then(|| newest.clone());
                (st.rings, target)
            };
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    left.min(Duration::from_secs(1))
                }
                None => Duration::from_secs(1),
            };
            let mut sems = vec![(&self.bell, rings + 1)];
            if let Some(t) = &target {
                sems.push((&t.sem, raw));
            }
            ffi::Semaphore::wait_any(&sems, slice)?;
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A run handed to a stream's submitter.
struct Job {
    ticket: u64,
    schedule: Arc<Encoded>,
}

/// A run on the queue, kept until its ticket completes.
struct Inflight {
    ticket: u64,
    _schedule: Arc<Encoded>,
    _epochs: Vec<Arc<Epoch>>,
}

struct StreamState {
    /// The process that first used the stream (a forked child may not).
    owner_pid: Option<u32>,
    /// Whether the submitter thread was started.
    worker: bool,
    /// Whether the submitter thread waits for work with no timeout (a
    /// non-blocking direct run wakes it to free what the run keeps).
    parked: bool,
    /// Whether the submitter thread is submitting a popped job (the caller
    /// must then queue behind it).
    busy: bool,
    jobs: VecDeque<Job>,
    submitted: u64,
    inflight: VecDeque<Inflight>,
    closing: bool,
    failures: BTreeMap<u64, Error>,
}

pub(crate) struct StreamShared {
    gpu: Arc<Gpu>,
    /// The last completed ticket.
    progress: ffi::Semaphore,
    /// Points the host waits for before a host step (`host_point` is the
    /// last value handed out); made on the first host step.
    host_points: OnceLock<ffi::Semaphore>,
    host_point: AtomicU64,
    /// Completed tickets as last read (never ahead of the device).
    completed: AtomicU64,
    /// Tickets the device will never signal (the device was lost).
    abandoned: AtomicU64,
    any_failure: AtomicBool,
    state: Mutex<StreamState>,
    work: Condvar,
}

/// An in-order queue of runs, submitted by its own thread (started on
/// first use) to the device's queue.
pub struct VkStream {
    pub(crate) shared: Arc<StreamShared>,
}

impl VkStream {
    pub fn new(gpu: &Arc<Gpu>) -> Result<VkStream> {
        Ok(VkStream {
            shared: Arc::new(StreamShared {
                gpu: gpu.clone(),
                progress: ffi::Semaphore::new(&gpu.dev, 0)?,
                host_points: OnceLock::new(),
                host_point: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
                any_failure: AtomicBool::new(false),
                state: Mutex::new(StreamState {
                    owner_pid: None,
                    worker: false,
                    parked: false,
                    busy: false,
                    jobs: VecDeque::new(),
                    submitted: 0,
                    inflight: VecDeque::new(),
                    closing: false,
                    failures: BTreeMap::new(),
                }),
                work: Condvar::new(),
            }),
        })
    }

    /// Queues a run; returns its ticket. `blocking`: the caller waits for
    /// it at once (and then frees what it keeps, see `Submissions::wait`).
    pub(super) fn submit(&self, schedule: Arc<Encoded>, blocking: bool) -> Result<u64> {
        let shared = &self.shared;
        let done = shared.read_completed();
        let mut st = lock(&shared.state);
        let pid = crate::process::id();
        match st.owner_pid {
            Some(p) if p != pid => {
                return Err(Error::new(
                    Status::InvalidStream,
                    "a Vulkan stream cannot be used in a process forked after it was used (use the 'spawn' start method)",
                ))
            }
            Some(_) => {}
            None => st.owner_pid = Some(pid),
        }
        // Dropped after the lock (see the end).
        let finished = take_finished(&mut st, done);
        st.submitted += 1;
        let ticket = st.submitted;
        let job = Job { ticket, schedule };
        if st.jobs.is_empty() && !st.busy && !job.schedule.may_block {
            // Direct: everything earlier on the stream is already on the
            // device queue, and this run cannot block (no wait command).
            let mut epochs = Vec::new();
            if let Err(e) = shared.execute(&job, &mut epochs) {
                shared.complete_failed(&mut st, job.ticket, e);
            }
            st.inflight.push_back(Inflight {
                ticket: job.ticket,
                _schedule: job.schedule,
                _epochs: epochs,
            });
            let mut wake = false;
            if !blocking {
                // Nobody waits for it now: the submitter frees it later.
                if st.worker {
                    wake = st.parked;
                } else if let Err(e) = start_worker(shared, &mut st) {
                    // The run is on the queue already: it is freed by the
                    // stream's next submission or wait instead.
                    log::warn!("{e}");
                }
            }
            drop(st);
            if wake {
                shared.work.notify_all();
            }
        } else {
            let started = if st.worker {
                Ok(())
            } else {
                start_worker(shared, &mut st)
            };
            if started.is_ok() {
                st.jobs.push_back(job);
            } else {
                // Nothing will complete the ticket: it was never issued.
                st.submitted -= 1;
            }
            drop(st);
            drop(finished);
            started?;
            shared.work.notify_all();
            return Ok(ticket);
        }
        drop(finished);
        Ok(ticket)
    }

    /// Frees what finished runs kept.
    pub(super) fn retire(&self) {
        self.shared.retire();
    }

    fn synchronize_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let ticket = lock(&self.shared.state).submitted;
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
        let mut st = lock(&self.shared.state);
        let first = st.failures.keys().next().copied();
        let result = match first.filter(|t| *t <= ticket) {
            Some(t) => {
                let e = st.failures.remove(&t);
                st.failures.retain(|k, _| *k > ticket);
                e.map_or(Ok(true), Err)
            }
            None => Ok(true),
        };
        self.shared
            .any_failure
            .store(!st.failures.is_empty(), Ordering::Release);
        result
    }
}

impl Drop for VkStream {
    fn drop(&mut self) {
        // The submitter finishes what was queued, then exits.
        lock(&self.shared.state).closing = true;
        self.shared.work.notify_all();
    }
}

impl hal::Stream for VkStream {
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

impl StreamShared {
    fn read_completed(&self) -> u64 {
        let device = self.progress.value().unwrap_or(0);
        let v = device.max(self.abandoned.load(Ordering::Acquire));
        self.completed.fetch_max(v, Ordering::AcqRel);
        self.completed.load(Ordering::Acquire)
    }

    fn retire(&self) {
        let done = self.read_completed();
        let finished = take_finished(&mut lock(&self.state), done);
        drop(finished);
    }

    /// `retire` unless the stream's lock is taken: for waiters, which may
    /// be called with other locks held (`try_lock` cannot deadlock).
    fn try_retire(&self, done: u64) {
        let finished = match self.state.try_lock() {
            Ok(mut st) => take_finished(&mut st, done),
            Err(_) => return,
        };
        drop(finished);
    }

    /// Run `ticket` failed with `e`: records the failure and still
    /// completes the ticket, after the work before it.
    fn complete_failed(&self, st: &mut StreamState, ticket: u64, e: Error) {
        st.failures.insert(ticket, e);
        self.any_failure.store(true, Ordering::Release);
        let signalled = self.gpu.dev.submit(&[ffi::Batch {
            waits: Vec::new(),
            commands: Vec::new(),
            signals: vec![(&self.progress, ticket)],
        }]);
        if signalled.is_err() {
            self.abandoned.fetch_max(ticket, Ordering::AcqRel);
        }
    }

    /// The semaphore of host points, made on first use (only the stream's
    /// submitter thread runs host steps).
    fn host_points(&self) -> Result<&ffi::Semaphore> {
        if let Some(points) = self.host_points.get() {
            return Ok(points);
        }
        let made = ffi::Semaphore::new(&self.gpu.dev, 0)?;
        Ok(self.host_points.get_or_init(|| made))
    }

    /// Submits one run (see the module documentation); returns the epochs
    /// its batches name.
    fn execute(&self, job: &Job, epochs: &mut Vec<Arc<Epoch>>) -> Result<()> {
        #[derive(Default)]
        struct Pending {
            waits: Vec<(Arc<Epoch>, u64)>,
            commands: Vec<ffi::vk::CommandBuffer>,
            signals: Vec<(Arc<Epoch>, u64, usize)>,
            /// A value of `host_points` to signal (a host step follows).
            host_point: Option<u64>,
        }
        let steps = &job.schedule.steps;
        let mut batches: Vec<Pending> = Vec::new();
        let mut current = Pending::default();
        // Submits what is planned; `last` adds the ticket's signal.
        let flush = |batches: &mut Vec<Pending>, last: bool| -> Result<()> {
            let mut list: Vec<ffi::Batch> = batches
                .iter()
                .map(|b| ffi::Batch {
                    waits: b.waits.iter().map(|(e, v)| (&e.sem, *v)).collect(),
                    commands: b.commands.clone(),
                    signals: b
                        .signals
                        .iter()
                        .map(|(e, v, _)| (&e.sem, *v))
                        .chain(
                            b.host_point
                                .and_then(|v| Some((self.host_points.get()?, v))),
                        )
                        .collect(),
                })
                .collect();
            if last {
                if list.is_empty() {
                    list.push(ffi::Batch::default());
                }
                if let Some(b) = list.last_mut() {
                    b.signals.push((&self.progress, job.ticket));
                }
            }
            if list.is_empty() {
                return Ok(());
            }
            self.gpu.dev.submit(&list)?;
            for b in batches.iter() {
                for (epoch, raw, step) in &b.signals {
                    if let Step::Event {
                        kind: EventStep::Signal,
                        event,
                        ..
                    } = &steps[*step]
                    {
                        event_of(event)?.submitted(epoch, *raw);
                    }
                }
            }
            batches.clear();
            Ok(())
        };
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Gpu(cb) => current.commands.push(cb.raw()),
                Step::Event {
                    kind: EventStep::Signal,
                    event,
                    value,
                } => {
                    let (epoch, raw) = event_of(event)?.plan_signal(*value)?;
                    epochs.push(epoch.clone());
                    current.signals.push((epoch, raw, i));
                    batches.push(std::mem::take(&mut current));
                }
                Step::Event {
                    kind: EventStep::Wait,
                    event,
                    value,
                } => {
                    if !current.commands.is_empty() || !current.waits.is_empty() {
                        batches.push(std::mem::take(&mut current));
                    }
                    flush(&mut batches, false)?;
                    let ev = event_of(event)?;
                    loop {
                        match ev.plan_wait(*value)? {
                            Ok((epoch, raw)) => {
                                epochs.push(epoch.clone());
                                current.waits.push((epoch, raw));
                                break;
                            }
                            // Held on the host until the event changes.
                            Err(rings) => {
                                ev.wait_bell(rings, Duration::from_secs(1))?;
                            }
                        }
                    }
                }
                // HostSignal or HostWait.
                Step::Event { kind, event, value } => {
                    // The step executes after everything before it: submit
                    // that with a host point, and wait for the point.
                    let points = self.host_points()?;
                    let point = self.host_point.fetch_add(1, Ordering::AcqRel) + 1;
                    current.host_point = Some(point);
                    batches.push(std::mem::take(&mut current));
                    flush(&mut batches, false)?;
                    while !ffi::Semaphore::wait_any(&[(points, point)], Duration::from_secs(1))? {}
                    if *kind == EventStep::HostSignal {
                        event.signal(*value)?;
                    } else {
                        common::timeline::wait_for_foreign(event.as_ref(), *value);
                    }
                }
            }
        }
        batches.push(current);
        flush(&mut batches, true)
    }
}

/// Starts the stream's submitter thread.
fn start_worker(shared: &Arc<StreamShared>, st: &mut StreamState) -> Result<()> {
    let s = shared.clone();
    std::thread::Builder::new()
        .name("nexus-vulkan-stream".into())
        .spawn(move || worker(s))
        .map_err(|e| {
            Error::new(
                Status::InvalidStream,
                format!("Vulkan stream: cannot start its submitter thread: {e}"),
            )
        })?;
    st.worker = true;
    Ok(())
}

/// Moves out the runs whose tickets are `<= done` (the caller drops them
/// after releasing the stream's lock: dropping frees device objects).
fn take_finished(st: &mut StreamState, done: u64) -> Vec<Inflight> {
    let mut out = Vec::new();
    while st.inflight.front().is_some_and(|r| r.ticket <= done) {
        if let Some(r) = st.inflight.pop_front() {
            out.push(r);
        }
    }
    out
}

/// Whether `event` is a Vulkan event of `gpu` (others are signalled and
/// waited for on the host).
pub(super) fn is_event_of(event: &Arc<dyn hal::Event>, gpu: &Arc<Gpu>) -> bool {
    event
        .as_any()
        .downcast_ref::<VkEvent>()
        .is_some_and(|e| Arc::ptr_eq(&e.gpu, gpu))
}

fn event_of(event: &Arc<dyn hal::Event>) -> Result<&VkEvent> {
    common::downcast::<VkEvent>(
        event.as_any(),
        Status::InvalidEvent,
        || "event".into(),
        "Vulkan",
    )
}

fn worker(shared: Arc<StreamShared>) {
    loop {
        let job = {
            let mut st = lock(&shared.state);
            loop {
                if let Some(job) = st.jobs.pop_front() {
                    st.busy = true;
                    break Some(job);
                }
                if st.closing && st.inflight.is_empty() {
                    break None;
                }
                // With runs in flight, wake now and then to free what they
                // kept once they complete.
                st = if st.inflight.is_empty() {
                    st.parked = true;
                    let mut st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
                    st.parked = false;
                    st
                } else {
                    drop(st);
                    shared.retire();
                    let st = lock(&shared.state);
                    if !st.jobs.is_empty() || st.inflight.is_empty() {
                        st
                    } else {
                        shared
                            .work
                            .wait_timeout(st, Duration::from_millis(2))
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
            }
        };
        let Some(job) = job else { return };
        let mut epochs = Vec::new();
        let failed = shared.execute(&job, &mut epochs).err();
        {
            let mut st = lock(&shared.state);
            if let Some(e) = failed {
                shared.complete_failed(&mut st, job.ticket, e);
            }
            st.inflight.push_back(Inflight {
                ticket: job.ticket,
                _schedule: job.schedule,
                _epochs: epochs,
            });
            st.busy = false;
        }
        shared.retire();
    }
}

/// How long a waiter polls the stream's progress (yielding) before it
/// blocks: a short run completes within it and is seen without the
/// wake-up of a blocking wait, a futex hop from the driver's queue thread.
/// lavapipe on 2 cores, empty-kernel round trip, medians of 3-4
/// processes: 54 us without spinning, 38 us at 30 us of spin, 29 us at
/// 100, 300 and 1000 us (the caller yields, so the driver's threads still
/// get the cores); a longer run costs the waiter this much CPU, once.
const SPIN: Duration = Duration::from_micros(100);

impl StreamShared {
    fn wait_inner(&self, ticket: u64, timeout: Duration) -> bool {
        if self.completed.load(Ordering::Acquire) >= ticket {
            return true;
        }
        let start = Instant::now();
        let spin = SPIN.min(timeout);
        loop {
            if self.read_completed() >= ticket {
                return true;
            }
            if start.elapsed() >= spin {
                break;
            }
            std::thread::yield_now();
        }
        let deadline = start + timeout;
        loop {
            if self.abandoned.load(Ordering::Acquire) >= ticket {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(Duration::from_millis(500));
            match ffi::Semaphore::wait_any(&[(&self.progress, ticket)], slice) {
                Ok(true) => {
                    self.read_completed();
                    return true;
                }
                Ok(false) if left.is_zero() => return false,
                Ok(false) => {}
                Err(_) => {
                    self.abandoned.fetch_max(ticket, Ordering::AcqRel);
                    return true;
                }
            }
        }
    }
}

impl hal::Submissions for StreamShared {
    fn is_complete(&self, ticket: u64) -> bool {
        self.completed.load(Ordering::Acquire) >= ticket || self.read_completed() >= ticket
    }

    fn wait(&self, ticket: u64, timeout: Duration) -> bool {
        let done = self.wait_inner(ticket, timeout);
        if done {
            self.try_retire(self.completed.load(Ordering::Acquire));
        }
        done
    }

    fn take_failure(&self, ticket: u64) -> Option<Error> {
        if !self.any_failure.load(Ordering::Acquire) {
            return None;
        }
        let mut st = lock(&self.state);
        let e = st.failures.remove(&ticket);
        self.any_failure
            .store(!st.failures.is_empty(), Ordering::Release);
        e
    }
}

/// The fence of run `ticket` on `stream`.
pub(super) fn fence(stream: &VkStream, ticket: u64) -> hal::Fence {
    hal::Fence {
        queue: stream.shared.clone(),
        ticket,
    }
}
