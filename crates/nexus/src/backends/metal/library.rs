//! Libraries: `.metallib` files or bytes (`newLibraryWithData`) and MSL
//! source compiled by Metal (`newLibraryWithSource`; the compiler's log is
//! in the error). A kernel is a compute pipeline made on `get_kernel`, with
//! its buffer bindings from Metal's reflection.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use super::logic::{self, ArgKind, LibraryKind, PipelineLimits, Reflected};
use super::{ffi, Gpu};
use crate::backends::common::{self, builtin::LaunchCheck, lock};
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::LaunchDims;

/// The builtin library (`device.get_builtin_library()`, the self-check of
/// `python -m nexus`). `dispatchThreads` launches exactly grid_size threads,
/// so no bounds check is needed in the kernel.
pub const BUILTIN_MSL: &str = r#"
#include <metal_stdlib>
using namespace metal;

kernel void add_vectors(device const float *a [[buffer(0)]],
                        device const float *b [[buffer(1)]],
                        device float *c [[buffer(2)]],
                        uint i [[thread_position_in_grid]]) {
    c[i] = a[i] + b[i];
}

kernel void empty() {}
"#;

const BUILTINS: &[(&str, Option<LaunchCheck>)] = &[
    ("add_vectors", Some(common::builtin::check_add_vectors)),
    ("empty", None),
];

/// A loaded Metal library.
pub(crate) struct Compiled {
    lib: ffi::Library,
    origin: String,
    kind: &'static str,
    builtin: bool,
}

pub struct MtlLibrary {
    gpu: Arc<Gpu>,
    compiled: Arc<Compiled>,
}

fn load_bytes(gpu: &Gpu, bytes: &[u8], origin: &str) -> Result<Compiled> {
    let kind = logic::library_kind(origin, bytes)?;
    let lib = match kind {
        LibraryKind::Metallib => gpu.dev.library_from_data(bytes),
        LibraryKind::Source => {
            // `library_kind` accepted the bytes as UTF-8 text.
            let source = String::from_utf8_lossy(bytes);
            gpu.dev.library_from_source(&source)
        }
    }
    .map_err(|e| logic::library_error(origin, e.code, &e.description))?;
    Ok(Compiled {
        lib,
        origin: origin.to_string(),
        kind: match kind {
            LibraryKind::Metallib => "metallib",
            LibraryKind::Source => "msl",
        },
        builtin: false,
    })
}

impl MtlLibrary {
    pub fn load(gpu: &Arc<Gpu>, source: &hal::LibrarySource) -> Result<MtlLibrary> {
        ffi::pool(|| Self::load_in_pool(gpu, source))
    }

    fn load_in_pool(gpu: &Arc<Gpu>, source: &hal::LibrarySource) -> Result<MtlLibrary> {
        let compiled = match source {
            hal::LibrarySource::Builtin => {
                // Compiled once per device: the self-check loads it often.
                let mut slot = lock(&gpu.builtin);
                match slot.as_ref() {
                    Some(c) => c.clone(),
                    None => {
                        let mut c = load_bytes(gpu, BUILTIN_MSL.as_bytes(), "<builtin>")?;
                        c.builtin = true;
                        let c = Arc::new(c);
                        *slot = Some(c.clone());
                        c
                    }
                }
            }
            hal::LibrarySource::Bytes(b) => Arc::new(load_bytes(gpu, b, "bytes")?),
            hal::LibrarySource::File(path) => {
                let origin = path.display().to_string();
                if !Path::new(path).is_file() {
                    return Err(Error::new(
                        Status::InvalidLibrary,
                        format!("Metal library file does not exist or is not a file: '{origin}'"),
                    ));
                }
                let bytes = std::fs::read(path).map_err(|e| {
                    Error::new(
                        Status::InvalidLibrary,
                        format!("cannot read Metal library '{origin}': {e}"),
                    )
                })?;
                Arc::new(load_bytes(gpu, &bytes, &origin)?)
            }
        };
        Ok(MtlLibrary {
            gpu: gpu.clone(),
            compiled,
        })
    }
}

