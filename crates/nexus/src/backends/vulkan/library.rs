//! Kernel libraries: SPIR-V modules, WGSL and GLSL compute source, all
//! read into naga's IR in-process (no external tool), validated for the
//! device's features, and reflected to learn each kernel's arguments.
//!
//! Conventions (README, "Vulkan"):
//! - buffer argument i is the storage buffer at set 0 binding i;
//! - scalars are the members of the kernel's one push-constant block
//!   (`var<immediate>` in WGSL, `layout(push_constant)` in GLSL), in
//!   argument order, std430 offsets; a block larger than the device's
//!   `maxPushConstantsSize` moves to a hidden storage buffer (set 1
//!   binding 0), transparently;
//! - the group size: pipeline-overridable constants with ids 0, 1, 2 (WGSL
//!   `@id(0) override`, GLSL `layout(constant_id = 0)`, SPIR-V `SpecId 0`)
//!   receive the command's group size, which also becomes the entry
//!   point's workgroup size; a kernel without them has a fixed size, and a
//!   command with another group size raises `ValueError`;
//! - an override with id 3 receives the command's `shared_memory` bytes
//!   (size a workgroup array with it), ids 4, 5, 6 the grid size (total
//!   work-items per axis; a pipeline is then made per grid size).
//!
//! A pipeline is made per (kernel, group size, shared memory) on first use
//! at encode and cached on the kernel.

use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use naga::back::spv;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use serde_json::{json, Value};

use super::{ffi, Gpu};
use crate::backends::common::{self, lock};
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::LaunchDims;

/// The builtin library (`device.get_builtin_library()`), compiled from
/// WGSL in-process like users' kernels.
const BUILTIN_WGSL: &str = r#"
@id(0) override group_x: u32 = 64u;
@id(4) override grid_x: u32 = 0u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(group_x)
fn add_vectors(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < grid_x) {
        c[i] = a[i] + b[i];
    }
}

@compute @workgroup_size(group_x)
fn empty() {
}
"#;

/// Builtin kernels' checks, by name.
const BUILTIN_CHECKS: &[(&str, common::builtin::LaunchCheck)] =
    &[("add_vectors", common::builtin::check_add_vectors)];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Language {
    Spirv,
    Wgsl,
    Glsl,
}

impl Language {
    fn name(self) -> &'static str {
        match self {
            Language::Spirv => "spirv",
            Language::Wgsl => "wgsl",
            Language::Glsl => "glsl",
        }
    }
}

/// A validated module.
struct Compiled {
    module: naga::Module,
    info: naga::valid::ModuleInfo,
    /// Where it came from, for messages: a path, "bytes" or "builtin".
    origin: String,
    language: Language,
    builtin: bool,
}

pub struct VkLibrary {
    gpu: Arc<Gpu>,
    compiled: Arc<Compiled>,
}

const SPIRV_MAGIC: u32 = 0x0723_0203;

fn invalid(origin: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        Status::InvalidLibrary,
        format!("library '{origin}' is not a Vulkan kernel library: {why}"),
    )
}

fn is_spirv(bytes: &[u8]) -> bool {
    bytes.len() >= 4
        && (u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == SPIRV_MAGIC
            || u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == SPIRV_MAGIC)
}

/// The language of source text without a telling file name.
fn sniff_text(text: &str) -> Option<Language> {
    if text.contains("#version") || text.contains("layout(") || text.contains("layout (") {
        Some(Language::Glsl)
    } else if text.contains("@compute") || text.contains("fn ") {
        Some(Language::Wgsl)
    } else {
        None
    }
}

fn capabilities(gpu: &Gpu) -> Capabilities {
    let mut caps = Capabilities::all();
    if !gpu.dev.info.float64 {
        caps.remove(Capabilities::FLOAT64);
    }
    if !gpu.dev.info.int64 {
        caps.remove(Capabilities::SHADER_INT64);
    }
    caps
}

fn validate(
    gpu: &Gpu,
    module: &naga::Module,
    origin: &str,
    source: Option<&str>,
) -> Result<naga::valid::ModuleInfo> {
    Validator::new(ValidationFlags::all(), capabilities(gpu))
        .validate(module)
        .map_err(|e| {
            let text = match source {
                Some(src) => e.emit_to_string_with_path(src, origin),
                None => format!("{}", e.as_inner()),
            };
            let mut msg = format!("Vulkan: '{origin}' failed validation: {text}");
            let mut cause = std::error::Error::source(e.as_inner());
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            Error::new(Status::CompileError, msg)
        })
}

