//! Events (`MTLSharedEvent` epochs, see `logic::Chain`) and streams (one
//! `MTLCommandQueue` each, driven by `common::queue`).
//!
//! A wait command becomes `encodeWaitForEvent:value:` only once a committed
//! command buffer (or the host) sets the event's newest epoch to the value;
//! until then the stream's queue holds the rest of the run on the host and
//! its worker waits on the event's bell, which host signals, committed
//! signals and Metal's listener ring. So no GPU wait ever waits for work
//! that is not yet committed, and a wait never blocks other queues.
//!
//! Completion: each run is one or more command buffers, committed in
//! order; `MtlStream` keeps them until they are finished and reports a
//! failed one (status Error) as a nexus error of the runs not yet known
//! complete, once every buffer committed before has finished.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::logic::{self, Chain, Epoch};
use super::{ffi, Gpu};
use crate::backends::common::queue::{DeviceStream, StreamQueue};
use crate::backends::common::{self, lock};
use crate::error::{Error, Result, Status};
use crate::hal;

/// Rung whenever an event may have changed; waiters re-check then.
#[derive(Default)]
pub(crate) struct Bell {
    rings: Mutex<u64>,
    moved: Condvar,
}

impl Bell {
    pub fn ring(&self) {
        let mut r = lock(&self.rings);
        *r = r.wrapping_add(1);
        self.moved.notify_all();
    }

    pub fn rings(&self) -> u64 {
        *lock(&self.rings)
    }

    /// Waits up to `timeout` for a ring after `seen`.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let r = lock(&self.rings);
        if *r == seen {
            let _ = self.moved.wait_timeout(r, timeout);
        }
    }
}

pub struct MtlEvent {
    gpu: Arc<Gpu>,
    chain: Mutex<Chain<ffi::SharedEvent>>,
    bell: Arc<Bell>,
}

impl MtlEvent {
    pub fn new(gpu: &Arc<Gpu>) -> Result<MtlEvent> {
        Ok(MtlEvent {
            gpu: gpu.clone(),
            chain: Mutex::new(Chain::new(gpu.new_event(1)?)),
            bell: Arc::new(Bell::default()),
        })
    }

    /// Plans a signal command at encode time (see `logic::Chain`).
    pub(super) fn plan_signal(&self, value: u64) -> Result<(Arc<Epoch<ffi::SharedEvent>>, u64)> {
        lock(&self.chain).plan_signal(value, || self.gpu.new_event(0))
    }

    /// The command buffer holding a planned signal is committed.
    pub(super) fn committed(&self, epoch: &Epoch<ffi::SharedEvent>, raw: u64) {
        Chain::committed(epoch, raw);
        self.bell.ring();
    }

    pub(super) fn plan_wait(
        &self,
        value: u64,
    ) -> Result<Option<(Arc<Epoch<ffi::SharedEvent>>, u64)>> {
        lock(&self.chain).plan_wait(value)
    }

