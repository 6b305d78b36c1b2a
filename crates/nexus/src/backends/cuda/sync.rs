//! Timeline events in mapped pinned memory, and CUDA streams.
//!
//! An event is one u64 in page-locked host memory mapped into every GPU's
//! address space. The host signals with a plain (volatile) store and waits
//! by polling. A stream signals with `cuStreamWriteValue64`; how a stream
//! waits is decided when the run is queued (see `queue.rs`): not at all if
//! the value is already there, on the GPU (`cuStreamWaitValue64`, no host
//! round trip) if the signal that reaches it is already queued, and
//! otherwise the rest of the run is held on the host until such a signal
//! is queued or given.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::queue::StreamQueue;
use super::result as r;
use super::sys::{self, CUstream};
use super::{Gpu, Handle};
use crate::error::{Error, Result, Status};
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
            // SAFETY: allocated above, never handed out.
            unsafe { (gpu.d.cuMemFreeHost)(host) };
            return Err(e);
        }
    };
    let mut free = FREE_SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..SLAB_BYTES / 8 {
        free.push_back((host as usize + i * 8, device + (i * 8) as u64));
    }
    Ok(())
}

fn take_slot(gpu: &Gpu) -> Result<(usize, u64)> {
    loop {
        if let Some(slot) = FREE_SLOTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        {
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
        let mut generation = MOVED.0.lock().unwrap_or_else(|e| e.into_inner());
        *generation = generation.wrapping_add(1);
        MOVED.1.notify_all();
    }
}

/// Blocks until `ready()` holds. `ready` is re-checked after every timeline
/// move, and every 50 ms in case a value changed behind nexus's back.
pub(crate) fn wait_until_moved(mut ready: impl FnMut() -> bool) {
    WATCHERS.fetch_add(1, Ordering::SeqCst);
    let mut generation = MOVED.0.lock().unwrap_or_else(|e| e.into_inner());
    while !ready() {
        generation = match MOVED.1.wait_timeout(generation, Duration::from_millis(50)) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
    }
    drop(generation);
    WATCHERS.fetch_sub(1, Ordering::SeqCst);
}

/// The state of one event that queued work refers to: the mapped value and
/// the highest value a signal already queued on a GPU stream will write.
pub(crate) struct Timeline {
    host: Handle,
    /// The device address of the value (equal to the host address under UVA).
    pub(crate) device_address: u64,
    queued: AtomicU64,
    /// GPUs that have queued a write or a wait on the slot.
    users: Mutex<Vec<Arc<Gpu>>>,
}

impl Timeline {
    fn slot(&self) -> *mut u64 {
        self.host.0 as *mut u64
    }

    pub(crate) fn value(&self) -> u64 {
        // SAFETY: live pinned memory owned by this timeline; the GPU writes
        // it with 64-bit stores.
        let v = unsafe { std::ptr::read_volatile(self.slot()) };
        fence(Ordering::Acquire);
        v
    }

    fn store(&self, value: u64) {
        fence(Ordering::SeqCst);
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(self.slot(), value) };
        fence(Ordering::SeqCst);
        notify_moved();
    }

    /// The highest value written by a GPU signal queued so far.
    pub(crate) fn queued(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    /// Remembers that `gpu` has work queued that touches the slot.
    fn used_by(&self, gpu: &Arc<Gpu>) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if !users.iter().any(|g| Arc::ptr_eq(g, gpu)) {
            users.push(gpu.clone());
        }
    }

    /// Records that a stream write of `value` has been queued on `gpu`.
    pub(crate) fn mark_queued(&self, gpu: &Arc<Gpu>, value: u64) {
        self.used_by(gpu);
        self.queued.fetch_max(value, Ordering::SeqCst);
        notify_moved();
    }

    /// Queues on `stream` a GPU-side wait for a signal already queued.
    /// (`cuStreamWaitValue64`; a CUDA event recorded after each signal and
    /// `cuStreamWaitEvent` measured the same on an H100: 22.7 vs 23.0 us
    /// for a two-stream step, and cost an extra record per signal.)
    pub(crate) fn queue_wait(&self, gpu: &Arc<Gpu>, stream: CUstream, value: u64) -> Result<()> {
        self.used_by(gpu);
        let d = gpu.d;
        let f = d
            .cuStreamWaitValue64
            .ok_or_else(|| Error::new(Status::NotSupported, "cuStreamWaitValue64 missing"))?;
        // SAFETY: the mapped value of a live timeline.
        r::check(
            d,
            unsafe {
                f(
                    stream,
                    self.device_address,
                    value,
                    sys::STREAM_WAIT_VALUE_GEQ,
                )
            },
            || format!("cuStreamWaitValue64 (wait for {value})"),
        )
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        let slot = (self.host.0 as usize, self.device_address);
        let users = std::mem::take(self.users.get_mut().unwrap_or_else(|e| e.into_inner()));
        if users.is_empty() {
            FREE_SLOTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(slot);
            return;
        }
        // A schedule dropped mid-run may still have a write or a wait on the
        // slot queued: reusing it before that work is done would corrupt the
        // next event (or hold its wait). The release thread waits for the
        // GPUs that used it (no wait on a GPU is unbounded, see queue.rs).
        super::defer_release(Box::new(move || {
            for gpu in &users {
                if gpu.bind().is_ok() {
                    // SAFETY: the GPU's context is current on this thread.
                    unsafe { (gpu.d.cuCtxSynchronize)() };
                }
            }
            FREE_SLOTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(slot);
        }));
    }
}

pub struct CudaEvent {
    pub(crate) timeline: Arc<Timeline>,
}

impl CudaEvent {
    pub(crate) fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        gpu.bind()?;
        let (host, device_address) = take_slot(gpu)?;
        // SAFETY: an 8-byte slot of pinned memory owned by this event now.
        unsafe { std::ptr::write_volatile(host as *mut u64, 0) };
        let timeline = Timeline {
            host: Handle(host as *mut std::ffi::c_void),
            device_address,
            queued: AtomicU64::new(0),
            users: Mutex::new(Vec::new()),
        };
        Ok(CudaEvent {
            timeline: Arc::new(timeline),
        })
    }
}

impl hal::Event for CudaEvent {
    fn signal(&self, value: u64) -> Result<()> {
        self.timeline.store(value);
        Ok(())
    }

    fn value(&self) -> u64 {
        self.timeline.value()
    }

    /// A short spin (a GPU signal usually lands within tens of
    /// microseconds, and a sleep costs at least the kernel's 50 us timer
    /// slack), then sleeps growing to 500 us, so long waits cost almost no CPU.
    fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<bool> {
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
        gpu.bind()?;
        let s = r::stream_create(gpu.d)?;
        Ok(CudaStream {
            gpu: gpu.clone(),
            queue: Arc::new(StreamQueue::new(gpu.d, Handle(s), Some(gpu.clone()))),
        })
    }
}

impl hal::Stream for CudaStream {
    fn synchronize(&self) -> Result<()> {
        self.gpu.bind()?;
        self.queue.synchronize(None).map(|_| ())
    }

    fn synchronize_for(&self, timeout: Duration) -> Result<bool> {
        self.gpu.bind()?;
        self.queue.synchronize(Some(Instant::now() + timeout))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
