//! Schedules: operations resolved once at `encode` (buffers to their
//! `MTLBuffer`, arguments to table entries, geometry and threadgroup memory
//! checked), then encoded per run into a command buffer of the stream's
//! queue: consecutive launches share one compute encoder (serial dispatch:
//! each sees the previous one's writes), copies and fills a blit encoder,
//! signals and waits are command-buffer event commands between encoders.
//!
//! A profiled schedule commits one command buffer per operation, so each
//! operation's GPU start and end times are known (`timings`).

use std::sync::{Arc, Mutex};

use super::library::{arg_kinds, MtlKernel};
use super::logic::{self, Binding, Dispatch, FillPlan, SHARED_SIZE_INDEX};
use super::memory::{self, Mem};
use super::sync::{event_of, MtlStream, MtlStreamHandle};
use super::{ffi, Gpu};
use crate::backends::common::queue::HeldRun;
use crate::backends::common::{self, lock};
use crate::error::{Error, Result, Status};
use crate::hal;

enum Bound {
    Buffer {
        index: usize,
        mem: Arc<Mem>,
        offset: usize,
    },
    Bytes {
        index: usize,
        bytes: Vec<u8>,
    },
}

enum Step {
    Launch {
        /// Holds the pipeline (and its library) while the schedule lives.
        kernel: Arc<dyn hal::Kernel>,
        bound: Vec<Bound>,
        dispatch: Dispatch,
        threadgroup: Option<u64>,
        shared_memory: u32,
    },
    Copy {
        src: Arc<Mem>,
        src_offset: usize,
        dst: Arc<Mem>,
        dst_offset: usize,
        size: usize,
    },
    Fill {
        dst: Arc<Mem>,
        offset: usize,
        size: usize,
        plan: FillPlan,
        seed: Option<Arc<Mem>>,
    },
    Signal {
        event: Arc<dyn hal::Event>,
        value: u64,
    },
    Wait {
        event: Arc<dyn hal::Event>,
        value: u64,
    },
}

pub(super) struct Encoded {
    gpu: Arc<Gpu>,
    steps: Vec<Step>,
    profiled: bool,
    /// Profiled: the command buffer of each operation of the latest run.
    last_run: Mutex<Vec<(usize, Arc<ffi::CommandBuffer>)>>,
}

fn kernel_of(kernel: &Arc<dyn hal::Kernel>) -> Result<&MtlKernel> {
    common::downcast::<MtlKernel>(
        kernel.as_any(),
        Status::InvalidKernel,
        || format!("kernel '{}'", kernel.name()),
        "Metal",
    )
}

fn foreign(what: String) -> Error {
    Error::new(
        Status::InvalidBuffer,
        format!("{what}: the buffer does not belong to the Metal runtime"),
    )
}

fn encode_launch(
    kernel: &Arc<dyn hal::Kernel>,
    args: &[hal::Arg],
    dims: &crate::types::LaunchDims,
    shared_memory: u32,
) -> Result<Step> {
    let k = kernel_of(kernel)?;
    let kinds = arg_kinds(args);
    let bindings = logic::layout(&k.name, &kinds)?;
    logic::check_reflection(&k.name, &kinds, &k.reflected)?;
    let dispatch = logic::dispatch(&k.name, dims, &k.limits)?;
    if logic::wastes_lanes(dims, &k.limits) {
        log::debug!(
            "metal: kernel '{}': group size {:?} is not a multiple of threadExecutionWidth {}",
            k.name,
            dims.group,
            k.limits.execution_width
        );
    }
    let threadgroup = logic::threadgroup_memory(&k.name, shared_memory, &k.limits)?;
    let mut bound = Vec::with_capacity(bindings.len());
    for b in bindings {
        bound.push(match b {
            Binding::Buffer { index, arg } => {
                let hal::Arg::Buffer(buffer) = &args[arg] else {
                    return Err(Error::new(
                        Status::InvalidArgument,
                        format!("kernel '{}' argument {arg} is not a buffer", k.name),
                    ));
                };
                let (mem, offset) = memory::resolve(buffer)
                    .ok_or_else(|| foreign(format!("kernel '{}' argument {arg}", k.name)))?;
                Bound::Buffer { index, mem, offset }
            }
            Binding::Bytes { index, bytes } => Bound::Bytes { index, bytes },
        });
    }
    Ok(Step::Launch {
        kernel: kernel.clone(),
        bound,
        dispatch,
        threadgroup,
        shared_memory,
    })
}

