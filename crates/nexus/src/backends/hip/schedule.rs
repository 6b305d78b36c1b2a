//! Encoded HIP schedules.
//!
//! Encoding packs every launch's `void **kernelParams` once. Each run of two
//! or more consecutive kernels is built into a HIP graph at encode time
//! (node by node: stream capture would be invalidated by another thread's
//! implicitly synchronising call, such as a free)
//! and replayed with one `hipGraphLaunch`, from an exec of the stream's own
//! (`GraphStep`); a lone kernel is launched directly (cheaper than a
//! one-node graph). A signal command on a CUDA
//! event is a stream memory write (`hipStreamWriteValue64`) of the event's
//! mapped value; a wait command is decided when it is about to be queued
//! behind everything before it in its stream (`send`, with
//! `Timeline::plan`): a stream memory wait when a signal reaching it is
//! queued, passed on an idle stream when the host already set the value,
//! else held on the host (`common/queue.rs`). Signals of other runtimes' events
//! are host functions. A profiled schedule sends every operation as a step
//! of its own between two timing events (`hipEventRecord`), without graphs.

use std::sync::{Arc, Mutex};

use super::ffi::result as r;
use super::ffi::safe::{self, Event, Function, Graph, GraphExec, KernelLaunch};
use super::ffi::sys;
use super::library::HipKernel;
use super::stream::{HipDeviceStream, HipStream, StreamQueue};
use super::sync::{HipEvent, Timeline};
use super::Gpu;
use crate::backends::common::args::{self, ArgPack};
use crate::backends::common::per_stream::{PerStream, EXECS_PER_GRAPH, UNCLAIMED};
use crate::backends::common::queue::HeldRun;
use crate::backends::common::timeline::{wait_for_foreign, wait_until_moved, WaitPlan};
use crate::backends::common::{self, lock, release};
use crate::error::{Error, Result, Status};
use crate::hal;

struct Launch {
    function: Function,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    args: ArgPack,
}

impl Launch {
    fn params(&self) -> KernelLaunch<'_> {
        KernelLaunch {
            function: self.function,
            grid: self.grid,
            block: self.block,
            shared: self.shared,
            args: &self.args,
        }
    }
}

/// Consecutive kernels as one HIP graph, with an exec per stream it runs
/// on: the driver orders every launch of one exec after the one before,
/// whatever the stream, so one schedule run on two streams would not
/// overlap with a shared exec.
struct GraphStep {
    /// Per stream, its exec (the one made at encode time goes to the first).
    execs: Mutex<PerStream<Arc<KeptExec>>>,
    /// Instantiated again per stream; each exec keeps it (freed after them).
    graph: Arc<Graph>,
}

/// A graph exec destroyed on the release thread once the GPU is idle: not
/// every ROCm release lets `hipGraphExecDestroy` free an exec whose launch
/// is still running (CUDA does), and an exec goes while its last launch may
/// be in flight (evicted for a newer stream, or its schedule dropped).
struct KeptExec {
    exec: Option<GraphExec>,
    graph: Arc<Graph>,
    gpu: Arc<Gpu>,
}

impl KeptExec {
    fn new(gpu: &Arc<Gpu>, graph: &Arc<Graph>, exec: GraphExec) -> Arc<KeptExec> {
        Arc::new(KeptExec {
            exec: Some(exec),
            graph: graph.clone(),
            gpu: gpu.clone(),
        })
    }
}

impl Drop for KeptExec {
    fn drop(&mut self) {
        let (exec, graph, gpu) = (self.exec.take(), self.graph.clone(), self.gpu.clone());
        release::defer(Box::new(move || {
            if let Ok(_ctx) = gpu.bind() {
                let _ = r::device_synchronize(gpu.d);
            }
            drop(exec);
            drop(graph);
        }));
    }
}

