//! Encoded CUDA schedules.
//!
//! Encoding packs every launch's `void **kernelParams` once. Each run of
//! consecutive kernels, copies and fills of device memory is built into a
//! CUDA graph at encode time (node by node: stream capture would be
//! invalidated by another thread's implicitly synchronising call, such as a
//! free) and replayed with one `cuGraphLaunch`, from an exec of the stream's
//! own (`GraphStep`). A profiled schedule's graphs stamp the device clock
//! between their nodes (`clock.rs`), so its run is still one launch. A signal command on a CUDA
//! event is a stream memory write (`cuStreamWriteValue64`) of the event's
//! mapped value; a wait command is decided when it is about to be queued
//! behind everything before it in its stream (`send`, with
//! `Timeline::plan`): a stream memory wait when a signal reaching it is
//! queued, passed on an idle stream when the host already set the value,
//! else held on the host (`common/queue.rs`). Signals of other runtimes' events
//! are host functions.

use std::sync::Arc;

use super::clock::Stamps;
use super::ffi::result as r;
use super::ffi::safe::{self, Function, Graph, GraphExec, KernelLaunch};
use super::ffi::sys;
use super::library::CudaKernel;
use super::stream::{CudaDeviceStream, CudaStream, StreamQueue};
use super::sync::{CudaEvent, Timeline};
use super::Gpu;
use crate::backends::common::args::{self, ArgPack};
use crate::backends::common::per_stream::{PerStream, EXECS_PER_GRAPH, UNCLAIMED};
use crate::backends::common::queue::HeldRun;
use crate::backends::common::timeline::{wait_for_foreign, wait_until_moved, WaitPlan};
use crate::backends::common::{self, lock};
use crate::error::{Error, Result, Status};
use crate::hal;

struct Launch {
    function: Function,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    args: ArgPack,
}

/// An operation a CUDA graph can hold: kernels, and copies and fills of
/// device memory (others, such as copies from pageable host memory, stay
/// steps of their own).
enum Node {
    Kernel(Launch),
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

impl Node {
    /// Queues the node alone on `stream`.
    fn send(&self, d: &sys::Driver, stream: sys::CUstream) -> Result<()> {
        match self {
            Node::Kernel(l) => l.params().launch(d, stream),
            // The buffers live while the schedule does (its ops).
            Node::Copy { dst, src, size } => r::memcpy_async(d, *dst, *src, *size, stream),
            Node::Fill { dst, size, pattern } => r::memset_async(d, *dst, pattern, *size, stream),
        }
    }

