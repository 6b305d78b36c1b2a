//! Raw CUDA driver and NVRTC types, constants and function tables.
//!
//! Nothing here links against CUDA: the driver (`libcuda.so.1`) and NVRTC
//! are opened with `libloading` at run time, the first time a device is
//! listed (the driver) or a CUDA C++ source is compiled (NVRTC).

#![allow(non_snake_case, non_camel_case_types, dead_code)]

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

pub type CUresult = c_int;
pub type CUdevice = c_int;
pub type CUdeviceptr = u64;
pub type CUcontext = *mut c_void;
pub type CUmodule = *mut c_void;
pub type CUfunction = *mut c_void;
pub type CUstream = *mut c_void;
pub type CUevent = *mut c_void;
pub type CUgraph = *mut c_void;
pub type CUgraphExec = *mut c_void;
pub type CUgraphNode = *mut c_void;

/// `CUDA_KERNEL_NODE_PARAMS_v2`; the v1 layout is its prefix up to `extra`,
/// so either entry point reads it.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct CUDA_KERNEL_NODE_PARAMS {
    pub func: CUfunction,
    pub grid_dim: [c_uint; 3],
    pub block_dim: [c_uint; 3],
    pub shared_mem_bytes: c_uint,
    pub kernel_params: *mut *mut c_void,
    pub extra: *mut *mut c_void,
    /// A `CUkernel`; null when `func` is set.
    pub kern: *mut c_void,
    /// The context of `kern`; null when `func` is set.
    pub ctx: CUcontext,
}
/// `CUgraphEdgeData` (CUDA 12.3): when an edge fires and what it orders;
/// all zero is a full dependency.
#[repr(C)]
#[derive(Default)]
pub struct CUgraphEdgeData {
    pub from_port: u8,
    pub to_port: u8,
    pub type_: u8,
    pub reserved: [u8; 5],
}
/// Fires when every block of the upstream kernel has triggered
/// (`griddepcontrol.launch_dependents`) or exited.
pub const GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC: u8 = 1;
/// Fires when every block of the upstream kernel has begun.
pub const GRAPH_KERNEL_NODE_PORT_LAUNCH_ORDER: u8 = 2;
/// The downstream kernel may start early; `griddepcontrol.wait` in it
/// waits for the upstream kernel's completion and memory.
pub const GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC: u8 = 1;
/// `CUDA_MEMCPY3D`: a 1-D copy uses `WidthInBytes` with `Height` and
/// `Depth` 1.
#[repr(C)]
#[allow(non_snake_case, non_camel_case_types)]
pub struct CUDA_MEMCPY3D {
    pub srcXInBytes: usize,
    pub srcY: usize,
    pub srcZ: usize,
    pub srcLOD: usize,
    pub srcMemoryType: c_uint,
    pub srcHost: *const c_void,
    pub srcDevice: CUdeviceptr,
    pub srcArray: *mut c_void,
    pub reserved0: *mut c_void,
    pub srcPitch: usize,
    pub srcHeight: usize,
    pub dstXInBytes: usize,
    pub dstY: usize,
    pub dstZ: usize,
    pub dstLOD: usize,
    pub dstMemoryType: c_uint,
    pub dstHost: *mut c_void,
    pub dstDevice: CUdeviceptr,
    pub dstArray: *mut c_void,
    pub reserved1: *mut c_void,
    pub dstPitch: usize,
    pub dstHeight: usize,
    pub WidthInBytes: usize,
    pub Height: usize,
    pub Depth: usize,
}

/// `CUDA_MEMSET_NODE_PARAMS`.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct CUDA_MEMSET_NODE_PARAMS {
    pub dst: CUdeviceptr,
    pub pitch: usize,
    pub value: c_uint,
    pub element_size: c_uint,
    pub width: usize,
    pub height: usize,
}
pub type CUhostFn = unsafe extern "C" fn(user_data: *mut c_void);

