//! Programs: OpenCL C source (built for the device, the build log in the
//! error), SPIR-V (`clCreateProgramWithIL`) and program binaries, with a
//! persistent cache of built binaries keyed by the source, the build
//! options, the device and its driver.
//!
//! Source is built with `-cl-kernel-arg-info`, so each kernel's parameters
//! are known: `__global`/`__constant` pointers take buffers, scalars take
//! values of their type's size (checked above the trait), and nexus binds
//! two kinds itself, outside the command's arguments: every `__local`
//! pointer gets the command's `shared_memory` bytes, and an integer
//! parameter named `nxs_shared_memory_size` gets that byte count.

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::ffi::result::{ArgInfo, Kernel, Program};
use super::ffi::sys;
use super::Dev;
use crate::backends::common::{self, builtin::LaunchCheck, lock};
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::LaunchDims;

/// Options every source build gets.
const BUILD_OPTIONS: &str = "-cl-kernel-arg-info";

/// The kernels every runtime ships. `add_vectors` takes a hidden fourth
/// argument, the element count (grid_size[0]), which nexus sets.
pub const BUILTIN_SOURCE: &str = r#"
__kernel void add_vectors(__global const float *a, __global const float *b, __global float *c, uint nxs_grid_size) {
    size_t i = get_global_id(0);
    if (i < nxs_grid_size) c[i] = a[i] + b[i];
}
// A parameterless kernel breaks NVIDIA's OpenCL compiler (ptxas: "Parsing
// error near '}'", driver 580, H200): `empty` takes the hidden grid size.
__kernel void empty(uint nxs_grid_size) {}
"#;

/// (name, bounds check)
const BUILTINS: &[(&str, Option<LaunchCheck>)] = &[
    ("add_vectors", Some(common::builtin::check_add_vectors)),
    ("empty", None),
];

/// One parameter of a kernel, as nexus binds it.
#[derive(Clone, Debug)]
pub(crate) enum Param {
    Buffer {
        name: String,
        type_name: String,
    },
    Scalar {
        name: String,
        type_name: String,
        size: Option<usize>,
    },
    /// A `__local` pointer: the command's shared memory.
    Local,
    /// `nxs_shared_memory_size`: the command's shared memory size.
    SharedSize {
        size: usize,
    },
    /// `nxs_grid_size` (builtins): grid_size[0].
    GridSize,
}

impl Param {
    pub(crate) fn describe(&self) -> String {
        match self {
            Param::Buffer { name, type_name } => format!("'{name}' ({type_name}), a buffer"),
            Param::Scalar {
                name,
                type_name,
                size: Some(s),
            } => format!("'{name}' ({type_name}), a {s}-byte scalar"),
            Param::Scalar {
                name,
                type_name,
                size: None,
            } => format!("'{name}' ({type_name}), a scalar"),
            _ => "bound by nexus".into(),
        }
    }

    fn user_size(&self) -> Option<Option<usize>> {
        match self {
            Param::Buffer { .. } => Some(Some(8)),
            Param::Scalar { size, .. } => Some(*size),
            _ => None,
        }
    }
}

/// Bytes of an OpenCL C scalar or vector type, by name.
fn type_size(type_name: &str) -> Option<usize> {
    let t = type_name
        .trim()
        .trim_start_matches("const ")
        .trim_start_matches("unsigned ")
        .trim();
    let digits = t.trim_start_matches(|c: char| c.is_ascii_alphabetic() || c == '_');
    let base = &t[..t.len() - digits.len()];
    let lanes: usize = if digits.is_empty() {
        1
    } else {
        digits.parse().ok()?
    };
    let lanes = if lanes == 3 { 4 } else { lanes };
    let size = match base {
        "char" | "uchar" | "bool" => 1,
        "short" | "ushort" | "half" => 2,
        "int" | "uint" | "float" => 4,
        "long" | "ulong" | "double" | "size_t" | "ptrdiff_t" | "intptr_t" | "uintptr_t" => 8,
        _ => return None,
    };
    Some(size * lanes)
}

