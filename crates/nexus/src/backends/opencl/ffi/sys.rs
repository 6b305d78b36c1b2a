//! Raw OpenCL types, constants and the function table.
//!
//! Nothing here links against OpenCL: the ICD loader (`libOpenCL.so.1`,
//! or `NEXUS_OPENCL_LIBRARY`) is opened with `libloading` the first time
//! the runtime lists its devices, never at import.

#![allow(non_snake_case, non_camel_case_types, dead_code)]

use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

pub type cl_int = i32;
pub type cl_uint = u32;
pub type cl_ulong = u64;
pub type cl_bitfield = u64;
pub type cl_platform_id = *mut c_void;
pub type cl_device_id = *mut c_void;
pub type cl_context = *mut c_void;
pub type cl_command_queue = *mut c_void;
pub type cl_mem = *mut c_void;
pub type cl_program = *mut c_void;
pub type cl_kernel = *mut c_void;
pub type cl_event = *mut c_void;

pub type EventCallback = unsafe extern "C" fn(event: cl_event, status: cl_int, user: *mut c_void);
pub type ContextCallback = unsafe extern "C" fn(
    errinfo: *const c_char,
    private: *const c_void,
    cb: usize,
    user: *mut c_void,
);
pub type BuildCallback = unsafe extern "C" fn(program: cl_program, user: *mut c_void);

pub const CL_SUCCESS: cl_int = 0;
pub const CL_DEVICE_NOT_FOUND: cl_int = -1;
pub const CL_COMPILER_NOT_AVAILABLE: cl_int = -3;
pub const CL_MEM_OBJECT_ALLOCATION_FAILURE: cl_int = -4;
pub const CL_OUT_OF_RESOURCES: cl_int = -5;
pub const CL_OUT_OF_HOST_MEMORY: cl_int = -6;
pub const CL_BUILD_PROGRAM_FAILURE: cl_int = -11;
pub const CL_MISALIGNED_SUB_BUFFER_OFFSET: cl_int = -13;
pub const CL_INVALID_VALUE: cl_int = -30;
pub const CL_INVALID_BINARY: cl_int = -42;
pub const CL_INVALID_BUILD_OPTIONS: cl_int = -43;
pub const CL_INVALID_PROGRAM: cl_int = -44;
pub const CL_INVALID_KERNEL_NAME: cl_int = -46;
pub const CL_INVALID_ARG_SIZE: cl_int = -51;
pub const CL_INVALID_WORK_GROUP_SIZE: cl_int = -54;
pub const CL_INVALID_OPERATION: cl_int = -59;
pub const CL_KERNEL_ARG_INFO_NOT_AVAILABLE: cl_int = -19;
pub const CL_PLATFORM_NOT_FOUND_KHR: cl_int = -1001;

pub const CL_TRUE: cl_uint = 1;
pub const CL_FALSE: cl_uint = 0;

// cl_platform_info
pub const CL_PLATFORM_PROFILE: cl_uint = 0x0900;
pub const CL_PLATFORM_VERSION: cl_uint = 0x0901;
pub const CL_PLATFORM_NAME: cl_uint = 0x0902;
pub const CL_PLATFORM_VENDOR: cl_uint = 0x0903;

// cl_device_type
pub const CL_DEVICE_TYPE_CPU: cl_bitfield = 1 << 1;
pub const CL_DEVICE_TYPE_GPU: cl_bitfield = 1 << 2;
pub const CL_DEVICE_TYPE_ACCELERATOR: cl_bitfield = 1 << 3;
pub const CL_DEVICE_TYPE_ALL: cl_bitfield = 0xFFFF_FFFF;

