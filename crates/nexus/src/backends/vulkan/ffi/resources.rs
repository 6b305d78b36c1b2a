//! RAII handles of device objects: buffers with their memory, shader
//! modules, pipelines and their layouts, descriptor sets, command buffers
//! and timeline semaphores. Each keeps its `Device` alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::device::Burial;
use super::{check, vk, Device};
use crate::error::{Error, Result, Status};

/// A buffer and the memory bound to it, mapped for its whole life when
/// the memory is host-visible.
pub struct Buffer {
    device: Arc<Device>,
    pub(super) raw: vk::Buffer,
    memory: vk::DeviceMemory,
    size: u64,
    mapped: Option<*mut u8>,
    /// The device's submission count when the buffer was made (`bury`).
    born: u64,
}

// SAFETY: the mapping is owned by the buffer; concurrent access to the bytes
// is ordered by streams and events, as on every runtime; Vulkan handles
// may be used from any thread.
unsafe impl Send for Buffer {}
// SAFETY: as for Send.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// A storage buffer of `size` bytes in memory of one of `types` (tried
    /// in order, by index); mapped when `map`.
    pub fn new(
        device: &Arc<Device>,
        size: u64,
        candidates: &[(u32, vk::MemoryPropertyFlags)],
        map: bool,
    ) -> Result<Buffer> {
        let d = device.raw();
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(
                vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::TRANSFER_SRC
                    | vk::BufferUsageFlags::TRANSFER_DST,
            )
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid create info.
        let raw =
            unsafe { d.create_buffer(&info, None) }.map_err(|e| check("vkCreateBuffer", e))?;
        // SAFETY: `raw` is a live buffer of this device.
        let req = unsafe { d.get_buffer_memory_requirements(raw) };
        let offset = if map { color(size, req.alignment) } else { 0 };
        let mut last = vk::Result::ERROR_OUT_OF_DEVICE_MEMORY;
        for &(index, _) in candidates {
            if req.memory_type_bits & (1 << index) == 0 {
                continue;
            }
            let alloc = vk::MemoryAllocateInfo::default()
                .allocation_size(req.size + offset)
                .memory_type_index(index);
            // SAFETY: valid allocate info for a memory type the buffer accepts.
            let memory = match unsafe { d.allocate_memory(&alloc, None) } {
                Ok(m) => m,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            // SAFETY: fresh memory of a type the buffer accepts, `req.size`
            // bytes from `offset`, a multiple of `req.alignment` (`color`).
            if let Err(e) = unsafe { d.bind_buffer_memory(raw, memory, offset) } {
                // SAFETY: the memory was allocated above and is unused.
                unsafe { d.free_memory(memory, None) };
                last = e;
                continue;
            }
            let mapped = if map {
                // SAFETY: host-visible memory (the caller picked such types),
                // mapped once for the buffer's life.
                match unsafe {
                    d.map_memory(memory, offset, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
                } {
                    Ok(p) => Some(p as *mut u8),
                    Err(e) => {
                        // SAFETY: the buffer and memory were created above.
                        unsafe {
                            d.destroy_buffer(raw, None);
                            d.free_memory(memory, None);
                        }
                        return Err(check("vkMapMemory", e));
                    }
                }
            } else {
                None
            };
            return Ok(Buffer {
                device: device.clone(),
                raw,
                memory,
                size,
                mapped,
                born: device.submissions(),
            });
        }
        // SAFETY: the buffer was created above and has no memory bound.
        unsafe { d.destroy_buffer(raw, None) };
        Err(Error::new(
            if matches!(
                last,
                vk::Result::ERROR_OUT_OF_DEVICE_MEMORY | vk::Result::ERROR_OUT_OF_HOST_MEMORY
            ) {
                Status::OutOfMemory
            } else {
                Status::DriverError
            },
            format!("Vulkan: cannot allocate a buffer of {size} bytes: {last:?}"),
        ))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The host address of the mapping, if mapped.
    pub fn mapped(&self) -> Option<*mut u8> {
        self.mapped
    }

    /// Copies `src` into the mapping at `offset`; bounds checked here.
    pub fn write_mapped(&self, offset: usize, src: &[u8]) -> Result<()> {
        let p = self.mapping_for(offset, src.len())?;
        // SAFETY: `mapping_for` checked the range lies in the mapping.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        Ok(())
    }

    /// Copies from the mapping at `offset` into `dst`; bounds checked here.
    pub fn read_mapped(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        let p = self.mapping_for(offset, dst.len())?;
        // SAFETY: `mapping_for` checked the range lies in the mapping.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn mapping_for(&self, offset: usize, len: usize) -> Result<*mut u8> {
        let Some(p) = self.mapped else {
            return Err(Error::new(
                Status::InvalidBuffer,
                "Vulkan buffer is not host-visible",
            ));
        };
        if offset
            .checked_add(len)
            .is_none_or(|end| end as u64 > self.size)
        {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "{len} bytes at offset {offset} exceed the buffer of {} bytes",
                    self.size
                ),
            ));
        }
        // SAFETY: in bounds of the mapping, checked above.
        Ok(unsafe { p.add(offset) })
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let (raw, memory) = (self.raw, self.memory);
        let destroy: Burial = Box::new(move |d| {
            // SAFETY: the owner drops a buffer only once no queued work uses
            // it, and the queue is done with it (buried); unmapping is
            // implied by freeing.
            unsafe {
                d.destroy_buffer(raw, None);
                d.free_memory(memory, None);
            }
        });
        self.device.bury_made_at(self.born, destroy);
    }
}

