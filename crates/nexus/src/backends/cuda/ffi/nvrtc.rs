//! NVRTC programs as an RAII handle: create from source (with in-memory
//! headers), compile with options, read the log and the image.

use std::ffi::{c_char, CString};

use super::result::nvrtc_error;
use super::sys::{self, Nvrtc, NVRTC_SUCCESS};
use crate::error::{Error, Result, Status};

/// What a compiled program yields.
pub enum ImageKind {
    /// Machine code for one architecture (`nvrtcGetCUBIN`).
    Cubin,
    /// PTX, NUL-terminated (JIT-compiled at load).
    Ptx,
}

pub struct Program<'n> {
    n: &'n Nvrtc,
    handle: sys::nvrtcProgram,
}

impl Drop for Program<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe { (self.n.nvrtcDestroyProgram)(&mut self.handle) };
    }
}

fn c_strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<CString> {
    items
        .into_iter()
        .filter_map(|s| CString::new(s).ok())
        .collect()
}

impl<'n> Program<'n> {
    /// A program from `source` (NUL bytes dropped), named `name`, with
    /// `headers` (name, body) it may include.
    pub fn new(n: &'n Nvrtc, source: &[u8], name: &str, headers: &[(&str, &str)]) -> Result<Self> {
        let src = CString::new(
            source
                .iter()
                .copied()
                .filter(|&c| c != 0)
                .collect::<Vec<u8>>(),
        )
        .map_err(|_| Error::new(Status::CompileError, "CUDA source contains NUL"))?;
        let name = CString::new(name)
            .map_err(|_| Error::new(Status::CompileError, "program name contains NUL"))?;
        let names = c_strings(headers.iter().map(|(n, _)| *n));
        let bodies = c_strings(headers.iter().map(|(_, b)| *b));
        let hn: Vec<*const c_char> = names.iter().map(|c| c.as_ptr()).collect();
        let hb: Vec<*const c_char> = bodies.iter().map(|c| c.as_ptr()).collect();
        let mut handle: sys::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings that outlive the call; header
        // arrays of equal length.
        let code = unsafe {
            (n.nvrtcCreateProgram)(
                &mut handle,
                src.as_ptr(),
                name.as_ptr(),
                hb.len().min(hn.len()) as i32,
                hb.as_ptr(),
                hn.as_ptr(),
            )
        };
        if code != NVRTC_SUCCESS {
            return Err(Error::new(
                Status::CompileError,
                format!("nvrtcCreateProgram: {}", nvrtc_error(n, code)),
            ));
        }
        Ok(Program { n, handle })
    }

    /// Compiles with `options`; returns the log, and the NVRTC error text
    /// if compilation failed.
    pub fn compile(&self, options: &[String]) -> (String, Option<String>) {
        let opts = c_strings(options.iter().map(String::as_str));
        let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: a live program; the options outlive the call.
        let code =
            unsafe { (self.n.nvrtcCompileProgram)(self.handle, ptrs.len() as i32, ptrs.as_ptr()) };
        let mut log_size = 0usize;
        // SAFETY: out-pointer to a local.
        unsafe { (self.n.nvrtcGetProgramLogSize)(self.handle, &mut log_size) };
        let mut log = vec![0u8; log_size.max(1)];
        // SAFETY: a buffer of the size NVRTC reported.
        unsafe { (self.n.nvrtcGetProgramLog)(self.handle, log.as_mut_ptr() as *mut c_char) };
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let log = String::from_utf8_lossy(&log[..end]).trim().to_string();
        let failure = (code != NVRTC_SUCCESS).then(|| nvrtc_error(self.n, code));
        (log, failure)
    }

    /// NVRTC's (major, minor) version, where it answers.
    pub fn version(n: &Nvrtc) -> Option<(i32, i32)> {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: out-pointers to locals.
        let code = unsafe { (n.nvrtcVersion)(&mut major, &mut minor) };
        (code == NVRTC_SUCCESS).then_some((major, minor))
    }

    /// Whether this NVRTC can return machine code (else PTX).
    pub fn can_emit_cubin(n: &Nvrtc) -> bool {
        n.nvrtcGetCUBIN.is_some() && n.nvrtcGetCUBINSize.is_some()
    }

    /// The compiled image.
    pub fn image(&self, kind: ImageKind) -> Result<Vec<u8>> {
        let n = self.n;
        let (get_size, get, what) = match kind {
            ImageKind::Cubin => match (n.nvrtcGetCUBINSize, n.nvrtcGetCUBIN) {
                (Some(s), Some(g)) => (s, g, "nvrtcGetCUBIN"),
                _ => {
                    return Err(Error::new(
                        Status::NotSupported,
                        "this NVRTC cannot emit machine code (nvrtcGetCUBIN missing)",
                    ))
                }
            },
            ImageKind::Ptx => (n.nvrtcGetPTXSize, n.nvrtcGetPTX, "nvrtcGetPTX"),
        };
        let mut size = 0usize;
        // SAFETY: a live, compiled program; out-pointer to a local.
        unsafe { get_size(self.handle, &mut size) };
        let mut out = vec![0u8; size];
        // SAFETY: a buffer of the size NVRTC reported.
        let code = unsafe { get(self.handle, out.as_mut_ptr() as *mut c_char) };
        if code != NVRTC_SUCCESS {
            return Err(Error::new(
                Status::CompileError,
                format!("{what}: {}", nvrtc_error(n, code)),
            ));
        }
        Ok(out)
    }
}
