//! Encoded schedules: consecutive launches, copies and fills become one
//! command buffer (recorded once at `encode`, with a memory barrier
//! between commands and descriptor sets written once per command; a fill
//! copies from a buffer of its pattern repeated), split at signal and
//! wait commands, which the stream's submitter turns into timeline
//! semaphore signals and waits between the submissions of one batch
//! (`sync.rs`); events of other devices and runtimes are signalled and
//! waited for on the host, once the work before them has completed. A
//! profiled schedule also writes a timestamp before and
//! after every command into a query pool of its own, reset at the start of
//! each run, and `timings` reads the last completed run's.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use super::ffi::{self, Record};
use super::library::{Slot, VkKernel};
use super::sync::{self, VkStream};
use super::{memory, Gpu};
use crate::backends::common;
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::LaunchDims;

pub(super) enum Step {
    Gpu(ffi::CommandBuffer),
    /// A signal or wait command on `event` (see `EventStep`).
    Event {
        kind: EventStep,
        event: Arc<dyn hal::Event>,
        value: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum EventStep {
    /// Of an event of this device: a timeline semaphore signal.
    Signal,
    /// Of an event of this device: a timeline semaphore wait.
    Wait,
    /// Of another device's or runtime's event: given from the host once the
    /// work before it has completed.
    HostSignal,
    /// Of another device's or runtime's event: decided on the host once the
    /// work before it has completed; later work is submitted after.
    HostWait,
}

/// What a run submits, and everything its command buffers use.
pub(crate) struct Encoded {
    pub(super) steps: Vec<Step>,
    /// Whether a step may block its submitter (a wait, or a step on the
    /// host): such runs go through the stream's submitter thread.
    pub(super) may_block: bool,
    /// Pipelines, descriptor sets and buffers the recorded commands name.
    _resources: Vec<Arc<dyn Any + Send + Sync>>,
    /// The validated operations: kernels (their libraries), buffers, events.
    _ops: Vec<hal::Op>,
}

pub struct VkSchedule {
    gpu: Arc<Gpu>,
    encoded: Arc<Encoded>,
    default_stream: Arc<OnceLock<VkStream>>,
    /// A profiled schedule's timestamps: two queries per operation (its
    /// start and end), written by every run.
    queries: Option<Arc<ffi::QueryPool>>,
}

/// One command of a command buffer, ready to record.
enum Cmd {
    Dispatch(Launch),
    /// A buffer-to-buffer copy (copy commands, and fills from a pattern).
    Copy {
        src: Arc<ffi::Buffer>,
        dst: Arc<ffi::Buffer>,
        src_offset: u64,
        dst_offset: u64,
        size: u64,
    },
    /// A profiled run's query reset (at the start of its first command
    /// buffer) and timestamps.
    ResetQueries(Arc<ffi::QueryPool>),
    Timestamp(Arc<ffi::QueryPool>, u32),
}

/// The Vulkan buffer and byte offset behind a nexus buffer or view.
fn resolve(gpu: &Gpu, b: &Arc<dyn hal::Buffer>, what: &str) -> Result<(Arc<ffi::Buffer>, u64)> {
    let (root, offset) = match b.parent() {
        Some((root, offset)) => (root.as_ref(), offset as u64),
        None => (b.as_ref(), 0),
    };
    let raw = memory::lookup(gpu, root).ok_or_else(|| {
        Error::new(
            Status::InvalidBuffer,
            format!("{what}: the buffer is not memory of this Vulkan device"),
        )
    })?;
    Ok((raw, offset))
}

/// Most bytes of one pattern buffer a fill copies from.
const FILL_CHUNK: usize = 1 << 20;

/// `buffer` filled with `pattern`: copies from a host-visible buffer of the
/// pattern repeated (any pattern size, any alignment).
fn fill(
    gpu: &Arc<Gpu>,
    buffer: &Arc<dyn hal::Buffer>,
    pattern: &[u8],
    cmds: &mut Vec<Cmd>,
    resources: &mut Vec<Arc<dyn Any + Send + Sync>>,
) -> Result<()> {
    let size = buffer.size();
    if pattern.is_empty() || size == 0 {
        return Ok(());
    }
    let (dst, base) = resolve(gpu, buffer, "fill")?;
    let chunk = size
        .min(FILL_CHUNK / pattern.len() * pattern.len())
        .max(pattern.len());
    let bytes: Vec<u8> = pattern.iter().copied().cycle().take(chunk).collect();
    let src = Arc::new(ffi::Buffer::new(
        &gpu.dev,
        chunk as u64,
        &gpu.host_types,
        true,
    )?);
    src.write_mapped(0, &bytes)?;
    resources.push(src.clone());
    resources.push(dst.clone());
    let mut done = 0;
    while done < size {
        let n = chunk.min(size - done);
        cmds.push(Cmd::Copy {
            src: src.clone(),
            dst: dst.clone(),
            src_offset: 0,
            dst_offset: base + done as u64,
            size: n as u64,
        });
        done += n;
    }
    Ok(())
}

/// One launch, ready to record.
struct Launch {
    pipeline: Arc<ffi::Pipeline>,
    sets: Vec<Arc<ffi::DescriptorSet>>,
    push: Vec<u8>,
    groups: [u32; 3],
}

fn value_error(msg: String) -> Error {
    Error::new(Status::InvalidValue, msg)
}

fn prepare(
    gpu: &Arc<Gpu>,
    kernel: &VkKernel,
    name: &str,
    args: &[hal::Arg],
    dims: &LaunchDims,
    shared_memory: u32,
    resources: &mut Vec<Arc<dyn Any + Send + Sync>>,
) -> Result<Launch> {
    let l = &gpu.dev.info.limits;
    let group = dims.group;
    for axis in 0..3 {
        if group[axis] > l.max_compute_work_group_size[axis] {
            return Err(value_error(format!(
                "kernel '{name}': group size {:?} exceeds the device's maximum {:?} on axis {axis}",
                group, l.max_compute_work_group_size
            )));
        }
    }
    let threads = group.iter().map(|&g| u64::from(g)).product::<u64>();
    if threads > u64::from(l.max_compute_work_group_invocations) {
        return Err(value_error(format!(
            "kernel '{name}': a group of {threads} work-items exceeds the device's maximum of {}",
            l.max_compute_work_group_invocations
        )));
    }
    let mut groups = [1u32; 3];
    for axis in 0..3 {
        let n = dims.grid[axis].div_ceil(group[axis].max(1));
        if n > l.max_compute_work_group_count[axis] {
            return Err(value_error(format!(
                "kernel '{name}': grid size {:?} with group size {:?} needs {n} groups on axis {axis}; the device allows {:?}",
                dims.grid, group, l.max_compute_work_group_count
            )));
        }
        groups[axis] = n;
    }
    if shared_memory > l.max_compute_shared_memory_size {
        return Err(Error::new(
            Status::InvalidSize,
            format!(
                "kernel '{name}': shared_memory {shared_memory} exceeds the device's {} bytes per group",
                l.max_compute_shared_memory_size
            ),
        ));
    }
    type Bound = (Arc<ffi::Buffer>, Option<(u64, u64)>);
    let mut buffers: Vec<Option<Bound>> = vec![None; kernel.bindings.len()];
    let align = gpu
        .dev
        .info
        .limits
        .min_storage_buffer_offset_alignment
        .max(1);
    let mut push = vec![0u8; kernel.push_size as usize];
    for (i, (slot, arg)) in kernel.slots.iter().zip(args).enumerate() {
        match (slot, arg) {
            (Slot::Buffer { index, .. }, hal::Arg::Buffer(b)) => {
                // A view (`buffer[a:b]`) binds a range of its parent.
                let (root, part) = match b.parent() {
                    Some((root, offset)) => (root.as_ref(), Some((offset as u64, b.size() as u64))),
                    None => (b.as_ref(), None),
                };
                let raw = memory::lookup(gpu, root).ok_or_else(|| {
                    Error::new(
                        Status::InvalidBuffer,
                        format!("kernel '{name}' argument {i}: the buffer is not memory of this Vulkan device"),
                    )
                })?;
                if let Some((offset, _)) = part {
                    if offset % align != 0 {
                        return Err(value_error(format!(
                            "kernel '{name}' argument {i}: a view at byte offset {offset} of its buffer; Vulkan binds views at multiples of {align} bytes (minStorageBufferOffsetAlignment)"
                        )));
                    }
                }
                buffers[*index] = Some((raw, part));
            }
            (Slot::Scalar { offset, size }, hal::Arg::Scalar(s)) => {
                let bytes = s.bytes();
                let (o, n) = (*offset as usize, *size as usize);
                if bytes.len() != n || o + n > push.len() {
                    return Err(Error::new(
                        Status::InvalidArgument,
                        format!(
                            "kernel '{name}' argument {i} is a scalar of {} bytes, but the kernel's parameter {i} is {n} bytes",
                            bytes.len()
                        ),
                    ));
                }
                push[o..o + n].copy_from_slice(&bytes);
            }
            (Slot::Buffer { binding, .. }, hal::Arg::Scalar(_)) => {
                return Err(Error::new(
                    Status::InvalidArgument,
                    format!("kernel '{name}' argument {i} must be a buffer (set 0 binding {binding}), not a scalar"),
                ))
            }
            (Slot::Scalar { size, .. }, hal::Arg::Buffer(_)) => {
                return Err(Error::new(
                    Status::InvalidArgument,
                    format!("kernel '{name}' argument {i} is a buffer, but the kernel's parameter {i} is a scalar of {size} bytes"),
                ))
            }
        }
    }
    let buffers: Vec<Bound> = buffers
        .into_iter()
        .enumerate()
        .map(|(k, b)| {
            b.ok_or_else(|| {
                Error::new(
                    Status::InvalidArgument,
                    format!(
                        "kernel '{name}': buffer binding {} is not set",
                        kernel.bindings[k]
                    ),
                )
            })
        })
        .collect::<Result<_>>()?;
    let pipeline = kernel.pipeline(dims, shared_memory)?;
    let refs: Vec<(&ffi::Buffer, Option<(u64, u64)>)> = buffers
        .iter()
        .map(|(b, part)| (b.as_ref(), *part))
        .collect();
    let mut sets = vec![Arc::new(ffi::DescriptorSet::new(
        &gpu.dev,
        &kernel.layout,
        0,
        &refs,
    )?)];
    if kernel.spill {
        // Scalars beyond maxPushConstantsSize: a small buffer at set 1.
        let block = Arc::new(ffi::Buffer::new(
            &gpu.dev,
            push.len().max(4) as u64,
            &gpu.host_types,
            true,
        )?);
        block.write_mapped(0, &push)?;
        sets.push(Arc::new(ffi::DescriptorSet::new(
            &gpu.dev,
            &kernel.layout,
            1,
            &[(block.as_ref(), None)],
        )?));
        resources.push(block);
        push.clear();
    }
    for (b, _) in buffers {
        resources.push(b);
    }
    resources.push(pipeline.clone());
    for s in &sets {
        resources.push(s.clone());
    }
    Ok(Launch {
        pipeline,
        sets,
        push,
        groups,
    })
}

fn record(gpu: &Arc<Gpu>, cmds: &[Cmd]) -> Result<ffi::CommandBuffer> {
    let sets: Vec<Vec<&ffi::DescriptorSet>> = cmds
        .iter()
        .map(|c| match c {
            Cmd::Dispatch(l) => l.sets.iter().map(|s| s.as_ref()).collect(),
            _ => Vec::new(),
        })
        .collect();
    let records: Vec<Record> = cmds
        .iter()
        .zip(&sets)
        .map(|(c, s)| match c {
            Cmd::Dispatch(l) => Record::Dispatch {
                pipeline: &l.pipeline,
                sets: s,
                push: &l.push,
                groups: l.groups,
            },
            Cmd::Copy {
                src,
                dst,
                src_offset,
                dst_offset,
                size,
            } => Record::Copy {
                src,
                dst,
                src_offset: *src_offset,
                dst_offset: *dst_offset,
                size: *size,
            },
            Cmd::ResetQueries(pool) => Record::ResetQueries {
                pool,
                count: u32::MAX,
            },
            Cmd::Timestamp(pool, query) => Record::Timestamp {
                pool,
                query: *query,
            },
        })
        .collect();
    ffi::CommandBuffer::record(&gpu.dev, &records)
}

impl VkSchedule {
    /// `profile`: record each operation's start and end with timestamp
    /// queries (`timings`). A queue family without timestamps
    /// (`timestampValidBits` 0) encodes without them, and a profiled
    /// schedule then reports the host-measured time of whole runs only
    /// (the object model's fallback).
    pub fn encode(
        gpu: &Arc<Gpu>,
        ops: Vec<hal::Op>,
        default_stream: Arc<OnceLock<VkStream>>,
        profile: bool,
    ) -> Result<VkSchedule> {
        let mut steps = Vec::new();
        let mut resources: Vec<Arc<dyn Any + Send + Sync>> = Vec::new();
        let mut launches: Vec<Cmd> = Vec::new();
        let queries = if profile && gpu.dev.info.timestamp_bits > 0 && !ops.is_empty() {
            let count = u32::try_from(ops.len() * 2).map_err(|_| {
                value_error(format!(
                    "a profiled schedule of {} commands is too long",
                    ops.len()
                ))
            })?;
            let pool = Arc::new(ffi::QueryPool::new(&gpu.dev, count)?);
            // Reset at the start of the run's first command buffer (in
            // submission order before every timestamp of the run).
            launches.push(Cmd::ResetQueries(pool.clone()));
            resources.push(pool.clone());
            Some(pool)
        } else {
            None
        };
        let stamp = |launches: &mut Vec<Cmd>, query: usize| {
            if let Some(pool) = &queries {
                // `query` < 2 * ops.len(), which fits in u32 (checked above).
                launches.push(Cmd::Timestamp(pool.clone(), query as u32));
            }
        };
        for (i, op) in ops.iter().enumerate() {
            // A wait's timestamps follow it (the time it was satisfied);
            // every other operation's surround it.
            if !matches!(op, hal::Op::Wait { .. }) {
                stamp(&mut launches, 2 * i);
            }
            match op {
                hal::Op::Copy {
                    src,
                    dst,
                    src_offset,
                    dst_offset,
                    size,
                } => {
                    let (s, sbase) = resolve(gpu, src, "copy source")?;
                    let (d, dbase) = resolve(gpu, dst, "copy destination")?;
                    resources.push(s.clone());
                    resources.push(d.clone());
                    if *size > 0 {
                        launches.push(Cmd::Copy {
                            src: s,
                            dst: d,
                            src_offset: sbase + *src_offset as u64,
                            dst_offset: dbase + *dst_offset as u64,
                            size: *size as u64,
                        });
                    }
                }
                hal::Op::Fill { buffer, pattern } => {
                    fill(gpu, buffer, pattern, &mut launches, &mut resources)?;
                }
                hal::Op::Launch {
                    kernel,
                    args,
                    dims,
                    shared_memory,
                } => {
                    let k: &VkKernel = common::downcast(
                        kernel.as_any(),
                        Status::InvalidKernel,
                        || format!("kernel '{}'", kernel.name()),
                        "Vulkan",
                    )?;
                    launches.push(Cmd::Dispatch(prepare(
                        gpu,
                        k,
                        kernel.name(),
                        args,
                        dims,
                        *shared_memory,
                        &mut resources,
                    )?));
                }
                hal::Op::Signal { event, value } | hal::Op::Wait { event, value } => {
                    if matches!(op, hal::Op::Signal { .. }) {
                        stamp(&mut launches, 2 * i + 1);
                    }
                    if !launches.is_empty() {
                        steps.push(Step::Gpu(record(gpu, &launches)?));
                        launches.clear();
                    }
                    let (event, value) = (event.clone(), *value);
                    let own = sync::is_event_of(&event, gpu);
                    let kind = match (op, own) {
                        (hal::Op::Signal { .. }, true) => EventStep::Signal,
                        (hal::Op::Signal { .. }, false) => EventStep::HostSignal,
                        (_, true) => EventStep::Wait,
                        (_, false) => EventStep::HostWait,
                    };
                    steps.push(Step::Event { kind, event, value });
                    if matches!(op, hal::Op::Wait { .. }) {
                        stamp(&mut launches, 2 * i);
                        stamp(&mut launches, 2 * i + 1);
                    }
                    continue;
                }
            }
            stamp(&mut launches, 2 * i + 1);
        }
        if !launches.is_empty() {
            steps.push(Step::Gpu(record(gpu, &launches)?));
        }
        Ok(VkSchedule {
            gpu: gpu.clone(),
            encoded: Arc::new(Encoded {
                may_block: steps.iter().any(|s| {
                    !matches!(
                        s,
                        Step::Gpu(_)
                            | Step::Event {
                                kind: EventStep::Signal,
                                ..
                            }
                    )
                }),
                steps,
                _resources: resources,
                _ops: ops,
            }),
            default_stream,
            queries,
        })
    }
}

impl hal::Schedule for VkSchedule {
    fn timings(&self) -> Option<Vec<(f64, f64)>> {
        let ticks = self.queries.as_ref()?.results()?;
        let info = &self.gpu.dev.info;
        // Only the low `timestampValidBits` bits count; differences are
        // taken modulo 2^bits (a counter that wrapped during the run).
        let bits = info.timestamp_bits.min(64);
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let origin = *ticks.first()? & mask;
        // Nanoseconds per tick.
        let period = f64::from(info.limits.timestamp_period);
        let ms = |t: u64| ((t & mask).wrapping_sub(origin) & mask) as f64 * period / 1e6;
        Some(
            ticks
                .chunks_exact(2)
                .map(|p| (ms(p[0]), ms(p[1])))
                .collect(),
        )
    }

    fn submit(&self, stream: Option<&dyn hal::Stream>, blocking: bool) -> Result<hal::Fence> {
        let stream = match stream {
            None => {
                if self.default_stream.get().is_none() {
                    let s = VkStream::new(&self.gpu)?;
                    let _ = self.default_stream.set(s);
                }
                self.default_stream
                    .get()
                    .ok_or_else(|| Error::new(Status::InvalidStream, "Vulkan: no default stream"))?
            }
            Some(s) => common::downcast::<VkStream>(
                s.as_any(),
                Status::InvalidStream,
                || "stream".into(),
                "Vulkan",
            )?,
        };
        let ticket = stream.submit(self.encoded.clone(), blocking)?;
        Ok(sync::fence(stream, ticket))
    }
}
