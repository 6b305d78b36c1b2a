//! A Vulkan device as nexus sees it: its live properties and the
//! `hal::Device` entry points.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use super::ffi::{self, vk, PhysicalInfo};
use super::{library, memory, schedule, sync, Gpu};
use crate::error::Result;
use crate::hal;
use crate::types::EventType;

pub(super) fn version_string(v: u32) -> String {
    format!(
        "{}.{}.{}",
        vk::api_version_major(v),
        vk::api_version_minor(v),
        vk::api_version_patch(v)
    )
}

fn vendor_name(id: u32) -> &'static str {
    match id {
        0x10DE => "NVIDIA",
        0x1002 | 0x1022 => "AMD",
        0x8086 => "Intel",
        0x13B5 => "ARM",
        0x5143 => "Qualcomm",
        0x106B => "Apple",
        0x1010 => "ImgTec",
        0x10005 => "Mesa",
        _ => "unknown",
    }
}

/// The driver version as the vendor writes it.
fn driver_version(info: &PhysicalInfo) -> String {
    let v = info.driver_version;
    match info.vendor_id {
        0x10DE => format!(
            "{}.{}.{}.{}",
            (v >> 22) & 0x3ff,
            (v >> 14) & 0xff,
            (v >> 6) & 0xff,
            v & 0x3f
        ),
        0x8086 if cfg!(windows) => format!("{}.{}", v >> 14, v & 0x3fff),
        _ => version_string(v),
    }
}

/// The architecture name of the device database, where the device name
/// tells it (Vulkan reports no architecture); a CPU device (lavapipe) runs
/// on the host's architecture.
fn architecture(info: &PhysicalInfo) -> Option<String> {
    if info.device_type == vk::PhysicalDeviceType::CPU {
        return Some(std::env::consts::ARCH.to_string());
    }
    let name = info.name.to_ascii_uppercase();
    if info.vendor_id == 0x10DE {
        let table: &[(&[&str], &str)] = &[
            (&["B200", "B100", "GB200"], "sm_100"),
            (&["RTX 50", "RTX PRO"], "sm_120"),
            (&["H100", "H200", "H800", "GH200"], "sm_90"),
            (&["RTX 40", "L40", "L4", "RTX 6000 ADA"], "sm_89"),
            (&["A100", "A800", "A30"], "sm_80"),
            (&["RTX 30", "A10", "A40", "A16", "A2", "RTX A"], "sm_86"),
            (&["T4", "RTX 20", "GTX 16", "QUADRO RTX"], "sm_75"),
            (&["V100", "TITAN V"], "sm_70"),
        ];
        for (keys, arch) in table {
            if keys.iter().any(|k| name.contains(k)) {
                return Some(arch.to_string());
            }
        }
    }
    None
}

/// Sizes of the host CPU's L1 data and L2 caches (Linux sysfs), for CPU
/// devices such as lavapipe, which run kernels on the host's cores.
fn host_caches() -> (Option<u64>, Option<u64>) {
    let (mut l1, mut l2) = (None, None);
    for i in 0..10 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        let size = size.trim();
        let bytes = match size.strip_suffix('K') {
            Some(k) => k.parse::<u64>().ok().map(|k| k * 1024),
            None => match size.strip_suffix('M') {
                Some(m) => m.parse::<u64>().ok().map(|m| m << 20),
                None => size.parse().ok(),
            },
        };
        match (level.trim(), kind.trim()) {
            ("1", "Data") | ("1", "Unified") => l1 = l1.or(bytes),
            ("2", _) => l2 = l2.or(bytes),
            _ => {}
        }
    }
    (l1, l2)
}

/// A memory entry's key from the device database entry of `arch`.
fn db_mem(arch: Option<&str>, ty: &str, key: &str) -> Option<Value> {
    let db = crate::database::lookup(arch?)?;
    let root = db.root().clone();
    root.get("MemorySubsystem")?
        .get("MemoryTypes")?
        .as_array()?
        .iter()
        .find(|m| m["Type"] == ty)?
        .get(key)
        .cloned()
}

/// Compute units: the host's threads for a CPU device (lavapipe runs one
/// thread per core, or `LP_NUM_THREADS`); GPUs report none through core
/// Vulkan, so the vendor extensions' counts where present.
fn compute_units(info: &PhysicalInfo) -> Option<u64> {
    if info.device_type == vk::PhysicalDeviceType::CPU {
        let env = std::env::var("LP_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 0);
        return env.or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as u64)
        });
    }
    info.compute_units.map(u64::from)
}

