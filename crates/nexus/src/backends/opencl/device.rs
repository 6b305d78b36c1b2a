//! An OpenCL device as nexus sees it: its live properties (from
//! `clGetDeviceInfo`) and the `hal::Device` entry points.

use std::sync::Arc;

use serde_json::{json, Value};

use super::ffi::result as r;
use super::ffi::sys::{self, cl_device_id, cl_platform_id, Api};
use super::{library, memory, schedule, sync, Dev};
use crate::error::Result;
use crate::hal;
use crate::types::EventType;

/// The architecture the device database knows the device by: the host's
/// for CPU devices, `sm_XY` where NVIDIA reports its compute capability,
/// else the device's name (AMD reports `gfx90a` and the like there).
fn architecture(a: &Api, id: cl_device_id, ty: u64, name: &str, extensions: &str) -> String {
    if ty & sys::CL_DEVICE_TYPE_CPU != 0 {
        return std::env::consts::ARCH.to_string();
    }
    if extensions.contains("cl_nv_device_attribute_query") {
        let major = r::device_u64(a, id, sys::CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV);
        let minor = r::device_u64(a, id, sys::CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV);
        if let (Ok(major), Ok(minor)) = (major, minor) {
            return format!("sm_{major}{minor}");
        }
    }
    name.split_whitespace().next().unwrap_or(name).to_string()
}

pub(super) fn device_properties(
    a: &Api,
    platform: cl_platform_id,
    id: cl_device_id,
    index: usize,
    name: &str,
    ty: u64,
) -> Value {
    let s = |p| r::device_string(a, id, p).ok();
    let u = |p| r::device_u64(a, id, p).ok();
    let extensions = s(sys::CL_DEVICE_EXTENSIONS).unwrap_or_default();
    let type_name = if ty & sys::CL_DEVICE_TYPE_CPU != 0 {
        "cpu"
    } else {
        "gpu"
    };
    let device_type = if ty & sys::CL_DEVICE_TYPE_CPU != 0 {
        "cpu"
    } else if ty & sys::CL_DEVICE_TYPE_GPU != 0 {
        "gpu"
    } else if ty & sys::CL_DEVICE_TYPE_ACCELERATOR != 0 {
        "accelerator"
    } else {
        "custom"
    };
    let global = u(sys::CL_DEVICE_GLOBAL_MEM_SIZE);
    let local = u(sys::CL_DEVICE_LOCAL_MEM_SIZE);
    let cache = u(sys::CL_DEVICE_GLOBAL_MEM_CACHE_SIZE).filter(|&c| c > 0);
    let line = u(sys::CL_DEVICE_GLOBAL_MEM_CACHELINE_SIZE).filter(|&c| c > 0);
    let mut memory_types = vec![json!({"Type": "L1", "Scope": "unit"})];
    if let Some(c) = cache {
        let mut l2 = json!({"Type": "L2", "Scope": "device", "Size": c});
        if let Some(l) = line {
            l2["LineSize"] = json!(l);
        }
        memory_types.push(l2);
    }
    let mut shared = json!({"Type": "Shared", "Scope": "group"});
    if let Some(l) = local {
        shared["Size"] = json!(l);
    }
    memory_types.push(shared);
    let mut device =
        json!({"Type": "Device", "Scope": if type_name == "cpu" { "system" } else { "device" }});
    if let Some(g) = global {
        device["Size"] = json!(g);
    }
    memory_types.push(device);
    let supported: Vec<Value> = memory_types.iter().map(|m| m["Type"].clone()).collect();
    let arch = architecture(a, id, ty, name, &extensions);
    let mut p = json!({
        "Name": name,
        "Vendor": s(sys::CL_DEVICE_VENDOR).unwrap_or_default(),
        "Type": type_name,
        "DeviceType": device_type,
        "Architecture": arch,
        "Runtime": "opencl",
        "ID": index,
        "Version": s(sys::CL_DEVICE_VERSION).unwrap_or_default(),
        "DriverVersion": s(sys::CL_DRIVER_VERSION).unwrap_or_default(),
        "OpenCLCVersion": s(sys::CL_DEVICE_OPENCL_C_VERSION).unwrap_or_default(),
        "Profile": s(sys::CL_DEVICE_PROFILE).unwrap_or_default(),
        "Platform": r::platform_string(a, platform, sys::CL_PLATFORM_NAME).unwrap_or_default(),
        "PlatformVersion": r::platform_string(a, platform, sys::CL_PLATFORM_VERSION).unwrap_or_default(),
        "Extensions": extensions.split_whitespace().collect::<Vec<_>>(),
        "ILVersion": s(sys::CL_DEVICE_IL_VERSION).unwrap_or_default(),
        "MemorySubsystem": {"SupportedMemoryTypes": supported, "MemoryTypes": memory_types},
    });
    let mut set = |k: &str, v: Option<u64>| {
        if let Some(v) = v {
            p[k] = json!(v);
        }
    };
    set("ComputeUnits", u(sys::CL_DEVICE_MAX_COMPUTE_UNITS));
    set("ClockMHz", u(sys::CL_DEVICE_MAX_CLOCK_FREQUENCY));
    set("MemorySize", global);
    set("MaxGroupMemory", local);
    set("MaxThreadsPerGroup", u(sys::CL_DEVICE_MAX_WORK_GROUP_SIZE));
    set("MaxAllocationSize", u(sys::CL_DEVICE_MAX_MEM_ALLOC_SIZE));
    set("MaxParameterSize", u(sys::CL_DEVICE_MAX_PARAMETER_SIZE));
    set(
        "ConstantMemorySize",
        u(sys::CL_DEVICE_MAX_CONSTANT_BUFFER_SIZE),
    );
    set("AddressBits", u(sys::CL_DEVICE_ADDRESS_BITS));
    set("L2Size", cache);
    if extensions.contains("cl_nv_device_attribute_query") {
        set("WarpSize", u(sys::CL_DEVICE_WARP_SIZE_NV));
    }
    if let Ok(sizes) = r::device_sizes(a, id, sys::CL_DEVICE_MAX_WORK_ITEM_SIZES) {
        p["MaxGroupSize"] = json!(sizes);
    }
    let mut core = json!({"UnitName": "Compute Unit"});
    if let Some(c) = u(sys::CL_DEVICE_MAX_COMPUTE_UNITS) {
        core["UnitCount"] = json!(c);
    }
    if let Some(c) = u(sys::CL_DEVICE_MAX_CLOCK_FREQUENCY) {
        core["MaxClockMHz"] = json!(c);
    }
    p["CoreSubsystem"] = core;
    p
}

