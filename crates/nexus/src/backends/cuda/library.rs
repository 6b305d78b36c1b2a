//! CUDA modules: PTX, cubin and fatbin images (files or bytes, told apart
//! by their content), CUDA C++ sources compiled by NVRTC for the device's
//! own architecture, and the built-in kernels (embedded PTX).

use std::any::Any;

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use super::ffi::nvrtc::{ImageKind, Program};
use super::ffi::result as r;
use super::ffi::safe::{Function, Module};
use super::ffi::sys;
use super::Gpu;
use crate::backends::common::builtin::LaunchCheck;
use crate::backends::common::{self, lock, release};
use crate::cache::{CacheState, CompileCache, Key};
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::LaunchDims;

/// The built-in kernels, as PTX for sm_50 (JIT-compiled for any newer GPU).
/// `add_vectors(a, b, c)` takes a hidden 4th argument, the element count,
/// which the backend appends (the grid is rounded up to whole groups).
pub const BUILTIN_PTX: &str = r#"
.version 6.0
.target sm_50
.address_size 64

.visible .entry add_vectors(
    .param .u64 add_vectors_param_0,
    .param .u64 add_vectors_param_1,
    .param .u64 add_vectors_param_2,
    .param .u32 add_vectors_param_3
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<11>;

    ld.param.u64 %rd1, [add_vectors_param_0];
    ld.param.u64 %rd2, [add_vectors_param_1];
    ld.param.u64 %rd3, [add_vectors_param_2];
    ld.param.u32 %r2, [add_vectors_param_3];
    mov.u32 %r3, %ctaid.x;
    mov.u32 %r4, %ntid.x;
    mov.u32 %r5, %tid.x;
    mad.lo.s32 %r1, %r3, %r4, %r5;
    setp.ge.u32 %p1, %r1, %r2;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd4, %rd1;
    mul.wide.u32 %rd5, %r1, 4;
    add.s64 %rd6, %rd4, %rd5;
    cvta.to.global.u64 %rd7, %rd2;
    add.s64 %rd8, %rd7, %rd5;
    ld.global.nc.f32 %f1, [%rd6];
    ld.global.nc.f32 %f2, [%rd8];
    add.f32 %f3, %f1, %f2;
    cvta.to.global.u64 %rd9, %rd3;
    add.s64 %rd10, %rd9, %rd5;
    st.global.f32 [%rd10], %f3;
DONE:
    ret;
}

.visible .entry empty()
{
    ret;
}
"#;

/// (name, arguments the user sets, hidden element-count argument, bounds check)
const BUILTINS: &[(&str, usize, bool, Option<LaunchCheck>)] = &[
    (
        "add_vectors",
        3,
        true,
        Some(common::builtin::check_add_vectors),
    ),
    ("empty", 0, false, None),
];

/// A loaded module, unloaded off the caller's thread (unloading waits for
/// the device).
struct LoadedModule(Option<Module>);

impl Drop for LoadedModule {
    fn drop(&mut self) {
        if let Some(module) = self.0.take() {
            release::defer(Box::new(move || drop(module)));
        }
    }
}

impl LoadedModule {
    fn function(&self, name: &str) -> Result<Function> {
        match &self.0 {
            Some(m) => m.function(name),
            None => Err(Error::new(Status::InvalidLibrary, "the module is unloaded")),
        }
    }
}

pub struct CudaLibrary {
    gpu: Arc<Gpu>,
    module: Arc<LoadedModule>,
    format: &'static str,
    builtin: bool,
    path: Option<String>,
    log: Option<String>,
    /// "hit", "miss" or "off" for sources compiled by NVRTC.
    compile_cache: Option<&'static str>,
}

pub struct CudaKernel {
    name: String,
    pub(super) function: Function,
    pub(super) gpu: Arc<Gpu>,
    /// Arguments the kernel takes from the user, where known (builtins, and
    /// every kernel on drivers that report parameters).
    pub(super) arity: Option<usize>,
    /// The byte size of each parameter, where the driver reports them.
    pub(super) param_sizes: Option<Vec<usize>>,
    /// Appends the grid's x size as a trailing u32 (builtins).
    pub(super) hidden_count: bool,
    /// A builtin's bounds check.
    check: Option<LaunchCheck>,
    /// The dynamic shared memory the function is allowed so far. Raised,
    /// never lowered: the attribute belongs to the function, which every
    /// command of it shares, so lowering it for one command would break
    /// another's launch.
    shared_allowed: std::sync::Mutex<u32>,
    properties: Value,
    _module: Arc<LoadedModule>,
}

