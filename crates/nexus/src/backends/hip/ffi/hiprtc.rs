//! hiprtc programs as an RAII handle: create from source (with in-memory
//! headers), compile with options, read the log and the code object.

use std::ffi::{c_char, CString};

use super::result::hiprtc_error;
use super::sys::{self, Hiprtc, HIPRTC_SUCCESS};
use crate::error::{Error, Result, Status};

pub struct Program<'n> {
    n: &'n Hiprtc,
    handle: sys::hiprtcProgram,
}

impl Drop for Program<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe { (self.n.hiprtcDestroyProgram)(&mut self.handle) };
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
    pub fn new(n: &'n Hiprtc, source: &[u8], name: &str, headers: &[(&str, &str)]) -> Result<Self> {
        let src = CString::new(
            source
                .iter()
                .copied()
                .filter(|&c| c != 0)
                .collect::<Vec<u8>>(),
        )
        .map_err(|_| Error::new(Status::CompileError, "HIP source contains NUL"))?;
        let name = CString::new(name)
            .map_err(|_| Error::new(Status::CompileError, "program name contains NUL"))?;
        let names = c_strings(headers.iter().map(|(n, _)| *n));
        let bodies = c_strings(headers.iter().map(|(_, b)| *b));
        let hn: Vec<*const c_char> = names.iter().map(|c| c.as_ptr()).collect();
        let hb: Vec<*const c_char> = bodies.iter().map(|c| c.as_ptr()).collect();
        let count = hb.len().min(hn.len());
        let mut handle: sys::hiprtcProgram = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings that outlive the call; header
        // arrays of equal length (null when empty).
        let code = unsafe {
            (n.hiprtcCreateProgram)(
                &mut handle,
                src.as_ptr(),
                name.as_ptr(),
                count as i32,
                if count == 0 {
                    std::ptr::null()
                } else {
                    hb.as_ptr()
                },
                if count == 0 {
                    std::ptr::null()
                } else {
                    hn.as_ptr()
                },
            )
        };
        if code != HIPRTC_SUCCESS {
            return Err(Error::new(
                Status::CompileError,
                format!("hiprtcCreateProgram: {}", hiprtc_error(n, code)),
            ));
        }
        Ok(Program { n, handle })
    }

    /// Compiles with `options`; returns the log, and the hiprtc error text
    /// if compilation failed.
    pub fn compile(&self, options: &[String]) -> (String, Option<String>) {
        let opts = c_strings(options.iter().map(String::as_str));
        let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: a live program; the options outlive the call.
        let code =
            unsafe { (self.n.hiprtcCompileProgram)(self.handle, ptrs.len() as i32, ptrs.as_ptr()) };
        let mut log_size = 0usize;
        // SAFETY: out-pointer to a local.
        unsafe { (self.n.hiprtcGetProgramLogSize)(self.handle, &mut log_size) };
        let mut log = vec![0u8; log_size.max(1)];
        // SAFETY: a buffer of the size hiprtc reported (at least one byte).
        if log_size > 0 {
            // SAFETY: as above.
            unsafe { (self.n.hiprtcGetProgramLog)(self.handle, log.as_mut_ptr() as *mut c_char) };
        }
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let log = String::from_utf8_lossy(&log[..end]).trim().to_string();
        let failure = (code != HIPRTC_SUCCESS).then(|| hiprtc_error(self.n, code));
        (log, failure)
    }

    /// hiprtc's (major, minor) version, where it answers.
    pub fn version(n: &Hiprtc) -> Option<(i32, i32)> {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: out-pointers to locals.
        let code = unsafe { (n.hiprtcVersion)(&mut major, &mut minor) };
        (code == HIPRTC_SUCCESS).then_some((major, minor))
    }

    /// The compiled code object.
    pub fn code(&self) -> Result<Vec<u8>> {
        let n = self.n;
        let mut size = 0usize;
        // SAFETY: a live, compiled program; out-pointer to a local.
        let code = unsafe { (n.hiprtcGetCodeSize)(self.handle, &mut size) };
        if code != HIPRTC_SUCCESS || size == 0 {
            return Err(Error::new(
                Status::CompileError,
                format!("hiprtcGetCodeSize: {}", hiprtc_error(n, code)),
            ));
        }
        let mut out = vec![0u8; size];
        // SAFETY: a buffer of the size hiprtc reported.
        let code = unsafe { (n.hiprtcGetCode)(self.handle, out.as_mut_ptr() as *mut c_char) };
        if code != HIPRTC_SUCCESS {
            return Err(Error::new(
                Status::CompileError,
                format!("hiprtcGetCode: {}", hiprtc_error(n, code)),
            ));
        }
        Ok(out)
    }
}