pub const CUDA_SUCCESS: CUresult = 0;
pub const CUDA_ERROR_INVALID_VALUE: CUresult = 1;
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = 2;
pub const CUDA_ERROR_NO_DEVICE: CUresult = 100;
pub const CUDA_ERROR_INVALID_IMAGE: CUresult = 200;
pub const CUDA_ERROR_NO_BINARY_FOR_GPU: CUresult = 209;
pub const CUDA_ERROR_INVALID_PTX: CUresult = 218;
pub const CUDA_ERROR_UNSUPPORTED_PTX_VERSION: CUresult = 222;
pub const CUDA_ERROR_JIT_COMPILER_NOT_FOUND: CUresult = 221;
pub const CUDA_ERROR_NOT_FOUND: CUresult = 500;
pub const CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED: CUresult = 704;
pub const CUDA_ERROR_NOT_READY: CUresult = 600;

// CUdevice_attribute
pub const ATTR_MAX_THREADS_PER_BLOCK: c_int = 1;
pub const ATTR_MAX_BLOCK_DIM_X: c_int = 2;
pub const ATTR_MAX_BLOCK_DIM_Y: c_int = 3;
pub const ATTR_MAX_BLOCK_DIM_Z: c_int = 4;
pub const ATTR_MAX_GRID_DIM_X: c_int = 5;
pub const ATTR_MAX_GRID_DIM_Y: c_int = 6;
pub const ATTR_MAX_GRID_DIM_Z: c_int = 7;
pub const ATTR_MAX_SHARED_MEMORY_PER_BLOCK: c_int = 8;
pub const ATTR_TOTAL_CONSTANT_MEMORY: c_int = 9;
pub const ATTR_WARP_SIZE: c_int = 10;
pub const ATTR_MAX_REGISTERS_PER_BLOCK: c_int = 12;
pub const ATTR_CLOCK_RATE: c_int = 13;
pub const ATTR_MULTIPROCESSOR_COUNT: c_int = 16;
pub const ATTR_INTEGRATED: c_int = 18;
pub const ATTR_CAN_MAP_HOST_MEMORY: c_int = 19;
pub const ATTR_ASYNC_ENGINE_COUNT: c_int = 40;
pub const ATTR_PCI_BUS_ID: c_int = 33;
pub const ATTR_PCI_DEVICE_ID: c_int = 34;
pub const ATTR_MEMORY_CLOCK_RATE: c_int = 36;
pub const ATTR_GLOBAL_MEMORY_BUS_WIDTH: c_int = 37;
pub const ATTR_L2_CACHE_SIZE: c_int = 38;
pub const ATTR_MAX_THREADS_PER_MULTIPROCESSOR: c_int = 39;
pub const ATTR_UNIFIED_ADDRESSING: c_int = 41;
pub const ATTR_PCI_DOMAIN_ID: c_int = 50;
pub const ATTR_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
pub const ATTR_COMPUTE_CAPABILITY_MINOR: c_int = 76;
pub const ATTR_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: c_int = 81;
pub const ATTR_MAX_REGISTERS_PER_MULTIPROCESSOR: c_int = 82;
pub const ATTR_MANAGED_MEMORY: c_int = 83;
/// 64-bit stream memory operations: the current attribute (CUDA 12+) and
/// the deprecated one, which reads 0 on current drivers even where they work.
pub const ATTR_CAN_USE_64_BIT_STREAM_MEM_OPS: c_int = 122;
pub const ATTR_CAN_USE_64_BIT_STREAM_MEM_OPS_V1: c_int = 93;
pub const ATTR_COOPERATIVE_LAUNCH: c_int = 95;
pub const ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: c_int = 97;

// CUfunction_attribute
pub const FUNC_MAX_THREADS_PER_BLOCK: c_int = 0;
pub const FUNC_SHARED_SIZE_BYTES: c_int = 1;
pub const FUNC_CONST_SIZE_BYTES: c_int = 2;
pub const FUNC_LOCAL_SIZE_BYTES: c_int = 3;
pub const FUNC_NUM_REGS: c_int = 4;
pub const FUNC_PTX_VERSION: c_int = 5;
pub const FUNC_BINARY_VERSION: c_int = 6;
pub const FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES: c_int = 8;

