//! Device memory and host<->device copies.
//!
//! Copies from pinned host memory go straight to the DMA engine. Pageable
//! copies go through a pipeline of two pinned staging chunks: while the
//! copy engine moves chunk k, the CPU (several threads) fills or drains
//! chunk k+1, so the transfer runs near the PCIe rate instead of the
//! driver's own single-threaded staging.

use std::any::Any;
use std::sync::Arc;

use super::ffi::result as r;
use super::ffi::safe::{Context, DeviceMemory, Event, PinnedHost};
use super::ffi::sys::{self, CUstream};
use super::Gpu;
use crate::backends::common::staging::{chunk_size, host_copy, spin_until};
use crate::backends::common::{lock, release};
use crate::error::{Error, Result, Status};
use crate::hal;

/// Staging chunks: `NEXUS_CUDA_STAGING_MB` MiB (default 32).
const CHUNK_VAR: &str = "NEXUS_CUDA_STAGING_MB";

/// Two pinned chunks and the events that say when the DMA engine is done
/// with each.
pub(crate) struct Staging {
    chunk: usize,
    chunks: [PinnedHost; 2],
    events: [Event; 2],
}

impl Staging {
    pub(crate) fn new(ctx: &Context) -> Result<Staging> {
        let chunk = chunk_size(CHUNK_VAR);
        let pinned = || PinnedHost::allocate(ctx, chunk, sys::MEMHOSTALLOC_PORTABLE);
        Ok(Staging {
            chunk,
            chunks: [pinned()?, pinned()?],
            events: [Event::create(ctx)?, Event::create(ctx)?],
        })
    }
}

fn wait_event(e: &Event) -> Result<()> {
    spin_until(|| e.is_reached())
}

fn wait_stream(d: &sys::Driver, s: CUstream) -> Result<()> {
    spin_until(|| r::stream_query(d, s))
}

/// The device's staging area, locked for one copy (made here if the
/// context's creation could not allocate it).
fn staging(g: &Gpu) -> Result<std::sync::MutexGuard<'_, Option<Staging>>> {
    let mut guard = lock(&g.staging);
    if guard.is_none() {
        *guard = Some(Staging::new(&g.context()?)?);
    }
    Ok(guard)
}

/// The staging area `staging()` made sure of.
fn filled(guard: &mut Option<Staging>) -> Result<&mut Staging> {
    guard
        .as_mut()
        .ok_or_else(|| Error::new(Status::DriverError, "CUDA staging memory is missing"))
}

pub struct CudaBuffer {
    gpu: Arc<Gpu>,
    ptr: u64,
    size: usize,
    /// Memory nexus allocated (freed off the caller's thread: freeing
    /// waits for the device); `None` for memory another library owns.
    memory: Option<DeviceMemory>,
    /// Mapped pinned host memory (`create_host_buffer`): the host reads and
    /// writes it directly.
    pinned: Option<PinnedHost>,
    _owner: Option<Arc<dyn Any + Send + Sync>>,
}

impl CudaBuffer {
    pub(crate) fn allocate(gpu: &Arc<Gpu>, size: usize) -> Result<Self> {
        let memory = DeviceMemory::allocate(&gpu.context()?, size).map_err(|mut e| {
            e.message = format!("{} on {}", e.message, gpu.label());
            e
        })?;
        Ok(CudaBuffer {
            gpu: gpu.clone(),
            ptr: memory.raw(),
            size,
            memory: Some(memory),
            pinned: None,
            _owner: None,
        })
    }

    /// Page-locked host memory mapped into the device's address space.
    pub(crate) fn allocate_pinned(gpu: &Arc<Gpu>, size: usize) -> Result<Self> {
        let flags = sys::MEMHOSTALLOC_PORTABLE | sys::MEMHOSTALLOC_DEVICEMAP;
        let mut pinned = PinnedHost::allocate(&gpu.context()?, size, flags)?;
        pinned.as_mut_slice(size).fill(0);
        Ok(CudaBuffer {
            gpu: gpu.clone(),
            ptr: pinned.device_address()?,
            size,
            memory: None,
            pinned: Some(pinned),
            _owner: None,
        })
    }

