//! HIP and hiprtc as nexus uses them, layered like the CUDA backend's
//! `ffi`: `sys` (raw types and function tables, opened at run time),
//! `result` (each call checked, errors named by `hipGetErrorName`),
//! `safe` (typed RAII handles) and `hiprtc` (programs as an RAII handle).
//! The backend above calls these wrappers and makes no raw call itself.

pub(crate) mod hiprtc;
pub(crate) mod result;
pub(crate) mod safe;
pub(crate) mod sys;
