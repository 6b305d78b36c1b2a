//! CPU buffers: host memory aligned for vector loads.

use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::{Error, Result, Status};
use crate::hal;

/// Alignment of every CPU buffer (a cache line, enough for AVX-512 loads).
pub const ALIGNMENT: usize = 64;
const HUGE_PAGE: usize = 2 << 20;

pub struct CpuBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer owns its allocation; concurrent kernel access to the
// bytes is ordered by streams and events, as on every runtime.
unsafe impl Send for CpuBuffer {}
// SAFETY: as for Send.
unsafe impl Sync for CpuBuffer {}

impl CpuBuffer {
    pub fn new(size: usize) -> Result<Self> {
        // Large buffers start on a huge-page boundary and ask for huge pages:
        // fewer TLB misses on streaming kernels (numpy does the same).
        let align = if size >= HUGE_PAGE {
            HUGE_PAGE
        } else {
            ALIGNMENT
        };
        let layout = Layout::from_size_align(size.max(1), align).map_err(|_| {
            Error::new(
                Status::InvalidSize,
                format!("buffer size {size} is too large"),
            )
        })?;
        let huge = cfg!(target_os = "linux") && size >= HUGE_PAGE;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe {
            if huge {
                alloc(layout)
            } else {
                alloc_zeroed(layout)
            }
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            Error::new(
                Status::OutOfMemory,
                format!("CPU runtime: cannot allocate a buffer of {size} bytes"),
            )
        })?;
        if huge {
            // Advise before the first touch, so the zeroing below faults in huge pages.
            #[cfg(target_os = "linux")]
            // SAFETY: advice on memory this buffer owns; failure is harmless.
            unsafe {
                libc::madvise(ptr.as_ptr() as *mut libc::c_void, size, libc::MADV_HUGEPAGE)
            };
            // SAFETY: the allocation holds `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, layout.size()) };
        }
        Ok(CpuBuffer { ptr, layout })
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl hal::Buffer for CpuBuffer {
    fn size(&self) -> usize {
        self.layout.size()
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        // SAFETY: bounds are checked by the object model.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len())
        };
        Ok(())
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        // SAFETY: bounds are checked by the object model.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    fn address(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
}

/// Host memory another library owns (a numpy array or a torch CPU tensor
/// wrapped with `copy=False`): used in place, its owner kept alive.
pub struct ForeignHostBuffer {
    ptr: NonNull<u8>,
    size: usize,
    _owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: as for CpuBuffer; the owner keeps the memory alive.
unsafe impl Send for ForeignHostBuffer {}
// SAFETY: as for Send.
unsafe impl Sync for ForeignHostBuffer {}

impl ForeignHostBuffer {
    /// `address..address + size` must stay valid while `owner` lives (the
    /// interop protocols promise it of the memory they describe).
    pub fn new(address: u64, size: usize, owner: Arc<dyn Any + Send + Sync>) -> Result<Self> {
        let ptr = NonNull::new(address as usize as *mut u8).ok_or_else(|| {
            Error::new(Status::InvalidValue, "cannot wrap host memory at address 0")
        })?;
        Ok(ForeignHostBuffer {
            ptr,
            size,
            _owner: owner,
        })
    }
}

impl hal::Buffer for ForeignHostBuffer {
    fn size(&self) -> usize {
        self.size
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        // SAFETY: bounds are checked by the object model; the owner keeps
        // the memory alive.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len())
        };
        Ok(())
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        // SAFETY: as for write.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    fn address(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
}
