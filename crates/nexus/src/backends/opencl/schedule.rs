//! Encoded OpenCL schedules, re-enqueued on every run.
//!
//! Encoding creates one kernel object per launch and sets its arguments
//! once; a run enqueues each kernel with its global size (`ceil(grid /
//! group) * group` per axis) and local size. Consecutive signal and wait
//! commands form a host step: it runs on the host when the command before
//! it completes (an event callback; at once when nothing is pending), and
//! the commands after it wait, through a barrier, for a user event the
//! step completes once its waits are satisfied (see `sync.rs`).

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use super::ffi::result::{Event, Kernel, Mem, Queue};
use super::ffi::sys::{
    cl_event, CL_COMPLETE, CL_PROFILING_COMMAND_END, CL_PROFILING_COMMAND_START,
};
use super::library::{OclKernel, Param};
use super::sync::{OclEvent, OclStream, StreamQueue, Timeline};
use super::{memory, Dev};
use crate::backends::common::{self, lock};
use crate::error::{Error, Result, Status};
use crate::hal;

enum Target {
    Own(Arc<Timeline>),
    Foreign(Arc<dyn hal::Event>),
}

enum Action {
    Signal(Target, u64),
    Wait(Target, u64),
}

enum Step {
    Launch {
        kernel: Kernel,
        global: [usize; 3],
        local: [usize; 3],
        /// Memory objects the kernel's arguments name.
        _mems: Vec<Arc<Mem>>,
    },
    /// A copy between (parts of) buffers of the device.
    Copy {
        src: Arc<Mem>,
        dst: Arc<Mem>,
        src_offset: usize,
        dst_offset: usize,
        size: usize,
    },
    /// A buffer (or view) filled with a repeated pattern.
    Fill {
        mem: Arc<Mem>,
        pattern: Vec<u8>,
        offset: usize,
        size: usize,
    },
    Host(Arc<Vec<Action>>),
}

fn memory_of_op(b: &Arc<dyn hal::Buffer>, what: &str) -> Result<(Arc<Mem>, usize)> {
    memory::memory_of(b).ok_or_else(|| {
        Error::new(
            Status::InvalidBuffer,
            format!("{what}: the buffer does not belong to the OpenCL runtime"),
        )
    })
}

/// What a run enqueues; runs in flight hold it, so it lives until the last
/// of them is complete.
pub(crate) struct Steps {
    dev: Arc<Dev>,
    steps: Vec<Step>,
    /// Some step waits for an event (so a run may wait for the host).
    pub(crate) has_waits: bool,
    /// Some step runs on the host (it then needs the stream's last event).
    pub(crate) has_host_steps: bool,
    /// A profiled schedule: per step, the event of its last enqueue (their
    /// profiling info gives the device times of the last run).
    profile: Option<Mutex<Vec<Option<Event>>>>,
    /// Keeps kernels (their programs), buffers and events alive.
    _ops: Vec<hal::Op>,
}

pub struct OclSchedule {
    steps: Arc<Steps>,
}

fn target(event: &Arc<dyn hal::Event>) -> Target {
    match event.as_any().downcast_ref::<OclEvent>() {
        Some(e) => Target::Own(e.timeline.clone()),
        None => Target::Foreign(event.clone()),
    }
}