fn compile(
    gpu: &Gpu,
    bytes: &[u8],
    origin: &str,
    hint: Option<Language>,
    builtin: bool,
) -> Result<Compiled> {
    if bytes.is_empty() {
        return Err(invalid(origin, "it is empty"));
    }
    let language = match hint {
        Some(l) => l,
        None if is_spirv(bytes) => Language::Spirv,
        None => match std::str::from_utf8(bytes).ok().and_then(sniff_text) {
            Some(l) => l,
            None => {
                return Err(invalid(
                    origin,
                    "expected SPIR-V (magic 0x07230203, or a .spv file), or WGSL (.wgsl) or GLSL compute (.comp, .glsl) source",
                ))
            }
        },
    };
    let (module, source) = match language {
        Language::Spirv => {
            if !is_spirv(bytes) {
                return Err(invalid(origin, "no SPIR-V magic number 0x07230203"));
            }
            if !bytes.len().is_multiple_of(4) || bytes.len() < 20 {
                return Err(invalid(
                    origin,
                    format!(
                        "SPIR-V of {} bytes is not a whole number of words (truncated?)",
                        bytes.len()
                    ),
                ));
            }
            let mut words: Vec<u8> = bytes.to_vec();
            if u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != SPIRV_MAGIC {
                for w in words.chunks_mut(4) {
                    w.reverse();
                }
            }
            let opts = naga::front::spv::Options {
                adjust_coordinate_space: false,
                strict_capabilities: false,
                block_ctx_dump_prefix: None,
            };
            let m = naga::front::spv::parse_u8_slice(&words, &opts).map_err(|e| {
                Error::new(
                    Status::InvalidLibrary,
                    format!("library '{origin}' is not valid SPIR-V (truncated or corrupt?): {e}"),
                )
            })?;
            (m, None)
        }
        Language::Wgsl | Language::Glsl => {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                invalid(
                    origin,
                    format!(
                        "{} source is not UTF-8 text ({e})",
                        language.name().to_uppercase()
                    ),
                )
            })?;
            let m = if language == Language::Wgsl {
                naga::front::wgsl::parse_str(text).map_err(|e| {
                    Error::new(
                        Status::CompileError,
                        format!(
                            "WGSL compile error in '{origin}': {}",
                            e.emit_to_string_with_path(text, origin)
                        ),
                    )
                })?
            } else {
                let opts = naga::front::glsl::Options::from(naga::ShaderStage::Compute);
                naga::front::glsl::Frontend::default()
                    .parse(&opts, text)
                    .map_err(|e| {
                        Error::new(
                            Status::CompileError,
                            format!(
                                "GLSL compile error in '{origin}': {}",
                                e.emit_to_string_with_path(text, origin)
                            ),
                        )
                    })?
            };
            (m, Some(text))
        }
    };
    let info = validate(gpu, &module, origin, source)?;
    if !module
        .entry_points
        .iter()
        .any(|e| e.stage == naga::ShaderStage::Compute)
    {
        return Err(invalid(origin, "it has no compute entry point"));
    }
    Ok(Compiled {
        module,
        info,
        origin: origin.to_string(),
        language,
        builtin,
    })
}

impl VkLibrary {
    pub fn load(gpu: &Arc<Gpu>, source: &hal::LibrarySource) -> Result<VkLibrary> {
        let compiled = match source {
            hal::LibrarySource::Builtin => compile(
                gpu,
                BUILTIN_WGSL.as_bytes(),
                "builtin",
                Some(Language::Wgsl),
                true,
            )?,
            hal::LibrarySource::Bytes(b) => compile(gpu, b, "bytes", None, false)?,
            hal::LibrarySource::File(path) => {
                let origin = path.display().to_string();
                if !Path::new(path).exists() {
                    return Err(Error::new(
                        Status::InvalidLibrary,
                        format!("library file does not exist: '{origin}'"),
                    ));
                }
                if !Path::new(path).is_file() {
                    return Err(Error::new(
                        Status::InvalidLibrary,
                        format!("library path is not a file: '{origin}'"),
                    ));
                }
                let bytes = std::fs::read(path).map_err(|e| {
                    Error::new(
                        Status::InvalidLibrary,
                        format!("cannot read library '{origin}': {e}"),
                    )
                })?;
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(|e| e.to_ascii_lowercase());
                let hint = match ext.as_deref() {
                    Some("spv") | Some("spirv") => Some(Language::Spirv),
                    Some("wgsl") => Some(Language::Wgsl),
                    Some("comp") | Some("glsl") => Some(Language::Glsl),
                    _ => None,
                };
                compile(gpu, &bytes, &origin, hint, false)?
            }
        };
        Ok(VkLibrary {
            gpu: gpu.clone(),
            compiled: Arc::new(compiled),
        })
    }