impl GraphStep {
    fn new(gpu: &Arc<Gpu>, graph: Graph, exec: GraphExec) -> GraphStep {
        let graph = Arc::new(graph);
        let mut execs = PerStream::new(EXECS_PER_GRAPH);
        execs.insert(UNCLAIMED, KeptExec::new(gpu, &graph, exec));
        GraphStep {
            execs: Mutex::new(execs),
            graph,
        }
    }

    /// Queues the graph on `stream`, from the stream's own exec
    /// (instantiated on the stream's first run).
    fn launch(&self, gpu: &Arc<Gpu>, stream: sys::hipStream_t) -> Result<()> {
        let key = stream as usize;
        let kept = {
            // Held while instantiating: the driver does not synchronise a graph.
            let mut execs = lock(&self.execs);
            match execs.claim(key) {
                Some(kept) => kept.clone(),
                None => execs
                    .insert(
                        key,
                        KeptExec::new(gpu, &self.graph, self.graph.instantiate()?),
                    )
                    .clone(),
            }
        };
        match &kept.exec {
            Some(exec) => exec.launch(stream),
            None => Err(Error::new(
                Status::DriverError,
                "a HIP graph exec is gone (nexus bug)",
            )),
        }
    }
}

enum Step {
    Launch(Launch),
    Graph(GraphStep),
    /// A stream write of a HIP event's mapped value.
    Signal {
        timeline: Arc<Timeline>,
        value: u64,
    },
    /// Signals an event of another runtime from a host function.
    HostSignal {
        event: Arc<dyn hal::Event>,
        value: u64,
    },
    /// Waits for a HIP event's value (see `send` for how).
    Wait {
        timeline: Arc<Timeline>,
        value: u64,
    },
    /// Waits for an event of another runtime (held on the host).
    HostWait {
        event: Arc<dyn hal::Event>,
        value: u64,
    },
    /// Device to device, in stream order.
    Copy {
        dst: u64,
        src: u64,
        size: usize,
    },
    Fill {
        dst: u64,
        size: usize,
        pattern: Vec<u8>,
    },
}

/// What an encoded schedule queues: shared with the runs held on the host,
/// so it lives until the last of them has gone to the driver.
pub(crate) struct Steps {
    gpu: Arc<Gpu>,
    steps: Vec<Step>,
    /// Profiled schedules: a start and an end timing event per step, which
    /// is then one operation.
    timing: Option<Vec<(Event, Event)>>,
    /// Keeps kernels, buffers and events alive while the schedule exists.
    _ops: Vec<hal::Op>,
}

pub struct HipSchedule {
    steps: Arc<Steps>,
}

