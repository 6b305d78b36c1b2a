//! Typed RAII handles over the HIP objects nexus owns (the CUDA backend's
//! `safe` layer). HIP has no contexts to retain: a `Context` is a device
//! ordinal, bound by making that device current on the calling thread
//! (`hipSetDevice`). Each handle frees its object exactly once with its
//! device current, and frees nothing in a process forked after HIP was
//! initialised: HIP does not survive `fork`, and a child that leaks is
//! better than one that hangs in the runtime.
//!
//! HIP objects are thread-safe; nexus orders their use through streams, so
//! every handle is `Send + Sync`.

use std::ffi::c_void;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use super::result as r;
use super::sys::{
    hipEvent_t, hipFunction_t, hipGraphExec_t, hipGraphNode_t, hipGraph_t, hipModule_t,
    hipStream_t, Hip,
};
use crate::backends::common::args::ArgPack;
use crate::error::{Error, Result, Status};

/// The process that initialised HIP.
static INIT_PID: OnceLock<u32> = OnceLock::new();

/// `hipInit`, once per process; remembers which process did it.
pub fn init(d: &Hip) -> Result<()> {
    r::init(d)?;
    INIT_PID.get_or_init(crate::process::id);
    Ok(())
}

/// Whether this is the process that initialised HIP (false in a child
/// forked after it, where no HIP call may be made).
pub fn same_process() -> bool {
    INIT_PID
        .get()
        .is_none_or(|pid| *pid == crate::process::id())
}

/// One device, as the place HIP objects are made and used.
#[derive(Clone, Copy)]
pub struct Context {
    d: &'static Hip,
    ordinal: i32,
}

impl Context {
    pub fn new(d: &'static Hip, ordinal: i32) -> Context {
        Context { d, ordinal }
    }

    /// Makes the device current on the calling thread until the guard
    /// drops; the thread's previous device is put back.
    pub fn bind(&self) -> Result<CurrentDevice> {
        if !same_process() {
            return Err(Error::new(
                Status::InvalidDevice,
                "HIP cannot be used in a process forked after HIP was initialised (use the 'spawn' start method)",
            ));
        }
        let current = r::get_device(self.d).ok();
        if current == Some(self.ordinal) {
            return Ok(CurrentDevice {
                d: self.d,
                restore: None,
            });
        }
        r::set_device(self.d, self.ordinal)?;
        Ok(CurrentDevice {
            d: self.d,
            restore: current,
        })
    }
}

/// The calling thread's device before `Context::bind`, put back on drop.
/// Not `Send`: a binding belongs to its thread.
#[must_use = "the device stays current only while the guard lives"]
pub struct CurrentDevice {
    d: &'static Hip,
    restore: Option<i32>,
}

impl Drop for CurrentDevice {
    fn drop(&mut self) {
        if let Some(o) = self.restore {
            // A device that was current on this thread before.
            let _ = r::set_device(self.d, o);
        }
    }
}

