//! The OpenCL API as `crate::Result`s and typed RAII handles.
//!
//! Every call is checked; a failure names the call's purpose and the
//! CL_* error. Each handle owns one reference to its OpenCL object and
//! releases it on drop, except in a process forked after OpenCL was opened
//! (the implementation's threads are not there: a release could hang), where
//! it is leaked.

// OpenCL handles are opaque pointers the implementation checks; Rust never
// dereferences them.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::atomic::{AtomicU32, Ordering};

use super::sys::{self, *};
use crate::error::{Error, Result, Status};

static OPENED_IN: AtomicU32 = AtomicU32::new(0);

/// The loader, remembering which process opened it.
pub fn api() -> std::result::Result<&'static Api, String> {
    let a = sys::api()?;
    let _ = OPENED_IN.compare_exchange(0, crate::process::id(), Ordering::SeqCst, Ordering::SeqCst);
    Ok(a)
}

/// Whether this is the process that opened OpenCL (not a forked child).
pub fn same_process() -> bool {
    OPENED_IN.load(Ordering::SeqCst) == crate::process::id()
}

/// "CL_INVALID_VALUE (-30)".
pub fn error_name(code: cl_int) -> String {
    let name = match code {
        0 => "CL_SUCCESS",
        -1 => "CL_DEVICE_NOT_FOUND",
        -2 => "CL_DEVICE_NOT_AVAILABLE",
        -3 => "CL_COMPILER_NOT_AVAILABLE",
        -4 => "CL_MEM_OBJECT_ALLOCATION_FAILURE",
        -5 => "CL_OUT_OF_RESOURCES",
        -6 => "CL_OUT_OF_HOST_MEMORY",
        -7 => "CL_PROFILING_INFO_NOT_AVAILABLE",
        -8 => "CL_MEM_COPY_OVERLAP",
        -11 => "CL_BUILD_PROGRAM_FAILURE",
        -12 => "CL_MAP_FAILURE",
        -13 => "CL_MISALIGNED_SUB_BUFFER_OFFSET",
        -14 => "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST",
        -17 => "CL_LINK_PROGRAM_FAILURE",
        -19 => "CL_KERNEL_ARG_INFO_NOT_AVAILABLE",
        -30 => "CL_INVALID_VALUE",
        -31 => "CL_INVALID_DEVICE_TYPE",
        -32 => "CL_INVALID_PLATFORM",
        -33 => "CL_INVALID_DEVICE",
        -34 => "CL_INVALID_CONTEXT",
        -35 => "CL_INVALID_QUEUE_PROPERTIES",
        -36 => "CL_INVALID_COMMAND_QUEUE",
        -37 => "CL_INVALID_HOST_PTR",
        -38 => "CL_INVALID_MEM_OBJECT",
        -42 => "CL_INVALID_BINARY",
        -43 => "CL_INVALID_BUILD_OPTIONS",
        -44 => "CL_INVALID_PROGRAM",
        -45 => "CL_INVALID_PROGRAM_EXECUTABLE",
        -46 => "CL_INVALID_KERNEL_NAME",
        -47 => "CL_INVALID_KERNEL_DEFINITION",
        -48 => "CL_INVALID_KERNEL",
        -49 => "CL_INVALID_ARG_INDEX",
        -50 => "CL_INVALID_ARG_VALUE",
        -51 => "CL_INVALID_ARG_SIZE",
        -52 => "CL_INVALID_KERNEL_ARGS",
        -53 => "CL_INVALID_WORK_DIMENSION",
        -54 => "CL_INVALID_WORK_GROUP_SIZE",
        -55 => "CL_INVALID_WORK_ITEM_SIZE",
        -56 => "CL_INVALID_GLOBAL_OFFSET",
        -57 => "CL_INVALID_EVENT_WAIT_LIST",
        -58 => "CL_INVALID_EVENT",
        -59 => "CL_INVALID_OPERATION",
        -61 => "CL_INVALID_BUFFER_SIZE",
        -63 => "CL_INVALID_GLOBAL_WORK_SIZE",
        -1001 => "CL_PLATFORM_NOT_FOUND_KHR",
        _ => "CL error",
    };
    format!("{name} ({code})")
}