    /// Blocks until a wait for `value` can be planned (`plan_wait` gives
    /// `Some`).
    pub(super) fn wait_plannable(&self, value: u64) {
        loop {
            let seen = self.bell.rings();
            match self.plan_wait(value) {
                Ok(None) => self.bell.wait(seen, Duration::from_millis(50)),
                // Decided, or an error the next `send` reports.
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }
}

impl hal::Event for MtlEvent {
    fn signal(&self, value: u64) -> Result<()> {
        lock(&self.chain).host_signal(value, |raw| self.gpu.new_event(raw))?;
        self.bell.ring();
        Ok(())
    }

    fn value(&self) -> Result<u64> {
        Ok(lock(&self.chain).current())
    }

    fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<bool> {
        logic::raw_value(value)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        // The (epoch counter, value) a listener was asked about, so each is
        // asked once.
        let mut listening: Option<(*const Epoch<ffi::SharedEvent>, u64)> = None;
        loop {
            let seen = self.bell.rings();
            let target = {
                let mut chain = lock(&self.chain);
                if chain.current() >= value {
                    return Ok(true);
                }
                chain.reachable(value)
            };
            if let Some((epoch, raw)) = target {
                let key = (Arc::as_ptr(&epoch), raw);
                if listening != Some(key) {
                    listening = Some(key);
                    let bell = self.bell.clone();
                    epoch.counter.notify(raw, move || bell.ring());
                }
            }
            let slice = Duration::from_millis(50);
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    left.min(slice)
                }
                None => slice,
            };
            // Bounded: a change nexus did not see (another process setting
            // the event) is found at the next slice.
            self.bell.wait(seen, slice);
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub(super) fn event_of(event: &Arc<dyn hal::Event>) -> Result<&MtlEvent> {
    common::downcast::<MtlEvent>(
        event.as_any(),
        Status::InvalidEvent,
        || "event".into(),
        "Metal",
    )
}

/// One command queue as `common::queue` drives it.
pub struct MtlStream {
    pub(super) queue: ffi::Queue,
    /// Committed command buffers not yet seen finished, oldest first.
    committed: Mutex<VecDeque<Arc<ffi::CommandBuffer>>>,
    /// The first failure seen, reported once everything committed before
    /// it has finished.
    failure: Mutex<Option<Error>>,
}

pub(crate) type Queue = StreamQueue<MtlStream>;

impl MtlStream {
    pub fn new(queue: ffi::Queue) -> MtlStream {
        MtlStream {
            queue,
            committed: Mutex::new(VecDeque::new()),
            failure: Mutex::new(None),
        }
    }

    /// A fresh command buffer of this queue.
    pub(super) fn command_buffer(&self) -> Result<ffi::CommandBuffer> {
        self.queue.command_buffer().ok_or_else(|| {
            Error::new(
                Status::DriverError,
                "Metal: the command queue gave no command buffer",
            )
        })
    }

    /// Commits `cb` and tracks it until it finishes.
    pub(super) fn commit(&self, cb: ffi::CommandBuffer) {
        cb.commit();
        self.track(Arc::new(cb));
    }

    /// Tracks a committed command buffer until it finishes.
    pub(super) fn track(&self, cb: Arc<ffi::CommandBuffer>) {
        lock(&self.committed).push_back(cb);
    }
}

impl DeviceStream for MtlStream {
    type Marker = Arc<ffi::CommandBuffer>;
    const WORKER_NAME: &'static str = "nexus-metal-held";

    fn is_idle(&self) -> Result<bool> {
        ffi::pool(|| self.poll_committed())
    }

    fn mark(&self, _spare: Option<Self::Marker>) -> Option<Self::Marker> {
        // The last committed buffer: queues finish their buffers in order.
        lock(&self.committed).back().cloned()
    }

    fn is_reached(&self, marker: &Self::Marker) -> bool {
        // Once a failure is seen, completion moves only through `is_idle`,
        // which reports it: a marker past the failed run must not mark that
        // run complete first (its failure would then go to no run).
        marker.status() == logic::CommandBufferStatus::Completed && lock(&self.failure).is_none()
    }

    fn finish(&self) {
        if crate::process::exiting() {
            // The process is ending: the OS takes the queue back, and a
            // wait on a GPU being torn down could hang the exit.
            return;
        }
        let last = lock(&self.committed).back().cloned();
        if let Some(cb) = last {
            cb.wait_until_completed();
        }
    }
}

impl MtlStream {
    /// Forgets finished command buffers; `Ok(true)` when none is left, the
    /// first failure once everything committed before it has finished.
    fn poll_committed(&self) -> Result<bool> {
        let mut committed = lock(&self.committed);
        while let Some(cb) = committed.front() {
            let status = cb.status();
            if !status.is_finished() {
                break;
            }
            if status == logic::CommandBufferStatus::Error {
                let e = match cb.error() {
                    Some(e) => logic::command_buffer_error(e.code, &e.description),
                    None => logic::command_buffer_error(0, ""),
                };
                lock(&self.failure).get_or_insert(e);
            }
            committed.pop_front();
        }
        if !committed.is_empty() {
            return Ok(false);
        }
        match lock(&self.failure).take() {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }
}

/// A nexus stream: a command queue.
pub struct MtlStreamHandle {
    pub(crate) queue: Arc<Queue>,
}

impl hal::Stream for MtlStreamHandle {
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
