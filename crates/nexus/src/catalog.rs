//! Kernel catalogs: one artifact holding a kernel library built for several
//! devices, from which `Device::load_library` picks the best build for the
//! device before handing one concrete file to the backend.
//!
//! A catalog is a JSON manifest, either `nexus-catalog.json` in a folder
//! (the builds are files beside it) or a single `.json` file (builds are
//! files relative to it, or embedded as base64). Version 1:
//!
//! ```json
//! {
//!   "nexus-catalog": 1,
//!   "generator": "nexus.catalog 0.1.0",
//!   "libraries": {
//!     "kernels": {
//!       "builds": [
//!         {"runtime": "cuda",   "format": "cubin",    "arch": "sm_90",  "file": "kernels.sm_90.cubin"},
//!         {"runtime": "cuda",   "format": "ptx",      "arch": "sm_80",  "file": "kernels.ptx"},
//!         {"runtime": "cuda",   "format": "cuda",                       "file": "kernels.cu"},
//!         {"runtime": "cpu",    "format": "so",       "arch": "x86_64", "file": "kernels.x86_64.so"},
//!         {"runtime": "opencl", "format": "opencl-c",                   "file": "kernels.cl"},
//!         {"runtime": "vulkan", "format": "wgsl",                       "data": "QGlkKDAp..."}
//!       ]
//!     }
//!   }
//! }
//! ```
//!
//! Each build names the runtime(s) that load it (`runtime`: a name or a
//! list, compared with the device's "Runtime" property), its `format`, the
//! architecture(s) it was built for (`arch`: a name or a list, compared with
//! the device's "Architecture" property; absent means any), and where its
//! bytes are (`file` or `data`). `kind` (`binary`, `portable` or `source`)
//! is optional for the formats nexus knows (see [`kind_of`]) and required
//! for others. No backend is named here: a build is a runtime name, a
//! format and an architecture.
//!
//! Selection, best first: a build for the device's exact architecture
//! (binary before portable before source); a binary of the same family
//! (`sm_80` on `sm_86`: same major, lower or equal minor; `gfx9-generic` on
//! `gfx90a`; `amd64` on `x86_64`) or a binary for any architecture; a
//! portable form (PTX, SPIR-V; one built for `sm_80` serves `sm_80` and
//! newer); then source. Ties go to the build listed first. The library's
//! properties say which build was taken and why ("CatalogBuild",
//! "CatalogMatch", "CatalogReason"). A device no build fits raises
//! `InvalidLibrary` naming the catalog, the device's runtime and
//! architecture, and the builds present.
//!
//! A library is named by a path inside the catalog (`catalog/kernels`, or
//! `catalog.json#kernels`); a catalog of one library needs no name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::device::Device;
use crate::error::{Error, Result, Status};
use crate::hal::{self, LibrarySource};

/// The manifest's file name inside a catalog folder.
pub const MANIFEST: &str = "nexus-catalog.json";
/// The manifest version this nexus reads and writes.
pub const VERSION: u64 = 1;

const TOP_FIELDS: &[&str] = &["nexus-catalog", "libraries", "generator", "description"];
const LIBRARY_FIELDS: &[&str] = &["builds", "description"];
const BUILD_FIELDS: &[&str] = &["runtime", "format", "arch", "kind", "file", "data"];

/// How a build relates to the hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Machine code for one architecture (or a family of them).
    Binary,
    /// An intermediate form the driver compiles (PTX, SPIR-V).
    Portable,
    /// Source compiled at load time.
    Source,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "binary" => Some(Kind::Binary),
            "portable" => Some(Kind::Portable),
            "source" => Some(Kind::Source),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Binary => "binary",
            Kind::Portable => "portable",
            Kind::Source => "source",
        }
    }
}

/// The kind of the formats nexus knows.
pub fn kind_of(format: &str) -> Option<Kind> {
    match format.to_ascii_lowercase().as_str() {
        "cubin" | "fatbin" | "so" | "shared_object" | "hsaco" | "co" | "code_object"
        | "metallib" | "program_binary" => Some(Kind::Binary),
        "ptx" | "spirv" | "spv" => Some(Kind::Portable),
        "cuda" | "cu" | "opencl-c" | "cl" | "wgsl" | "glsl" | "hip" | "msl" | "metal" => {
            Some(Kind::Source)
        }
        _ => None,
    }
}

/// The file extension a format's bytes are loaded under.
fn extension_of(format: &str) -> &str {
    match format.to_ascii_lowercase().as_str() {
        "cuda" | "cu" => "cu",
        "opencl-c" | "cl" => "cl",
        "spirv" | "spv" => "spv",
        "glsl" => "comp",
        "msl" | "metal" => "metal",
        "shared_object" | "so" => "so",
        "code_object" => "co",
        _ => format,
    }
}

