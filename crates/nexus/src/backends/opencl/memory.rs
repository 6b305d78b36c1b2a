//! Buffers: `clCreateBuffer` memory, in host memory the device uses in
//! place on CPU devices (`CL_MEM_USE_HOST_PTR`, where the implementation
//! maps such a buffer at its own pointer), in device memory elsewhere.
//!
//! A kernel receives a `cl_mem`, not an address: `address()` is the host
//! pointer of a host-memory buffer (what DLPack exports) or the `cl_mem`
//! handle's value, and the registry below turns it back into the memory
//! object when a schedule is encoded.

use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::ffi::result::{Context, Mem};
use super::Dev;
use crate::backends::common::lock;
use crate::error::{Error, Result, Status};
use crate::hal;

/// Host memory of a buffer: page-aligned, as implementations want for
/// buffers they use in place.
const ALIGNMENT: usize = 4096;

/// address -> memory object, for every live buffer.
static MEMS: Mutex<Option<HashMap<u64, Weak<Mem>>>> = Mutex::new(None);

/// The memory object of a buffer of this runtime, by its address.
pub(crate) fn lookup(address: u64) -> Option<Arc<Mem>> {
    lock(&MEMS).as_ref()?.get(&address)?.upgrade()
}

struct HostAlloc {
    ptr: *mut u8,
    layout: Layout,
}

/// Large buffers start on a huge-page boundary and ask for huge pages
/// (fewer TLB misses on streaming kernels, as the CPU runtime does).
const HUGE_PAGE: usize = 2 << 20;

impl HostAlloc {
    fn new(size: usize) -> Option<HostAlloc> {
        let huge = cfg!(target_os = "linux") && size >= HUGE_PAGE;
        let align = if huge { HUGE_PAGE } else { ALIGNMENT };
        let layout = Layout::from_size_align(size.max(1).next_multiple_of(64), align).ok()?;
        // SAFETY: a non-zero size.
        let ptr = unsafe {
            if huge {
                alloc(layout)
            } else {
                alloc_zeroed(layout)
            }
        };
        if ptr.is_null() {
            return None;
        }
        if huge {
            // Advise before the first touch, so the zeroing faults in huge pages.
            #[cfg(target_os = "linux")]
            // SAFETY: advice on memory this allocation owns; failure is harmless.
            unsafe {
                libc::madvise(ptr as *mut libc::c_void, layout.size(), libc::MADV_HUGEPAGE)
            };
            // SAFETY: the allocation holds `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
        }
        Some(HostAlloc { ptr, layout })
    }
}

impl Drop for HostAlloc {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Whether a host-pointer buffer on this device is used in place: the map
/// of one returns the host pointer itself.
pub(super) fn probe_zero_copy(dev: &Dev, ctx: &Context) -> bool {
    if std::env::var("NEXUS_OPENCL_HOST_BUFFERS").is_ok_and(|v| v == "0") {
        return false;
    }
    let Some(host) = HostAlloc::new(ALIGNMENT) else {
        return false;
    };
    let probe = || -> Result<bool> {
        let mem = Mem::new(dev.a, ctx, ALIGNMENT, Some(host.ptr))?;
        let q = super::ffi::result::Queue::new(dev.a, ctx, dev.id.0, false)?;
        let at = q.map_address(&mem, ALIGNMENT)?;
        Ok(at == host.ptr as usize)
    };
    probe().unwrap_or(false)
}

/// The memory object a buffer of this runtime lives in, and where in it
/// (a view is its parent's memory at an offset).
pub(crate) fn memory_of(b: &std::sync::Arc<dyn hal::Buffer>) -> Option<(Arc<Mem>, usize)> {
    let (root, offset) = match b.parent() {
        Some((root, offset)) => (root.clone(), offset),
        None => (b.clone(), 0),
    };
    Some((lookup(root.address())?, offset))
}

/// Bytes `offset..offset + size` of `mem` as a memory object of their own
/// (a view bound as a kernel argument). The OpenCL rule that a sub-buffer
/// starts at a multiple of the device's base alignment is checked here, not
/// left to the driver: some drivers (NVIDIA's) accept any offset, so a
/// program would work there and fail on the next device.
pub(crate) fn view(dev: &Dev, mem: &Mem, offset: usize, size: usize) -> Result<Mem> {
    let misaligned = || {
        Error::new(
            Status::InvalidValue,
            format!(
                "a view starting at byte {offset} cannot be a kernel argument on {}: OpenCL sub-buffers start at multiples of {} bytes there",
                dev.label(),
                dev.base_align
            ),
        )
    };
    if dev.base_align > 1 && !(offset as u64).is_multiple_of(dev.base_align) {
        return Err(misaligned());
    }
    mem.sub_buffer(offset, size).map_err(|e| {
        if e.message.contains("CL_MISALIGNED_SUB_BUFFER_OFFSET") {
            misaligned()
        } else {
            e
        }
    })
}

pub struct OclBuffer {
    dev: Arc<Dev>,
    mem: Arc<Mem>,
    address: u64,
    size: usize,
    /// Declared after `mem`: freed after the memory object is released.
    host: Option<HostAlloc>,
}

// SAFETY: the host allocation is owned by the buffer; access to its bytes
// is ordered by streams and the object model's usage tracking.
unsafe impl Send for OclBuffer {}
// SAFETY: as for Send.
unsafe impl Sync for OclBuffer {}

impl OclBuffer {
    pub(crate) fn allocate(dev: &Arc<Dev>, size: usize) -> Result<Self> {
        if size as u64 > dev.max_alloc {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "buffer of {size} bytes exceeds the largest allocation {} allows ({} bytes)",
                    dev.label(),
                    dev.max_alloc
                ),
            ));
        }
        let setup = dev.setup()?;
        let host = if setup.zero_copy {
            Some(HostAlloc::new(size).ok_or_else(|| {
                Error::new(
                    Status::OutOfMemory,
                    format!(
                        "{}: cannot allocate {size} bytes of host memory for a buffer",
                        dev.label()
                    ),
                )
            })?)
        } else {
            None
        };
        let mem =
            Mem::new(dev.a, &setup.ctx, size, host.as_ref().map(|h| h.ptr)).map_err(|mut e| {
                e.message = format!("{} on {}", e.message, dev.label());
                e
            })?;
        let mem = Arc::new(mem);
        let address = match &host {
            Some(h) => h.ptr as u64,
            None => mem.raw() as u64,
        };
        lock(&MEMS)
            .get_or_insert_with(HashMap::new)
            .insert(address, Arc::downgrade(&mem));
        Ok(OclBuffer {
            dev: dev.clone(),
            mem,
            address,
            size,
            host,
        })
    }
}

impl Drop for OclBuffer {
    fn drop(&mut self) {
        if let Some(map) = lock(&MEMS).as_mut() {
            map.remove(&self.address);
        }
    }
}

impl hal::Buffer for OclBuffer {
    fn size(&self) -> usize {
        self.size
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        match &self.host {
            // SAFETY: bounds are checked by the object model, which has
            // waited for every run using the buffer.
            Some(h) => unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), h.ptr.add(offset), src.len())
            },
            None => return self.dev.transfer_queue()?.write(&self.mem, offset, src),
        }
        Ok(())
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        match &self.host {
            // SAFETY: as for `write`.
            Some(h) => unsafe {
                std::ptr::copy_nonoverlapping(h.ptr.add(offset), dst.as_mut_ptr(), dst.len())
            },
            None => return self.dev.transfer_queue()?.read(&self.mem, offset, dst),
        }
        Ok(())
    }

    fn address(&self) -> u64 {
        self.address
    }
}