// cl_device_info
pub const CL_DEVICE_TYPE: cl_uint = 0x1000;
pub const CL_DEVICE_VENDOR_ID: cl_uint = 0x1001;
pub const CL_DEVICE_MAX_COMPUTE_UNITS: cl_uint = 0x1002;
pub const CL_DEVICE_MAX_WORK_ITEM_DIMENSIONS: cl_uint = 0x1003;
pub const CL_DEVICE_MAX_WORK_GROUP_SIZE: cl_uint = 0x1004;
pub const CL_DEVICE_MAX_WORK_ITEM_SIZES: cl_uint = 0x1005;
pub const CL_DEVICE_MAX_CLOCK_FREQUENCY: cl_uint = 0x100C;
pub const CL_DEVICE_ADDRESS_BITS: cl_uint = 0x100D;
pub const CL_DEVICE_MAX_MEM_ALLOC_SIZE: cl_uint = 0x1010;
pub const CL_DEVICE_MAX_PARAMETER_SIZE: cl_uint = 0x1017;
pub const CL_DEVICE_MEM_BASE_ADDR_ALIGN: cl_uint = 0x1019;
pub const CL_DEVICE_GLOBAL_MEM_CACHE_TYPE: cl_uint = 0x101C;
pub const CL_DEVICE_GLOBAL_MEM_CACHELINE_SIZE: cl_uint = 0x101D;
pub const CL_DEVICE_GLOBAL_MEM_CACHE_SIZE: cl_uint = 0x101E;
pub const CL_DEVICE_GLOBAL_MEM_SIZE: cl_uint = 0x101F;
pub const CL_DEVICE_MAX_CONSTANT_BUFFER_SIZE: cl_uint = 0x1020;
pub const CL_DEVICE_LOCAL_MEM_TYPE: cl_uint = 0x1022;
pub const CL_DEVICE_LOCAL_MEM_SIZE: cl_uint = 0x1023;
pub const CL_DEVICE_HOST_UNIFIED_MEMORY: cl_uint = 0x1035;
pub const CL_DEVICE_AVAILABLE: cl_uint = 0x1027;
pub const CL_DEVICE_COMPILER_AVAILABLE: cl_uint = 0x1028;
pub const CL_DEVICE_NAME: cl_uint = 0x102B;
pub const CL_DEVICE_VENDOR: cl_uint = 0x102C;
pub const CL_DRIVER_VERSION: cl_uint = 0x102D;
pub const CL_DEVICE_PROFILE: cl_uint = 0x102E;
pub const CL_DEVICE_VERSION: cl_uint = 0x102F;
pub const CL_DEVICE_EXTENSIONS: cl_uint = 0x1030;
pub const CL_DEVICE_PLATFORM: cl_uint = 0x1031;
pub const CL_DEVICE_OPENCL_C_VERSION: cl_uint = 0x103D;
pub const CL_DEVICE_IL_VERSION: cl_uint = 0x105B;
/// cl_nv_device_attribute_query
pub const CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV: cl_uint = 0x4000;
pub const CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV: cl_uint = 0x4001;
pub const CL_DEVICE_WARP_SIZE_NV: cl_uint = 0x4003;
/// cl_amd_device_attribute_query
pub const CL_DEVICE_BOARD_NAME_AMD: cl_uint = 0x4038;
pub const CL_DEVICE_WAVEFRONT_WIDTH_AMD: cl_uint = 0x4043;

// cl_context_info / properties
pub const CL_CONTEXT_PLATFORM: isize = 0x1084;

// cl_mem_flags
pub const CL_MEM_READ_WRITE: cl_bitfield = 1 << 0;
pub const CL_MEM_USE_HOST_PTR: cl_bitfield = 1 << 3;

/// cl_buffer_create_type
pub const CL_BUFFER_CREATE_TYPE_REGION: cl_uint = 0x1220;

// cl_map_flags
pub const CL_MAP_READ: cl_bitfield = 1 << 0;
pub const CL_MAP_WRITE: cl_bitfield = 1 << 1;

// cl_program_info / build info
pub const CL_PROGRAM_NUM_DEVICES: cl_uint = 0x1162;
pub const CL_PROGRAM_BINARY_SIZES: cl_uint = 0x1165;
pub const CL_PROGRAM_BINARIES: cl_uint = 0x1166;
pub const CL_PROGRAM_KERNEL_NAMES: cl_uint = 0x1168;
pub const CL_PROGRAM_BUILD_LOG: cl_uint = 0x1183;

// cl_kernel_info / arg info / work-group info
pub const CL_KERNEL_NUM_ARGS: cl_uint = 0x1191;
pub const CL_KERNEL_ARG_ADDRESS_QUALIFIER: cl_uint = 0x1196;
pub const CL_KERNEL_ARG_TYPE_NAME: cl_uint = 0x1198;
pub const CL_KERNEL_ARG_NAME: cl_uint = 0x119A;
pub const CL_KERNEL_ARG_ADDRESS_GLOBAL: cl_uint = 0x119B;
pub const CL_KERNEL_ARG_ADDRESS_LOCAL: cl_uint = 0x119C;
pub const CL_KERNEL_ARG_ADDRESS_CONSTANT: cl_uint = 0x119D;
pub const CL_KERNEL_ARG_ADDRESS_PRIVATE: cl_uint = 0x119E;
pub const CL_KERNEL_WORK_GROUP_SIZE: cl_uint = 0x11B0;
pub const CL_KERNEL_LOCAL_MEM_SIZE: cl_uint = 0x11B2;
pub const CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE: cl_uint = 0x11B3;
pub const CL_KERNEL_PRIVATE_MEM_SIZE: cl_uint = 0x11B4;