fn params_of(infos: &[ArgInfo], builtin: bool) -> Vec<Param> {
    infos
        .iter()
        .map(|a| {
            let pointer = a.type_name.contains('*');
            match a.address {
                sys::CL_KERNEL_ARG_ADDRESS_LOCAL => Param::Local,
                sys::CL_KERNEL_ARG_ADDRESS_GLOBAL | sys::CL_KERNEL_ARG_ADDRESS_CONSTANT => {
                    Param::Buffer {
                        name: a.name.clone(),
                        type_name: a.type_name.clone(),
                    }
                }
                _ if pointer => Param::Buffer {
                    name: a.name.clone(),
                    type_name: a.type_name.clone(),
                },
                _ if a.name == "nxs_shared_memory_size" => Param::SharedSize {
                    size: type_size(&a.type_name).unwrap_or(4),
                },
                _ if builtin && a.name == "nxs_grid_size" => Param::GridSize,
                _ => Param::Scalar {
                    name: a.name.clone(),
                    type_name: a.type_name.clone(),
                    size: type_size(&a.type_name),
                },
            }
        })
        .collect()
}

/// A built program and what nexus knows of its kernels.
pub(crate) struct Built {
    pub program: Arc<Program>,
    /// Each kernel's parameters (from the build or the cache), where known.
    pub args: Option<HashMap<String, Vec<ArgInfo>>>,
    pub log: String,
    pub cache: &'static str,
}

pub struct OclLibrary {
    dev: Arc<Dev>,
    built: Arc<Built>,
    format: &'static str,
    builtin: bool,
    path: Option<String>,
}

pub struct OclKernel {
    pub(crate) name: String,
    pub(crate) dev: Arc<Dev>,
    built: Arc<Built>,
    /// Every parameter, where the program carries argument info.
    pub(crate) params: Option<Vec<Param>>,
    pub(crate) num_args: u32,
    arity: Option<usize>,
    param_sizes: Option<Vec<usize>>,
    pub(crate) max_group: u64,
    pub(crate) static_local: u64,
    check: Option<LaunchCheck>,
    properties: Value,
}

const SPIRV_MAGIC: u32 = 0x0723_0203;

/// What a library is: "spirv", "source" or "binary".
fn detect(bytes: &[u8], path: Option<&Path>) -> &'static str {
    if bytes.len() >= 4 {
        let w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if w == SPIRV_MAGIC || w.swap_bytes() == SPIRV_MAGIC {
            return "spirv";
        }
    }
    let ext = path
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("cl") | Some("clc") => return "source",
        Some("spv") => return "spirv",
        _ => {}
    }
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let text = std::str::from_utf8(head).is_ok();
    let s = String::from_utf8_lossy(head);
    if text && (s.contains("__kernel") || s.contains("kernel void")) {
        "source"
    } else {
        "binary"
    }
}

// ------------------------------------------------------------ cache

