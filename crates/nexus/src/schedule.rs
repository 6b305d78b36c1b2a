//! Schedules (recorded once, run many times) and their commands.
//!
//! Commands can be edited after recording (arguments rebound); every edit
//! bumps the schedule's revision, and the next run re-encodes only then.
//! Each run's fence is recorded on every buffer the schedule uses, which is
//! how host copies and frees know what to wait for.
//!
//! Locks, in the order they may nest (see `backends::common`): `encoded`,
//! then `commands`, then a command's `state`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::buffer::Buffer;
use crate::device::Device;
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::library::Kernel;
use crate::property::Properties;
use crate::sync::{Event, Stream};
use crate::types::{LaunchDims, Scalar};

use crate::backends::common::{lock, usage::Usage};

#[derive(Clone)]
pub enum ArgValue {
    Buffer(Buffer),
    Scalar(Scalar),
}

#[derive(Clone)]
pub enum CommandKind {
    Kernel(Kernel),
    Signal {
        event: Event,
        value: u64,
    },
    Wait {
        event: Event,
        value: u64,
    },
    /// A copy between buffers of the schedule's device, in stream order.
    Copy {
        src: Buffer,
        dst: Buffer,
        src_offset: usize,
        dst_offset: usize,
        size: usize,
    },
    /// A buffer filled with one value of its element type.
    Fill {
        buffer: Buffer,
        pattern: Vec<u8>,
    },
}

#[derive(Default)]
struct KernelState {
    args: Vec<Option<ArgValue>>,
    dims: Option<LaunchDims>,
    shared_memory: u32,
}

struct CommandShared {
    kind: CommandKind,
    /// The device of the schedule the command belongs to.
    device: Device,
    profile: Option<Arc<Profile>>,
    index: usize,
    revision: Arc<AtomicU64>,
    state: Mutex<KernelState>,
}

/// What a schedule created with `profile=True` shares with its commands:
/// the encoded form (which records device timestamps where the runtime can)
/// and the host-measured time of the last run waited for.
#[derive(Default)]
pub(crate) struct Profile {
    encoded: Mutex<Option<Arc<dyn hal::Schedule>>>,
    host_ms: Mutex<Option<f64>>,
}

impl Profile {
    fn timings(&self) -> Option<Vec<(f64, f64)>> {
        // Cloned out: reading device timestamps may be a driver copy.
        let encoded = lock(&self.encoded).clone();
        encoded.and_then(|s| s.timings())
    }
}

#[derive(Clone)]
pub struct Command {
    inner: Arc<CommandShared>,
}

