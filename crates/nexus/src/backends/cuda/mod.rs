//! The CUDA runtime: NVIDIA GPUs through the driver API.
//!
//! Layers, bottom up: `sys` (raw types and function tables, opened with
//! `libloading` at run time, never linked), `result` (every call checked,
//! errors named by `cuGetErrorName`), and the safe backend above them:
//! devices on their primary contexts, buffers with a pinned staging
//! pipeline, modules (PTX, cubin, fatbin, CUDA C++ through NVRTC),
//! schedules replayed as CUDA graphs, and timeline events in mapped pinned
//! memory (signalled by stream writes, awaited by stream memory waits on
//! queued signals; other waits are held on the host, see `queue.rs`).

mod ffi;
mod library;
mod memory;
mod queue;
mod schedule;
mod sync;

use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde_json::{json, Value};

use crate::backends::common::lock;
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::EventType;
use ffi::result as r;
use ffi::sys;
use sys::{CUcontext, CUdevice, CUstream, Driver};

pub struct CudaApi;

impl CudaApi {
    pub fn new() -> Self {
        CudaApi
    }
}

impl Default for CudaApi {
    fn default() -> Self {
        Self::new()
    }
}

/// The driver, initialised once (`cuInit`); `Err` when absent or failing.
fn initialised() -> Result<&'static Driver> {
    static INIT: OnceLock<std::result::Result<(), Error>> = OnceLock::new();
    let d = sys::driver().map_err(|e| {
        Error::new(
            Status::NotSupported,
            format!("CUDA driver not available: {e}"),
        )
    })?;
    INIT.get_or_init(|| r::init(d)).clone()?;
    Ok(d)
}

impl hal::Api for CudaApi {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn properties(&self) -> Value {
        match initialised() {
            Ok(d) => {
                let v = r::driver_version(d).unwrap_or(0);
                json!({"Name": "cuda", "Vendor": "NVIDIA", "DriverVersion": format!("{}.{}", v / 1000, (v % 1000) / 10), "DriverVersionCode": v})
            }
            Err(e) => json!({"Name": "cuda", "Vendor": "NVIDIA", "Status": e.message}),
        }
    }

    fn devices(&self) -> Result<Vec<Arc<dyn hal::Device>>> {
        let d = match initialised() {
            Ok(d) => d,
            Err(e) => {
                log::info!("CUDA runtime has no devices: {}", e.message);
                return Ok(Vec::new());
            }
        };
        let n = match r::device_count(d) {
            Ok(n) => n,
            Err(e) => {
                log::info!("CUDA runtime has no devices: {}", e.message);
                return Ok(Vec::new());
            }
        };
        let mut out: Vec<Arc<dyn hal::Device>> = Vec::new();
        for ordinal in 0..n {
            match Gpu::open(d, ordinal) {
                Ok(g) => out.push(Arc::new(CudaDevice { gpu: Arc::new(g) })),
                Err(e) => log::warn!("CUDA device {ordinal} skipped: {}", e.message),
            }
        }
        Ok(out)
    }
}

/// A raw driver handle that may cross threads (the driver's handles are
/// thread-safe; nexus orders their use through streams).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handle(pub *mut std::ffi::c_void);
// SAFETY: an opaque driver handle; the driver's objects are thread-safe.
unsafe impl Send for Handle {}
// SAFETY: as for Send.
unsafe impl Sync for Handle {}

/// One GPU: its primary context (retained on first use) and the shared
/// resources of the device (default stream, staging buffers).
pub(crate) struct Gpu {
    pub d: &'static Driver,
    pub ordinal: i32,
    pub dev: CUdevice,
    pub name: String,
    pub arch: String,
    /// Stream memory operations (`cuStreamWaitValue64` ...) usable.
    pub mem_ops: bool,
    /// Groups per axis a launch may have.
    pub max_grid: [u32; 3],
    ctx: OnceLock<Handle>,
    ctx_lock: Mutex<()>,
    default_queue: OnceLock<Arc<queue::StreamQueue>>,
    /// Every stream's queue, for `reclaim`.
    queues: Mutex<Vec<Weak<queue::StreamQueue>>>,
    pub(crate) staging: Mutex<Option<memory::Staging>>,
    properties: Value,
    /// The process that opened the device: CUDA does not survive `fork`, so
    /// a child refuses every call (and its drops free nothing) instead of
    /// hanging in the driver.
    pid: u32,
}

