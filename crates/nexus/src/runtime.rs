//! The registry of runtimes, built on first use (never at import).

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::backends;
use crate::device::Device;
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::property::Properties;

struct RuntimeShared {
    name: &'static str,
    api: Option<Box<dyn hal::Api>>,
    devices: OnceLock<Vec<Device>>,
}

/// One backend (CPU, CUDA, ...) and its devices.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeShared>,
}

static RUNTIMES: OnceLock<Vec<Runtime>> = OnceLock::new();

/// Every runtime nexus knows, in listing order, with or without devices.
pub fn known_runtimes() -> &'static [Runtime] {
    RUNTIMES.get_or_init(|| {
        backends::registry()
            .into_iter()
            .map(|(name, api)| Runtime {
                inner: Arc::new(RuntimeShared {
                    name,
                    api,
                    devices: OnceLock::new(),
                }),
            })
            .collect()
    })
}

/// The runtimes that have at least one device, best first: runtimes with a
/// GPU device (in registry order), then the native CPU runtime, then those
/// whose devices are all CPUs or software devices (lavapipe, PoCL). So the
/// first device of the first runtime is always the best one present.
pub fn get_runtimes() -> Vec<Runtime> {
    let listed: Vec<&Runtime> = known_runtimes()
        .iter()
        .filter(|r| !r.devices().is_empty())
        .collect();
    let has_gpu = |r: &Runtime| r.devices().iter().any(Device::is_gpu);
    let native_cpu = |r: &Runtime| r.name() == CPU;
    let gpus = listed.iter().filter(|r| !native_cpu(r) && has_gpu(r));
    let cpu = listed.iter().filter(|r| native_cpu(r));
    let software = listed.iter().filter(|r| !native_cpu(r) && !has_gpu(r));
    gpus.chain(cpu)
        .chain(software)
        .map(|r| (*r).clone())
        .collect()
}

/// The name of the native CPU runtime, which holds system buffers.
const CPU: &str = "cpu";

/// A runtime by its lower-case name; a known runtime without a driver has zero devices.
pub fn get_runtime(name: &str) -> Result<Runtime> {
    known_runtimes()
        .iter()
        .find(|r| r.name() == name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = known_runtimes().iter().map(|r| r.name()).collect();
            Error::new(
                Status::InvalidRuntime,
                format!("unknown runtime '{name}' (known: {})", names.join(", ")),
            )
        })
}

/// The device that holds system buffers (`nexus.create_buffer`): the CPU.
pub fn system_device() -> Result<Device> {
    get_runtime(CPU)?
        .devices()
        .first()
        .cloned()
        .ok_or_else(|| Error::new(Status::InvalidDevice, "the CPU runtime has no device"))
}

impl Runtime {
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// Devices, enumerated once. A driver that fails to enumerate is logged
    /// and leaves this runtime empty rather than failing the whole listing.
    pub fn devices(&self) -> &[Device] {
        self.inner.devices.get_or_init(|| {
            let Some(api) = &self.inner.api else {
                return Vec::new();
            };
            match api.devices() {
                Ok(mut list) => {
                    // GPUs first within a runtime too. Backends already
                    // list them so (their labels carry the index), which
                    // makes this stable sort a guard that changes nothing.
                    list.sort_by_key(|d| !d.is_gpu());
                    list.into_iter()
                        .enumerate()
                        .map(|(i, hal)| Device::new(self.inner.name, i, hal))
                        .collect()
                }
                Err(e) => {
                    log::warn!("runtime '{}' lists no devices: {}", self.inner.name, e);
                    Vec::new()
                }
            }
        })
    }

    pub fn device(&self, index: i64) -> Result<Device> {
        let devices = self.devices();
        usize::try_from(index)
            .ok()
            .and_then(|i| devices.get(i))
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    Status::InvalidDevice,
                    format!(
                        "runtime '{}' has no device {index} ({} devices)",
                        self.name(),
                        devices.len()
                    ),
                )
            })
    }

    pub fn properties(&self) -> Properties {
        let mut root = match &self.inner.api {
            Some(api) => api.properties(),
            None => serde_json::json!({"Name": self.name(), "Status": "no backend in this build"}),
        };
        if let Value::Object(map) = &mut root {
            map.insert("Name".into(), Value::from(self.name()));
            map.insert("Count".into(), Value::from(self.devices().len()));
        }
        Properties::new(format!("Runtime '{}'", self.name()), root)
    }
}