pub(super) fn encode(
    gpu: &Arc<Gpu>,
    ops: Vec<hal::Op>,
    profiled: bool,
) -> Result<Arc<dyn hal::Schedule>> {
    let mut steps = Vec::with_capacity(ops.len());
    for op in ops {
        steps.push(match op {
            hal::Op::Launch {
                kernel,
                args,
                dims,
                shared_memory,
            } => encode_launch(&kernel, &args, &dims, shared_memory)?,
            hal::Op::Copy {
                src,
                dst,
                src_offset,
                dst_offset,
                size,
            } => {
                let (s, so) = memory::resolve(&src).ok_or_else(|| foreign("copy source".into()))?;
                let (d, doff) =
                    memory::resolve(&dst).ok_or_else(|| foreign("copy destination".into()))?;
                Step::Copy {
                    src: s,
                    src_offset: so + src_offset,
                    dst: d,
                    dst_offset: doff + dst_offset,
                    size,
                }
            }
            hal::Op::Fill { buffer, pattern } => {
                let (dst, offset) =
                    memory::resolve(&buffer).ok_or_else(|| foreign("fill".into()))?;
                let size = buffer.size();
                let plan = logic::fill_plan(size, &pattern);
                let seed = match &plan {
                    FillPlan::Doubling { seed, .. } => Some(memory::staged(gpu, seed)?),
                    FillPlan::Byte(_) => None,
                };
                Step::Fill {
                    dst,
                    offset,
                    size,
                    plan,
                    seed,
                }
            }
            hal::Op::Signal { event, value } => {
                event_of(&event)?;
                logic::raw_value(value)?;
                Step::Signal { event, value }
            }
            hal::Op::Wait { event, value } => {
                event_of(&event)?;
                logic::raw_value(value)?;
                Step::Wait { event, value }
            }
        });
    }
    Ok(Arc::new(MtlSchedule(Arc::new(Encoded {
        gpu: gpu.clone(),
        steps,
        profiled,
        last_run: Mutex::new(Vec::new()),
    }))))
}

/// An encoder of a command buffer.
enum Encoder {
    Compute(ffi::ComputeEncoder),
    Blit(ffi::BlitEncoder),
}

/// The encoder open in a command buffer, if any. It is ended before the
/// buffer is committed or dropped (Metal asserts otherwise), also when
/// encoding fails midway (`Drop`).
struct Open(Option<Encoder>);

fn no_encoder(what: &str) -> Error {
    Error::new(
        Status::DriverError,
        format!("Metal: the command buffer gave no {what} encoder"),
    )
}

impl Open {
    fn end(&mut self) {
        match self.0.take() {
            Some(Encoder::Compute(c)) => c.end(),
            Some(Encoder::Blit(b)) => b.end(),
            None => {}
        }
    }

    fn compute(&mut self, cb: &ffi::CommandBuffer) -> Result<&ffi::ComputeEncoder> {
        if !matches!(self.0, Some(Encoder::Compute(_))) {
            self.end();
            self.0 = Some(Encoder::Compute(
                cb.compute().ok_or_else(|| no_encoder("compute"))?,
            ));
        }
        match &self.0 {
            Some(Encoder::Compute(c)) => Ok(c),
            _ => Err(no_encoder("compute")),
        }
    }

    fn blit(&mut self, cb: &ffi::CommandBuffer) -> Result<&ffi::BlitEncoder> {
        if !matches!(self.0, Some(Encoder::Blit(_))) {
            self.end();
            self.0 = Some(Encoder::Blit(cb.blit().ok_or_else(|| no_encoder("blit"))?));
        }
        match &self.0 {
            Some(Encoder::Blit(b)) => Ok(b),
            _ => Err(no_encoder("blit")),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.end();
    }
}

fn out_of_range(what: &str) -> Error {
    Error::new(
        Status::InvalidSize,
        format!("Metal {what}: a range lies outside its buffer"),
    )
}

impl Encoded {
    /// Encodes one GPU step into `open` (of `cb`).
    fn encode_step(&self, step: &Step, cb: &ffi::CommandBuffer, open: &mut Open) -> Result<()> {
        match step {
            Step::Launch {
                kernel,
                bound,
                dispatch,
                threadgroup,
                shared_memory,
            } => {
                let k = kernel_of(kernel)?;
                let c = open.compute(cb)?;
                c.set_pipeline(&k.pipeline);
                for b in bound {
                    let set = match b {
                        Bound::Buffer { index, mem, offset } => {
                            c.set_buffer(&mem.buf, *offset, *index)
                        }
                        Bound::Bytes { index, bytes } => c.set_bytes(bytes, *index),
                    };
                    set.ok_or_else(|| {
                        Error::new(
                            Status::InvalidArgument,
                            format!("kernel '{}': an argument cannot be bound", k.name),
                        )
                    })?;
                }
                // Set for every launch, so one command's size never leaks
                // into another's.
                c.set_threadgroup_memory(threadgroup.unwrap_or(0), 0);
                c.set_bytes(&shared_memory.to_ne_bytes(), SHARED_SIZE_INDEX);
                c.dispatch(dispatch);
            }
            Step::Copy {
                src,
                src_offset,
                dst,
                dst_offset,
                size,
            } => {
                open.blit(cb)?
                    .copy(&src.buf, *src_offset, &dst.buf, *dst_offset, *size)
                    .ok_or_else(|| out_of_range("copy"))?;
            }
            Step::Fill {
                dst,
                offset,
                size,
                plan,
                seed,
            } => {
                let b = open.blit(cb)?;
                match (plan, seed) {
                    (FillPlan::Byte(v), _) => b.fill(&dst.buf, *offset, *size, *v),
                    (
                        FillPlan::Doubling {
                            seed: bytes,
                            copies,
                        },
                        Some(seed),
                    ) => {
                        let mut ok = b.copy(&seed.buf, 0, &dst.buf, *offset, bytes.len());
                        for &(from, to, len) in copies {
                            ok = ok.and_then(|_| {
                                b.copy(&dst.buf, offset + from, &dst.buf, offset + to, len)
                            });
                        }
                        ok
                    }
                    (FillPlan::Doubling { .. }, None) => None,
                }
                .ok_or_else(|| out_of_range("fill"))?;
            }
            Step::Signal { .. } | Step::Wait { .. } => {}
        }
        Ok(())
    }
}

impl HeldRun<MtlStream> for Encoded {
    fn send(
        &self,
        stream: &MtlStream,
        from: usize,
        _idle: &mut dyn FnMut() -> bool,
    ) -> Result<Option<usize>> {
        ffi::pool(|| self.send_steps(stream, from))
    }