#[derive(Clone, Debug)]
struct Build {
    index: usize,
    runtimes: Vec<String>,
    format: String,
    archs: Vec<String>,
    kind: Kind,
    file: Option<String>,
    data: Option<Vec<u8>>,
}

impl Build {
    fn describe(&self) -> String {
        let arch = if self.archs.is_empty() {
            "any architecture".to_string()
        } else {
            self.archs.join("/")
        };
        format!(
            "{} {} for {arch} ({})",
            self.runtimes.join("/"),
            self.format,
            self.name()
        )
    }
    fn name(&self) -> String {
        match &self.file {
            Some(f) => f.clone(),
            None => format!("<embedded build {}>", self.index),
        }
    }
}

/// A parsed, validated manifest.
#[derive(Debug)]
pub struct Catalog {
    /// How messages name the catalog (its path, or "<N bytes>").
    label: String,
    /// The folder `file` entries are relative to (None for bytes).
    base: Option<PathBuf>,
    libraries: BTreeMap<String, Vec<Build>>,
}

/// The build chosen for a device.
pub struct Selected {
    /// The concrete file (or bytes) for the backend.
    pub source: LibrarySource,
    /// "Catalog", "CatalogLibrary", "CatalogBuild", "CatalogFile",
    /// "CatalogFormat", "CatalogArchitecture", "CatalogMatch", "CatalogReason".
    pub properties: Value,
    /// Appended to a backend's error about this build.
    pub context: String,
}

fn err(msg: String) -> Error {
    Error::new(Status::InvalidLibrary, msg)
}

/// The first non-blank byte is `{` and the head names the version field.
fn looks_like_manifest(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    first == Some(&b'{') && head.windows(15).any(|w| w == b"\"nexus-catalog\"")
}

fn read_head(p: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = f.read(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// The manifest file of a catalog at `p` (a folder holding [`MANIFEST`], a
/// `.json` file, or a file that starts like a manifest), if `p` is one.
fn manifest_at(p: &Path) -> Option<PathBuf> {
    if p.is_dir() {
        let m = p.join(MANIFEST);
        return m.is_file().then_some(m);
    }
    if !p.is_file() {
        return None;
    }
    let json_ext = p
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json_ext || read_head(p).is_some_and(|h| looks_like_manifest(&h)) {
        return Some(p.to_path_buf());
    }
    None
}

/// Where `source` names a catalog: its manifest file and the library asked
/// for (`catalog/name` or `catalog#name`), else `None` (not a catalog).
fn locate(path: &Path) -> Option<(PathBuf, Option<String>)> {
    if let Some(m) = manifest_at(path) {
        return Some((m, None));
    }
    if path.exists() {
        return None;
    }
    let text = path.to_str()?;
    if let Some((catalog, name)) = text.rsplit_once('#') {
        if let Some(m) = manifest_at(Path::new(catalog)) {
            return Some((m, Some(name.to_string())));
        }
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    let name = path.file_name()?.to_str()?;
    manifest_at(parent).map(|m| (m, Some(name.to_string())))
}

/// The catalog `source` names, with the library asked for; `Ok(None)` when
/// `source` is not a catalog (the backend then loads it as it is).
pub fn open(source: &LibrarySource) -> Result<Option<(Catalog, Option<String>)>> {
    match source {
        LibrarySource::Builtin => Ok(None),
        LibrarySource::Bytes(b) => {
            if !looks_like_manifest(&b[..b.len().min(4096)]) {
                return Ok(None);
            }
            let label = format!("<{} bytes>", b.len());
            Ok(Some((Catalog::parse(&label, b, None)?, None)))
        }
        LibrarySource::File(p) => {
            let Some((manifest, name)) = locate(p) else {
                return Ok(None);
            };
            let label = manifest.display().to_string();
            let bytes = std::fs::read(&manifest)
                .map_err(|e| err(format!("catalog '{label}': cannot read: {e}")))?;
            let base = manifest
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            Ok(Some((Catalog::parse(&label, &bytes, Some(base))?, name)))
        }
    }
}

/// A JSON type's name, for messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn check_fields(label: &str, at: &str, map: &Map<String, Value>, known: &[&str]) -> Result<()> {
    if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(err(format!(
            "catalog '{label}': {at}: unknown field '{k}' (fields: {})",
            known.join(", ")
        )));
    }
    Ok(())
}

/// A string, or a non-empty list of strings, at `field`.
fn names(label: &str, at: &str, field: &str, v: &Value) -> Result<Vec<String>> {
    let bad = || {
        err(format!(
            "catalog '{label}': {at}.{field}: expected a non-empty string or a list of them, got {}",
            if v.is_string() { "an empty string".to_string() } else { type_name(v).to_string() }
        ))
    };
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(bad()),
    };
    if list.iter().any(|s| s.trim().is_empty()) {
        return Err(bad());
    }
    Ok(list)
}

