//! The HIP API as `crate::Result`s: every call is checked, and a failure
//! carries the HIP error name (`hipGetErrorName`), its description and what
//! nexus was doing. The unsafe raw calls live here; the modules above use
//! these wrappers (and the typed handles of `safe`).

// HIP handles are opaque pointers the runtime checks; Rust never
// dereferences them, so passing them is not an unsafe dereference.
#![allow(clippy::not_unsafe_ptr_arg_deref, non_upper_case_globals)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use super::sys::{self, *};
use crate::backends::common::args::ArgPack;
use crate::error::{entry_point, Error, Result, Status};

fn static_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-null, NUL-terminated static string from HIP.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

/// "hipErrorOutOfMemory (out of memory)".
pub fn error_name(d: &Hip, code: hipError_t) -> String {
    // SAFETY: both return pointers to static strings (or null).
    let (name, desc) = unsafe { ((d.hipGetErrorName)(code), (d.hipGetErrorString)(code)) };
    match (static_str(name), static_str(desc)) {
        (Some(n), Some(d)) if n != d => format!("{n} ({d})"),
        (Some(n), _) => n,
        _ => format!("HIP error {code}"),
    }
}

fn status_of(code: hipError_t) -> Status {
    match code {
        hipErrorOutOfMemory => Status::OutOfMemory,
        hipErrorInvalidImage
        | hipErrorNoBinaryForGpu
        | hipErrorInvalidKernelFile
        | hipErrorSharedObjectInitFailed => Status::InvalidLibrary,
        hipErrorNotFound => Status::InvalidKernel,
        _ => Status::DriverError,
    }
}

/// `Ok` for hipSuccess, else an error naming the call's purpose.
pub fn check(d: &Hip, code: hipError_t, what: impl FnOnce() -> String) -> Result<()> {
    if code == hipSuccess {
        Ok(())
    } else {
        Err(Error::new(
            status_of(code),
            format!("HIP: {} failed: {}", what(), error_name(d, code)),
        ))
    }
}

pub fn init(d: &Hip) -> Result<()> {
    // SAFETY: plain runtime call.
    check(d, unsafe { (d.hipInit)(0) }, || "hipInit".into())
}

pub fn driver_version(d: &Hip) -> Result<i32> {
    let mut v = 0;
    // SAFETY: out-pointer to a local.
    check(d, unsafe { (d.hipDriverGetVersion)(&mut v) }, || {
        "hipDriverGetVersion".into()
    })?;
    Ok(v)
}

/// `HIP_VERSION` of the runtime (major * 10^7 + minor * 10^5 + patch),
/// asked once; 0 when it does not answer.
pub fn runtime_version(d: &Hip) -> i32 {
    static VERSION: OnceLock<i32> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let mut v = 0;
        // SAFETY: out-pointer to a local.
        if unsafe { (d.hipRuntimeGetVersion)(&mut v) } == hipSuccess {
            v
        } else {
            0
        }
    })
}

pub fn device_count(d: &Hip) -> Result<i32> {
    let mut n = 0;
    // SAFETY: out-pointer to a local.
    check(d, unsafe { (d.hipGetDeviceCount)(&mut n) }, || {
        "hipGetDeviceCount".into()
    })?;
    Ok(n)
}

pub fn device_get(d: &Hip, ordinal: i32) -> Result<hipDevice_t> {
    let mut dev = 0;
    // SAFETY: out-pointer to a local.
    check(d, unsafe { (d.hipDeviceGet)(&mut dev, ordinal) }, || {
        format!("hipDeviceGet({ordinal})")
    })?;
    Ok(dev)
}

fn c_buffer_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn device_name(d: &Hip, dev: hipDevice_t) -> Result<String> {
    let mut buf = [0 as c_char; 256];
    check(
        d,
        // SAFETY: HIP writes at most `len` bytes, NUL-terminated.
        unsafe { (d.hipDeviceGetName)(buf.as_mut_ptr(), buf.len() as c_int - 1, dev) },
        || "hipDeviceGetName".into(),
    )?;
    Ok(c_buffer_string(&buf))
}

