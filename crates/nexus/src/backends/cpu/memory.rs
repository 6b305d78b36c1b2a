//! CPU buffers: host memory aligned for vector loads.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::any::Any;
use std::ptr::NonNull;

use crate::error::{Error, Result, Status};
use crate::hal;

/// Alignment of every CPU buffer (a cache line, enough for AVX-512 loads).
pub const ALIGNMENT: usize = 64;

pub struct CpuBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

// The buffer owns its allocation; concurrent kernel access to the bytes is
// the user's to order (through streams and events), as on every runtime.
unsafe impl Send for CpuBuffer {}
unsafe impl Sync for CpuBuffer {}

impl CpuBuffer {
    pub fn new(size: usize) -> Result<Self> {
        let layout = Layout::from_size_align(size.max(1), ALIGNMENT)
            .map_err(|_| Error::new(Status::InvalidSize, format!("buffer size {size} is too large")))?;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| Error::new(Status::OutOfMemory, format!("CPU runtime: cannot allocate a buffer of {size} bytes")))?;
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
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len()) };
        Ok(())
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        // SAFETY: bounds are checked by the object model.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn address(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
