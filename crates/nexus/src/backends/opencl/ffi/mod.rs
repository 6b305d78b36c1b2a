//! The OpenCL C API as nexus uses it, layered like the CUDA backend's:
//! `sys` (raw types, constants and the function table, opened at run time
//! through the ICD loader) and `result` (every call checked, errors named
//! by their CL_* code, and typed RAII handles that retain and release the
//! driver's objects). Nothing above this folder calls OpenCL directly.

pub(crate) mod result;
pub(crate) mod sys;