impl Catalog {
    /// Parses and validates a manifest; `label` names it in errors, `base`
    /// is the folder its files are relative to.
    pub fn parse(label: &str, bytes: &[u8], base: Option<PathBuf>) -> Result<Catalog> {
        let root: Value = serde_json::from_slice(bytes)
            .map_err(|e| err(format!("catalog '{label}': not valid JSON: {e}")))?;
        let Value::Object(top) = &root else {
            return Err(err(format!(
                "catalog '{label}': expected a JSON object, got {}",
                type_name(&root)
            )));
        };
        let version = top.get("nexus-catalog").ok_or_else(|| {
            err(format!(
                "catalog '{label}': not a nexus catalog: the field \"nexus-catalog\" (the format version, {VERSION}) is missing"
            ))
        })?;
        match version.as_u64() {
            Some(VERSION) => {}
            Some(v) if v > VERSION => {
                return Err(err(format!(
                    "catalog '{label}': \"nexus-catalog\": version {v} is newer than this nexus reads ({VERSION}); upgrade nexus"
                )))
            }
            _ => {
                return Err(err(format!(
                    "catalog '{label}': \"nexus-catalog\": expected the version number {VERSION}, got {version}"
                )))
            }
        }
        check_fields(label, "top level", top, TOP_FIELDS)?;
        let libs = match top.get("libraries") {
            Some(Value::Object(m)) if !m.is_empty() => m,
            Some(Value::Object(_)) => {
                return Err(err(format!(
                    "catalog '{label}': libraries: the catalog lists no library"
                )))
            }
            Some(v) => {
                return Err(err(format!(
                    "catalog '{label}': libraries: expected an object of library name -> {{\"builds\": [...]}}, got {}",
                    type_name(v)
                )))
            }
            None => {
                return Err(err(format!(
                    "catalog '{label}': the field \"libraries\" is missing"
                )))
            }
        };
        let mut libraries = BTreeMap::new();
        for (name, lib) in libs {
            let at = format!("libraries.{name}");
            if name.is_empty() || name.contains(['/', '\\', '#']) {
                return Err(err(format!(
                    "catalog '{label}': {at}: a library name must be non-empty, without '/', '\\' or '#'"
                )));
            }
            let Value::Object(lib) = lib else {
                return Err(err(format!(
                    "catalog '{label}': {at}: expected an object with \"builds\", got {}",
                    type_name(lib)
                )));
            };
            check_fields(label, &at, lib, LIBRARY_FIELDS)?;
            let builds = match lib.get("builds") {
                Some(Value::Array(b)) if !b.is_empty() => b,
                Some(Value::Array(_)) => {
                    return Err(err(format!(
                        "catalog '{label}': {at}.builds: the list is empty"
                    )))
                }
                Some(v) => {
                    return Err(err(format!(
                        "catalog '{label}': {at}.builds: expected a list, got {}",
                        type_name(v)
                    )))
                }
                None => {
                    return Err(err(format!(
                        "catalog '{label}': {at}: the field \"builds\" is missing"
                    )))
                }
            };
            let parsed = builds
                .iter()
                .enumerate()
                .map(|(i, b)| parse_build(label, &format!("{at}.builds[{i}]"), i, b))
                .collect::<Result<Vec<_>>>()?;
            libraries.insert(name.clone(), parsed);
        }
        Ok(Catalog {
            label: label.to_string(),
            base,
            libraries,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The library names, sorted.
    pub fn library_names(&self) -> Vec<&str> {
        self.libraries.keys().map(String::as_str).collect()
    }

    /// The best build of `library` (or of the only library) for a device of
    /// `runtime` whose architecture is `arch` ("" when it reports none);
    /// `device` names the device in messages.
    pub fn select(
        &self,
        library: Option<&str>,
        runtime: &str,
        arch: &str,
        device: &str,
    ) -> Result<Selected> {
        let (name, builds) = match library {
            Some(n) => match self.libraries.get_key_value(n) {
                Some(kv) => kv,
                None => {
                    return Err(err(format!(
                        "catalog '{}' has no library '{n}' (libraries: {})",
                        self.label,
                        self.library_names().join(", ")
                    )))
                }
            },
            None if self.libraries.len() == 1 => match self.libraries.iter().next() {
                Some(kv) => kv,
                None => return Err(err(format!("catalog '{}' is empty", self.label))),
            },
            None => {
                return Err(err(format!(
                    "catalog '{}' holds several libraries ({}): name one, as '<catalog>/<library>' or '<catalog>#<library>'",
                    self.label,
                    self.library_names().join(", ")
                )))
            }
        };
        let mut best: Option<(Rank, &Build)> = None;
        for b in builds {
            if !b.runtimes.iter().any(|r| r.eq_ignore_ascii_case(runtime)) {
                continue;
            }
            if let Some(rank) = rank(b, arch) {
                if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                    best = Some((rank, b));
                }
            }
        }
        let Some((rank, build)) = best else {
            let present: Vec<String> = builds.iter().map(Build::describe).collect();
            return Err(err(format!(
                "catalog '{}' library '{name}' has no build for device {device} (runtime {runtime}, architecture {}); builds present: {}",
                self.label,
                if arch.is_empty() { "unknown" } else { arch },
                present.join("; ")
            )));
        };
        let reason = rank.reason(build, arch);
        let (source, file) = self.materialize(name, build)?;
        let properties = json!({
            "Catalog": self.label,
            "CatalogLibrary": name,
            "CatalogBuild": build.name(),
            "CatalogFile": file,
            "CatalogFormat": build.format,
            "CatalogKind": build.kind.as_str(),
            "CatalogArchitecture": build.archs.join("/"),
            "CatalogMatch": rank.step.as_str(),
            "CatalogReason": reason,
        });
        let context = format!(
            "catalog '{}' library '{name}', build '{}' ({reason})",
            self.label,
            build.name()
        );
        Ok(Selected {
            source,
            properties,
            context,
        })
    }

    /// The build's bytes as something a backend loads: its file, or the
    /// embedded bytes written once to a content-named file (backends tell
    /// formats apart by extension), else handed over as bytes.
    fn materialize(&self, library: &str, b: &Build) -> Result<(LibrarySource, String)> {
        if let Some(data) = &b.data {
            let ext = extension_of(&b.format);
            let file_name = match &b.file {
                Some(f) => Path::new(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("{library}.{ext}")),
                None => format!("{library}.{ext}"),
            };
            let digest = crate::cache::hex(&crate::cache::sha256(data));
            let root = crate::cache::root_dir()
                .unwrap_or_else(|| std::env::temp_dir().join("nexus"))
                .join("catalog")
                .join(&digest[..32]);
            let path = root.join(&file_name);
            let ready = std::fs::metadata(&path).is_ok_and(|m| m.len() == data.len() as u64);
            if ready || write_file(&root, &path, data).is_ok() {
                let shown = path.display().to_string();
                return Ok((LibrarySource::File(path), shown));
            }
            return Ok((LibrarySource::Bytes(data.clone()), b.name()));
        }
        let rel = b.file.as_deref().unwrap_or_default();
        let path = match &self.base {
            Some(base) => base.join(rel),
            None if Path::new(rel).is_absolute() => PathBuf::from(rel),
            None => {
                return Err(err(format!(
                    "catalog '{}' library '{library}': build '{rel}' is a relative file, but a catalog given as bytes has no folder; embed it (\"data\") or give the catalog's path",
                    self.label
                )))
            }
        };
        if !path.is_file() {
            return Err(err(format!(
                "catalog '{}' library '{library}': the file of build '{rel}' does not exist: '{}'",
                self.label,
                path.display()
            )));
        }
        let shown = path.display().to_string();
        Ok((LibrarySource::File(path), shown))
    }
}

/// The backend library for `source` on `device` (called by
/// `Device::load_library`): a catalog is resolved to
/// the best build for the device (from its "Runtime" and "Architecture"),
/// which the backend loads; its properties then say which build and why.
/// Anything else goes to the backend as it is.
pub(crate) fn load(device: &Device, source: &LibrarySource) -> Result<Arc<dyn hal::Library>> {
    let Some((catalog, name)) = open(source)? else {
        return device.hal().load_library(source);
    };
    let live = device.properties();
    let root = live.root();
    let runtime = root
        .get("Runtime")
        .and_then(Value::as_str)
        .unwrap_or(device.runtime_name());
    let arch = root
        .get("Architecture")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let chosen = catalog.select(name.as_deref(), runtime, arch, &device.label())?;
    let inner = device.hal().load_library(&chosen.source).map_err(|mut e| {
        e.message = format!("{} (from {})", e.message, chosen.context);
        e
    })?;
    Ok(Arc::new(CatalogLibrary {
        inner,
        properties: chosen.properties,
    }))
}

/// A backend library loaded from a catalog build: the backend's properties
/// plus the catalog's.
struct CatalogLibrary {
    inner: Arc<dyn hal::Library>,
    properties: Value,
}

impl hal::Library for CatalogLibrary {
    fn properties(&self) -> Value {
        let mut p = self.inner.properties();
        if let (Value::Object(map), Value::Object(extra)) = (&mut p, &self.properties) {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        p
    }
    fn kernel(&self, name: &str) -> Result<Arc<dyn hal::Kernel>> {
        self.inner.kernel(name)
    }
}

fn write_file(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp-{}-{seq}", std::process::id()));
    let written = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn parse_build(label: &str, at: &str, index: usize, v: &Value) -> Result<Build> {
    let Value::Object(m) = v else {
        return Err(err(format!(
            "catalog '{label}': {at}: expected an object, got {}",
            type_name(v)
        )));
    };
    check_fields(label, at, m, BUILD_FIELDS)?;
    let required = |field: &str| {
        m.get(field).ok_or_else(|| {
            err(format!(
                "catalog '{label}': {at}: the field \"{field}\" is missing"
            ))
        })
    };
    let runtimes = names(label, at, "runtime", required("runtime")?)?;
    let format = match required("format")? {
        Value::String(s) if !s.trim().is_empty() => s.clone(),
        other => {
            return Err(err(format!(
                "catalog '{label}': {at}.format: expected a non-empty string such as \"ptx\", \"so\", \"spirv\", got {}",
                type_name(other)
            )))
        }
    };
    let archs = match m.get("arch") {
        None | Some(Value::Null) => Vec::new(),
        Some(a) => names(label, at, "arch", a)?,
    };
    let kind = match m.get("kind") {
        Some(Value::String(k)) => Kind::parse(k).ok_or_else(|| {
            err(format!(
                "catalog '{label}': {at}.kind: expected \"binary\", \"portable\" or \"source\", got \"{k}\""
            ))
        })?,
        Some(other) => {
            return Err(err(format!(
                "catalog '{label}': {at}.kind: expected \"binary\", \"portable\" or \"source\", got {}",
                type_name(other)
            )))
        }
        None => kind_of(&format).ok_or_else(|| {
            err(format!(
                "catalog '{label}': {at}.kind: format \"{format}\" is not one nexus knows; say its \"kind\" (\"binary\", \"portable\" or \"source\")"
            ))
        })?,
    };
    let file = match m.get("file") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            return Err(err(format!(
                "catalog '{label}': {at}.file: expected a non-empty path string, got {}",
                type_name(other)
            )))
        }
    };
    let data = match m.get("data") {
        None => None,
        Some(Value::String(s)) => Some(
            base64_decode(s)
                .ok_or_else(|| err(format!("catalog '{label}': {at}.data: not valid base64")))?,
        ),
        Some(other) => {
            return Err(err(format!(
                "catalog '{label}': {at}.data: expected a base64 string, got {}",
                type_name(other)
            )))
        }
    };
    if file.is_none() && data.is_none() {
        return Err(err(format!(
            "catalog '{label}': {at}: a build needs \"file\" (a path relative to the catalog) or \"data\" (base64)"
        )));
    }
    if data.as_ref().is_some_and(Vec::is_empty) {
        return Err(err(format!("catalog '{label}': {at}.data: empty")));
    }
    Ok(Build {
        index,
        runtimes,
        format,
        archs,
        kind,
        file,
        data,
    })
}

// ------------------------------------------------------------ selection

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Exact,
    Family,
    Portable,
    Source,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Exact => "exact",
            Step::Family => "family",
            Step::Portable => "portable",
            Step::Source => "source",
        }
    }
}

