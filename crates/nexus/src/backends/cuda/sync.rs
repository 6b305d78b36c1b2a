//! Timeline events in mapped pinned memory, and CUDA streams.
//!
//! An event is one u64 in page-locked host memory mapped into every GPU's
//! address space. The host signals with an atomic store and waits by
//! polling. A stream signals with `cuStreamWriteValue64`. A wait is
//! decided when it is about to be queued behind everything before it in
//! its stream (`Timeline::plan`): on the GPU (`cuStreamWaitValue64`, no
//! host round trip) when a signal reaching the value was queued after the
//! last host store; passed once the stream's earlier work is done when the
//! host already set the value; otherwise the rest of the run is held on the
//! host (`queue.rs`) until a signal is given or queued. So a wait sees the
//! value when it executes (resets included), and no wait that reaches the
//! GPU waits for anything but queued work.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::ffi::result as r;
use super::ffi::sys::{self, CUstream};
use super::queue::StreamQueue;
use super::{Gpu, Handle};
use crate::backends::common::{lock, release};
use crate::error::Result;
use crate::hal;

/// Event values live in slabs of mapped pinned memory allocated ahead and
/// never freed: allocating or freeing pinned memory synchronises the whole
/// device, which costs milliseconds per event when work is queued.
const SLAB_BYTES: usize = 64 * 1024;

/// Free value slots: (host address, device address). First in, first out:
/// a slot freed while a dropped schedule's write to it may still be in
/// flight goes back behind thousands of others before it is reused.
static FREE_SLOTS: Mutex<VecDeque<(usize, u64)>> = Mutex::new(VecDeque::new());

/// Adds one slab of slots (called when a context is created, and again
/// only if every slot is in use).
pub(crate) fn reserve_slots(gpu: &Gpu) -> Result<()> {
    let host = r::mem_host_alloc(
        gpu.d,
        SLAB_BYTES,
        sys::MEMHOSTALLOC_PORTABLE | sys::MEMHOSTALLOC_DEVICEMAP,
    )?;
    let device = match r::mem_host_device_pointer(gpu.d, host) {
        Ok(p) => p,
        Err(e) => {
            r::mem_free_host(gpu.d, host);
            return Err(e);
        }
    };
    let mut free = lock(&FREE_SLOTS);
    for i in 0..SLAB_BYTES / 8 {
        free.push_back((host as usize + i * 8, device + (i * 8) as u64));
    }
    Ok(())
}

fn take_slot(gpu: &Gpu) -> Result<(usize, u64)> {
    loop {
        if let Some(slot) = lock(&FREE_SLOTS).pop_front() {
            return Ok(slot);
        }
        reserve_slots(gpu)?;
    }
}

/// Wakes runs held on the host whenever some timeline moves (a host signal,
/// or a GPU signal queued). One process-wide condition: held runs are rare
/// and each re-checks its own event, so a shared wake-up costs nothing.
static MOVED: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());
/// Threads waiting on `MOVED`; signals skip the lock when there are none.
static WATCHERS: AtomicUsize = AtomicUsize::new(0);

fn notify_moved() {
    if WATCHERS.load(Ordering::SeqCst) > 0 {
        let mut generation = lock(&MOVED.0);
        *generation = generation.wrapping_add(1);
        MOVED.1.notify_all();
    }
}

/// Blocks until `ready()` holds. `ready` is re-checked after every timeline
/// move, and every 50 ms in case a value changed behind nexus's back.
pub(crate) fn wait_until_moved(mut ready: impl FnMut() -> bool) {
    WATCHERS.fetch_add(1, Ordering::SeqCst);
    let mut generation = lock(&MOVED.0);
    while !ready() {
        generation = match MOVED.1.wait_timeout(generation, Duration::from_millis(50)) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
    }
    drop(generation);
    WATCHERS.fetch_sub(1, Ordering::SeqCst);
}

/// Who last set a timeline's value: the host (a store, which starts a new
/// epoch) or a GPU signal queued since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitPlan {
    /// A GPU signal reaching the value is queued after the last host store:
    /// a GPU-side wait only waits for queued work.
    OnGpu,
    /// The value is already there and only the host sets it now: the wait
    /// passes if it executes now, i.e. once the stream's earlier work is done.
    PassWhenDrained,
    /// Neither: held on the host until a signal is given or queued.
    Hold,
}

/// The state of one event that queued work refers to: the mapped value,
/// the epoch of host stores, and the last GPU signal queued in the current
/// epoch.
pub(crate) struct Timeline {
    host: Handle,
    /// The device address of the value (equal to the host address under UVA).
    pub(crate) device_address: u64,
    /// Bumped by every host store (`signal(v)` from the host, resets too).
    epoch: AtomicU64,
    /// (epoch, value) of the GPU signal queued last, in queue order.
    last_queued: Mutex<Option<(u64, u64)>>,
    /// GPUs that have queued a write or a wait on the slot.
    users: Mutex<Vec<Arc<Gpu>>>,
}

impl Timeline {
    fn slot(&self) -> &AtomicU64 {
        // SAFETY: an 8-byte aligned slot of pinned memory this timeline owns
        // for its whole life; the GPU writes it with aligned 64-bit stores,
        // so every host access goes through one atomic.
        unsafe { AtomicU64::from_ptr(self.host.0 as *mut u64) }
    }