/// Smallest mapped buffer whose start is staggered (`color`; at most
/// 0.3% more memory).
const COLOR_FROM: u64 = 1 << 20;
/// Staggers: buffer k starts `(k % COLORS) * COLOR_STEP` bytes into its
/// allocation. Buffers made one after the other (a kernel's inputs and
/// output) are then at least 1 KiB apart modulo 4 KiB both ways, beyond
/// the distance stores still pending in a core trail its loads by.
const COLORS: u64 = 4;
const COLOR_STEP: u64 = 1088;

/// The byte offset at which a mapped buffer of `size` bytes starts in its
/// memory. A driver allocates large host memory page-aligned (lavapipe:
/// one `mmap` each), so the buffers of a kernel would all start at the
/// same address modulo 4 KiB, and a CPU streaming through them at the same
/// index stalls on 4K aliasing (loads that look like they depend on the
/// store to the other buffer): lavapipe's 2^24-float vector add ran 12-15%
/// slower than with its three buffers 1088 bytes apart. Offsets rotate through
/// multiples of `COLOR_STEP` (rounded up to `alignment`); small buffers and
/// coarse alignments stay at 0.
fn color(size: u64, alignment: u64) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let alignment = alignment.max(1);
    if size < COLOR_FROM || alignment > COLOR_STEP {
        return 0;
    }
    let k = NEXT.fetch_add(1, Ordering::Relaxed) % COLORS;
    (k * COLOR_STEP).div_ceil(alignment) * alignment
}

/// A SPIR-V shader module (dropped once its pipeline exists).
pub struct ShaderModule {
    device: Arc<Device>,
    raw: vk::ShaderModule,
}

impl ShaderModule {
    /// `words` must be SPIR-V the caller validated (naga's writer output).
    pub fn new(device: &Arc<Device>, words: &[u32]) -> Result<ShaderModule> {
        let info = vk::ShaderModuleCreateInfo::default().code(words);
        // SAFETY: valid create info over SPIR-V produced by naga's writer
        // from a validated module.
        let raw = unsafe { device.raw().create_shader_module(&info, None) }
            .map_err(|e| check("vkCreateShaderModule", e))?;
        Ok(ShaderModule {
            device: device.clone(),
            raw,
        })
    }
}