/// Lower is better: the step, then the kind, then how far the build's
/// architecture is from the device's, then the manifest order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    step: Step,
    kind: Kind,
    distance: u32,
    index: usize,
    /// Which of the build's architectures matched.
    arch: usize,
}

impl Rank {
    fn reason(&self, b: &Build, device_arch: &str) -> String {
        let built_for = b
            .archs
            .get(self.arch)
            .map(String::as_str)
            .unwrap_or("any architecture");
        let dev = if device_arch.is_empty() {
            "this device"
        } else {
            device_arch
        };
        match self.step {
            Step::Exact => format!(
                "exact architecture: {} {} built for {dev}",
                b.kind.as_str(),
                b.format
            ),
            Step::Family if b.archs.is_empty() => {
                format!("binary {} for any architecture of the runtime", b.format)
            }
            Step::Family => format!(
                "same family: {} built for {built_for} runs on {dev}",
                b.format
            ),
            Step::Portable => format!(
                "portable form: {} for {built_for}, compiled for {dev} by the driver",
                b.format
            ),
            Step::Source => format!("source: {} compiled for {dev} at load", b.format),
        }
    }
}

fn rank(b: &Build, device_arch: &str) -> Option<Rank> {
    let mk = |step, distance, arch| Rank {
        step,
        kind: b.kind,
        distance,
        index: b.index,
        arch,
    };
    if !device_arch.is_empty() {
        if let Some(i) = b
            .archs
            .iter()
            .position(|a| a.eq_ignore_ascii_case(device_arch))
        {
            return Some(mk(Step::Exact, 0, i));
        }
    }
    if b.archs.is_empty() {
        return Some(match b.kind {
            Kind::Binary => mk(Step::Family, u32::MAX, 0),
            Kind::Portable => mk(Step::Portable, u32::MAX, 0),
            Kind::Source => mk(Step::Source, 0, 0),
        });
    }
    let closest = |f: fn(&str, &str) -> Option<u32>| {
        b.archs
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                f(&a.to_ascii_lowercase(), &device_arch.to_ascii_lowercase()).map(|d| (d, i))
            })
            .min()
    };
    match b.kind {
        Kind::Binary => closest(family_distance).map(|(d, i)| mk(Step::Family, d, i)),
        Kind::Portable => closest(portable_distance).map(|(d, i)| mk(Step::Portable, d, i)),
        Kind::Source => closest(family_distance).map(|(d, i)| mk(Step::Source, d, i)),
    }
}