/// An owned HIP object of type `$raw`, freed by `$free` on its device.
macro_rules! owned_handle {
    ($(#[$doc:meta])* $name:ident($raw:ty), $free:path) => {
        $(#[$doc])*
        pub struct $name {
            ctx: Context,
            raw: $raw,
        }

        // SAFETY: HIP objects may be used from any thread; nexus orders
        // their use through streams.
        unsafe impl Send for $name {}
        // SAFETY: as for Send.
        unsafe impl Sync for $name {}

        impl Drop for $name {
            fn drop(&mut self) {
                if let Ok(_bound) = self.ctx.bind() {
                    $free(self.ctx.d, self.raw);
                }
            }
        }
    };
}

owned_handle!(
    /// A non-blocking stream (destroyed once its queued work completes).
    Stream(hipStream_t),
    r::stream_destroy
);
owned_handle!(
    /// An event: for completion queries, or timed (`Event::create_timed`).
    Event(hipEvent_t),
    r::event_destroy
);
owned_handle!(
    /// A loaded module; its functions live as long as it does.
    Module(hipModule_t),
    r::module_unload
);
owned_handle!(
    /// A graph being built (kept beside its instantiation).
    Graph(hipGraph_t),
    r::graph_destroy
);
owned_handle!(
    /// The handle of an instantiated graph (see `GraphExec`).
    GraphExecHandle(hipGraphExec_t),
    r::graph_exec_destroy
);

/// An instantiated graph, launched whole. The driver does not synchronise
/// a graph exec internally, so launches from several threads (one schedule
/// run on two streams at once) take turns.
pub struct GraphExec {
    handle: GraphExecHandle,
    launching: std::sync::Mutex<()>,
}
owned_handle!(
    /// Device memory from `hipMalloc` (freeing waits for the device).
    DeviceMemory(u64),
    r::mem_free
);

impl Stream {
    pub fn create(ctx: &Context) -> Result<Stream> {
        let _bound = ctx.bind()?;
        Ok(Stream {
            ctx: *ctx,
            raw: r::stream_create(ctx.d)?,
        })
    }

    pub fn raw(&self) -> hipStream_t {
        self.raw
    }

    /// `Ok(true)` once nothing is pending; an error means the device broke.
    pub fn is_idle(&self) -> Result<bool> {
        r::stream_query(self.ctx.d, self.raw)
    }

    pub fn synchronize(&self) -> Result<()> {
        r::stream_synchronize(self.ctx.d, self.raw)
    }
}

/// Queues `f` to run on a runtime thread once the work before it on
/// `stream` is done (a stream callback). `f` must not call HIP (HIP
/// forbids it there).
pub fn launch_host_fn(d: &Hip, stream: hipStream_t, f: Box<dyn FnOnce() + Send>) -> Result<()> {
    unsafe extern "C" fn trampoline(_stream: hipStream_t, _status: i32, user: *mut c_void) {
        // SAFETY: `user` is the box leaked below for exactly this call.
        let f = unsafe { Box::from_raw(user as *mut Box<dyn FnOnce() + Send>) };
        f();
    }
    let user = Box::into_raw(Box::new(f)) as *mut c_void;
    // SAFETY: the trampoline takes back exactly this box, once.
    if let Err(e) = unsafe { r::stream_add_callback(d, stream, trampoline, user) } {
        // SAFETY: not queued, so the trampoline never runs: reclaim the box.
        drop(unsafe { Box::from_raw(user as *mut Box<dyn FnOnce() + Send>) });
        return Err(e);
    }
    Ok(())
}

impl Event {
    pub fn create(ctx: &Context) -> Result<Event> {
        Self::create_with(ctx, false)
    }

    /// An event that records when it is reached, for `ms_since`.
    pub fn create_timed(ctx: &Context) -> Result<Event> {
        Self::create_with(ctx, true)
    }

    fn create_with(ctx: &Context, timed: bool) -> Result<Event> {
        let _bound = ctx.bind()?;
        Ok(Event {
            ctx: *ctx,
            raw: r::event_create(ctx.d, timed)?,
        })
    }

    /// Milliseconds from timed event `origin` to this one (both timed);
    /// `None` until both are reached.
    pub fn ms_since(&self, origin: &Event) -> Result<Option<f32>> {
        r::event_elapsed_ms(self.ctx.d, origin.raw, self.raw)
    }

    pub fn record(&self, stream: hipStream_t) -> Result<()> {
        r::event_record(self.ctx.d, self.raw, stream)
    }

    /// `Ok(true)` once the work before the last record is done.
    pub fn is_reached(&self) -> Result<bool> {
        r::event_query(self.ctx.d, self.raw)
    }
}

/// A kernel of a `Module`: valid while the module is loaded (its owner
/// keeps the module alive).
#[derive(Clone, Copy)]
pub struct Function(hipFunction_t);

// SAFETY: a function handle is immutable and valid on every thread.
unsafe impl Send for Function {}
// SAFETY: as for Send.
unsafe impl Sync for Function {}

impl Function {
    pub fn raw(&self) -> hipFunction_t {
        self.0
    }
}

impl Module {
    /// Loads an image (code object, offload bundle or fat binary).
    pub fn load(ctx: &Context, image: &[u8]) -> Result<Module> {
        let _bound = ctx.bind()?;
        Ok(Module {
            ctx: *ctx,
            raw: r::module_load(ctx.d, image)?,
        })
    }

    pub fn function(&self, name: &str) -> Result<Function> {
        r::module_get_function(self.ctx.d, self.raw, name).map(Function)
    }
}

/// One kernel launch, as a stream launch or a graph node takes it.
pub struct KernelLaunch<'a> {
    pub function: Function,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared: u32,
    pub args: &'a ArgPack,
}

impl KernelLaunch<'_> {
    pub fn launch(&self, d: &Hip, stream: hipStream_t) -> Result<()> {
        r::launch_kernel(
            d,
            self.function.raw(),
            self.grid,
            self.block,
            self.shared,
            stream,
            self.args,
        )
    }
}