    pub(crate) fn wrap(
        gpu: &Arc<Gpu>,
        ptr: u64,
        size: usize,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        CudaBuffer {
            gpu: gpu.clone(),
            ptr,
            size,
            memory: None,
            pinned: None,
            _owner: Some(owner),
        }
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            release::defer(Box::new(move || drop(memory)));
        }
        if let Some(pinned) = self.pinned.take() {
            release::defer(Box::new(move || drop(pinned)));
        }
    }
}

impl hal::Buffer for CudaBuffer {
    fn size(&self) -> usize {
        self.size
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        if let Some(pinned) = &self.pinned {
            // Host memory: the object model waited for the runs using it.
            let at = pinned.as_ptr() as usize + offset;
            // SAFETY: `offset + src.len()` is within the allocation
            // (checked above), which lives as long as `self`; no DMA uses
            // it now (every run using the buffer has completed).
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), at as *mut u8, src.len()) };
            return Ok(());
        }
        let g = &self.gpu;
        let d = g.d;
        let _ctx = g.bind()?;
        let stream = g.default_stream()?;
        let dst = self.ptr + offset as u64;
        if r::is_pinned_host(d, src.as_ptr(), src.len()) {
            // SAFETY: src is pinned and outlives the wait below.
            unsafe { r::memcpy_htod_async(d, dst, src.as_ptr(), src.len(), stream) }?;
            return wait_stream(d, stream);
        }
        let mut guard = staging(g)?;
        let st = filled(&mut guard)?;
        let chunk = st.chunk;
        for (k, piece) in src.chunks(chunk).enumerate() {
            let b = k % 2;
            if k >= 2 {
                // The DMA that last read this chunk is done.
                wait_event(&st.events[b])?;
            }
            host_copy(st.chunks[b].as_mut_slice(piece.len()), piece);
            let at = dst + (k * chunk) as u64;
            // SAFETY: a pinned chunk the staging lock gives to this copy
            // alone; the event recorded next orders its reuse.
            unsafe { r::memcpy_htod_async(d, at, st.chunks[b].as_ptr(), piece.len(), stream) }?;
            st.events[b].record(stream)?;
        }
        wait_stream(d, stream)
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        if let Some(pinned) = &self.pinned {
            host_copy(dst, &pinned.as_slice(offset + dst.len())[offset..]);
            return Ok(());
        }
        let g = &self.gpu;
        let d = g.d;
        let _ctx = g.bind()?;
        let stream = g.default_stream()?;
        let src = self.ptr + offset as u64;
        if r::is_pinned_host(d, dst.as_ptr(), dst.len()) {
            // SAFETY: dst is pinned and outlives the wait below.
            unsafe { r::memcpy_dtoh_async(d, dst.as_mut_ptr(), src, dst.len(), stream) }?;
            return wait_stream(d, stream);
        }
        let mut guard = staging(g)?;
        let st = filled(&mut guard)?;
        let chunk = st.chunk;
        let n = dst.len().div_ceil(chunk);
        let total = dst.len();
        let issue = |st: &mut Staging, k: usize| -> Result<()> {
            let b = k % 2;
            let len = chunk.min(total - k * chunk);
            let at = st.chunks[b].as_mut_ptr();
            // SAFETY: a pinned chunk the staging lock gives to this copy
            // alone; it is read only after its event.
            unsafe { r::memcpy_dtoh_async(d, at, src + (k * chunk) as u64, len, stream) }?;
            st.events[b].record(stream)
        };
        issue(st, 0)?;
        for (k, piece) in dst.chunks_mut(chunk).enumerate() {
            if k + 1 < n {
                // Chunk (k+1)%2 was drained in the previous iteration.
                issue(st, k + 1)?;
            }
            let b = k % 2;
            // The DMA into this chunk is done.
            wait_event(&st.events[b])?;
            host_copy(piece, st.chunks[b].as_slice(piece.len()));
        }
        Ok(())
    }

    fn address(&self) -> u64 {
        self.ptr
    }
}