/// `sm_86` -> (86); `compute_80` -> (80); anything with a suffix (`sm_90a`) -> None.
fn sm_number(a: &str) -> Option<u32> {
    let digits = a
        .strip_prefix("sm_")
        .or_else(|| a.strip_prefix("compute_"))?;
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `gfx90a` -> (9, '0'); `gfx1100` -> (11, '1').
fn gfx_parts(a: &str) -> Option<(u32, char)> {
    let rest = a.strip_prefix("gfx")?;
    let split = match rest.len() {
        3 => 1,
        4 => 2,
        _ => return None,
    };
    let major = rest.get(..split)?.parse().ok()?;
    let minor = rest[split..].chars().next()?;
    Some((major, minor))
}

/// CPU architecture names of one family.
fn cpu_family(a: &str) -> Option<&'static str> {
    match a {
        "x86_64" | "amd64" | "x86-64" | "x64" | "x86_64_v1" | "x86_64_v2" | "x86_64_v3"
        | "x86_64_v4" => Some("x86_64"),
        "aarch64" | "arm64" | "armv8" => Some("aarch64"),
        "x86" | "i386" | "i486" | "i586" | "i686" => Some("x86"),
        "riscv64" | "riscv64gc" => Some("riscv64"),
        "ppc64le" | "powerpc64le" => Some("ppc64le"),
        _ => None,
    }
}

