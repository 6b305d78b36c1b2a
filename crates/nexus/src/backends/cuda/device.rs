//! A CUDA device as nexus sees it: its live properties (from device
//! attributes) and the `hal::Device` entry points.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::ffi::result as r;
use super::ffi::sys::{self, CUdevice, CUstream, Driver};
use super::{library, memory, schedule, stream, sync, Gpu};
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::EventType;

pub(super) fn device_properties(
    d: &Driver,
    dev: CUdevice,
    ordinal: i32,
    name: &str,
    arch: &str,
    major: i32,
    minor: i32,
) -> Value {
    let attr = |a| r::device_attribute(d, dev, a).ok().map(|v| v as i64);
    let mem = r::device_total_mem(d, dev).ok();
    let sms = attr(sys::ATTR_MULTIPROCESSOR_COUNT);
    let warp = attr(sys::ATTR_WARP_SIZE).unwrap_or(32);
    let l2 = attr(sys::ATTR_L2_CACHE_SIZE);
    let smem_block = attr(sys::ATTR_MAX_SHARED_MEMORY_PER_BLOCK);
    let smem_optin = attr(sys::ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
    let smem_sm = attr(sys::ATTR_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR);
    let regs_sm = attr(sys::ATTR_MAX_REGISTERS_PER_MULTIPROCESSOR);
    let clock = attr(sys::ATTR_CLOCK_RATE).map(|k| k / 1000);
    // What the driver does not report (the L1 size, the memory technology)
    // comes from the device database, merged over these by type.
    let l1 = json!({"Type": "L1", "Scope": "unit"});
    let mut l2e = json!({"Type": "L2", "Scope": "device"});
    if let Some(s) = l2 {
        l2e["Size"] = json!(s);
    }
    let mut shared = json!({"Type": "Shared", "Scope": "group"});
    if let Some(s) = smem_optin.or(smem_block) {
        shared["Size"] = json!(s);
    }
    let mut regs = json!({"Type": "Registers", "Scope": "unit"});
    if let Some(s) = regs_sm {
        regs["Size"] = json!(s * 4);
    }
    let mut device = json!({"Type": "Device", "Scope": "device"});
    if let Some(m) = mem {
        device["Size"] = json!(m);
    }
    let mut p = json!({
        "Name": name,
        "Vendor": "NVIDIA",
        "Type": "gpu",
        "Architecture": arch,
        "ComputeCapability": format!("{major}.{minor}"),
        "Runtime": "cuda",
        "ID": ordinal,
        "WarpSize": warp,
        "MemorySubsystem": {
            "SupportedMemoryTypes": ["L1", "L2", "Shared", "Registers", "Device"],
            "MemoryTypes": [l1, l2e, shared, regs, device],
        },
    });
    let mut set = |k: &str, v: Option<i64>| {
        if let Some(v) = v {
            p[k] = json!(v);
        }
    };
    set("MemorySize", mem.map(|m| m as i64));
    set("ComputeUnits", sms);
    set("ClockMHz", clock);
    set(
        "MemoryClockMHz",
        attr(sys::ATTR_MEMORY_CLOCK_RATE).map(|k| k / 1000),
    );
    set("MemoryBusWidth", attr(sys::ATTR_GLOBAL_MEMORY_BUS_WIDTH));
    set("L2Size", l2);
    set("MaxThreadsPerGroup", attr(sys::ATTR_MAX_THREADS_PER_BLOCK));
    set("MaxGroupMemory", smem_block);
    set("MaxGroupMemoryOptin", smem_optin);
    set("SharedMemoryPerUnit", smem_sm);
    set("RegistersPerUnit", regs_sm);
    set(
        "MaxRegistersPerGroup",
        attr(sys::ATTR_MAX_REGISTERS_PER_BLOCK),
    );
    set(
        "MaxThreadsPerUnit",
        attr(sys::ATTR_MAX_THREADS_PER_MULTIPROCESSOR),
    );
    set("ConstantMemorySize", attr(sys::ATTR_TOTAL_CONSTANT_MEMORY));
    set("AsyncEngineCount", attr(sys::ATTR_ASYNC_ENGINE_COUNT));
    let dims = |a: [i32; 3]| -> Option<Value> {
        let v: Option<Vec<i64>> = a.iter().map(|&x| attr(x)).collect();
        v.map(|v| json!(v))
    };
    if let Some(v) = dims([
        sys::ATTR_MAX_BLOCK_DIM_X,
        sys::ATTR_MAX_BLOCK_DIM_Y,
        sys::ATTR_MAX_BLOCK_DIM_Z,
    ]) {
        p["MaxGroupSize"] = v;
    }
    if let Some(v) = dims([
        sys::ATTR_MAX_GRID_DIM_X,
        sys::ATTR_MAX_GRID_DIM_Y,
        sys::ATTR_MAX_GRID_DIM_Z,
    ]) {
        p["MaxGridSize"] = v;
    }
    if let Ok(b) = r::device_pci_bus_id(d, dev) {
        p["PCIBusID"] = json!(b);
    }
    if let Ok(u) = r::device_uuid(d, dev) {
        p["UUID"] = json!(u);
    }
    if let Ok(v) = r::driver_version(d) {
        p["DriverVersion"] = json!(format!("{}.{}", v / 1000, (v % 1000) / 10));
    }
    let mut core = json!({"UnitName": "Streaming Multiprocessor", "SIMDWidth": warp});
    if let Some(s) = sms {
        core["UnitCount"] = json!(s);
    }
    if let Some(c) = clock {
        core["MaxClockMHz"] = json!(c);
    }
    p["CoreSubsystem"] = core;
    p
}

pub struct CudaDevice {
    pub(crate) gpu: Arc<Gpu>,
}

impl hal::Device for CudaDevice {
    fn properties(&self) -> Value {
        self.gpu.properties.clone()
    }

    fn allocate(&self, size: usize) -> Result<Arc<dyn hal::Buffer>> {
        Ok(Arc::new(memory::CudaBuffer::allocate(&self.gpu, size)?))
    }

    fn allocate_host(&self, size: usize) -> Result<Arc<dyn hal::Buffer>> {
        Ok(Arc::new(memory::CudaBuffer::allocate_pinned(
            &self.gpu, size,
        )?))
    }

    fn load_library(&self, source: &hal::LibrarySource) -> Result<Arc<dyn hal::Library>> {
        Ok(Arc::new(library::CudaLibrary::load(&self.gpu, source)?))
    }

    fn create_event(&self, _event_type: EventType) -> Result<Arc<dyn hal::Event>> {
        // One timeline (mapped pinned memory) serves all three event types.
        Ok(Arc::new(sync::CudaEvent::new(&self.gpu)?))
    }

    fn create_stream(&self) -> Result<Arc<dyn hal::Stream>> {
        Ok(Arc::new(stream::CudaStream::new(&self.gpu)?))
    }

    fn encode(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        Ok(Arc::new(schedule::CudaSchedule::encode(
            &self.gpu, ops, false,
        )?))
    }

    fn encode_profiled(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        Ok(Arc::new(schedule::CudaSchedule::encode(
            &self.gpu, ops, true,
        )?))
    }

    fn wrap_device_memory(
        &self,
        address: u64,
        size: usize,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Result<Arc<dyn hal::Buffer>> {
        if let Some(ord) = r::pointer_device_ordinal(self.gpu.d, address) {
            if ord != self.gpu.ordinal {
                return Err(Error::new(
                    Status::InvalidBuffer,
                    format!(
                        "device memory at {address:#x} belongs to CUDA device {ord}, not {}",
                        self.gpu.label()
                    ),
                ));
            }
        }
        Ok(Arc::new(memory::CudaBuffer::wrap(
            &self.gpu, address, size, owner,
        )))
    }

    fn synchronize(&self) -> Result<()> {
        let Some(q) = self.gpu.default_queue.get() else {
            return Ok(());
        };
        let _ctx = self.gpu.bind()?;
        q.synchronize(None).map(|_| ())
    }

    fn reclaim(&self) {
        for q in self.gpu.queues.live() {
            q.reclaim(Duration::from_secs(60));
        }
    }

    fn memory_domain(&self) -> hal::MemoryDomain {
        hal::MemoryDomain::Cuda
    }

    fn synchronize_external_stream(&self, stream: hal::ProducerStream) -> Result<()> {
        /// `cudaStreamLegacy`, as the CUDA array interface and DLPack name it.
        const LEGACY_STREAM: u64 = 1;
        let handle = match stream {
            hal::ProducerStream::None => return Ok(()),
            hal::ProducerStream::LegacyDefault => LEGACY_STREAM,
            hal::ProducerStream::Handle(h) => h,
        };
        let _ctx = self.gpu.bind()?;
        let d = self.gpu.d;
        // 1 and 2 name the legacy and per-thread default streams. Any other
        // value would be dereferenced by the driver, and nothing proves it
        // is a live stream: the whole device is synchronised instead.
        let synced = if handle == LEGACY_STREAM || handle == 2 {
            // A stream handle the driver defines as a constant.
            r::stream_synchronize(d, handle as usize as CUstream)
        } else {
            r::ctx_synchronize(d)
        };
        synced.map_err(|mut e| {
            e.message = format!(
                "synchronising with the producer's stream {handle:#x}: {}",
                e.message
            );
            e
        })
    }

    fn can_copy_with(&self, other: &dyn hal::Device) -> Result<bool> {
        match other.memory_domain() {
            // Unified addressing: cuMemcpyAsync takes host pointers too.
            hal::MemoryDomain::Host => Ok(true),
            hal::MemoryDomain::Cuda => {
                self.gpu.connect_peer(other.native_ordinal() as i32)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn owns_address(&self, address: u64) -> bool {
        r::pointer_device_ordinal(self.gpu.d, address) == Some(self.gpu.ordinal)
    }

    fn native_ordinal(&self) -> i64 {
        self.gpu.ordinal as i64
    }
}