impl HipSchedule {
    pub(crate) fn encode(gpu: &Arc<Gpu>, ops: Vec<hal::Op>, profile: bool) -> Result<Self> {
        let _ctx = gpu.bind()?;
        // Timing events need a step per operation: no graphs then.
        let timing = match profile {
            true if gpu.d.hipEventElapsedTime.is_some() => {
                let ctx = gpu.context()?;
                let pair = || Ok((Event::create_timed(&ctx)?, Event::create_timed(&ctx)?));
                Some((0..ops.len()).map(|_| pair()).collect::<Result<Vec<_>>>()?)
            }
            _ => None,
        };
        let graphs = timing.is_none() && r::graph_nodes_supported(gpu.d);
        let mut steps = Vec::new();
        let mut pending: Vec<Launch> = Vec::new();
        for op in &ops {
            match op {
                hal::Op::Launch {
                    kernel,
                    args,
                    dims,
                    shared_memory,
                } => {
                    let k: &HipKernel = common::downcast(
                        kernel.as_any(),
                        Status::InvalidKernel,
                        || format!("kernel '{}'", kernel.name()),
                        "HIP",
                    )?;
                    if !Arc::ptr_eq(&k.gpu, gpu) {
                        return Err(Error::new(
                            Status::InvalidKernel,
                            format!(
                                "kernel '{}' was loaded on {}, the schedule runs on {}",
                                k.name_str(),
                                k.gpu.label(),
                                gpu.label()
                            ),
                        ));
                    }
                    let mut values = args::values(args);
                    if k.hidden_count {
                        values.truncate(k.arity.unwrap_or(values.len()));
                        values.push(dims.grid[0].to_ne_bytes().to_vec());
                    }
                    let threads = dims.threads_per_group();
                    let max =
                        r::func_attribute(gpu.d, k.function.raw(), sys::FUNC_MAX_THREADS_PER_BLOCK)
                            .unwrap_or(1024) as u64;
                    if threads > max {
                        return Err(Error::new(
                            Status::InvalidSize,
                            format!("kernel '{}': group of {threads} work-items exceeds its limit of {max} on {}", k.name_str(), gpu.label()),
                        ));
                    }
                    let groups = dims.groups();
                    if let Some(a) = (0..3).find(|&a| groups[a] > gpu.max_grid[a]) {
                        return Err(Error::new(
                            Status::InvalidSize,
                            format!(
                                "kernel '{}': {} groups on axis {a} exceed the limit of {} on {}",
                                k.name_str(),
                                groups[a],
                                gpu.max_grid[a],
                                gpu.label()
                            ),
                        ));
                    }
                    k.allow_shared_memory(*shared_memory)?;
                    pending.push(Launch {
                        function: k.function,
                        grid: dims.groups(),
                        block: dims.group,
                        shared: *shared_memory,
                        args: ArgPack::new(&values),
                    });
                }
                hal::Op::Copy {
                    src,
                    dst,
                    src_offset,
                    dst_offset,
                    size,
                } => {
                    Self::flush(gpu, graphs, &mut pending, &mut steps)?;
                    steps.push(Step::Copy {
                        dst: dst.address() + *dst_offset as u64,
                        src: src.address() + *src_offset as u64,
                        size: *size,
                    });
                }
                hal::Op::Fill { buffer, pattern } => {
                    Self::flush(gpu, graphs, &mut pending, &mut steps)?;
                    steps.push(Step::Fill {
                        dst: buffer.address(),
                        size: buffer.size(),
                        pattern: pattern.clone(),
                    });
                }
                hal::Op::Signal { event, value } | hal::Op::Wait { event, value } => {
                    Self::flush(gpu, graphs, &mut pending, &mut steps)?;
                    let value = *value;
                    let timeline = event
                        .as_any()
                        .downcast_ref::<HipEvent>()
                        .map(|e| e.timeline.clone());
                    steps.push(match (op, timeline) {
                        (hal::Op::Wait { .. }, Some(timeline)) => Step::Wait { timeline, value },
                        (hal::Op::Wait { .. }, None) => Step::HostWait {
                            event: event.clone(),
                            value,
                        },
                        (_, Some(timeline)) if gpu.mem_ops => Step::Signal { timeline, value },
                        _ => Step::HostSignal {
                            event: event.clone(),
                            value,
                        },
                    });
                }
            }
        }
        Self::flush(gpu, graphs, &mut pending, &mut steps)?;
        if timing.is_some() && steps.len() != ops.len() {
            return Err(Error::new(
                Status::DriverError,
                "a profiled HIP schedule has not one step per operation (nexus bug)",
            ));
        }
        Ok(HipSchedule {
            steps: Arc::new(Steps {
                gpu: gpu.clone(),
                steps,
                timing,
                _ops: ops,
            }),
        })
    }

