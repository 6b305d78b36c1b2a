//! The CUDA runtime: NVIDIA GPUs through the driver API.
//!
//! Layers, bottom up: `sys` (raw types and function tables, opened with
//! `libloading` at run time, never linked), `result` (every call checked,
//! errors named by `cuGetErrorName`), and the safe backend above them:
//! devices on their primary contexts, buffers with a pinned staging
//! pipeline, modules (PTX, cubin, fatbin, CUDA C++ through NVRTC),
//! schedules replayed as CUDA graphs, and timeline events in mapped pinned
//! memory (signalled by stream writes, awaited by stream memory waits on
//! queued signals; other waits are held on the host, see `common/queue.rs`).

mod clock;
mod device;
mod ffi;
mod library;
mod memory;
mod schedule;
mod stream;
mod sync;

use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use crate::backends::common::lock;
use crate::backends::common::Registry;
use crate::error::{Error, Result, Status};
use crate::hal;
use ffi::result as r;
use ffi::safe::{self, Context, CurrentContext};
use ffi::sys;
use stream::StreamQueue;
use sys::{CUdevice, CUstream, Driver};

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
    INIT.get_or_init(|| safe::init(d)).clone()?;
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
                Ok(g) => out.push(Arc::new(device::CudaDevice { gpu: Arc::new(g) })),
                Err(e) => log::warn!("CUDA device {ordinal} skipped: {}", e.message),
            }
        }
        Ok(out)
    }
}