pub fn device_total_mem(d: &Hip, dev: hipDevice_t) -> Result<usize> {
    let mut n = 0usize;
    // SAFETY: out-pointer to a local.
    check(d, unsafe { (d.hipDeviceTotalMem)(&mut n, dev) }, || {
        "hipDeviceTotalMem".into()
    })?;
    Ok(n)
}

pub fn device_attribute(d: &Hip, ordinal: i32, attr: c_int) -> Result<i32> {
    let mut v = 0;
    check(
        d,
        // SAFETY: out-pointer to a local.
        unsafe { (d.hipDeviceGetAttribute)(&mut v, attr, ordinal) },
        || format!("hipDeviceGetAttribute({attr})"),
    )?;
    Ok(v)
}

pub fn device_pci_bus_id(d: &Hip, ordinal: i32) -> Result<String> {
    let mut buf = [0 as c_char; 64];
    check(
        d,
        // SAFETY: HIP writes at most `len` bytes, NUL-terminated.
        unsafe { (d.hipDeviceGetPCIBusId)(buf.as_mut_ptr(), buf.len() as c_int - 1, ordinal) },
        || "hipDeviceGetPCIBusId".into(),
    )?;
    Ok(c_buffer_string(&buf))
}

/// The device's UUID as 32 hex digits in the usual 8-4-4-4-12 groups.
pub fn device_uuid(d: &Hip, dev: hipDevice_t) -> Result<String> {
    let f = entry_point(d.hipDeviceGetUuid, "hipDeviceGetUuid")?;
    let mut b = [0u8; 16];
    // SAFETY: hipUUID is 16 bytes.
    check(d, unsafe { f(b.as_mut_ptr(), dev) }, || {
        "hipDeviceGetUuid".into()
    })?;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

/// The first NUL-terminated string in `buf` that starts with "gfx" and a
/// digit, up to its first ':' (target features such as ":sramecc+:xnack-").
pub fn find_gfx_name(buf: &[u8]) -> Option<String> {
    let mut start = 0;
    while start + 4 <= buf.len() {
        let at_string_start = start == 0 || buf[start - 1] == 0;
        if at_string_start && buf[start..].starts_with(b"gfx") && buf[start + 3].is_ascii_digit() {
            let end = buf[start..]
                .iter()
                .position(|&b| b == 0 || b == b':')
                .map_or(buf.len(), |e| start + e);
            let name = &buf[start..end];
            if name.iter().all(|b| b.is_ascii_alphanumeric()) {
                return Some(String::from_utf8_lossy(name).into_owned());
            }
        }
        start += 1;
    }
    None
}

/// The device's gfx architecture ("gfx90a"). No attribute gives it, and
/// `hipDeviceProp_t` changed layout in ROCm 6 (`hipGetDevicePropertiesR0600`),
/// so the properties are written into a zeroed buffer far larger than any
/// release's struct and the one string there that reads "gfx<digits>..."
/// (the field `gcnArchName`) is taken, wherever it sits. The marketing
/// name (`name`) never starts with "gfx".
pub fn device_arch(d: &Hip, ordinal: i32) -> Result<String> {
    let f = entry_point(d.hipGetDeviceProperties, "hipGetDeviceProperties")?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is 64 KiB, more than every release's
    // hipDeviceProp_t (under 2 KiB); HIP writes only the struct.
    check(d, unsafe { f(buf.as_mut_ptr(), ordinal) }, || {
        "hipGetDeviceProperties".into()
    })?;
    find_gfx_name(&buf).ok_or_else(|| {
        Error::new(
            Status::DriverError,
            format!("HIP device {ordinal}: no gfx architecture name in its properties"),
        )
    })
}

/// The calling thread's current device.
pub fn get_device(d: &Hip) -> Result<i32> {
    let mut dev = 0;
    // SAFETY: out-pointer to a local.
    check(d, unsafe { (d.hipGetDevice)(&mut dev) }, || {
        "hipGetDevice".into()
    })?;
    Ok(dev)
}

pub fn set_device(d: &Hip, ordinal: i32) -> Result<()> {
    // SAFETY: plain runtime call on a valid ordinal.
    check(d, unsafe { (d.hipSetDevice)(ordinal) }, || {
        format!("hipSetDevice({ordinal})")
    })
}

pub fn mem_alloc(d: &Hip, size: usize) -> Result<u64> {
    let mut p = std::ptr::null_mut();
    // SAFETY: out-pointer to a local; the device is current.
    check(d, unsafe { (d.hipMalloc)(&mut p, size) }, || {
        format!("hipMalloc of {size} bytes")
    })?;
    Ok(p as u64)
}

/// Pinned host memory (mapped into the device address space with
/// `HOST_MALLOC_MAPPED`).
pub fn mem_host_alloc(d: &Hip, size: usize, flags: u32) -> Result<*mut c_void> {
    let mut p = std::ptr::null_mut();
    check(
        d,
        // SAFETY: out-pointer to a local; the device is current.
        unsafe { (d.hipHostMalloc)(&mut p, size, flags) },
        || format!("hipHostMalloc of {size} bytes"),
    )?;
    Ok(p)
}

pub fn mem_host_device_pointer(d: &Hip, host: *mut c_void) -> Result<u64> {
    let mut p = std::ptr::null_mut();
    check(
        d,
        // SAFETY: host is pinned, mapped memory from hipHostMalloc.
        unsafe { (d.hipHostGetDevicePointer)(&mut p, host, 0) },
        || "hipHostGetDevicePointer".into(),
    )?;
    Ok(p as u64)
}

fn pointer_attribute<T: Default>(d: &Hip, attr: c_int, addr: u64) -> Option<T> {
    let mut v = T::default();
    // SAFETY: querying attributes of an address never dereferences it;
    // `T` is the attribute's type (checked by the callers below).
    let r = unsafe {
        (d.hipPointerGetAttribute)(
            &mut v as *mut T as *mut c_void,
            attr,
            addr as usize as hipDeviceptr_t,
        )
    };
    (r == hipSuccess).then_some(v)
}

/// Whether `[ptr, ptr+len)` lies inside one page-locked host allocation
/// (hipHostMalloc / hipHostRegister, by nexus, CuPy, torch, ...).
pub fn is_pinned_host(d: &Hip, ptr: *const u8, len: usize) -> bool {
    let addr = ptr as u64;
    let host = sys::memory_type_host(runtime_version(d));
    if pointer_attribute::<u32>(d, POINTER_ATTRIBUTE_MEMORY_TYPE, addr) != Some(host) {
        return false;
    }
    let start = pointer_attribute::<u64>(d, POINTER_ATTRIBUTE_RANGE_START_ADDR, addr);
    let size = pointer_attribute::<usize>(d, POINTER_ATTRIBUTE_RANGE_SIZE, addr);
    match (start, size) {
        (Some(start), Some(size)) => addr >= start && addr + len as u64 <= start + size as u64,
        _ => false,
    }
}

/// The device ordinal owning device memory at `addr`, if HIP knows it.
pub fn pointer_device_ordinal(d: &Hip, addr: u64) -> Option<i32> {
    let device = sys::memory_type_device(runtime_version(d));
    if pointer_attribute::<u32>(d, POINTER_ATTRIBUTE_MEMORY_TYPE, addr) != Some(device) {
        return None;
    }
    pointer_attribute::<c_int>(d, POINTER_ATTRIBUTE_DEVICE_ORDINAL, addr)
}

pub fn stream_create(d: &Hip) -> Result<hipStream_t> {
    let mut s = std::ptr::null_mut();
    check(
        d,
        // SAFETY: out-pointer to a local; the device is current.
        unsafe { (d.hipStreamCreateWithFlags)(&mut s, STREAM_NON_BLOCKING) },
        || "hipStreamCreateWithFlags".into(),
    )?;
    Ok(s)
}

/// An event; `timed` events also record when they were reached
/// (`event_elapsed_ms`).
pub fn event_create(d: &Hip, timed: bool) -> Result<hipEvent_t> {
    let flags = if timed { 0 } else { EVENT_DISABLE_TIMING };
    let mut e = std::ptr::null_mut();
    check(
        d,
        // SAFETY: out-pointer to a local; the device is current.
        unsafe { (d.hipEventCreateWithFlags)(&mut e, flags) },
        || "hipEventCreateWithFlags".into(),
    )?;
    Ok(e)
}

/// Milliseconds from timed event `start` to timed event `end`; `None`
/// while either is not reached yet.
pub fn event_elapsed_ms(d: &Hip, start: hipEvent_t, end: hipEvent_t) -> Result<Option<f32>> {
    let elapsed = entry_point(d.hipEventElapsedTime, "hipEventElapsedTime")?;
    let mut ms = 0f32;
    // SAFETY: out-pointer to a local; two event handles HIP only reads.
    match unsafe { elapsed(&mut ms, start, end) } {
        hipSuccess => Ok(Some(ms)),
        hipErrorNotReady => Ok(None),
        code => check(d, code, || "hipEventElapsedTime".into()).map(|_| None),
    }
}

/// A module from an image: a code object (ELF), an offload bundle or a
/// fat binary (hipModuleLoadData tells them apart).
pub fn module_load(d: &Hip, image: &[u8]) -> Result<hipModule_t> {
    let mut module = std::ptr::null_mut();
    // SAFETY: the image outlives the call (HIP copies what it keeps).
    let r = unsafe { (d.hipModuleLoadData)(&mut module, image.as_ptr() as *const c_void) };
    check(d, r, || "hipModuleLoadData".into())?;
    Ok(module)
}

pub fn module_get_function(d: &Hip, module: hipModule_t, name: &str) -> Result<hipFunction_t> {
    let c = CString::new(name).map_err(|_| {
        Error::new(
            Status::InvalidKernel,
            format!("kernel name {name:?} contains NUL"),
        )
    })?;
    let mut f = std::ptr::null_mut();
    // SAFETY: module is loaded; name is NUL-terminated.
    let r = unsafe { (d.hipModuleGetFunction)(&mut f, module, c.as_ptr()) };
    // ROCm reports a missing symbol as hipErrorNotFound (and some releases
    // as hipErrorInvalidDeviceFunction, 98).
    if r == hipErrorNotFound || r == 98 {
        return Err(Error::new(
            Status::InvalidKernel,
            format!("kernel '{name}' not found in the HIP module (C++ kernels need extern \"C\" to keep their name)"),
        ));
    }
    check(d, r, || format!("hipModuleGetFunction('{name}')"))?;
    Ok(f)
}

pub fn func_attribute(d: &Hip, f: hipFunction_t, attr: c_int) -> Result<i32> {
    let mut v = 0;
    check(
        d,
        // SAFETY: f is a live function handle.
        unsafe { (d.hipFuncGetAttribute)(&mut v, attr, f) },
        || format!("hipFuncGetAttribute({attr})"),
    )?;
    Ok(v)
}

pub fn hiprtc_error(n: &sys::Hiprtc, code: hiprtcResult) -> String {
    // SAFETY: returns a static string.
    let p = unsafe { (n.hiprtcGetErrorString)(code) };
    static_str(p).unwrap_or_else(|| format!("hiprtc error {code}"))
}

// ---- streams, events, graphs, launches, copies and frees ----------------
//
// Handles passed here are ones nexus created and still owns; HIP validates
// them and reports misuse as an error code.

/// `Ok(true)` once the stream has no pending work, `Ok(false)` while it has.
pub fn stream_query(d: &Hip, s: hipStream_t) -> Result<bool> {
    // SAFETY: a stream handle; HIP only reads it.
    match unsafe { (d.hipStreamQuery)(s) } {
        hipSuccess => Ok(true),
        hipErrorNotReady => Ok(false),
        code => check(d, code, || "hipStreamQuery".into()).map(|_| true),
    }
}

/// `Ok(true)` once the work before the event's record is done.
pub fn event_query(d: &Hip, e: hipEvent_t) -> Result<bool> {
    // SAFETY: an event handle; HIP only reads it.
    match unsafe { (d.hipEventQuery)(e) } {
        hipSuccess => Ok(true),
        hipErrorNotReady => Ok(false),
        code => check(d, code, || "hipEventQuery".into()).map(|_| true),
    }
}

pub fn event_record(d: &Hip, e: hipEvent_t, s: hipStream_t) -> Result<()> {
    // SAFETY: live event and stream of the current device.
    check(d, unsafe { (d.hipEventRecord)(e, s) }, || {
        "hipEventRecord".into()
    })
}

pub fn stream_synchronize(d: &Hip, s: hipStream_t) -> Result<()> {
    // SAFETY: a stream handle (or the null stream).
    check(d, unsafe { (d.hipStreamSynchronize)(s) }, || {
        "hipStreamSynchronize".into()
    })
}

pub fn device_synchronize(d: &Hip) -> Result<()> {
    // SAFETY: acts on the calling thread's current device.
    check(d, unsafe { (d.hipDeviceSynchronize)() }, || {
        "hipDeviceSynchronize".into()
    })
}

/// Destroys a stream nexus created (its queued work still completes).
pub fn stream_destroy(d: &Hip, s: hipStream_t) {
    // SAFETY: a stream nexus created and no longer uses.
    unsafe { (d.hipStreamDestroy)(s) };
}

pub fn event_destroy(d: &Hip, e: hipEvent_t) {
    // SAFETY: an event nexus created and no longer uses.
    unsafe { (d.hipEventDestroy)(e) };
}

/// Frees device memory from `hipMalloc` (waits for the device).
pub fn mem_free(d: &Hip, ptr: u64) {
    // SAFETY: memory nexus allocated, freed once, after its last use.
    unsafe { (d.hipFree)(ptr as usize as *mut c_void) };
}

/// Frees pinned host memory from `hipHostMalloc`.
pub fn mem_free_host(d: &Hip, p: *mut c_void) {
    // SAFETY: pinned memory nexus allocated, freed once, after its last use.
    unsafe { (d.hipHostFree)(p) };
}

pub fn module_unload(d: &Hip, m: hipModule_t) {
    // SAFETY: a module nexus loaded and no longer uses.
    unsafe { (d.hipModuleUnload)(m) };
}

/// Launches `f` on `s` with the arguments of `args`.
pub fn launch_kernel(
    d: &Hip,
    f: hipFunction_t,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    s: hipStream_t,
    args: &ArgPack,
) -> Result<()> {
    // SAFETY: a live function; the pack's pointers point at its own slots,
    // one per parameter, and HIP copies the values before returning.
    let code = unsafe {
        (d.hipModuleLaunchKernel)(
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
        format!(
            "hipModuleLaunchKernel (groups {grid:?}, group size {block:?}, shared memory {shared})"
        )
    })
}

/// Whether graphs can be built node by node.
pub fn graph_nodes_supported(d: &Hip) -> bool {
    d.hipGraphAddKernelNode.is_some()
}

pub fn graph_create(d: &Hip) -> Result<hipGraph_t> {
    let mut g = std::ptr::null_mut();
    // SAFETY: out-pointer to a local.
    check(d, unsafe { (d.hipGraphCreate)(&mut g, 0) }, || {
        "hipGraphCreate".into()
    })?;
    Ok(g)
}

/// Adds a kernel node after `previous` (none: a root) and returns it.
#[allow(clippy::too_many_arguments)]
pub fn graph_add_kernel_node(
    d: &Hip,
    graph: hipGraph_t,
    previous: Option<hipGraphNode_t>,
    f: hipFunction_t,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    args: &ArgPack,
) -> Result<hipGraphNode_t> {
    let add = entry_point(d.hipGraphAddKernelNode, "hipGraphAddKernelNode")?;
    let dim = |v: [u32; 3]| dim3 {
        x: v[0],
        y: v[1],
        z: v[2],
    };
    let params = hipKernelNodeParams {
        block_dim: dim(block),
        extra: std::ptr::null_mut(),
        func: f,
        grid_dim: dim(grid),
        kernel_params: args.pointers(),
        shared_mem_bytes: shared,
    };
    let deps: Vec<hipGraphNode_t> = previous.into_iter().collect();
    let mut node = std::ptr::null_mut();
    // SAFETY: a live graph and function; the dependency array holds
    // `deps.len()` nodes of this graph; HIP copies the parameters.
    let code = unsafe { add(&mut node, graph, deps.as_ptr(), deps.len(), &params) };
    check(d, code, || {
        format!("hipGraphAddKernelNode (groups {grid:?}, group size {block:?})")
    })?;
    Ok(node)
}

pub fn graph_instantiate(d: &Hip, graph: hipGraph_t) -> Result<hipGraphExec_t> {
    let mut exec = std::ptr::null_mut();
    check(
        d,
        // SAFETY: a complete graph; out-pointer to a local; no log buffer.
        unsafe {
            (d.hipGraphInstantiate)(
                &mut exec,
                graph,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        },
        || "hipGraphInstantiate".into(),
    )?;
    Ok(exec)
}

pub fn graph_launch(d: &Hip, exec: hipGraphExec_t, s: hipStream_t) -> Result<()> {
    // SAFETY: an instantiated graph and a live stream.
    check(d, unsafe { (d.hipGraphLaunch)(exec, s) }, || {
        "hipGraphLaunch".into()
    })
}

pub fn graph_destroy(d: &Hip, graph: hipGraph_t) {
    // SAFETY: a graph nexus created and no longer uses.
    unsafe { (d.hipGraphDestroy)(graph) };
}

pub fn graph_exec_destroy(d: &Hip, exec: hipGraphExec_t) {
    // SAFETY: an instantiated graph nexus no longer launches.
    unsafe { (d.hipGraphExecDestroy)(exec) };
}

/// Queues a 64-bit write of `value` to `address` on `s`.
pub fn stream_write_value64(d: &Hip, s: hipStream_t, address: u64, value: u64) -> Result<()> {
    let f = entry_point(d.hipStreamWriteValue64, "hipStreamWriteValue64")?;
    // SAFETY: `address` is mapped memory that outlives the queued write
    // (its owner is kept alive by the run that queues it).
    check(
        d,
        unsafe { f(s, address as usize as *mut c_void, value, 0) },
        || format!("hipStreamWriteValue64 (signal {value})"),
    )
}

/// Queues on `s` a wait until the 64-bit value at `address` is >= `value`.
pub fn stream_wait_value64(d: &Hip, s: hipStream_t, address: u64, value: u64) -> Result<()> {
    let f = entry_point(d.hipStreamWaitValue64, "hipStreamWaitValue64")?;
    // SAFETY: as for the write: mapped memory that outlives the wait.
    check(
        d,
        unsafe {
            f(
                s,
                address as usize as *mut c_void,
                value,
                STREAM_WAIT_VALUE_GTE,
                u64::MAX,
            )
        },
        || format!("hipStreamWaitValue64 (wait for {value})"),
    )
}

/// Queues a copy of `len` bytes from host `src` to device `dst`.
///
/// # Safety
/// `src` must stay readable, unchanged, for `len` bytes until the copy has
/// completed on `s`.
pub unsafe fn memcpy_htod_async(
    d: &Hip,
    dst: u64,
    src: *const u8,
    len: usize,
    s: hipStream_t,
) -> Result<()> {
    // SAFETY: the caller keeps the source alive until the copy completes;
    // HIP only reads through the (non-const in its signature) pointer.
    let code = unsafe {
        (d.hipMemcpyHtoDAsync)(dst as usize as hipDeviceptr_t, src as *mut c_void, len, s)
    };
    check(d, code, || format!("hipMemcpyHtoDAsync of {len} bytes"))
}

/// Queues a copy of `len` bytes from device `src` to host `dst`.
///
/// # Safety
/// `dst` must stay writable, and unread by anyone else, for `len` bytes
/// until the copy has completed on `s`.
pub unsafe fn memcpy_dtoh_async(
    d: &Hip,
    dst: *mut u8,
    src: u64,
    len: usize,
    s: hipStream_t,
) -> Result<()> {
    // SAFETY: the caller keeps the destination alive until the copy completes.
    let code = unsafe {
        (d.hipMemcpyDtoHAsync)(dst as *mut c_void, src as usize as hipDeviceptr_t, len, s)
    };
    check(d, code, || format!("hipMemcpyDtoHAsync of {len} bytes"))
}

/// Queues a copy of `len` bytes between device memory (the object model
/// checked both ranges against live buffers of this device).
pub fn memcpy_dtod_async(d: &Hip, dst: u64, src: u64, len: usize, s: hipStream_t) -> Result<()> {
    let ptr = |a: u64| a as usize as hipDeviceptr_t;
    // SAFETY: device addresses of live buffers; HIP checks them.
    let code = unsafe { (d.hipMemcpyDtoDAsync)(ptr(dst), ptr(src), len, s) };
    check(d, code, || format!("hipMemcpyDtoDAsync of {len} bytes"))
}

/// Queues a fill of `len` bytes at `dst` with `pattern` (1, 2, 4 or 8
/// bytes, dividing `len`) repeated.
pub fn memset_async(d: &Hip, dst: u64, pattern: &[u8], len: usize, s: hipStream_t) -> Result<()> {
    let ptr = |a: u64| a as usize as hipDeviceptr_t;
    let word = |b: &[u8]| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let code = match pattern.len() {
        // SAFETY: device memory of a live buffer, the range checked by the
        // object model; HIP checks the rest (so for every arm below).
        1 => unsafe { (d.hipMemsetD8Async)(ptr(dst), pattern[0], len, s) },
        // SAFETY: as above.
        2 => unsafe {
            (d.hipMemsetD16Async)(
                ptr(dst),
                u16::from_ne_bytes([pattern[0], pattern[1]]),
                len / 2,
                s,
            )
        },
        // SAFETY: as above.
        4 => unsafe { (d.hipMemsetD32Async)(ptr(dst), word(pattern), len / 4, s) },
        // SAFETY: as above.
        8 if pattern[..4] == pattern[4..] => unsafe {
            (d.hipMemsetD32Async)(ptr(dst), word(pattern), len / 4, s)
        },
        8 => {
            // HIP has no strided 32-bit fill: eight strided byte fills
            // (column k of rows of 8 bytes), one per byte of the pattern.
            let rows = len / 8;
            let mut code = hipSuccess;
            for (k, &b) in pattern.iter().enumerate() {
                // SAFETY: as above; column k of `rows` rows of 8 bytes.
                code = unsafe {
                    (d.hipMemset2DAsync)(ptr(dst + k as u64), 8, c_int::from(b), 1, rows, s)
                };
                if code != hipSuccess {
                    break;
                }
            }
            code
        }
        n => {
            return Err(Error::new(
                Status::InvalidSize,
                format!("a fill pattern of {n} bytes"),
            ))
        }
    };
    check(d, code, || format!("hipMemset of {len} bytes"))
}

/// Queues `f(s, status, user)` on `s` (a stream callback).
///
/// # Safety
/// `f` must accept `user`, which must stay valid until `f` has run; on an
/// error `f` is never called and the caller still owns `user`.
pub unsafe fn stream_add_callback(
    d: &Hip,
    s: hipStream_t,
    f: hipStreamCallback_t,
    user: *mut c_void,
) -> Result<()> {
    // SAFETY: the caller's contract above.
    check(
        d,
        unsafe { (d.hipStreamAddCallback)(s, f, user, 0) },
        || "hipStreamAddCallback".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::find_gfx_name;

    #[test]
    fn the_gfx_name_is_found_wherever_it_sits() {
        let mut buf = vec![0u8; 2048];
        buf[..19].copy_from_slice(b"AMD Instinct MI250X");
        let at = 1160;
        buf[at..at + 22].copy_from_slice(b"gfx90a:sramecc+:xnack-");
        assert_eq!(find_gfx_name(&buf).as_deref(), Some("gfx90a"));
        let mut plain = vec![0u8; 64];
        plain[8..15].copy_from_slice(b"gfx1100");
        assert_eq!(find_gfx_name(&plain).as_deref(), Some("gfx1100"));
        // Not at a string's start, or not followed by a digit: ignored.
        assert_eq!(find_gfx_name(b"xgfx90a\0gfxa\0"), None);
    }
}