    /// Turns the launches recorded since the last signal/wait into steps:
    /// a HIP graph of all of them where there are two or more and `graphs`
    /// (a runtime with graph nodes, an unprofiled schedule), else a direct
    /// launch each.
    fn flush(
        gpu: &Arc<Gpu>,
        graphs: bool,
        pending: &mut Vec<Launch>,
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        match pending.len() {
            0 => Ok(()),
            1 => {
                steps.push(Step::Launch(pending.remove(0)));
                Ok(())
            }
            _ => {
                let launches = std::mem::take(pending);
                if !graphs {
                    steps.extend(launches.into_iter().map(Step::Launch));
                    return Ok(());
                }
                match Self::build_graph(gpu, &launches) {
                    Ok((exec, graph)) => steps.push(Step::Graph(GraphStep::new(gpu, graph, exec))),
                    Err(e) => {
                        // Graph nodes of module kernels are not accepted by
                        // every ROCm release: launched one by one instead.
                        log::info!(
                            "{}: a HIP graph of {} kernels was refused, launching them one by one: {}",
                            gpu.label(),
                            launches.len(),
                            e.message
                        );
                        steps.extend(launches.into_iter().map(Step::Launch));
                    }
                }
                Ok(())
            }
        }
    }
}

impl HipSchedule {
    /// The launches as one HIP graph (a chain: each kernel depends on the
    /// one before, as in a stream), instantiated.
    fn build_graph(gpu: &Arc<Gpu>, launches: &[Launch]) -> Result<(GraphExec, Graph)> {
        let graph = Graph::create(&gpu.context()?)?;
        let mut previous = None;
        for (k, l) in launches.iter().enumerate() {
            previous = Some(graph.add_kernel(previous, &l.params()).map_err(|mut e| {
                e.message = format!("kernel {k} of {}: {}", launches.len(), e.message);
                e
            })?);
        }
        let exec = graph.instantiate().map_err(|mut e| {
            e.message = format!("{} (a graph of {} kernels)", e.message, launches.len());
            e
        })?;
        Ok((exec, graph))
    }
}

impl HeldRun<HipDeviceStream> for Steps {
    /// A wait for a HIP event follows `Timeline::plan`: a GPU-side wait
    /// (`hipStreamWaitValue64`) when a signal reaching the value was queued
    /// after the last host store, so the GPU waits only for queued work; a
    /// pass when the host set the value and the wait would execute now (the
    /// stream idle, nothing sent before it in this call); else held.
    fn send(
        &self,
        on: &HipDeviceStream,
        from: usize,
        stream_idle: &mut dyn FnMut() -> bool,
    ) -> Result<Option<usize>> {
        let g = &*self.gpu;
        let d = g.d;
        let _bound = on.context().bind()?;
        let stream = on.raw();
        let mut sent_any = false;
        for (i, step) in self.steps.iter().enumerate().skip(from) {
            let timing = self.timing.as_ref().and_then(|t| t.get(i));
            let waits = matches!(step, Step::Wait { .. } | Step::HostWait { .. });
            if let (Some((start, _)), false) = (timing, waits) {
                start.record(stream)?;
            }
            match step {
                Step::Launch(l) => l.params().launch(d, stream)?,
                Step::Graph(g) => g.launch(&self.gpu, stream)?,
                // The buffers live while the schedule does (its ops).
                Step::Copy { dst, src, size } => {
                    r::memcpy_dtod_async(d, *dst, *src, *size, stream)?
                }
                Step::Fill { dst, size, pattern } => {
                    r::memset_async(d, *dst, pattern, *size, stream)?
                }
                Step::Signal { timeline, value } => {
                    // The event's slot lives while the schedule does.
                    r::stream_write_value64(d, stream, timeline.device_address, *value)?;
                    timeline.mark_queued(&self.gpu, *value);
                }
                Step::Wait { timeline, value } => match timeline.plan(*value, g.mem_ops) {
                    WaitPlan::OnGpu => timeline.queue_wait(&self.gpu, stream, *value)?,
                    WaitPlan::PassWhenDrained if !sent_any && stream_idle() => {
                        // Executing now: the value is the host's, and there.
                        if timeline.value() < *value {
                            return Ok(Some(i));
                        }
                        record_passed(timing, stream)?;
                        continue;
                    }
                    WaitPlan::PassWhenDrained | WaitPlan::Hold => return Ok(Some(i)),
                },
                Step::HostWait { event, value } => {
                    let there = event.value().is_ok_and(|v| v >= *value);
                    if !(there && !sent_any && stream_idle()) {
                        return Ok(Some(i));
                    }
                    record_passed(timing, stream)?;
                    continue;
                }
                Step::HostSignal { event, value } => {
                    let (event, value) = (event.clone(), *value);
                    let signal = move || {
                        if let Err(e) = event.signal(value) {
                            log::error!(
                                "HIP host step signalling a foreign event failed: {}",
                                e.message
                            );
                        }
                    };
                    safe::launch_host_fn(d, stream, Box::new(signal))?;
                }
            }
            if let Some((start, end)) = timing {
                if waits {
                    // A wait decided now: it took no device time after this.
                    start.record(stream)?;
                }
                end.record(stream)?;
            }
            sent_any = true;
        }
        Ok(None)
    }

