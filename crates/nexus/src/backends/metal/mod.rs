//! The Metal runtime: Apple GPUs (and the AMD/Intel GPUs of Intel Macs)
//! through Metal.framework, with `objc2-metal`.
//!
//! Only `logic.rs` compiles everywhere: it holds every decision that is not
//! an Objective-C call (argument layout, geometry, threadgroup memory,
//! fills, error mapping, device properties, event epochs) and its unit
//! tests run on Linux. The rest compiles only for Apple targets; elsewhere
//! the registry lists `metal` with zero devices.
//!
//! - `ffi/`: every Objective-C call, behind small safe wrappers; nothing
//!   above it is unsafe.
//! - `device.rs`: devices (`MTLCopyAllDevices`) and their properties.
//! - `memory.rs`: buffers in shared storage (unified memory: the host reads
//!   and writes `contents` in place), host arrays wrapped without a copy.
//! - `library.rs`: `.metallib` files or bytes and MSL source, pipelines with
//!   reflection, the builtin `add_vectors`.
//! - `schedule.rs`: operations resolved once at `encode`, encoded into a
//!   command buffer per run (compute and blit encoders, event commands).
//! - `sync.rs`: events (`MTLSharedEvent` epochs, see `logic::Chain`) and
//!   streams (a command queue each, driven by `common::queue`).
//!
//! Kernel conventions (README, "Metal"): buffer argument i binds at
//! `[[buffer(i)]]`; a scalar argument i is copied with `setBytes` to
//! `[[buffer(i)]]` (read it as `constant T &x [[buffer(i)]]`); the
//! command's `shared_memory` is the threadgroup memory at
//! `[[threadgroup(0)]]` and its size is at `[[buffer(30)]]`; `grid_size`
//! is the total threads of `dispatchThreads`.
//!
//! # Locks (places in `backends/common`'s order)
//!
//! - 3 (stream queues): `common::queue::StreamQueue::state`, held while a
//!   run is encoded and committed, never while waiting.
//! - 4 (per-resource state): `MtlEvent::chain`, the buffer registry
//!   `memory::BUFFERS`, `Gpu::builtin`, `Gpu::streams`,
//!   `Encoded::last_run`, `MtlStream::committed` then
//!   `MtlStream::failure`; each held for a few calls that do not block.
//! - 6 (leaves): an event's `Bell`.
//!
//! Metal calls the shared-event listener's blocks on its own dispatch
//! queue: they take only a bell's lock.

#[cfg_attr(not(target_vendor = "apple"), allow(dead_code))]
pub(crate) mod logic;

#[cfg(target_vendor = "apple")]
mod device;
#[cfg(target_vendor = "apple")]
mod ffi;
#[cfg(target_vendor = "apple")]
mod library;
#[cfg(target_vendor = "apple")]
mod memory;
#[cfg(target_vendor = "apple")]
mod schedule;
#[cfg(target_vendor = "apple")]
mod sync;

#[cfg(target_vendor = "apple")]
pub(crate) use device::Gpu;
#[cfg(target_vendor = "apple")]
pub use device::MetalApi;
