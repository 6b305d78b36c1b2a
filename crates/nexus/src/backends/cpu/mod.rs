//! The CPU runtime: always present, the embedded default.
//!
//! Kernels are C functions in shared objects (ABI in `launch.rs`), one call
//! per work-group, groups spread over a lazily started thread pool.

mod device;
mod launch;
mod library;
mod memory;
mod schedule;
mod sync;
mod sysinfo;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::Result;
use crate::hal;

pub use launch::LaunchContext;

/// Largest scratch (group-shared) memory a CPU kernel may ask for.
pub const MAX_SCRATCH_BYTES: usize = 16 << 20;

pub struct CpuApi;

impl hal::Api for CpuApi {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn properties(&self) -> Value {
        json!({"Name": "cpu", "Version": env!("CARGO_PKG_VERSION"), "Threads": launch::thread_count()})
    }

    fn devices(&self) -> Result<Vec<Arc<dyn hal::Device>>> {
        Ok(vec![Arc::new(device::CpuDevice::new())])
    }
}