impl Drop for ShaderModule {
    fn drop(&mut self) {
        let raw = self.raw;
        // SAFETY: a module may be destroyed once pipelines are created, and
        // no submission names a module.
        let destroy: Burial = Box::new(move |d| unsafe { d.destroy_shader_module(raw, None) });
        // No submission names it: `bury_made_at` destroys it at once.
        self.device.bury_made_at(self.device.submissions(), destroy);
    }
}

/// Descriptor set layouts of storage buffers (set i holds `bindings[i]`)
/// and a pipeline layout with at most one push-constant range.
pub struct PipelineLayout {
    device: Arc<Device>,
    set_layouts: Vec<vk::DescriptorSetLayout>,
    raw: vk::PipelineLayout,
    bindings: Vec<Vec<u32>>,
}

impl PipelineLayout {
    pub fn new(
        device: &Arc<Device>,
        bindings: &[Vec<u32>],
        push_size: u32,
    ) -> Result<PipelineLayout> {
        let d = device.raw();
        let mut layout = PipelineLayout {
            device: device.clone(),
            set_layouts: Vec::new(),
            raw: vk::PipelineLayout::null(),
            bindings: bindings.to_vec(),
        };
        for set in bindings {
            let b: Vec<vk::DescriptorSetLayoutBinding> = set
                .iter()
                .map(|&i| {
                    vk::DescriptorSetLayoutBinding::default()
                        .binding(i)
                        .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                        .descriptor_count(1)
                        .stage_flags(vk::ShaderStageFlags::COMPUTE)
                })
                .collect();
            let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&b);
            // SAFETY: valid create info.
            let sl = unsafe { d.create_descriptor_set_layout(&info, None) }
                .map_err(|e| check("vkCreateDescriptorSetLayout", e))?;
            layout.set_layouts.push(sl);
        }
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .offset(0)
            .size(push_size)];
        let mut info = vk::PipelineLayoutCreateInfo::default().set_layouts(&layout.set_layouts);
        if push_size > 0 {
            info = info.push_constant_ranges(&ranges);
        }
        // SAFETY: valid create info; on failure `layout`'s drop frees the
        // set layouts made so far.
        layout.raw = unsafe { d.create_pipeline_layout(&info, None) }
            .map_err(|e| check("vkCreatePipelineLayout", e))?;
        Ok(layout)
    }
}

impl Drop for PipelineLayout {
    fn drop(&mut self) {
        let (raw, set_layouts) = (self.raw, std::mem::take(&mut self.set_layouts));
        self.device.bury(Box::new(move |d| {
            // SAFETY: pipelines and descriptor sets made with this layout
            // hold an Arc of it, so none is left; null handles are ignored.
            unsafe {
                d.destroy_pipeline_layout(raw, None);
                for sl in &set_layouts {
                    d.destroy_descriptor_set_layout(*sl, None);
                }
            }
        }));
    }
}

/// A compute pipeline.
pub struct Pipeline {
    device: Arc<Device>,
    raw: vk::Pipeline,
    layout: Arc<PipelineLayout>,
}

impl Pipeline {
    pub fn new(
        device: &Arc<Device>,
        layout: &Arc<PipelineLayout>,
        module: &ShaderModule,
        entry: &str,
    ) -> Result<Pipeline> {
        let name = std::ffi::CString::new(entry).map_err(|_| {
            Error::new(
                Status::InvalidKernel,
                format!("kernel name '{entry}' contains a NUL byte"),
            )
        })?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module.raw)
            .name(&name);
        let info = [vk::ComputePipelineCreateInfo::default()
            .stage(stage)
            .layout(layout.raw)];
        // SAFETY: valid create info; module and layout are alive.
        let raw = unsafe {
            device
                .raw()
                .create_compute_pipelines(vk::PipelineCache::null(), &info, None)
        }
        .map_err(|(_, e)| check("vkCreateComputePipelines", e))?;
        let raw = raw.into_iter().next().ok_or_else(|| {
            Error::new(
                Status::DriverError,
                "vkCreateComputePipelines returned nothing",
            )
        })?;
        Ok(Pipeline {
            device: device.clone(),
            raw,
            layout: layout.clone(),
        })
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let raw = self.raw;
        self.device.bury(Box::new(move |d| {
            // SAFETY: schedules recorded with the pipeline hold an Arc of it
            // until their work completed, and the queue is done with it.
            unsafe { d.destroy_pipeline(raw, None) };
        }));
    }
}