impl Graph {
    pub fn create(ctx: &Context) -> Result<Graph> {
        let _bound = ctx.bind()?;
        Ok(Graph {
            ctx: *ctx,
            raw: r::graph_create(ctx.d)?,
        })
    }

    /// Adds a kernel node after `previous` (none: a root).
    pub fn add_kernel(
        &self,
        previous: Option<hipGraphNode_t>,
        k: &KernelLaunch<'_>,
    ) -> Result<hipGraphNode_t> {
        r::graph_add_kernel_node(
            self.ctx.d,
            self.raw,
            previous,
            k.function.raw(),
            k.grid,
            k.block,
            k.shared,
            k.args,
        )
    }

    pub fn instantiate(&self) -> Result<GraphExec> {
        Ok(GraphExec {
            handle: GraphExecHandle {
                ctx: self.ctx,
                raw: r::graph_instantiate(self.ctx.d, self.raw)?,
            },
            launching: std::sync::Mutex::new(()),
        })
    }
}

impl GraphExec {
    /// Queues the graph on `stream`, after every earlier launch of it (the
    /// driver orders launches of one exec, whatever their streams).
    pub fn launch(&self, stream: hipStream_t) -> Result<()> {
        // A leaf lock: only the driver call runs under it.
        let _turn = self
            .launching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r::graph_launch(self.handle.ctx.d, self.handle.raw, stream)
    }
}

impl DeviceMemory {
    pub fn allocate(ctx: &Context, size: usize) -> Result<DeviceMemory> {
        let _bound = ctx.bind()?;
        Ok(DeviceMemory {
            ctx: *ctx,
            raw: r::mem_alloc(ctx.d, size)?,
        })
    }

    /// The device address.
    pub fn raw(&self) -> u64 {
        self.raw
    }
}

/// Page-locked host memory from `hipHostMalloc`, freed on drop.
pub struct PinnedHost {
    ctx: Context,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: plain memory; `&mut self` gives exclusive access to its bytes.
unsafe impl Send for PinnedHost {}
// SAFETY: shared access only reads through `as_slice`.
unsafe impl Sync for PinnedHost {}

impl PinnedHost {
    pub fn allocate(ctx: &Context, len: usize, flags: u32) -> Result<PinnedHost> {
        let _bound = ctx.bind()?;
        let ptr = r::mem_host_alloc(ctx.d, len, flags)? as *mut u8;
        Ok(PinnedHost {
            ctx: *ctx,
            ptr,
            len,
        })
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// The first `len` bytes. The caller orders this read after any DMA
    /// into the memory (an event it waited for).
    pub fn as_slice(&self, len: usize) -> &[u8] {
        // SAFETY: `len` is clamped to the allocation, which lives as long
        // as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, len.min(self.len)) }
    }

    /// The first `len` bytes, writable: `&mut self` excludes other host
    /// users, and the caller orders this after any DMA reading the memory.
    pub fn as_mut_slice(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: as for `as_slice`, with exclusive access through `&mut`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len.min(self.len)) }
    }
}

impl Drop for PinnedHost {
    fn drop(&mut self) {
        if let Ok(_bound) = self.ctx.bind() {
            r::mem_free_host(self.ctx.d, self.ptr as *mut c_void);
        }
    }
}

/// 64-bit words of pinned host memory mapped into every GPU's address
/// space (`hipHostMallocMapped | hipHostMallocPortable`), never freed:
/// allocating or freeing pinned memory synchronises the device, so these
/// slabs are made ahead and kept for the process. Returns each word as the
/// host sees it and its device address (`hipHostGetDevicePointer`).
pub fn mapped_words(
    ctx: &Context,
    bytes: usize,
    flags: u32,
) -> Result<Vec<(&'static AtomicU64, u64)>> {
    let _bound = ctx.bind()?;
    let host = r::mem_host_alloc(ctx.d, bytes, flags)?;
    let device = match r::mem_host_device_pointer(ctx.d, host) {
        Ok(p) => p,
        Err(e) => {
            r::mem_free_host(ctx.d, host);
            return Err(e);
        }
    };
    Ok((0..bytes / 8)
        .map(|i| {
            // SAFETY: an 8-byte aligned word of page-locked memory that is
            // never freed, so `'static`; the GPU writes it with aligned
            // 64-bit stores, so every host access goes through one atomic.
            let word: &'static AtomicU64 =
                unsafe { AtomicU64::from_ptr((host as *mut u64).add(i)) };
            (word, device + (i * 8) as u64)
        })
        .collect())
}