impl hal::Library for MtlLibrary {
    fn properties(&self) -> Value {
        ffi::pool(|| {
            json!({
                "Source": self.compiled.origin,
                "Type": self.compiled.kind,
                "Kernels": self.compiled.lib.function_names(),
            })
        })
    }

    fn kernel(&self, name: &str) -> Result<Arc<dyn hal::Kernel>> {
        ffi::pool(|| self.make_kernel(name))
    }
}

impl MtlLibrary {
    fn make_kernel(&self, name: &str) -> Result<Arc<dyn hal::Kernel>> {
        let function = self.compiled.lib.function(name).ok_or_else(|| {
            Error::new(
                Status::InvalidKernel,
                format!(
                    "kernel '{name}' is not in Metal library '{}' (it has: {})",
                    self.compiled.origin,
                    self.compiled.lib.function_names().join(", ")
                ),
            )
        })?;
        let (pipeline, reflected) = self.gpu.dev.pipeline(&function).map_err(|e| {
            let mut err = logic::library_error(&self.compiled.origin, e.code, &e.description);
            err.status = Status::InvalidKernel;
            err.message = format!(
                "kernel '{name}': cannot make a compute pipeline: {}",
                err.message
            );
            err
        })?;
        let info = &self.gpu.info;
        let limits = PipelineLimits {
            max_total_threads: pipeline.max_total_threads(),
            execution_width: pipeline.execution_width(),
            static_threadgroup_memory: pipeline.static_threadgroup_memory(),
            max_threads_per_axis: info.max_threads_per_threadgroup,
            max_threadgroup_memory: info.max_threadgroup_memory,
        };
        let check = if self.compiled.builtin {
            BUILTINS
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, c)| *c)
        } else {
            None
        };
        Ok(Arc::new(MtlKernel {
            name: name.to_string(),
            pipeline,
            reflected,
            limits,
            check,
            _library: self.compiled.clone(),
        }))
    }
}

pub struct MtlKernel {
    pub(crate) name: String,
    pub(crate) pipeline: ffi::Pipeline,
    pub(crate) reflected: Vec<Reflected>,
    pub(crate) limits: PipelineLimits,
    check: Option<LaunchCheck>,
    _library: Arc<Compiled>,
}

/// Each argument as the layout sees it.
pub(crate) fn arg_kinds(args: &[hal::Arg]) -> Vec<ArgKind> {
    args.iter()
        .map(|a| match a {
            hal::Arg::Buffer(_) => ArgKind::Buffer,
            hal::Arg::Scalar(s) => ArgKind::Scalar(s.bytes()),
        })
        .collect()
}

impl hal::Kernel for MtlKernel {
    fn name(&self) -> &str {
        &self.name
    }

    fn properties(&self) -> Value {
        let bindings: Vec<Value> = self
            .reflected
            .iter()
            .map(|r| json!({"Name": r.name, "Index": r.index, "DataSize": r.data_size, "Used": r.used}))
            .collect();
        json!({
            "Name": self.name,
            "ArgumentCount": logic::arity(&self.reflected),
            "Bindings": bindings,
            "MaxThreadsPerGroup": self.limits.max_total_threads,
            "ThreadExecutionWidth": self.limits.execution_width,
            "SharedMemory": self.limits.static_threadgroup_memory,
            "MaxGroupMemory": self.limits.max_threadgroup_memory,
        })
    }

    fn arity(&self) -> Option<usize> {
        // Reflection lists the bindings Metal knows; without any (a kernel
        // with no buffers) nothing is known.
        (!self.reflected.is_empty()).then(|| logic::arity(&self.reflected))
    }

    fn check_launch(&self, args: &[hal::Arg], dims: &LaunchDims) -> Result<()> {
        if let Some(check) = self.check {
            check(args, dims)?;
        }
        let kinds = arg_kinds(args);
        logic::layout(&self.name, &kinds)?;
        logic::check_reflection(&self.name, &kinds, &self.reflected)?;
        logic::dispatch(&self.name, dims, &self.limits).map(|_| ())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
