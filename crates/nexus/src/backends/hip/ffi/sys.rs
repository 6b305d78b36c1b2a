//! Raw HIP and hiprtc types, constants and function tables.
//!
//! Nothing here links against ROCm: `libamdhip64` and hiprtc are opened
//! with `libloading` at run time, the first time a device is listed (HIP)
//! or a `.hip` source is compiled (hiprtc).
//!
//! # ABI
//!
//! Only entry points whose signatures are the same in ROCm 5.0 to 6.x are
//! declared, with the enum values both releases share (checked against the
//! ROCm 5.2 headers of Debian 12 and the ROCm 6 headers):
//! `hipDeviceAttribute_t` 0..=88 and 10000..=10016, `hipPointer_attribute`,
//! `hipFunction_attribute`, the error codes and the stream, event and host
//! allocation flags. Nothing reads `hipDeviceProp_t` or
//! `hipPointerAttribute_t` by field, whose layouts changed in ROCm 6; the
//! only struct passed by pointer is `hipKernelNodeParams`, unchanged since
//! ROCm 4.3. The one value that differs by release, `hipMemoryType`
//! (Host/Device are 0/1 up to ROCm 5, 1/2 from ROCm 6), is read through
//! `memory_type_device`/`memory_type_host` with the runtime's version.
//! The gfx architecture name has no attribute (`hipDeviceAttributeGcnArchName`
//! is an int in ROCm 5 and gone in 6); see `result::device_arch` for the
//! layout-independent way it is found.

#![allow(
    non_snake_case,
    non_camel_case_types,
    non_upper_case_globals,
    dead_code
)]

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

pub type hipError_t = c_int;
pub type hipDevice_t = c_int;
pub type hipDeviceptr_t = *mut c_void;
pub type hipModule_t = *mut c_void;
pub type hipFunction_t = *mut c_void;
pub type hipStream_t = *mut c_void;
pub type hipEvent_t = *mut c_void;
pub type hipGraph_t = *mut c_void;
pub type hipGraphExec_t = *mut c_void;
pub type hipGraphNode_t = *mut c_void;
/// `hipStreamCallback_t`: (stream, status, user data).
pub type hipStreamCallback_t =
    unsafe extern "C" fn(stream: hipStream_t, status: hipError_t, user_data: *mut c_void);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct dim3 {
    pub x: c_uint,
    pub y: c_uint,
    pub z: c_uint,
}

/// `hipKernelNodeParams` (ROCm 4.3 and later; not CUDA's field order).
#[repr(C)]
pub struct hipKernelNodeParams {
    pub block_dim: dim3,
    pub extra: *mut *mut c_void,
    pub func: *mut c_void,
    pub grid_dim: dim3,
    pub kernel_params: *mut *mut c_void,
    pub shared_mem_bytes: c_uint,
}

pub const hipSuccess: hipError_t = 0;
pub const hipErrorInvalidValue: hipError_t = 1;
pub const hipErrorOutOfMemory: hipError_t = 2;
pub const hipErrorNoDevice: hipError_t = 100;
pub const hipErrorInvalidDevice: hipError_t = 101;
pub const hipErrorInvalidImage: hipError_t = 200;
pub const hipErrorNoBinaryForGpu: hipError_t = 209;
pub const hipErrorInvalidKernelFile: hipError_t = 218;
pub const hipErrorSharedObjectInitFailed: hipError_t = 303;
pub const hipErrorNotFound: hipError_t = 500;
pub const hipErrorNotReady: hipError_t = 600;