// CUpointer_attribute / CUmemorytype
pub const POINTER_ATTRIBUTE_MEMORY_TYPE: c_int = 2;
pub const POINTER_ATTRIBUTE_RANGE_START_ADDR: c_int = 11;
pub const POINTER_ATTRIBUTE_RANGE_SIZE: c_int = 12;
pub const POINTER_ATTRIBUTE_DEVICE_ORDINAL: c_int = 9;
pub const MEMORYTYPE_HOST: c_uint = 1;
pub const MEMORYTYPE_DEVICE: c_uint = 2;
pub const MEMORYTYPE_UNIFIED: c_uint = 4;

pub const MEMHOSTALLOC_PORTABLE: c_uint = 1;
pub const MEMHOSTALLOC_DEVICEMAP: c_uint = 2;
pub const STREAM_NON_BLOCKING: c_uint = 1;
pub const EVENT_DISABLE_TIMING: c_uint = 2;
pub const STREAM_WAIT_VALUE_GEQ: c_uint = 0;
pub const STREAM_WRITE_VALUE_DEFAULT: c_uint = 0;

// CUjit_option
pub const JIT_INFO_LOG_BUFFER: c_int = 3;
pub const JIT_INFO_LOG_BUFFER_SIZE_BYTES: c_int = 4;
pub const JIT_ERROR_LOG_BUFFER: c_int = 5;
pub const JIT_ERROR_LOG_BUFFER_SIZE_BYTES: c_int = 6;