impl Gpu {
    fn open(d: &'static Driver, ordinal: i32) -> Result<Gpu> {
        let dev = r::device_get(d, ordinal)?;
        let attr = |a| r::device_attribute(d, dev, a).ok();
        let major = attr(sys::ATTR_COMPUTE_CAPABILITY_MAJOR).unwrap_or(0);
        let minor = attr(sys::ATTR_COMPUTE_CAPABILITY_MINOR).unwrap_or(0);
        let name = r::device_name(d, dev).unwrap_or_else(|_| format!("CUDA device {ordinal}"));
        let arch = format!("sm_{major}{minor}");
        let mem_ops = d.cuStreamWaitValue64.is_some()
            && d.cuStreamWriteValue64.is_some()
            && (attr(sys::ATTR_CAN_USE_64_BIT_STREAM_MEM_OPS).unwrap_or(0) != 0
                || attr(sys::ATTR_CAN_USE_64_BIT_STREAM_MEM_OPS_V1).unwrap_or(0) != 0);
        let grid = |a| attr(a).and_then(|v| u32::try_from(v).ok()).unwrap_or(65535);
        let max_grid = [
            grid(sys::ATTR_MAX_GRID_DIM_X),
            grid(sys::ATTR_MAX_GRID_DIM_Y),
            grid(sys::ATTR_MAX_GRID_DIM_Z),
        ];
        let mut properties = device_properties(d, dev, ordinal, &name, &arch, major, minor);
        // 1 where signal and wait commands on CUDA events run as stream
        // memory operations (else host functions and host-held waits).
        properties["StreamMemoryOperations"] = json!(mem_ops as i64);
        Ok(Gpu {
            d,
            ordinal,
            dev,
            name,
            arch,
            mem_ops,
            max_grid,
            ctx: OnceLock::new(),
            ctx_lock: Mutex::new(()),
            default_queue: OnceLock::new(),
            queues: Mutex::new(Vec::new()),
            staging: Mutex::new(None),
            properties,
            pid: crate::process::id(),
        })
    }

    fn ctx(&self) -> Result<CUcontext> {
        if let Some(c) = self.ctx.get() {
            return Ok(c.0);
        }
        let _g = lock(&self.ctx_lock);
        if let Some(c) = self.ctx.get() {
            return Ok(c.0);
        }
        let c = r::primary_ctx_retain(self.d, self.dev)?;
        let _ = self.ctx.set(Handle(c));
        // Pinned host memory is allocated now, while the device is idle:
        // allocating it later synchronises the device, stalling behind
        // whatever is queued. (Failures leave the lazy paths to retry.)
        if r::ctx_set_current(self.d, c).is_ok() {
            if let Err(e) = sync::reserve_slots(self) {
                log::warn!(
                    "{}: cannot reserve event memory: {}",
                    self.label(),
                    e.message
                );
            }
            let mut staging = lock(&self.staging);
            if staging.is_none() {
                *staging = memory::Staging::new(self).ok();
            }
        }
        Ok(c)
    }

    /// Refuses every call in a process forked after this GPU was opened:
    /// CUDA does not survive `fork`.
    pub fn check_process(&self) -> Result<()> {
        if crate::process::id() != self.pid {
            return Err(Error::new(
                Status::InvalidDevice,
                format!("{}: CUDA cannot be used in a process forked after CUDA was initialised (use the 'spawn' start method)", self.label()),
            ));
        }
        Ok(())
    }