// hipDeviceAttribute_t (values shared by ROCm 5 and 6)
pub const ATTR_ASYNC_ENGINE_COUNT: c_int = 2;
pub const ATTR_CAN_MAP_HOST_MEMORY: c_int = 3;
pub const ATTR_CLOCK_RATE: c_int = 5;
pub const ATTR_INTEGRATED: c_int = 16;
pub const ATTR_L2_CACHE_SIZE: c_int = 19;
pub const ATTR_COMPUTE_CAPABILITY_MAJOR: c_int = 23;
pub const ATTR_MANAGED_MEMORY: c_int = 24;
pub const ATTR_MAX_BLOCK_DIM_X: c_int = 26;
pub const ATTR_MAX_BLOCK_DIM_Y: c_int = 27;
pub const ATTR_MAX_BLOCK_DIM_Z: c_int = 28;
pub const ATTR_MAX_GRID_DIM_X: c_int = 29;
pub const ATTR_MAX_GRID_DIM_Y: c_int = 30;
pub const ATTR_MAX_GRID_DIM_Z: c_int = 31;
pub const ATTR_MAX_THREADS_PER_BLOCK: c_int = 56;
pub const ATTR_MAX_THREADS_PER_MULTIPROCESSOR: c_int = 57;
pub const ATTR_MEMORY_BUS_WIDTH: c_int = 59;
pub const ATTR_MEMORY_CLOCK_RATE: c_int = 60;
pub const ATTR_COMPUTE_CAPABILITY_MINOR: c_int = 61;
pub const ATTR_MULTIPROCESSOR_COUNT: c_int = 63;
pub const ATTR_PCI_BUS_ID: c_int = 67;
pub const ATTR_PCI_DEVICE_ID: c_int = 68;
pub const ATTR_PCI_DOMAIN_ID: c_int = 69;
pub const ATTR_MAX_REGISTERS_PER_BLOCK: c_int = 71;
pub const ATTR_MAX_REGISTERS_PER_MULTIPROCESSOR: c_int = 72;
pub const ATTR_MAX_SHARED_MEMORY_PER_BLOCK: c_int = 74;
pub const ATTR_SHARED_MEM_PER_BLOCK_OPTIN: c_int = 75;
pub const ATTR_SHARED_MEM_PER_MULTIPROCESSOR: c_int = 76;
pub const ATTR_TOTAL_CONSTANT_MEMORY: c_int = 83;
pub const ATTR_UNIFIED_ADDRESSING: c_int = 85;
pub const ATTR_WARP_SIZE: c_int = 87;
pub const ATTR_CLOCK_INSTRUCTION_RATE: c_int = 10000;
pub const ATTR_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: c_int = 10002;
pub const ATTR_IS_LARGE_BAR: c_int = 10011;
pub const ATTR_ASIC_REVISION: c_int = 10012;
/// 1 where `hipStreamWaitValue64`/`hipStreamWriteValue64` work.
pub const ATTR_CAN_USE_STREAM_WAIT_VALUE: c_int = 10013;
pub const ATTR_PHYSICAL_MULTIPROCESSOR_COUNT: c_int = 10015;
pub const ATTR_FINE_GRAIN_SUPPORT: c_int = 10016;

// hipFunction_attribute (CUDA's values)
pub const FUNC_MAX_THREADS_PER_BLOCK: c_int = 0;
pub const FUNC_SHARED_SIZE_BYTES: c_int = 1;
pub const FUNC_CONST_SIZE_BYTES: c_int = 2;
pub const FUNC_LOCAL_SIZE_BYTES: c_int = 3;
pub const FUNC_NUM_REGS: c_int = 4;
pub const FUNC_PTX_VERSION: c_int = 5;
pub const FUNC_BINARY_VERSION: c_int = 6;
pub const FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES: c_int = 8;

// hipPointer_attribute
pub const POINTER_ATTRIBUTE_MEMORY_TYPE: c_int = 2;
pub const POINTER_ATTRIBUTE_DEVICE_ORDINAL: c_int = 9;
pub const POINTER_ATTRIBUTE_RANGE_START_ADDR: c_int = 11;
pub const POINTER_ATTRIBUTE_RANGE_SIZE: c_int = 12;

/// `hipMemoryTypeHost` for a runtime of `version` (`hipRuntimeGetVersion`).
pub fn memory_type_host(version: i32) -> c_uint {
    if version >= 60_000_000 {
        1
    } else {
        0
    }
}

/// `hipMemoryTypeDevice` for a runtime of `version`.
pub fn memory_type_device(version: i32) -> c_uint {
    if version >= 60_000_000 {
        2
    } else {
        1
    }
}

