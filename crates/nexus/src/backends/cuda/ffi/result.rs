//! The driver API as `crate::Result`s: every call is checked, and a failure
//! carries the CUDA error name (`cuGetErrorName`), its description and what
//! nexus was doing. The unsafe raw calls live here; the modules above use
//! these wrappers (and the few typed handles they return).

// Driver handles are opaque pointers the driver checks; Rust never
// dereferences them, so passing them is not an unsafe dereference.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::{c_int, c_uint, c_void, CStr, CString};

use super::sys::{self, *};
use crate::backends::common::args::ArgPack;
use crate::error::{entry_point, Error, Result, Status};

/// "CUDA_ERROR_OUT_OF_MEMORY (out of memory)".
pub fn error_name(d: &Driver, code: CUresult) -> String {
    let mut name: *const std::ffi::c_char = std::ptr::null();
    let mut desc: *const std::ffi::c_char = std::ptr::null();
    // SAFETY: the driver writes pointers to static strings (or leaves null).
    unsafe {
        (d.cuGetErrorName)(code, &mut name);
        (d.cuGetErrorString)(code, &mut desc);
    }
    let s = |p: *const std::ffi::c_char| {
        if p.is_null() {
            None
        } else {
            // SAFETY: non-null, NUL-terminated static string from the driver.
            Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        }
    };
    match (s(name), s(desc)) {
        (Some(n), Some(d)) => format!("{n} ({d})"),
        (Some(n), None) => n,
        _ => format!("CUDA error {code}"),
    }
}

fn status_of(code: CUresult) -> Status {
    match code {
        CUDA_ERROR_OUT_OF_MEMORY => Status::OutOfMemory,
        CUDA_ERROR_INVALID_IMAGE
        | CUDA_ERROR_NO_BINARY_FOR_GPU
        | CUDA_ERROR_INVALID_PTX
        | CUDA_ERROR_UNSUPPORTED_PTX_VERSION
        | CUDA_ERROR_JIT_COMPILER_NOT_FOUND => Status::InvalidLibrary,
        CUDA_ERROR_NOT_FOUND => Status::InvalidKernel,
        _ => Status::DriverError,
    }
}

/// `Ok` for CUDA_SUCCESS, else an error naming the call's purpose.
pub fn check(d: &Driver, code: CUresult, what: impl FnOnce() -> String) -> Result<()> {
    if code == CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::new(
            status_of(code),
            format!("CUDA: {} failed: {}", what(), error_name(d, code)),
        ))
    }
}

pub fn init(d: &Driver) -> Result<()> {
    // SAFETY: plain driver call.
    check(d, unsafe { (d.cuInit)(0) }, || "cuInit".into())
}

pub fn driver_version(d: &Driver) -> Result<i32> {
    let mut v = 0;
    // SAFETY: out-pointer to a local.
    check(d, unsafe { (d.cuDriverGetVersion)(&mut v) }, || {
        "cuDriverGetVersion".into()
    })?;
    Ok(v)
}

pub fn device_count(d: &Driver) -> Result<i32> {
    let mut n = 0;
    // SAFETY: out-pointer to a local.
    check(d, unsafe { (d.cuDeviceGetCount)(&mut n) }, || {
        "cuDeviceGetCount".into()
    })?;
    Ok(n)
}

pub fn device_get(d: &Driver, ordinal: i32) -> Result<CUdevice> {
    let mut dev = 0;
    // SAFETY: out-pointer to a local.
    check(d, unsafe { (d.cuDeviceGet)(&mut dev, ordinal) }, || {
        format!("cuDeviceGet({ordinal})")
    })?;
    Ok(dev)
}