    /// Makes this GPU's primary context current on the calling thread until
    /// the guard drops. A thread with no current context keeps this one (as
    /// the CUDA runtime does); another library's context is restored.
    pub fn bind(&self) -> Result<CtxGuard> {
        self.check_process()?;
        // Reading is cheaper than setting, and the launch path binds on
        // every call. Read before `ctx()`, which makes the context current
        // when it first creates it.
        let current = r::ctx_get_current(self.d);
        let c = self.ctx()?;
        if current == c {
            return Ok(CtxGuard {
                d: self.d,
                restore: None,
            });
        }
        r::ctx_set_current(self.d, c)?;
        Ok(CtxGuard {
            d: self.d,
            restore: (!current.is_null()).then_some(Handle(current)),
        })
    }

    /// The queue of the device's own (non-blocking) stream, which
    /// `run(stream=None)` and buffer copies use; never the legacy NULL stream.
    pub fn default_queue(self: &Arc<Self>) -> Result<Arc<queue::StreamQueue>> {
        if let Some(q) = self.default_queue.get() {
            return Ok(q.clone());
        }
        let _g = lock(&self.ctx_lock);
        if let Some(q) = self.default_queue.get() {
            return Ok(q.clone());
        }
        let _ctx = self.bind()?;
        let s = r::stream_create(self.d)?;
        let q = queue::StreamQueue::new(self, Handle(s), false);
        self.register_queue(&q);
        let _ = self.default_queue.set(q.clone());
        Ok(q)
    }

    pub(crate) fn register_queue(&self, q: &Arc<queue::StreamQueue>) {
        let mut queues = lock(&self.queues);
        queues.retain(|w| w.strong_count() > 0);
        queues.push(Arc::downgrade(q));
    }

    pub fn default_stream(self: &Arc<Self>) -> Result<CUstream> {
        Ok(self.default_queue()?.raw())
    }

    pub fn label(&self) -> String {
        format!("cuda:{} '{}'", self.ordinal, self.name)
    }
}

fn device_properties(
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
    let db = crate::database::lookup(arch);
    let db_mem = |ty: &str, key: &str| -> Option<Value> {
        let root = db.as_ref()?.root().clone();
        root.get("MemorySubsystem")?
            .get("MemoryTypes")?
            .as_array()?
            .iter()
            .find(|m| m["Type"] == ty)?
            .get(key)
            .cloned()
    };
    let mut l1 = json!({"Type": "L1", "Scope": "unit"});
    if let Some(s) = db_mem("L1", "Size") {
        l1["Size"] = s;
    }
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
    if let Some(t) = db_mem("Device", "Technology") {
        device["Technology"] = t;
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

    fn load_library(&self, source: &hal::LibrarySource) -> Result<Arc<dyn hal::Library>> {
        Ok(Arc::new(library::CudaLibrary::load(&self.gpu, source)?))
    }

    fn create_event(&self, _event_type: EventType) -> Result<Arc<dyn hal::Event>> {
        // One timeline (mapped pinned memory) serves all three event types.
        Ok(Arc::new(sync::CudaEvent::new(&self.gpu)?))
    }

    fn create_stream(&self) -> Result<Arc<dyn hal::Stream>> {
        Ok(Arc::new(sync::CudaStream::new(&self.gpu)?))
    }

    fn encode(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        Ok(Arc::new(schedule::CudaSchedule::encode(&self.gpu, ops)?))
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
        let queues: Vec<_> = lock(&self.gpu.queues)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for q in queues {
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

    fn owns_address(&self, address: u64) -> bool {
        r::pointer_device_ordinal(self.gpu.d, address) == Some(self.gpu.ordinal)
    }

    fn native_ordinal(&self) -> i64 {
        self.gpu.ordinal as i64
    }
}

/// The calling thread's context before `Gpu::bind`, put back on drop.
#[must_use = "the context stays bound only while the guard lives"]
pub(crate) struct CtxGuard {
    d: &'static Driver,
    restore: Option<Handle>,
}

impl Drop for CtxGuard {
    fn drop(&mut self) {
        if let Some(c) = self.restore {
            // A context that was current on this thread before.
            let _ = r::ctx_set_current(self.d, c.0);
        }
    }
}
