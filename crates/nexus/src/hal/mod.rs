//! The backend trait family: what a runtime must provide.
//!
//! Each backend (`backends/cpu`, `backends/cuda`, ...) is one module that
//! implements these traits; the object model in the crate root talks to
//! runtimes only through them and never names a backend. Validation of user
//! input (sizes, argument counts, finalized commands, device matching)
//! happens above this layer, so implementations may assume well-formed
//! requests and only report what the hardware or driver refuses.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub mod interop;
pub mod ops;

pub use interop::{ForeignMemory, MemoryDomain, ProducerStream};
pub use ops::{Arg, LibrarySource, Op};

use crate::error::Result;
use crate::types::{EventType, LaunchDims};

/// Most kernel arguments one command takes, on every runtime.
pub const MAX_KERNEL_ARGS: usize = 64;

/// One runtime (driver API): enumerates its devices.
pub trait Api: Send + Sync {
    /// Lower-case runtime name: "cpu", "cuda", ...
    fn name(&self) -> &'static str;
    /// Live properties of the runtime itself (driver version, ...).
    fn properties(&self) -> Value;
    /// The devices present. A missing driver is `Ok(vec![])`, never an error
    /// that stops the other runtimes from being listed. GPUs come first
    /// (`Device::is_gpu`), in the order the core lists them, because a
    /// device names itself by its index in this list.
    fn devices(&self) -> Result<Vec<Arc<dyn Device>>>;
}

