//! HIP timeline events: one u64 in mapped pinned memory per event (see
//! `backends/common/timeline.rs` for how signals and waits on it are
//! carried out). The host signals with an atomic store and waits by
//! polling; a stream signals with `hipStreamWriteValue64` and waits with
//! `hipStreamWaitValue64` on a signal already queued.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ffi::result as r;
use super::ffi::safe::{self, Context};
use super::ffi::sys::{self, hipStream_t};
use super::Gpu;
use crate::backends::common::timeline::{Epochs, Slot, SlotPool, WaitPlan};
use crate::backends::common::{lock, poll, release};
use crate::error::Result;
use crate::hal;

/// Event values live in slabs of mapped pinned memory allocated ahead and
/// never freed: allocating or freeing pinned memory synchronises the whole
/// device, which costs milliseconds per event when work is queued.
const SLAB_BYTES: usize = 64 * 1024;

/// Free value words of every GPU (mapped memory is portable: any GPU can
/// use a word another one allocated).
static SLOTS: SlotPool = SlotPool::new();

fn slab(ctx: &Context) -> Result<Vec<Slot>> {
    safe::mapped_words(
        ctx,
        SLAB_BYTES,
        sys::HOST_MALLOC_PORTABLE | sys::HOST_MALLOC_MAPPED | sys::HOST_MALLOC_COHERENT,
    )
}

/// Adds one slab of words (called when a context is created, and again
/// only if every word is in use).
pub(crate) fn reserve_slots(ctx: &Context) -> Result<()> {
    SLOTS.add(slab(ctx)?);
    Ok(())
}

/// The state of one event that queued work refers to: the mapped value,
/// the epochs of host stores and GPU signals, and the GPUs that queued work
/// on it.
pub(crate) struct Timeline {
    word: &'static AtomicU64,
    /// The device address of the value (equal to the host address under UVA).
    pub(crate) device_address: u64,
    epochs: Epochs,
    /// GPUs that have queued a write or a wait on the slot.
    users: Mutex<Vec<Arc<Gpu>>>,
}

impl Timeline {
    pub(crate) fn value(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }

    /// How a wait for `value` queued now may be carried out (`mem_ops`:
    /// the GPU can wait on memory). Decided when the wait is about to be
    /// queued behind everything before it in its stream, never earlier.
    pub(crate) fn plan(&self, value: u64, mem_ops: bool) -> WaitPlan {
        self.epochs.plan(value, self.value(), mem_ops)
    }

    /// Remembers that `gpu` has work queued that touches the slot.
    fn used_by(&self, gpu: &Arc<Gpu>) {
        let mut users = lock(&self.users);
        if !users.iter().any(|g| Arc::ptr_eq(g, gpu)) {
            users.push(gpu.clone());
        }
    }

    /// Records that a stream write of `value` has been queued on `gpu`.
    pub(crate) fn mark_queued(&self, gpu: &Arc<Gpu>, value: u64) {
        self.used_by(gpu);
        self.epochs.queued_signal(value);
    }

    /// Queues on `stream` a GPU-side wait for a signal already queued
    /// (`hipStreamWaitValue64`, as the CUDA backend does).
    pub(crate) fn queue_wait(&self, gpu: &Arc<Gpu>, stream: hipStream_t, value: u64) -> Result<()> {
        self.used_by(gpu);
        r::stream_wait_value64(gpu.d, stream, self.device_address, value)
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        let slot = (self.word, self.device_address);
        let users = std::mem::take(self.users.get_mut().unwrap_or_else(|e| e.into_inner()));
        if users.is_empty() {
            SLOTS.give_back(slot);
            return;
        }
        // Runs that used the slot are complete (they kept the event alive),
        // but a schedule dropped mid-run may still have a write or a wait on
        // it queued: the release thread waits for the GPUs that used it (no
        // wait on a GPU is unbounded, see common/queue.rs) before reuse.
        release::defer(Box::new(move || {
            for gpu in &users {
                if let Ok(_ctx) = gpu.bind() {
                    let _ = r::device_synchronize(gpu.d);
                }
            }
            SLOTS.give_back(slot);
        }));
    }
}

pub struct HipEvent {
    gpu: Arc<Gpu>,
    pub(crate) timeline: Arc<Timeline>,
}

impl HipEvent {
    pub(crate) fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        let ctx = gpu.context()?;
        let (word, device_address) = SLOTS.take(|| slab(&ctx))?;
        let timeline = Timeline {
            word,
            device_address,
            epochs: Epochs::default(),
            users: Mutex::new(Vec::new()),
        };
        Ok(HipEvent {
            gpu: gpu.clone(),
            timeline: Arc::new(timeline),
        })
    }
}

impl hal::Event for HipEvent {
    fn signal(&self, value: u64) -> Result<()> {
        self.gpu.check_process()?;
        self.timeline.epochs.host_store(self.timeline.word, value);
        Ok(())
    }

    fn value(&self) -> Result<u64> {
        self.gpu.check_process()?;
        Ok(self.timeline.value())
    }

    /// Polls the value word (`poll::poll_until`: yield, then sleeps that
    /// grow with the wait, so long waits cost almost no CPU).
    fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<bool> {
        self.gpu.check_process()?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        Ok(poll::poll_until(deadline, poll::GPU_BUSY, || {
            self.timeline.value() >= value
        }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
