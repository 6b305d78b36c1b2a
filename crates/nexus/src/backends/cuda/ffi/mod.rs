//! The CUDA driver and NVRTC as nexus uses them, layered like cudarc:
//! `sys` (raw types and function tables, opened at run time), `result`
//! (each call checked, errors named by the driver) and `nvrtc` (programs
//! as an RAII handle). The backend above
//! calls these wrappers; the few raw calls it still makes carry a `SAFETY:`
//! comment saying why they sit there.

pub(crate) mod nvrtc;
pub(crate) mod result;
pub(crate) mod safe;
pub(crate) mod sys;