    /// Blocks until the wait at step `at` can be decided (see `send`);
    /// `true` when it then passes only once the stream has drained.
    fn wait_decidable(&self, at: usize) -> bool {
        match self.steps.get(at) {
            Some(Step::Wait { timeline, value }) => {
                let mem_ops = self.gpu.mem_ops;
                let mut plan = WaitPlan::Hold;
                wait_until_moved(|| {
                    plan = timeline.plan(*value, mem_ops);
                    plan != WaitPlan::Hold
                });
                plan == WaitPlan::PassWhenDrained
            }
            Some(Step::HostWait { event, value }) => {
                wait_for_foreign(event.as_ref(), *value);
                true
            }
            _ => false,
        }
    }
}

/// A profiled wait that passed on the host took no device time: both its
/// timing events at this point of the stream.
fn record_passed(timing: Option<&(Event, Event)>, stream: sys::hipStream_t) -> Result<()> {
    if let Some((start, end)) = timing {
        start.record(stream)?;
        end.record(stream)?;
    }
    Ok(())
}

impl HipSchedule {
    /// The queue of the stream a run goes to, with this GPU's context current.
    fn queue_for(&self, stream: Option<&dyn hal::Stream>) -> Result<Arc<StreamQueue>> {
        let g = &self.steps.gpu;
        Ok(match stream {
            None => g.default_queue()?,
            Some(s) => {
                let cs: &HipStream =
                    common::downcast(s.as_any(), Status::InvalidStream, || "stream".into(), "HIP")?;
                if !Arc::ptr_eq(&cs.gpu, g) {
                    return Err(Error::new(
                        Status::InvalidStream,
                        format!(
                            "stream is on {}, the schedule on {}",
                            cs.gpu.label(),
                            g.label()
                        ),
                    ));
                }
                cs.queue.clone()
            }
        })
    }
}

impl hal::Schedule for HipSchedule {
    /// From the timing events, relative to the first operation's start;
    /// `None` until every event of the last run is reached, or while the
    /// events mix two runs (see `common::one_run`).
    fn timings(&self) -> Option<Vec<(f64, f64)>> {
        let timing = self.steps.timing.as_ref()?;
        let origin = &timing.first()?.0;
        let _ctx = self.steps.gpu.bind().ok()?;
        let ms = |e: &Event| e.ms_since(origin).ok().flatten().map(f64::from);
        let pairs = timing
            .iter()
            .map(|(start, end)| Some((ms(start)?, ms(end)?)))
            .collect::<Option<Vec<_>>>()?;
        common::one_run(pairs)
    }

    fn submit(&self, stream: Option<&dyn hal::Stream>, _blocking: bool) -> Result<hal::Fence> {
        let _ctx = self.steps.gpu.bind()?;
        let queue = self.queue_for(stream)?;
        let ticket = queue.submit(self.steps.clone())?;
        Ok(hal::Fence { queue, ticket })
    }
}
