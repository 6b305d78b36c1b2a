//! CPU kernel libraries: shared objects opened with the system loader, and
//! the built-in kernels compiled into nexus itself.

use std::any::Any;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::launch::{KernelFn, LaunchContext};
use crate::backends::common;
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::LaunchDims;

enum Origin {
    SharedObject {
        _lib: Arc<libloading::Library>,
        path: PathBuf,
    },
    Builtin,
}

pub struct CpuLibrary {
    origin: Arc<Origin>,
}

pub struct CpuKernel {
    name: String,
    pub(super) func: KernelFn,
    /// Arguments the kernel reads, where known (builtins); checked at encode.
    pub(super) arity: Option<usize>,
    /// A builtin's bounds check.
    check: Option<common::builtin::LaunchCheck>,
    // Keeps the shared object mapped while the kernel exists.
    _origin: Arc<Origin>,
}

impl CpuLibrary {
    pub fn open(source: &hal::LibrarySource) -> Result<Self> {
        match source {
            hal::LibrarySource::File(path) => Self::open_file(path),
            hal::LibrarySource::Bytes(bytes) => Self::open_bytes(bytes),
            hal::LibrarySource::Builtin => Ok(CpuLibrary {
                origin: Arc::new(Origin::Builtin),
            }),
        }
    }

    fn open_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::new(
                Status::InvalidLibrary,
                format!("library file does not exist: '{}'", path.display()),
            ));
        }
        if !path.is_file() {
            return Err(Error::new(
                Status::InvalidLibrary,
                format!("library path is not a file: '{}'", path.display()),
            ));
        }
        // An absolute path keeps the loader from searching LD_LIBRARY_PATH.
        let path = path.canonicalize().map_err(|e| {
            Error::new(
                Status::InvalidLibrary,
                format!("cannot resolve library path '{}': {e}", path.display()),
            )
        })?;
        check_elf_bounds(&path)?;
        // SAFETY: loading runs the library's initialisers; loading a kernel
        // library is exactly what the user asked for.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| {
            Error::new(
                Status::InvalidLibrary,
                format!(
                    "'{}' is not a loadable CPU kernel library (shared object): {e}",
                    path.display()
                ),
            )
        })?;
        Ok(CpuLibrary {
            origin: Arc::new(Origin::SharedObject {
                _lib: Arc::new(lib),
                path,
            }),
        })
    }

    fn open_bytes(bytes: &[u8]) -> Result<Self> {
        // The system loader only opens files: stage the image in a new
        // directory only this user can enter (created, never reused, so a
        // planted file or symlink is never followed), then remove both.
        let dir = private_dir()?;
        let tmp = dir.join("library.so");
        let staged = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, bytes));
        let lib = match staged {
            Ok(()) => Self::open_file(&tmp),
            Err(e) => Err(Error::new(
                Status::InvalidLibrary,
                format!("cannot stage library bytes in '{}': {e}", tmp.display()),
            )),
        };
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir(&dir);
        lib
    }
}

/// A new directory under the temp dir, mode 0700 on Unix.
fn private_dir() -> Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("nexus-{}-{n}-{nanos:08x}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    Err(Error::new(
        Status::InvalidLibrary,
        format!(
            "cannot create a private directory under '{}' to stage library bytes: {}",
            base.display(),
            last.map(|e| e.to_string()).unwrap_or_default()
        ),
    ))
}

/// Refuses an ELF file whose program headers or loadable segments reach
/// past its end: the loader would map those pages and the first touch
/// would kill the process with SIGBUS. Other formats are left to the loader.
fn check_elf_bounds(path: &Path) -> Result<()> {
    let bad = |why: String| {
        Error::new(
            Status::InvalidLibrary,
            format!(
                "'{}' is not a loadable CPU kernel library (shared object): {why}",
                path.display()
            ),
        )
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let len = bytes.len() as u64;
    let wide = match bytes.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(bad("unknown ELF class".into())),
    };
    let big_endian = bytes.get(5) == Some(&2);
    let read = |at: u64, size: usize| -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        let raw = bytes.get(at..at.checked_add(size)?)?;
        let mut v = 0u64;
        for i in 0..size {
            let b = if big_endian {
                raw[i]
            } else {
                raw[size - 1 - i]
            };
            v = (v << 8) | b as u64;
        }
        Some(v)
    };
    // (phoff, phentsize, phnum) locations and the p_offset/p_filesz fields, per class.
    let (phoff, phentsize, phnum, off_at, off_size, filesz_at) = if wide {
        (read(0x20, 8), read(0x36, 2), read(0x38, 2), 8, 8, 0x20)
    } else {
        (read(0x1c, 4), read(0x2a, 2), read(0x2c, 2), 4, 4, 0x10)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return Err(bad("truncated ELF header".into()));
    };
    if phoff.saturating_add(phentsize.saturating_mul(phnum)) > len {
        return Err(bad(
            "program headers extend past the end of the file (truncated?)".into(),
        ));
    }
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (Some(p_type), Some(offset), Some(filesz)) = (
            read(ph, 4),
            read(ph + off_at, off_size),
            read(ph + filesz_at, off_size),
        ) else {
            return Err(bad("truncated program header".into()));
        };
        const PT_LOAD: u64 = 1;
        if p_type == PT_LOAD && offset.saturating_add(filesz) > len {
            return Err(bad(format!(
                "segment {i} extends past the end of the file (truncated?)"
            )));
        }
    }
    Ok(())
}