const FATBIN_MAGIC: u32 = 0xBA55_ED50;

/// What an image is, from its first bytes.
fn detect(bytes: &[u8], path: Option<&Path>) -> &'static str {
    if bytes.starts_with(b"\x7fELF") {
        return "cubin";
    }
    if bytes.len() >= 4
        && u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == FATBIN_MAGIC
    {
        return "fatbin";
    }
    let ext = path
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("cu") | Some("cuh") => return "cuda",
        Some("ptx") => return "ptx",
        Some("cubin") => return "cubin",
        Some("fatbin") => return "fatbin",
        _ => {}
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]);
    if head.contains(".entry") || (head.contains(".version") && head.contains(".target")) {
        "ptx"
    } else if head.contains("__global__") {
        "cuda"
    } else {
        "ptx"
    }
}

impl CudaLibrary {
    pub(crate) fn load(gpu: &Arc<Gpu>, source: &hal::LibrarySource) -> Result<Self> {
        let (bytes, path): (Vec<u8>, Option<&Path>) = match source {
            hal::LibrarySource::Builtin => {
                let image = nul_terminated(BUILTIN_PTX.as_bytes());
                let m = Module::load(&gpu.context()?, &image)?;
                return Ok(CudaLibrary {
                    gpu: gpu.clone(),
                    module: Arc::new(LoadedModule(Some(m))),
                    format: "builtin",
                    builtin: true,
                    path: None,
                    log: None,
                    compile_cache: None,
                });
            }
            hal::LibrarySource::File(p) => {
                if !p.is_file() {
                    return Err(Error::new(
                        Status::InvalidLibrary,
                        format!(
                            "library file does not exist or is not a file: '{}'",
                            p.display()
                        ),
                    ));
                }
                let b = std::fs::read(p).map_err(|e| {
                    Error::new(
                        Status::InvalidLibrary,
                        format!("cannot read library '{}': {e}", p.display()),
                    )
                })?;
                (b, Some(p.as_path()))
            }
            hal::LibrarySource::Bytes(b) => (b.clone(), None),
        };
        let where_ = path
            .map(|p| format!("'{}'", p.display()))
            .unwrap_or_else(|| format!("<{} bytes>", bytes.len()));
        if bytes.is_empty() {
            return Err(Error::new(
                Status::InvalidLibrary,
                format!("library {where_} is empty (0 bytes)"),
            ));
        }
        let format = detect(&bytes, path);
        let (image, log, compile_cache) = match format {
            "cuda" => {
                let (cubin, log, cache) = compile(gpu, &bytes, &where_)?;
                (cubin, Some(log), Some(cache.as_str()))
            }
            "ptx" => (nul_terminated(&bytes), None, None),
            _ => (bytes, None, None),
        };
        let m = Module::load(&gpu.context()?, &image).map_err(|mut e| {
            e.message = format!(
                "loading {format} library {where_} on {}: {}",
                gpu.label(),
                e.message
            );
            e
        })?;
        Ok(CudaLibrary {
            gpu: gpu.clone(),
            module: Arc::new(LoadedModule(Some(m))),
            format,
            builtin: false,
            path: path.map(|p| p.display().to_string()),
            log,
            compile_cache,
        })
    }
}

/// Headers NVRTC lacks (it has no host C library).
const STD_HEADERS: &[(&str, &str)] = &[
    (
        "stdint.h",
        "#pragma once\n\
typedef signed char int8_t; typedef short int16_t; typedef int int32_t; typedef long long int64_t;\n\
typedef unsigned char uint8_t; typedef unsigned short uint16_t; typedef unsigned int uint32_t; typedef unsigned long long uint64_t;\n\
typedef long long intptr_t; typedef unsigned long long uintptr_t; typedef long long intmax_t; typedef unsigned long long uintmax_t;\n\
#define INT8_MIN (-128)\n#define INT8_MAX 127\n#define UINT8_MAX 255\n#define INT16_MIN (-32768)\n#define INT16_MAX 32767\n#define UINT16_MAX 65535\n\
#define INT32_MIN (-2147483647-1)\n#define INT32_MAX 2147483647\n#define UINT32_MAX 4294967295u\n\
#define INT64_MIN (-9223372036854775807LL-1)\n#define INT64_MAX 9223372036854775807LL\n#define UINT64_MAX 18446744073709551615ULL\n",
    ),
    (
        "cstdint",
        "#pragma once\n#include \"stdint.h\"\nnamespace std { using ::int8_t; using ::int16_t; using ::int32_t; using ::int64_t; \
using ::uint8_t; using ::uint16_t; using ::uint32_t; using ::uint64_t; using ::intptr_t; using ::uintptr_t; }\n",
    ),
];