fn encode_launch(
    dev: &Arc<Dev>,
    kernel: &Arc<dyn hal::Kernel>,
    args: &[hal::Arg],
    dims: &crate::types::LaunchDims,
    shared_memory: u32,
) -> Result<Step> {
    let k: &OclKernel = common::downcast(
        kernel.as_any(),
        Status::InvalidKernel,
        || format!("kernel '{}'", kernel.name()),
        "OpenCL",
    )?;
    if !Arc::ptr_eq(&k.dev, dev) {
        return Err(Error::new(
            Status::InvalidKernel,
            format!(
                "kernel '{}' was loaded on {}, the schedule runs on {}",
                k.name,
                k.dev.label(),
                dev.label()
            ),
        ));
    }
    let threads = dims.threads_per_group();
    if threads > k.max_group {
        return Err(Error::new(
            Status::InvalidSize,
            format!(
                "kernel '{}': a group of {threads} work-items exceeds its limit of {} on {}",
                k.name,
                k.max_group,
                dev.label()
            ),
        ));
    }
    if let Some(a) = (0..3).find(|&a| dims.group[a] as u64 > dev.max_item[a]) {
        return Err(Error::new(
            Status::InvalidSize,
            format!(
                "kernel '{}': group_size {} on axis {a} exceeds the limit of {} on {}",
                k.name,
                dims.group[a],
                dev.max_item[a],
                dev.label()
            ),
        ));
    }
    let local_needed = shared_memory as u64 + k.static_local;
    if k.uses_local() && local_needed > dev.local_mem {
        return Err(Error::new(
            Status::InvalidSize,
            format!("kernel '{}': shared_memory {shared_memory} bytes (plus {} of its own) exceeds the {} bytes of local memory of {}", k.name, k.static_local, dev.local_mem, dev.label()),
        ));
    }
    let obj = k.instance()?;
    let mut mems = Vec::new();
    let mut set_buffer = |i: u32, user: usize, b: &Arc<dyn hal::Buffer>| -> Result<()> {
        // A view (`buffer[a:b]`) binds an OpenCL sub-buffer of its parent.
        let (root, offset) = match b.parent() {
            Some((root, offset)) => (root.clone(), offset),
            None => (b.clone(), 0),
        };
        let mem = memory::lookup(root.address()).ok_or_else(|| {
            Error::new(
                Status::InvalidBuffer,
                format!(
                    "kernel '{}' argument {user}: the buffer does not belong to the OpenCL runtime",
                    k.name
                ),
            )
        })?;
        let mem = if offset == 0 && b.size() == root.size() {
            mem
        } else {
            Arc::new(memory::view(dev, &mem, offset, b.size()).map_err(|mut e| {
                e.message = format!("kernel '{}' argument {user}: {}", k.name, e.message);
                e
            })?)
        };
        obj.set_mem(i, &mem)?;
        mems.push(mem);
        Ok(())
    };
    let wrong = |user: usize, p: &Param, given: &str| {
        Error::new(
            Status::InvalidArgument,
            format!(
                "kernel '{}' argument {user} is {given}, but its parameter {user} is {}",
                k.name,
                p.describe()
            ),
        )
    };
    match &k.params {
        Some(params) => {
            let mut user = 0usize;
            for (i, p) in params.iter().enumerate() {
                let i = i as u32;
                match p {
                    Param::Buffer { .. } => {
                        match args.get(user) {
                            Some(hal::Arg::Buffer(b)) => set_buffer(i, user, b)?,
                            Some(hal::Arg::Scalar(s)) => {
                                return Err(wrong(
                                    user,
                                    p,
                                    &format!("a {} scalar", s.data_type().numpy_name()),
                                ))
                            }
                            None => {
                                return Err(Error::new(
                                    Status::InvalidArgument,
                                    format!("kernel '{}' argument {user} is not set", k.name),
                                ))
                            }
                        }
                        user += 1;
                    }
                    Param::Scalar { .. } => {
                        match args.get(user) {
                            Some(hal::Arg::Scalar(s)) => {
                                obj.set_bytes(i, &s.bytes()).map_err(|mut e| {
                                    e.message = format!(
                                        "kernel '{}' argument {user}: {}",
                                        k.name, e.message
                                    );
                                    e
                                })?
                            }
                            Some(hal::Arg::Buffer(_)) => return Err(wrong(user, p, "a buffer")),
                            None => {
                                return Err(Error::new(
                                    Status::InvalidArgument,
                                    format!("kernel '{}' argument {user} is not set", k.name),
                                ))
                            }
                        }
                        user += 1;
                    }
                    Param::Local => obj.set_local(i, shared_memory as usize)?,
                    Param::SharedSize { size, .. } => {
                        let v = shared_memory as u64;
                        obj.set_bytes(i, &v.to_ne_bytes()[..(*size).min(8)])?
                    }
                    Param::GridSize => obj.set_bytes(i, &dims.grid[0].to_ne_bytes())?,
                }
            }
        }
        None => {
            let n = k.num_args as usize;
            if args.len() < n {
                return Err(Error::new(
                    Status::InvalidArgument,
                    format!(
                        "kernel '{}' takes {n} arguments, the command sets {}",
                        k.name,
                        args.len()
                    ),
                ));
            }
            for (i, a) in args.iter().take(n).enumerate() {
                match a {
                    hal::Arg::Buffer(b) => set_buffer(i as u32, i, b)?,
                    hal::Arg::Scalar(s) => {
                        obj.set_bytes(i as u32, &s.bytes()).map_err(|mut e| {
                            e.message = format!("kernel '{}' argument {i}: {}", k.name, e.message);
                            e
                        })?
                    }
                }
            }
        }
    }
    let groups = dims.groups();
    let global = std::array::from_fn(|a| groups[a] as usize * dims.group[a] as usize);
    let local = std::array::from_fn(|a| dims.group[a] as usize);
    Ok(Step::Launch {
        kernel: obj,
        global,
        local,
        _mems: mems,
    })
}