/// One descriptor set (in its own pool) with storage buffers written once.
pub struct DescriptorSet {
    device: Arc<Device>,
    pool: vk::DescriptorPool,
    raw: vk::DescriptorSet,
    _layout: Arc<PipelineLayout>,
}

impl DescriptorSet {
    /// Set `index` of `layout`, whose binding `layout.bindings[index][i]`
    /// is `buffers[i]`: a buffer and the range `(offset, size)` of it the
    /// kernel sees (`None`: all of it).
    pub fn new(
        device: &Arc<Device>,
        layout: &Arc<PipelineLayout>,
        index: usize,
        buffers: &[(&Buffer, Option<(u64, u64)>)],
    ) -> Result<DescriptorSet> {
        let (Some(set_layout), Some(bindings)) =
            (layout.set_layouts.get(index), layout.bindings.get(index))
        else {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("the pipeline layout has no descriptor set {index}"),
            ));
        };
        if buffers.len() != bindings.len() {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "{} buffers for a layout of {} bindings",
                    buffers.len(),
                    bindings.len()
                ),
            ));
        }
        let d = device.raw();
        let sizes = [vk::DescriptorPoolSize::default()
            .ty(vk::DescriptorType::STORAGE_BUFFER)
            .descriptor_count((buffers.len() as u32).max(1))];
        let info = vk::DescriptorPoolCreateInfo::default()
            .max_sets(1)
            .pool_sizes(&sizes);
        // SAFETY: valid create info.
        let pool = unsafe { d.create_descriptor_pool(&info, None) }
            .map_err(|e| check("vkCreateDescriptorPool", e))?;
        let layouts = [*set_layout];
        let alloc = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(pool)
            .set_layouts(&layouts);
        // SAFETY: one set from a pool sized for it.
        let raw = match unsafe { d.allocate_descriptor_sets(&alloc) } {
            Ok(s) if !s.is_empty() => s[0],
            Ok(_) => {
                // SAFETY: created above, unused.
                unsafe { d.destroy_descriptor_pool(pool, None) };
                return Err(Error::new(
                    Status::DriverError,
                    "no descriptor set allocated",
                ));
            }
            Err(e) => {
                // SAFETY: created above, unused.
                unsafe { d.destroy_descriptor_pool(pool, None) };
                return Err(check("vkAllocateDescriptorSets", e));
            }
        };
        // Kernels see at most maxStorageBufferRange bytes of a buffer.
        let max_range = u64::from(device.info.limits.max_storage_buffer_range);
        let infos: Vec<[vk::DescriptorBufferInfo; 1]> = buffers
            .iter()
            .map(|(b, part)| {
                let (offset, size) = part.unwrap_or((0, b.size));
                let size = size.min(b.size.saturating_sub(offset));
                [vk::DescriptorBufferInfo::default()
                    .buffer(b.raw)
                    .offset(offset)
                    .range(size.min(max_range))]
            })
            .collect();
        let writes: Vec<vk::WriteDescriptorSet> = infos
            .iter()
            .zip(bindings)
            .map(|(info, &binding)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(raw)
                    .dst_binding(binding)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(info)
            })
            .collect();
        // SAFETY: the set, its buffers and the info arrays are alive.
        unsafe { d.update_descriptor_sets(&writes, &[]) };
        Ok(DescriptorSet {
            device: device.clone(),
            pool,
            raw,
            _layout: layout.clone(),
        })
    }
}

impl Drop for DescriptorSet {
    fn drop(&mut self) {
        let pool = self.pool;
        self.device.bury(Box::new(move |d| {
            // SAFETY: dropped only once no work that uses it is pending, and
            // the queue is done with it.
            unsafe { d.destroy_descriptor_pool(pool, None) };
        }));
    }
}