pub const HOST_MALLOC_PORTABLE: c_uint = 1;
pub const HOST_MALLOC_MAPPED: c_uint = 2;
/// Fine-grained (coherent) host memory, whatever `HIP_HOST_COHERENT` says:
/// what event values, written by the GPU and polled by the host, need.
pub const HOST_MALLOC_COHERENT: c_uint = 0x4000_0000;
pub const STREAM_NON_BLOCKING: c_uint = 1;
pub const EVENT_DISABLE_TIMING: c_uint = 2;
/// `hipStreamWaitValueGte`: waits until `(*ptr & mask) >= value`.
pub const STREAM_WAIT_VALUE_GTE: c_uint = 0;

/// Declares a function table: each field is one entry point, resolved by
/// name when the library is opened. `optional` entries may be missing
/// (older releases); the first name found among the listed ones wins.
macro_rules! function_table {
    (
        $table:ident {
            $( $name:ident : fn($($arg:ty),*) -> $ret:ty; )*
        }
        optional {
            $( $oname:ident [$($sym:literal),+] : fn($($oarg:ty),*) -> $oret:ty; )*
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
            /// The library must be the one whose ABI the table declares.
            unsafe fn resolve(lib: libloading::Library) -> Result<Self, String> {
                $(
                    // SAFETY: the caller promises the library's ABI; the
                    // symbol has the declared signature there.
                    let $name = *unsafe { lib
                        .get::<unsafe extern "C" fn($($arg),*) -> $ret>(concat!(stringify!($name), "\0").as_bytes()) }
                        .map_err(|e| format!("missing entry point {}: {e}", stringify!($name)))?;
                )*
                $(
                    let mut $oname = None;
                    for sym in [$($sym),+] {
                        let name = format!("{sym}\0");
                        // SAFETY: as above, for an optional entry point.
                        if let Ok(f) = unsafe { lib.get::<unsafe extern "C" fn($($oarg),*) -> $oret>(name.as_bytes()) } {
                            $oname = Some(*f);
                            break;
                        }
                    }
                )*
                Ok($table { _lib: lib, $($name,)* $($oname,)* })
            }
        }
    };
}

