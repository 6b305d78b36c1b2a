//! What every backend shares and nothing vendor-specific: the execution
//! model's machinery (DESIGN.md, "Execution model").
//!
//! - `usage`: which submitted runs use a resource (host copies, exports and
//!   frees wait on exactly those);
//! - `release`: frees that must wait for the device, done off the caller's
//!   thread, with a way to wait for them (allocation retries);
//! - `args`: kernel arguments packed as `void **` once per command;
//! - `per_stream`: a bounded value per driver stream (CUDA graph execs);
//! - `poll`: the one way a host thread polls the device (yield, then sleeps
//!   that grow with the wait);
//! - `queue`: the host side of a driver stream (tickets, runs held behind
//!   waits, completion by markers), generic over a small `DeviceStream`;
//! - `timeline`: events in memory both host and GPU write (wait planning
//!   by epochs, the wake-up of held runs, pools of value words);
//! - `staging`: chunk size, parallel host copy and spin wait of the pinned
//!   staging pipelines;
//! - `builtin`: bounds of the builtin kernels every runtime ships;
//! - `lock`, `downcast`: the one poison-tolerant lock helper, and a
//!   backend's view of its own objects.
//!
//! # Lock order
//!
//! Every lock in the crate has a place below. A thread holding one may take
//! only locks further down, never one further up; none is held while taking
//! the GIL or calling into Python: the binding queues log records and emits
//! them outside every lock, and foreign owners (torch, CuPy) are dropped
//! without the GIL (PyO3 defers their reference count).
//!
//! 1. Object model: `Schedule::encoded`, then `Schedule::commands`, then a
//!    command's `state`, then `Handle::slot` (read while encoding) and
//!    `Device::events`.
//! 2. Device setup: CUDA `Gpu::ctx_lock` (creating the default stream).
//! 3. Stream queues: CPU `stream::Shared::queue`, `queue::StreamQueue::state`,
//!    Vulkan `sync::StreamShared::state` (held while a direct run is
//!    submitted).
//!    Held while handing work to the driver and polling it, never while
//!    waiting for the device or for a host signal.
//! 4. Per-resource state: `Usage::fences`, CUDA `Gpu::staging`,
//!    `CudaKernel::shared_allowed`, `Timeline::users`, CPU
//!    `CpuEvent::value`, Vulkan `VkEvent::state` (held while its bell
//!    semaphore is signalled), `Gpu::buffers`, a library's `pipelines`.
//! 5. The timeline wake-up `timeline::MOVED`, then `Epochs::last_queued`
//!    (`wait_until_moved` re-plans a wait under `MOVED`).
//! 6. CUDA/HIP `GraphStep::execs`: held while the driver instantiates the
//!    graph for a new stream, released before the launch; a HIP exec it
//!    evicts is handed to the release queue under it.
//! 7. Leaves, held for a few instructions: the release queue (`sender`,
//!    then `pending`), `SlotPool::free`, the CPU thread pool slot `POOL`,
//!    OpenCL `Steps::profile` (a profiled schedule's last run's events,
//!    swapped whole, cloned out before the driver is asked), the binding's
//!    log queue, a device's `Registry` of queues, CUDA/HIP
//!    `GraphExec::launching` (one graph launch), Vulkan
//!    `Device::queue` (one submission) and `Device::graveyard` (never
//!    taken together; burials run after it is released).
//!
//! Worker threads (CPU stream workers, held-run workers, the release
//! thread) take their queue lock only to pop work and run the work with no
//! lock held.
//!
//! # Lifetimes
//!
//! A stream keeps what each submitted run uses (the encoded schedule, and
//! through it buffers, kernels, events and foreign owners such as a torch
//! tensor) until the run's ticket completes: the CPU stream's job queue
//! holds the schedule until the worker has run it, a driver stream's
//! `queue::StreamQueue::inflight` list until a query shows the ticket done.
//! Drops that must wait for the device go through `release`.

pub mod args;
pub mod per_stream;
pub mod poll;
pub mod queue;
pub mod release;
pub mod staging;
pub mod timeline;
pub mod usage;

