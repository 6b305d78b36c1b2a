//! A HIP device as nexus sees it: its live properties (from device
//! attributes) and the `hal::Device` entry points.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::ffi::result as r;
use super::ffi::sys::{self, hipDevice_t, hipStream_t, Hip};
use super::{library, memory, schedule, stream, sync, Gpu};
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::EventType;

pub(super) fn device_properties(
    d: &Hip,
    dev: hipDevice_t,
    ordinal: i32,
    name: &str,
    arch: &str,
) -> Value {
    let attr = |a| r::device_attribute(d, ordinal, a).ok().map(|v| v as i64);
    let mem = r::device_total_mem(d, dev).ok();
    let cus = attr(sys::ATTR_MULTIPROCESSOR_COUNT);
    let warp = attr(sys::ATTR_WARP_SIZE).unwrap_or(64);
    let l2 = attr(sys::ATTR_L2_CACHE_SIZE);
    let smem_block = attr(sys::ATTR_MAX_SHARED_MEMORY_PER_BLOCK);
    let smem_optin = attr(sys::ATTR_SHARED_MEM_PER_BLOCK_OPTIN).filter(|&v| v > 0);
    let smem_cu = attr(sys::ATTR_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)
        .or_else(|| attr(sys::ATTR_SHARED_MEM_PER_MULTIPROCESSOR));
    let regs_cu = attr(sys::ATTR_MAX_REGISTERS_PER_MULTIPROCESSOR);
    let clock = attr(sys::ATTR_CLOCK_RATE).map(|k| k / 1000);
    // What HIP does not report (the L1 size, the memory technology) comes
    // from the device database, merged over these by type.
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
    if let Some(s) = regs_cu {
        regs["Size"] = json!(s * 4);
    }
    let mut device = json!({"Type": "Device", "Scope": "device"});
    if let Some(m) = mem {
        device["Size"] = json!(m);
    }
    let mut p = json!({
        "Name": name,
        "Vendor": "AMD",
        "Type": "gpu",
        "Architecture": arch,
        "Runtime": "hip",
        "ID": ordinal,
        "WarpSize": warp,
        "MemorySubsystem": {
            "SupportedMemoryTypes": ["L1", "L2", "Shared", "Registers", "Device"],
            "MemoryTypes": [l1, l2e, shared, regs, device],
        },
    });
    // HIP's "compute capability" on AMD is a fixed 9.x; kept for
    // code that reads it, the architecture is what selects kernels.
    if let (Some(major), Some(minor)) = (
        attr(sys::ATTR_COMPUTE_CAPABILITY_MAJOR),
        attr(sys::ATTR_COMPUTE_CAPABILITY_MINOR),
    ) {
        p["ComputeCapability"] = json!(format!("{major}.{minor}"));
    }
    let mut set = |k: &str, v: Option<i64>| {
        if let Some(v) = v {
            p[k] = json!(v);
        }
    };
    set("MemorySize", mem.map(|m| m as i64));
    set("ComputeUnits", cus);
    set("ClockMHz", clock);
    set(
        "MemoryClockMHz",
        attr(sys::ATTR_MEMORY_CLOCK_RATE).map(|k| k / 1000),
    );
    set("MemoryBusWidth", attr(sys::ATTR_MEMORY_BUS_WIDTH));
    set("L2Size", l2);
    set("MaxThreadsPerGroup", attr(sys::ATTR_MAX_THREADS_PER_BLOCK));
    set("MaxGroupMemory", smem_block);
    set("MaxGroupMemoryOptin", smem_optin);
    set("SharedMemoryPerUnit", smem_cu);
    set("RegistersPerUnit", regs_cu);
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
    set("AsicRevision", attr(sys::ATTR_ASIC_REVISION));
    set("IsLargeBar", attr(sys::ATTR_IS_LARGE_BAR));
    set("FineGrainSupport", attr(sys::ATTR_FINE_GRAIN_SUPPORT));
    set(
        "PhysicalComputeUnits",
        attr(sys::ATTR_PHYSICAL_MULTIPROCESSOR_COUNT),
    );
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
    if let Ok(b) = r::device_pci_bus_id(d, ordinal) {
        p["PCIBusID"] = json!(b);
    }
    if let Ok(u) = r::device_uuid(d, dev) {
        p["UUID"] = json!(u);
    }
    let v = r::runtime_version(d);
    if v > 0 {
        p["RuntimeVersion"] = json!(super::version_string(v));
    }
    if let Ok(v) = r::driver_version(d) {
        p["DriverVersion"] = json!(v);
    }
    let mut core = json!({"UnitName": "Compute Unit", "SIMDWidth": warp});
    if let Some(s) = cus {
        core["UnitCount"] = json!(s);
    }
    if let Some(c) = clock {
        core["MaxClockMHz"] = json!(c);
    }
    p["CoreSubsystem"] = core;
    p
}

pub struct HipDevice {
    pub(crate) gpu: Arc<Gpu>,
}

impl hal::Device for HipDevice {
    fn properties(&self) -> Value {
        self.gpu.properties.clone()
    }

    fn allocate(&self, size: usize) -> Result<Arc<dyn hal::Buffer>> {
        Ok(Arc::new(memory::HipBuffer::allocate(&self.gpu, size)?))
    }

    fn load_library(&self, source: &hal::LibrarySource) -> Result<Arc<dyn hal::Library>> {
        Ok(Arc::new(library::HipLibrary::load(&self.gpu, source)?))
    }

    fn create_event(&self, _event_type: EventType) -> Result<Arc<dyn hal::Event>> {
        // One timeline (mapped pinned memory) serves all three event types.
        Ok(Arc::new(sync::HipEvent::new(&self.gpu)?))
    }

    fn create_stream(&self) -> Result<Arc<dyn hal::Stream>> {
        Ok(Arc::new(stream::HipStream::new(&self.gpu)?))
    }

    fn encode(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        Ok(Arc::new(schedule::HipSchedule::encode(
            &self.gpu, ops, false,
        )?))
    }

    fn encode_profiled(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        Ok(Arc::new(schedule::HipSchedule::encode(
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
                        "device memory at {address:#x} belongs to HIP device {ord}, not {}",
                        self.gpu.label()
                    ),
                ));
            }
        }
        Ok(Arc::new(memory::HipBuffer::wrap(
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
        hal::MemoryDomain::Rocm
    }

    fn synchronize_external_stream(&self, stream: hal::ProducerStream) -> Result<()> {
        // HIP has no legacy stream constant: a producer's default stream is
        // the null stream (0), which DLPack and the CUDA array interface's
        // ROCm builds (CuPy, torch) name as "legacy default" or 0/1.
        let handle = match stream {
            hal::ProducerStream::None => return Ok(()),
            hal::ProducerStream::LegacyDefault => 0,
            hal::ProducerStream::Handle(h) => h,
        };
        let _ctx = self.gpu.bind()?;
        let d = self.gpu.d;
        // Any other value would be dereferenced by HIP, and nothing proves
        // it is a live stream: the whole device is synchronised instead.
        let synced = if handle <= 1 {
            r::stream_synchronize(d, std::ptr::null_mut::<std::ffi::c_void>() as hipStream_t)
        } else {
            r::device_synchronize(d)
        };
        synced.map_err(|mut e| {
            e.message = format!(
                "synchronising with the producer's stream {handle:#x}: {}",
                e.message
            );
            e
        })
    }

    fn owns_address(&self, address: u64) -> bool {
        r::pointer_device_ordinal(self.gpu.d, address) == Some(self.gpu.ordinal)
    }

    fn native_ordinal(&self) -> i64 {
        self.gpu.ordinal as i64
    }
}
