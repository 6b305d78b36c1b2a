//! Every raw Vulkan call of the runtime, behind typed RAII handles.
//!
//! The loader is opened at run time (`ash::Entry::load`, or the path in
//! `NEXUS_VULKAN_LOADER`); nothing links against Vulkan. Each handle owns
//! one Vulkan object and keeps the `Device` (and through it the instance)
//! alive, so destruction order is always child before parent. Above this
//! module the runtime calls only safe methods.

mod device;
mod resources;

pub use ash::vk;
pub use device::{Batch, Device, PhysicalInfo};
pub use resources::{
    Buffer, CommandBuffer, DescriptorSet, Pipeline, PipelineLayout, QueryPool, Record, Semaphore,
    ShaderModule,
};

use std::mem::ManuallyDrop;
use std::sync::Arc;

use crate::error::{Error, Result, Status};

/// A failed Vulkan call as a nexus error naming the call.
pub(crate) fn check(call: &str, r: vk::Result) -> Error {
    let status = match r {
        vk::Result::ERROR_OUT_OF_DEVICE_MEMORY | vk::Result::ERROR_OUT_OF_HOST_MEMORY => {
            Status::OutOfMemory
        }
        _ => Status::DriverError,
    };
    Error::new(status, format!("Vulkan: {call} failed: {r:?}"))
}

/// The Vulkan loader and one instance; destroyed when the last device and
/// handle made from it are gone.
pub struct Instance {
    raw: ash::Instance,
    /// Unloaded after the instance is destroyed (in `Drop`).
    entry: ManuallyDrop<ash::Entry>,
    /// The process that created the instance (see `in_owner_process`).
    owner: u32,
    /// The loader's instance-level API version.
    pub api_version: u32,
}

impl Instance {
    /// Opens the loader and creates an instance; `Ok(None)` when there is
    /// no loader or no driver (zero devices, not an error).
    pub fn open() -> Result<Option<Arc<Instance>>> {
        let entry = match std::env::var_os("NEXUS_VULKAN_LOADER") {
            // SAFETY: loading the Vulkan loader library runs its initialisers;
            // the path is the user's explicit choice of a Vulkan loader.
            Some(path) => unsafe { ash::Entry::load_from(path) },
            // SAFETY: as above, for the platform's default loader name.
            None => unsafe { ash::Entry::load() },
        };
        let Ok(entry) = entry else {
            log::info!("vulkan: no Vulkan loader found; the runtime has no devices");
            return Ok(None);
        };
        // SAFETY: a plain query of the loader.
        let version = match unsafe { entry.try_enumerate_instance_version() } {
            Ok(Some(v)) => v,
            Ok(None) => vk::API_VERSION_1_0,
            Err(_) => return Ok(None),
        };
        if version < vk::API_VERSION_1_2 {
            log::info!(
                "vulkan: the loader supports only Vulkan {}.{}; nexus needs 1.2",
                vk::api_version_major(version),
                vk::api_version_minor(version)
            );
            return Ok(None);
        }
        let app = vk::ApplicationInfo::default()
            .application_name(c"nexus")
            .engine_name(c"nexus")
            .api_version(vk::API_VERSION_1_3.min(version));
        let info = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: valid create info that lives across the call.
        let raw = match unsafe { entry.create_instance(&info, None) } {
            Ok(i) => i,
            Err(e) => {
                log::info!("vulkan: vkCreateInstance failed ({e:?}); the runtime has no devices");
                return Ok(None);
            }
        };
        Ok(Some(Arc::new(Instance {
            raw,
            entry: ManuallyDrop::new(entry),
            owner: crate::process::id(),
            api_version: version,
        })))
    }

    /// Every physical device with a compute queue and Vulkan 1.2.
    pub fn physical_devices(&self) -> Result<Vec<PhysicalInfo>> {
        // SAFETY: a plain query on a live instance.
        let list = unsafe { self.raw.enumerate_physical_devices() }
            .map_err(|e| check("vkEnumeratePhysicalDevices", e))?;
        Ok(list
            .into_iter()
            .filter_map(|pd| device::PhysicalInfo::query(self, pd))
            .collect())
    }

    pub(crate) fn raw(&self) -> &ash::Instance {
        &self.raw
    }

    /// False in a process forked from the one that created the instance:
    /// there the driver's state is a copy whose threads are gone, and
    /// NVIDIA's driver hangs when a child destroys objects of its parent's
    /// (or waits for its queue). A child leaks them instead; its exit
    /// returns the memory, and the parent's objects are untouched.
    pub(crate) fn in_owner_process(&self) -> bool {
        self.owner == crate::process::id()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.in_owner_process() {
            return;
        }
        // SAFETY: every child object holds an Arc of the instance, so none is
        // left when the last reference drops; the loader is unloaded after
        // the instance and never used again.
        unsafe {
            self.raw.destroy_instance(None);
            ManuallyDrop::drop(&mut self.entry);
        }
    }
}

/// A fixed-size C string of a Vulkan property as a Rust string.
pub(crate) fn cstr(bytes: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = bytes
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