impl Command {
    /// The device the command's schedule runs on.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    pub fn kind(&self) -> &CommandKind {
        &self.inner.kind
    }

    pub fn label(&self) -> String {
        match &self.inner.kind {
            CommandKind::Kernel(k) => {
                format!("Command {} (kernel '{}')", self.inner.index, k.name())
            }
            CommandKind::Signal { value, .. } => {
                format!("Command {} (signal {value})", self.inner.index)
            }
            CommandKind::Wait { value, .. } => {
                format!("Command {} (wait {value})", self.inner.index)
            }
            CommandKind::Copy { size, .. } => {
                format!("Command {} (copy of {size} bytes)", self.inner.index)
            }
            CommandKind::Fill { buffer, .. } => {
                format!(
                    "Command {} (fill of {} bytes)",
                    self.inner.index,
                    buffer.size()
                )
            }
        }
    }

    fn kernel(&self) -> Result<&Kernel> {
        match &self.inner.kind {
            CommandKind::Kernel(k) => Ok(k),
            _ => Err(Error::new(
                Status::InvalidCommand,
                format!("{} is not a kernel command", self.label()),
            )),
        }
    }

    fn check_index(&self, index: i64) -> Result<usize> {
        if index < 0 || index as usize >= hal::MAX_KERNEL_ARGS {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "{}: argument index {index} is out of range (0..={})",
                    self.label(),
                    hal::MAX_KERNEL_ARGS - 1
                ),
            ));
        }
        Ok(index as usize)
    }

    fn set(&self, index: i64, value: ArgValue) -> Result<()> {
        let kernel = self.kernel()?;
        let index = self.check_index(index)?;
        if let ArgValue::Buffer(b) = &value {
            if b.device() != kernel.device() {
                return Err(Error::new(
                    Status::InvalidBuffer,
                    format!(
                        "{}: argument {index} is a buffer on device {}, the kernel runs on device {}",
                        self.label(),
                        b.device().label(),
                        kernel.device().label()
                    ),
                ));
            }
        }
        let mut st = lock(&self.inner.state);
        if st.args.len() <= index {
            st.args.resize(index + 1, None);
        }
        st.args[index] = Some(value);
        self.inner.revision.fetch_add(1, Ordering::Release);
        Ok(())
    }

    pub fn set_buffer(&self, index: i64, buffer: &Buffer) -> Result<()> {
        self.set(index, ArgValue::Buffer(buffer.clone()))
    }

    pub fn set_scalar(&self, index: i64, value: Scalar) -> Result<()> {
        self.set(index, ArgValue::Scalar(value))
    }

    /// Fixes the launch shape; a command is finalized once.
    pub fn finalize(&self, group: &[i64], grid: &[i64], shared_memory: i64) -> Result<()> {
        self.kernel()?;
        let dims = LaunchDims::new(group, grid)
            .map_err(|e| Error::new(e.status, format!("{}: {}", self.label(), e.message)))?;
        if !(0..=u32::MAX as i64).contains(&shared_memory) {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "{}: shared_memory {shared_memory} is out of range",
                    self.label()
                ),
            ));
        }
        let mut st = lock(&self.inner.state);
        if st.dims.is_some() {
            return Err(Error::new(
                Status::InvalidCommand,
                format!("{} is already finalized", self.label()),
            ));
        }
        st.dims = Some(dims);
        st.shared_memory = shared_memory as u32;
        self.inner.revision.fetch_add(1, Ordering::Release);
        Ok(())
    }

    pub fn event(&self) -> Option<&Event> {
        match &self.inner.kind {
            CommandKind::Signal { event, .. } | CommandKind::Wait { event, .. } => Some(event),
            _ => None,
        }
    }

    /// The validated operation this command encodes to.
    fn to_op(&self) -> Result<hal::Op> {
        match &self.inner.kind {
            CommandKind::Signal { event, value } => Ok(hal::Op::Signal {
                event: event.hal()?,
                value: *value,
            }),
            CommandKind::Wait { event, value } => Ok(hal::Op::Wait {
                event: event.hal()?,
                value: *value,
            }),
            CommandKind::Copy {
                src,
                dst,
                src_offset,
                dst_offset,
                size,
            } => Ok(hal::Op::Copy {
                src: src.hal()?,
                dst: dst.hal()?,
                src_offset: *src_offset,
                dst_offset: *dst_offset,
                size: *size,
            }),
            CommandKind::Fill { buffer, pattern } => Ok(hal::Op::Fill {
                buffer: buffer.hal()?,
                pattern: pattern.clone(),
            }),
            CommandKind::Kernel(kernel) => {
                let st = lock(&self.inner.state);
                let dims = st.dims.ok_or_else(|| {
                    Error::new(
                        Status::InvalidCommand,
                        format!(
                            "{} was never finalized (call finalize(group_size, grid_size))",
                            self.label()
                        ),
                    )
                })?;
                let args = st
                    .args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| match a {
                        Some(ArgValue::Buffer(b)) => {
                            Ok(hal::Arg::Buffer(b.hal().map_err(|e| {
                                Error::new(
                                    e.status,
                                    format!("{}: argument {i}: {}", self.label(), e.message),
                                )
                            })?))
                        }
                        Some(ArgValue::Scalar(s)) => Ok(hal::Arg::Scalar(*s)),
                        None => Err(Error::new(
                            Status::InvalidArgument,
                            format!("{}: argument {i} is not set", self.label()),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let hal_kernel = kernel.hal();
                let wanted = hal_kernel
                    .arity()
                    .or(hal_kernel.param_sizes().map(<[usize]>::len));
                if let Some(n) = wanted {
                    if args.len() < n {
                        return Err(Error::new(
                            Status::InvalidArgument,
                            format!(
                                "kernel '{}' takes {n} arguments, the command sets {}",
                                kernel.name(),
                                args.len()
                            ),
                        ));
                    }
                }
                if let Some(sizes) = hal_kernel.param_sizes() {
                    for (i, (arg, &size)) in args.iter().zip(sizes).enumerate() {
                        let (what, given) = match arg {
                            hal::Arg::Buffer(_) => {
                                ("a buffer (a 64-bit device address)".to_string(), 8)
                            }
                            hal::Arg::Scalar(s) => {
                                (format!("a {} scalar", s.data_type().numpy_name()), s.size())
                            }
                        };
                        if given != size {
                            return Err(Error::new(
                                Status::InvalidArgument,
                                format!(
                                    "kernel '{}' argument {i} is {what} of {given} bytes, but the kernel's parameter {i} is {size} bytes",
                                    kernel.name()
                                ),
                            ));
                        }
                    }
                }
                hal_kernel.check_launch(&args, &dims).map_err(|e| {
                    Error::new(e.status, format!("{}: {}", self.label(), e.message))
                })?;
                Ok(hal::Op::Launch {
                    kernel: kernel.hal().clone(),
                    args,
                    dims,
                    shared_memory: st.shared_memory,
                })
            }
        }
    }

    pub fn properties(&self) -> Properties {
        let mut root = json!({"ID": self.inner.index});
        match &self.inner.kind {
            CommandKind::Kernel(k) => {
                let st = lock(&self.inner.state);
                let types: Vec<i64> = st
                    .args
                    .iter()
                    .map(|a| match a {
                        Some(ArgValue::Buffer(b)) => b.data_type() as i64,
                        Some(ArgValue::Scalar(s)) => s.data_type() as i64,
                        None => -1,
                    })
                    .collect();
                let kinds: Vec<&str> = st
                    .args
                    .iter()
                    .map(|a| match a {
                        Some(ArgValue::Buffer(_)) => "buffer",
                        Some(ArgValue::Scalar(_)) => "scalar",
                        None => "unset",
                    })
                    .collect();
                root["Type"] = json!("kernel");
                root["Name"] = json!(k.name());
                root["Arguments"] = json!(types);
                root["ArgumentKinds"] = json!(kinds);
                root["SharedMemory"] = json!(st.shared_memory);
                root["Status"] = json!(if st.dims.is_some() {
                    "finalized"
                } else {
                    "recording"
                });
                if let Some(d) = st.dims {
                    root["GroupSize"] = json!(d.group);
                    root["GridSize"] = json!(d.grid);
                }
            }
            CommandKind::Signal { value, event } | CommandKind::Wait { value, event } => {
                let t = if matches!(self.inner.kind, CommandKind::Signal { .. }) {
                    "signal"
                } else {
                    "wait"
                };
                root["Type"] = json!(t);
                root["Value"] = json!(value);
                root["EventType"] = json!(event.event_type().name());
                root["Status"] = json!("finalized");
            }
            CommandKind::Copy {
                src_offset,
                dst_offset,
                size,
                ..
            } => {
                root["Type"] = json!("copy");
                root["Size"] = json!(size);
                root["SourceOffset"] = json!(src_offset);
                root["DestinationOffset"] = json!(dst_offset);
                root["Status"] = json!("finalized");
            }
            CommandKind::Fill { buffer, pattern } => {
                root["Type"] = json!("fill");
                root["Size"] = json!(buffer.size());
                root["PatternBytes"] = json!(pattern.len());
                root["Status"] = json!("finalized");
            }
        }
        if let Some(p) = &self.inner.profile {
            // Milliseconds, as upstream nexus names it, of the last run.
            if let Some((start, end)) = p.timings().and_then(|t| t.get(self.inner.index).copied()) {
                root["ElapsedTime"] = json!(end - start);
                root["StartTime"] = json!(start);
                root["EndTime"] = json!(end);
            }
        }
        Properties::new(self.label(), root)
    }
}

struct Encoded {
    revision: u64,
    /// Encoded with timestamps (a profiled schedule, or a trace active).
    profiled: bool,
    schedule: Arc<dyn hal::Schedule>,
    /// The buffers and events the encoding uses: a release of any of them
    /// means re-validating (which names it) before the next run.
    buffers: Vec<Buffer>,
    events: Vec<Event>,
    /// Where each run's fence is recorded: one per distinct memory.
    usages: Vec<Arc<Usage>>,
}

impl Encoded {
    fn is_current(&self, revision: u64) -> bool {
        self.revision == revision
            && !self.buffers.iter().any(Buffer::is_released)
            && !self.events.iter().any(Event::is_released)
    }
}

/// A submitted run: what a caller waits on.
pub struct Run {
    fence: hal::Fence,
    /// For a profiled schedule: when the run was submitted.
    profile: Option<(Arc<Profile>, std::time::Instant)>,
}

impl Run {
    /// `Ok(true)` once the run is complete, `Ok(false)` if `timeout` passed
    /// first, `Err` with the run's own failure.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        if !self.fence.wait(timeout) {
            return Ok(false);
        }
        if let Some((p, started)) = &self.profile {
            *lock(&p.host_ms) = Some(started.elapsed().as_secs_f64() * 1e3);
        }
        match self.fence.queue.take_failure(self.fence.ticket) {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }
}

pub(crate) struct ScheduleShared {
    device: Device,
    commands: Mutex<Vec<Command>>,
    revision: Arc<AtomicU64>,
    encoded: Mutex<Option<Arc<Encoded>>>,
    runs: AtomicU64,
    released: std::sync::atomic::AtomicBool,
    profile: Option<Arc<Profile>>,
}

/// A recorded list of commands for one device.
#[derive(Clone)]
pub struct Schedule {
    pub(crate) inner: Arc<ScheduleShared>,
}

impl Schedule {
    pub(crate) fn new(device: &Device, profile: bool) -> Schedule {
        let schedule = Schedule {
            inner: Arc::new(ScheduleShared {
                device: device.clone(),
                commands: Mutex::new(Vec::new()),
                revision: Arc::new(AtomicU64::new(1)),
                encoded: Mutex::new(None),
                runs: AtomicU64::new(0),
                released: std::sync::atomic::AtomicBool::new(false),
                profile: profile.then(|| Arc::new(Profile::default())),
            }),
        };
        device.inner.schedules.add(&schedule.inner);
        schedule
    }

    pub fn is_released(&self) -> bool {
        self.inner.released.load(Ordering::Acquire)
    }

    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    fn push(&self, kind: CommandKind) -> Result<Command> {
        if self.inner.released.load(Ordering::Acquire) {
            return Err(Error::new(
                Status::Released,
                format!("Schedule on {} was released", self.device().label()),
            ));
        }
        let mut cmds = lock(&self.inner.commands);
        let cmd = Command {
            inner: Arc::new(CommandShared {
                kind,
                device: self.inner.device.clone(),
                profile: self.inner.profile.clone(),
                index: cmds.len(),
                revision: self.inner.revision.clone(),
                state: Mutex::new(KernelState::default()),
            }),
        };
        cmds.push(cmd.clone());
        self.inner.revision.fetch_add(1, Ordering::Release);
        Ok(cmd)
    }

    pub fn create_command(&self, kernel: &Kernel) -> Result<Command> {
        if kernel.device() != self.device() {
            return Err(Error::new(
                Status::InvalidKernel,
                format!(
                    "kernel '{}' is on device {}, the schedule is on device {}",
                    kernel.name(),
                    kernel.device().label(),
                    self.device().label()
                ),
            ));
        }
        self.push(CommandKind::Kernel(kernel.clone()))
    }

    pub fn create_signal_command(&self, event: &Event, value: u64) -> Result<Command> {
        self.push(CommandKind::Signal {
            event: event.clone(),
            value,
        })
    }

    pub fn create_wait_command(&self, event: &Event, value: u64) -> Result<Command> {
        self.push(CommandKind::Wait {
            event: event.clone(),
            value,
        })
    }

    /// A copy of `size` bytes (`None`: all that fits) from `src` at
    /// `src_offset` to `dst` at `dst_offset`, ordered with the schedule's
    /// other commands. Either buffer may be on another device where the
    /// schedule's device can reach its memory (a peer GPU, host memory);
    /// work on that other device is ordered through events, as between
    /// streams.
    pub fn create_copy_command(
        &self,
        src: &Buffer,
        dst: &Buffer,
        size: Option<i64>,
        src_offset: i64,
        dst_offset: i64,
    ) -> Result<Command> {
        for (what, b) in [("source", src), ("destination", dst)] {
            b.ensure_live()?;
            if b.device() != self.device() && !self.device().can_copy_with(b.device())? {
                return Err(Error::new(
                    Status::InvalidBuffer,
                    format!(
                        "copy {what} {} is on device {}, the schedule on device {}, which cannot reach that memory (device.copy_buffer copies between any devices)",
                        b.label(),
                        b.device().label(),
                        self.device().label()
                    ),
                ));
            }
            b.hal()?;
        }
        let bad = |msg: String| Error::new(Status::InvalidSize, msg);
        if src_offset < 0 || dst_offset < 0 {
            return Err(bad(format!(
                "copy offsets must be >= 0, got source offset {src_offset} and destination offset {dst_offset}"
            )));
        }
        let (so, dof) = (src_offset as u64, dst_offset as u64);
        let room = (src.size() as u64)
            .saturating_sub(so)
            .min((dst.size() as u64).saturating_sub(dof));
        let size = match size {
            None => room,
            Some(n) if n <= 0 => {
                return Err(bad(format!("copy size {n} must be >= 1 byte")));
            }
            Some(n) => n as u64,
        };
        if size == 0 || so + size > src.size() as u64 || dof + size > dst.size() as u64 {
            return Err(bad(format!(
                "copy of {size} bytes from offset {so} of {} to offset {dof} of {} is out of range",
                src.label(),
                dst.label()
            )));
        }
        let same_memory = Arc::ptr_eq(&src.inner.usage, &dst.inner.usage);
        let (s0, d0) = (src.address()? + so, dst.address()? + dof);
        if same_memory && s0 < d0 + size && d0 < s0 + size {
            return Err(bad(format!(
                "copy source and destination overlap ({size} bytes at offsets {so} and {dof} of the same memory)"
            )));
        }
        self.push(CommandKind::Copy {
            src: src.clone(),
            dst: dst.clone(),
            src_offset: so as usize,
            dst_offset: dof as usize,
            size: size as usize,
        })
    }

    /// Fills `buffer` with `pattern` (one element's bytes) repeated.
    pub fn create_fill_command(&self, buffer: &Buffer, pattern: Vec<u8>) -> Result<Command> {
        if buffer.device() != self.device() {
            return Err(Error::new(
                Status::InvalidBuffer,
                format!(
                    "fill target {} is on device {}, the schedule on device {}",
                    buffer.label(),
                    buffer.device().label(),
                    self.device().label()
                ),
            ));
        }
        buffer.hal()?;
        if ![1, 2, 4, 8].contains(&pattern.len()) || !buffer.size().is_multiple_of(pattern.len()) {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "a fill value of {} bytes does not tile {} of {} bytes",
                    pattern.len(),
                    buffer.label(),
                    buffer.size()
                ),
            ));
        }
        self.push(CommandKind::Fill {
            buffer: buffer.clone(),
            pattern,
        })
    }

    pub fn commands(&self) -> Vec<Command> {
        lock(&self.inner.commands).clone()
    }

    /// The encoded form for the current revision, encoding only if edited
    /// (or a dependency released) since.
    fn encoded(&self) -> Result<Arc<Encoded>> {
        let mut enc = lock(&self.inner.encoded);
        let revision = self.inner.revision.load(Ordering::Acquire);
        let profiled = self.inner.profile.is_some() || crate::trace::active();
        if let Some(e) = enc.as_ref() {
            if e.is_current(revision) && e.profiled == profiled {
                return Ok(e.clone());
            }
        }
        // Runs in flight hold their own reference to the old encoding.
        let stale = enc.take();
        if self.inner.released.load(Ordering::Acquire) {
            return Err(Error::new(
                Status::Released,
                format!("Schedule on {} was released", self.device().label()),
            ));
        }
        let (ops, buffers, events) = {
            // An empty schedule encodes to an empty run: a no-op that
            // succeeds, in stream order like any other (DESIGN.md).
            let cmds = lock(&self.inner.commands);
            let ops = cmds
                .iter()
                .map(Command::to_op)
                .collect::<Result<Vec<_>>>()?;
            let mut buffers: Vec<Buffer> = Vec::new();
            let mut events: Vec<Event> = Vec::new();
            for c in cmds.iter() {
                match &c.inner.kind {
                    CommandKind::Kernel(_) => {
                        for a in lock(&c.inner.state).args.iter().flatten() {
                            if let ArgValue::Buffer(b) = a {
                                buffers.push(b.clone());
                            }
                        }
                    }
                    CommandKind::Signal { event, .. } | CommandKind::Wait { event, .. } => {
                        events.push(event.clone())
                    }
                    CommandKind::Copy { src, dst, .. } => {
                        buffers.push(src.clone());
                        buffers.push(dst.clone());
                    }
                    CommandKind::Fill { buffer, .. } => buffers.push(buffer.clone()),
                }
            }
            (ops, buffers, events)
        };
        let mut usages: Vec<Arc<Usage>> = Vec::new();
        for b in &buffers {
            if !usages.iter().any(|u| Arc::ptr_eq(u, &b.inner.usage)) {
                usages.push(b.inner.usage.clone());
            }
        }
        let schedule = if profiled {
            self.device().hal().encode_profiled(ops)?
        } else {
            self.device().hal().encode(ops)?
        };
        if let Some(p) = &self.inner.profile {
            *lock(&p.encoded) = Some(schedule.clone());
        }
        let encoded = Arc::new(Encoded {
            revision,
            profiled,
            schedule,
            buffers,
            events,
            usages,
        });
        *enc = Some(encoded.clone());
        drop(enc);
        drop(stale);
        Ok(encoded)
    }

    /// Queues one run on `stream` (the device's default stream for `None`)
    /// and records it on every buffer it uses. `blocking` says the caller
    /// waits for it at once (see `hal::Schedule::submit`).
    pub fn submit(&self, stream: Option<&Stream>, blocking: bool) -> Result<Run> {
        if let Some(s) = stream {
            if s.device() != self.device() {
                return Err(Error::new(
                    Status::InvalidStream,
                    format!(
                        "stream is on device {}, the schedule on device {}",
                        s.device().label(),
                        self.device().label()
                    ),
                ));
            }
        }
        let encoded = self.encoded()?;
        // A clock read only for a profiled schedule's host-side time.
        let started = self
            .inner
            .profile
            .as_ref()
            .map(|_| std::time::Instant::now());
        let hal_stream = stream.map(Stream::hal).transpose()?;
        let fence = encoded.schedule.submit(hal_stream.as_deref(), blocking)?;
        for usage in &encoded.usages {
            usage.record(&fence);
        }
        self.inner.runs.fetch_add(1, Ordering::Relaxed);
        if crate::trace::active() {
            self.trace_run(stream, &encoded, &fence);
        }
        let profile = self.inner.profile.clone().zip(started);
        Ok(Run { fence, profile })
    }

    fn trace_run(&self, stream: Option<&Stream>, encoded: &Encoded, fence: &hal::Fence) {
        let commands = self
            .commands()
            .iter()
            .map(|c| {
                let (kind, event) = match c.kind() {
                    CommandKind::Kernel(_) => ("kernel", None),
                    CommandKind::Signal { event, value } => ("signal", Some((event.id(), *value))),
                    CommandKind::Wait { event, value } => ("wait", Some((event.id(), *value))),
                    CommandKind::Copy { .. } => ("copy", None),
                    CommandKind::Fill { .. } => ("fill", None),
                };
                crate::trace::TracedCommand {
                    label: c.label(),
                    kind,
                    event,
                }
            })
            .collect();
        crate::trace::record(crate::trace::Record::Run {
            device: self.device().label(),
            stream: stream.map_or_else(|| "default stream".to_string(), Stream::name),
            submitted_us: crate::trace::now_us(),
            fence: fence.clone(),
            schedule: encoded.schedule.clone(),
            commands,
        });
    }

    /// Runs every command in order; `blocking` waits for the run and
    /// reports its failure.
    pub fn run(&self, stream: Option<&Stream>, blocking: bool) -> Result<()> {
        let run = self.submit(stream, blocking)?;
        if blocking {
            while !run.wait(Duration::from_secs(3600))? {}
        }
        Ok(())
    }

    /// Drops the commands and the encoded form now; later runs raise.
    pub fn release(&self) {
        self.inner.released.store(true, Ordering::Release);
        // Dropped after the locks: runs in flight keep their own reference.
        let commands = std::mem::take(&mut *lock(&self.inner.commands));
        let encoded = lock(&self.inner.encoded).take();
        drop((commands, encoded));
    }

    pub fn properties(&self) -> Properties {
        // One lock at a time: a run may hold `encoded` while it takes
        // `commands`.
        let revision = self.inner.revision.load(Ordering::Acquire);
        let encoded = lock(&self.inner.encoded)
            .as_ref()
            .is_some_and(|e| e.is_current(revision));
        let cmds = self.commands();
        let names: Vec<Value> = cmds.iter().map(|c| Value::from(c.label())).collect();
        let mut root = json!({
            "Status": if encoded { "encoded" } else { "recording" },
            "Count": cmds.len(),
            "Commands": names,
            "Runs": self.inner.runs.load(Ordering::Relaxed),
            "Device": self.device().label(),
            "Profile": self.inner.profile.is_some() as i64,
        });
        if let Some(p) = &self.inner.profile {
            // The last run, in milliseconds: first start to last end on the
            // device clock where the runtime records it, else the host's
            // time from submission to the wait that saw it complete.
            let device = p.timings().filter(|t| !t.is_empty()).map(|t| {
                let start = t.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
                let end = t.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                end - start
            });
            if let Some(ms) = device.or(*lock(&p.host_ms)) {
                root["ElapsedTime"] = json!(ms);
            }
        }
        Properties::new(format!("Schedule on {}", self.device().label()), root)
    }
}
