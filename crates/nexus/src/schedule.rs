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
    Signal { event: Event, value: u64 },
    Wait { event: Event, value: u64 },
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
    index: usize,
    revision: Arc<AtomicU64>,
    state: Mutex<KernelState>,
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
            CommandKind::Kernel(_) => None,
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
        }
        Properties::new(self.label(), root)
    }
}

struct Encoded {
    revision: u64,
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
}

impl Run {
    /// `Ok(true)` once the run is complete, `Ok(false)` if `timeout` passed
    /// first, `Err` with the run's own failure.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        if !self.fence.wait(timeout) {
            return Ok(false);
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
}

/// A recorded list of commands for one device.
#[derive(Clone)]
pub struct Schedule {
    pub(crate) inner: Arc<ScheduleShared>,
}

impl Schedule {
    pub(crate) fn new(device: &Device) -> Schedule {
        let schedule = Schedule {
            inner: Arc::new(ScheduleShared {
                device: device.clone(),
                commands: Mutex::new(Vec::new()),
                revision: Arc::new(AtomicU64::new(1)),
                encoded: Mutex::new(None),
                runs: AtomicU64::new(0),
                released: std::sync::atomic::AtomicBool::new(false),
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

    pub fn commands(&self) -> Vec<Command> {
        lock(&self.inner.commands).clone()
    }

    /// The encoded form for the current revision, encoding only if edited
    /// (or a dependency released) since.
    fn encoded(&self) -> Result<Arc<Encoded>> {
        let mut enc = lock(&self.inner.encoded);
        let revision = self.inner.revision.load(Ordering::Acquire);
        if let Some(e) = enc.as_ref() {
            if e.is_current(revision) {
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
        let schedule = self.device().hal().encode(ops)?;
        let encoded = Arc::new(Encoded {
            revision,
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
        let hal_stream = stream.map(Stream::hal).transpose()?;
        let fence = encoded.schedule.submit(hal_stream.as_deref(), blocking)?;
        for usage in &encoded.usages {
            usage.record(&fence);
        }
        self.inner.runs.fetch_add(1, Ordering::Relaxed);
        Ok(Run { fence })
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
        Properties::new(
            format!("Schedule on {}", self.device().label()),
            json!({
                "Status": if encoded { "encoded" } else { "recording" },
                "Count": cmds.len(),
                "Commands": names,
                "Runs": self.inner.runs.load(Ordering::Relaxed),
                "Device": self.device().label(),
            }),
        )
    }
}
