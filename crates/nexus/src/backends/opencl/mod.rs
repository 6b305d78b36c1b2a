//! The OpenCL runtime: every device of every OpenCL platform, through the
//! ICD loader opened at run time (`ffi/`).
//!
//! Layers, bottom up: `ffi::sys` (the function table, opened with
//! `libloading`, never linked), `ffi::result` (checked calls and RAII
//! handles), and the backend above them: devices with one context each
//! (`device.rs`), buffers that use host memory in place on CPU devices
//! (`memory.rs`), programs from OpenCL C, SPIR-V or binaries with a
//! persistent binary cache (`library.rs`), schedules re-enqueued per run
//! on in-order queues (`schedule.rs`), and host timelines for events with
//! user events for waits (`sync.rs`).
//!
//! # Locks
//!
//! This runtime's locks, in the crate-wide order documented in
//! `backends/common/mod.rs` (a thread holding one may take only those
//! further down):
//!
//! 2. Device setup: `Dev::setup` (creating the context, the default and
//!    transfer queues).
//! 3. Stream queues: `StreamQueue::state`, held while enqueueing commands;
//!    never taken by an OpenCL callback.
//! 4. Per-resource state: `Timeline::state` (never held while calling
//!    OpenCL or a continuation), `Done::tails` then `Done::failures`,
//!    `Dev::streams`, `Dev::builtin`, the buffer registry `memory::MEMS`.
//!
//! OpenCL calls callbacks (`on_complete`, used for host steps and for
//! dropping a stream) on its own threads, possibly while another of our
//! threads is inside an OpenCL call: callbacks take only level 4 locks,
//! one at a time, and call continuations and `clSetUserEventStatus` with
//! no lock held.

mod device;
mod ffi;
mod library;
mod memory;
mod schedule;
mod sync;

use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use crate::backends::common::lock;
use crate::backends::common::Registry;
use crate::error::{Error, Result, Status};
use crate::hal;
use ffi::result::{self as r, Context, Queue};
use ffi::sys::{self, cl_device_id, cl_platform_id, Api};

pub struct OpenClApi;

impl OpenClApi {
    pub fn new() -> Self {
        OpenClApi
    }
}

impl Default for OpenClApi {
    fn default() -> Self {
        Self::new()
    }
}

impl hal::Api for OpenClApi {
    fn name(&self) -> &'static str {
        "opencl"
    }

    fn properties(&self) -> Value {
        match r::api() {
            Ok(a) => {
                let platforms: Vec<Value> = r::platforms(a)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        json!({
                            "Name": r::platform_string(a, p, sys::CL_PLATFORM_NAME).unwrap_or_default(),
                            "Vendor": r::platform_string(a, p, sys::CL_PLATFORM_VENDOR).unwrap_or_default(),
                            "Version": r::platform_string(a, p, sys::CL_PLATFORM_VERSION).unwrap_or_default(),
                        })
                    })
                    .collect();
                json!({"Name": "opencl", "Platforms": platforms})
            }
            Err(e) => {
                json!({"Name": "opencl", "Status": format!("OpenCL loader not available: {e}")})
            }
        }
    }

    fn devices(&self) -> Result<Vec<Arc<dyn hal::Device>>> {
        let a = match r::api() {
            Ok(a) => a,
            Err(e) => {
                log::info!("OpenCL runtime has no devices: loader not available: {e}");
                return Ok(Vec::new());
            }
        };
        if !r::same_process() {
            log::info!("OpenCL runtime has no devices in a process forked after OpenCL was opened");
            return Ok(Vec::new());
        }
        let platforms = match r::platforms(a) {
            Ok(p) => p,
            Err(e) => {
                log::info!("OpenCL runtime has no devices: {}", e.message);
                return Ok(Vec::new());
            }
        };
        let mut found = Vec::new();
        for p in platforms {
            match r::devices(a, p) {
                Ok(ids) => found.extend(ids.into_iter().map(|id| (p, id))),
                Err(e) => log::warn!("OpenCL platform skipped: {}", e.message),
            }
        }
        // GPUs first, in the order the core lists them, so that the index a
        // device carries in its label is the index `get_device` takes.
        found.sort_by_key(|&(_, id)| {
            let ty = r::device_u64(a, id, sys::CL_DEVICE_TYPE).unwrap_or(0);
            ty & sys::CL_DEVICE_TYPE_CPU != 0
        });
        let out = found
            .into_iter()
            .enumerate()
            .map(|(index, (p, id))| {
                let dev = Dev::open(a, p, id, index);
                Arc::new(device::OclDevice { dev: Arc::new(dev) }) as Arc<dyn hal::Device>
            })
            .collect();
        Ok(out)
    }
}

/// A raw OpenCL id (platform, device) that may cross threads: ids are
/// plain handles the implementation owns for the life of the process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Id(pub *mut std::ffi::c_void);
// SAFETY: an opaque id; OpenCL's objects are thread-safe.
unsafe impl Send for Id {}
// SAFETY: as for Send.
unsafe impl Sync for Id {}

/// What a device's context makes possible, created on first use.
pub(crate) struct Setup {
    pub ctx: Context,
    /// Buffers live in host memory the device uses in place (CPU devices
    /// whose map of a host-pointer buffer returns that pointer).
    pub zero_copy: bool,
}