/// Whether a binary built for `build` runs on `device` of the same family,
/// and how far apart they are (smaller is closer).
fn family_distance(build: &str, device: &str) -> Option<u32> {
    if let (Some(b), Some(d)) = (sm_number(build), sm_number(device)) {
        // Same major, build minor <= device minor (sm_80 runs on sm_86).
        let (bm, dm) = (b / 10, d / 10);
        return (build.starts_with("sm_") && bm == dm && b <= d).then(|| d - b);
    }
    if let Some(generic) = build.strip_suffix("-generic") {
        // ROCm generic targets: gfx9-generic, gfx9-4-generic, gfx11-generic.
        let (d_major, d_minor) = gfx_parts(device)?;
        let mut parts = generic.strip_prefix("gfx")?.split('-');
        let major: u32 = parts.next()?.parse().ok()?;
        let minor = parts.next();
        let ok = major == d_major && minor.is_none_or(|m| m.starts_with(d_minor));
        return ok.then_some(if minor.is_some() { 1 } else { 2 });
    }
    match (cpu_family(build), cpu_family(device)) {
        (Some(b), Some(d)) if b == d => Some(1),
        _ => None,
    }
}

/// Whether a portable build for `build` serves `device` (PTX for sm_80
/// serves sm_80 and newer); builds for architectures nexus cannot compare
/// are taken as portable.
fn portable_distance(build: &str, device: &str) -> Option<u32> {
    match (sm_number(build), sm_number(device)) {
        (Some(b), Some(d)) => (b <= d).then(|| d - b),
        (Some(_), None) => None,
        _ => family_distance(build, device).or(Some(u32::MAX - 1)),
    }
}