fn properties(info: &PhysicalInfo, ordinal: usize, staging: bool) -> Value {
    let l = &info.limits;
    let kind = match info.device_type {
        vk::PhysicalDeviceType::CPU => "cpu",
        _ => "gpu",
    };
    let vk_type = match info.device_type {
        vk::PhysicalDeviceType::DISCRETE_GPU => "discrete",
        vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated",
        vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual",
        vk::PhysicalDeviceType::CPU => "cpu",
        _ => "other",
    };
    let heaps: Vec<Value> = (0..info.memory.memory_heap_count as usize)
        .map(|i| {
            let h = info.memory.memory_heaps[i];
            json!({
                "Type": if h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL) { "Device" } else { "Host" },
                "Scope": "device",
                "Size": h.size,
                "Heap": i,
            })
        })
        .collect();
    let device_mem: u64 = (0..info.memory.memory_heap_count as usize)
        .map(|i| info.memory.memory_heaps[i])
        .filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
        .map(|h| h.size)
        .max()
        .unwrap_or(0);
    let arch = architecture(info);
    let (mut l1, mut l2) = (
        json!({"Type": "L1", "Scope": "unit"}),
        json!({"Type": "L2", "Scope": "device"}),
    );
    if info.device_type == vk::PhysicalDeviceType::CPU {
        let (c1, c2) = host_caches();
        if let Some(s) = c1 {
            l1["Size"] = json!(s);
        }
        if let Some(s) = c2 {
            l2["Size"] = json!(s);
        }
    } else {
        if let Some(s) = db_mem(arch.as_deref(), "L1", "Size") {
            l1["Size"] = s;
        }
        if let Some(s) = db_mem(arch.as_deref(), "L2", "Size") {
            l2["Size"] = s;
        }
    }
    let mut types = vec![
        l1,
        l2,
        json!({
            "Type": "Shared",
            "Scope": "group",
            "Size": l.max_compute_shared_memory_size,
        }),
    ];
    types.extend(heaps);
    let supported: Vec<Value> = types.iter().map(|t| t["Type"].clone()).collect();
    let uuid: String = info
        .uuid
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join("");
    let mut p = json!({
        "Name": info.name,
        "Vendor": vendor_name(info.vendor_id),
        "Type": kind,
        "VulkanDeviceType": vk_type,
        "Runtime": "vulkan",
        "ID": ordinal,
        "VendorID": info.vendor_id,
        "DeviceID": info.device_id,
        "UUID": uuid,
        "DriverName": info.driver_name,
        "DriverID": info.driver_id,
        "DriverInfo": info.driver_info,
        "DriverVersion": driver_version(info),
        "ApiVersion": version_string(info.api_version),
        "SubgroupSize": info.subgroup_size,
        "WarpSize": info.subgroup_size,
        "MaxGroupSize": l.max_compute_work_group_size,
        "MaxGridSize": l.max_compute_work_group_count,
        "MaxThreadsPerGroup": l.max_compute_work_group_invocations,
        "MaxGroupMemory": l.max_compute_shared_memory_size,
        "MaxPushConstantsSize": l.max_push_constants_size,
        "MaxStorageBufferRange": l.max_storage_buffer_range,
        "MaxBoundDescriptorSets": l.max_bound_descriptor_sets,
        "MinStorageBufferOffsetAlignment": l.min_storage_buffer_offset_alignment,
        "TimestampPeriod": l.timestamp_period,
        "QueueFamily": info.queue_family,
        "QueueCount": info.queue_count,
        "Float64": i32::from(info.float64),
        "KernelModel": {"Formats": ["spirv", "wgsl", "glsl"]},
        "Int64": i32::from(info.int64),
        "StagingCopies": i32::from(staging),
        "MemorySize": device_mem,
        "MemorySubsystem": {
            "SupportedMemoryTypes": supported,
            "MemoryTypes": types,
        },
    });
    if let Some(a) = arch {
        p["Architecture"] = json!(a);
    }
    if let Some(n) = compute_units(info) {
        p["ComputeUnits"] = json!(n);
    }
    p
}

pub struct VkDevice {
    gpu: Arc<Gpu>,
    properties: Value,
    default_stream: Arc<OnceLock<sync::VkStream>>,
}