pub struct OclDevice {
    pub(crate) dev: Arc<Dev>,
}

impl hal::Device for OclDevice {
    fn properties(&self) -> Value {
        let mut p = self.dev.properties.clone();
        if let Some(s) = self.dev.setup_if_ready() {
            // 1 where buffers are host memory the device uses in place.
            p["HostPointerBuffers"] = json!(s.zero_copy as i64);
        }
        p
    }

    fn allocate(&self, size: usize) -> Result<Arc<dyn hal::Buffer>> {
        Ok(Arc::new(memory::OclBuffer::allocate(&self.dev, size)?))
    }

    fn load_library(&self, source: &hal::LibrarySource) -> Result<Arc<dyn hal::Library>> {
        Ok(Arc::new(library::OclLibrary::load(&self.dev, source)?))
    }

    fn create_event(&self, _event_type: EventType) -> Result<Arc<dyn hal::Event>> {
        // One host timeline serves all three event types.
        Ok(Arc::new(sync::OclEvent::default()))
    }

    fn create_stream(&self) -> Result<Arc<dyn hal::Stream>> {
        Ok(Arc::new(sync::OclStream::new(&self.dev)?))
    }

    fn encode(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        Ok(Arc::new(schedule::OclSchedule::encode(
            &self.dev, ops, false,
        )?))
    }

    fn encode_profiled(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        Ok(Arc::new(schedule::OclSchedule::encode(
            &self.dev, ops, true,
        )?))
    }

    fn synchronize(&self) -> Result<()> {
        match self.dev.default_queue_if_made() {
            Some(q) => q.synchronize(None).map(|_| ()),
            None => Ok(()),
        }
    }

    fn reclaim(&self) {
        for q in self.dev.streams.live() {
            q.retire();
        }
    }

    fn native_ordinal(&self) -> i64 {
        self.dev.index as i64
    }

    /// Host memory on devices that use it in place (exported in place by
    /// DLPack); elsewhere buffer objects no other library can address.
    fn memory_domain(&self) -> hal::MemoryDomain {
        match self.dev.setup_if_ready() {
            Some(s) if s.zero_copy => hal::MemoryDomain::Host,
            _ => hal::MemoryDomain::Opaque,
        }
    }
}

impl Dev {
    pub(crate) fn setup_if_ready(&self) -> Option<&super::Setup> {
        self.setup.get()
    }

    pub(crate) fn default_queue_if_made(&self) -> Option<Arc<sync::StreamQueue>> {
        self.default_queue.get().cloned()
    }
}