pub fn device_name(d: &Driver, dev: CUdevice) -> Result<String> {
    let mut buf = [0 as std::ffi::c_char; 256];
    check(
        d,
        // SAFETY: the driver writes at most `len` bytes, NUL-terminated.
        unsafe { (d.cuDeviceGetName)(buf.as_mut_ptr(), buf.len() as c_int, dev) },
        || "cuDeviceGetName".into(),
    )?;
    // SAFETY: NUL-terminated within the buffer.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

pub fn device_total_mem(d: &Driver, dev: CUdevice) -> Result<usize> {
    let mut n = 0usize;
    // SAFETY: out-pointer to a local.
    check(d, unsafe { (d.cuDeviceTotalMem_v2)(&mut n, dev) }, || {
        "cuDeviceTotalMem".into()
    })?;
    Ok(n)
}

pub fn device_attribute(d: &Driver, dev: CUdevice, attr: c_int) -> Result<i32> {
    let mut v = 0;
    check(
        d,
        // SAFETY: out-pointer to a local.
        unsafe { (d.cuDeviceGetAttribute)(&mut v, attr, dev) },
        || format!("cuDeviceGetAttribute({attr})"),
    )?;
    Ok(v)
}

pub fn device_pci_bus_id(d: &Driver, dev: CUdevice) -> Result<String> {
    let mut buf = [0 as std::ffi::c_char; 64];
    check(
        d,
        // SAFETY: the driver writes at most `len` bytes, NUL-terminated.
        unsafe { (d.cuDeviceGetPCIBusId)(buf.as_mut_ptr(), buf.len() as c_int, dev) },
        || "cuDeviceGetPCIBusId".into(),
    )?;
    // SAFETY: NUL-terminated within the buffer.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

/// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi prints it.
pub fn device_uuid(d: &Driver, dev: CUdevice) -> Result<String> {
    let f = entry_point(d.cuDeviceGetUuid, "cuDeviceGetUuid")?;
    let mut b = [0u8; 16];
    // SAFETY: CUuuid is 16 bytes.
    check(d, unsafe { f(b.as_mut_ptr(), dev) }, || {
        "cuDeviceGetUuid".into()
    })?;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "GPU-{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

pub fn primary_ctx_retain(d: &Driver, dev: CUdevice) -> Result<CUcontext> {
    let mut ctx = std::ptr::null_mut();
    check(
        d,
        // SAFETY: out-pointer to a local.
        unsafe { (d.cuDevicePrimaryCtxRetain)(&mut ctx, dev) },
        || "cuDevicePrimaryCtxRetain".into(),
    )?;
    Ok(ctx)
}

/// Whether `dev` can read and write memory of `peer` directly (NVLink or
/// PCIe peer to peer); false where the driver lacks the call.
pub fn device_can_access_peer(d: &Driver, dev: CUdevice, peer: CUdevice) -> bool {
    let Some(f) = d.cuDeviceCanAccessPeer else {
        return false;
    };
    let mut yes: c_int = 0;
    // SAFETY: out-pointer to a local.
    let code = unsafe { f(&mut yes, dev, peer) };
    code == CUDA_SUCCESS && yes != 0
}

/// Lets the current context access memory of `peer`; enabling twice is fine.
pub fn ctx_enable_peer_access(d: &Driver, peer: CUcontext) -> Result<()> {
    let Some(f) = d.cuCtxEnablePeerAccess else {
        return Err(Error::new(
            Status::NotSupported,
            "the CUDA driver has no cuCtxEnablePeerAccess",
        ));
    };
    // SAFETY: `peer` is a retained primary context; a context is current.
    let code = unsafe { f(peer, 0) };
    if code == CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED {
        return Ok(());
    }
    check(d, code, || "cuCtxEnablePeerAccess".into())
}

/// The calling thread's current context (null when it has none).
pub fn ctx_get_current(d: &Driver) -> CUcontext {
    let mut current = std::ptr::null_mut();
    // SAFETY: out-pointer to a local.
    if unsafe { (d.cuCtxGetCurrent)(&mut current) } != CUDA_SUCCESS {
        return std::ptr::null_mut();
    }
    current
}

pub fn ctx_set_current(d: &Driver, ctx: CUcontext) -> Result<()> {
    // SAFETY: ctx is a retained primary context.
    check(d, unsafe { (d.cuCtxSetCurrent)(ctx) }, || {
        "cuCtxSetCurrent".into()
    })
}

pub fn mem_alloc(d: &Driver, size: usize) -> Result<CUdeviceptr> {
    let mut p = 0;
    // SAFETY: out-pointer to a local; a context is current.
    check(d, unsafe { (d.cuMemAlloc_v2)(&mut p, size) }, || {
        format!("cuMemAlloc of {size} bytes")
    })?;
    Ok(p)
}

/// Pinned host memory, mapped into the device address space.
pub fn mem_host_alloc(d: &Driver, size: usize, flags: u32) -> Result<*mut c_void> {
    let mut p = std::ptr::null_mut();
    check(
        d,
        // SAFETY: out-pointer to a local; a context is current.
        unsafe { (d.cuMemHostAlloc)(&mut p, size, flags) },
        || format!("cuMemHostAlloc of {size} bytes"),
    )?;
    Ok(p)
}

pub fn mem_host_device_pointer(d: &Driver, host: *mut c_void) -> Result<CUdeviceptr> {
    let mut p = 0;
    check(
        d,
        // SAFETY: host is pinned, mapped memory from cuMemHostAlloc.
        unsafe { (d.cuMemHostGetDevicePointer_v2)(&mut p, host, 0) },
        || "cuMemHostGetDevicePointer".into(),
    )?;
    Ok(p)
}

/// Whether `[ptr, ptr+len)` lies inside one page-locked host allocation
/// (cuMemHostAlloc / cuMemHostRegister, by nexus, CuPy, torch, ...).
pub fn is_pinned_host(d: &Driver, ptr: *const u8, len: usize) -> bool {
    let addr = ptr as u64;
    if pointer_memory_type(d, addr) != Some(MEMORYTYPE_HOST) {
        return false;
    }
    let start = pointer_attribute::<u64>(d, POINTER_ATTRIBUTE_RANGE_START_ADDR, addr);
    let size = pointer_attribute::<usize>(d, POINTER_ATTRIBUTE_RANGE_SIZE, addr);
    matches!((start, size), (Some(start), Some(size))
        if addr >= start && addr + len as u64 <= start + size as u64)
}

/// Attribute `attribute` (whose value is a `T`) of an address, `None` where
/// the driver does not know the address (pageable host memory).
fn pointer_attribute<T: Copy + Default>(d: &Driver, attribute: c_int, addr: u64) -> Option<T> {
    let mut value = T::default();
    // SAFETY: querying attributes of an address never dereferences it; the
    // caller names the attribute's value type, written into a local.
    let r =
        unsafe { (d.cuPointerGetAttribute)(&mut value as *mut T as *mut c_void, attribute, addr) };
    (r == CUDA_SUCCESS).then_some(value)
}

/// The device ordinal owning a device pointer, if the driver knows it.
pub fn pointer_device_ordinal(d: &Driver, addr: u64) -> Option<i32> {
    pointer_attribute::<c_int>(d, POINTER_ATTRIBUTE_DEVICE_ORDINAL, addr)
}

pub fn stream_create(d: &Driver) -> Result<CUstream> {
    let mut s = std::ptr::null_mut();
    check(
        d,
        // SAFETY: out-pointer to a local; a context is current.
        unsafe { (d.cuStreamCreate)(&mut s, STREAM_NON_BLOCKING) },
        || "cuStreamCreate".into(),
    )?;
    Ok(s)
}

pub fn event_create(d: &Driver) -> Result<CUevent> {
    let mut e = std::ptr::null_mut();
    check(
        d,
        // SAFETY: out-pointer to a local; a context is current.
        unsafe { (d.cuEventCreate)(&mut e, EVENT_DISABLE_TIMING) },
        || "cuEventCreate".into(),
    )?;
    Ok(e)
}

/// A module from an image (PTX text NUL-terminated, cubin or fatbin); the
/// JIT's error log goes into the error message.
pub fn module_load(d: &Driver, image: &[u8]) -> Result<CUmodule> {
    let mut module = std::ptr::null_mut();
    let mut log = vec![0u8; 16 * 1024];
    let mut opts = [JIT_ERROR_LOG_BUFFER, JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
    let mut vals = [log.as_mut_ptr() as *mut c_void, log.len() as *mut c_void];
    // SAFETY: the image outlives the call; options point at live storage.
    let r = unsafe {
        (d.cuModuleLoadDataEx)(
            &mut module,
            image.as_ptr() as *const c_void,
            2,
            opts.as_mut_ptr(),
            vals.as_mut_ptr(),
        )
    };
    if r != CUDA_SUCCESS {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
        let mut e = check(d, r, || "cuModuleLoadData".into()).unwrap_err();
        if !text.is_empty() {
            e.message = format!("{}\nJIT log:\n{text}", e.message);
        }
        return Err(e);
    }
    Ok(module)
}

pub fn module_get_function(d: &Driver, module: CUmodule, name: &str) -> Result<CUfunction> {
    let c = CString::new(name).map_err(|_| {
        Error::new(
            Status::InvalidKernel,
            format!("kernel name {name:?} contains NUL"),
        )
    })?;
    let mut f = std::ptr::null_mut();
    // SAFETY: module is loaded; name is NUL-terminated.
    let r = unsafe { (d.cuModuleGetFunction)(&mut f, module, c.as_ptr()) };
    if r == CUDA_ERROR_NOT_FOUND {
        return Err(Error::new(
            Status::InvalidKernel,
            format!("kernel '{name}' not found in the CUDA module (C++ kernels need extern \"C\" to keep their name)"),
        ));
    }
    check(d, r, || format!("cuModuleGetFunction('{name}')"))?;
    // Under lazy module loading (the default since CUDA 12) a kernel's code
    // is loaded at its first launch, and that load waits for the device:
    // behind a stream parked in a wait it would never return. Load now.
    if let Some(load) = d.cuFuncLoad {
        // SAFETY: f is a function handle of a loaded module.
        let r = unsafe { load(f) };
        check(d, r, || format!("cuFuncLoad('{name}')"))?;
    }
    Ok(f)
}

/// The byte size of each of the kernel's parameters, in order (driver
/// 12.4+); `None` when the driver cannot tell.
pub fn func_param_sizes(d: &Driver, f: CUfunction) -> Option<Vec<usize>> {
    let info = d.cuFuncGetParamInfo?;
    let mut sizes = Vec::new();
    // Parameters fill at most 32764 bytes, so at most 32764 of them.
    for index in 0..32764usize {
        let (mut offset, mut size) = (0usize, 0usize);
        // SAFETY: live function handle, out-pointers to locals.
        match unsafe { info(f, index, &mut offset, &mut size) } {
            CUDA_SUCCESS => sizes.push(size),
            CUDA_ERROR_INVALID_VALUE => return Some(sizes),
            _ => return None,
        }
    }
    Some(sizes)
}

pub fn func_attribute(d: &Driver, f: CUfunction, attr: c_int) -> Result<i32> {
    let mut v = 0;
    check(
        d,
        // SAFETY: f is a live function handle.
        unsafe { (d.cuFuncGetAttribute)(&mut v, attr, f) },
        || format!("cuFuncGetAttribute({attr})"),
    )?;
    Ok(v)
}

pub fn nvrtc_error(n: &sys::Nvrtc, code: nvrtcResult) -> String {
    // SAFETY: returns a static string.
    let p = unsafe { (n.nvrtcGetErrorString)(code) };
    if p.is_null() {
        format!("NVRTC error {code}")
    } else {
        // SAFETY: static NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

// ---- streams, events, graphs, launches, copies and frees ----------------
//
// Handles passed here are ones nexus created and still owns; the driver
// validates them and reports misuse as an error code.

/// `Ok(true)` once the stream has no pending work, `Ok(false)` while it has.
pub fn stream_query(d: &Driver, s: CUstream) -> Result<bool> {
    // SAFETY: a stream handle; the driver only reads it.
    match unsafe { (d.cuStreamQuery)(s) } {
        CUDA_SUCCESS => Ok(true),
        CUDA_ERROR_NOT_READY => Ok(false),
        code => check(d, code, || "cuStreamQuery".into()).map(|_| true),
    }
}

/// `Ok(true)` once the work before the event's record is done.
pub fn event_query(d: &Driver, e: CUevent) -> Result<bool> {
    // SAFETY: an event handle; the driver only reads it.
    match unsafe { (d.cuEventQuery)(e) } {
        CUDA_SUCCESS => Ok(true),
        CUDA_ERROR_NOT_READY => Ok(false),
        code => check(d, code, || "cuEventQuery".into()).map(|_| true),
    }
}

pub fn event_record(d: &Driver, e: CUevent, s: CUstream) -> Result<()> {
    // SAFETY: live event and stream of the current context.
    check(d, unsafe { (d.cuEventRecord)(e, s) }, || {
        "cuEventRecord".into()
    })
}

pub fn stream_synchronize(d: &Driver, s: CUstream) -> Result<()> {
    // SAFETY: a stream handle (or one of the driver's constant handles).
    check(d, unsafe { (d.cuStreamSynchronize)(s) }, || {
        "cuStreamSynchronize".into()
    })
}

pub fn ctx_synchronize(d: &Driver) -> Result<()> {
    // SAFETY: acts on the calling thread's current context.
    check(d, unsafe { (d.cuCtxSynchronize)() }, || {
        "cuCtxSynchronize".into()
    })
}

/// Destroys a stream nexus created (its queued work still completes).
pub fn stream_destroy(d: &Driver, s: CUstream) {
    // SAFETY: a stream nexus created and no longer uses.
    unsafe { (d.cuStreamDestroy_v2)(s) };
}

pub fn event_destroy(d: &Driver, e: CUevent) {
    // SAFETY: an event nexus created and no longer uses.
    unsafe { (d.cuEventDestroy_v2)(e) };
}

/// Frees device memory from `cuMemAlloc` (waits for the device).
pub fn mem_free(d: &Driver, ptr: CUdeviceptr) {
    // SAFETY: memory nexus allocated, freed once, after its last use.
    unsafe { (d.cuMemFree_v2)(ptr) };
}

/// Frees pinned host memory from `cuMemHostAlloc`.
pub fn mem_free_host(d: &Driver, p: *mut c_void) {
    // SAFETY: pinned memory nexus allocated, freed once, after its last use.
    unsafe { (d.cuMemFreeHost)(p) };
}

pub fn module_unload(d: &Driver, m: CUmodule) {
    // SAFETY: a module nexus loaded and no longer uses.
    unsafe { (d.cuModuleUnload)(m) };
}

pub fn func_set_attribute(d: &Driver, f: CUfunction, attr: c_int, value: c_int) -> Result<()> {
    // SAFETY: a live function handle.
    check(d, unsafe { (d.cuFuncSetAttribute)(f, attr, value) }, || {
        format!("cuFuncSetAttribute({attr}, {value})")
    })
}

/// Launches `f` on `s` with the arguments of `args`.
pub fn launch_kernel(
    d: &Driver,
    f: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    s: CUstream,
    args: &ArgPack,
) -> Result<()> {
    // SAFETY: a live function; the pack's pointers point at its own slots,
    // one per parameter (checked against the kernel above), and the driver
    // copies the values before returning.
    let code = unsafe {
        (d.cuLaunchKernel)(
            f,
            grid[0],
            grid[1],
            grid[2],
            block[0],
            block[1],
            block[2],
            shared,
            s,
            args.pointers(),
            std::ptr::null_mut(),
        )
    };
    check(d, code, || {
        format!("cuLaunchKernel (groups {grid:?}, group size {block:?}, shared memory {shared})")
    })
}

/// Whether graphs can be built node by node on this driver.
pub fn graph_nodes_supported(d: &Driver) -> bool {
    d.cuGraphAddKernelNode.is_some()
}

pub fn graph_create(d: &Driver) -> Result<CUgraph> {
    let mut g = std::ptr::null_mut();
    // SAFETY: out-pointer to a local; a context is current.
    check(d, unsafe { (d.cuGraphCreate)(&mut g, 0) }, || {
        "cuGraphCreate".into()
    })?;
    Ok(g)
}

/// Adds a kernel node after every node of `deps` (none: a root) and returns it.
#[allow(clippy::too_many_arguments)]
pub fn graph_add_kernel_node(
    d: &Driver,
    graph: CUgraph,
    deps: &[CUgraphNode],
    f: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    args: &ArgPack,
) -> Result<CUgraphNode> {
    let add = entry_point(d.cuGraphAddKernelNode, "cuGraphAddKernelNode")?;
    let params = CUDA_KERNEL_NODE_PARAMS {
        func: f,
        grid_dim: grid,
        block_dim: block,
        shared_mem_bytes: shared,
        kernel_params: args.pointers(),
        extra: std::ptr::null_mut(),
        kern: std::ptr::null_mut(),
        ctx: std::ptr::null_mut(),
    };
    let mut node = std::ptr::null_mut();
    // SAFETY: a live graph and function; the dependency array holds
    // `deps.len()` nodes of this graph; the driver copies the parameters.
    let code = unsafe { add(&mut node, graph, deps.as_ptr(), deps.len(), &params) };
    check(d, code, || {
        format!("cuGraphAddKernelNode (groups {grid:?}, group size {block:?})")
    })?;
    Ok(node)
}

/// Whether graph edges may be programmatic (CUDA 12.3 drivers).
pub fn programmatic_edges_supported(d: &Driver) -> bool {
    d.cuGraphAddDependencies_v2.is_some()
}

/// Adds a programmatic edge from kernel node `from` to kernel node `to`,
/// firing at `from_port` (`GRAPH_KERNEL_NODE_PORT_*`).
pub fn graph_add_programmatic_edge(
    d: &Driver,
    graph: CUgraph,
    from: CUgraphNode,
    to: CUgraphNode,
    from_port: u8,
) -> Result<()> {
    let add = entry_point(d.cuGraphAddDependencies_v2, "cuGraphAddDependencies_v2")?;
    let edge = CUgraphEdgeData {
        from_port,
        type_: GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC,
        ..Default::default()
    };
    // SAFETY: a live graph; one node of it on each side and one edge datum.
    let code = unsafe { add(graph, &from, &to, &edge, 1) };
    check(d, code, || {
        format!("cuGraphAddDependencies_v2 (programmatic edge, port {from_port})")
    })
}

/// Adds a copy of `size` bytes between unified addresses after `previous`.
pub fn graph_add_memcpy_node(
    d: &Driver,
    graph: CUgraph,
    previous: Option<CUgraphNode>,
    ctx: CUcontext,
    dst: CUdeviceptr,
    src: CUdeviceptr,
    size: usize,
) -> Result<CUgraphNode> {
    let add = entry_point(d.cuGraphAddMemcpyNode, "cuGraphAddMemcpyNode")?;
    // SAFETY: an all-zero CUDA_MEMCPY3D is valid (null pointers, zero sizes).
    let mut p: CUDA_MEMCPY3D = unsafe { std::mem::zeroed() };
    p.srcMemoryType = MEMORYTYPE_UNIFIED;
    p.srcDevice = src;
    p.dstMemoryType = MEMORYTYPE_UNIFIED;
    p.dstDevice = dst;
    p.WidthInBytes = size;
    p.Height = 1;
    p.Depth = 1;
    let deps: Vec<CUgraphNode> = previous.into_iter().collect();
    let mut node = std::ptr::null_mut();
    // SAFETY: a live graph and context; `deps` holds `deps.len()` nodes of
    // this graph; the driver copies the parameters.
    let code = unsafe { add(&mut node, graph, deps.as_ptr(), deps.len(), &p, ctx) };
    check(d, code, || format!("cuGraphAddMemcpyNode ({size} bytes)"))?;
    Ok(node)
}

/// Adds one memset (`m`, at `dst`) after `previous`.
pub fn graph_add_memset_node(
    d: &Driver,
    graph: CUgraph,
    previous: Option<CUgraphNode>,
    ctx: CUcontext,
    dst: CUdeviceptr,
    m: Memset,
) -> Result<CUgraphNode> {
    let add = entry_point(d.cuGraphAddMemsetNode, "cuGraphAddMemsetNode")?;
    let p = CUDA_MEMSET_NODE_PARAMS {
        dst,
        pitch: m.pitch,
        value: m.value,
        element_size: m.element_size,
        width: m.width,
        height: m.height,
    };
    let deps: Vec<CUgraphNode> = previous.into_iter().collect();
    let mut node = std::ptr::null_mut();
    // SAFETY: as for the memcpy node.
    let code = unsafe { add(&mut node, graph, deps.as_ptr(), deps.len(), &p, ctx) };
    check(d, code, || {
        format!(
            "cuGraphAddMemsetNode ({} x {} elements of {} bytes)",
            m.height, m.width, m.element_size
        )
    })?;
    Ok(node)
}

/// The driver's memory type of an address (`MEMORYTYPE_HOST` for pinned
/// host memory, `MEMORYTYPE_DEVICE`), `None` for memory it does not know
/// (pageable host memory).
pub fn pointer_memory_type(d: &Driver, addr: u64) -> Option<c_uint> {
    pointer_attribute::<c_uint>(d, POINTER_ATTRIBUTE_MEMORY_TYPE, addr)
}

pub fn graph_instantiate(d: &Driver, graph: CUgraph) -> Result<CUgraphExec> {
    let mut exec = std::ptr::null_mut();
    check(
        d,
        // SAFETY: a complete graph; out-pointer to a local.
        unsafe { (d.cuGraphInstantiateWithFlags)(&mut exec, graph, 0) },
        || "cuGraphInstantiate".into(),
    )?;
    Ok(exec)
}

pub fn graph_launch(d: &Driver, exec: CUgraphExec, s: CUstream) -> Result<()> {
    // SAFETY: an instantiated graph and a live stream.
    check(d, unsafe { (d.cuGraphLaunch)(exec, s) }, || {
        "cuGraphLaunch".into()
    })
}

pub fn graph_destroy(d: &Driver, graph: CUgraph) {
    // SAFETY: a graph nexus created and no longer uses.
    unsafe { (d.cuGraphDestroy)(graph) };
}

pub fn graph_exec_destroy(d: &Driver, exec: CUgraphExec) {
    // SAFETY: an instantiated graph nexus no longer launches.
    unsafe { (d.cuGraphExecDestroy)(exec) };
}

/// Queues a 64-bit write of `value` to `address` on `s`.
pub fn stream_write_value64(
    d: &Driver,
    s: CUstream,
    address: CUdeviceptr,
    value: u64,
) -> Result<()> {
    let f = entry_point(d.cuStreamWriteValue64, "cuStreamWriteValue64")?;
    // SAFETY: `address` is mapped memory that outlives the queued write
    // (its owner is kept alive by the run that queues it).
    check(
        d,
        unsafe { f(s, address, value, STREAM_WRITE_VALUE_DEFAULT) },
        || format!("cuStreamWriteValue64 (signal {value})"),
    )
}

/// Queues on `s` a wait until the 64-bit value at `address` is >= `value`.
pub fn stream_wait_value64(
    d: &Driver,
    s: CUstream,
    address: CUdeviceptr,
    value: u64,
) -> Result<()> {
    let f = entry_point(d.cuStreamWaitValue64, "cuStreamWaitValue64")?;
    // SAFETY: as for the write: mapped memory that outlives the wait.
    check(
        d,
        unsafe { f(s, address, value, STREAM_WAIT_VALUE_GEQ) },
        || format!("cuStreamWaitValue64 (wait for {value})"),
    )
}

/// Queues a copy of `len` bytes between buffers of a device: device memory
/// or its mapped pinned host memory (unified addressing tells which; the
/// object model checked both ranges against live buffers).
pub fn memcpy_async(
    d: &Driver,
    dst: CUdeviceptr,
    src: CUdeviceptr,
    len: usize,
    s: CUstream,
) -> Result<()> {
    // SAFETY: addresses of live buffers; the driver checks them.
    let code = unsafe { (d.cuMemcpyAsync)(dst, src, len, s) };
    check(d, code, || format!("cuMemcpyAsync of {len} bytes"))
}

/// One driver memset: `height` rows of `width` elements of `element_size`
/// (1, 2 or 4) bytes, `pitch` bytes apart, from `offset` bytes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memset {
    pub offset: u64,
    pub value: u32,
    pub element_size: u32,
    pub width: usize,
    pub height: usize,
    pub pitch: usize,
}

/// How a fill of `len` bytes with `pattern` (1, 2, 4 or 8 bytes) maps onto
/// the driver's memsets, which take elements of at most 4 bytes: one memset,
/// or for an 8-byte pattern whose halves differ two strided 32-bit ones
/// (the low words, then the high). Streams and graphs both use it.
pub fn memset_plan(pattern: &[u8], len: usize) -> Result<Vec<Memset>> {
    let word = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let flat = |value, element_size: u32| Memset {
        offset: 0,
        value,
        element_size,
        width: len / element_size as usize,
        height: 1,
        pitch: len,
    };
    let strided = |offset, value| Memset {
        offset,
        value,
        element_size: 4,
        width: 1,
        height: len / 8,
        pitch: 8,
    };
    Ok(match pattern.len() {
        1 => vec![flat(pattern[0] as u32, 1)],
        2 => vec![flat(u16::from_ne_bytes([pattern[0], pattern[1]]) as u32, 2)],
        4 => vec![flat(word(pattern), 4)],
        8 if word(&pattern[..4]) == word(&pattern[4..]) => vec![flat(word(pattern), 4)],
        8 => vec![
            strided(0, word(&pattern[..4])),
            strided(4, word(&pattern[4..])),
        ],
        n => {
            return Err(Error::new(
                Status::InvalidSize,
                format!("a fill pattern of {n} bytes"),
            ))
        }
    })
}

/// Queues a fill of `len` bytes at `dst` with `pattern` repeated.
pub fn memset_async(
    d: &Driver,
    dst: CUdeviceptr,
    pattern: &[u8],
    len: usize,
    s: CUstream,
) -> Result<()> {
    for m in memset_plan(pattern, len)? {
        let at = dst + m.offset;
        // SAFETY: device memory of a live buffer, the range checked by the
        // object model (the plan stays inside it); the driver checks the rest.
        let code = unsafe {
            match (m.element_size, m.height) {
                (1, 1) => (d.cuMemsetD8Async)(at, m.value as u8, m.width, s),
                (2, 1) => (d.cuMemsetD16Async)(at, m.value as u16, m.width, s),
                (_, 1) => (d.cuMemsetD32Async)(at, m.value, m.width, s),
                _ => (d.cuMemsetD2D32Async)(at, m.pitch, m.value, m.width, m.height, s),
            }
        };
        check(d, code, || format!("cuMemset of {len} bytes"))?;
    }
    Ok(())
}

/// Queues a copy of `len` bytes from host `src` to device `dst`.
///
/// # Safety
/// `src` must stay readable, unchanged, for `len` bytes until the copy has
/// completed on `s`.
pub unsafe fn memcpy_htod_async(
    d: &Driver,
    dst: CUdeviceptr,
    src: *const u8,
    len: usize,
    s: CUstream,
) -> Result<()> {
    // SAFETY: the caller keeps the source alive until the copy completes.
    let code = unsafe { (d.cuMemcpyHtoDAsync_v2)(dst, src as *const c_void, len, s) };
    check(d, code, || format!("cuMemcpyHtoDAsync of {len} bytes"))
}

/// Queues a copy of `len` bytes from device `src` to host `dst`.
///
/// # Safety
/// `dst` must stay writable, and unread by anyone else, for `len` bytes
/// until the copy has completed on `s`.
pub unsafe fn memcpy_dtoh_async(
    d: &Driver,
    dst: *mut u8,
    src: CUdeviceptr,
    len: usize,
    s: CUstream,
) -> Result<()> {
    // SAFETY: the caller keeps the destination alive until the copy completes.
    let code = unsafe { (d.cuMemcpyDtoHAsync_v2)(dst as *mut c_void, src, len, s) };
    check(d, code, || format!("cuMemcpyDtoHAsync of {len} bytes"))
}

/// Queues `f(user)` on `s`.
///
/// # Safety
/// `f` must accept `user`, which must stay valid until `f` has run; on an
/// error `f` is never called and the caller still owns `user`.
pub unsafe fn launch_host_func(
    d: &Driver,
    s: CUstream,
    f: CUhostFn,
    user: *mut c_void,
) -> Result<()> {
    // SAFETY: the caller's contract above.
    check(d, unsafe { (d.cuLaunchHostFunc)(s, f, user) }, || {
        "cuLaunchHostFunc".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes what the memsets of a plan write into `len` bytes.
    fn apply(plan: &[Memset], len: usize) -> Vec<u8> {
        let mut out = vec![0xEEu8; len];
        for m in plan {
            let bytes = m.value.to_ne_bytes();
            for row in 0..m.height {
                for e in 0..m.width {
                    let at = m.offset as usize + row * m.pitch + e * m.element_size as usize;
                    out[at..at + m.element_size as usize]
                        .copy_from_slice(&bytes[..m.element_size as usize]);
                }
            }
        }
        out
    }

    #[test]
    fn memset_plans_write_the_pattern_over_the_whole_range() {
        let patterns: [&[u8]; 6] = [
            &[0xAB],
            &(-2i16).to_ne_bytes(),
            &123456i32.to_ne_bytes(),
            &(-(2i64.pow(40)) + 3).to_ne_bytes(),
            &(-1i64).to_ne_bytes(),
            &7i64.to_ne_bytes(),
        ];
        for pattern in patterns {
            let len = 64;
            let plan = memset_plan(pattern, len).unwrap();
            let want: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
            assert_eq!(apply(&plan, len), want, "pattern {pattern:?}");
            assert!(plan.iter().all(|m| [1, 2, 4].contains(&m.element_size)));
        }
        // Equal halves need one memset, unequal ones two.
        assert_eq!(memset_plan(&(-1i64).to_ne_bytes(), 64).unwrap().len(), 1);
        assert_eq!(memset_plan(&7i64.to_ne_bytes(), 64).unwrap().len(), 2);
        assert!(memset_plan(&[1, 2, 3], 6).is_err());
    }
}
