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
}