function_table! {
    Hip {
        hipInit: fn(c_uint) -> hipError_t;
        hipDriverGetVersion: fn(*mut c_int) -> hipError_t;
        hipRuntimeGetVersion: fn(*mut c_int) -> hipError_t;
        hipGetErrorName: fn(hipError_t) -> *const c_char;
        hipGetErrorString: fn(hipError_t) -> *const c_char;
        hipGetDeviceCount: fn(*mut c_int) -> hipError_t;
        hipDeviceGet: fn(*mut hipDevice_t, c_int) -> hipError_t;
        hipDeviceGetName: fn(*mut c_char, c_int, hipDevice_t) -> hipError_t;
        hipDeviceTotalMem: fn(*mut usize, hipDevice_t) -> hipError_t;
        hipDeviceGetAttribute: fn(*mut c_int, c_int, c_int) -> hipError_t;
        hipDeviceGetPCIBusId: fn(*mut c_char, c_int, c_int) -> hipError_t;
        hipSetDevice: fn(c_int) -> hipError_t;
        hipGetDevice: fn(*mut c_int) -> hipError_t;
        hipDeviceSynchronize: fn() -> hipError_t;
        hipMalloc: fn(*mut *mut c_void, usize) -> hipError_t;
        hipFree: fn(*mut c_void) -> hipError_t;
        hipMemcpyHtoDAsync: fn(hipDeviceptr_t, *mut c_void, usize, hipStream_t) -> hipError_t;
        hipMemcpyDtoHAsync: fn(*mut c_void, hipDeviceptr_t, usize, hipStream_t) -> hipError_t;
        hipMemcpyDtoDAsync: fn(hipDeviceptr_t, hipDeviceptr_t, usize, hipStream_t) -> hipError_t;
        hipMemsetD8Async: fn(hipDeviceptr_t, u8, usize, hipStream_t) -> hipError_t;
        hipMemsetD16Async: fn(hipDeviceptr_t, u16, usize, hipStream_t) -> hipError_t;
        hipMemsetD32Async: fn(hipDeviceptr_t, c_int, usize, hipStream_t) -> hipError_t;
        hipMemset2DAsync: fn(*mut c_void, usize, c_int, usize, usize, hipStream_t) -> hipError_t;
        hipHostMalloc: fn(*mut *mut c_void, usize, c_uint) -> hipError_t;
        hipHostFree: fn(*mut c_void) -> hipError_t;
        hipHostGetDevicePointer: fn(*mut *mut c_void, *mut c_void, c_uint) -> hipError_t;
        hipPointerGetAttribute: fn(*mut c_void, c_int, hipDeviceptr_t) -> hipError_t;
        hipStreamCreateWithFlags: fn(*mut hipStream_t, c_uint) -> hipError_t;
        hipStreamDestroy: fn(hipStream_t) -> hipError_t;
        hipStreamSynchronize: fn(hipStream_t) -> hipError_t;
        hipStreamQuery: fn(hipStream_t) -> hipError_t;
        hipEventCreateWithFlags: fn(*mut hipEvent_t, c_uint) -> hipError_t;
        hipEventRecord: fn(hipEvent_t, hipStream_t) -> hipError_t;
        hipEventQuery: fn(hipEvent_t) -> hipError_t;
        hipEventDestroy: fn(hipEvent_t) -> hipError_t;
        hipModuleLoadData: fn(*mut hipModule_t, *const c_void) -> hipError_t;
        hipModuleUnload: fn(hipModule_t) -> hipError_t;
        hipModuleGetFunction: fn(*mut hipFunction_t, hipModule_t, *const c_char) -> hipError_t;
        hipFuncGetAttribute: fn(*mut c_int, c_int, hipFunction_t) -> hipError_t;
        hipModuleLaunchKernel: fn(hipFunction_t, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, hipStream_t, *mut *mut c_void, *mut *mut c_void) -> hipError_t;
        // hipLaunchHostFunc is missing from ROCm 5.2; stream callbacks are everywhere.
        hipStreamAddCallback: fn(hipStream_t, hipStreamCallback_t, *mut c_void, c_uint) -> hipError_t;
        hipGraphCreate: fn(*mut hipGraph_t, c_uint) -> hipError_t;
        hipGraphInstantiate: fn(*mut hipGraphExec_t, hipGraph_t, *mut hipGraphNode_t, *mut c_char, usize) -> hipError_t;
        hipGraphLaunch: fn(hipGraphExec_t, hipStream_t) -> hipError_t;
        hipGraphExecDestroy: fn(hipGraphExec_t) -> hipError_t;
        hipGraphDestroy: fn(hipGraph_t) -> hipError_t;
    }
    optional {
        hipDeviceGetUuid ["hipDeviceGetUuid"]: fn(*mut u8, hipDevice_t) -> hipError_t;
        // Written into a buffer far larger than any release's struct and
        // scanned for the gfx name (see `result::device_arch`).
        hipGetDeviceProperties ["hipGetDevicePropertiesR0600", "hipGetDeviceProperties"]: fn(*mut u8, c_int) -> hipError_t;
        hipStreamWriteValue64 ["hipStreamWriteValue64"]: fn(hipStream_t, *mut c_void, u64, c_uint) -> hipError_t;
        hipStreamWaitValue64 ["hipStreamWaitValue64"]: fn(hipStream_t, *mut c_void, u64, c_uint, u64) -> hipError_t;
        hipGraphAddKernelNode ["hipGraphAddKernelNode"]: fn(*mut hipGraphNode_t, hipGraph_t, *const hipGraphNode_t, usize, *const hipKernelNodeParams) -> hipError_t;
        hipEventElapsedTime ["hipEventElapsedTime"]: fn(*mut f32, hipEvent_t, hipEvent_t) -> hipError_t;
    }
}

pub type hiprtcResult = c_int;
pub type hiprtcProgram = *mut c_void;
pub const HIPRTC_SUCCESS: hiprtcResult = 0;

function_table! {
    Hiprtc {
        hiprtcVersion: fn(*mut c_int, *mut c_int) -> hiprtcResult;
        hiprtcGetErrorString: fn(hiprtcResult) -> *const c_char;
        hiprtcCreateProgram: fn(*mut hiprtcProgram, *const c_char, *const c_char, c_int, *const *const c_char, *const *const c_char) -> hiprtcResult;
        hiprtcDestroyProgram: fn(*mut hiprtcProgram) -> hiprtcResult;
        hiprtcCompileProgram: fn(hiprtcProgram, c_int, *const *const c_char) -> hiprtcResult;
        hiprtcGetProgramLogSize: fn(hiprtcProgram, *mut usize) -> hiprtcResult;
        hiprtcGetProgramLog: fn(hiprtcProgram, *mut c_char) -> hiprtcResult;
        hiprtcGetCodeSize: fn(hiprtcProgram, *mut usize) -> hiprtcResult;
        hiprtcGetCode: fn(hiprtcProgram, *mut c_char) -> hiprtcResult;
    }
    optional {}
}

