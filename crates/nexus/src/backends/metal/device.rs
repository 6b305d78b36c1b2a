//! Metal devices (`MTLCopyAllDevices`), their properties, and the
//! `hal::Device` entry points.

use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use super::logic::{self, DeviceInfo};
use super::sync::{MtlEvent, MtlStream, MtlStreamHandle, Queue};
use super::{ffi, library, memory, schedule};
use crate::backends::common::lock;
use crate::backends::common::Registry;
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::EventType;

/// What every object of one Metal device shares.
pub(crate) struct Gpu {
    pub dev: ffi::Device,
    pub info: DeviceInfo,
    pub properties: Value,
    default_queue: OnceLock<Arc<Queue>>,
    setup: Mutex<()>,
    /// Every stream's queue, for `reclaim`.
    streams: Registry<Queue>,
    pub(crate) builtin: Mutex<Option<Arc<library::Compiled>>>,
}

impl Gpu {
    pub fn label(&self) -> String {
        format!("metal:{} '{}'", self.info.index, self.info.name)
    }

    /// A new command queue as a nexus stream queue.
    pub fn new_queue(&self) -> Result<Arc<Queue>> {
        let q = self.dev.new_queue().ok_or_else(|| {
            Error::new(
                Status::InvalidStream,
                format!("{}: cannot create a command queue", self.label()),
            )
        })?;
        let queue = Queue::new(MtlStream::new(q));
        self.streams.add(&queue);
        Ok(queue)
    }

    /// The queue of `run(stream=None)`, made on first use.
    pub fn default_queue(&self) -> Result<Arc<Queue>> {
        if let Some(q) = self.default_queue.get() {
            return Ok(q.clone());
        }
        let _g = lock(&self.setup);
        if let Some(q) = self.default_queue.get() {
            return Ok(q.clone());
        }
        let q = self.new_queue()?;
        let _ = self.default_queue.set(q.clone());
        Ok(q)
    }

    /// A shared event at counter value `raw`.
    pub fn new_event(&self, raw: u64) -> Result<ffi::SharedEvent> {
        self.dev.new_event(raw).ok_or_else(|| {
            Error::new(
                Status::InvalidEvent,
                format!("{}: cannot create an MTLSharedEvent", self.label()),
            )
        })
    }
}

/// The `metal` runtime. Devices are listed on first use.
pub struct MetalApi {
    devices: OnceLock<Vec<Arc<dyn hal::Device>>>,
}

impl MetalApi {
    pub fn new() -> Self {
        MetalApi {
            devices: OnceLock::new(),
        }
    }
}

impl Default for MetalApi {
    fn default() -> Self {
        Self::new()
    }
}

impl hal::Api for MetalApi {
    fn name(&self) -> &'static str {
        "metal"
    }

    fn properties(&self) -> Value {
        json!({"Name": "metal", "Version": env!("CARGO_PKG_VERSION")})
    }

    fn devices(&self) -> Result<Vec<Arc<dyn hal::Device>>> {
        Ok(self
            .devices
            .get_or_init(|| {
                let devices = ffi::pool(ffi::all_devices);
                // Metal.framework is loaded now: our exit handler runs
                // before its teardown, so late frees can stay away from it.
                crate::process::watch_exit_after_driver_opened(
                    crate::process::ChildExit::RunTeardown,
                );
                devices
                    .into_iter()
                    .enumerate()
                    .map(|(index, dev)| {
                        let info = ffi::pool(|| dev.info(index));
                        let properties = logic::device_properties(&info);
                        let gpu = Gpu {
                            dev,
                            info,
                            properties,
                            default_queue: OnceLock::new(),
                            setup: Mutex::new(()),
                            streams: Registry::default(),
                            builtin: Mutex::new(None),
                        };
                        Arc::new(MtlDevice { gpu: Arc::new(gpu) }) as Arc<dyn hal::Device>
                    })
                    .collect()
            })
            .clone())
    }
}

pub struct MtlDevice {
    gpu: Arc<Gpu>,
}

impl hal::Device for MtlDevice {
    fn properties(&self) -> Value {
        let mut p = self.gpu.properties.clone();
        p["AllocatedSize"] = json!(self.gpu.dev.allocated());
        p
    }

    fn allocate(&self, size: usize) -> Result<Arc<dyn hal::Buffer>> {
        Ok(Arc::new(memory::MtlBuffer::allocate(&self.gpu, size)?))
    }

    fn load_library(&self, source: &hal::LibrarySource) -> Result<Arc<dyn hal::Library>> {
        Ok(Arc::new(library::MtlLibrary::load(&self.gpu, source)?))
    }

    fn create_event(&self, _event_type: EventType) -> Result<Arc<dyn hal::Event>> {
        // One MTLSharedEvent timeline serves all three event types.
        Ok(Arc::new(MtlEvent::new(&self.gpu)?))
    }

    fn create_stream(&self) -> Result<Arc<dyn hal::Stream>> {
        Ok(Arc::new(MtlStreamHandle {
            queue: self.gpu.new_queue()?,
        }))
    }

    fn encode(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        schedule::encode(&self.gpu, ops, false)
    }

    fn encode_profiled(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        schedule::encode(&self.gpu, ops, true)
    }

    fn synchronize(&self) -> Result<()> {
        match self.gpu.default_queue.get() {
            Some(q) => q.synchronize(None).map(|_| ()),
            None => Ok(()),
        }
    }

    fn reclaim(&self) {
        for q in self.gpu.streams.live() {
            q.reclaim(std::time::Duration::from_millis(100));
        }
    }

    fn native_ordinal(&self) -> i64 {
        self.gpu.info.index as i64
    }

    /// Shared storage is host memory: exported in place as kDLCPU, and
    /// page-aligned host arrays are used in place.
    fn memory_domain(&self) -> hal::MemoryDomain {
        hal::MemoryDomain::Host
    }

    /// Host memory Metal can use in place: page-aligned (elsewhere the
    /// CPU device owns it and the data is copied).
    fn owns_address(&self, address: u64) -> bool {
        address != 0 && (address as usize).is_multiple_of(memory::page_size())
    }

    fn wrap_device_memory(
        &self,
        address: u64,
        size: usize,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Result<Arc<dyn hal::Buffer>> {
        Ok(Arc::new(memory::MtlBuffer::wrap_host(
            &self.gpu, address, size, owner,
        )?))
    }

    /// Host memory needs no wait: a producer's host work is done when it
    /// hands the memory over.
    fn synchronize_external_stream(&self, _stream: hal::ProducerStream) -> Result<()> {
        Ok(())
    }
}
