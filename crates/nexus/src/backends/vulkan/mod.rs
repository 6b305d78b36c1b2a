//! The Vulkan runtime: every GPU with a Vulkan driver (AMD, Intel, NVIDIA,
//! Arm, Qualcomm, Apple through MoltenVK) and Mesa's lavapipe on the CPU.
//!
//! - `ffi/`: every raw call (through `ash`, the loader opened at run time),
//!   typed RAII handles; nothing above it is unsafe.
//! - `device.rs`: devices and their properties.
//! - `memory.rs`: buffers (host-visible memory mapped directly where the
//!   device is integrated or a CPU, device-local memory with a staging
//!   path elsewhere).
//! - `library.rs`: SPIR-V, WGSL and GLSL compiled in-process by naga,
//!   reflection of bindings and push constants, pipelines per group size.
//! - `schedule.rs`: command buffers recorded once at `encode`, descriptor
//!   sets written once per command; profiled schedules add timestamp
//!   queries around every command.
//! - `sync.rs`: events (timeline semaphores in epochs) and streams (runs
//!   submitted by the caller, or by a submitter thread per stream when
//!   they must be held behind a wait, over the device's one queue).
//!
//! Kernel conventions (README, "Vulkan"): buffer argument i binds to set 0
//! binding i; scalars are the members of the one push-constant block
//! (`var<immediate>` in WGSL, `layout(push_constant)` in GLSL), in argument
//! order; pipeline-overridable constants with ids 0, 1, 2 receive the
//! command's group size and id 3 its `shared_memory` bytes.
//!
//! # Locks (places in `backends/common`'s order)
//!
//! - 3 (stream queues): `StreamShared::state`, held to queue or pop a run,
//!   to move finished runs out, and while the caller submits a run without
//!   wait commands itself (planning its signals, one `vkQueueSubmit`;
//!   nothing in it blocks); never while waiting. Waiters only `try_lock`
//!   it (they may hold other locks).
//! - 4 (per-resource state): `VkEvent::state` (planning signals and waits,
//!   host signals; destroying an epoch's semaphore under it buries it, see
//!   below), `VkKernel::pipelines`, `Gpu::buffers`.
//! - 6 (leaves): `ffi::Device`'s queue lock (one `vkQueueSubmit`, or a
//!   read of the submission serial), then its graveyard (objects waiting
//!   for the queue to be done with them); burials run with neither held.
//!
//! Waits (host event waits, held wait commands, stream synchronisation)
//! hold no lock: they wait on timeline semaphores in bounded slices.

mod device;
mod ffi;
mod library;
mod memory;
mod schedule;
mod sync;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde_json::{json, Value};

use crate::error::Result;
use crate::hal;

/// What every object of one Vulkan device shares.
pub(crate) struct Gpu {
    pub dev: Arc<ffi::Device>,
    /// Memory types for buffers, in order of preference.
    pub buffer_types: Vec<(u32, ffi::vk::MemoryPropertyFlags)>,
    /// Host-visible, coherent types (staging memory).
    pub host_types: Vec<(u32, ffi::vk::MemoryPropertyFlags)>,
    /// Whether buffers live in device-local memory the host cannot map
    /// (copies go through staging buffers).
    pub staging: bool,
    /// Live buffers by the address nexus reports for them, so an encoded
    /// command finds the Vulkan buffer behind a `hal::Buffer`.
    pub buffers: Mutex<HashMap<u64, Weak<ffi::Buffer>>>,
    /// Addresses of unmapped buffers: unique, never reused, never a host
    /// pointer.
    pub next_id: AtomicU64,
    /// This device's index in the runtime.
    pub ordinal: usize,
}

/// The `vulkan` runtime. Nothing happens at import: the loader is opened
/// and the instance created on the first listing.
pub struct VulkanApi {
    devices: OnceLock<(Value, Vec<Arc<dyn hal::Device>>)>,
}

impl VulkanApi {
    pub fn new() -> Self {
        VulkanApi {
            devices: OnceLock::new(),
        }
    }

    fn listing(&self) -> &(Value, Vec<Arc<dyn hal::Device>>) {
        self.devices.get_or_init(|| match ffi::Instance::open() {
            Ok(Some(instance)) => {
                let props = json!({
                    "Name": "vulkan",
                    "Version": env!("CARGO_PKG_VERSION"),
                    "ApiVersion": device::version_string(instance.api_version),
                });
                let list = match instance.physical_devices() {
                    Ok(l) => l,
                    Err(e) => {
                        log::warn!("vulkan: cannot list devices: {e}");
                        Vec::new()
                    }
                };
                let mut devices: Vec<Arc<dyn hal::Device>> = Vec::new();
                // GPUs first, then CPU (software) devices.
                let mut list = list;
                list.sort_by_key(|p| p.device_type == ffi::vk::PhysicalDeviceType::CPU);
                for info in list {
                    let name = info.name.clone();
                    match device::VkDevice::new(instance.clone(), info, devices.len()) {
                        Ok(d) => devices.push(Arc::new(d)),
                        Err(e) => log::warn!("vulkan: cannot open device '{name}': {e}"),
                    }
                }
                (props, devices)
            }
            Ok(None) | Err(_) => (
                json!({"Name": "vulkan", "Version": env!("CARGO_PKG_VERSION")}),
                Vec::new(),
            ),
        })
    }
}

impl Default for VulkanApi {
    fn default() -> Self {
        Self::new()
    }
}

impl hal::Api for VulkanApi {
    fn name(&self) -> &'static str {
        "vulkan"
    }

    fn properties(&self) -> Value {
        self.listing().0.clone()
    }

    fn devices(&self) -> Result<Vec<Arc<dyn hal::Device>>> {
        Ok(self.listing().1.clone())
    }
}