// SAFETY: the tables hold plain function pointers into libraries that stay
// loaded for the life of the process, and the libraries are thread-safe.
unsafe impl Send for Hip {}
// SAFETY: as above.
unsafe impl Sync for Hip {}
// SAFETY: as above.
unsafe impl Send for Hiprtc {}
// SAFETY: as above.
unsafe impl Sync for Hiprtc {}

fn open_first(names: &[String]) -> Result<libloading::Library, String> {
    let mut errors = Vec::new();
    for name in names {
        // SAFETY: opening a vendor library runs its initialisers, which is
        // what using HIP requires.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// ROCm's library folders, for installs the loader's path does not cover.
fn rocm_dirs() -> Vec<String> {
    let mut dirs = Vec::new();
    for var in ["ROCM_PATH", "HIP_PATH"] {
        if let Ok(d) = std::env::var(var) {
            dirs.push(format!("{d}/lib"));
        }
    }
    dirs.push("/opt/rocm/lib".into());
    dirs
}

/// `NEXUS_HIP_LIBRARY` alone when set; else the HIP sonames, then ROCm's
/// folders.
fn hip_names() -> Vec<String> {
    if let Ok(p) = std::env::var("NEXUS_HIP_LIBRARY") {
        return vec![p];
    }
    if cfg!(windows) {
        return vec!["amdhip64_6.dll".into(), "amdhip64.dll".into()];
    }
    let sonames = ["libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"];
    let mut names: Vec<String> = sonames.iter().map(|s| s.to_string()).collect();
    for d in rocm_dirs() {
        for s in sonames {
            names.push(format!("{d}/{s}"));
        }
    }
    names
}

/// HIP, opened on first use; `Err` says why it is unavailable.
pub fn hip() -> Result<&'static Hip, String> {
    static HIP: OnceLock<Result<Hip, String>> = OnceLock::new();
    HIP.get_or_init(|| {
        let lib = open_first(&hip_names())?;
        // SAFETY: libamdhip64 exports the HIP API declared above.
        unsafe { Hip::resolve(lib) }
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// `NEXUS_HIPRTC` alone when set; else libhiprtc (ROCm 6 ships it apart),
/// then the HIP library itself (ROCm 5 exports hiprtc from libamdhip64);
/// a library `NEXUS_HIP_LIBRARY` names is tried first.
fn hiprtc_names() -> Vec<String> {
    if let Ok(p) = std::env::var("NEXUS_HIPRTC") {
        return vec![p];
    }
    let mut names = Vec::new();
    if let Ok(p) = std::env::var("NEXUS_HIP_LIBRARY") {
        names.push(p);
    }
    let sonames = ["libhiprtc.so", "libhiprtc.so.6", "libhiprtc.so.5"];
    names.extend(sonames.iter().map(|s| s.to_string()));
    for d in rocm_dirs() {
        for s in sonames {
            names.push(format!("{d}/{s}"));
        }
    }
    names.extend(hip_names());
    names
}

/// hiprtc, opened the first time a `.hip` source is compiled: the first
/// library that opens and exports every hiprtc entry point.
pub fn hiprtc() -> Result<&'static Hiprtc, String> {
    static HIPRTC: OnceLock<Result<Hiprtc, String>> = OnceLock::new();
    HIPRTC
        .get_or_init(|| {
            let mut errors = Vec::new();
            for name in hiprtc_names() {
                match open_first(std::slice::from_ref(&name)) {
                    // SAFETY: a library that exports the hiprtc symbols
                    // declared above has their ROCm signatures.
                    Ok(lib) => match unsafe { Hiprtc::resolve(lib) } {
                        Ok(t) => return Ok(t),
                        Err(e) => errors.push(format!("{name}: {e}")),
                    },
                    Err(e) => errors.push(e),
                }
            }
            Err(errors.join("; "))
        })
        .as_ref()
        .map_err(Clone::clone)
}