/// A primary command buffer in its own pool, recorded once and submitted
/// many times.
pub struct CommandBuffer {
    device: Arc<Device>,
    pool: vk::CommandPool,
    pub(super) raw: vk::CommandBuffer,
}

/// One recorded command.
pub enum Record<'a> {
    Dispatch {
        pipeline: &'a Pipeline,
        sets: &'a [&'a DescriptorSet],
        push: &'a [u8],
        groups: [u32; 3],
    },
    Copy {
        src: &'a Buffer,
        dst: &'a Buffer,
        src_offset: u64,
        dst_offset: u64,
        size: u64,
    },
    /// Resets queries `0..count` of the pool (first in a profiled run).
    ResetQueries { pool: &'a QueryPool, count: u32 },
    /// Writes the device time at which every earlier command of the
    /// submission order has completed into query `query`.
    Timestamp { pool: &'a QueryPool, query: u32 },
}

impl Record<'_> {
    /// A dispatch or a copy (what memory barriers separate).
    fn is_work(&self) -> bool {
        matches!(self, Record::Dispatch { .. } | Record::Copy { .. })
    }
}

impl CommandBuffer {
    /// Records `commands` with a full memory barrier before the first,
    /// between each two and after the last (towards host reads). The
    /// caller keeps what the commands name alive while the buffer is.
    pub fn record(device: &Arc<Device>, commands: &[Record<'_>]) -> Result<CommandBuffer> {
        let d = device.raw();
        let info =
            vk::CommandPoolCreateInfo::default().queue_family_index(device.info.queue_family);
        // SAFETY: valid create info.
        let pool = unsafe { d.create_command_pool(&info, None) }
            .map_err(|e| check("vkCreateCommandPool", e))?;
        let mut cb = CommandBuffer {
            device: device.clone(),
            pool,
            raw: vk::CommandBuffer::null(),
        };
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: one buffer from a live pool.
        let raw = unsafe { d.allocate_command_buffers(&alloc) }
            .map_err(|e| check("vkAllocateCommandBuffers", e))?
            .into_iter()
            .next()
            .ok_or_else(|| Error::new(Status::DriverError, "no command buffer allocated"))?;
        cb.raw = raw;
        // A schedule may be run again (on any stream) while an earlier run
        // of it is still pending.
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::SIMULTANEOUS_USE);
        let all = vk::AccessFlags::SHADER_READ
            | vk::AccessFlags::SHADER_WRITE
            | vk::AccessFlags::TRANSFER_READ
            | vk::AccessFlags::TRANSFER_WRITE;
        let stages = vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER;
        let barrier = |src_stage, src_access, dst_stage, dst_access| {
            let b = [vk::MemoryBarrier::default()
                .src_access_mask(src_access)
                .dst_access_mask(dst_access)];
            // SAFETY: recording into a buffer in the recording state.
            unsafe {
                d.cmd_pipeline_barrier(
                    raw,
                    src_stage,
                    dst_stage,
                    vk::DependencyFlags::empty(),
                    &b,
                    &[],
                    &[],
                )
            };
        };
        // SAFETY: a fresh command buffer; every handle recorded below is
        // alive and kept by the schedule that owns this buffer.
        unsafe { d.begin_command_buffer(raw, &begin) }
            .map_err(|e| check("vkBeginCommandBuffer", e))?;
        // Earlier submissions (host writes are made visible by the submit).
        barrier(
            stages | vk::PipelineStageFlags::HOST,
            all | vk::AccessFlags::HOST_WRITE,
            stages,
            all,
        );
        let mut worked = false;
        for c in commands {
            // Timestamps and query resets need no barrier of their own.
            if c.is_work() {
                if worked {
                    barrier(stages, all, stages, all);
                }
                worked = true;
            }
            match c {
                Record::Dispatch {
                    pipeline,
                    sets,
                    push,
                    groups,
                } => {
                    // SAFETY: recording state; pipeline, layout and set alive.
                    unsafe {
                        d.cmd_bind_pipeline(raw, vk::PipelineBindPoint::COMPUTE, pipeline.raw);
                        d.cmd_bind_descriptor_sets(
                            raw,
                            vk::PipelineBindPoint::COMPUTE,
                            pipeline.layout.raw,
                            0,
                            &sets.iter().map(|s| s.raw).collect::<Vec<_>>(),
                            &[],
                        );
                        if !push.is_empty() {
                            d.cmd_push_constants(
                                raw,
                                pipeline.layout.raw,
                                vk::ShaderStageFlags::COMPUTE,
                                0,
                                push,
                            );
                        }
                        d.cmd_dispatch(raw, groups[0], groups[1], groups[2]);
                    }
                }
                Record::Copy {
                    src,
                    dst,
                    src_offset,
                    dst_offset,
                    size,
                } => {
                    let region = [vk::BufferCopy::default()
                        .src_offset(*src_offset)
                        .dst_offset(*dst_offset)
                        .size(*size)];
                    // SAFETY: recording state; both buffers alive, the region
                    // checked by the caller.
                    unsafe { d.cmd_copy_buffer(raw, src.raw, dst.raw, &region) };
                }
                Record::ResetQueries { pool, count } => {
                    let count = (*count).min(pool.count);
                    // SAFETY: recording state, outside any render pass; the
                    // range lies in the pool (clamped above).
                    unsafe { d.cmd_reset_query_pool(raw, pool.raw, 0, count) };
                }
                Record::Timestamp { pool, query } => {
                    if *query < pool.count {
                        // BOTTOM_OF_PIPE: written once every earlier command
                        // has completed, so the timestamp before a command
                        // is its start (the barrier serialises commands)
                        // and the one after it its end.
                        // SAFETY: recording state; the query lies in the
                        // pool (checked above) and was reset earlier in the
                        // run's submission order.
                        unsafe {
                            d.cmd_write_timestamp(
                                raw,
                                vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                                pool.raw,
                                *query,
                            )
                        };
                    }
                }
            }
        }
        barrier(
            stages,
            all,
            stages | vk::PipelineStageFlags::HOST,
            all | vk::AccessFlags::HOST_READ,
        );
        // SAFETY: recording state.
        unsafe { d.end_command_buffer(raw) }.map_err(|e| check("vkEndCommandBuffer", e))?;
        Ok(cb)
    }