/// The CUDA toolkit's include folders that exist here.
fn cuda_include_dirs() -> Vec<String> {
    let mut dirs = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(d) = std::env::var(var) {
            dirs.push(format!("{d}/include"));
        }
    }
    dirs.push("/usr/local/cuda/include".into());
    let mut out: Vec<String> = Vec::new();
    for d in dirs {
        if Path::new(&d).is_dir() && !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

fn nul_terminated(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    if v.last() != Some(&0) {
        v.push(0);
    }
    v
}

/// CUDA C++ to a cubin for this GPU's architecture (PTX when this NVRTC
/// has no cubin output); the compile log is in the error on failure.
/// Images are kept in the persistent compile cache (`crate::cache`), keyed
/// by the source, the options, the architecture, the output kind and the
/// NVRTC and driver versions; the payload is the log's length (u64 LE),
/// the log, then the image.
fn compile(gpu: &Gpu, source: &[u8], where_: &str) -> Result<(Vec<u8>, String, CacheState)> {
    let n = sys::nvrtc().map_err(|e| {
        Error::new(Status::CompileError, format!("cannot compile CUDA source {where_}: NVRTC is not available ({e}); set NEXUS_NVRTC to its path"))
    })?;
    // NVRTC has no host C headers: the fixed-width integer ones are
    // supplied in memory (the CUDA toolkit's include folder, where found,
    // is on the search path for the rest).
    let program = Program::new(n, source, "nexus_kernel.cu", STD_HEADERS).map_err(|mut e| {
        e.message = format!("{} ({where_})", e.message);
        e
    })?;
    let use_cubin = Program::can_emit_cubin(n);
    let arch = if use_cubin {
        format!("--gpu-architecture={}", gpu.arch)
    } else {
        format!("--gpu-architecture={}", gpu.arch.replace("sm_", "compute_"))
    };
    let mut opts: Vec<String> = vec![arch, "--std=c++17".into(), "-default-device".into()];
    for dir in cuda_include_dirs() {
        opts.push(format!("--include-path={dir}"));
    }
    let (nvrtc_major, nvrtc_minor) = Program::version(n).unwrap_or((0, 0));
    let headers: String = STD_HEADERS
        .iter()
        .map(|(h, b)| format!("{h}\0{b}\0"))
        .collect();
    let key = Key::new("nvrtc")
        .part("source", source)
        .part("options", opts.join("\0").as_bytes())
        .part("headers", headers.as_bytes())
        .part("arch", gpu.arch.as_bytes())
        .part("output", if use_cubin { b"cubin" } else { b"ptx" })
        .part("nvrtc", format!("{nvrtc_major}.{nvrtc_minor}").as_bytes())
        .part(
            "driver",
            &r::driver_version(gpu.d).unwrap_or(0).to_le_bytes(),
        );
    let cache = CompileCache::open("nvrtc");
    let (payload, state) = cache.get_or_compile(&key, || {
        let (image, log) = compile_program(gpu, &program, &opts, use_cubin, where_)?;
        let mut payload = (log.len() as u64).to_le_bytes().to_vec();
        payload.extend_from_slice(log.as_bytes());
        payload.extend_from_slice(&image);
        Ok(payload)
    })?;
    let log_len = payload
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(u64::MAX);
    match usize::try_from(log_len).ok().and_then(|l| l.checked_add(8)) {
        Some(end) if end <= payload.len() => {
            let log = String::from_utf8_lossy(&payload[8..end]).into_owned();
            Ok((payload[end..].to_vec(), log, state))
        }
        // A well-formed entry of another layout: compile afresh.
        _ => {
            let (image, log) = compile_program(gpu, &program, &opts, use_cubin, where_)?;
            Ok((image, log, CacheState::Miss))
        }
    }
}

/// Runs NVRTC on `program`; the image and the log.
fn compile_program(
    gpu: &Gpu,
    program: &Program<'_>,
    opts: &[String],
    use_cubin: bool,
    where_: &str,
) -> Result<(Vec<u8>, String)> {
    let (log, failure) = program.compile(opts);
    if let Some(why) = failure {
        return Err(Error::new(
            Status::CompileError,
            format!(
                "NVRTC failed to compile CUDA source {where_} for {} ({why}):\n{log}",
                gpu.arch
            ),
        ));
    }
    let image = if use_cubin {
        program.image(ImageKind::Cubin)?
    } else {
        nul_terminated(&program.image(ImageKind::Ptx)?)
    };
    Ok((image, log))
}

impl hal::Library for CudaLibrary {
    fn properties(&self) -> Value {
        let mut v = json!({"Type": self.format, "Runtime": "cuda"});
        if self.builtin {
            v["Kernels"] = json!(BUILTINS.iter().map(|(n, _, _, _)| *n).collect::<Vec<_>>());
        }
        if let Some(p) = &self.path {
            v["Path"] = json!(p);
        }
        if let Some(l) = &self.log {
            v["CompileLog"] = json!(l);
        }
        if let Some(c) = self.compile_cache {
            v["CompileCache"] = json!(c);
        }
        v
    }

    fn kernel(&self, name: &str) -> Result<Arc<dyn hal::Kernel>> {
        let gpu = &self.gpu;
        let (arity, hidden_count, check) = if self.builtin {
            match BUILTINS.iter().find(|(n, _, _, _)| *n == name) {
                Some((_, a, h, c)) => (Some(*a), *h, *c),
                None => {
                    let names: Vec<&str> = BUILTINS.iter().map(|(n, _, _, _)| *n).collect();
                    return Err(Error::new(
                        Status::InvalidKernel,
                        format!(
                            "kernel '{name}' not found in the builtin library (kernels: {})",
                            names.join(", ")
                        ),
                    ));
                }
            }
        } else {
            (None, false, None)
        };
        let _ctx = gpu.bind()?;
        let function = self.module.function(name)?;
        let f = function.raw();
        // Builtins append a hidden parameter, so their table is the truth.
        let param_sizes = if self.builtin {
            None
        } else {
            r::func_param_sizes(gpu.d, f)
        };
        let arity = arity.or(param_sizes.as_ref().map(Vec::len));
        let a = |attr| r::func_attribute(gpu.d, f, attr).ok();
        let mut properties = json!({
            "Name": name,
            "MaxThreadsPerGroup": a(sys::FUNC_MAX_THREADS_PER_BLOCK),
            "Registers": a(sys::FUNC_NUM_REGS),
            "SharedMemory": a(sys::FUNC_SHARED_SIZE_BYTES),
            "ConstantMemory": a(sys::FUNC_CONST_SIZE_BYTES),
            "LocalMemory": a(sys::FUNC_LOCAL_SIZE_BYTES),
            "MaxDynamicSharedMemory": a(sys::FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES),
            "PTXVersion": a(sys::FUNC_PTX_VERSION),
            "BinaryVersion": a(sys::FUNC_BINARY_VERSION),
        });
        if let Some(n) = arity {
            properties["ArgumentCount"] = json!(n);
        }
        Ok(Arc::new(CudaKernel {
            name: name.to_string(),
            function,
            gpu: gpu.clone(),
            arity,
            param_sizes,
            hidden_count,
            check,
            shared_allowed: std::sync::Mutex::new(48 * 1024),
            properties,
            _module: self.module.clone(),
        }))
    }
}

impl hal::Kernel for CudaKernel {
    fn name(&self) -> &str {
        &self.name
    }
    fn properties(&self) -> Value {
        self.properties.clone()
    }
    fn arity(&self) -> Option<usize> {
        self.arity
    }
    fn param_sizes(&self) -> Option<&[usize]> {
        self.param_sizes.as_deref()
    }
    fn check_launch(&self, args: &[hal::Arg], dims: &LaunchDims) -> Result<()> {
        self.check.map_or(Ok(()), |check| check(args, dims))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl CudaKernel {
    pub(super) fn name_str(&self) -> &str {
        &self.name
    }

    /// Lets launches of this function use `bytes` of dynamic shared memory.
    pub(super) fn allow_shared_memory(&self, bytes: u32) -> Result<()> {
        let mut allowed = lock(&self.shared_allowed);
        if bytes <= *allowed {
            return Ok(());
        }
        r::func_set_attribute(
            self.gpu.d,
            self.function.raw(),
            sys::FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
        .map_err(|mut e| {
            e.message = format!(
                "kernel '{}': allowing {bytes} bytes of shared memory: {}",
                self.name, e.message
            );
            e
        })?;
        *allowed = bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart_by_content() {
        assert_eq!(detect(b"\x7fELF\x02\x01", None), "cubin");
        assert_eq!(detect(&0xBA55_ED50u32.to_le_bytes(), None), "fatbin");
        assert_eq!(detect(BUILTIN_PTX.as_bytes(), None), "ptx");
        assert_eq!(detect(b"extern \"C\" __global__ void k() {}", None), "cuda");
        assert_eq!(detect(b"anything", Some(Path::new("k.cu"))), "cuda");
        assert!(BUILTIN_PTX.contains(".entry add_vectors"));
    }
}
