//! Encoded CPU schedules: argument packs built once, replayed many times.

use std::sync::{Arc, OnceLock};

use super::launch::{self, ArgPack, KernelFn};
use super::library::CpuKernel;
use super::sync::CpuStream;
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
                    let k = kernel.as_any().downcast_ref::<CpuKernel>().ok_or_else(|| {
                        Error::new(
                            Status::InvalidKernel,
                            format!(
                                "kernel '{}' does not belong to the CPU runtime",
                                kernel.name()
                            ),
                        )
                    })?;
                    let values: Vec<Vec<u8>> = args
                        .iter()
                        .map(|a| match a {
                            hal::Arg::Buffer(b) => b.address().to_ne_bytes().to_vec(),
                            hal::Arg::Scalar(s) => s.bytes(),
                        })
                        .collect();
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

impl CpuScheduleHandle {
    /// The stream a run goes to; `None` means run inline on the caller's
    /// thread (the fast path: nothing to wait for and the caller waits anyway).
    fn target<'a>(
        &'a self,
        stream: Option<&'a dyn hal::Stream>,
        blocking: bool,
    ) -> Result<Option<&'a CpuStream>> {
        match stream {
            None if blocking && !self.0.has_waits => Ok(None),
            None => Ok(Some(self.0.default_stream.get_or_init(CpuStream::new))),
            Some(s) => s
                .as_any()
                .downcast_ref::<CpuStream>()
                .map(Some)
                .ok_or_else(|| {
                    Error::new(
                        Status::InvalidStream,
                        "stream does not belong to the CPU runtime",
                    )
                }),
        }
    }
}

impl hal::Schedule for CpuScheduleHandle {
    fn run(&self, stream: Option<&dyn hal::Stream>, blocking: bool) -> Result<()> {
        match self.target(stream, blocking)? {
            None => self.0.execute(),
            Some(stream) => {
                let ticket = stream.submit(self.0.clone())?;
                if blocking {
                    stream.wait_for(ticket)?;
                }
                Ok(())
            }
        }
    }

    fn launch(&self, stream: Option<&dyn hal::Stream>) -> Result<Box<dyn hal::Pending>> {
        match self.target(stream, true)? {
            None => {
                self.0.execute()?;
                Ok(Box::new(hal::Done))
            }
            Some(stream) => {
                let ticket = stream.submit(self.0.clone())?;
                Ok(Box::new(stream.pending(ticket)))
            }
        }
    }
}
