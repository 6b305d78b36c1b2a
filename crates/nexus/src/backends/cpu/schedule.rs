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
    /// Host memory to host memory (the buffers live in `_keep`).
    Copy {
        src: Arc<dyn hal::Buffer>,
        dst: Arc<dyn hal::Buffer>,
        src_offset: usize,
        dst_offset: usize,
        size: usize,
    },
    Fill {
        buffer: Arc<dyn hal::Buffer>,
        pattern: Vec<u8>,
    },
}

/// Bytes per piece of a fill (written with `Buffer::write`).
const FILL_PIECE: usize = 1 << 16;

/// The clock profiled runs are timed on: the trace clock, in ms.
fn clock_ms() -> f64 {
    crate::trace::now_us() / 1e3
}

pub struct CpuSchedule {
    ops: Vec<CpuOp>,
    /// For a profiled schedule: (start, end) of each op of the last run.
    timings: Option<std::sync::Mutex<Vec<(f64, f64)>>>,
    /// Keeps kernels (their libraries) and buffers alive while encoded.
    _keep: Vec<hal::Op>,
    has_waits: bool,
    default_stream: Arc<OnceLock<CpuStream>>,
}

impl CpuSchedule {
    pub fn encode(
        ops: Vec<hal::Op>,
        default_stream: Arc<OnceLock<CpuStream>>,
        profile: bool,
    ) -> Result<Self> {
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
                hal::Op::Copy {
                    src,
                    dst,
                    src_offset,
                    dst_offset,
                    size,
                } => CpuOp::Copy {
                    src: src.clone(),
                    dst: dst.clone(),
                    src_offset: *src_offset,
                    dst_offset: *dst_offset,
                    size: *size,
                },
                hal::Op::Fill { buffer, pattern } => CpuOp::Fill {
                    buffer: buffer.clone(),
                    pattern: pattern.clone(),
                },
            });
        }
        let has_waits = out.iter().any(|o| matches!(o, CpuOp::Wait { .. }));
        Ok(CpuSchedule {
            timings: profile.then(|| std::sync::Mutex::new(Vec::new())),
            ops: out,
            _keep: ops,
            has_waits,
            default_stream,
        })
    }

    /// Runs the operations in order on the calling thread.
    pub fn execute(&self) -> Result<()> {
        let mut times = Vec::new();
        for op in &self.ops {
            let start = if self.timings.is_some() {
                clock_ms()
            } else {
                0.0
            };
            self.execute_op(op)?;
            if self.timings.is_some() {
                times.push((start, clock_ms()));
            }
        }
        if let Some(t) = &self.timings {
            *common::lock(t) = times;
        }
        Ok(())
    }

    fn execute_op(&self, op: &CpuOp) -> Result<()> {
        {
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
                CpuOp::Copy {
                    src,
                    dst,
                    src_offset,
                    dst_offset,
                    size,
                } => {
                    let from = (src.address() as usize + src_offset) as *const u8;
                    let to = (dst.address() as usize + dst_offset) as *mut u8;
                    // SAFETY: both are host memory of live CPU buffers (kept
                    // by the schedule), the ranges checked by the object
                    // model; `copy` is a memmove, so views of one allocation
                    // are fine too.
                    unsafe { std::ptr::copy(from, to, *size) };
                }
                CpuOp::Fill { buffer, pattern } => {
                    let piece: Vec<u8> = pattern
                        .iter()
                        .copied()
                        .cycle()
                        .take(FILL_PIECE.min(buffer.size()))
                        .collect();
                    let mut at = 0;
                    while at < buffer.size() {
                        let n = piece.len().min(buffer.size() - at);
                        buffer.write(at, &piece[..n])?;
                        at += n;
                    }
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

    fn timings(&self) -> Option<Vec<(f64, f64)>> {
        self.0.timings.as_ref().map(|t| common::lock(t).clone())
    }

    fn timings_on_host_clock(&self) -> bool {
        true
    }
}