/// One GPU: its primary context (retained on first use) and the shared
/// resources of the device (default stream, staging buffers).
pub(crate) struct Gpu {
    pub d: &'static Driver,
    pub ordinal: i32,
    pub dev: CUdevice,
    pub name: String,
    pub arch: String,
    /// The compute capability's major number (9 on Hopper).
    pub compute_major: i32,
    /// Stream memory operations (`cuStreamWaitValue64` ...) usable.
    pub mem_ops: bool,
    /// Groups per axis a launch may have.
    pub max_grid: [u32; 3],
    ctx: OnceLock<Context>,
    ctx_lock: Mutex<()>,
    default_queue: OnceLock<Arc<StreamQueue>>,
    /// Every stream's queue, for `reclaim`.
    queues: Registry<StreamQueue>,
    pub(crate) staging: Mutex<Option<memory::Staging>>,
    /// Ordinals of the GPUs peer access was set up with (`connect_peer`).
    peers: Mutex<Vec<i32>>,
    /// The timestamp kernel of profiled schedules, loaded on first use.
    stamp: OnceLock<std::result::Result<clock::StampKernel, Error>>,
    properties: Value,
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
        let mut properties = device::device_properties(d, dev, ordinal, &name, &arch, major, minor);
        // 1 where signal and wait commands on CUDA events run as stream
        // memory operations (else host functions and host-held waits).
        properties["StreamMemoryOperations"] = json!(mem_ops as i64);
        Ok(Gpu {
            d,
            ordinal,
            dev,
            name,
            arch,
            compute_major: major,
            mem_ops,
            max_grid,
            ctx: OnceLock::new(),
            ctx_lock: Mutex::new(()),
            default_queue: OnceLock::new(),
            queues: Registry::default(),
            staging: Mutex::new(None),
            peers: Mutex::new(Vec::new()),
            stamp: OnceLock::new(),
            properties,
        })
    }

    /// Prepares copies between this GPU and the CUDA device `ordinal`:
    /// peer access both ways where the hardware allows it, once per pair.
    /// Copies work either way (unified addressing); without peer access the
    /// driver stages them through the host.
    pub fn connect_peer(&self, ordinal: i32) -> Result<()> {
        if lock(&self.peers).contains(&ordinal) {
            return Ok(());
        }
        let me = self.context()?;
        let peer_dev = r::device_get(self.d, ordinal)?;
        let peer = Context::retain_primary(self.d, peer_dev)?;
        // Peer access is an optimisation: where enabling it fails (too many
        // peers, unsupported topology) the driver stages copies instead.
        let enable = |from: &Context, to: &Context, can: bool| {
            if let Err(e) = can.then(|| from.enable_peer_access(to)).transpose() {
                log::warn!(
                    "{}: peer access with CUDA device {ordinal} not enabled, copies are staged: {}",
                    self.label(),
                    e.message
                );
            }
        };
        enable(
            &me,
            &peer,
            r::device_can_access_peer(self.d, self.dev, peer_dev),
        );
        enable(
            &peer,
            &me,
            r::device_can_access_peer(self.d, peer_dev, self.dev),
        );
        lock(&self.peers).push(ordinal);
        Ok(())
    }

    /// Whether CUDA graphs of this GPU may hold copies and fills of these
    /// addresses: device memory only (graph memory nodes do not take
    /// pageable host memory, and a step of its own costs the same there).
    pub fn graphs_hold(&self, addresses: &[u64]) -> bool {
        addresses
            .iter()
            .all(|&a| r::pointer_memory_type(self.d, a) == Some(sys::MEMORYTYPE_DEVICE))
    }

    /// The kernel that stamps profiled schedules' timestamps (loaded once;
    /// a failure to load it is kept and reported to every profiled schedule).
    pub(crate) fn stamp_kernel(&self) -> Result<&clock::StampKernel> {
        self.stamp
            .get_or_init(|| clock::StampKernel::load(self))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The primary context, retained on first use.
    pub fn context(&self) -> Result<Context> {
        self.check_process()?;
        if let Some(c) = self.ctx.get() {
            return Ok(*c);
        }
        let _g = lock(&self.ctx_lock);
        if let Some(c) = self.ctx.get() {
            return Ok(*c);
        }
        let c = Context::retain_primary(self.d, self.dev)?;
        let _ = self.ctx.set(c);
        self.prepare(&c);
        Ok(c)
    }

    /// Allocates the device's pinned host memory (event values, staging)
    /// while the new context is idle: allocating it later synchronises the
    /// device, stalling behind whatever is queued. Failures leave the lazy
    /// paths (the event word pool, `memory::staging`) to try again.
    fn prepare(&self, ctx: &Context) {
        if let Err(e) = sync::reserve_slots(ctx) {
            log::warn!(
                "{}: cannot reserve event memory: {}",
                self.label(),
                e.message
            );
        }
        let mut staging = lock(&self.staging);
        if staging.is_none() {
            *staging = memory::Staging::new(ctx).ok();
        }
    }

    /// Refuses every call in a process forked after CUDA was initialised:
    /// CUDA does not survive `fork`.
    pub fn check_process(&self) -> Result<()> {
        if !safe::same_process() {
            return Err(Error::new(
                Status::InvalidDevice,
                format!("{}: CUDA cannot be used in a process forked after CUDA was initialised (use the 'spawn' start method)", self.label()),
            ));
        }
        Ok(())
    }

    /// Makes this GPU's primary context current on the calling thread until
    /// the guard drops (see `Context::bind`).
    pub fn bind(&self) -> Result<CurrentContext> {
        self.context()?.bind()
    }

    /// The queue of the device's own (non-blocking) stream, which
    /// `run(stream=None)` and buffer copies use; never the legacy NULL stream.
    pub fn default_queue(self: &Arc<Self>) -> Result<Arc<StreamQueue>> {
        if let Some(q) = self.default_queue.get() {
            return Ok(q.clone());
        }
        let _g = lock(&self.ctx_lock);
        if let Some(q) = self.default_queue.get() {
            return Ok(q.clone());
        }
        let q = stream::new_queue(&self.context()?)?;
        self.register_queue(&q);
        let _ = self.default_queue.set(q.clone());
        Ok(q)
    }

    pub(crate) fn register_queue(&self, q: &Arc<StreamQueue>) {
        self.queues.add(q);
    }

    pub fn default_stream(self: &Arc<Self>) -> Result<CUstream> {
        Ok(self.default_queue()?.stream().raw())
    }

    pub fn label(&self) -> String {
        format!("cuda:{} '{}'", self.ordinal, self.name)
    }
}
