//! The CPU kernel ABI and the group launcher.
//!
//! A kernel is `void kernel(void **args, const nxs_launch *launch)`, called
//! once per work-group. `args[i]` points at argument i's value, the way
//! `cuLaunchKernel` takes `kernelParams`: for a buffer, at a `void *` holding
//! the data pointer; for a scalar, at the scalar itself. The layout below is
//! mirrored by `python/nexus/include/nexus_cpu.h`.

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::backends::common::args::ArgPack;
use crate::backends::common::lock;
use crate::error::{Error, Result, Status};
use crate::types::LaunchDims;

/// Mirror of `nxs_launch` in `nexus_cpu.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LaunchContext {
    pub grid_size: [u32; 3],
    pub group_size: [u32; 3],
    pub num_groups: [u32; 3],
    pub group_id: [u32; 3],
    pub scratch: *mut c_void,
    pub scratch_size: u64,
}

pub type KernelFn = unsafe extern "C" fn(args: *mut *mut c_void, launch: *const LaunchContext);

thread_local! {
    static SCRATCH: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

fn run_group(
    func: KernelFn,
    args: &ArgPack,
    dims: &LaunchDims,
    groups: [u32; 3],
    flat: u64,
    scratch_bytes: usize,
) {
    let gx = groups[0] as u64;
    let gy = groups[1] as u64;
    let group_id = [
        (flat % gx) as u32,
        ((flat / gx) % gy) as u32,
        (flat / (gx * gy)) as u32,
    ];
    // The scratch vector is taken out of the thread-local for the call, so
    // a kernel that re-enters nexus on this thread (a callback that runs
    // another schedule inline) finds it empty instead of borrowed.
    let mut scratch = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let words = scratch_bytes.div_ceil(8);
    if scratch.len() < words {
        scratch.resize(words, 0);
    }
    let ctx = LaunchContext {
        grid_size: dims.grid,
        group_size: dims.group,
        num_groups: groups,
        group_id,
        scratch: if scratch_bytes == 0 {
            std::ptr::null_mut()
        } else {
            scratch.as_mut_ptr() as *mut c_void
        },
        scratch_size: scratch_bytes as u64,
    };
    // SAFETY: the kernel follows the ABI above; `args`, `ctx` and the
    // scratch memory outlive the call.
    unsafe { func(args.pointers(), &ctx) };
    SCRATCH.with(|s| {
        let mut slot = s.borrow_mut();
        if slot.capacity() < scratch.capacity() {
            *slot = scratch;
        }
    });
}

/// Runs every group of a launch: inline for one group, else on the pool.
pub fn launch(
    func: KernelFn,
    args: &ArgPack,
    dims: &LaunchDims,
    scratch_bytes: usize,
) -> Result<()> {
    let groups = dims.groups();
    let total = dims.total_groups();
    if total == 1 {
        run_group(func, args, dims, groups, 0, scratch_bytes);
        return Ok(());
    }
    let pool = pool()?;
    let threads = pool.current_num_threads() as u64;
    let min_len = (total / (threads * 8)).max(1) as usize;
    pool.install(|| {
        (0..total as usize)
            .into_par_iter()
            .with_min_len(min_len)
            .for_each(|g| run_group(func, args, dims, groups, g as u64, scratch_bytes))
    });
    Ok(())
}

/// Worker threads of the CPU runtime: `NEXUS_CPU_THREADS`, else every core.
pub fn thread_count() -> usize {
    std::env::var("NEXUS_CPU_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// The pool is built on first use and rebuilt in a forked child (whose
/// copy has no threads behind it), so nothing starts at import and `fork`
/// stays safe.
static POOL: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

fn pool() -> Result<Arc<rayon::ThreadPool>> {
    let pid = crate::process::id();
    let mut slot = lock(&POOL);
    if let Some((owner, pool)) = slot.as_ref() {
        if *owner == pid {
            return Ok(pool.clone());
        }
    }
    if let Some(stale) = slot.take() {
        // The parent's workers do not exist here; dropping would talk to them.
        std::mem::forget(stale);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count())
        .thread_name(|i| format!("nexus-cpu-{i}"))
        .build()
        .map_err(|e| {
            Error::new(
                Status::DriverError,
                format!("CPU runtime: cannot start worker threads: {e}"),
            )
        })?;
    let pool = Arc::new(pool);
    *slot = Some((pid, pool.clone()));
    Ok(pool)
}