    fn kernel_names(&self) -> Vec<String> {
        self.compiled
            .module
            .entry_points
            .iter()
            .filter(|e| e.stage == naga::ShaderStage::Compute)
            .map(|e| e.name.clone())
            .collect()
    }
}

impl hal::Library for VkLibrary {
    fn properties(&self) -> Value {
        let c = &self.compiled;
        let kind = if c.builtin {
            "builtin"
        } else {
            c.language.name()
        };
        let mut p = json!({"Type": kind, "Kernels": self.kernel_names()});
        if !c.builtin && c.origin != "bytes" {
            p["Path"] = json!(c.origin);
        }
        p
    }

    fn kernel(&self, name: &str) -> Result<Arc<dyn hal::Kernel>> {
        let c = &self.compiled;
        let index = c
            .module
            .entry_points
            .iter()
            .position(|e| e.stage == naga::ShaderStage::Compute && e.name == name)
            .ok_or_else(|| {
                let place = if c.builtin {
                    "the builtin library".to_string()
                } else {
                    format!("library '{}'", c.origin)
                };
                Error::new(
                    Status::InvalidKernel,
                    format!(
                        "kernel '{name}' not found in {place} (kernels: {})",
                        self.kernel_names().join(", ")
                    ),
                )
            })?;
        Ok(Arc::new(VkKernel::reflect(
            &self.gpu,
            self.compiled.clone(),
            index,
        )?))
    }
}

/// Where argument i goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Slot {
    /// The i-th binding of set 0 (in the kernel's sorted binding list).
    Buffer { index: usize, binding: u32 },
    /// Bytes of the push-constant block.
    Scalar { offset: u32, size: u32 },
}

/// What a pipeline is specialised for: group size, shared memory, grid.
type PipelineKey = ([u32; 3], u32, [u32; 3]);

pub struct VkKernel {
    name: String,
    gpu: Arc<Gpu>,
    compiled: Arc<Compiled>,
    pub(super) slots: Vec<Slot>,
    param_sizes: Vec<usize>,
    /// Byte size of the scalar block.
    pub(super) push_size: u32,
    /// The scalar block lives in a storage buffer (set 1 binding 0).
    pub(super) spill: bool,
    pub(super) bindings: Vec<u32>,
    pub(super) layout: Arc<ffi::PipelineLayout>,
    /// Overrides 0, 1, 2 set the group size.
    group_overrides: bool,
    /// Override 3 receives the shared memory bytes.
    shared_override: bool,
    /// Overrides 4, 5, 6 receive the grid size.
    grid_overrides: bool,
    declared: [u32; 3],
    pipelines: Mutex<HashMap<PipelineKey, Arc<ffi::Pipeline>>>,
    check: Option<common::builtin::LaunchCheck>,
}

/// The scalar members of a push-constant block, nested structs flattened
/// (SPIR-V from some compilers wraps the block in an outer struct).
fn leaves(
    module: &naga::Module,
    ty: naga::Handle<naga::Type>,
    base: u32,
    out: &mut Vec<(u32, u32)>,
) {
    match &module.types[ty].inner {
        naga::TypeInner::Struct { members, .. } => {
            for m in members {
                leaves(module, m.ty, base + m.offset, out);
            }
        }
        other => out.push((base, other.size(module.to_ctx()))),
    }
}

fn kernel_error(name: &str, what: impl std::fmt::Display) -> Error {
    Error::new(Status::InvalidKernel, format!("kernel '{name}': {what}"))
}