impl VkDevice {
    pub(super) fn new(
        instance: Arc<ffi::Instance>,
        info: PhysicalInfo,
        ordinal: usize,
    ) -> Result<VkDevice> {
        let types = info.memory_types();
        let coherent =
            vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let local = vk::MemoryPropertyFlags::DEVICE_LOCAL;
        let mut host_types: Vec<(u32, vk::MemoryPropertyFlags)> = types
            .iter()
            .filter(|(_, f, _)| f.contains(coherent))
            .map(|(i, f, _)| (*i, *f))
            .collect();
        // Staging memory: cached host memory first (reads back fast).
        host_types.sort_by_key(|(_, f)| !f.contains(vk::MemoryPropertyFlags::HOST_CACHED));
        let forced = std::env::var("NEXUS_VULKAN_STAGING").is_ok_and(|v| v == "1");
        let unified = matches!(
            info.device_type,
            vk::PhysicalDeviceType::CPU | vk::PhysicalDeviceType::INTEGRATED_GPU
        );
        // Device-local memory the host maps (integrated GPUs, CPUs, and
        // discrete GPUs whose whole memory is mappable, resizable BAR).
        let largest_local = types
            .iter()
            .filter(|(_, f, _)| f.contains(local))
            .map(|(_, _, h)| *h)
            .max()
            .unwrap_or(0);
        let mapped_local: Vec<(u32, vk::MemoryPropertyFlags)> = types
            .iter()
            .filter(|(_, f, h)| f.contains(local | coherent) && (unified || *h >= largest_local))
            .map(|(i, f, _)| (*i, *f))
            .collect();
        let (buffer_types, staging) = if !mapped_local.is_empty() && !forced {
            (mapped_local, false)
        } else if unified && !forced {
            (host_types.clone(), false)
        } else {
            let device_local: Vec<(u32, vk::MemoryPropertyFlags)> = types
                .iter()
                .filter(|(_, f, _)| f.contains(local))
                .map(|(i, f, _)| (*i, *f))
                .collect();
            if device_local.is_empty() {
                (host_types.clone(), false)
            } else {
                (device_local, true)
            }
        };
        let properties = properties(&info, ordinal, staging);
        let dev = ffi::Device::new(instance, info)?;
        Ok(VkDevice {
            gpu: Arc::new(Gpu {
                dev,
                buffer_types,
                host_types,
                staging,
                buffers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1 << 48),
                ordinal,
            }),
            properties,
            default_stream: Arc::new(OnceLock::new()),
        })
    }
}

impl hal::Device for VkDevice {
    fn properties(&self) -> Value {
        self.properties.clone()
    }

    fn allocate(&self, size: usize) -> Result<Arc<dyn hal::Buffer>> {
        Ok(Arc::new(memory::VkBuffer::new(&self.gpu, size)?))
    }

    fn load_library(&self, source: &hal::LibrarySource) -> Result<Arc<dyn hal::Library>> {
        Ok(Arc::new(library::VkLibrary::load(&self.gpu, source)?))
    }

    fn create_event(&self, _event_type: EventType) -> Result<Arc<dyn hal::Event>> {
        Ok(Arc::new(sync::VkEvent::new(&self.gpu)?))
    }

    fn create_stream(&self) -> Result<Arc<dyn hal::Stream>> {
        Ok(Arc::new(sync::VkStream::new(&self.gpu)?))
    }

    fn encode(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        Ok(Arc::new(schedule::VkSchedule::encode(
            &self.gpu,
            ops,
            self.default_stream.clone(),
            false,
        )?))
    }

    fn encode_profiled(&self, ops: Vec<hal::Op>) -> Result<Arc<dyn hal::Schedule>> {
        Ok(Arc::new(schedule::VkSchedule::encode(
            &self.gpu,
            ops,
            self.default_stream.clone(),
            true,
        )?))
    }

    fn synchronize(&self) -> Result<()> {
        match self.default_stream.get() {
            Some(s) => hal::Stream::synchronize(s),
            None => Ok(()),
        }
    }

    fn reclaim(&self) {
        if let Some(s) = self.default_stream.get() {
            s.retire();
        }
        self.gpu.dev.collect();
    }

    fn memory_domain(&self) -> hal::MemoryDomain {
        // Mapped buffers' addresses are host pointers; device-local ones
        // (staging copies) have no address other libraries can use.
        if self.gpu.staging {
            hal::MemoryDomain::Opaque
        } else {
            hal::MemoryDomain::Host
        }
    }

    fn native_ordinal(&self) -> i64 {
        self.gpu.ordinal as i64
    }
}