/// Where built binaries are kept: `NEXUS_OPENCL_CACHE` ("0" or "" turns
/// the cache off), else `opencl/` in the folder of every nexus compile
/// cache: `$NEXUS_CACHE_DIR` (same "0"), `$XDG_CACHE_HOME/nexus` or
/// `~/.cache/nexus`.
fn cache_dir() -> Option<PathBuf> {
    let off = |v: &std::ffi::OsStr| v.is_empty() || v == "0";
    if let Some(v) = std::env::var_os("NEXUS_OPENCL_CACHE") {
        return (!off(&v)).then(|| PathBuf::from(v));
    }
    if let Some(v) = std::env::var_os("NEXUS_CACHE_DIR") {
        return (!off(&v)).then(|| PathBuf::from(v).join("opencl"));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("nexus").join("opencl"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(
        PathBuf::from(home)
            .join(".cache")
            .join("nexus")
            .join("opencl"),
    )
}

/// A stable 128-bit FNV-1a digest (two 64-bit lanes) as hex.
fn digest(parts: &[&[u8]]) -> String {
    let mut lanes = [0xcbf2_9ce4_8422_2325u64, 0x6c62_272e_07bb_0142u64];
    for (n, lane) in lanes.iter_mut().enumerate() {
        for p in parts {
            for &b in p.iter().chain((p.len() as u64).to_le_bytes().iter()) {
                *lane ^= b as u64 ^ n as u64;
                *lane = lane.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    format!("{:016x}{:016x}", lanes[0], lanes[1])
}

fn cache_key(dev: &Dev, source: &[u8], options: &str) -> String {
    digest(&[
        source,
        options.as_bytes(),
        dev.name.as_bytes(),
        dev.driver_version.as_bytes(),
        dev.platform_version.as_bytes(),
        env!("CARGO_PKG_VERSION").as_bytes(),
    ])
}

fn args_to_json(args: &HashMap<String, Vec<ArgInfo>>) -> Value {
    let map: serde_json::Map<String, Value> = args
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::Array(
                    v.iter()
                        .map(|a| json!([a.address, a.type_name, a.name]))
                        .collect(),
                ),
            )
        })
        .collect();
    Value::Object(map)
}

fn args_from_json(v: &Value) -> Option<HashMap<String, Vec<ArgInfo>>> {
    let mut out = HashMap::new();
    for (k, list) in v.as_object()? {
        let mut infos = Vec::new();
        for a in list.as_array()? {
            infos.push(ArgInfo {
                address: a.get(0)?.as_u64()? as u32,
                type_name: a.get(1)?.as_str()?.to_string(),
                name: a.get(2)?.as_str()?.to_string(),
            });
        }
        out.insert(k.clone(), infos);
    }
    Some(out)
}

fn cache_load(dev: &Dev, key: &str) -> Option<Built> {
    let dir = cache_dir()?;
    let binary = std::fs::read(dir.join(format!("{key}.bin"))).ok()?;
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{key}.json"))).ok()?).ok()?;
    let args = args_from_json(meta.get("kernels")?)?;
    let program = Program::with_binary(dev.a, dev.ctx().ok()?, dev.id.0, &binary).ok()?;
    program.build(dev.id.0, BUILD_OPTIONS).ok()?;
    Some(Built {
        program: Arc::new(program),
        args: Some(args),
        log: meta
            .get("log")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        cache: "hit",
    })
}

/// Stores a built program; never fails (an unwritable cache is skipped).
fn cache_store(key: &str, built: &Built) {
    let Some(dir) = cache_dir() else {
        return;
    };
    let (Ok(binary), Some(args)) = (built.program.binary(), built.args.as_ref()) else {
        return;
    };
    if binary.is_empty() {
        return;
    }
    let meta = json!({"kernels": args_to_json(args), "log": built.log});
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tag = format!("{}-{:?}", std::process::id(), std::thread::current().id())
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        for (ext, data) in [
            ("bin", binary.clone()),
            ("json", meta.to_string().into_bytes()),
        ] {
            let tmp = dir.join(format!("{key}.{ext}.{tag}.tmp"));
            std::fs::write(&tmp, data)?;
            std::fs::rename(&tmp, dir.join(format!("{key}.{ext}")))?;
        }
        Ok(())
    };
    if let Err(e) = write() {
        log::debug!(
            "OpenCL program cache not written in '{}': {e}",
            dir.display()
        );
    }
}

/// Builds OpenCL C `source` for the device (or takes it from the cache).
fn build_source(dev: &Dev, source: &[u8], where_: &str) -> Result<Built> {
    let key = cache_key(dev, source, BUILD_OPTIONS);
    if let Some(b) = cache_load(dev, &key) {
        return Ok(b);
    }
    let program = Program::with_source(dev.a, dev.ctx()?, source)?;
    if let Err((code, log)) = program.build(dev.id.0, BUILD_OPTIONS) {
        return Err(Error::new(
            Status::CompileError,
            format!(
                "building OpenCL C source {where_} for {} failed: {}:\n{log}",
                dev.label(),
                super::ffi::result::error_name(code)
            ),
        ));
    }
    let log = program.build_log(dev.id.0);
    let args = kernel_args(dev, &program);
    let built = Built {
        program: Arc::new(program),
        args,
        log,
        cache: if cache_dir().is_some() { "miss" } else { "off" },
    };
    cache_store(&key, &built);
    Ok(built)
}

/// Every kernel's argument info, where the program has it.
fn kernel_args(dev: &Dev, program: &Program) -> Option<HashMap<String, Vec<ArgInfo>>> {
    let mut out = HashMap::new();
    for name in program.kernel_names().ok()? {
        let k = Kernel::new(dev.a, program, &name).ok()?;
        let n = k.num_args().ok()?;
        let infos: Option<Vec<ArgInfo>> = (0..n).map(|i| k.arg_info(i).ok().flatten()).collect();
        out.insert(name, infos?);
    }
    Some(out)
}

impl OclLibrary {
    pub(crate) fn load(dev: &Arc<Dev>, source: &hal::LibrarySource) -> Result<Self> {
        dev.check_process()?;
        let (bytes, path): (Vec<u8>, Option<&Path>) = match source {
            hal::LibrarySource::Builtin => {
                let built = {
                    let mut slot = lock(&dev.builtin);
                    match slot.as_ref() {
                        Some(b) => b.clone(),
                        None => {
                            let b = Arc::new(build_source(
                                dev,
                                BUILTIN_SOURCE.as_bytes(),
                                "<builtin>",
                            )?);
                            *slot = Some(b.clone());
                            b
                        }
                    }
                };
                return Ok(OclLibrary {
                    dev: dev.clone(),
                    built,
                    format: "builtin",
                    builtin: true,
                    path: None,
                });
            }
            hal::LibrarySource::File(p) => {
                if !p.exists() {
                    // A string of OpenCL C (as PyOpenCL's Program takes) is
                    // source, not a path.
                    let s = p.to_string_lossy();
                    if s.contains('(') && (s.contains("__kernel") || s.contains("kernel void")) {
                        return Self::from_bytes(dev, s.as_bytes().to_vec(), None);
                    }
                    return Err(Error::new(
                        Status::InvalidLibrary,
                        format!("library file does not exist: '{}'", p.display()),
                    ));
                }
                if !p.is_file() {
                    return Err(Error::new(
                        Status::InvalidLibrary,
                        format!("library path is not a file: '{}'", p.display()),
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
        Self::from_bytes(dev, bytes, path)
    }

    fn from_bytes(dev: &Arc<Dev>, bytes: Vec<u8>, path: Option<&Path>) -> Result<Self> {
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
        let built = match format {
            "source" => build_source(dev, &bytes, &where_)?,
            "spirv" => {
                let unsupported = || {
                    Error::new(
                        Status::NotSupported,
                        format!("library {where_} is SPIR-V, which {} does not take (it reports no IL version; build from OpenCL C source instead)", dev.label()),
                    )
                };
                if dev.il_version.trim().is_empty() {
                    return Err(unsupported());
                }
                let program = Program::with_il(dev.a, dev.ctx()?, &bytes)
                    .ok_or_else(unsupported)?
                    .map_err(|mut e| {
                        e.status = Status::InvalidLibrary;
                        e.message = format!(
                            "loading SPIR-V library {where_} on {}: {}",
                            dev.label(),
                            e.message
                        );
                        e
                    })?;
                if let Err((code, log)) = program.build(dev.id.0, BUILD_OPTIONS) {
                    return Err(Error::new(
                        Status::InvalidLibrary,
                        format!(
                            "building SPIR-V library {where_} for {} failed: {}:\n{log}",
                            dev.label(),
                            super::ffi::result::error_name(code)
                        ),
                    ));
                }
                let log = program.build_log(dev.id.0);
                let args = kernel_args(dev, &program);
                Built {
                    program: Arc::new(program),
                    args,
                    log,
                    cache: "off",
                }
            }
            _ => {
                let not_binary = |detail: String| {
                    Error::new(
                        Status::InvalidLibrary,
                        format!("library {where_} is not OpenCL C source, SPIR-V or a program binary for {}: {detail}", dev.label()),
                    )
                };
                let program = Program::with_binary(dev.a, dev.ctx()?, dev.id.0, &bytes)
                    .map_err(|e| not_binary(e.message))?;
                program.build(dev.id.0, "").map_err(|(code, log)| {
                    not_binary(format!("{}: {log}", super::ffi::result::error_name(code)))
                })?;
                let log = program.build_log(dev.id.0);
                let args = kernel_args(dev, &program);
                Built {
                    program: Arc::new(program),
                    args,
                    log,
                    cache: "off",
                }
            }
        };
        Ok(OclLibrary {
            dev: dev.clone(),
            built: Arc::new(built),
            format,
            builtin: false,
            path: path.map(|p| p.display().to_string()),
        })
    }
}

impl hal::Library for OclLibrary {
    fn properties(&self) -> Value {
        let mut v = json!({"Type": self.format, "Runtime": "opencl", "Cache": self.built.cache});
        if self.builtin {
            v["Kernels"] = json!(BUILTINS.iter().map(|(n, _)| *n).collect::<Vec<_>>());
        } else if let Ok(names) = self.built.program.kernel_names() {
            v["Kernels"] = json!(names);
        }
        if let Some(p) = &self.path {
            v["Path"] = json!(p);
        }
        if !self.built.log.is_empty() {
            v["BuildLog"] = json!(self.built.log);
        }
        v
    }

    fn kernel(&self, name: &str) -> Result<Arc<dyn hal::Kernel>> {
        let check = if self.builtin {
            match BUILTINS.iter().find(|(n, _)| *n == name) {
                Some((_, c)) => *c,
                None => {
                    let names: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
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
            None
        };
        let dev = &self.dev;
        let k = Kernel::new(dev.a, &self.built.program, name).map_err(|e| {
            let names = self
                .built
                .program
                .kernel_names()
                .unwrap_or_default()
                .join(", ");
            Error::new(
                Status::InvalidKernel,
                format!(
                    "kernel '{name}' not found in the library (kernels: {names}; {})",
                    e.message
                ),
            )
        })?;
        let num_args = k.num_args()?;
        let params = self
            .built
            .args
            .as_ref()
            .and_then(|m| m.get(name))
            .map(|infos| params_of(infos, self.builtin));
        let user: Option<Vec<Option<usize>>> = params
            .as_ref()
            .map(|ps| ps.iter().filter_map(Param::user_size).collect());
        let arity = match &user {
            Some(u) => Some(u.len()),
            None => Some(num_args as usize),
        };
        let param_sizes: Option<Vec<usize>> =
            user.as_ref().and_then(|u| u.iter().copied().collect());
        let max_group = k
            .work_group_u64(dev.id.0, sys::CL_KERNEL_WORK_GROUP_SIZE)
            .unwrap_or(dev.max_group);
        let static_local = k
            .work_group_u64(dev.id.0, sys::CL_KERNEL_LOCAL_MEM_SIZE)
            .unwrap_or(0);
        let mut properties = json!({
            "Name": name,
            "MaxThreadsPerGroup": max_group,
            "SharedMemory": static_local,
            "PrivateMemory": k.work_group_u64(dev.id.0, sys::CL_KERNEL_PRIVATE_MEM_SIZE),
            "PreferredGroupSizeMultiple": k.work_group_u64(dev.id.0, sys::CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE),
            "NumParameters": num_args,
        });
        if let Some(n) = arity {
            properties["ArgumentCount"] = json!(n);
        }
        if let Some(ps) = &params {
            properties["Parameters"] = json!(ps
                .iter()
                .map(|p| match p {
                    Param::Buffer { name, type_name } =>
                        json!({"Name": name, "Type": type_name, "Kind": "buffer"}),
                    Param::Scalar {
                        name, type_name, ..
                    } => json!({"Name": name, "Type": type_name, "Kind": "scalar"}),
                    Param::Local => json!({"Kind": "local"}),
                    Param::SharedSize { .. } =>
                        json!({"Name": "nxs_shared_memory_size", "Kind": "shared_memory_size"}),
                    Param::GridSize => json!({"Name": "nxs_grid_size", "Kind": "grid_size"}),
                })
                .collect::<Vec<_>>());
        }
        Ok(Arc::new(OclKernel {
            name: name.to_string(),
            dev: dev.clone(),
            built: self.built.clone(),
            params,
            num_args,
            arity,
            param_sizes,
            max_group,
            static_local,
            check,
            properties,
        }))
    }
}

impl OclKernel {
    /// A kernel object of its own for one encoded command.
    pub(crate) fn instance(&self) -> Result<Kernel> {
        Kernel::new(self.dev.a, &self.built.program, &self.name)
    }

    pub(crate) fn uses_local(&self) -> bool {
        self.params
            .as_ref()
            .is_some_and(|ps| ps.iter().any(|p| matches!(p, Param::Local)))
    }
}

impl hal::Kernel for OclKernel {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_type_sizes() {
        assert_eq!(detect(&0x0723_0203u32.to_le_bytes(), None), "spirv");
        assert_eq!(detect(b"__kernel void k() {}", None), "source");
        assert_eq!(detect(b"anything", Some(Path::new("k.cl"))), "source");
        assert_eq!(detect(b"\x7fELF\x02", None), "binary");
        assert_eq!(type_size("int"), Some(4));
        assert_eq!(type_size("double"), Some(8));
        assert_eq!(type_size("float4"), Some(16));
        assert_eq!(type_size("uchar3"), Some(4));
        assert_eq!(type_size("struct s"), None);
        assert_eq!(digest(&[b"a"]), digest(&[b"a"]));
        assert_ne!(digest(&[b"a", b"b"]), digest(&[b"ab"]));
    }
}
