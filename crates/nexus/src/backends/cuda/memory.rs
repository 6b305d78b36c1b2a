//! Device memory and host<->device copies.
//!
//! Copies from pinned host memory go straight to the DMA engine. Pageable
//! copies go through a pipeline of two pinned staging chunks: while the
//! copy engine moves chunk k, the CPU (several threads) fills or drains
//! chunk k+1, so the transfer runs near the PCIe rate instead of the
//! driver's own single-threaded staging.

use std::any::Any;
use std::sync::Arc;

use rayon::prelude::*;

use super::ffi::result as r;
use super::ffi::sys::{self, CUevent, CUstream};
use super::{Gpu, Handle};
use crate::backends::common::{lock, release};
use crate::error::Result;
use crate::hal;

/// Bytes per staging chunk (`NEXUS_CUDA_STAGING_MB` overrides, 1..=256).
const DEFAULT_CHUNK: usize = 32 << 20;

fn chunk_size() -> usize {
    std::env::var("NEXUS_CUDA_STAGING_MB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&m| (1..=256).contains(&m))
        .map(|m| m << 20)
        .unwrap_or(DEFAULT_CHUNK)
}
/// Host copies at least this large are split over threads.
const PARALLEL_MIN: usize = 1 << 20;
const PIECE: usize = 512 << 10;

pub(crate) struct Staging {
    chunk: usize,
    chunks: [Handle; 2],
    events: [Handle; 2],
}

impl Staging {
    pub(crate) fn new(gpu: &Gpu) -> Result<Staging> {
        let chunk = chunk_size();
        let a = r::mem_host_alloc(gpu.d, chunk, sys::MEMHOSTALLOC_PORTABLE)?;
        let b = match r::mem_host_alloc(gpu.d, chunk, sys::MEMHOSTALLOC_PORTABLE) {
            Ok(b) => b,
            Err(e) => {
                r::mem_free_host(gpu.d, a);
                return Err(e);
            }
        };
        let e0 = r::event_create(gpu.d)?;
        let e1 = r::event_create(gpu.d)?;
        Ok(Staging {
            chunk,
            chunks: [Handle(a), Handle(b)],
            events: [Handle(e0), Handle(e1)],
        })
    }
}

/// Spins (yielding) until `ready` reports completion: these waits are
/// bounded by one chunk or one copy, so a sleep would only add latency.
fn spin_until(mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    while !ready()? {
        std::thread::yield_now();
    }
    Ok(())
}

fn wait_event(d: &sys::Driver, e: CUevent) -> Result<()> {
    spin_until(|| r::event_query(d, e))
}

fn wait_stream(d: &sys::Driver, s: CUstream) -> Result<()> {
    spin_until(|| r::stream_query(d, s))
}

/// The device's staging area, locked for one copy (made here if the
/// context's creation could not allocate it).
fn staging(g: &Gpu) -> Result<std::sync::MutexGuard<'_, Option<Staging>>> {
    let mut guard = lock(&g.staging);
    if guard.is_none() {
        *guard = Some(Staging::new(g)?);
    }
    Ok(guard)
}

fn host_copy(dst: &mut [u8], src: &[u8]) {
    if src.len() >= PARALLEL_MIN {
        dst.par_chunks_mut(PIECE)
            .zip(src.par_chunks(PIECE))
            .for_each(|(d, s)| d.copy_from_slice(s));
    } else {
        dst.copy_from_slice(src);
    }
}

pub struct CudaBuffer {
    gpu: Arc<Gpu>,
    ptr: u64,
    size: usize,
    owned: bool,
    _owner: Option<Arc<dyn Any + Send + Sync>>,
}

impl CudaBuffer {
    pub(crate) fn allocate(gpu: &Arc<Gpu>, size: usize) -> Result<Self> {
        let _ctx = gpu.bind()?;
        let ptr = r::mem_alloc(gpu.d, size).map_err(|mut e| {
            e.message = format!("{} on {}", e.message, gpu.label());
            e
        })?;
        Ok(CudaBuffer {
            gpu: gpu.clone(),
            ptr,
            size,
            owned: true,
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
            owned: false,
            _owner: Some(owner),
        }
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if self.owned {
            let (gpu, ptr) = (self.gpu.clone(), self.ptr);
            release::defer(Box::new(move || {
                if let Ok(_ctx) = gpu.bind() {
                    r::mem_free(gpu.d, ptr);
                }
            }));
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
        let guard = staging(g)?;
        let st = guard.as_ref().expect("staging() fills it");
        let chunk = st.chunk;
        for (k, piece) in src.chunks(chunk).enumerate() {
            let b = k % 2;
            if k >= 2 {
                wait_event(d, st.events[b].0)?;
            }
            // SAFETY: the chunk is CHUNK bytes of pinned memory owned by
            // the staging area, which the lock gives to this copy alone,
            // and the DMA that last read it has completed (event above).
            let pinned =
                unsafe { std::slice::from_raw_parts_mut(st.chunks[b].0 as *mut u8, piece.len()) };
            host_copy(pinned, piece);
            let at = dst + (k * chunk) as u64;
            // SAFETY: a pinned chunk of the staging area; the event
            // recorded next orders its reuse.
            unsafe { r::memcpy_htod_async(d, at, pinned.as_ptr(), piece.len(), stream) }?;
            r::event_record(d, st.events[b].0, stream)?;
        }
        wait_stream(d, stream)
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
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
        let guard = staging(g)?;
        let st = guard.as_ref().expect("staging() fills it");
        let chunk = st.chunk;
        let n = dst.len().div_ceil(chunk);
        let total = dst.len();
        let issue = |k: usize| -> Result<()> {
            let b = k % 2;
            let len = chunk.min(total - k * chunk);
            let chunk_at = st.chunks[b].0 as *mut u8;
            // SAFETY: a pinned chunk of the staging area, which the lock
            // gives to this copy alone; it is read only after its event.
            unsafe { r::memcpy_dtoh_async(d, chunk_at, src + (k * chunk) as u64, len, stream) }?;
            r::event_record(d, st.events[b].0, stream)
        };
        issue(0)?;
        for (k, piece) in dst.chunks_mut(chunk).enumerate() {
            if k + 1 < n {
                // Chunk (k+1)%2 was drained in the previous iteration.
                issue(k + 1)?;
            }
            let b = k % 2;
            wait_event(d, st.events[b].0)?;
            // SAFETY: the DMA into this chunk has completed (event above).
            let pinned =
                unsafe { std::slice::from_raw_parts(st.chunks[b].0 as *const u8, piece.len()) };
            host_copy(piece, pinned);
        }
        Ok(())
    }

    fn address(&self) -> u64 {
        self.ptr
    }
}