    pub fn raw(&self) -> vk::CommandBuffer {
        self.raw
    }
}

impl Drop for CommandBuffer {
    fn drop(&mut self) {
        let pool = self.pool;
        self.device.bury(Box::new(move |d| {
            // SAFETY: the owner drops a command buffer only once no
            // submission of it is pending, and the queue is done with it;
            // destroying the pool frees the buffer.
            unsafe { d.destroy_command_pool(pool, None) };
        }));
    }
}

/// A timeline semaphore.
pub struct Semaphore {
    device: Arc<Device>,
    pub(super) raw: vk::Semaphore,
    /// The device's submission count when it was made (`bury`).
    born: u64,
}

impl Semaphore {
    pub fn new(device: &Arc<Device>, initial: u64) -> Result<Semaphore> {
        let mut t = vk::SemaphoreTypeCreateInfo::default()
            .semaphore_type(vk::SemaphoreType::TIMELINE)
            .initial_value(initial);
        let info = vk::SemaphoreCreateInfo::default().push_next(&mut t);
        // SAFETY: valid create info (timeline semaphores are enabled).
        let raw = unsafe { device.raw().create_semaphore(&info, None) }
            .map_err(|e| check("vkCreateSemaphore", e))?;
        Ok(Semaphore {
            device: device.clone(),
            raw,
            born: device.submissions(),
        })
    }

    pub fn value(&self) -> Result<u64> {
        // SAFETY: a live timeline semaphore.
        unsafe { self.device.raw().get_semaphore_counter_value(self.raw) }
            .map_err(|e| check("vkGetSemaphoreCounterValue", e))
    }