    pub(crate) fn value(&self) -> u64 {
        self.slot().load(Ordering::Acquire)
    }

    fn store(&self, value: u64) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.slot().store(value, Ordering::SeqCst);
        notify_moved();
    }

    /// How a wait for `value` queued now may be carried out (`mem_ops`:
    /// the GPU can wait on memory). Decided when the wait is about to be
    /// queued behind everything before it in its stream, never earlier.
    pub(crate) fn plan(&self, value: u64, mem_ops: bool) -> WaitPlan {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let last = *lock(&self.last_queued);
        match last {
            Some((e, v)) if e == epoch => {
                if mem_ops && v >= value {
                    WaitPlan::OnGpu
                } else {
                    // A queued GPU signal will set the value (maybe lower):
                    // what the value is now says nothing.
                    WaitPlan::Hold
                }
            }
            _ if self.value() >= value => WaitPlan::PassWhenDrained,
            _ => WaitPlan::Hold,
        }
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
        *lock(&self.last_queued) = Some((self.epoch.load(Ordering::SeqCst), value));
        notify_moved();
    }

    /// Queues on `stream` a GPU-side wait for a signal already queued.
    /// (`cuStreamWaitValue64`; a CUDA event recorded after each signal and
    /// `cuStreamWaitEvent` measured the same on an H100: 22.7 vs 23.0 us
    /// for a two-stream step, and cost an extra record per signal.)
    pub(crate) fn queue_wait(&self, gpu: &Arc<Gpu>, stream: CUstream, value: u64) -> Result<()> {
        self.used_by(gpu);
        r::stream_wait_value64(gpu.d, stream, self.device_address, value)
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        let slot = (self.host.0 as usize, self.device_address);
        let users = std::mem::take(self.users.get_mut().unwrap_or_else(|e| e.into_inner()));
        if users.is_empty() {
            lock(&FREE_SLOTS).push_back(slot);
            return;
        }
        // Runs that used the slot are complete (they kept the event alive),
        // but a schedule dropped mid-run may still have a write or a wait on
        // it queued: the release thread waits for the GPUs that used it (no
        // wait on a GPU is unbounded, see queue.rs) before reuse.
        release::defer(Box::new(move || {
            for gpu in &users {
                if let Ok(_ctx) = gpu.bind() {
                    let _ = r::ctx_synchronize(gpu.d);
                }
            }
            lock(&FREE_SLOTS).push_back(slot);
        }));
    }
}

pub struct CudaEvent {
    gpu: Arc<Gpu>,
    pub(crate) timeline: Arc<Timeline>,
}

impl CudaEvent {
    pub(crate) fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        let _ctx = gpu.bind()?;
        let (host, device_address) = take_slot(gpu)?;
        let timeline = Timeline {
            host: Handle(host as *mut std::ffi::c_void),
            device_address,
            epoch: AtomicU64::new(0),
            last_queued: Mutex::new(None),
            users: Mutex::new(Vec::new()),
        };
        timeline.slot().store(0, Ordering::SeqCst);
        Ok(CudaEvent {
            gpu: gpu.clone(),
            timeline: Arc::new(timeline),
        })
    }
}

impl hal::Event for CudaEvent {
    fn signal(&self, value: u64) -> Result<()> {
        self.gpu.check_process()?;
        self.timeline.store(value);
        Ok(())
    }

    fn value(&self) -> Result<u64> {
        self.gpu.check_process()?;
        Ok(self.timeline.value())
    }

    /// A short spin (a GPU signal usually lands within tens of
    /// microseconds, and a sleep costs at least the kernel's 50 us timer
    /// slack), then sleeps growing to 500 us, so long waits cost almost no CPU.
    fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<bool> {
        self.gpu.check_process()?;
        const SPIN: Duration = Duration::from_micros(200);
        const MAX_SLEEP: Duration = Duration::from_micros(500);
        let start = Instant::now();
        let mut sleep = Duration::from_micros(10);
        loop {
            if self.timeline.value() >= value {
                return Ok(true);
            }
            let elapsed = start.elapsed();
            if let Some(t) = timeout {
                if elapsed >= t {
                    return Ok(false);
                }
            }
            if elapsed < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut s = sleep;
            if let Some(t) = timeout {
                s = s
                    .min(t.saturating_sub(elapsed))
                    .max(Duration::from_micros(1));
            }
            std::thread::sleep(s);
            sleep = (sleep * 2).min(MAX_SLEEP);
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub struct CudaStream {
    pub(super) gpu: Arc<Gpu>,
    pub(super) queue: Arc<StreamQueue>,
}

impl CudaStream {
    pub(crate) fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        let _ctx = gpu.bind()?;
        let s = r::stream_create(gpu.d)?;
        let queue = StreamQueue::new(gpu, Handle(s), true);
        gpu.register_queue(&queue);
        Ok(CudaStream {
            gpu: gpu.clone(),
            queue,
        })
    }
}

impl hal::Stream for CudaStream {
    fn synchronize(&self) -> Result<()> {
        let _ctx = self.gpu.bind()?;
        self.queue.synchronize(None).map(|_| ())
    }

    fn synchronize_for(&self, timeout: Duration) -> Result<bool> {
        let _ctx = self.gpu.bind()?;
        self.queue.synchronize(Some(Instant::now() + timeout))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