impl hal::Library for CpuLibrary {
    fn properties(&self) -> Value {
        match &*self.origin {
            Origin::SharedObject { path, .. } => {
                json!({"Type": "shared_object", "Path": path.display().to_string()})
            }
            Origin::Builtin => {
                json!({"Type": "builtin", "Kernels": BUILTINS.iter().map(|(n, _, _, _)| *n).collect::<Vec<_>>()})
            }
        }
    }

    fn kernel(&self, name: &str) -> Result<Arc<dyn hal::Kernel>> {
        let (func, arity, check) = match &*self.origin {
            Origin::SharedObject { _lib, path } => {
                // SAFETY: the symbol is used as a function of the kernel ABI;
                // a library exporting that name promises this signature.
                let sym = unsafe { _lib.get::<KernelFn>(name.as_bytes()) }.map_err(|_| {
                    Error::new(
                        Status::InvalidKernel,
                        format!("kernel '{name}' not found in library '{}'", path.display()),
                    )
                })?;
                // Kernels may declare their argument count (NXS_KERNEL_ARGS).
                let count_symbol = format!("{name}__nxs_num_args");
                // SAFETY: the symbol, when present, is a `const uint32_t`
                // defined by NXS_KERNEL_ARGS in the same library.
                let arity = unsafe { _lib.get::<*const u32>(count_symbol.as_bytes()) }
                    .ok()
                    .map(|count| unsafe { **count } as usize);
                (*sym, arity, None)
            }
            Origin::Builtin => BUILTINS
                .iter()
                .find(|(n, _, _, _)| *n == name)
                .map(|(_, f, a, c)| (*f, Some(*a), *c))
                .ok_or_else(|| {
                    let names: Vec<&str> = BUILTINS.iter().map(|(n, _, _, _)| *n).collect();
                    Error::new(
                        Status::InvalidKernel,
                        format!(
                            "kernel '{name}' not found in the builtin library (kernels: {})",
                            names.join(", ")
                        ),
                    )
                })?,
        };
        Ok(Arc::new(CpuKernel {
            name: name.to_string(),
            func,
            arity,
            check,
            _origin: self.origin.clone(),
        }))
    }
}

impl hal::Kernel for CpuKernel {
    fn name(&self) -> &str {
        &self.name
    }
    fn properties(&self) -> Value {
        json!({"Name": self.name, "MaxThreadsPerGroup": 1 << 20, "SharedMemory": 0})
    }
    fn arity(&self) -> Option<usize> {
        self.arity
    }
    fn check_launch(&self, args: &[hal::Arg], dims: &LaunchDims) -> Result<()> {
        self.check.map_or(Ok(()), |check| check(args, dims))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Kernels compiled into nexus, written to the same ABI as users' kernels:
/// (name, entry point, argument count, bounds check).
const BUILTINS: &[(&str, KernelFn, usize, Option<common::builtin::LaunchCheck>)] = &[
    (
        "add_vectors",
        add_vectors,
        3,
        Some(common::builtin::check_add_vectors),
    ),
    ("empty", empty, 0, None),
];

/// `c[i] = a[i] + b[i]` over float32 buffers, i < grid_size[0].
unsafe extern "C" fn add_vectors(args: *mut *mut c_void, launch: *const LaunchContext) {
    // SAFETY: the launcher passes three buffer arguments (the arity) and a
    // live launch context; `check_add_vectors` made every buffer hold
    // grid_size[0] floats before the launch.
    unsafe {
        let l = &*launch;
        let a = *(*args.add(0) as *const *const f32);
        let b = *(*args.add(1) as *const *const f32);
        let c = *(*args.add(2) as *const *mut f32);
        let start = l.group_id[0] as usize * l.group_size[0] as usize;
        let end = (start + l.group_size[0] as usize).min(l.grid_size[0] as usize);
        for i in start..end {
            *c.add(i) = *a.add(i) + *b.add(i);
        }
    }
}

unsafe extern "C" fn empty(_args: *mut *mut c_void, _launch: *const LaunchContext) {}
