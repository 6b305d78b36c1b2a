//! Schedules (recorded once, run many times) and their commands.
//!
//! Commands can be edited after recording (arguments rebound); every edit
//! bumps the schedule's revision, and the next run re-encodes only then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use crate::buffer::Buffer;
use crate::device::Device;
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::library::Kernel;
use crate::property::Properties;
use crate::sync::{Event, Stream};
use crate::types::{LaunchDims, Scalar};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
    index: usize,
    revision: Arc<AtomicU64>,
    state: Mutex<KernelState>,
}

#[derive(Clone)]
pub struct Command {
    inner: Arc<CommandShared>,
}

impl Command {
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

    pub fn is_finalized(&self) -> bool {
        match self.inner.kind {
            CommandKind::Kernel(_) => lock(&self.inner.state).dims.is_some(),
            _ => true,
        }
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
                if let Some(n) = kernel.hal().arity() {
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
    /// `handle::release_epoch()` when encoded: a release since means re-validate.
    releases: u64,
    schedule: Arc<dyn hal::Schedule>,
}

struct ScheduleShared {
    device: Device,
    commands: Mutex<Vec<Command>>,
    revision: Arc<AtomicU64>,
    encoded: Mutex<Option<Encoded>>,
    runs: AtomicU64,
    released: std::sync::atomic::AtomicBool,
}

/// A recorded list of commands for one device.
#[derive(Clone)]
pub struct Schedule {
    inner: Arc<ScheduleShared>,
}

impl Schedule {
    pub(crate) fn new(device: &Device) -> Schedule {
        Schedule {
            inner: Arc::new(ScheduleShared {
                device: device.clone(),
                commands: Mutex::new(Vec::new()),
                revision: Arc::new(AtomicU64::new(1)),
                encoded: Mutex::new(None),
                runs: AtomicU64::new(0),
                released: std::sync::atomic::AtomicBool::new(false),
            }),
        }
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

    /// The encoded form for the current revision, encoding only if edited since.
    fn encoded(&self) -> Result<Arc<dyn hal::Schedule>> {
        let mut enc = lock(&self.inner.encoded);
        let revision = self.inner.revision.load(Ordering::Acquire);
        let releases = crate::handle::release_epoch();
        if let Some(e) = enc.as_ref() {
            if e.revision == revision && e.releases == releases {
                return Ok(e.schedule.clone());
            }
        }
        // Drop the old encoding first, so released memory it held goes now.
        *enc = None;
        if self.inner.released.load(Ordering::Acquire) {
            return Err(Error::new(
                Status::Released,
                format!("Schedule on {} was released", self.device().label()),
            ));
        }
        let ops = {
            let cmds = lock(&self.inner.commands);
            if cmds.is_empty() {
                return Err(Error::new(
                    Status::InvalidSchedule,
                    format!(
                        "schedule on device {} has no commands",
                        self.device().label()
                    ),
                ));
            }
            cmds.iter()
                .map(Command::to_op)
                .collect::<Result<Vec<_>>>()?
        };
        let schedule = self.device().hal().encode(ops)?;
        *enc = Some(Encoded {
            revision,
            releases,
            schedule: schedule.clone(),
        });
        Ok(schedule)
    }

    /// Runs every command in order; see `hal::Schedule::run`.
    pub fn run(&self, stream: Option<&Stream>, blocking: bool) -> Result<()> {
        let encoded = self.checked_encoded(stream)?;
        match stream {
            Some(s) => encoded.run(Some(&*s.hal()?), blocking),
            None => encoded.run(None, blocking),
        }
    }

    fn checked_encoded(&self, stream: Option<&Stream>) -> Result<Arc<dyn hal::Schedule>> {
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
        self.inner.runs.fetch_add(1, Ordering::Relaxed);
        Ok(encoded)
    }

    /// Starts a run and returns what to wait on (see `hal::Schedule::launch`).
    pub fn launch(&self, stream: Option<&Stream>) -> Result<Box<dyn hal::Pending>> {
        let encoded = self.checked_encoded(stream)?;
        match stream {
            Some(s) => encoded.launch(Some(&*s.hal()?)),
            None => encoded.launch(None),
        }
    }

    /// Drops the commands and the encoded form now; later runs raise.
    pub fn release(&self) {
        self.inner.released.store(true, Ordering::Release);
        lock(&self.inner.commands).clear();
        *lock(&self.inner.encoded) = None;
    }

    pub fn properties(&self) -> Properties {
        let cmds = lock(&self.inner.commands);
        let revision = self.inner.revision.load(Ordering::Acquire);
        let encoded = lock(&self.inner.encoded)
            .as_ref()
            .is_some_and(|e| e.revision == revision);
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
