//! The HIP runtime: AMD GPUs through HIP (ROCm), on the CUDA backend's
//! template (HIP's module, stream, event and graph API mirrors the CUDA
//! driver API).
//!
//! Layers, bottom up: `sys` (raw types and function tables, opened with
//! `libloading` at run time, never linked; `NEXUS_HIP_LIBRARY` and
//! `NEXUS_HIPRTC` override the paths), `result` (every call checked, errors
//! named by `hipGetErrorName`), `safe` (typed RAII handles), and the backend
//! above them: devices (a device is made current per call, HIP has no
//! contexts to retain), buffers with a pinned staging pipeline, modules
//! (code objects, offload bundles and fat binaries, `.hip` sources through
//! hiprtc for the device's own gfx target), schedules replayed as HIP
//! graphs, and timeline events in mapped pinned memory (signalled by
//! `hipStreamWriteValue64`, awaited by `hipStreamWaitValue64` on queued
//! signals where the device supports them; other waits are held on the
//! host, see `common/queue.rs`).
//!
//! Nothing of this has run on AMD hardware yet: it is tested on CI with
//! the real ROCm 5 library and no device, and on an NVIDIA GPU through a
//! HIP-on-CUDA test double (`tests/support/hip_on_cuda.c`).

mod device;
mod ffi;
mod library;
mod memory;
mod metadata;
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
use ffi::safe::{self, Context, CurrentDevice};
use ffi::sys;
use stream::StreamQueue;
use sys::{hipStream_t, Hip};

pub struct HipApi;

impl HipApi {
    pub fn new() -> Self {
        HipApi
    }
}

impl Default for HipApi {
    fn default() -> Self {
        Self::new()
    }
}

/// HIP, initialised once (`hipInit`); `Err` when the library is absent or
/// fails to initialise (it does with no device: hipErrorNoDevice or
/// hipErrorInvalidDevice).
fn initialised() -> Result<&'static Hip> {
    static INIT: OnceLock<std::result::Result<(), Error>> = OnceLock::new();
    let d = sys::hip().map_err(|e| {
        Error::new(
            Status::NotSupported,
            format!("HIP library not available: {e}"),
        )
    })?;
    INIT.get_or_init(|| {
        safe::init(d).map_err(|e| {
            // With no GPU, ROCm's hipInit says hipErrorInvalidDevice while
            // the device count says what is meant: hipErrorNoDevice.
            match r::device_count(d) {
                Err(no_device) => no_device,
                Ok(_) => e,
            }
        })
    })
    .clone()?;
    Ok(d)
}

impl hal::Api for HipApi {
    fn name(&self) -> &'static str {
        "hip"
    }

    fn properties(&self) -> Value {
        match initialised() {
            Ok(d) => {
                let v = r::runtime_version(d);
                json!({
                    "Name": "hip",
                    "Vendor": "AMD",
                    "RuntimeVersion": version_string(v),
                    "RuntimeVersionCode": v,
                    "DriverVersionCode": r::driver_version(d).unwrap_or(0),
                })
            }
            Err(e) => json!({"Name": "hip", "Vendor": "AMD", "Status": e.message}),
        }
    }

    fn devices(&self) -> Result<Vec<Arc<dyn hal::Device>>> {
        let d = match initialised() {
            Ok(d) => d,
            Err(e) => {
                log::info!("HIP runtime has no devices: {}", e.message);
                return Ok(Vec::new());
            }
        };
        let n = match r::device_count(d) {
            Ok(n) => n,
            Err(e) => {
                log::info!("HIP runtime has no devices: {}", e.message);
                return Ok(Vec::new());
            }
        };
        let mut out: Vec<Arc<dyn hal::Device>> = Vec::new();
        for ordinal in 0..n {
            match Gpu::open(d, ordinal) {
                Ok(g) => out.push(Arc::new(device::HipDevice { gpu: Arc::new(g) })),
                Err(e) => log::warn!("HIP device {ordinal} skipped: {}", e.message),
            }
        }
        Ok(out)
    }
}

/// `HIP_VERSION` as "major.minor.patch".
fn version_string(v: i32) -> String {
    format!("{}.{}.{}", v / 10_000_000, (v / 100_000) % 100, v % 100_000)
}

/// One GPU: the device made current for its calls (created on first use)
/// and the shared resources of the device (default stream, staging).
pub(crate) struct Gpu {
    pub d: &'static Hip,
    pub ordinal: i32,
    pub name: String,
    /// The gfx target ("gfx90a"), which hiprtc compiles for.
    pub arch: String,
    /// Stream memory operations (`hipStreamWaitValue64` ...) usable.
    pub mem_ops: bool,
    /// Groups per axis a launch may have.
    pub max_grid: [u32; 3],
    ctx: OnceLock<Context>,
    ctx_lock: Mutex<()>,
    default_queue: OnceLock<Arc<StreamQueue>>,
    /// Every stream's queue, for `reclaim`.
    queues: Registry<StreamQueue>,
    pub(crate) staging: Mutex<Option<memory::Staging>>,
    properties: Value,
}