/// Standard base64 (RFC 4648, `=` padding optional, whitespace ignored).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let body = clean
        .strip_suffix(b"==")
        .or_else(|| clean.strip_suffix(b"="))
        .unwrap_or(&clean);
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | value(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(builds: Value) -> Catalog {
        let m = json!({"nexus-catalog": 1, "libraries": {"k": {"builds": builds}}});
        Catalog::parse(
            "t.json",
            m.to_string().as_bytes(),
            Some(PathBuf::from("/nonexistent")),
        )
        .unwrap()
    }

    fn pick(c: &Catalog, runtime: &str, arch: &str) -> std::result::Result<(String, Step), String> {
        let builds = &c.libraries["k"];
        let mut best: Option<(Rank, &Build)> = None;
        for b in builds
            .iter()
            .filter(|b| b.runtimes.iter().any(|r| r == runtime))
        {
            if let Some(r) = rank(b, arch) {
                if best.as_ref().is_none_or(|(x, _)| r < *x) {
                    best = Some((r, b));
                }
            }
        }
        best.map(|(r, b)| (b.name(), r.step))
            .ok_or_else(|| "none".into())
    }

    #[test]
    fn selection_order_exact_family_portable_source() {
        let c = catalog(json!([
            {"runtime": "cuda", "format": "cuda", "file": "k.cu"},
            {"runtime": "cuda", "format": "ptx", "arch": "sm_80", "file": "k.ptx"},
            {"runtime": "cuda", "format": "cubin", "arch": "sm_80", "file": "k.sm_80.cubin"},
            {"runtime": "cuda", "format": "cubin", "arch": ["sm_90", "sm_100"], "file": "k.sm_90.cubin"},
            {"runtime": "cpu", "format": "so", "arch": "x86_64", "file": "k.x86_64.so"},
            {"runtime": "cpu", "format": "so", "arch": "aarch64", "file": "k.aarch64.so"},
            {"runtime": ["opencl", "vulkan"], "format": "spirv", "file": "k.spv"},
        ]));
        let ok = |n: &str, s| Ok((n.to_string(), s));
        assert_eq!(pick(&c, "cuda", "sm_90"), ok("k.sm_90.cubin", Step::Exact));
        assert_eq!(pick(&c, "cuda", "sm_100"), ok("k.sm_90.cubin", Step::Exact));
        assert_eq!(pick(&c, "cuda", "sm_80"), ok("k.sm_80.cubin", Step::Exact));
        assert_eq!(pick(&c, "cuda", "sm_86"), ok("k.sm_80.cubin", Step::Family));
        // sm_89 binaries do not run on sm_120; PTX for sm_80 does.
        assert_eq!(pick(&c, "cuda", "sm_120"), ok("k.ptx", Step::Portable));
        // Nothing binary or portable fits sm_75: the source is compiled.
        assert_eq!(pick(&c, "cuda", "sm_75"), ok("k.cu", Step::Source));
        assert_eq!(pick(&c, "cpu", "x86_64"), ok("k.x86_64.so", Step::Exact));
        assert_eq!(pick(&c, "cpu", "arm64"), ok("k.aarch64.so", Step::Family));
        assert!(pick(&c, "cpu", "riscv64").is_err());
        assert_eq!(pick(&c, "vulkan", "lavapipe"), ok("k.spv", Step::Portable));
        assert_eq!(pick(&c, "opencl", ""), ok("k.spv", Step::Portable));
        assert!(pick(&c, "metal", "m3").is_err());
    }

    #[test]
    fn family_rules() {
        assert_eq!(family_distance("sm_80", "sm_86"), Some(6));
        assert_eq!(family_distance("sm_86", "sm_80"), None);
        assert_eq!(family_distance("sm_90", "sm_100"), None);
        assert_eq!(family_distance("sm_90a", "sm_90"), None);
        assert_eq!(family_distance("gfx9-generic", "gfx90a"), Some(2));
        assert_eq!(family_distance("gfx9-4-generic", "gfx942"), Some(1));
        assert_eq!(family_distance("gfx9-4-generic", "gfx90a"), None);
        assert_eq!(family_distance("gfx11-generic", "gfx1100"), Some(2));
        assert_eq!(family_distance("amd64", "x86_64"), Some(1));
        assert_eq!(family_distance("x86_64", "aarch64"), None);
        assert_eq!(portable_distance("compute_80", "sm_90"), Some(10));
        assert_eq!(portable_distance("sm_90", "sm_80"), None);
    }

    #[test]
    fn manifests_are_validated_with_the_field_named() {
        let bad = |m: Value| {
            Catalog::parse("c.json", m.to_string().as_bytes(), None)
                .unwrap_err()
                .message
        };
        let b = |build: Value| json!({"nexus-catalog": 1, "libraries": {"k": {"builds": [build]}}});
        let e = bad(json!({"libraries": {}}));
        assert!(
            e.contains("c.json") && e.contains("\"nexus-catalog\""),
            "{e}"
        );
        let e = bad(json!({"nexus-catalog": 2, "libraries": {}}));
        assert!(e.contains("version 2 is newer"), "{e}");
        let e = bad(json!({"nexus-catalog": "1", "libraries": {}}));
        assert!(e.contains("expected the version number 1"), "{e}");
        let e = bad(json!({"nexus-catalog": 1, "libraries": []}));
        assert!(e.contains("libraries: expected an object"), "{e}");
        let e = bad(json!({"nexus-catalog": 1, "libraries": {}, "extra": 1}));
        assert!(e.contains("unknown field 'extra'"), "{e}");
        let e = bad(b(json!({"format": "ptx", "file": "k.ptx"})));
        assert!(
            e.contains("libraries.k.builds[0]: the field \"runtime\" is missing"),
            "{e}"
        );
        let e = bad(b(json!({"runtime": 3, "format": "ptx", "file": "k.ptx"})));
        assert!(
            e.contains("builds[0].runtime: expected a non-empty string"),
            "{e}"
        );
        let e = bad(b(json!({"runtime": "cuda", "format": "ptx"})));
        assert!(e.contains("\"file\"") && e.contains("\"data\""), "{e}");
        let e = bad(b(json!({"runtime": "cuda", "format": "xyz", "file": "k"})));
        assert!(e.contains("builds[0].kind") && e.contains("xyz"), "{e}");
        let e = bad(b(
            json!({"runtime": "cuda", "format": "ptx", "file": "k", "kind": "fast"}),
        ));
        assert!(e.contains("builds[0].kind") && e.contains("fast"), "{e}");
        let e = bad(b(
            json!({"runtime": "cuda", "format": "ptx", "data": "!!!"}),
        ));
        assert!(e.contains("builds[0].data: not valid base64"), "{e}");
        let e = bad(b(json!({"runtime": "cuda", "fromat": "ptx", "file": "k"})));
        assert!(e.contains("unknown field 'fromat'"), "{e}");
        let e = Catalog::parse("c.json", b"{\"nexus-catalog\": 1,", None).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        assert_eq!(e.status, Status::InvalidLibrary);
    }

    #[test]
    fn no_build_for_the_device_names_everything() {
        let c = catalog(json!([
            {"runtime": "cpu", "format": "so", "arch": "aarch64", "file": "k.aarch64.so"},
        ]));
        let e = c.select(None, "cpu", "x86_64", "cpu:0 'x'").err().unwrap();
        assert!(e.message.contains("t.json"), "{}", e.message);
        assert!(e.message.contains("architecture x86_64"), "{}", e.message);
        assert!(
            e.message.contains("cpu so for aarch64 (k.aarch64.so)"),
            "{}",
            e.message
        );
        let e = c.select(Some("nope"), "cpu", "x86_64", "d").err().unwrap();
        assert!(
            e.message.contains("no library 'nope' (libraries: k)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn catalogs_are_found_by_folder_file_and_library_path() {
        let dir = std::env::temp_dir().join(format!("nexus-catalog-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k.cl"), b"__kernel void k() {}").unwrap();
        let manifest = json!({"nexus-catalog": 1, "libraries": {
            "k": {"builds": [{"runtime": "opencl", "format": "opencl-c", "file": "k.cl"}]},
            "e": {"builds": [{"runtime": "opencl", "format": "opencl-c", "data": "X19rZXJuZWwgdm9pZCBlKCkge30="}]},
        }});
        std::fs::write(dir.join(MANIFEST), manifest.to_string()).unwrap();
        let name = |p: PathBuf| {
            let (c, n) = open(&LibrarySource::File(p)).unwrap().unwrap();
            (c.library_names().join(","), n)
        };
        assert_eq!(name(dir.clone()), ("e,k".into(), None));
        assert_eq!(name(dir.join("k")), ("e,k".into(), Some("k".into())));
        assert_eq!(name(dir.join(MANIFEST)), ("e,k".into(), None));
        let hash = PathBuf::from(format!("{}#e", dir.join(MANIFEST).display()));
        assert_eq!(name(hash), ("e,k".into(), Some("e".into())));
        // Files that are not catalogs go to the backend untouched.
        assert!(open(&LibrarySource::File(dir.join("k.cl")))
            .unwrap()
            .is_none());
        assert!(open(&LibrarySource::File(dir.join("k.cl").join("x")))
            .unwrap()
            .is_none());
        let (c, _) = open(&LibrarySource::File(dir.clone())).unwrap().unwrap();
        let sel = c.select(Some("k"), "opencl", "x86_64", "d").ok().unwrap();
        assert_eq!(sel.properties["CatalogMatch"], "source");
        assert!(matches!(sel.source, LibrarySource::File(ref p) if p == &dir.join("k.cl")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs\nbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a*==").is_none());
    }

    #[test]
    fn manifests_are_recognised() {
        assert!(looks_like_manifest(b"  {\n \"nexus-catalog\": 1}"));
        assert!(!looks_like_manifest(b"__kernel void k() {}"));
        assert!(!looks_like_manifest(b"\x7fELF{\"nexus-catalog\""));
        assert!(open(&LibrarySource::Bytes(b"\x7fELF".to_vec()))
            .unwrap()
            .is_none());
    }
}
