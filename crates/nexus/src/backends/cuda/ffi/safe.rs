//! Typed RAII handles over the driver objects nexus owns (cudarc's `safe`
//! layer). Each handle carries the context it was made in, binds it to free
//! its object exactly once, and frees nothing in a process forked after the
//! driver was initialised: CUDA does not survive `fork`, and a child that
//! leaks is better than one that hangs in the driver.
//!
//! Driver objects are thread-safe; nexus orders their use through streams,
//! so every handle is `Send + Sync`.

use std::ffi::c_void;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use super::result as r;
use super::sys::{
    self, CUcontext, CUdevice, CUdeviceptr, CUevent, CUfunction, CUgraph, CUgraphExec, CUgraphNode,
    CUmodule, CUstream, Driver,
};
use crate::backends::common::args::ArgPack;
use crate::error::{Error, Result, Status};

/// The process that initialised the driver.
static INIT_PID: OnceLock<u32> = OnceLock::new();

/// `cuInit`, once per process; remembers which process did it.
pub fn init(d: &Driver) -> Result<()> {
    r::init(d)?;
    INIT_PID.get_or_init(crate::process::id);
    Ok(())
}

/// Whether this is the process that initialised the driver (false in a
/// child forked after it, where no driver call may be made).
pub fn same_process() -> bool {
    INIT_PID
        .get()
        .is_none_or(|pid| *pid == crate::process::id())
}

/// A device's primary context, retained for the life of the process (as the
/// CUDA runtime does: other libraries share it).
#[derive(Clone, Copy)]
pub struct Context {
    d: &'static Driver,
    raw: CUcontext,
}

// SAFETY: a context handle is valid on every thread; binding it is per thread.
unsafe impl Send for Context {}
// SAFETY: as for Send.
unsafe impl Sync for Context {}

impl Context {
    pub fn retain_primary(d: &'static Driver, dev: CUdevice) -> Result<Context> {
        Ok(Context {
            d,
            raw: r::primary_ctx_retain(d, dev)?,
        })
    }

    /// Lets this context's work read and write memory of `peer`'s device
    /// directly (a no-op when already enabled).
    pub fn enable_peer_access(&self, peer: &Context) -> Result<()> {
        let _bound = self.bind()?;
        r::ctx_enable_peer_access(self.d, peer.raw)
    }

    /// Makes the context current on the calling thread until the guard
    /// drops. A thread with no current context keeps this one (as the CUDA
    /// runtime does); another library's context is put back.
    pub fn bind(&self) -> Result<CurrentContext> {
        if !same_process() {
            return Err(Error::new(
                Status::InvalidDevice,
                "CUDA cannot be used in a process forked after CUDA was initialised (use the 'spawn' start method)",
            ));
        }
        // Reading is cheaper than setting, and launches bind on every call.
        let current = r::ctx_get_current(self.d);
        if current == self.raw {
            return Ok(CurrentContext {
                d: self.d,
                restore: None,
            });
        }
        r::ctx_set_current(self.d, self.raw)?;
        Ok(CurrentContext {
            d: self.d,
            restore: (!current.is_null()).then_some(current),
        })
    }
}

/// The calling thread's context before `Context::bind`, put back on drop.
/// Not `Send`: a binding belongs to its thread.
#[must_use = "the context stays bound only while the guard lives"]
pub struct CurrentContext {
    d: &'static Driver,
    restore: Option<CUcontext>,
}

impl Drop for CurrentContext {
    fn drop(&mut self) {
        if let Some(c) = self.restore {
            // A context that was current on this thread before.
            let _ = r::ctx_set_current(self.d, c);
        }
    }
}

