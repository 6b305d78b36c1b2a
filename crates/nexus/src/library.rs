//! Kernel libraries and their kernels.

use std::sync::Arc;

use serde_json::Value;

use crate::device::Device;
use crate::error::Result;
use crate::hal;
use crate::handle::Handle;
use crate::property::Properties;

pub(crate) struct LibraryShared {
    device: Device,
    hal: Handle<dyn hal::Library>,
    origin: String,
}

#[derive(Clone)]
pub struct Library {
    pub(crate) inner: Arc<LibraryShared>,
}

impl Library {
    /// The library `hal` the backend loaded for `source` (what the user
    /// asked for: it names the library in messages and its "Path").
    pub(crate) fn from_hal(
        device: &Device,
        source: &hal::LibrarySource,
        hal: Arc<dyn hal::Library>,
    ) -> Result<Library> {
        let origin = match source {
            hal::LibrarySource::File(p) => p.display().to_string(),
            hal::LibrarySource::Bytes(b) => format!("<{} bytes>", b.len()),
            hal::LibrarySource::Builtin => "<builtin>".to_string(),
        };
        let library = Library {
            inner: Arc::new(LibraryShared {
                device: device.clone(),
                hal: Handle::new(hal),
                origin,
            }),
        };
        device.inner.libraries.add(&library.inner);
        Ok(library)
    }

    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// Drops the library; kernels already taken from it stay usable.
    pub fn release(&self) {
        self.inner.hal.release()
    }

    pub fn is_released(&self) -> bool {
        self.inner.hal.is_released()
    }

    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    pub fn kernel(&self, name: &str) -> Result<Kernel> {
        let hal = self
            .inner
            .hal
            .get(|| format!("Library '{}'", self.inner.origin))?
            .kernel(name)?;
        Ok(Kernel {
            inner: Arc::new(KernelShared {
                library: self.clone(),
                hal,
            }),
        })
    }

    /// The kernels the library says it holds (its "Kernels" property;
    /// empty where the format does not list them).
    pub fn kernel_names(&self) -> Vec<String> {
        let props = self.properties();
        let names = props.root().get("Kernels").and_then(Value::as_array);
        names
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn properties(&self) -> Properties {
        let mut root = match self.inner.hal.get(String::new) {
            Ok(hal) => hal.properties(),
            Err(_) => serde_json::json!({"Released": true}),
        };
        if let Value::Object(map) = &mut root {
            map.insert("Device".into(), Value::from(self.inner.device.label()));
            map.entry("Path")
                .or_insert_with(|| Value::from(self.inner.origin.clone()));
        }
        Properties::new(format!("Library '{}'", self.inner.origin), root)
    }
}

struct KernelShared {
    library: Library,
    hal: Arc<dyn hal::Kernel>,
}

#[derive(Clone)]
pub struct Kernel {
    inner: Arc<KernelShared>,
}

impl Kernel {
    pub fn name(&self) -> &str {
        self.inner.hal.name()
    }

    pub fn device(&self) -> &Device {
        self.inner.library.device()
    }

    pub fn library(&self) -> &Library {
        &self.inner.library
    }

    pub fn properties(&self) -> Properties {
        let mut root = self.inner.hal.properties();
        if let Value::Object(map) = &mut root {
            map.insert("Name".into(), Value::from(self.name()));
            map.insert("Device".into(), Value::from(self.device().label()));
        }
        Properties::new(format!("Kernel '{}'", self.name()), root)
    }

    pub(crate) fn hal(&self) -> &Arc<dyn hal::Kernel> {
        &self.inner.hal
    }
}