impl OclSchedule {
    /// `profile`: every command gets an event whose profiling info (the
    /// queue is created with profiling) gives its device times.
    pub(crate) fn encode(dev: &Arc<Dev>, ops: Vec<hal::Op>, profile: bool) -> Result<Self> {
        dev.check_process()?;
        let mut steps: Vec<Step> = Vec::new();
        let mut host: Vec<Action> = Vec::new();
        for op in &ops {
            match op {
                hal::Op::Copy {
                    src,
                    dst,
                    src_offset,
                    dst_offset,
                    size,
                } => {
                    if !host.is_empty() {
                        steps.push(Step::Host(Arc::new(std::mem::take(&mut host))));
                    }
                    let (s_mem, s_base) = memory_of_op(src, "copy source")?;
                    let (d_mem, d_base) = memory_of_op(dst, "copy destination")?;
                    steps.push(Step::Copy {
                        src: s_mem,
                        dst: d_mem,
                        src_offset: s_base + src_offset,
                        dst_offset: d_base + dst_offset,
                        size: *size,
                    });
                }
                hal::Op::Fill { buffer, pattern } => {
                    if !host.is_empty() {
                        steps.push(Step::Host(Arc::new(std::mem::take(&mut host))));
                    }
                    let (mem, base) = memory_of_op(buffer, "fill")?;
                    steps.push(Step::Fill {
                        mem,
                        pattern: pattern.clone(),
                        offset: base,
                        size: buffer.size(),
                    });
                }
                hal::Op::Launch {
                    kernel,
                    args,
                    dims,
                    shared_memory,
                } => {
                    if !host.is_empty() {
                        steps.push(Step::Host(Arc::new(std::mem::take(&mut host))));
                    }
                    steps.push(encode_launch(dev, kernel, args, dims, *shared_memory)?);
                }
                hal::Op::Signal { event, value } => {
                    host.push(Action::Signal(target(event), *value))
                }
                hal::Op::Wait { event, value } => host.push(Action::Wait(target(event), *value)),
            }
        }
        if !host.is_empty() {
            steps.push(Step::Host(Arc::new(host)));
        }
        let has_waits = steps.iter().any(|s| matches!(s, Step::Host(actions) if actions.iter().any(|a| matches!(a, Action::Wait(..)))));
        let has_host_steps = steps.iter().any(|s| matches!(s, Step::Host(_)));
        let profile = profile.then(|| Mutex::new((0..steps.len()).map(|_| None).collect()));
        Ok(OclSchedule {
            steps: Arc::new(Steps {
                dev: dev.clone(),
                has_waits,
                has_host_steps,
                profile,
                steps,
                _ops: ops,
            }),
        })
    }
}

/// A host step being carried out: its actions and the user event the
/// commands after it wait for.
struct HostRun {
    actions: Arc<Vec<Action>>,
    user: Event,
    /// The command before the step is this run's own: its failure fails
    /// the step (an earlier run's failure is that run's, reported to it).
    after_own: bool,
}