    /// Adds the node to `graph` after `previous`; the last node added.
    fn add_to(
        &self,
        graph: &Graph,
        previous: Option<sys::CUgraphNode>,
    ) -> Result<sys::CUgraphNode> {
        match self {
            Node::Kernel(l) => graph.add_kernel(previous, &l.params()),
            Node::Copy { dst, src, size } => graph.add_copy(previous, *dst, *src, *size),
            Node::Fill { dst, size, pattern } => graph.add_fill(previous, *dst, *size, pattern),
        }
    }
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

/// Consecutive kernels, copies and fills of device memory as one CUDA
/// graph, with an exec per stream it runs on: the driver orders every
/// launch of one exec after the one before, whatever the stream, so one
/// schedule run on two streams would not overlap with a shared exec.
struct GraphStep {
    /// Per stream, its exec. A lone operation's first run on a stream is
    /// sent directly (`None`): a schedule run once pays for no
    /// instantiation.
    execs: std::sync::Mutex<PerStream<Option<Arc<GraphExec>>>>,
    /// Instantiated again per stream; freed after the execs.
    graph: Graph,
    /// The operation (with its index), when the graph holds only it.
    lone: Option<(usize, Node)>,
    /// A lone operation whose graph the driver would not instantiate is
    /// sent directly from then on.
    direct_only: std::sync::atomic::AtomicBool,
}

impl GraphStep {
    /// The exec to launch on `stream`; `None`: send the lone operation.
    fn exec_for(&self, stream: sys::CUstream) -> Result<Option<Arc<GraphExec>>> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.direct_only.load(Relaxed) {
            return Ok(None);
        }
        let key = stream as usize;
        // Held while instantiating: the driver does not synchronise a graph.
        let mut execs = lock(&self.execs);
        let slot = match execs.claim(key) {
            Some(slot) => slot,
            None if self.lone.is_some() => {
                execs.insert(key, None);
                return Ok(None);
            }
            None => execs.insert(key, None),
        };
        if let Some(exec) = slot {
            return Ok(Some(exec.clone()));
        }
        match self.graph.instantiate() {
            Ok(exec) => {
                let exec = Arc::new(exec);
                *slot = Some(exec.clone());
                Ok(Some(exec))
            }
            Err(e) if self.lone.is_some() => {
                log::warn!(
                    "a lone operation's CUDA graph was not instantiated, it is sent directly: {}",
                    e.message
                );
                self.direct_only.store(true, Relaxed);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Queues the graph on `stream` (the lone operation itself on its first
    /// run there, stamped around when profiled).
    fn send(&self, d: &sys::Driver, stream: sys::CUstream, stamps: Option<&Stamps>) -> Result<()> {
        match (self.exec_for(stream)?, &self.lone) {
            (Some(exec), _) => exec.launch(stream),
            (None, Some((op, node))) => {
                if let Some(st) = stamps {
                    st.stamp(stream, st.start(*op), 0)?;
                }
                node.send(d, stream)?;
                match stamps {
                    Some(st) => st.stamp(stream, st.end(*op), 0),
                    None => Ok(()),
                }
            }
            (None, None) => Err(Error::new(
                Status::DriverError,
                "a CUDA graph step has no exec (nexus bug)",
            )),
        }
    }
}

enum Step {
    /// A kernel, copy or fill on its own, in stream order.
    Single(Node),
    Graph(GraphStep),
    /// A stream write of a CUDA event's mapped value.
    Signal {
        timeline: Arc<Timeline>,
        value: u64,
    },
    /// Signals an event of another runtime from a host function.
    HostSignal {
        event: Arc<dyn hal::Event>,
        value: u64,
    },
    /// Waits for a CUDA event's value (see `send` for how).
    Wait {
        timeline: Arc<Timeline>,
        value: u64,
    },
    /// Waits for an event of another runtime (held on the host).
    HostWait {
        event: Arc<dyn hal::Event>,
        value: u64,
    },
}

/// What an encoded schedule queues: shared with the runs held on the host,
/// so it lives until the last of them has gone to the driver.
pub(crate) struct Steps {
    gpu: Arc<Gpu>,
    steps: Vec<Step>,
    /// Profiled schedules: a start and an end timestamp per operation.
    stamps: Option<Stamps>,
    /// Per step of a profiled schedule, the operation the stream stamps
    /// around the step; `None` where the step is a graph that stamps its
    /// nodes itself.
    timed_on_stream: Vec<Option<usize>>,
    /// Keeps kernels, buffers and events alive while the schedule exists.
    _ops: Vec<hal::Op>,
}

pub struct CudaSchedule {
    steps: Arc<Steps>,
}

impl CudaSchedule {
    pub(crate) fn encode(gpu: &Arc<Gpu>, ops: Vec<hal::Op>, profile: bool) -> Result<Self> {
        let _ctx = gpu.bind()?;
        // Without stamps (the kernel did not load: no PTX JIT, say) a
        // profiled schedule reports the host's time of whole runs only, as
        // the object model does for runtimes without device timestamps.
        let stamps = match profile {
            true => Stamps::new(gpu, ops.len())
                .map_err(|e| {
                    log::warn!(
                        "{}: profiled schedule without device timestamps: {}",
                        gpu.label(),
                        e.message
                    )
                })
                .ok(),
            false => None,
        };
        let mut enc = Encoder {
            gpu,
            stamps: stamps.as_ref(),
            steps: Vec::new(),
            timed_on_stream: Vec::new(),
            pending: Vec::new(),
        };
        for (index, op) in ops.iter().enumerate() {
            match op {
                hal::Op::Launch {
                    kernel,
                    args,
                    dims,
                    shared_memory,
                } => {
                    let k: &CudaKernel = common::downcast(
                        kernel.as_any(),
                        Status::InvalidKernel,
                        || format!("kernel '{}'", kernel.name()),
                        "CUDA",
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
                    enc.pending.push((
                        index,
                        Node::Kernel(Launch {
                            function: k.function,
                            grid: dims.groups(),
                            block: dims.group,
                            shared: *shared_memory,
                            args: ArgPack::new(&values),
                        }),
                    ));
                }
                hal::Op::Copy {
                    src,
                    dst,
                    src_offset,
                    dst_offset,
                    size,
                } => {
                    let (dst, src) = (
                        dst.address() + *dst_offset as u64,
                        src.address() + *src_offset as u64,
                    );
                    let node = Node::Copy {
                        dst,
                        src,
                        size: *size,
                    };
                    if gpu.graphs_hold(&[src, dst]) {
                        enc.pending.push((index, node));
                    } else {
                        enc.push(index, Step::Single(node))?;
                    }
                }
                hal::Op::Fill { buffer, pattern } => {
                    let node = Node::Fill {
                        dst: buffer.address(),
                        size: buffer.size(),
                        pattern: pattern.clone(),
                    };
                    if gpu.graphs_hold(&[buffer.address()]) {
                        enc.pending.push((index, node));
                    } else {
                        enc.push(index, Step::Single(node))?;
                    }
                }
                hal::Op::Signal { event, value } | hal::Op::Wait { event, value } => {
                    let value = *value;
                    let timeline = event
                        .as_any()
                        .downcast_ref::<CudaEvent>()
                        .map(|e| e.timeline.clone());
                    let step = match (op, timeline) {
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
                    };
                    enc.push(index, step)?;
                }
            }
        }
        enc.flush()?;
        let (steps, timed_on_stream) = (enc.steps, enc.timed_on_stream);
        Ok(CudaSchedule {
            steps: Arc::new(Steps {
                gpu: gpu.clone(),
                steps,
                stamps,
                timed_on_stream,
                _ops: ops,
            }),
        })
    }
}

/// Turns a schedule's operations into steps.
struct Encoder<'a> {
    gpu: &'a Arc<Gpu>,
    /// The timestamps of a profiled schedule.
    stamps: Option<&'a Stamps>,
    steps: Vec<Step>,
    timed_on_stream: Vec<Option<usize>>,
    /// Graph-able operations (with their index) since the last other step.
    pending: Vec<(usize, Node)>,
}

impl Encoder<'_> {
    /// Appends the step of operation `index`, after the pending ones.
    fn push(&mut self, index: usize, step: Step) -> Result<()> {
        self.flush()?;
        self.steps.push(step);
        self.timed_on_stream.push(self.stamps.map(|_| index));
        Ok(())
    }

    /// Turns the pending operations into one graph step (a driver without
    /// graph nodes runs them one by one). A lone operation is a graph too:
    /// a one-node graph's launch took 1.6 us on an H200 where
    /// `cuLaunchKernel` took 4.7 (bench/RESULTS.md).
    fn flush(&mut self) -> Result<()> {
        let nodes = std::mem::take(&mut self.pending);
        if nodes.is_empty() {
            return Ok(());
        }
        if !r::graph_nodes_supported(self.gpu.d) {
            for (index, node) in nodes {
                self.steps.push(Step::Single(node));
                self.timed_on_stream.push(self.stamps.map(|_| index));
            }
            return Ok(());
        }
        let count = nodes.len();
        let programmatic = match self.stamps {
            Some(st) => st.programmatic()?,
            None => false,
        };
        let (graph, exec) = match self.chain(&nodes, programmatic) {
            Err(e) if programmatic => {
                // The driver took the entry point but not this use of it;
                // an error without programmatic edges is the real one.
                let built = self.chain(&nodes, false)?;
                log::warn!(
                    "{}: a profiled CUDA graph with programmatic edges was refused, \
                     stamps follow kernels from now on: {}",
                    self.gpu.label(),
                    e.message
                );
                self.gpu.stamp_kernel()?.stop_programmatic();
                built
            }
            built => built?,
        };
        let mut execs = PerStream::new(EXECS_PER_GRAPH);
        if let Some(exec) = exec {
            execs.insert(UNCLAIMED, Some(Arc::new(exec)));
        }
        let lone = if count == 1 {
            nodes.into_iter().next()
        } else {
            None
        };
        self.steps.push(Step::Graph(GraphStep {
            execs: std::sync::Mutex::new(execs),
            graph,
            lone,
            direct_only: std::sync::atomic::AtomicBool::new(false),
        }));
        self.timed_on_stream.push(None);
        Ok(())
    }

    /// The graph of `nodes`: a chain, each node after the one before, as in
    /// a stream; profiled, a stamp before each node and after the last (the
    /// end of one operation is the start of the next), with programmatic
    /// edges between stamps and kernels if `programmatic`. Two or more
    /// operations are instantiated now, so a graph the driver refuses fails
    /// here; a lone one on its stream's first run (`GraphStep::exec_for`).
    fn chain(
        &self,
        nodes: &[(usize, Node)],
        programmatic: bool,
    ) -> Result<(Graph, Option<GraphExec>)> {
        let graph = Graph::create(&self.gpu.context()?)?;
        let mut previous = None;
        let mut last_op: Option<(usize, bool)> = None;
        for (k, (index, node)) in nodes.iter().enumerate() {
            let is_kernel = matches!(node, Node::Kernel(_));
            let add = || -> Result<sys::CUgraphNode> {
                let Some(st) = self.stamps else {
                    return node.add_to(&graph, previous);
                };
                let end_before = last_op.map_or(0, |(op, _)| st.end(op));
                // The stamp waits on the GPU for the kernel before it.
                let stamp_waits = programmatic && last_op.is_some_and(|(_, kernel)| kernel);
                let stamp =
                    st.add_to(&graph, previous, stamp_waits, st.start(*index), end_before)?;
                if is_kernel && programmatic {
                    let added = node.add_to(&graph, None)?;
                    st.link_kernel(&graph, stamp, stamp_waits, added)?;
                    Ok(added)
                } else {
                    node.add_to(&graph, Some(stamp))
                }
            };
            previous = Some(add().map_err(|mut e| {
                e.message = format!("operation {k} of {}: {}", nodes.len(), e.message);
                e
            })?);
            last_op = Some((*index, is_kernel));
        }
        if let (Some(st), Some((op, kernel))) = (self.stamps, last_op) {
            st.add_to(&graph, previous, programmatic && kernel, st.end(op), 0)?;
        }
        if nodes.len() == 1 {
            return Ok((graph, None));
        }
        let exec = graph.instantiate().map_err(|mut e| {
            e.message = format!("{} (a graph of {} operations)", e.message, nodes.len());
            e
        })?;
        Ok((graph, Some(exec)))
    }
}

impl HeldRun<CudaDeviceStream> for Steps {
    /// A wait for a CUDA event follows `Timeline::plan`: a GPU-side wait
    /// (`cuStreamWaitValue64`) when a signal reaching the value was queued
    /// after the last host store, so the GPU waits only for queued work; a
    /// pass when the host set the value and the wait would execute now (the
    /// stream idle, nothing sent before it in this call); else held.
    fn send(
        &self,
        on: &CudaDeviceStream,
        from: usize,
        stream_idle: &mut dyn FnMut() -> bool,
    ) -> Result<Option<usize>> {
        let g = &*self.gpu;
        let d = g.d;
        let _bound = on.context().bind()?;
        let stream = on.raw();
        let mut sent_any = false;
        for (i, step) in self.steps.iter().enumerate().skip(from) {
            // The operation the stream stamps around this step, if any.
            let timing = match (&self.stamps, self.timed_on_stream.get(i)) {
                (Some(st), Some(Some(op))) => Some((st, *op)),
                _ => None,
            };
            let waits = matches!(step, Step::Wait { .. } | Step::HostWait { .. });
            if let (Some((st, op)), false) = (timing, waits) {
                st.stamp(stream, st.start(op), 0)?;
            }
            match step {
                Step::Single(node) => node.send(d, stream)?,
                Step::Graph(g) => g.send(d, stream, self.stamps.as_ref())?,
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
                                "CUDA host step signalling a foreign event failed: {}",
                                e.message
                            );
                        }
                    };
                    safe::launch_host_fn(d, stream, Box::new(signal))?;
                }
            }
            if let Some((st, op)) = timing {
                // A wait decided now took no device time after this point.
                let start = if waits { st.start(op) } else { 0 };
                st.stamp(stream, st.end(op), start)?;
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
/// timestamps at this point of the stream.
fn record_passed(timing: Option<(&Stamps, usize)>, stream: sys::CUstream) -> Result<()> {
    match timing {
        Some((st, op)) => st.stamp(stream, st.start(op), st.end(op)),
        None => Ok(()),
    }
}

impl CudaSchedule {
    /// The queue of the stream a run goes to, with this GPU's context current.
    fn queue_for(&self, stream: Option<&dyn hal::Stream>) -> Result<Arc<StreamQueue>> {
        let g = &self.steps.gpu;
        Ok(match stream {
            None => g.default_queue()?,
            Some(s) => {
                let cs: &CudaStream = common::downcast(
                    s.as_any(),
                    Status::InvalidStream,
                    || "stream".into(),
                    "CUDA",
                )?;
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

impl hal::Schedule for CudaSchedule {
    fn timings(&self) -> Option<Vec<(f64, f64)>> {
        self.steps.stamps.as_ref()?.timings()
    }

    fn submit(&self, stream: Option<&dyn hal::Stream>, _blocking: bool) -> Result<hal::Fence> {
        let _ctx = self.steps.gpu.bind()?;
        let queue = self.queue_for(stream)?;
        let ticket = queue.submit(self.steps.clone())?;
        Ok(hal::Fence { queue, ticket })
    }
}