/// Declares a function table: each field is one entry point, resolved by
/// name when the library is opened. `optional` entries may be missing
/// (older drivers); the first name found among the listed ones wins.
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
    Driver {
        cuInit: fn(c_uint) -> CUresult;
        cuDriverGetVersion: fn(*mut c_int) -> CUresult;
        cuGetErrorName: fn(CUresult, *mut *const c_char) -> CUresult;
        cuGetErrorString: fn(CUresult, *mut *const c_char) -> CUresult;
        cuDeviceGetCount: fn(*mut c_int) -> CUresult;
        cuDeviceGet: fn(*mut CUdevice, c_int) -> CUresult;
        cuDeviceGetName: fn(*mut c_char, c_int, CUdevice) -> CUresult;
        cuDeviceTotalMem_v2: fn(*mut usize, CUdevice) -> CUresult;
        cuDeviceGetAttribute: fn(*mut c_int, c_int, CUdevice) -> CUresult;
        cuDeviceGetPCIBusId: fn(*mut c_char, c_int, CUdevice) -> CUresult;
        cuDevicePrimaryCtxRetain: fn(*mut CUcontext, CUdevice) -> CUresult;
        cuCtxSetCurrent: fn(CUcontext) -> CUresult;
        cuCtxSynchronize: fn() -> CUresult;
        cuCtxGetCurrent: fn(*mut CUcontext) -> CUresult;
        cuMemAlloc_v2: fn(*mut CUdeviceptr, usize) -> CUresult;
        cuMemFree_v2: fn(CUdeviceptr) -> CUresult;
        cuMemcpyHtoDAsync_v2: fn(CUdeviceptr, *const c_void, usize, CUstream) -> CUresult;
        cuMemcpyDtoHAsync_v2: fn(*mut c_void, CUdeviceptr, usize, CUstream) -> CUresult;
        cuMemcpyDtoDAsync_v2: fn(CUdeviceptr, CUdeviceptr, usize, CUstream) -> CUresult;
        cuMemcpyAsync: fn(CUdeviceptr, CUdeviceptr, usize, CUstream) -> CUresult;
        cuMemsetD8Async: fn(CUdeviceptr, u8, usize, CUstream) -> CUresult;
        cuMemsetD16Async: fn(CUdeviceptr, u16, usize, CUstream) -> CUresult;
        cuMemsetD32Async: fn(CUdeviceptr, c_uint, usize, CUstream) -> CUresult;
        cuMemsetD2D32Async: fn(CUdeviceptr, usize, c_uint, usize, usize, CUstream) -> CUresult;
        cuMemHostAlloc: fn(*mut *mut c_void, usize, c_uint) -> CUresult;
        cuMemFreeHost: fn(*mut c_void) -> CUresult;
        cuMemHostGetDevicePointer_v2: fn(*mut CUdeviceptr, *mut c_void, c_uint) -> CUresult;
        cuPointerGetAttribute: fn(*mut c_void, c_int, CUdeviceptr) -> CUresult;
        cuStreamCreate: fn(*mut CUstream, c_uint) -> CUresult;
        cuStreamDestroy_v2: fn(CUstream) -> CUresult;
        cuStreamSynchronize: fn(CUstream) -> CUresult;
        cuStreamQuery: fn(CUstream) -> CUresult;
        cuStreamWaitEvent: fn(CUstream, CUevent, c_uint) -> CUresult;
        cuEventCreate: fn(*mut CUevent, c_uint) -> CUresult;
        cuEventRecord: fn(CUevent, CUstream) -> CUresult;
        cuEventQuery: fn(CUevent) -> CUresult;
        cuEventSynchronize: fn(CUevent) -> CUresult;
        cuEventDestroy_v2: fn(CUevent) -> CUresult;
        cuModuleLoadDataEx: fn(*mut CUmodule, *const c_void, c_uint, *mut c_int, *mut *mut c_void) -> CUresult;
        cuModuleUnload: fn(CUmodule) -> CUresult;
        cuModuleGetFunction: fn(*mut CUfunction, CUmodule, *const c_char) -> CUresult;
        cuFuncGetAttribute: fn(*mut c_int, c_int, CUfunction) -> CUresult;
        cuFuncSetAttribute: fn(CUfunction, c_int, c_int) -> CUresult;
        cuLaunchKernel: fn(CUfunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, CUstream, *mut *mut c_void, *mut *mut c_void) -> CUresult;
        cuLaunchHostFunc: fn(CUstream, CUhostFn, *mut c_void) -> CUresult;
        cuGraphCreate: fn(*mut CUgraph, c_uint) -> CUresult;
        cuGraphInstantiateWithFlags: fn(*mut CUgraphExec, CUgraph, u64) -> CUresult;
        cuGraphLaunch: fn(CUgraphExec, CUstream) -> CUresult;
        cuGraphExecDestroy: fn(CUgraphExec) -> CUresult;
        cuGraphDestroy: fn(CUgraph) -> CUresult;
    }
    optional {
        cuDeviceGetUuid ["cuDeviceGetUuid_v2", "cuDeviceGetUuid"]: fn(*mut u8, CUdevice) -> CUresult;
        cuFuncLoad ["cuFuncLoad"]: fn(CUfunction) -> CUresult;
        cuFuncGetParamInfo ["cuFuncGetParamInfo"]: fn(CUfunction, usize, *mut usize, *mut usize) -> CUresult;
        cuStreamWriteValue64 ["cuStreamWriteValue64_v2", "cuStreamWriteValue64"]: fn(CUstream, CUdeviceptr, u64, c_uint) -> CUresult;
        cuStreamWaitValue64 ["cuStreamWaitValue64_v2", "cuStreamWaitValue64"]: fn(CUstream, CUdeviceptr, u64, c_uint) -> CUresult;
        cuDeviceCanAccessPeer ["cuDeviceCanAccessPeer"]: fn(*mut c_int, CUdevice, CUdevice) -> CUresult;
        cuCtxEnablePeerAccess ["cuCtxEnablePeerAccess"]: fn(CUcontext, c_uint) -> CUresult;
        cuGraphAddMemcpyNode ["cuGraphAddMemcpyNode"]: fn(*mut CUgraphNode, CUgraph, *const CUgraphNode, usize, *const CUDA_MEMCPY3D, CUcontext) -> CUresult;
        cuGraphAddMemsetNode ["cuGraphAddMemsetNode"]: fn(*mut CUgraphNode, CUgraph, *const CUgraphNode, usize, *const CUDA_MEMSET_NODE_PARAMS, CUcontext) -> CUresult;
        cuGraphAddKernelNode ["cuGraphAddKernelNode_v2", "cuGraphAddKernelNode"]: fn(*mut CUgraphNode, CUgraph, *const CUgraphNode, usize, *const CUDA_KERNEL_NODE_PARAMS) -> CUresult;
        cuGraphAddDependencies_v2 ["cuGraphAddDependencies_v2"]: fn(CUgraph, *const CUgraphNode, *const CUgraphNode, *const CUgraphEdgeData, usize) -> CUresult;
    }
}

