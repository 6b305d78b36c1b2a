//! What the object model hands a backend once it has validated a request:
//! where a library comes from, and the operations of a schedule.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Buffer, Event, Kernel};
use crate::types::{LaunchDims, Scalar};

/// Where a library's code comes from.
#[derive(Clone, Debug)]
pub enum LibrarySource {
    File(PathBuf),
    Bytes(Vec<u8>),
    /// The kernels every runtime ships (used by the self-check).
    Builtin,
}

/// A kernel argument after validation.
#[derive(Clone)]
pub enum Arg {
    Buffer(Arc<dyn Buffer>),
    Scalar(Scalar),
}

/// One validated operation of a schedule.
#[derive(Clone)]
pub enum Op {
    Launch {
        kernel: Arc<dyn Kernel>,
        args: Vec<Arg>,
        dims: LaunchDims,
        shared_memory: u32,
    },
    Signal {
        event: Arc<dyn Event>,
        value: u64,
    },
    Wait {
        event: Arc<dyn Event>,
        value: u64,
    },
    /// `size` bytes from `src` at `src_offset` to `dst` at `dst_offset`, both
    /// memory of the schedule's device (ranges checked above; they may be the
    /// same buffer only without overlap).
    Copy {
        src: Arc<dyn Buffer>,
        dst: Arc<dyn Buffer>,
        src_offset: usize,
        dst_offset: usize,
        size: usize,
    },
    /// The whole of `buffer` filled with `pattern` repeated (1, 2, 4 or 8
    /// bytes, dividing the buffer's size).
    Fill {
        buffer: Arc<dyn Buffer>,
        pattern: Vec<u8>,
    },
}