impl Gpu {
    fn open(d: &'static Hip, ordinal: i32) -> Result<Gpu> {
        let dev = r::device_get(d, ordinal)?;
        let attr = |a| r::device_attribute(d, ordinal, a).ok();
        let name = r::device_name(d, dev).unwrap_or_else(|_| format!("HIP device {ordinal}"));
        let arch = r::device_arch(d, ordinal).unwrap_or_else(|e| {
            log::warn!("HIP device {ordinal}: {}", e.message);
            "gfx000".into()
        });
        // `NEXUS_HIP_STREAM_MEMOPS=0` turns them off (signals then run as
        // stream callbacks and every wait is held on the host): ROCm
        // documents the waits for signal memory (hipMallocSignalMemory),
        // nexus uses mapped fine-grained host memory, which is untested on
        // AMD hardware.
        let allowed = std::env::var("NEXUS_HIP_STREAM_MEMOPS").map_or(true, |v| v.trim() != "0");
        let mem_ops = allowed
            && d.hipStreamWaitValue64.is_some()
            && d.hipStreamWriteValue64.is_some()
            && attr(sys::ATTR_CAN_USE_STREAM_WAIT_VALUE).unwrap_or(0) != 0;
        let grid = |a| {
            attr(a)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| v > 0)
                .unwrap_or(65535)
        };
        let max_grid = [
            grid(sys::ATTR_MAX_GRID_DIM_X),
            grid(sys::ATTR_MAX_GRID_DIM_Y),
            grid(sys::ATTR_MAX_GRID_DIM_Z),
        ];
        let mut properties = device::device_properties(d, dev, ordinal, &name, &arch);
        // 1 where signal and wait commands on HIP events run as stream
        // memory operations (else host functions and host-held waits).
        properties["StreamMemoryOperations"] = json!(mem_ops as i64);
        Ok(Gpu {
            d,
            ordinal,
            name,
            arch,
            mem_ops,
            max_grid,
            ctx: OnceLock::new(),
            ctx_lock: Mutex::new(()),
            default_queue: OnceLock::new(),
            queues: Registry::default(),
            staging: Mutex::new(None),
            properties,
        })
    }

    /// The device as a place to make objects, prepared on first use.
    pub fn context(&self) -> Result<Context> {
        self.check_process()?;
        if let Some(c) = self.ctx.get() {
            return Ok(*c);
        }
        let _g = lock(&self.ctx_lock);
        if let Some(c) = self.ctx.get() {
            return Ok(*c);
        }
        let c = Context::new(self.d, self.ordinal);
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

    /// Refuses every call in a process forked after HIP was initialised:
    /// HIP does not survive `fork`.
    pub fn check_process(&self) -> Result<()> {
        if !safe::same_process() {
            return Err(Error::new(
                Status::InvalidDevice,
                format!("{}: HIP cannot be used in a process forked after HIP was initialised (use the 'spawn' start method)", self.label()),
            ));
        }
        Ok(())
    }

    /// Makes this GPU current on the calling thread until the guard drops
    /// (see `Context::bind`).
    pub fn bind(&self) -> Result<CurrentDevice> {
        self.context()?.bind()
    }

    /// The queue of the device's own (non-blocking) stream, which
    /// `run(stream=None)` and buffer copies use; never HIP's null stream.
    pub fn default_queue(self: &Arc<Self>) -> Result<Arc<StreamQueue>> {
        if let Some(q) = self.default_queue.get() {
            return Ok(q.clone());
        }
        // Prepared before the lock: `context` takes it too.
        let ctx = self.context()?;
        let _g = lock(&self.ctx_lock);
        if let Some(q) = self.default_queue.get() {
            return Ok(q.clone());
        }
        let q = stream::new_queue(&ctx)?;
        self.register_queue(&q);
        let _ = self.default_queue.set(q.clone());
        Ok(q)
    }

    pub(crate) fn register_queue(&self, q: &Arc<StreamQueue>) {
        self.queues.add(q);
    }

    pub fn default_stream(self: &Arc<Self>) -> Result<hipStream_t> {
        Ok(self.default_queue()?.stream().raw())
    }

    pub fn label(&self) -> String {
        format!("hip:{} '{}'", self.ordinal, self.name)
    }
}
