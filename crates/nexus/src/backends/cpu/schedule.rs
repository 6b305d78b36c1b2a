//! Encoded CPU schedules: argument packs built once, replayed many times.

use std::sync::{Arc, OnceLock};

use super::launch::{self, KernelFn};
use super::library::CpuKernel;
use super::sync::CpuStream;
use crate::backends::common;
use crate::backends::common::args::{self, ArgPack};
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::types::LaunchDims;

enum CpuOp {
    Launch {
        func: KernelFn,
        args: ArgPack,
        dims: LaunchDims,
        scratch: usize,
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

pub struct CpuSchedule {
    ops: Vec<CpuOp>,
    /// Keeps kernels (their libraries) and buffers alive while encoded.
    _keep: Vec<hal::Op>,
    has_waits: bool,
    default_stream: Arc<OnceLock<CpuStream>>,
}

impl CpuSchedule {
    pub fn encode(ops: Vec<hal::Op>, default_stream: Arc<OnceLock<CpuStream>>) -> Result<Self> {
        let mut out = Vec::with_capacity(ops.len());
        for op in &ops {
            out.push(match op {
                hal::Op::Launch {
                    kernel,
                    args,
                    dims,
                    shared_memory,
                } => {
                    let k: &CpuKernel = common::downcast(
                        kernel.as_any(),
                        Status::InvalidKernel,
                        || format!("kernel '{}'", kernel.name()),
                        "CPU",
                    )?;
                    let values = args::values(args);
                    if *shared_memory as usize > super::MAX_SCRATCH_BYTES {
                        return Err(Error::new(
                            Status::InvalidSize,
                            format!(
                                "shared_memory {} exceeds the CPU limit of {} bytes",
                                shared_memory,
                                super::MAX_SCRATCH_BYTES
                            ),
                        ));
                    }
                    CpuOp::Launch {
                        func: k.func,
                        args: ArgPack::new(&values),
                        dims: *dims,
                        scratch: *shared_memory as usize,
                    }
                }
                hal::Op::Signal { event, value } => CpuOp::Signal {
                    event: event.clone(),
                    value: *value,
                },
                hal::Op::Wait { event, value } => CpuOp::Wait {
                    event: event.clone(),
                    value: *value,
                },
            });
        }
        let has_waits = out.iter().any(|o| matches!(o, CpuOp::Wait { .. }));
        Ok(CpuSchedule {
            ops: out,
            _keep: ops,
            has_waits,
            default_stream,
        })
    }

    /// Runs the operations in order on the calling thread.
    pub fn execute(&self) -> Result<()> {
        for op in &self.ops {
            match op {
                CpuOp::Launch {
                    func,
                    args,
                    dims,
                    scratch,
                } => {
                    debug_assert!(args.len() <= hal::MAX_KERNEL_ARGS);
                    launch::launch(*func, args, dims, *scratch)?
                }
                CpuOp::Signal { event, value } => event.signal(*value)?,
                CpuOp::Wait { event, value } => {
                    event.wait(*value, None)?;
                }
            }
        }
        Ok(())
    }
}

/// `hal::Schedule` lives on an `Arc` so streams can hold the job.
pub struct CpuScheduleHandle(pub Arc<CpuSchedule>);

impl hal::Schedule for CpuScheduleHandle {
    fn submit(&self, stream: Option<&dyn hal::Stream>, blocking: bool) -> Result<hal::Fence> {
        let stream = match stream {
            None => self.0.default_stream.get_or_init(CpuStream::new),
            Some(s) => common::downcast::<CpuStream>(
                s.as_any(),
                Status::InvalidStream,
                || "stream".into(),
                "CPU",
            )?,
        };
        // A blocking run on an idle stream runs on the calling thread (the
        // caller waits anyway); one with waits goes to the worker, so the
        // caller's wait stays interruptible.
        let inline = if blocking && !self.0.has_waits {
            stream.try_inline(&self.0)
        } else {
            None
        };
        let ticket = match inline {
            Some(t) => t,
            None => stream.submit(self.0.clone())?,
        };
        Ok(hal::Fence {
            queue: stream.shared.clone(),
            ticket,
        })
    }
}