    fn wait_decidable(&self, at: usize) -> bool {
        if let Some(Step::Wait { event, value }) = self.steps.get(at) {
            if let Ok(ev) = event_of(event) {
                ev.wait_plannable(*value);
            }
        }
        // A planned wait is on the GPU: nothing needs to drain first.
        false
    }
}

impl Encoded {
    /// Encodes and commits steps `from..`, stopping at a wait that cannot
    /// be planned yet (its index is returned).
    fn send_steps(&self, stream: &MtlStream, from: usize) -> Result<Option<usize>> {
        if self.profiled && from == 0 {
            lock(&self.last_run).clear();
        }
        let mut cb = stream.command_buffer()?;
        let mut open = Open(None);
        let mut encoded = false;
        let mut signals = Vec::new();
        let mut stop = None;
        for (i, step) in self.steps.iter().enumerate().skip(from) {
            match step {
                Step::Signal { event, value } => {
                    open.end();
                    let ev = event_of(event)?;
                    let (epoch, raw) = ev.plan_signal(*value)?;
                    cb.signal(&epoch.counter, raw);
                    signals.push((ev, epoch, raw));
                }
                Step::Wait { event, value } => {
                    open.end();
                    match event_of(event)?.plan_wait(*value)? {
                        Some((epoch, raw)) => cb.wait(&epoch.counter, raw),
                        None => {
                            stop = Some(i);
                            break;
                        }
                    }
                }
                _ => self.encode_step(step, &cb, &mut open)?,
            }
            encoded = true;
            if self.profiled && !matches!(step, Step::Signal { .. } | Step::Wait { .. }) {
                // One command buffer per operation: its GPU times are the
                // operation's.
                open.end();
                let next = stream.command_buffer()?;
                let done = Arc::new(std::mem::replace(&mut cb, next));
                done.commit();
                stream.track(done.clone());
                lock(&self.last_run).push((i, done));
            }
        }
        open.end();
        if encoded {
            stream.commit(cb);
        }
        // Waits elsewhere may now rely on these signals.
        for (ev, epoch, raw) in signals {
            ev.committed(&epoch, raw);
        }
        Ok(stop)
    }
}

pub struct MtlSchedule(Arc<Encoded>);

impl hal::Schedule for MtlSchedule {
    fn submit(&self, stream: Option<&dyn hal::Stream>, _blocking: bool) -> Result<hal::Fence> {
        let queue = match stream {
            Some(s) => common::downcast::<MtlStreamHandle>(
                s.as_any(),
                Status::InvalidStream,
                || "stream".into(),
                "Metal",
            )?
            .queue
            .clone(),
            None => self.0.gpu.default_queue()?,
        };
        let ticket = queue.submit(self.0.clone())?;
        Ok(hal::Fence { queue, ticket })
    }

    fn timings(&self) -> Option<Vec<(f64, f64)>> {
        if !self.0.profiled {
            return None;
        }
        let last = lock(&self.0.last_run).clone();
        if last
            .iter()
            .any(|(_, cb)| cb.status() != logic::CommandBufferStatus::Completed)
        {
            return None;
        }
        let times: Vec<(usize, (f64, f64))> =
            last.iter().map(|(i, cb)| (*i, cb.gpu_times())).collect();
        let origin = times.first().map_or(0.0, |(_, (s, _))| *s);
        let mut out = Vec::with_capacity(self.0.steps.len());
        let mut prev = 0.0;
        for i in 0..self.0.steps.len() {
            match times.iter().find(|(j, _)| *j == i) {
                Some((_, (s, e))) => {
                    let (s, e) = ((s - origin) * 1e3, (e - origin) * 1e3);
                    out.push((s, e));
                    prev = e;
                }
                // Event commands take no GPU time of their own.
                None => out.push((prev, prev)),
            }
        }
        Some(out)
    }
}