impl VkKernel {
    fn reflect(gpu: &Arc<Gpu>, compiled: Arc<Compiled>, index: usize) -> Result<VkKernel> {
        let module = &compiled.module;
        let ep = &module.entry_points[index];
        let name = ep.name.clone();
        let uses = compiled.info.get_entry_point(index);
        let mut bindings: Vec<u32> = Vec::new();
        let mut scalars: Vec<(u32, u32)> = Vec::new();
        let mut push_size = 0u32;
        for (h, var) in module.global_variables.iter() {
            if uses[h].is_empty() {
                continue;
            }
            match var.space {
                naga::AddressSpace::Storage { .. } => {
                    let Some(b) = &var.binding else {
                        return Err(kernel_error(&name, "a storage buffer has no binding"));
                    };
                    if b.group != 0 {
                        return Err(kernel_error(
                            &name,
                            format!(
                                "storage buffer '{}' is in group/set {}; nexus binds buffer argument i to set 0 binding i",
                                var.name.as_deref().unwrap_or("?"),
                                b.group
                            ),
                        ));
                    }
                    bindings.push(b.binding);
                }
                naga::AddressSpace::Immediate => {
                    push_size = module.types[var.ty].inner.size(module.to_ctx());
                    leaves(module, var.ty, 0, &mut scalars);
                }
                naga::AddressSpace::Uniform | naga::AddressSpace::Handle => {
                    return Err(kernel_error(
                        &name,
                        format!(
                            "'{}' is a uniform buffer or an image/sampler; nexus kernels take storage buffers and push-constant scalars",
                            var.name.as_deref().unwrap_or("?")
                        ),
                    ))
                }
                _ => {}
            }
        }
        bindings.sort_unstable();
        if bindings.windows(2).any(|w| w[0] == w[1]) {
            return Err(kernel_error(&name, "two buffers share one binding"));
        }
        let arity = bindings.len() + scalars.len();
        if arity > hal::MAX_KERNEL_ARGS {
            return Err(kernel_error(
                &name,
                format!(
                    "{arity} arguments; nexus passes at most {}",
                    hal::MAX_KERNEL_ARGS
                ),
            ));
        }
        let mut slots = Vec::with_capacity(arity);
        let mut param_sizes = Vec::with_capacity(arity);
        let mut next_scalar = scalars.iter();
        for i in 0..arity as u32 {
            if let Some(index) = bindings.iter().position(|&b| b == i) {
                slots.push(Slot::Buffer { index, binding: i });
                param_sizes.push(8);
            } else if let Some(&(offset, size)) = next_scalar.next() {
                slots.push(Slot::Scalar { offset, size });
                param_sizes.push(size as usize);
            }
        }
        if let Some(&b) = bindings.iter().find(|&&b| b as usize >= arity) {
            return Err(kernel_error(
                &name,
                format!(
                    "buffer binding {b} is not an argument position: the kernel has {arity} arguments ({} buffers at set 0 bindings 0.., {} push-constant scalars); bind buffer argument i at binding i",
                    bindings.len(),
                    scalars.len()
                ),
            ));
        }
        let limit = gpu.dev.info.limits.max_push_constants_size;
        let push_size = push_size.div_ceil(4) * 4;
        let spill = push_size > limit;
        let mut sets = vec![bindings.clone()];
        if spill {
            sets.push(vec![0]);
        }
        let layout = Arc::new(ffi::PipelineLayout::new(
            &gpu.dev,
            &sets,
            if spill { 0 } else { push_size },
        )?);
        let ids: Vec<u16> = module.overrides.iter().filter_map(|(_, o)| o.id).collect();
        let group_overrides = ids.iter().any(|&i| i < 3);
        let shared_override = ids.contains(&3);
        let grid_overrides = ids.iter().any(|&i| (4..7).contains(&i));
        let check = if compiled.builtin {
            BUILTIN_CHECKS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| *c)
        } else {
            None
        };
        Ok(VkKernel {
            declared: ep.workgroup_size,
            name,
            gpu: gpu.clone(),
            compiled,
            slots,
            param_sizes,
            push_size,
            spill,
            bindings,
            layout,
            group_overrides,
            shared_override,
            grid_overrides,
            pipelines: Mutex::new(HashMap::new()),
            check,
        })
    }

    /// The pipeline for a command's group size and shared memory.
    pub(super) fn pipeline(&self, dims: &LaunchDims, shared: u32) -> Result<Arc<ffi::Pipeline>> {
        let group = dims.group;
        let key = (
            group,
            if self.shared_override { shared } else { 0 },
            if self.grid_overrides {
                dims.grid
            } else {
                [0; 3]
            },
        );
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        if !self.group_overrides && self.declared != group {
            return Err(Error::new(
                Status::InvalidValue,
                format!(
                    "kernel '{}' has a fixed workgroup size {:?}, the command's group size is {:?}: finalize with that group size, or declare the size with pipeline-overridable constants of ids 0, 1, 2",
                    self.name, self.declared, group
                ),
            ));
        }
        let c = &self.compiled;
        let mut constants = naga::back::PipelineConstants::default();
        for (_, o) in c.module.overrides.iter() {
            match o.id {
                Some(i @ 0..=2) => {
                    constants.insert(i.to_string(), f64::from(group[i as usize]));
                }
                Some(3) => {
                    constants.insert("3".to_string(), f64::from(shared));
                }
                Some(i @ 4..=6) => {
                    constants.insert(i.to_string(), f64::from(dims.grid[i as usize - 4]));
                }
                _ => {}
            }
        }
        let fail = |what: String| {
            Error::new(
                Status::CompileError,
                format!(
                    "kernel '{}' (group size {group:?}, shared memory {shared}): {what}",
                    self.name
                ),
            )
        };
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &c.module,
            &c.info,
            Some((naga::ShaderStage::Compute, &self.name)),
            &constants,
        )
        .map_err(|e| fail(format!("cannot apply the pipeline constants: {e}")))?;
        let mut module = module.into_owned();
        let mut info = info.into_owned();
        let ep_index = module
            .entry_points
            .iter()
            .position(|e| e.name == self.name && e.stage == naga::ShaderStage::Compute)
            .ok_or_else(|| fail("entry point lost while applying constants".into()))?;
        let ep = &mut module.entry_points[ep_index];
        if self.group_overrides && ep.workgroup_size_overrides.is_none() {
            ep.workgroup_size = group;
        }
        if ep.workgroup_size != group {
            return Err(Error::new(
                Status::InvalidValue,
                format!(
                    "kernel '{}' has workgroup size {:?} after applying the group size {group:?}: its @workgroup_size must use the overrides of ids 0, 1, 2",
                    self.name, ep.workgroup_size
                ),
            ));
        }
        if self.spill {
            let uses = info.get_entry_point(ep_index);
            let handle = module
                .global_variables
                .iter()
                .find(|(h, v)| v.space == naga::AddressSpace::Immediate && !uses[*h].is_empty())
                .map(|(h, _)| h);
            if let Some(h) = handle {
                let var = &mut module.global_variables[h];
                var.space = naga::AddressSpace::Storage {
                    access: naga::StorageAccess::LOAD,
                };
                var.binding = Some(naga::ResourceBinding {
                    group: 1,
                    binding: 0,
                });
            }
            info = Validator::new(ValidationFlags::all(), capabilities(&self.gpu))
                .validate(&module)
                .map_err(|e| fail(format!("{}", e.as_inner())))?;
        }
        let policy = naga::proc::BoundsCheckPolicy::ReadZeroSkipWrite;
        let options = spv::Options {
            lang_version: (1, 3),
            flags: spv::WriterFlags::empty(),
            bounds_check_policies: naga::proc::BoundsCheckPolicies {
                index: policy,
                buffer: policy,
                ..Default::default()
            },
            ..Default::default()
        };
        let pipeline_options = spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: self.name.clone(),
        };
        let words = spv::write_vec(&module, &info, &options, Some(&pipeline_options))
            .map_err(|e| fail(format!("SPIR-V generation failed: {e}")))?;
        let shader = ffi::ShaderModule::new(&self.gpu.dev, &words)?;
        let pipeline = Arc::new(ffi::Pipeline::new(
            &self.gpu.dev,
            &self.layout,
            &shader,
            &self.name,
        )?);
        lock(&self.pipelines).insert(key, pipeline.clone());
        Ok(pipeline)
    }
}

