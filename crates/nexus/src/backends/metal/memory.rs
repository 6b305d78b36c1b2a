//! Buffers in shared storage: on unified memory the CPU and the GPU use the
//! same bytes, so host reads and writes are plain copies at `contents` (the
//! object model has already waited for the runs that use the buffer), and a
//! buffer's address is that CPU pointer (what DLPack exports, as kDLCPU).
//!
//! Host arrays that stay alive (`create_buffer(copy=False)`, DLPack imports
//! of host memory) are wrapped with `newBufferWithBytesNoCopy` when they
//! start on a page boundary, as the CPU runtime uses them in place.
//!
//! A command binds an `MTLBuffer`, not an address: the registry below turns
//! a buffer's address back into its memory when a schedule is encoded.

use std::any::Any;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use super::{ffi, Gpu};
use crate::backends::common::{lock, staging};
use crate::error::{Error, Result, Status};
use crate::hal;

/// The memory of a buffer, shared by every view of it.
pub(crate) struct Mem {
    pub buf: ffi::Buffer,
    /// What keeps wrapped host memory alive (dropped after `buf`).
    _owner: Option<Arc<dyn Any + Send + Sync>>,
}

/// address -> memory, for every live buffer.
static BUFFERS: Mutex<Option<HashMap<u64, Weak<Mem>>>> = Mutex::new(None);

/// The memory of a buffer of this runtime, by its address.
pub(crate) fn lookup(address: u64) -> Option<Arc<Mem>> {
    lock(&BUFFERS).as_ref()?.get(&address)?.upgrade()
}

/// The memory behind `buffer` (a view: its parent's) and the offset there.
pub(crate) fn resolve(buffer: &Arc<dyn hal::Buffer>) -> Option<(Arc<Mem>, usize)> {
    let (root, offset) = match buffer.parent() {
        Some((root, offset)) => (root.clone(), offset),
        None => (buffer.clone(), 0),
    };
    Some((lookup(root.address())?, offset))
}

fn register(mem: &Arc<Mem>) {
    let mut map = lock(&BUFFERS);
    let map = map.get_or_insert_with(HashMap::new);
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(mem.buf.contents() as u64, Arc::downgrade(mem));
}

pub struct MtlBuffer {
    mem: Arc<Mem>,
    size: usize,
}

/// The system's page size (16 KiB on Apple silicon).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as usize
    } else {
        16384
    }
}

impl MtlBuffer {
    pub fn allocate(gpu: &Arc<Gpu>, size: usize) -> Result<MtlBuffer> {
        let buf = gpu.dev.new_buffer(size).ok_or_else(|| {
            Error::new(
                Status::OutOfMemory,
                format!(
                    "{}: cannot allocate a buffer of {size} bytes (the device has {} bytes allocated, recommended working set {} bytes)",
                    gpu.label(),
                    gpu.dev.allocated(),
                    gpu.info.recommended_working_set
                ),
            )
        })?;
        let mem = Arc::new(Mem { buf, _owner: None });
        register(&mem);
        Ok(MtlBuffer { mem, size })
    }

    /// A buffer over `size` bytes of host memory at `address`, which
    /// `owner` keeps alive and in place.
    pub fn wrap_host(
        gpu: &Arc<Gpu>,
        address: u64,
        size: usize,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Result<MtlBuffer> {
        let page = page_size();
        let ptr = NonNull::new(address as usize as *mut std::ffi::c_void)
            .filter(|_| (address as usize).is_multiple_of(page))
            .ok_or_else(|| {
                Error::new(
                    Status::InvalidValue,
                    format!(
                        "{}: host memory at {address:#x} does not start on a page boundary ({page} bytes): Metal can only use page-aligned memory in place",
                        gpu.label()
                    ),
                )
            })?;
        // Metal maps whole pages; the pages of an allocation are the
        // owner's, and kernels only see `size` bytes of them.
        let len = size.next_multiple_of(page);
        // SAFETY: `owner` keeps `address..address + size` alive and in
        // place, and the Mem holding it outlives the buffer and every run
        // that uses it (runs hold the Mem); the rest of the last page is
        // mapped with it.
        let buf = unsafe { gpu.dev.wrap_host(ptr, len) }.ok_or_else(|| {
            Error::new(
                Status::InvalidValue,
                format!(
                    "{}: Metal refused to use {size} bytes of host memory at {address:#x} in place",
                    gpu.label()
                ),
            )
        })?;
        let mem = Arc::new(Mem {
            buf,
            _owner: Some(owner),
        });
        register(&mem);
        Ok(MtlBuffer { mem, size })
    }
}

impl hal::Buffer for MtlBuffer {
    fn size(&self) -> usize {
        self.size
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        check_range(offset, src.len(), self.size)?;
        // SAFETY: `offset + src.len() <= size <= length` (checked), shared
        // storage is CPU-visible, and no run uses the range now (the object
        // model waited for them).
        let dst = unsafe {
            std::slice::from_raw_parts_mut(self.mem.buf.contents().add(offset), src.len())
        };
        staging::host_copy(dst, src);
        Ok(())
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        check_range(offset, dst.len(), self.size)?;
        // SAFETY: as for `write`.
        let src =
            unsafe { std::slice::from_raw_parts(self.mem.buf.contents().add(offset), dst.len()) };
        staging::host_copy(dst, src);
        Ok(())
    }

    fn address(&self) -> u64 {
        self.mem.buf.contents() as u64
    }
}

fn check_range(offset: usize, len: usize, size: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::new(
            Status::InvalidSize,
            format!("bytes {offset}..{offset}+{len} are outside the buffer's {size} bytes"),
        )),
    }
}

/// A small buffer holding `bytes` (a fill's seed), owned by a schedule.
pub(crate) fn staged(gpu: &Arc<Gpu>, bytes: &[u8]) -> Result<Arc<Mem>> {
    let b = MtlBuffer::allocate(gpu, bytes.len().max(1))?;
    hal::Buffer::write(&b, 0, bytes)?;
    Ok(b.mem)
}
