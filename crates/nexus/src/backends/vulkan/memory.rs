//! Vulkan buffers.
//!
//! Where the device maps its memory (lavapipe, integrated GPUs, discrete
//! GPUs with a resizable BAR) a buffer is host-visible, coherent memory
//! mapped for its life: host copies are memcpy, and the buffer's address
//! is the host pointer (so DLPack exports it as host memory). Elsewhere the
//! buffer is device-local and copies go through a staging buffer and a
//! one-off copy command; its address is then a unique id, never reused.
//!
//! The object model orders host copies after the runs that use the buffer
//! (`common::usage`), so copies here need no ordering of their own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::ffi::{self, Record};
use super::Gpu;
use crate::backends::common::lock;
use crate::error::{Error, Result};
use crate::hal;

pub struct VkBuffer {
    gpu: Arc<Gpu>,
    pub(super) raw: Arc<ffi::Buffer>,
    size: usize,
    address: u64,
}

impl VkBuffer {
    pub fn new(gpu: &Arc<Gpu>, size: usize) -> Result<VkBuffer> {
        let raw = ffi::Buffer::new(&gpu.dev, size as u64, &gpu.buffer_types, !gpu.staging)
            .map_err(|e| {
                Error::new(
                    e.status,
                    format!("{} (Vulkan device '{}')", e.message, gpu.dev.info.name),
                )
            })?;
        let raw = Arc::new(raw);
        let address = match raw.mapped() {
            Some(p) => p as u64,
            None => gpu.next_id.fetch_add(1 << 32, Ordering::Relaxed),
        };
        if raw.mapped().is_none() {
            // Zero-filled like every nexus buffer.
            let zeros = vec![0u8; size.min(64 << 20)];
            let mut offset = 0;
            while offset < size {
                let n = zeros.len().min(size - offset);
                staged_write(gpu, &raw, offset, &zeros[..n])?;
                offset += n;
            }
        } else {
            // Fresh Vulkan memory is not guaranteed to be zero.
            let zeros = vec![0u8; size.min(64 << 20)];
            let mut offset = 0;
            while offset < size {
                let n = zeros.len().min(size - offset);
                raw.write_mapped(offset, &zeros[..n])?;
                offset += n;
            }
        }
        lock(&gpu.buffers).insert(address, Arc::downgrade(&raw));
        Ok(VkBuffer {
            gpu: gpu.clone(),
            raw,
            size,
            address,
        })
    }
}

impl Drop for VkBuffer {
    fn drop(&mut self) {
        let mut map = lock(&self.gpu.buffers);
        map.remove(&self.address);
    }
}

/// The Vulkan buffer behind a nexus buffer of this device.
pub(super) fn lookup(gpu: &Gpu, buffer: &dyn hal::Buffer) -> Option<Arc<ffi::Buffer>> {
    lock(&gpu.buffers)
        .get(&buffer.address())
        .and_then(|w| w.upgrade())
        .filter(|b| b.size() as usize == buffer.size())
}

/// Runs a one-off copy command and waits for it.
fn run_copy(gpu: &Arc<Gpu>, record: Record<'_>) -> Result<()> {
    let cb = ffi::CommandBuffer::record(&gpu.dev, &[record])?;
    let done = ffi::Semaphore::new(&gpu.dev, 0)?;
    gpu.dev.submit(&[ffi::Batch {
        waits: Vec::new(),
        commands: vec![cb.raw()],
        signals: vec![(&done, 1)],
    }])?;
    loop {
        if ffi::Semaphore::wait_any(&[(&done, 1)], Duration::from_secs(3600))? {
            return Ok(());
        }
    }
}

fn staging_buffer(gpu: &Arc<Gpu>, len: usize) -> Result<ffi::Buffer> {
    ffi::Buffer::new(&gpu.dev, len as u64, &gpu.host_types, true)
}

fn staged_write(gpu: &Arc<Gpu>, dst: &ffi::Buffer, offset: usize, src: &[u8]) -> Result<()> {
    if src.is_empty() {
        return Ok(());
    }
    let stage = staging_buffer(gpu, src.len())?;
    stage.write_mapped(0, src)?;
    run_copy(
        gpu,
        Record::Copy {
            src: &stage,
            dst,
            src_offset: 0,
            dst_offset: offset as u64,
            size: src.len() as u64,
        },
    )
}

fn staged_read(gpu: &Arc<Gpu>, src: &ffi::Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
    if dst.is_empty() {
        return Ok(());
    }
    let stage = staging_buffer(gpu, dst.len())?;
    run_copy(
        gpu,
        Record::Copy {
            src,
            dst: &stage,
            src_offset: offset as u64,
            dst_offset: 0,
            size: dst.len() as u64,
        },
    )?;
    stage.read_mapped(0, dst)
}

impl hal::Buffer for VkBuffer {
    fn size(&self) -> usize {
        self.size
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        if self.raw.mapped().is_some() {
            self.raw.write_mapped(offset, src)
        } else {
            staged_write(&self.gpu, &self.raw, offset, src)
        }
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        if self.raw.mapped().is_some() {
            self.raw.read_mapped(offset, dst)
        } else {
            staged_read(&self.gpu, &self.raw, offset, dst)
        }
    }

    fn address(&self) -> u64 {
        self.address
    }
}