impl hal::Kernel for VkKernel {
    fn name(&self) -> &str {
        &self.name
    }

    fn properties(&self) -> Value {
        let l = &self.gpu.dev.info.limits;
        json!({
            "Name": self.name,
            "ArgumentCount": self.slots.len(),
            "ParameterSizes": self.param_sizes,
            "Bindings": self.bindings,
            "PushConstantSize": self.push_size,
            "WorkgroupSize": self.declared,
            "GroupSizeOverridable": self.group_overrides,
            "MaxThreadsPerGroup": l.max_compute_work_group_invocations,
            "SharedMemory": 0,
            "Language": self.compiled.language.name(),
        })
    }

    fn arity(&self) -> Option<usize> {
        Some(self.slots.len())
    }

    fn param_sizes(&self) -> Option<&[usize]> {
        Some(&self.param_sizes)
    }

    fn check_launch(&self, args: &[hal::Arg], dims: &LaunchDims) -> Result<()> {
        for (i, (slot, arg)) in self.slots.iter().zip(args).enumerate() {
            if let (Slot::Buffer { binding, .. }, hal::Arg::Scalar(s)) = (slot, arg) {
                return Err(Error::new(
                    Status::InvalidArgument,
                    format!(
                        "kernel '{}' argument {i} is a {} scalar of {} bytes, but the kernel's parameter {i} is a buffer (set 0 binding {binding}, 8 bytes)",
                        self.name,
                        s.data_type().numpy_name(),
                        s.size()
                    ),
                ));
            }
        }
        self.check.map_or(Ok(()), |check| check(args, dims))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
