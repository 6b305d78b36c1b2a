//! Physical devices (what a device reports) and logical devices (one
//! compute queue, submissions, idle waits).

use std::sync::{Arc, Mutex};

use super::{check, cstr, vk, Instance, Semaphore};
use crate::backends::common::lock;
use crate::error::{Error, Result, Status};

/// What a physical device reports, read once at listing.
#[derive(Clone)]
pub struct PhysicalInfo {
    pub handle: vk::PhysicalDevice,
    pub name: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub device_type: vk::PhysicalDeviceType,
    pub api_version: u32,
    pub driver_version: u32,
    pub driver_name: String,
    pub driver_info: String,
    pub driver_id: i32,
    pub subgroup_size: u32,
    pub limits: vk::PhysicalDeviceLimits,
    pub memory: vk::PhysicalDeviceMemoryProperties,
    pub queue_family: u32,
    pub queue_count: u32,
    /// The queue family's `timestampValidBits` (0: no timestamps).
    pub timestamp_bits: u32,
    pub float64: bool,
    pub int64: bool,
    pub int16: bool,
    pub uuid: [u8; 16],
    /// SMs (VK_NV_shader_sm_builtins) or CUs (VK_AMD_shader_core_properties).
    pub compute_units: Option<u32>,
}

impl PhysicalInfo {
    pub(super) fn query(instance: &Instance, pd: vk::PhysicalDevice) -> Option<PhysicalInfo> {
        let raw = instance.raw();
        // SAFETY: plain queries on a physical device of this live instance.
        let base = unsafe { raw.get_physical_device_properties(pd) };
        if base.api_version < vk::API_VERSION_1_2 {
            log::info!(
                "vulkan: skipping '{}': it supports Vulkan {}.{}, nexus needs 1.2 (timeline semaphores)",
                cstr(&base.device_name),
                vk::api_version_major(base.api_version),
                vk::api_version_minor(base.api_version)
            );
            return None;
        }
        // SAFETY: as above.
        let families = unsafe { raw.get_physical_device_queue_family_properties(pd) };
        // A compute-only family first (dedicated compute), else any compute family.
        let pick = families
            .iter()
            .position(|f| {
                f.queue_flags.contains(vk::QueueFlags::COMPUTE)
                    && !f.queue_flags.contains(vk::QueueFlags::GRAPHICS)
            })
            .or_else(|| {
                families
                    .iter()
                    .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
            })?;
        // SAFETY: as above.
        let extensions =
            unsafe { raw.enumerate_device_extension_properties(pd) }.unwrap_or_default();
        let has = |name: &std::ffi::CStr| {
            extensions
                .iter()
                .any(|e| e.extension_name_as_c_str().is_ok_and(|n| n == name))
        };
        let mut compute_units = None;
        if has(vk::NV_SHADER_SM_BUILTINS_NAME) {
            let mut sm = vk::PhysicalDeviceShaderSMBuiltinsPropertiesNV::default();
            let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut sm);
            // SAFETY: the device supports the extension of the chained struct.
            unsafe { raw.get_physical_device_properties2(pd, &mut p2) };
            compute_units = Some(sm.shader_sm_count);
        } else if has(vk::AMD_SHADER_CORE_PROPERTIES_NAME) {
            let mut core = vk::PhysicalDeviceShaderCorePropertiesAMD::default();
            let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut core);
            // SAFETY: the device supports the extension of the chained struct.
            unsafe { raw.get_physical_device_properties2(pd, &mut p2) };
            compute_units = Some(
                core.shader_engine_count
                    * core.shader_arrays_per_engine_count
                    * core.compute_units_per_shader_array,
            );
        }
        let mut driver = vk::PhysicalDeviceDriverProperties::default();
        let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
        let mut idp = vk::PhysicalDeviceIDProperties::default();
        let mut props2 = vk::PhysicalDeviceProperties2::default()
            .push_next(&mut driver)
            .push_next(&mut subgroup)
            .push_next(&mut idp);
        // SAFETY: the chain's structures live across the call.
        unsafe { raw.get_physical_device_properties2(pd, &mut props2) };
        let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
        let mut feats2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut v12);
        // SAFETY: as above.
        unsafe { raw.get_physical_device_features2(pd, &mut feats2) };
        let features = feats2.features;
        if v12.timeline_semaphore == 0 {
            log::info!(
                "vulkan: skipping '{}': no timeline semaphores",
                cstr(&base.device_name)
            );
            return None;
        }
        // SAFETY: as above.
        let memory = unsafe { raw.get_physical_device_memory_properties(pd) };
        Some(PhysicalInfo {
            handle: pd,
            name: cstr(&base.device_name),
            vendor_id: base.vendor_id,
            device_id: base.device_id,
            device_type: base.device_type,
            api_version: base.api_version,
            driver_version: base.driver_version,
            driver_name: cstr(&driver.driver_name),
            driver_info: cstr(&driver.driver_info),
            driver_id: driver.driver_id.as_raw(),
            subgroup_size: subgroup.subgroup_size,
            limits: base.limits,
            memory,
            queue_family: pick as u32,
            queue_count: families[pick].queue_count,
            timestamp_bits: families[pick].timestamp_valid_bits,
            float64: features.shader_float64 != 0,
            int64: features.shader_int64 != 0,
            int16: features.shader_int16 != 0,
            uuid: idp.device_uuid,
            compute_units: compute_units.filter(|&n| n > 0),
        })
    }

    /// The memory types in use: `(index, flags, heap size)`.
    pub fn memory_types(&self) -> Vec<(u32, vk::MemoryPropertyFlags, u64)> {
        (0..self.memory.memory_type_count as usize)
            .map(|i| {
                let t = self.memory.memory_types[i];
                let heap = self.memory.memory_heaps[t.heap_index as usize].size;
                (i as u32, t.property_flags, heap)
            })
            .collect()
    }
}

