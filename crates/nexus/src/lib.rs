//! nexus: one object model for every accelerator runtime on a machine.
//!
//! ```text
//! System > Runtime > Device > { Buffer, Library > Kernel, Schedule > Command, Stream, Event }
//! ```
//! The object model (this crate's root modules) validates every request and
//! talks to backends only through the [`hal`] traits; each backend lives in
//! one folder under [`backends`]. The Python package is a thin binding over
//! this crate.

pub mod backends;
pub mod cache;
pub mod catalog;
pub mod database;
pub mod error;
pub mod hal;
pub mod interop;
pub mod property;
pub mod types;

mod buffer;
mod device;
mod handle;
mod library;
mod process;
mod runtime;
mod schedule;
mod sync;
pub mod trace;

pub use buffer::{Buffer, MAX_BUFFER_BYTES};
pub use device::Device;
pub use error::{Error, Result, Status};
pub use hal::{ForeignMemory, LibrarySource, MemoryDomain, ProducerStream, MAX_KERNEL_ARGS};
pub use library::{Kernel, Library};
pub use property::{PathItem, Properties};
pub use runtime::{get_runtime, get_runtimes, known_runtimes, system_device, Runtime};
pub use schedule::{Command, CommandKind, Schedule};
pub use sync::{Event, Stream};
pub use types::{DataType, EventType, LaunchDims, Scalar};