pub trait Device: Send + Sync {
    /// Live properties read from the OS or driver.
    fn properties(&self) -> Value;
    /// Device memory of `size` bytes (size > 0, validated above).
    fn allocate(&self, size: usize) -> Result<Arc<dyn Buffer>>;
    /// Host memory the device copies to and from at full speed (pinned,
    /// mapped), for `create_host_buffer`; runtimes without such memory
    /// give an ordinary buffer, which copy commands handle the same way.
    fn allocate_host(&self, size: usize) -> Result<Arc<dyn Buffer>> {
        self.allocate(size)
    }
    fn load_library(&self, source: &LibrarySource) -> Result<Arc<dyn Library>>;
    fn create_event(&self, event_type: EventType) -> Result<Arc<dyn Event>>;
    fn create_stream(&self) -> Result<Arc<dyn Stream>>;
    /// Turns a validated list of operations into something that can be run
    /// many times without re-encoding.
    fn encode(&self, ops: Vec<Op>) -> Result<Arc<dyn Schedule>>;
    /// `encode` for a schedule created with `profile=True`: the result
    /// records when each operation ran (`Schedule::timings`). A runtime
    /// without device timestamps encodes as usual, and the object model
    /// reports the host-measured time of whole runs only.
    fn encode_profiled(&self, ops: Vec<Op>) -> Result<Arc<dyn Schedule>> {
        self.encode(ops)
    }
    /// A buffer over device memory something else owns (zero-copy interop,
    /// e.g. a torch or CuPy CUDA tensor); `owner` lives as long as the buffer.
    fn wrap_device_memory(
        &self,
        address: u64,
        size: usize,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Result<Arc<dyn Buffer>> {
        let _ = (address, size, owner);
        Err(crate::error::Error::new(
            crate::error::Status::NotSupported,
            "this runtime cannot wrap foreign device memory",
        ))
    }
    /// Blocks until the work queued on the device's default stream is done.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    /// Frees what waits only for finished work (retired runs, deferred
    /// frees), so an allocation that failed can be tried again.
    fn reclaim(&self) {}
    /// Where this device's memory lives, as interop protocols name it.
    /// A backend whose `Buffer::address` is not a pointer other libraries
    /// can use keeps the default: its buffers are never exported in place.
    fn memory_domain(&self) -> MemoryDomain {
        MemoryDomain::Opaque
    }
    /// Blocks until another library's work on this device, ordered on
    /// `stream` (a raw handle of this runtime's stream type), has finished.
    fn synchronize_external_stream(&self, stream: ProducerStream) -> Result<()> {
        let _ = stream;
        Err(crate::error::Error::new(
            crate::error::Status::NotSupported,
            "this runtime has no external streams",
        ))
    }
    /// Whether this device's copy commands may read and write memory of
    /// `other`, another device: a GPU of the same runtime (a peer copy, or
    /// one the driver stages), or host memory. The backend prepares the
    /// path here (CUDA enables peer access), once per pair. Default: no.
    fn can_copy_with(&self, other: &dyn Device) -> Result<bool> {
        let _ = other;
        Ok(false)
    }
    /// Whether `address` is memory of this device (for zero-copy imports).
    fn owns_address(&self, address: u64) -> bool {
        let _ = address;
        false
    }
    /// This device's number in its driver (CUDA ordinal, ...), for interop
    /// protocols that name devices that way.
    fn native_ordinal(&self) -> i64;
    /// A GPU (property `Type` "gpu"), not a CPU or a software device: GPUs
    /// are listed first.
    fn is_gpu(&self) -> bool {
        self.properties()["Type"] == "gpu"
    }
}

pub trait Buffer: Send + Sync {
    fn size(&self) -> usize;
    /// Host to buffer; `offset + src.len() <= size` is checked above.
    fn write(&self, offset: usize, src: &[u8]) -> Result<()>;
    /// Buffer to host; `offset + dst.len() <= size` is checked above.
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// The address a kernel receives for this buffer.
    fn address(&self) -> u64;
    /// For a view (`SubBuffer`): the buffer it is part of and its offset
    /// there, for runtimes that bind their own buffer objects, not addresses.
    fn parent(&self) -> Option<(&Arc<dyn Buffer>, usize)> {
        None
    }
}

/// Bytes `offset..offset + size` of another buffer: a `buffer[a:b]` view.
/// It holds the parent, so the memory lives while the view does. Runtimes
/// that pass buffers by address need nothing more (the address is offset).
pub struct SubBuffer {
    parent: Arc<dyn Buffer>,
    offset: usize,
    size: usize,
}

impl SubBuffer {
    /// `offset + size <= parent.size()` is checked above.
    pub fn new(parent: Arc<dyn Buffer>, offset: usize, size: usize) -> SubBuffer {
        // A view of a view is a view of the first parent.
        match parent.parent() {
            Some((root, base)) => SubBuffer {
                parent: root.clone(),
                offset: base + offset,
                size,
            },
            None => SubBuffer {
                parent,
                offset,
                size,
            },
        }
    }
}

impl Buffer for SubBuffer {
    fn size(&self) -> usize {
        self.size
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.parent.write(self.offset + offset, src)
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.parent.read(self.offset + offset, dst)
    }
    fn address(&self) -> u64 {
        self.parent.address() + self.offset as u64
    }
    fn parent(&self) -> Option<(&Arc<dyn Buffer>, usize)> {
        Some((&self.parent, self.offset))
    }
}

pub trait Library: Send + Sync {
    fn properties(&self) -> Value;
    /// The named kernel; a miss is `Status::InvalidKernel` naming it.
    fn kernel(&self, name: &str) -> Result<Arc<dyn Kernel>>;
}

pub trait Kernel: Send + Sync {
    fn name(&self) -> &str;
    fn properties(&self) -> Value;
    /// The arguments a command must set, where the backend knows it; the
    /// object model refuses a command that sets fewer.
    fn arity(&self) -> Option<usize> {
        None
    }
    /// The byte size of each parameter, where the driver reports it; the
    /// object model checks every argument against it.
    fn param_sizes(&self) -> Option<&[usize]> {
        None
    }
    /// Checks a launch against what the kernel is known to touch (the
    /// builtin kernels know their bounds); `Ok` where nothing is known.
    fn check_launch(&self, args: &[Arg], dims: &LaunchDims) -> Result<()> {
        let _ = (args, dims);
        Ok(())
    }
    fn as_any(&self) -> &dyn Any;
}

/// A 64-bit timeline: `signal(v)` sets it, `wait(v)` blocks until it is >= v.
pub trait Event: Send + Sync {
    fn signal(&self, value: u64) -> Result<()>;
    fn value(&self) -> Result<u64>;
    /// `Ok(true)` once reached, `Ok(false)` when `timeout` expired first.
    fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<bool>;
    fn as_any(&self) -> &dyn Any;
}

/// An in-order queue of work.
pub trait Stream: Send + Sync {
    /// Blocks until everything submitted so far is done.
    fn synchronize(&self) -> Result<()>;
    /// Like `synchronize`, but gives up after `timeout`: `Ok(false)` when
    /// work is still pending (lets callers stay interruptible).
    fn synchronize_for(&self, timeout: Duration) -> Result<bool> {
        // A backend without a bounded wait: a zero-timeout poll must not block.
        if timeout.is_zero() {
            return Ok(false);
        }
        self.synchronize().map(|_| true)
    }
    fn as_any(&self) -> &dyn Any;
}

/// Where one stream's submissions stand. Every run queued on a stream gets
/// a ticket (1, 2, ... in submission order); a ticket is complete when that
/// run and every earlier one on the stream have finished.
pub trait Submissions: Send + Sync {
    /// Whether `ticket` is complete. Cheap (no driver call, no blocking);
    /// it may lag behind the device, never run ahead of it.
    fn is_complete(&self, ticket: u64) -> bool;
    /// Waits up to `timeout` for `ticket`: `true` once complete. Waiting
    /// never consumes the run's failure (see `take_failure`).
    fn wait(&self, ticket: u64, timeout: Duration) -> bool;
    /// The failure of run `ticket`, once: its own blocking waiter reports it.
    fn take_failure(&self, ticket: u64) -> Option<crate::error::Error>;
}

/// A point in one stream's order: what host copies, frees and blocking
/// callers wait on.
#[derive(Clone)]
pub struct Fence {
    pub queue: Arc<dyn Submissions>,
    pub ticket: u64,
}

impl Fence {
    pub fn is_complete(&self) -> bool {
        self.queue.is_complete(self.ticket)
    }

    pub fn wait(&self, timeout: Duration) -> bool {
        self.queue.wait(self.ticket, timeout)
    }

    /// Whether both fences are on the same stream (the later one then
    /// covers the earlier).
    pub fn same_stream(&self, other: &Fence) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.queue), Arc::as_ptr(&other.queue))
    }
}

/// An encoded schedule.
pub trait Schedule: Send + Sync {
    /// Queues one run of every operation, in order, on `stream` (`None`:
    /// the device's default stream) and returns its fence. The submission
    /// keeps the schedule (its buffers, kernels and events) alive until the
    /// run completes, whatever the caller drops. `blocking` says the caller
    /// waits for the fence at once: a backend may then run the work on the
    /// calling thread, provided stream order holds.
    fn submit(&self, stream: Option<&dyn Stream>, blocking: bool) -> Result<Fence>;
    /// For a profiled schedule: per operation, (start, end) in milliseconds
    /// on the device's clock, of the last run that completed.
    fn timings(&self) -> Option<Vec<(f64, f64)>> {
        None
    }
    /// Whether `timings` are on the host's trace clock (`trace::now_us`,
    /// in ms) rather than relative to the run's first operation.
    fn timings_on_host_clock(&self) -> bool {
        false
    }
}
