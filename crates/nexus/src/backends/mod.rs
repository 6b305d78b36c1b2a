//! Backends, one module each. Only `registry` names them.

pub mod common;
pub mod cpu;
// CUDA and HIP are compiled everywhere but registered only on Linux and
// Windows (their drivers exist nowhere else): elsewhere they are unused.
#[cfg(feature = "cuda")]
#[cfg_attr(not(any(target_os = "linux", target_os = "windows")), allow(dead_code))]
mod cuda;
#[cfg(feature = "hip")]
#[cfg_attr(not(any(target_os = "linux", target_os = "windows")), allow(dead_code))]
mod hip;
#[cfg(feature = "metal")]
mod metal;
#[cfg(feature = "opencl")]
mod opencl;
#[cfg(feature = "vulkan")]
mod vulkan;

use crate::hal;

/// Every runtime nexus knows, in listing order (GPU runtimes first, then the
/// CPU; `get_runtimes` moves runtimes whose devices are all CPUs after it). `None` marks a runtime this build has no backend for yet: it is
/// still found by name, with zero devices.
pub fn registry() -> Vec<(&'static str, Option<Box<dyn hal::Api>>)> {
    #[cfg(all(feature = "cuda", any(target_os = "linux", target_os = "windows")))]
    let cuda: Option<Box<dyn hal::Api>> = Some(Box::new(cuda::CudaApi::new()));
    #[cfg(not(all(feature = "cuda", any(target_os = "linux", target_os = "windows"))))]
    let cuda: Option<Box<dyn hal::Api>> = None;
    #[cfg(all(feature = "hip", any(target_os = "linux", target_os = "windows")))]
    let hip: Option<Box<dyn hal::Api>> = Some(Box::new(hip::HipApi::new()));
    #[cfg(not(all(feature = "hip", any(target_os = "linux", target_os = "windows"))))]
    let hip: Option<Box<dyn hal::Api>> = None;
    #[cfg(all(feature = "metal", target_vendor = "apple"))]
    let metal: Option<Box<dyn hal::Api>> = Some(Box::new(metal::MetalApi::new()));
    #[cfg(not(all(feature = "metal", target_vendor = "apple")))]
    let metal: Option<Box<dyn hal::Api>> = None;
    #[cfg(feature = "vulkan")]
    let vulkan: Option<Box<dyn hal::Api>> = Some(Box::new(vulkan::VulkanApi::new()));
    #[cfg(not(feature = "vulkan"))]
    let vulkan: Option<Box<dyn hal::Api>> = None;
    #[cfg(feature = "opencl")]
    let opencl: Option<Box<dyn hal::Api>> = Some(Box::new(opencl::OpenClApi::new()));
    #[cfg(not(feature = "opencl"))]
    let opencl: Option<Box<dyn hal::Api>> = None;
    vec![
        ("cuda", cuda),
        ("hip", hip),
        ("metal", metal),
        ("vulkan", vulkan),
        ("opencl", opencl),
        ("cpu", Some(Box::new(cpu::CpuApi))),
    ]
}