impl HostRun {
    /// Carries out actions `from..`; stops at a wait not yet satisfied,
    /// which resumes it when satisfied. Completes the user event at the end.
    fn resume(self: Arc<Self>, from: usize) {
        for i in from..self.actions.len() {
            match &self.actions[i] {
                Action::Signal(Target::Own(t), v) => t.set(*v),
                Action::Signal(Target::Foreign(e), v) => {
                    if let Err(err) = e.signal(*v) {
                        log::error!(
                            "OpenCL host step signalling a foreign event failed: {}",
                            err.message
                        );
                    }
                }
                Action::Wait(Target::Own(t), v) => {
                    let me = self.clone();
                    if !t.reached_or_register(*v, move || Box::new(move || me.resume(i + 1))) {
                        return;
                    }
                }
                Action::Wait(Target::Foreign(e), v) => {
                    if e.value().is_ok_and(|x| x >= *v) {
                        continue;
                    }
                    let (me, e, v) = (self.clone(), e.clone(), *v);
                    // The foreign event's own wait, in slices, on a thread
                    // of its own (foreign waits are rare).
                    let spawned = std::thread::Builder::new()
                        .name("nexus-opencl-wait".into())
                        .spawn(move || {
                            common::timeline::wait_for_foreign(e.as_ref(), v);
                            me.resume(i + 1);
                        });
                    if spawned.is_err() {
                        log::error!("OpenCL: cannot start a thread to wait for a foreign event");
                        let _ = self.user.set_status(-1);
                    }
                    return;
                }
            }
        }
        if let Err(e) = self.user.set_status(CL_COMPLETE) {
            log::error!("OpenCL: completing a host step failed: {}", e.message);
        }
    }
}

/// The command before a host step completed: run the step.
unsafe extern "C" fn host_step(_event: cl_event, status: i32, user: *mut c_void) {
    if crate::process::exiting() {
        return; // the driver may be gone: leave the step (and its box) be
    }
    // SAFETY: `user` is the box `Steps::enqueue` leaked for this call.
    let run = *unsafe { Box::from_raw(user as *mut Arc<HostRun>) };
    if status < 0 && run.after_own {
        let _ = run.user.set_status(status);
        return;
    }
    run.resume(0);
}

impl Steps {
    pub(crate) fn is_profiled(&self) -> bool {
        self.profile.is_some()
    }

    /// Enqueues every step on `q` after `prev` (the stream's last command,
    /// given when the schedule has host steps); returns the run's last
    /// event, and the first failure (what was enqueued before it still
    /// runs).
    pub(crate) fn enqueue(
        &self,
        q: &Queue,
        mut prev: Option<Event>,
    ) -> (Option<Event>, Result<()>) {
        let n = self.steps.len();
        // An event only where something follows on the host (or the run
        // ends), or for every command of a profiled schedule.
        let profiled = self.profile.is_some();
        let want = |i: usize| {
            profiled || i + 1 == n || matches!(self.steps.get(i + 1), Some(Step::Host(_)))
        };
        let mut own_prev = false;
        let mut timed: Vec<Option<Event>> = match &self.profile {
            Some(_) => (0..n).map(|_| None).collect(),
            None => Vec::new(),
        };
        for (i, step) in self.steps.iter().enumerate() {
            let result = match step {
                Step::Launch {
                    kernel,
                    global,
                    local,
                    ..
                } => q.ndrange(kernel, global, local, None, want(i)),
                Step::Copy {
                    src,
                    dst,
                    src_offset,
                    dst_offset,
                    size,
                } => q.copy(src, dst, *src_offset, *dst_offset, *size, want(i)),
                Step::Fill {
                    mem,
                    pattern,
                    offset,
                    size,
                } => q.fill(mem, pattern, *offset, *size, want(i)),
                Step::Host(actions) => {
                    let own = own_prev;
                    own_prev = true; // the step's barrier
                    self.enqueue_host(q, actions, &mut prev, own).map(|_| None)
                }
            };
            let result = result.map(|ev| {
                if let (Some(slot), Some(e)) = (timed.get_mut(i), &ev) {
                    *slot = Some(e.clone());
                }
                if ev.is_some() {
                    prev = ev;
                    own_prev = true;
                }
            });
            if let Err(mut e) = result {
                e.message = format!("{}: {}", self.dev.label(), e.message);
                return (prev, Err(e));
            }
        }
        // One run's events, swapped in whole: timings never mix two runs.
        if let Some(p) = &self.profile {
            *lock(p) = timed;
        }
        (prev, Ok(()))
    }