use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Objects a device reaches without keeping them alive: its streams'
/// queues, which `reclaim` asks to retire finished runs.
pub struct Registry<T>(Mutex<Vec<Weak<T>>>);

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry(Mutex::new(Vec::new()))
    }
}

impl<T> Registry<T> {
    /// Adds `item`, dropping entries whose objects are gone.
    pub fn add(&self, item: &Arc<T>) {
        let mut items = lock(&self.0);
        items.retain(|w| w.strong_count() > 0);
        items.push(Arc::downgrade(item));
    }

    /// The objects still alive (cloned out: used with no lock held).
    pub fn live(&self) -> Vec<Arc<T>> {
        lock(&self.0).iter().filter_map(Weak::upgrade).collect()
    }
}

/// `object` as the backend's own type `T`, or an error saying that the
/// `what` (a kernel, a stream, ...) belongs to another runtime than
/// `runtime`. The object model keeps objects of one device together, so
/// this only fails on misuse from Rust.
pub fn downcast<'a, T: 'static>(
    object: &'a dyn std::any::Any,
    status: crate::error::Status,
    what: impl FnOnce() -> String,
    runtime: &str,
) -> crate::error::Result<&'a T> {
    object.downcast_ref::<T>().ok_or_else(|| {
        crate::error::Error::new(
            status,
            format!("{} does not belong to the {runtime} runtime", what()),
        )
    })
}

/// A profiled schedule's (start, end) times per operation, if they are one
/// run's: in stream order no time comes before the one listed before it,
/// so times that go back mix two runs (a later run rewriting some of the
/// marks, or a run held part-way). `None` then.
pub fn one_run(times: Vec<(f64, f64)>) -> Option<Vec<(f64, f64)>> {
    let in_order = times
        .iter()
        .flat_map(|&(start, end)| [start, end])
        .try_fold(f64::NEG_INFINITY, |last, t| (t >= last).then_some(t))
        .is_some();
    in_order.then_some(times)
}

/// Locks `m`, ignoring poison: every state guarded in nexus is left
/// consistent between statements (counters, queues), so a panic elsewhere
/// must not turn later calls into panics too.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bounds of the builtin kernels every runtime ships, checked before a
/// launch: a builtin cannot bounds-check against sizes it is not given.
pub mod builtin {
    use crate::error::{Error, Result, Status};
    use crate::hal::Arg;
    use crate::types::LaunchDims;

    /// A builtin kernel's check of a launch's arguments and shape, kept in
    /// each runtime's table of builtins beside the kernel.
    pub type LaunchCheck = fn(&[Arg], &LaunchDims) -> Result<()>;

    /// `add_vectors(a, b, c)`: element i of each float32 buffer, for every
    /// i < grid_size[0], so each must hold that many.
    pub fn check_add_vectors(args: &[Arg], dims: &LaunchDims) -> Result<()> {
        let needed = dims.grid[0] as u64 * 4;
        for (i, a) in args.iter().take(3).enumerate() {
            match a {
                Arg::Buffer(b) if (b.size() as u64) < needed => {
                    return Err(Error::new(
                        Status::InvalidSize,
                        format!(
                            "kernel 'add_vectors' argument {i}: a grid of {} work-items touches {needed} bytes, the buffer has {} bytes",
                            dims.grid[0],
                            b.size()
                        ),
                    ))
                }
                Arg::Buffer(_) => {}
                Arg::Scalar(_) => {
                    return Err(Error::new(
                        Status::InvalidArgument,
                        format!("kernel 'add_vectors' argument {i} must be a buffer, not a scalar"),
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::one_run;

    #[test]
    fn times_of_one_run_never_go_back() {
        let run = vec![(0.0, 1.5), (1.5, 1.5), (2.0, 4.0)];
        assert_eq!(one_run(run.clone()), Some(run));
        // The second operation's marks are a later run's.
        assert_eq!(one_run(vec![(0.0, 1.0), (9.0, 9.5), (2.0, 3.0)]), None);
        // An end before its start.
        assert_eq!(one_run(vec![(0.0, 2.0), (3.0, 2.5)]), None);
        assert_eq!(one_run(vec![]), Some(vec![]));
    }
}