/// One OpenCL device: its ids, properties and lazily created context.
pub(crate) struct Dev {
    pub a: &'static Api,
    pub platform: Id,
    pub id: Id,
    pub index: usize,
    pub name: String,
    pub is_cpu: bool,
    pub driver_version: String,
    pub platform_version: String,
    pub max_group: u64,
    pub max_item: [u64; 3],
    pub local_mem: u64,
    pub max_alloc: u64,
    /// Bytes a sub-buffer's offset must be a multiple of.
    pub base_align: u64,
    pub il_version: String,
    pub properties: Value,
    setup: OnceLock<Setup>,
    setup_lock: Mutex<()>,
    default_queue: OnceLock<Arc<sync::StreamQueue>>,
    transfer: OnceLock<Queue>,
    /// Every stream's queue, for `reclaim`.
    pub(crate) streams: Registry<sync::StreamQueue>,
    pub(crate) builtin: Mutex<Option<Arc<library::Built>>>,
}

impl Dev {
    fn open(a: &'static Api, platform: cl_platform_id, id: cl_device_id, index: usize) -> Dev {
        let s = |p| r::device_string(a, id, p).unwrap_or_default();
        let u = |p| r::device_u64(a, id, p).ok();
        let ty = u(sys::CL_DEVICE_TYPE).unwrap_or(0);
        let is_cpu = ty & sys::CL_DEVICE_TYPE_CPU != 0;
        let name = s(sys::CL_DEVICE_NAME);
        let name = if name.is_empty() {
            format!("OpenCL device {index}")
        } else {
            name
        };
        let sizes = r::device_sizes(a, id, sys::CL_DEVICE_MAX_WORK_ITEM_SIZES).unwrap_or_default();
        let max_item = std::array::from_fn(|i| sizes.get(i).copied().unwrap_or(1));
        let platform_version =
            r::platform_string(a, platform, sys::CL_PLATFORM_VERSION).unwrap_or_default();
        let properties = device::device_properties(a, platform, id, index, &name, ty);
        Dev {
            a,
            platform: Id(platform),
            id: Id(id),
            index,
            is_cpu,
            driver_version: s(sys::CL_DRIVER_VERSION),
            platform_version,
            max_group: u(sys::CL_DEVICE_MAX_WORK_GROUP_SIZE).unwrap_or(1),
            max_item,
            local_mem: u(sys::CL_DEVICE_LOCAL_MEM_SIZE).unwrap_or(0),
            max_alloc: u(sys::CL_DEVICE_MAX_MEM_ALLOC_SIZE).unwrap_or(u64::MAX),
            base_align: u(sys::CL_DEVICE_MEM_BASE_ADDR_ALIGN).map_or(128, |bits| (bits / 8).max(1)),
            il_version: s(sys::CL_DEVICE_IL_VERSION),
            name,
            properties,
            setup: OnceLock::new(),
            setup_lock: Mutex::new(()),
            default_queue: OnceLock::new(),
            transfer: OnceLock::new(),
            streams: Registry::default(),
            builtin: Mutex::new(None),
        }
    }

    pub fn label(&self) -> String {
        format!("opencl:{} '{}'", self.index, self.name)
    }

    /// Refuses every call in a process forked after OpenCL was opened: the
    /// implementation's threads are not there, so calls could hang.
    pub fn check_process(&self) -> Result<()> {
        if !r::same_process() {
            return Err(Error::new(
                Status::InvalidDevice,
                format!("{}: OpenCL cannot be used in a process forked after OpenCL was opened (use the 'spawn' start method)", self.label()),
            ));
        }
        Ok(())
    }

    /// The context (created on first use) and what it allows.
    pub fn setup(&self) -> Result<&Setup> {
        self.check_process()?;
        if let Some(s) = self.setup.get() {
            return Ok(s);
        }
        let _g = lock(&self.setup_lock);
        if let Some(s) = self.setup.get() {
            return Ok(s);
        }
        let ctx = Context::new(self.a, self.platform.0, self.id.0).map_err(|mut e| {
            e.message = format!("{}: {}", self.label(), e.message);
            e
        })?;
        // The vendor driver sets up its exit handlers by now; ours runs first.
        crate::process::watch_exit_after_driver_opened(crate::process::ChildExit::RunTeardown);
        let zero_copy = self.is_cpu && memory::probe_zero_copy(self, &ctx);
        let _ = self.setup.set(Setup { ctx, zero_copy });
        self.setup
            .get()
            .ok_or_else(|| Error::new(Status::DriverError, "OpenCL context setup failed"))
    }

    pub fn ctx(&self) -> Result<&Context> {
        Ok(&self.setup()?.ctx)
    }

    /// The queue of `run(stream=None)`.
    pub fn default_queue(self: &Arc<Self>) -> Result<Arc<sync::StreamQueue>> {
        if let Some(q) = self.default_queue.get() {
            return Ok(q.clone());
        }
        let q = sync::StreamQueue::new(self)?;
        let _g = lock(&self.setup_lock);
        if let Some(existing) = self.default_queue.get() {
            return Ok(existing.clone());
        }
        let _ = self.default_queue.set(q.clone());
        Ok(q)
    }

    /// A queue only host copies use (so a held stream never delays them).
    pub fn transfer_queue(&self) -> Result<&Queue> {
        if let Some(q) = self.transfer.get() {
            return Ok(q);
        }
        let q = Queue::new(self.a, self.ctx()?, self.id.0, false)?;
        let _g = lock(&self.setup_lock);
        if self.transfer.get().is_none() {
            let _ = self.transfer.set(q);
        }
        self.transfer
            .get()
            .ok_or_else(|| Error::new(Status::DriverError, "OpenCL transfer queue setup failed"))
    }

    pub(crate) fn register_stream(&self, q: &Arc<sync::StreamQueue>) {
        self.streams.add(q);
    }
}