    fn enqueue_host(
        &self,
        q: &Queue,
        actions: &Arc<Vec<Action>>,
        prev: &mut Option<Event>,
        after_own: bool,
    ) -> Result<()> {
        let user = Event::user(self.dev.a, self.dev.ctx()?)?;
        let run = Arc::new(HostRun {
            actions: actions.clone(),
            user: user.clone(),
            after_own,
        });
        // The step runs after everything before it in the stream: the
        // previous command's completion (a barrier waits for the previous
        // step's own user event, so that is covered too).
        let pending = match prev.as_ref() {
            Some(p) => {
                let s = p.status();
                if s < 0 && after_own {
                    let _ = user.set_status(s);
                    None
                } else if s < 0 || s == CL_COMPLETE {
                    None
                } else {
                    Some(p)
                }
            }
            None => None,
        };
        match pending {
            Some(p) => {
                let boxed = Box::into_raw(Box::new(run)) as *mut c_void;
                // SAFETY: host_step takes back exactly this box, once, and
                // only takes leaf locks.
                if let Err(e) = unsafe { p.on_complete(host_step, boxed) } {
                    // SAFETY: the callback was not set; reclaim the box.
                    drop(unsafe { Box::from_raw(boxed as *mut Arc<HostRun>) });
                    let _ = user.set_status(-1);
                    return Err(e);
                }
            }
            None if after_own && prev.as_ref().is_some_and(|p| p.status() < 0) => {}
            None => run.resume(0),
        }
        *prev = Some(q.barrier(Some(&user))?);
        Ok(())
    }
}

impl OclSchedule {
    fn queue_for(&self, stream: Option<&dyn hal::Stream>) -> Result<Arc<StreamQueue>> {
        let dev = &self.steps.dev;
        Ok(match stream {
            None => dev.default_queue()?,
            Some(s) => {
                let os: &OclStream = common::downcast(
                    s.as_any(),
                    Status::InvalidStream,
                    || "stream".into(),
                    "OpenCL",
                )?;
                if !Arc::ptr_eq(&os.queue.dev, dev) {
                    return Err(Error::new(
                        Status::InvalidStream,
                        format!(
                            "stream is on {}, the schedule on {}",
                            os.queue.dev.label(),
                            dev.label()
                        ),
                    ));
                }
                os.queue.clone()
            }
        })
    }
}

impl Steps {
    /// Per operation, (start, end) in milliseconds from the first command's
    /// start, of the last run (`None` until its commands have finished).
    /// Signals and waits run on the host between commands: they are placed,
    /// with no length, where the command before them ended.
    fn timings(&self) -> Option<Vec<(f64, f64)>> {
        // Cloned out: the driver is asked with no lock held.
        let events = lock(self.profile.as_ref()?).clone();
        let mut origin: Option<u64> = None;
        let mut last_end = 0.0;
        let mut out = Vec::new();
        for (step, ev) in self.steps.iter().zip(events.iter()) {
            if let Step::Host(actions) = step {
                out.extend(actions.iter().map(|_| (last_end, last_end)));
                continue;
            }
            let ev = ev.as_ref()?;
            let start = ev.profiling_ns(CL_PROFILING_COMMAND_START)?;
            let end = ev.profiling_ns(CL_PROFILING_COMMAND_END)?;
            let o = *origin.get_or_insert(start);
            let ms = |t: u64| t.saturating_sub(o) as f64 / 1e6;
            last_end = ms(end);
            out.push((ms(start), last_end));
        }
        Some(out)
    }
}

impl hal::Schedule for OclSchedule {
    fn timings(&self) -> Option<Vec<(f64, f64)>> {
        self.steps.timings()
    }

    fn submit(&self, stream: Option<&dyn hal::Stream>, _blocking: bool) -> Result<hal::Fence> {
        self.steps.dev.check_process()?;
        let queue = self.queue_for(stream)?;
        let ticket = queue.submit(&self.steps)?;
        Ok(hal::Fence {
            queue: queue.done.clone(),
            ticket,
        })
    }
}