pub type nvrtcResult = c_int;
pub type nvrtcProgram = *mut c_void;
pub const NVRTC_SUCCESS: nvrtcResult = 0;

function_table! {
    Nvrtc {
        nvrtcVersion: fn(*mut c_int, *mut c_int) -> nvrtcResult;
        nvrtcGetErrorString: fn(nvrtcResult) -> *const c_char;
        nvrtcCreateProgram: fn(*mut nvrtcProgram, *const c_char, *const c_char, c_int, *const *const c_char, *const *const c_char) -> nvrtcResult;
        nvrtcDestroyProgram: fn(*mut nvrtcProgram) -> nvrtcResult;
        nvrtcCompileProgram: fn(nvrtcProgram, c_int, *const *const c_char) -> nvrtcResult;
        nvrtcGetProgramLogSize: fn(nvrtcProgram, *mut usize) -> nvrtcResult;
        nvrtcGetProgramLog: fn(nvrtcProgram, *mut c_char) -> nvrtcResult;
        nvrtcGetPTXSize: fn(nvrtcProgram, *mut usize) -> nvrtcResult;
        nvrtcGetPTX: fn(nvrtcProgram, *mut c_char) -> nvrtcResult;
    }
    optional {
        nvrtcGetCUBINSize ["nvrtcGetCUBINSize"]: fn(nvrtcProgram, *mut usize) -> nvrtcResult;
        nvrtcGetCUBIN ["nvrtcGetCUBIN"]: fn(nvrtcProgram, *mut c_char) -> nvrtcResult;
    }
}

// SAFETY: the tables hold plain function pointers into libraries that stay
// loaded for the life of the process, and the libraries are thread-safe.
unsafe impl Send for Driver {}
// SAFETY: as above.
unsafe impl Sync for Driver {}
// SAFETY: as above.
unsafe impl Send for Nvrtc {}
// SAFETY: as above.
unsafe impl Sync for Nvrtc {}

fn open_first(names: &[String]) -> Result<libloading::Library, String> {
    let mut errors = Vec::new();
    for name in names {
        // SAFETY: opening a vendor library runs its initialisers, which is
        // what using CUDA requires.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(errors.join("; "))
}

fn driver_names() -> Vec<String> {
    if let Ok(p) = std::env::var("NEXUS_CUDA_DRIVER") {
        return vec![p];
    }
    if cfg!(windows) {
        vec!["nvcuda.dll".into()]
    } else {
        vec!["libcuda.so.1".into(), "libcuda.so".into()]
    }
}

/// The driver, opened on first use; `Err` says why it is unavailable.
pub fn driver() -> Result<&'static Driver, String> {
    static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let lib = open_first(&driver_names())?;
            // SAFETY: libcuda exports the driver API declared above.
            unsafe { Driver::resolve(lib) }
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn nvrtc_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(p) = std::env::var("NEXUS_NVRTC") {
        names.push(p);
    }
    if cfg!(windows) {
        for v in ["64_130_0", "64_120_0", "64_12", "64_13"] {
            names.push(format!("nvrtc{v}.dll"));
        }
        return names;
    }
    let sonames = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];
    names.extend(sonames.iter().map(|s| s.to_string()));
    let mut dirs: Vec<String> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(d) = std::env::var(var) {
            dirs.push(format!("{d}/lib64"));
            dirs.push(format!("{d}/lib"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/local/cuda/targets/x86_64-linux/lib".into());
    dirs.push("/usr/local/cuda/targets/sbsa-linux/lib".into());
    for d in dirs {
        for s in sonames {
            names.push(format!("{d}/{s}"));
        }
    }
    names
}

/// NVRTC, opened the first time a CUDA C++ source is compiled.
pub fn nvrtc() -> Result<&'static Nvrtc, String> {
    static NVRTC: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
    NVRTC
        .get_or_init(|| {
            let lib = open_first(&nvrtc_names())?;
            // SAFETY: libnvrtc exports the NVRTC API declared above.
            unsafe { Nvrtc::resolve(lib) }
        })
        .as_ref()
        .map_err(Clone::clone)
}