fn status_of(code: cl_int) -> Status {
    match code {
        CL_MEM_OBJECT_ALLOCATION_FAILURE | CL_OUT_OF_HOST_MEMORY => Status::OutOfMemory,
        CL_BUILD_PROGRAM_FAILURE | CL_INVALID_BUILD_OPTIONS | CL_COMPILER_NOT_AVAILABLE => {
            Status::CompileError
        }
        CL_INVALID_BINARY | CL_INVALID_PROGRAM => Status::InvalidLibrary,
        CL_INVALID_KERNEL_NAME => Status::InvalidKernel,
        CL_INVALID_ARG_SIZE => Status::InvalidArgument,
        CL_INVALID_WORK_GROUP_SIZE => Status::InvalidSize,
        _ => Status::DriverError,
    }
}

/// `Ok` for CL_SUCCESS, else an error naming the call's purpose.
pub fn check(code: cl_int, what: impl FnOnce() -> String) -> Result<()> {
    if code == CL_SUCCESS {
        Ok(())
    } else {
        Err(Error::new(
            status_of(code),
            format!("OpenCL: {} failed: {}", what(), error_name(code)),
        ))
    }
}

/// Reads a variable-size info value: size query, then the bytes.
fn info_bytes(
    mut get: impl FnMut(usize, *mut c_void, *mut usize) -> cl_int,
    what: impl Fn() -> String,
) -> Result<Vec<u8>> {
    let mut size = 0usize;
    check(get(0, std::ptr::null_mut(), &mut size), &what)?;
    let mut out = vec![0u8; size];
    if size > 0 {
        check(
            get(size, out.as_mut_ptr() as *mut c_void, std::ptr::null_mut()),
            &what,
        )?;
    }
    Ok(out)
}

fn to_string(mut bytes: Vec<u8>) -> String {
    if let Some(end) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(end);
    }
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// A little-endian unsigned value of 1, 2, 4 or 8 bytes.
fn to_u64(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        1 | 2 | 4 | 8 => {
            let mut b = [0u8; 8];
            b[..bytes.len()].copy_from_slice(bytes);
            Some(u64::from_ne_bytes(b))
        }
        _ => None,
    }
}

// ------------------------------------------------------------ discovery

/// The value of an environment variable, kept so it can be written back
/// where it lies if a library tokenizes it in place.
struct EnvGuard {
    name: &'static CStr,
    at: *mut libc::c_char,
    bytes: Vec<u8>,
}

impl EnvGuard {
    fn save(name: &'static CStr) -> Option<EnvGuard> {
        // SAFETY: getenv returns null or a NUL-terminated string in environ.
        let at = unsafe { libc::getenv(name.as_ptr()) };
        if at.is_null() {
            return None;
        }
        // SAFETY: as above: a valid C string.
        let bytes = unsafe { CStr::from_ptr(at) }.to_bytes().to_vec();
        Some(EnvGuard { name, at, bytes })
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        // SAFETY: `at` still points at the variable's value (environ is not
        // reallocated by the loader, which only writes NULs into the value);
        // the same number of bytes is written back.
        unsafe {
            if libc::getenv(self.name.as_ptr()) == self.at {
                std::ptr::copy_nonoverlapping(
                    self.bytes.as_ptr(),
                    self.at as *mut u8,
                    self.bytes.len(),
                );
            }
        }
    }
}

pub fn platforms(a: &Api) -> Result<Vec<cl_platform_id>> {
    // The ICD loader CUDA ships splits OCL_ICD_FILENAMES in place, in the
    // environment itself: child processes then saw only the first ICD
    // (NVIDIA's OpenCL vanished from every subprocess). The loader reads it
    // on its first call; the value is put back after.
    let _env = EnvGuard::save(c"OCL_ICD_FILENAMES");
    let mut n: cl_uint = 0;
    // SAFETY: a count query with a valid out pointer.
    let code = unsafe { (a.clGetPlatformIDs)(0, std::ptr::null_mut(), &mut n) };
    if code == CL_PLATFORM_NOT_FOUND_KHR || n == 0 {
        return Ok(Vec::new());
    }
    check(code, || "listing platforms".into())?;
    let mut ids = vec![std::ptr::null_mut(); n as usize];
    check(
        // SAFETY: `ids` holds `n` entries.
        unsafe { (a.clGetPlatformIDs)(n, ids.as_mut_ptr(), std::ptr::null_mut()) },
        || "listing platforms".into(),
    )?;
    Ok(ids)
}

pub fn platform_string(a: &Api, p: cl_platform_id, param: cl_uint) -> Result<String> {
    info_bytes(
        // SAFETY: an info query into a buffer of the size given.
        |s, v, r| unsafe { (a.clGetPlatformInfo)(p, param, s, v, r) },
        || format!("clGetPlatformInfo({param:#x})"),
    )
    .map(to_string)
}

