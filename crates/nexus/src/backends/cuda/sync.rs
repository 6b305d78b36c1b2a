//! Timeline events in mapped pinned memory, and CUDA streams.
//!
//! An event is one u64 in page-locked host memory mapped into every GPU's
//! address space. The host signals with a plain (volatile) store and waits
//! by polling; a stream signals with `cuStreamWriteValue64` and waits with
//! `cuStreamWaitValue64(GEQ)`, so GPU work waits for an event with no host
//! round trip.

use std::any::Any;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::result as r;
use super::sys::{self, CUstream};
use super::{Gpu, Handle};
use crate::error::Result;
use crate::hal;

pub struct CudaEvent {
    gpu: Arc<Gpu>,
    host: Handle,
    /// The device address of the value (equal to the host address under UVA).
    pub(super) device_address: u64,
}

impl CudaEvent {
    pub(crate) fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        gpu.bind()?;
        let host = r::mem_host_alloc(gpu.d, 8, sys::MEMHOSTALLOC_PORTABLE | sys::MEMHOSTALLOC_DEVICEMAP)?;
        // SAFETY: 8 bytes of pinned memory, page aligned.
        unsafe { std::ptr::write_volatile(host as *mut u64, 0) };
        let device_address = match r::mem_host_device_pointer(gpu.d, host) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: allocated above.
                unsafe { (gpu.d.cuMemFreeHost)(host) };
                return Err(e);
            }
        };
        Ok(CudaEvent { gpu: gpu.clone(), host: Handle(host), device_address })
    }

    fn slot(&self) -> *mut u64 {
        self.host.0 as *mut u64
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        let (gpu, host) = (self.gpu.clone(), self.host);
        super::defer_release(Box::new(move || {
            let host: Handle = host;
            let _ = gpu.bind();
            // SAFETY: allocated by cuMemHostAlloc, freed once.
            unsafe { (gpu.d.cuMemFreeHost)(host.0) };
        }));
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