// cl_event_info / execution status
pub const CL_EVENT_COMMAND_EXECUTION_STATUS: cl_uint = 0x11D3;
pub const CL_PROFILING_COMMAND_START: cl_uint = 0x1282;
pub const CL_PROFILING_COMMAND_END: cl_uint = 0x1283;
pub const CL_QUEUE_PROFILING_ENABLE: cl_bitfield = 1 << 1;
pub const CL_COMPLETE: cl_int = 0;

/// Declares the function table: each field is one entry point, resolved by
/// name when the loader is opened; `optional` entries may be missing.
macro_rules! function_table {
    (
        $table:ident {
            $( $name:ident : fn($($arg:ty),*) -> $ret:ty; )*
        }
        optional {
            $( $oname:ident : fn($($oarg:ty),*) -> $oret:ty; )*
        }
    ) => {
        pub struct $table {
            _lib: libloading::Library,
            $( pub $name: unsafe extern "C" fn($($arg),*) -> $ret, )*
            $( pub $oname: Option<unsafe extern "C" fn($($oarg),*) -> $oret>, )*
        }

        impl $table {
            /// Resolves every entry point of an opened library.
            ///
            /// # Safety
            /// The library must be an OpenCL ICD loader (or implementation).
            unsafe fn resolve(lib: libloading::Library) -> Result<Self, String> {
                $(
                    // SAFETY: the caller promises the OpenCL ABI; the symbol
                    // has the declared signature there.
                    let $name = *unsafe { lib
                        .get::<unsafe extern "C" fn($($arg),*) -> $ret>(concat!(stringify!($name), "\0").as_bytes()) }
                        .map_err(|e| format!("missing entry point {}: {e}", stringify!($name)))?;
                )*
                $(
                    // SAFETY: as above, for an entry point of a later version.
                    let $oname = unsafe { lib
                        .get::<unsafe extern "C" fn($($oarg),*) -> $oret>(concat!(stringify!($oname), "\0").as_bytes()) }
                        .ok()
                        .map(|f| *f);
                )*
                Ok($table { _lib: lib, $($name,)* $($oname,)* })
            }
        }
    };
}