/// An owned driver object of type `$raw`, freed by `$free` in its context.
macro_rules! owned_handle {
    ($(#[$doc:meta])* $name:ident($raw:ty), $free:path) => {
        $(#[$doc])*
        pub struct $name {
            ctx: Context,
            raw: $raw,
        }

        // SAFETY: the driver's objects may be used from any thread; nexus
        // orders their use through streams.
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
    Stream(CUstream),
    r::stream_destroy
);
owned_handle!(
    /// An event without timing, for completion queries.
    Event(CUevent),
    r::event_destroy
);
owned_handle!(
    /// A loaded module; its functions live as long as it does.
    Module(CUmodule),
    r::module_unload
);
owned_handle!(
    /// A graph being built (kept beside its instantiation).
    Graph(CUgraph),
    r::graph_destroy
);
owned_handle!(
    /// The handle of an instantiated graph (see `GraphExec`).
    GraphExecHandle(CUgraphExec),
    r::graph_exec_destroy
);

/// An instantiated graph, launched whole. The driver does not synchronise
/// a graph exec internally, so launches from several threads take turns
/// (schedules give each stream an exec of its own, but streams beyond
/// their limit share one).
pub struct GraphExec {
    handle: GraphExecHandle,
    launching: std::sync::Mutex<()>,
}
owned_handle!(
    /// Device memory from `cuMemAlloc` (freeing waits for the device).
    DeviceMemory(CUdeviceptr),
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

    pub fn raw(&self) -> CUstream {
        self.raw
    }

    /// `Ok(true)` once nothing is pending; an error means the context broke.
    pub fn is_idle(&self) -> Result<bool> {
        r::stream_query(self.ctx.d, self.raw)
    }

    pub fn synchronize(&self) -> Result<()> {
        r::stream_synchronize(self.ctx.d, self.raw)
    }
}

/// Queues `f` to run on a driver thread once the work before it on
/// `stream` is done. `f` must not call the driver (CUDA forbids it there).
pub fn launch_host_fn(d: &Driver, stream: CUstream, f: Box<dyn FnOnce() + Send>) -> Result<()> {
    unsafe extern "C" fn trampoline(user: *mut c_void) {
        // SAFETY: `user` is the box leaked below for exactly this call.
        let f = unsafe { Box::from_raw(user as *mut Box<dyn FnOnce() + Send>) };
        f();
    }
    let user = Box::into_raw(Box::new(f)) as *mut c_void;
    // SAFETY: the trampoline takes back exactly this box, once.
    if let Err(e) = unsafe { r::launch_host_func(d, stream, trampoline, user) } {
        // SAFETY: not queued, so the trampoline never runs: reclaim the box.
        drop(unsafe { Box::from_raw(user as *mut Box<dyn FnOnce() + Send>) });
        return Err(e);
    }
    Ok(())
}

impl Event {
    pub fn create(ctx: &Context) -> Result<Event> {
        let _bound = ctx.bind()?;
        Ok(Event {
            ctx: *ctx,
            raw: r::event_create(ctx.d)?,
        })
    }

    pub fn record(&self, stream: CUstream) -> Result<()> {
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
pub struct Function(CUfunction);

// SAFETY: a function handle is immutable and valid on every thread.
unsafe impl Send for Function {}
// SAFETY: as for Send.
unsafe impl Sync for Function {}

impl Function {
    pub fn raw(&self) -> CUfunction {
        self.0
    }
}

impl Module {
    /// Loads an image (NUL-terminated PTX, cubin or fatbin).
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
    pub fn launch(&self, d: &Driver, stream: CUstream) -> Result<()> {
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

/// When a programmatic edge lets its downstream kernel launch.
#[derive(Clone, Copy, Debug)]
pub enum LaunchWhen {
    /// Every block of the upstream kernel ran `griddepcontrol.launch_dependents` or exited.
    Triggered,
    /// Every block of the upstream kernel began.
    AllBlocksBegan,
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
        previous: Option<CUgraphNode>,
        k: &KernelLaunch<'_>,
    ) -> Result<CUgraphNode> {
        self.add_kernel_after(previous.as_slice(), k)
    }

    /// Adds a kernel node after every node of `deps` (none: a root).
    pub fn add_kernel_after(
        &self,
        deps: &[CUgraphNode],
        k: &KernelLaunch<'_>,
    ) -> Result<CUgraphNode> {
        r::graph_add_kernel_node(
            self.ctx.d,
            self.raw,
            deps,
            k.function.raw(),
            k.grid,
            k.block,
            k.shared,
            k.args,
        )
    }

    /// Orders kernel node `to` after kernel node `from` programmatically:
    /// `to` may launch once `from` reaches `when`, and its
    /// `griddepcontrol.wait` waits for `from` to complete.
    pub fn add_programmatic_edge(
        &self,
        from: CUgraphNode,
        to: CUgraphNode,
        when: LaunchWhen,
    ) -> Result<()> {
        let port = match when {
            LaunchWhen::Triggered => sys::GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC,
            LaunchWhen::AllBlocksBegan => sys::GRAPH_KERNEL_NODE_PORT_LAUNCH_ORDER,
        };
        r::graph_add_programmatic_edge(self.ctx.d, self.raw, from, to, port)
    }

    /// Adds a copy between unified addresses after `previous`.
    pub fn add_copy(
        &self,
        previous: Option<CUgraphNode>,
        dst: CUdeviceptr,
        src: CUdeviceptr,
        size: usize,
    ) -> Result<CUgraphNode> {
        r::graph_add_memcpy_node(self.ctx.d, self.raw, previous, self.ctx.raw, dst, src, size)
    }

    /// Adds a fill of `size` bytes with `pattern` after `previous`: one
    /// memset node per memset of `memset_plan`, in a chain.
    pub fn add_fill(
        &self,
        previous: Option<CUgraphNode>,
        dst: CUdeviceptr,
        size: usize,
        pattern: &[u8],
    ) -> Result<CUgraphNode> {
        let mut last = previous;
        for m in r::memset_plan(pattern, size)? {
            last = Some(r::graph_add_memset_node(
                self.ctx.d,
                self.raw,
                last,
                self.ctx.raw,
                dst + m.offset,
                m,
            )?);
        }
        last.ok_or_else(|| Error::new(Status::InvalidSize, "an empty fill"))
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
    pub fn launch(&self, stream: CUstream) -> Result<()> {
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
    pub fn raw(&self) -> CUdeviceptr {
        self.raw
    }
}

/// Page-locked host memory from `cuMemHostAlloc`, freed on drop.
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

impl PinnedHost {
    /// The address kernels and copies use for this memory (the host address
    /// under unified addressing).
    pub fn device_address(&self) -> Result<CUdeviceptr> {
        r::mem_host_device_pointer(self.ctx.d, self.ptr as *mut c_void)
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
/// space, never freed: allocating or freeing pinned memory synchronises
/// the device, so these slabs are made ahead and kept for the process.
/// Returns each word as the host sees it and its device address.
pub fn mapped_words(
    ctx: &Context,
    bytes: usize,
    flags: u32,
) -> Result<Vec<(&'static AtomicU64, CUdeviceptr)>> {
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
