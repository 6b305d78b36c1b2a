//! Timeline events in mapped pinned memory, and CUDA streams.
//!
//! An event is one u64 in page-locked host memory mapped into every GPU's
//! address space. The host signals with a plain (volatile) store and waits
//! by polling; a stream signals with `cuStreamWriteValue64` and waits with
//! a one-thread kernel polling the value (see `schedule.rs` for why not
//! `cuStreamWaitValue64`), so GPU work waits for an event with no host
//! round trip.

use std::any::Any;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::result as r;
use super::sys::{self, CUstream};
use super::{Gpu, Handle};
use crate::error::Result;
use crate::hal;

/// Event values live in slabs of mapped pinned memory that are allocated
/// ahead and never freed: allocating or freeing pinned memory synchronises
/// the device, which must not happen while a stream is parked in a wait
/// (the wait would hold it forever).
const SLAB_BYTES: usize = 64 * 1024;

/// Free value slots: (host address, device address).
static FREE_SLOTS: Mutex<Vec<(usize, u64)>> = Mutex::new(Vec::new());

/// Adds one slab of slots (called when a context is created, before any
/// wait can be queued, and again only if every slot is in use).
pub(crate) fn reserve_slots(gpu: &Gpu) -> Result<()> {
    let host = r::mem_host_alloc(gpu.d, SLAB_BYTES, sys::MEMHOSTALLOC_PORTABLE | sys::MEMHOSTALLOC_DEVICEMAP)?;
    let device = match r::mem_host_device_pointer(gpu.d, host) {
        Ok(p) => p,
        Err(e) => {
            // SAFETY: allocated above, never handed out.
            unsafe { (gpu.d.cuMemFreeHost)(host) };
            return Err(e);
        }
    };
    let mut free = FREE_SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    for i in (0..SLAB_BYTES / 8).rev() {
        free.push((host as usize + i * 8, device + (i * 8) as u64));
    }
    Ok(())
}

fn take_slot(gpu: &Gpu) -> Result<(usize, u64)> {
    loop {
        if let Some(slot) = FREE_SLOTS.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(slot);
        }
        reserve_slots(gpu)?;
    }
}

pub struct CudaEvent {
    host: Handle,
    /// The device address of the value (equal to the host address under UVA).
    pub(super) device_address: u64,
}

impl CudaEvent {
    pub(crate) fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        gpu.bind()?;
        let (host, device_address) = take_slot(gpu)?;
        // SAFETY: an 8-byte slot of pinned memory owned by this event now.
        unsafe { std::ptr::write_volatile(host as *mut u64, 0) };
        Ok(CudaEvent { host: Handle(host as *mut std::ffi::c_void), device_address })
    }

    fn slot(&self) -> *mut u64 {
        self.host.0 as *mut u64
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        // The slot goes back to the pool (work that used it holds the event
        // through its schedule, so nothing still polls it).
        FREE_SLOTS.lock().unwrap_or_else(|e| e.into_inner()).push((self.host.0 as usize, self.device_address));
    }
}

impl hal::Event for CudaEvent {
    fn signal(&self, value: u64) -> Result<()> {
        fence(Ordering::SeqCst);
        // SAFETY: the slot is live pinned memory owned by this event.
        unsafe { std::ptr::write_volatile(self.slot(), value) };
        fence(Ordering::SeqCst);
        Ok(())
    }

    fn value(&self) -> u64 {
        // SAFETY: as above; the GPU writes it with 64-bit stores.
        let v = unsafe { std::ptr::read_volatile(self.slot()) };
        fence(Ordering::Acquire);
        v
    }

    /// A short spin (a GPU signal usually lands within microseconds), then
    /// sleeps growing to 500 us, so long waits cost almost no CPU.
    fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<bool> {
        const SPIN: Duration = Duration::from_micros(50);
        const MAX_SLEEP: Duration = Duration::from_micros(500);
        let start = Instant::now();
        let mut sleep = Duration::from_micros(10);
        loop {
            if self.value() >= value {
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
                s = s.min(t.saturating_sub(elapsed)).max(Duration::from_micros(1));
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
    pub(super) stream: Handle,
}

impl CudaStream {
    pub(crate) fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        gpu.bind()?;
        let s = r::stream_create(gpu.d)?;
        Ok(CudaStream { gpu: gpu.clone(), stream: Handle(s) })
    }

    pub fn raw(&self) -> CUstream {
        self.stream.0
    }
}

impl Drop for CudaStream {
    fn drop(&mut self) {
        if self.gpu.bind().is_ok() {
            // SAFETY: created by cuStreamCreate, destroyed once (pending
            // work still completes; the driver frees it afterwards).
            unsafe { (self.gpu.d.cuStreamDestroy_v2)(self.stream.0) };
        }
    }
}

impl hal::Stream for CudaStream {
    fn synchronize(&self) -> Result<()> {
        self.gpu.bind()?;
        r::stream_wait(self.gpu.d, self.stream.0)
    }

    fn synchronize_for(&self, timeout: Duration) -> Result<bool> {
        self.gpu.bind()?;
        let (d, s) = (self.gpu.d, self.stream.0);
        // SAFETY: live stream handle.
        r::poll_until(d, "cuStreamQuery (synchronize)", Some(timeout), || unsafe { (d.cuStreamQuery)(s) })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