pub fn devices(a: &Api, p: cl_platform_id) -> Result<Vec<cl_device_id>> {
    let mut n: cl_uint = 0;
    // SAFETY: a count query with a valid out pointer.
    let code =
        unsafe { (a.clGetDeviceIDs)(p, CL_DEVICE_TYPE_ALL, 0, std::ptr::null_mut(), &mut n) };
    if code == CL_DEVICE_NOT_FOUND || n == 0 {
        return Ok(Vec::new());
    }
    check(code, || "listing devices".into())?;
    let mut ids = vec![std::ptr::null_mut(); n as usize];
    check(
        // SAFETY: `ids` holds `n` entries.
        unsafe {
            (a.clGetDeviceIDs)(
                p,
                CL_DEVICE_TYPE_ALL,
                n,
                ids.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        },
        || "listing devices".into(),
    )?;
    Ok(ids)
}

pub fn device_bytes(a: &Api, d: cl_device_id, param: cl_uint) -> Result<Vec<u8>> {
    info_bytes(
        // SAFETY: an info query into a buffer of the size given.
        |s, v, r| unsafe { (a.clGetDeviceInfo)(d, param, s, v, r) },
        || format!("clGetDeviceInfo({param:#x})"),
    )
}

pub fn device_string(a: &Api, d: cl_device_id, param: cl_uint) -> Result<String> {
    device_bytes(a, d, param).map(to_string)
}

pub fn device_u64(a: &Api, d: cl_device_id, param: cl_uint) -> Result<u64> {
    let b = device_bytes(a, d, param)?;
    to_u64(&b).ok_or_else(|| {
        Error::new(
            Status::DriverError,
            format!(
                "OpenCL: clGetDeviceInfo({param:#x}) returned {} bytes",
                b.len()
            ),
        )
    })
}

pub fn device_sizes(a: &Api, d: cl_device_id, param: cl_uint) -> Result<Vec<u64>> {
    let b = device_bytes(a, d, param)?;
    Ok(b.chunks_exact(std::mem::size_of::<usize>())
        .filter_map(to_u64)
        .collect())
}

// ------------------------------------------------------------ handles

macro_rules! handle {
    ($(#[$m:meta])* $name:ident, $raw:ty, $release:ident) => {
        $(#[$m])*
        pub struct $name {
            raw: $raw,
            a: &'static Api,
        }

        // SAFETY: OpenCL objects are thread-safe reference-counted handles.
        unsafe impl Send for $name {}
        // SAFETY: as for Send.
        unsafe impl Sync for $name {}

        impl $name {
            #[allow(dead_code)]
            pub fn raw(&self) -> $raw {
                self.raw
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // Not in a forked child, nor once exit has begun (the
                // driver may have torn itself down: see `process`).
                if same_process() && !crate::process::exiting() {
                    // SAFETY: this handle owns one reference to the object.
                    unsafe { (self.a.$release)(self.raw) };
                }
            }
        }
    };
}

handle!(
    /// A context over one device.
    Context, cl_context, clReleaseContext
);
handle!(
    /// An in-order command queue.
    Queue, cl_command_queue, clReleaseCommandQueue
);
handle!(
    /// A memory object.
    Mem, cl_mem, clReleaseMemObject
);
handle!(
    /// A program (source, IL or binary), built or not.
    Program, cl_program, clReleaseProgram
);
handle!(
    /// One kernel object: its arguments are set once, at encode.
    Kernel, cl_kernel, clReleaseKernel
);
handle!(
    /// An event: a command's completion or a user event.
    Event, cl_event, clReleaseEvent
);

impl Clone for Event {
    fn clone(&self) -> Self {
        // SAFETY: a live event; the clone owns the new reference.
        unsafe { (self.a.clRetainEvent)(self.raw) };
        Event {
            raw: self.raw,
            a: self.a,
        }
    }
}

fn created<T>(
    raw: *mut c_void,
    code: cl_int,
    what: impl FnOnce() -> String,
    wrap: impl FnOnce(*mut c_void) -> T,
) -> Result<T> {
    check(code, what)?;
    if raw.is_null() {
        return Err(Error::new(
            Status::DriverError,
            "OpenCL returned a null handle with CL_SUCCESS",
        ));
    }
    Ok(wrap(raw))
}

impl Context {
    pub fn new(a: &'static Api, platform: cl_platform_id, device: cl_device_id) -> Result<Context> {
        let props = [CL_CONTEXT_PLATFORM, platform as isize, 0];
        let mut code = 0;
        // SAFETY: a zero-terminated property list and one device id.
        let raw = unsafe {
            (a.clCreateContext)(
                props.as_ptr(),
                1,
                &device,
                None,
                std::ptr::null_mut(),
                &mut code,
            )
        };
        created(
            raw,
            code,
            || "creating a context".into(),
            |raw| Context { raw, a },
        )
    }
}

impl Queue {
    /// An in-order queue; `profiling`: its events carry device timestamps
    /// (a device that refuses profiling gets a queue without).
    pub fn new(
        a: &'static Api,
        ctx: &Context,
        device: cl_device_id,
        profiling: bool,
    ) -> Result<Queue> {
        let mut code = 0;
        let props = if profiling {
            CL_QUEUE_PROFILING_ENABLE
        } else {
            0
        };
        // SAFETY: a live context and its device.
        let mut raw = unsafe { (a.clCreateCommandQueue)(ctx.raw, device, props, &mut code) };
        if raw.is_null() && profiling {
            // SAFETY: as above, without profiling.
            raw = unsafe { (a.clCreateCommandQueue)(ctx.raw, device, 0, &mut code) };
        }
        created(
            raw,
            code,
            || "creating a command queue".into(),
            |raw| Queue { raw, a },
        )
    }

    pub fn flush(&self) -> Result<()> {
        // SAFETY: a live queue.
        check(unsafe { (self.a.clFlush)(self.raw) }, || "clFlush".into())
    }

    /// Blocking read of `dst.len()` bytes at `offset`.
    pub fn read(&self, mem: &Mem, offset: usize, dst: &mut [u8]) -> Result<()> {
        // SAFETY: blocking: `dst` is written before the call returns; the
        // range lies within the buffer (checked above the trait).
        check(
            unsafe {
                (self.a.clEnqueueReadBuffer)(
                    self.raw,
                    mem.raw,
                    CL_TRUE,
                    offset,
                    dst.len(),
                    dst.as_mut_ptr() as *mut c_void,
                    0,
                    std::ptr::null(),
                    std::ptr::null_mut(),
                )
            },
            || format!("reading {} bytes from a buffer", dst.len()),
        )
    }

    /// Blocking write of `src` at `offset`.
    pub fn write(&self, mem: &Mem, offset: usize, src: &[u8]) -> Result<()> {
        check(
            // SAFETY: blocking: `src` is read before the call returns.
            unsafe {
                (self.a.clEnqueueWriteBuffer)(
                    self.raw,
                    mem.raw,
                    CL_TRUE,
                    offset,
                    src.len(),
                    src.as_ptr() as *const c_void,
                    0,
                    std::ptr::null(),
                    std::ptr::null_mut(),
                )
            },
            || format!("writing {} bytes to a buffer", src.len()),
        )
    }

    /// Maps the whole buffer (blocking), returns where, and unmaps it:
    /// tells whether a host-pointer buffer is used in place.
    pub fn map_address(&self, mem: &Mem, size: usize) -> Result<usize> {
        let mut code = 0;
        // SAFETY: a blocking map of a live buffer's whole range.
        let p = unsafe {
            (self.a.clEnqueueMapBuffer)(
                self.raw,
                mem.raw,
                CL_TRUE,
                CL_MAP_READ | CL_MAP_WRITE,
                0,
                size,
                0,
                std::ptr::null(),
                std::ptr::null_mut(),
                &mut code,
            )
        };
        check(code, || "mapping a buffer".into())?;
        let mut ev = std::ptr::null_mut();
        // SAFETY: unmapping the pointer just mapped; then waiting for it.
        unsafe {
            check(
                (self.a.clEnqueueUnmapMemObject)(
                    self.raw,
                    mem.raw,
                    p,
                    0,
                    std::ptr::null(),
                    &mut ev,
                ),
                || "unmapping a buffer".into(),
            )?;
            let _ = (self.a.clWaitForEvents)(1, &ev);
            (self.a.clReleaseEvent)(ev);
        }
        Ok(p as usize)
    }

    /// Enqueues a kernel; returns its event when `want_event`.
    pub fn ndrange(
        &self,
        k: &Kernel,
        global: &[usize; 3],
        local: &[usize; 3],
        wait: Option<&Event>,
        want_event: bool,
    ) -> Result<Option<Event>> {
        let mut ev = std::ptr::null_mut();
        let (n, list) = match wait {
            Some(e) => (1, &e.raw as *const cl_event),
            None => (0, std::ptr::null()),
        };
        // SAFETY: a kernel whose arguments were all set at encode; sizes
        // are 3-element arrays; the wait list holds `n` live events.
        let code = unsafe {
            (self.a.clEnqueueNDRangeKernel)(
                self.raw,
                k.raw,
                3,
                std::ptr::null(),
                global.as_ptr(),
                local.as_ptr(),
                n,
                list,
                if want_event {
                    &mut ev
                } else {
                    std::ptr::null_mut()
                },
            )
        };
        check(code, || "enqueueing a kernel".into())?;
        Ok(want_event.then(|| Event { raw: ev, a: self.a }))
    }

    /// Enqueues a copy of `size` bytes between two buffers of this
    /// context; returns its event when `want_event`.
    pub fn copy(
        &self,
        src: &Mem,
        dst: &Mem,
        src_offset: usize,
        dst_offset: usize,
        size: usize,
        want_event: bool,
    ) -> Result<Option<Event>> {
        let mut ev = std::ptr::null_mut();
        // SAFETY: live buffers; the ranges lie within them (checked above
        // the trait) and do not overlap within one buffer.
        let code = unsafe {
            (self.a.clEnqueueCopyBuffer)(
                self.raw,
                src.raw,
                dst.raw,
                src_offset,
                dst_offset,
                size,
                0,
                std::ptr::null(),
                if want_event {
                    &mut ev
                } else {
                    std::ptr::null_mut()
                },
            )
        };
        check(code, || format!("enqueueing a copy of {size} bytes"))?;
        Ok(want_event.then(|| Event { raw: ev, a: self.a }))
    }

    /// Enqueues a fill of `size` bytes at `offset` with `pattern` repeated.
    pub fn fill(
        &self,
        mem: &Mem,
        pattern: &[u8],
        offset: usize,
        size: usize,
        want_event: bool,
    ) -> Result<Option<Event>> {
        let mut ev = std::ptr::null_mut();
        // SAFETY: a live buffer; the pattern is copied by the call; the
        // range lies within the buffer and is a multiple of the pattern.
        let code = unsafe {
            (self.a.clEnqueueFillBuffer)(
                self.raw,
                mem.raw,
                pattern.as_ptr() as *const c_void,
                pattern.len(),
                offset,
                size,
                0,
                std::ptr::null(),
                if want_event {
                    &mut ev
                } else {
                    std::ptr::null_mut()
                },
            )
        };
        check(code, || format!("enqueueing a fill of {size} bytes"))?;
        Ok(want_event.then(|| Event { raw: ev, a: self.a }))
    }

    /// A barrier waiting for `wait` (and, in order, everything before it).
    pub fn barrier(&self, wait: Option<&Event>) -> Result<Event> {
        let mut ev = std::ptr::null_mut();
        let (n, list) = match wait {
            Some(e) => (1, &e.raw as *const cl_event),
            None => (0, std::ptr::null()),
        };
        check(
            // SAFETY: the wait list holds `n` live events.
            unsafe { (self.a.clEnqueueBarrierWithWaitList)(self.raw, n, list, &mut ev) },
            || "enqueueing a barrier".into(),
        )?;
        Ok(Event { raw: ev, a: self.a })
    }
}

impl Mem {
    /// A buffer of `size` bytes; `host` (with CL_MEM_USE_HOST_PTR) is
    /// memory the caller keeps alive longer than the buffer.
    pub fn new(a: &'static Api, ctx: &Context, size: usize, host: Option<*mut u8>) -> Result<Mem> {
        let mut code = 0;
        let (flags, ptr) = match host {
            Some(p) => (CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR, p as *mut c_void),
            None => (CL_MEM_READ_WRITE, std::ptr::null_mut()),
        };
        // SAFETY: a live context; `ptr` (if any) outlives the buffer.
        let raw = unsafe { (a.clCreateBuffer)(ctx.raw, flags, size, ptr, &mut code) };
        created(
            raw,
            code,
            || format!("allocating a buffer of {size} bytes"),
            |raw| Mem { raw, a },
        )
    }
}

impl Mem {
    /// Bytes `offset..offset + size` of this buffer as a buffer of their
    /// own (`offset` must be a multiple of the device's base alignment).
    pub fn sub_buffer(&self, offset: usize, size: usize) -> Result<Mem> {
        let region = [offset, size];
        let mut code = 0;
        // SAFETY: a live buffer and a two-size_t region, read during the call.
        let raw = unsafe {
            (self.a.clCreateSubBuffer)(
                self.raw,
                CL_MEM_READ_WRITE,
                CL_BUFFER_CREATE_TYPE_REGION,
                region.as_ptr() as *const c_void,
                &mut code,
            )
        };
        created(
            raw,
            code,
            || {
                format!(
                    "making a view of bytes {offset}..{} of a buffer",
                    offset + size
                )
            },
            |raw| Mem { raw, a: self.a },
        )
    }
}

impl Program {
    pub fn with_source(a: &'static Api, ctx: &Context, source: &[u8]) -> Result<Program> {
        let mut code = 0;
        let ptr = source.as_ptr() as *const c_char;
        let len = source.len();
        // SAFETY: one string of `len` bytes (no NUL needed with a length).
        let raw = unsafe { (a.clCreateProgramWithSource)(ctx.raw, 1, &ptr, &len, &mut code) };
        created(
            raw,
            code,
            || "creating a program from source".into(),
            |raw| Program { raw, a },
        )
    }

    pub fn with_binary(
        a: &'static Api,
        ctx: &Context,
        device: cl_device_id,
        binary: &[u8],
    ) -> Result<Program> {
        let mut code = 0;
        let mut status = 0;
        let ptr = binary.as_ptr();
        let len = binary.len();
        // SAFETY: one binary of `len` bytes for one device.
        let raw = unsafe {
            (a.clCreateProgramWithBinary)(ctx.raw, 1, &device, &len, &ptr, &mut status, &mut code)
        };
        if code == CL_SUCCESS && status != CL_SUCCESS {
            code = status;
        }
        created(
            raw,
            code,
            || "creating a program from a binary".into(),
            |raw| Program { raw, a },
        )
    }

    /// `None` when the implementation has no clCreateProgramWithIL.
    pub fn with_il(a: &'static Api, ctx: &Context, il: &[u8]) -> Option<Result<Program>> {
        let f = a.clCreateProgramWithIL?;
        let mut code = 0;
        // SAFETY: `il.len()` bytes of IL.
        let raw = unsafe { f(ctx.raw, il.as_ptr() as *const c_void, il.len(), &mut code) };
        Some(created(
            raw,
            code,
            || "creating a program from SPIR-V".into(),
            |raw| Program { raw, a },
        ))
    }

    /// Builds for `device`: `Err((code, log))` on failure.
    pub fn build(
        &self,
        device: cl_device_id,
        options: &str,
    ) -> std::result::Result<(), (cl_int, String)> {
        let opts = CString::new(options).unwrap_or_default();
        // SAFETY: a live program, one device, NUL-terminated options, no callback.
        let code = unsafe {
            (self.a.clBuildProgram)(
                self.raw,
                1,
                &device,
                opts.as_ptr(),
                None,
                std::ptr::null_mut(),
            )
        };
        if code == CL_SUCCESS {
            Ok(())
        } else {
            Err((code, self.build_log(device)))
        }
    }

    pub fn build_log(&self, device: cl_device_id) -> String {
        info_bytes(
            // SAFETY: an info query into a buffer of the size given.
            |s, v, r| unsafe {
                (self.a.clGetProgramBuildInfo)(self.raw, device, CL_PROGRAM_BUILD_LOG, s, v, r)
            },
            || "reading the build log".into(),
        )
        .map(to_string)
        .unwrap_or_default()
    }

    /// The program's binary for its one device.
    pub fn binary(&self) -> Result<Vec<u8>> {
        let mut size = 0usize;
        check(
            // SAFETY: one device: one size_t.
            unsafe {
                (self.a.clGetProgramInfo)(
                    self.raw,
                    CL_PROGRAM_BINARY_SIZES,
                    std::mem::size_of::<usize>(),
                    &mut size as *mut usize as *mut c_void,
                    std::ptr::null_mut(),
                )
            },
            || "reading the program binary size".into(),
        )?;
        let mut out = vec![0u8; size];
        let mut ptr = out.as_mut_ptr();
        check(
            // SAFETY: one pointer to a buffer of the size just read.
            unsafe {
                (self.a.clGetProgramInfo)(
                    self.raw,
                    CL_PROGRAM_BINARIES,
                    std::mem::size_of::<*mut u8>(),
                    &mut ptr as *mut *mut u8 as *mut c_void,
                    std::ptr::null_mut(),
                )
            },
            || "reading the program binary".into(),
        )?;
        Ok(out)
    }

    pub fn kernel_names(&self) -> Result<Vec<String>> {
        let s = info_bytes(
            // SAFETY: an info query into a buffer of the size given.
            |s, v, r| unsafe {
                (self.a.clGetProgramInfo)(self.raw, CL_PROGRAM_KERNEL_NAMES, s, v, r)
            },
            || "listing the program's kernels".into(),
        )
        .map(to_string)?;
        Ok(s.split(';')
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// What `clGetKernelArgInfo` says of one parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgInfo {
    pub address: cl_uint,
    pub type_name: String,
    pub name: String,
}

impl Kernel {
    pub fn new(a: &'static Api, program: &Program, name: &str) -> Result<Kernel> {
        let c = CString::new(name).map_err(|_| {
            Error::new(
                Status::InvalidValue,
                format!("kernel name {name:?} contains a NUL byte"),
            )
        })?;
        let mut code = 0;
        // SAFETY: a built program and a NUL-terminated name.
        let raw = unsafe { (a.clCreateKernel)(program.raw, c.as_ptr(), &mut code) };
        created(
            raw,
            code,
            || format!("creating kernel '{name}'"),
            |raw| Kernel { raw, a },
        )
    }

    pub fn num_args(&self) -> Result<u32> {
        let mut n: cl_uint = 0;
        check(
            // SAFETY: one cl_uint.
            unsafe {
                (self.a.clGetKernelInfo)(
                    self.raw,
                    CL_KERNEL_NUM_ARGS,
                    4,
                    &mut n as *mut cl_uint as *mut c_void,
                    std::ptr::null_mut(),
                )
            },
            || "reading the kernel's argument count".into(),
        )?;
        Ok(n)
    }

    /// `Ok(None)` when the program was not built with -cl-kernel-arg-info.
    pub fn arg_info(&self, index: u32) -> Result<Option<ArgInfo>> {
        let mut address: cl_uint = 0;
        // SAFETY: one cl_uint.
        let code = unsafe {
            (self.a.clGetKernelArgInfo)(
                self.raw,
                index,
                CL_KERNEL_ARG_ADDRESS_QUALIFIER,
                4,
                &mut address as *mut cl_uint as *mut c_void,
                std::ptr::null_mut(),
            )
        };
        if code == CL_KERNEL_ARG_INFO_NOT_AVAILABLE {
            return Ok(None);
        }
        check(code, || format!("reading argument {index}'s info"))?;
        let text = |param| {
            info_bytes(
                // SAFETY: an info query into a buffer of the size given.
                |s, v, r| unsafe { (self.a.clGetKernelArgInfo)(self.raw, index, param, s, v, r) },
                || format!("reading argument {index}'s info"),
            )
            .map(to_string)
        };
        Ok(Some(ArgInfo {
            address,
            type_name: text(CL_KERNEL_ARG_TYPE_NAME)?,
            name: text(CL_KERNEL_ARG_NAME).unwrap_or_default(),
        }))
    }

    pub fn work_group_u64(&self, device: cl_device_id, param: cl_uint) -> Option<u64> {
        let mut b = [0u8; 8];
        let mut size = 0usize;
        // SAFETY: at most 8 bytes into `b`.
        let code = unsafe {
            (self.a.clGetKernelWorkGroupInfo)(
                self.raw,
                device,
                param,
                8,
                b.as_mut_ptr() as *mut c_void,
                &mut size,
            )
        };
        (code == CL_SUCCESS)
            .then(|| to_u64(&b[..size.min(8)]))
            .flatten()
    }

    /// Sets argument `index` to `bytes` (a scalar's value).
    pub fn set_bytes(&self, index: u32, bytes: &[u8]) -> Result<()> {
        // SAFETY: `bytes` is read during the call; the kernel is not shared
        // with another thread while encoding.
        check(
            unsafe {
                (self.a.clSetKernelArg)(
                    self.raw,
                    index,
                    bytes.len(),
                    bytes.as_ptr() as *const c_void,
                )
            },
            || format!("setting argument {index} ({} bytes)", bytes.len()),
        )
    }

    pub fn set_mem(&self, index: u32, mem: &Mem) -> Result<()> {
        check(
            // SAFETY: the address of a cl_mem, read during the call.
            unsafe {
                (self.a.clSetKernelArg)(
                    self.raw,
                    index,
                    std::mem::size_of::<cl_mem>(),
                    &mem.raw as *const cl_mem as *const c_void,
                )
            },
            || format!("setting argument {index} (a buffer)"),
        )
    }

    pub fn set_local(&self, index: u32, bytes: usize) -> Result<()> {
        check(
            // SAFETY: a __local argument takes a size and a null value.
            unsafe { (self.a.clSetKernelArg)(self.raw, index, bytes.max(1), std::ptr::null()) },
            || format!("setting argument {index} ({bytes} bytes of __local memory)"),
        )
    }
}

impl Event {
    pub fn user(a: &'static Api, ctx: &Context) -> Result<Event> {
        let mut code = 0;
        // SAFETY: a live context.
        let raw = unsafe { (a.clCreateUserEvent)(ctx.raw, &mut code) };
        created(
            raw,
            code,
            || "creating a user event".into(),
            |raw| Event { raw, a },
        )
    }

    /// Completes a user event (`status` 0), or fails it (negative).
    pub fn set_status(&self, status: cl_int) -> Result<()> {
        check(
            // SAFETY: a user event, set once.
            unsafe { (self.a.clSetUserEventStatus)(self.raw, status) },
            || "completing a user event".into(),
        )
    }

    /// The device clock, in nanoseconds, when the command started
    /// (`CL_PROFILING_COMMAND_START`) or ended; `None` where the queue does
    /// not profile or the command has not finished.
    pub fn profiling_ns(&self, param: cl_uint) -> Option<u64> {
        let mut t: u64 = 0;
        // SAFETY: one cl_ulong.
        let code = unsafe {
            (self.a.clGetEventProfilingInfo)(
                self.raw,
                param,
                8,
                &mut t as *mut u64 as *mut c_void,
                std::ptr::null_mut(),
            )
        };
        (code == CL_SUCCESS).then_some(t)
    }

    /// The execution status: 0 complete, positive pending, negative failed.
    pub fn status(&self) -> cl_int {
        let mut s: cl_int = 1;
        // SAFETY: one cl_int.
        let code = unsafe {
            (self.a.clGetEventInfo)(
                self.raw,
                CL_EVENT_COMMAND_EXECUTION_STATUS,
                4,
                &mut s as *mut cl_int as *mut c_void,
                std::ptr::null_mut(),
            )
        };
        if code == CL_SUCCESS {
            s
        } else {
            code
        }
    }

    /// Calls `f(user)` once the event completes (or fails), on a thread of
    /// the implementation (possibly at once, on this one).
    ///
    /// # Safety
    /// `f` must take back `user` exactly once and never block for long.
    pub unsafe fn on_complete(&self, f: EventCallback, user: *mut c_void) -> Result<()> {
        check(
            // SAFETY: the caller's promise; the event is live.
            unsafe { (self.a.clSetEventCallback)(self.raw, CL_COMPLETE, f, user) },
            || "setting an event callback".into(),
        )
    }

    pub fn wait(&self) -> Result<()> {
        // SAFETY: one live event.
        check(unsafe { (self.a.clWaitForEvents)(1, &self.raw) }, || {
            "waiting for an event".into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the loader CUDA ships does to `OCL_ICD_FILENAMES` (NULs written
    /// into the value, in the environment), undone by the guard.
    #[test]
    fn env_guard_writes_a_tokenized_value_back() {
        const NAME: &CStr = c"NEXUS_TEST_ENV_GUARD_ICDS";
        let value = "libpocl.so.2:libnvidia-opencl.so.1";
        std::env::set_var("NEXUS_TEST_ENV_GUARD_ICDS", value);
        {
            let guard = EnvGuard::save(NAME).expect("the variable is set");
            // SAFETY: `at` points at the value's bytes in environ; the
            // colon is inside it.
            unsafe { *guard.at.add(value.find(':').unwrap()) = 0 };
            // SAFETY: getenv of a set variable: a valid C string.
            let seen = unsafe { CStr::from_ptr(libc::getenv(NAME.as_ptr())) };
            assert_eq!(seen.to_str().unwrap(), "libpocl.so.2");
        }
        assert_eq!(std::env::var("NEXUS_TEST_ENV_GUARD_ICDS").unwrap(), value);
        assert!(EnvGuard::save(c"NEXUS_TEST_ENV_GUARD_UNSET").is_none());
    }
}