    /// Sets the value from the host; it must be above the current value and
    /// every pending signal's (the caller's bookkeeping ensures it).
    pub fn signal(&self, value: u64) -> Result<()> {
        let info = vk::SemaphoreSignalInfo::default()
            .semaphore(self.raw)
            .value(value);
        // SAFETY: a live timeline semaphore; the value rule is the caller's.
        unsafe { self.device.raw().signal_semaphore(&info) }
            .map_err(|e| check("vkSignalSemaphore", e))
    }

    /// Waits up to `timeout` until any `(semaphore, value)` is reached:
    /// `Ok(true)` once one is.
    pub fn wait_any(sems: &[(&Semaphore, u64)], timeout: Duration) -> Result<bool> {
        let Some((first, _)) = sems.first() else {
            return Ok(false);
        };
        let raws: Vec<vk::Semaphore> = sems.iter().map(|(s, _)| s.raw).collect();
        let values: Vec<u64> = sems.iter().map(|(_, v)| *v).collect();
        let info = vk::SemaphoreWaitInfo::default()
            .flags(vk::SemaphoreWaitFlags::ANY)
            .semaphores(&raws)
            .values(&values);
        // In slices, so that a thread blocked here at exit leaves the driver
        // before the driver tears down (see `process::enter_driver_wait`).
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            let slice = left.min(crate::process::DRIVER_WAIT_SLICE);
            let nanos = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
            let Some(_inside) = crate::process::enter_driver_wait() else {
                // Exit has begun: a poll answers "not yet"; a blocking wait
                // never returns into the driver.
                if timeout.is_zero() {
                    return Ok(false);
                }
                crate::process::park_until_exit();
            };
            // SAFETY: live semaphores of one device; arrays outlive the call.
            match unsafe { first.device.raw().wait_semaphores(&info, nanos) } {
                Ok(()) => return Ok(true),
                Err(vk::Result::TIMEOUT) if left <= slice => return Ok(false),
                Err(vk::Result::TIMEOUT) => {}
                Err(e) => return Err(check("vkWaitSemaphores", e)),
            }
        }
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        let raw = self.raw;
        let destroy: Burial = Box::new(move |d| {
            // SAFETY: owners keep a semaphore until no queued operation
            // names it, and the queue is done with it.
            unsafe { d.destroy_semaphore(raw, None) };
        });
        self.device.bury_made_at(self.born, destroy);
    }
}

/// A pool of timestamp queries (a profiled schedule's, two per operation).
pub struct QueryPool {
    device: Arc<Device>,
    raw: vk::QueryPool,
    count: u32,
}

impl QueryPool {
    pub fn new(device: &Arc<Device>, count: u32) -> Result<QueryPool> {
        let info = vk::QueryPoolCreateInfo::default()
            .query_type(vk::QueryType::TIMESTAMP)
            .query_count(count.max(1));
        // SAFETY: valid create info.
        let raw = unsafe { device.raw().create_query_pool(&info, None) }
            .map_err(|e| check("vkCreateQueryPool", e))?;
        Ok(QueryPool {
            device: device.clone(),
            raw,
            count,
        })
    }

    /// Every query's value in ticks, or `None` while any is not written
    /// yet (no run completed, or a run in progress reset them).
    pub fn results(&self) -> Option<Vec<u64>> {
        let mut out = vec![0u64; self.count as usize];
        if out.is_empty() {
            return Some(out);
        }
        // SAFETY: a live pool; `out` holds exactly `count` 64-bit results.
        match unsafe {
            self.device.raw().get_query_pool_results(
                self.raw,
                0,
                &mut out,
                vk::QueryResultFlags::TYPE_64,
            )
        } {
            Ok(()) => Some(out),
            Err(_) => None,
        }
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        let raw = self.raw;
        self.device.bury(Box::new(move |d| {
            // SAFETY: command buffers that write the pool are owned by the
            // same schedule, dropped with it once no run is pending, and
            // the queue is done with them.
            unsafe { d.destroy_query_pool(raw, None) };
        }));
    }
}