function_table! {
    Api {
        clGetPlatformIDs: fn(cl_uint, *mut cl_platform_id, *mut cl_uint) -> cl_int;
        clGetPlatformInfo: fn(cl_platform_id, cl_uint, usize, *mut c_void, *mut usize) -> cl_int;
        clGetDeviceIDs: fn(cl_platform_id, cl_bitfield, cl_uint, *mut cl_device_id, *mut cl_uint) -> cl_int;
        clGetDeviceInfo: fn(cl_device_id, cl_uint, usize, *mut c_void, *mut usize) -> cl_int;
        clCreateContext: fn(*const isize, cl_uint, *const cl_device_id, Option<ContextCallback>, *mut c_void, *mut cl_int) -> cl_context;
        clReleaseContext: fn(cl_context) -> cl_int;
        clCreateCommandQueue: fn(cl_context, cl_device_id, cl_bitfield, *mut cl_int) -> cl_command_queue;
        clReleaseCommandQueue: fn(cl_command_queue) -> cl_int;
        clFlush: fn(cl_command_queue) -> cl_int;
        clFinish: fn(cl_command_queue) -> cl_int;
        clCreateBuffer: fn(cl_context, cl_bitfield, usize, *mut c_void, *mut cl_int) -> cl_mem;
        clRetainMemObject: fn(cl_mem) -> cl_int;
        clCreateSubBuffer: fn(cl_mem, cl_bitfield, cl_uint, *const c_void, *mut cl_int) -> cl_mem;
        clReleaseMemObject: fn(cl_mem) -> cl_int;
        clEnqueueReadBuffer: fn(cl_command_queue, cl_mem, cl_uint, usize, usize, *mut c_void, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
        clEnqueueCopyBuffer: fn(cl_command_queue, cl_mem, cl_mem, usize, usize, usize, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
        clEnqueueFillBuffer: fn(cl_command_queue, cl_mem, *const c_void, usize, usize, usize, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
        clEnqueueWriteBuffer: fn(cl_command_queue, cl_mem, cl_uint, usize, usize, *const c_void, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
        clEnqueueMapBuffer: fn(cl_command_queue, cl_mem, cl_uint, cl_bitfield, usize, usize, cl_uint, *const cl_event, *mut cl_event, *mut cl_int) -> *mut c_void;
        clEnqueueUnmapMemObject: fn(cl_command_queue, cl_mem, *mut c_void, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
        clCreateProgramWithSource: fn(cl_context, cl_uint, *const *const c_char, *const usize, *mut cl_int) -> cl_program;
        clCreateProgramWithBinary: fn(cl_context, cl_uint, *const cl_device_id, *const usize, *const *const u8, *mut cl_int, *mut cl_int) -> cl_program;
        clBuildProgram: fn(cl_program, cl_uint, *const cl_device_id, *const c_char, Option<BuildCallback>, *mut c_void) -> cl_int;
        clGetProgramInfo: fn(cl_program, cl_uint, usize, *mut c_void, *mut usize) -> cl_int;
        clGetProgramBuildInfo: fn(cl_program, cl_device_id, cl_uint, usize, *mut c_void, *mut usize) -> cl_int;
        clReleaseProgram: fn(cl_program) -> cl_int;
        clCreateKernel: fn(cl_program, *const c_char, *mut cl_int) -> cl_kernel;
        clReleaseKernel: fn(cl_kernel) -> cl_int;
        clSetKernelArg: fn(cl_kernel, cl_uint, usize, *const c_void) -> cl_int;
        clGetKernelInfo: fn(cl_kernel, cl_uint, usize, *mut c_void, *mut usize) -> cl_int;
        clGetKernelWorkGroupInfo: fn(cl_kernel, cl_device_id, cl_uint, usize, *mut c_void, *mut usize) -> cl_int;
        clEnqueueNDRangeKernel: fn(cl_command_queue, cl_kernel, cl_uint, *const usize, *const usize, *const usize, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
        clCreateUserEvent: fn(cl_context, *mut cl_int) -> cl_event;
        clSetUserEventStatus: fn(cl_event, cl_int) -> cl_int;
        clSetEventCallback: fn(cl_event, cl_int, EventCallback, *mut c_void) -> cl_int;
        clGetEventInfo: fn(cl_event, cl_uint, usize, *mut c_void, *mut usize) -> cl_int;
        clGetEventProfilingInfo: fn(cl_event, cl_uint, usize, *mut c_void, *mut usize) -> cl_int;
        clRetainEvent: fn(cl_event) -> cl_int;
        clReleaseEvent: fn(cl_event) -> cl_int;
        clWaitForEvents: fn(cl_uint, *const cl_event) -> cl_int;
        clEnqueueMarkerWithWaitList: fn(cl_command_queue, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
        clEnqueueBarrierWithWaitList: fn(cl_command_queue, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
        clGetKernelArgInfo: fn(cl_kernel, cl_uint, cl_uint, usize, *mut c_void, *mut usize) -> cl_int;
    }
    optional {
        clCreateProgramWithIL: fn(cl_context, *const c_void, usize, *mut cl_int) -> cl_program;
    }
}

// SAFETY: the table holds plain function pointers into a library that stays
// loaded for the life of the process; OpenCL's API is thread-safe (except
// clSetKernelArg on one kernel, which nexus calls only while encoding).
unsafe impl Send for Api {}
// SAFETY: as above.
unsafe impl Sync for Api {}

fn loader_names() -> Vec<String> {
    if let Ok(p) = std::env::var("NEXUS_OPENCL_LIBRARY") {
        return vec![p];
    }
    if cfg!(windows) {
        vec!["OpenCL.dll".into()]
    } else if cfg!(target_os = "macos") {
        vec!["/System/Library/Frameworks/OpenCL.framework/OpenCL".into()]
    } else {
        vec!["libOpenCL.so.1".into(), "libOpenCL.so".into()]
    }
}

/// The loader, opened on first use; `Err` says why it is unavailable.
pub fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        let mut errors = Vec::new();
        for name in loader_names() {
            // SAFETY: opening the ICD loader runs its initialisers, which is
            // what using OpenCL requires.
            match unsafe { libloading::Library::new(&name) } {
                // SAFETY: an OpenCL loader exports the API declared above.
                Ok(lib) => return unsafe { Api::resolve(lib) },
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        Err(errors.join("; "))
    })
    .as_ref()
    .map_err(Clone::clone)
}
