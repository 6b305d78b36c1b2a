//! The CPU device: the host's properties and the `hal::Device` entry points.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::{launch, library, memory, schedule, sync, sysinfo};
use crate::error::Result;
use crate::hal;
use crate::types::EventType;

pub struct CpuDevice {
    properties: OnceLock<Value>,
    default_stream: Arc<OnceLock<sync::CpuStream>>,
}

impl CpuDevice {
    pub(super) fn new() -> Self {
        CpuDevice {
            properties: OnceLock::new(),
            default_stream: Arc::new(OnceLock::new()),
        }
    }
}

impl hal::Device for CpuDevice {
    fn properties(&self) -> Value {
        self.properties
            .get_or_init(|| sysinfo::cpu_properties(launch::thread_count()))
            .clone()
    }

    fn allocate(&self, size: usize) -> Result<Arc<dyn hal::Buffer>> {
        Ok(Arc::new(memory::CpuBuffer::new(size)?))
    }

    fn load_library(&self, source: &hal::LibrarySource) -> Result<Arc<dyn hal::Library>> {
        Ok(Arc::new(library::CpuLibrary::open(source)?))
    }

    fn create_event(&self, _event_type: EventType) -> Result<Arc<dyn hal::Event>> {
        // One timeline implementation serves all three event types on the CPU.
        Ok(Arc::new(sync::CpuEvent::default()))
    }

    fn create_stream(&self) -> Result<Arc<dyn hal::Stream>> {
        Ok(Arc::new(sync::CpuStream::new()))
    }

    fn native_ordinal(&self) -> i64 {
        0
    }

    /// Buffers are host memory: exported in place (kDLCPU, the array
    /// interface) and wrapped without a copy.
    fn memory_domain(&self) -> hal::MemoryDomain {
        hal::MemoryDomain::Host
    }

    /// Any host address is this device's memory.
    fn owns_address(&self, address: u64) -> bool {
        address != 0
    }

    fn wrap_device_memory(
        &self,
        address: u64,
        size: usize,
        owner: Arc<dyn std::any::Any + Send + Sync>,
    ) -> Result<Arc<dyn hal::Buffer>> {
        Ok(Arc::new(memory::ForeignHostBuffer::new(
            address, size, owner,
        )?))
    }

    /// Host memory needs no wait: a producer's host work is done when it
    /// hands the memory over.
    fn synchronize_external_stream(&self, _stream: hal::ProducerStream) -> Result<()> {
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        match self.default_stream.get() {
            Some(stream) => hal::Stream::synchronize(stream),
            None => Ok(()),
        }
    }

    fn encode(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        let sched = schedule::CpuSchedule::encode(ops, self.default_stream.clone(), false)?;
        Ok(Arc::new(schedule::CpuScheduleHandle(Arc::new(sched))))
    }

    fn encode_profiled(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        let sched = schedule::CpuSchedule::encode(ops, self.default_stream.clone(), true)?;
        Ok(Arc::new(schedule::CpuScheduleHandle(Arc::new(sched))))
    }
}