struct Queue {
    raw: vk::Queue,
    /// Submissions made (the last value signalled on `serial_sem`).
    serial: u64,
}

/// One submission of a batch: waits, command buffers, then signals.
#[derive(Default)]
pub struct Batch<'a> {
    pub waits: Vec<(&'a Semaphore, u64)>,
    pub commands: Vec<vk::CommandBuffer>,
    pub signals: Vec<(&'a Semaphore, u64)>,
}

/// A destruction deferred until the queue is done with what it names.
pub(super) type Burial = Box<dyn FnOnce(&ash::Device) + Send>;

/// A logical device with one compute queue shared by every nexus stream
/// (submissions are serialised by `queue`).
///
/// # Deferred destruction
///
/// A driver's queue may still touch the objects of a submission after the
/// submission's last signal became visible (Mesa's queue thread releases
/// the timeline points a submission waited on afterwards), so objects are
/// not destroyed when their owner drops them: each submission also
/// signals `serial` with its number, and an object dropped while
/// submission `s` was the last one is destroyed once submission `s + 1`
/// has completed (queues process submissions in order), or when the
/// device goes.
pub struct Device {
    raw: ash::Device,
    queue: Mutex<Queue>,
    serial_sem: vk::Semaphore,
    graveyard: Mutex<Vec<(u64, Burial)>>,
    pub info: PhysicalInfo,
    /// Destroyed after the device (`Drop` runs before fields drop).
    instance: Arc<Instance>,
}

impl Device {
    pub fn new(instance: Arc<Instance>, info: PhysicalInfo) -> Result<Arc<Device>> {
        let priorities = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(info.queue_family)
            .queue_priorities(&priorities)];
        let features = vk::PhysicalDeviceFeatures::default()
            .shader_float64(info.float64)
            .shader_int64(info.int64)
            .shader_int16(info.int16);
        let mut v12 = vk::PhysicalDeviceVulkan12Features::default().timeline_semaphore(true);
        let create = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_features(&features)
            .push_next(&mut v12);
        // SAFETY: valid create info naming a queue family the device has and
        // features it reported; everything lives across the call.
        let raw = unsafe { instance.raw().create_device(info.handle, &create, None) }
            .map_err(|e| check("vkCreateDevice", e))?;
        // The driver has set up its exit handlers by now; ours runs first.
        crate::process::watch_exit_after_driver_opened(crate::process::ChildExit::SkipTeardown);
        // SAFETY: queue 0 of the family created above.
        let queue = unsafe { raw.get_device_queue(info.queue_family, 0) };
        let mut t = vk::SemaphoreTypeCreateInfo::default()
            .semaphore_type(vk::SemaphoreType::TIMELINE)
            .initial_value(0);
        let sem_info = vk::SemaphoreCreateInfo::default().push_next(&mut t);
        // SAFETY: valid create info on the device created above.
        let serial_sem = match unsafe { raw.create_semaphore(&sem_info, None) } {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: the device was created above and owns nothing yet.
                unsafe { raw.destroy_device(None) };
                return Err(check("vkCreateSemaphore", e));
            }
        };
        Ok(Arc::new(Device {
            raw,
            queue: Mutex::new(Queue {
                raw: queue,
                serial: 0,
            }),
            serial_sem,
            graveyard: Mutex::new(Vec::new()),
            info,
            instance,
        }))
    }

    pub(super) fn raw(&self) -> &ash::Device {
        &self.raw
    }

    /// Submits `batches` in order as one vkQueueSubmit. Timeline values
    /// are given for every semaphore.
    pub fn submit(&self, batches: &[Batch<'_>]) -> Result<()> {
        if !self.instance.in_owner_process() {
            return Err(Error::new(
                Status::InvalidDevice,
                "a Vulkan device cannot be used in a process forked after it was used (use the 'spawn' start method)",
            ));
        }
        if batches.is_empty() {
            return Ok(());
        }
        let submitted = self.submit_inner(batches);
        self.collect();
        submitted
    }

    /// `submit` without collecting the graveyard.
    fn submit_inner(&self, batches: &[Batch<'_>]) -> Result<()> {
        struct Owned {
            wait_sems: Vec<vk::Semaphore>,
            wait_vals: Vec<u64>,
            wait_stages: Vec<vk::PipelineStageFlags>,
            signal_sems: Vec<vk::Semaphore>,
            signal_vals: Vec<u64>,
        }
        // Under the queue's lock from here: the serial's value is the
        // submission's number.
        let mut queue = lock(&self.queue);
        let serial = queue.serial + 1;
        let last = batches.len().saturating_sub(1);
        let owned: Vec<Owned> = batches
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut o = Owned {
                    wait_sems: b.waits.iter().map(|(s, _)| s.raw).collect(),
                    wait_vals: b.waits.iter().map(|(_, v)| *v).collect(),
                    wait_stages: vec![vk::PipelineStageFlags::ALL_COMMANDS; b.waits.len()],
                    signal_sems: b.signals.iter().map(|(s, _)| s.raw).collect(),
                    signal_vals: b.signals.iter().map(|(_, v)| *v).collect(),
                };
                // The serial's signal goes with the last batch: a signal's
                // first synchronisation scope is everything earlier in
                // submission order, so it still covers every batch (a batch
                // of its own cost lavapipe a second queue step per run).
                if i == last {
                    o.signal_sems.push(self.serial_sem);
                    o.signal_vals.push(serial);
                }
                o
            })
            .collect();
        let mut timelines: Vec<vk::TimelineSemaphoreSubmitInfo> = owned
            .iter()
            .map(|o| {
                vk::TimelineSemaphoreSubmitInfo::default()
                    .wait_semaphore_values(&o.wait_vals)
                    .signal_semaphore_values(&o.signal_vals)
            })
            .collect();
        let infos: Vec<vk::SubmitInfo> = owned
            .iter()
            .zip(batches)
            .zip(timelines.iter_mut())
            .map(|((o, b), t)| {
                vk::SubmitInfo::default()
                    .wait_semaphores(&o.wait_sems)
                    .wait_dst_stage_mask(&o.wait_stages)
                    .command_buffers(&b.commands)
                    .signal_semaphores(&o.signal_sems)
                    .push_next(t)
            })
            .collect();
        // SAFETY: the queue is externally synchronised by its lock; every
        // handle in the batches is alive (held by the caller) and the
        // arrays above outlive the call.
        let submitted = unsafe { self.raw.queue_submit(queue.raw, &infos, vk::Fence::null()) }
            .map_err(|e| check("vkQueueSubmit", e));
        if submitted.is_ok() {
            queue.serial = serial;
        }
        submitted
    }

    /// How many submissions the device has made (an object made now and
    /// dropped before the next one was never named by any).
    pub(super) fn submissions(&self) -> u64 {
        lock(&self.queue).serial
    }

    /// Runs `destroy` once the queue is done with every submission made so
    /// far (see "Deferred destruction").
    pub(super) fn bury(&self, destroy: Burial) {
        self.bury_made_at(u64::MAX, destroy);
    }

    /// `bury` for an object made when the device had made `born`
    /// submissions (`submissions`): if it has made none since, none can name
    /// the object and it goes at once. Events and buffers that never reach a
    /// queue are then freed without a trip through it (an empty submission
    /// per drop made 100,000 of them take minutes).
    pub(super) fn bury_made_at(&self, born: u64, destroy: Burial) {
        if !self.instance.in_owner_process() {
            return; // a forked child leaks (see `Instance::in_owner_process`)
        }
        let serial = lock(&self.queue).serial;
        if born == serial {
            destroy(&self.raw);
            return;
        }
        lock(&self.graveyard).push((serial, destroy));
        self.collect();
    }

    fn completed_serial(&self) -> Option<u64> {
        // SAFETY: a live timeline semaphore of this device.
        unsafe { self.raw.get_semaphore_counter_value(self.serial_sem) }.ok()
    }

    /// Destroys what no submission can still name. When what is left waits
    /// only for the last submission, which has completed (the queue is
    /// idle), an empty submission moves the serial on, so nothing lingers
    /// until the next run.
    pub fn collect(&self) {
        if !self.instance.in_owner_process() {
            return; // the parent's graveyard is the parent's
        }
        let Some(mut done) = self.completed_serial() else {
            return;
        };
        loop {
            let ready: Vec<Burial> = {
                let mut g = lock(&self.graveyard);
                if g.is_empty() {
                    return;
                }
                let (ready, wait): (Vec<_>, Vec<_>) = g.drain(..).partition(|(s, _)| *s < done);
                *g = wait;
                ready.into_iter().map(|(_, f)| f).collect()
            };
            for f in ready {
                f(&self.raw);
            }
            let idle = lock(&self.queue).serial == done;
            let waiting = lock(&self.graveyard).iter().all(|(s, _)| *s <= done);
            if !(idle && waiting) || self.submit_inner(&[Batch::default()]).is_err() {
                return;
            }
            let values = [done + 1];
            let sems = [self.serial_sem];
            let info = vk::SemaphoreWaitInfo::default()
                .semaphores(&sems)
                .values(&values);
            // SAFETY: a live semaphore; the arrays outlive the call. The
            // empty submission waits for nothing, so this returns at once
            // unless other work was queued meanwhile (then it times out and
            // the graveyard waits for the next call).
            if unsafe { self.raw.wait_semaphores(&info, 100_000_000) }.is_err() {
                return;
            }
            done += 1;
        }
    }

    /// Blocks until the queue is idle (device teardown).
    pub fn wait_idle(&self) {
        // SAFETY: waiting on a live device; failures (device lost) leave
        // nothing to wait for.
        let _ = unsafe { self.raw.device_wait_idle() };
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if !self.instance.in_owner_process() {
            return; // see `Instance::in_owner_process`
        }
        self.wait_idle();
        let buried: Vec<(u64, Burial)> = std::mem::take(&mut *lock(&self.graveyard));
        for (_, f) in buried {
            f(&self.raw);
        }
        // SAFETY: every child handle holds an Arc of this device, so none is
        // left; the queue is idle.
        unsafe {
            self.raw.destroy_semaphore(self.serial_sem, None);
            self.raw.destroy_device(None);
        }
    }
}
