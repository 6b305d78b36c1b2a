//! What the pinned staging pipelines of the GPU runtimes (CUDA, HIP) share:
//! the chunk size, a multi-threaded host copy, and a spinning wait. The
//! pipeline itself (two chunks, DMA of one while the CPU fills the other)
//! lives in each runtime's `memory.rs`, over its own driver calls.

use rayon::prelude::*;

use crate::error::Result;

/// Bytes per staging chunk unless the environment variable `var` (in MiB,
/// 1..=256) says otherwise.
pub fn chunk_size(var: &str) -> usize {
    const DEFAULT_CHUNK: usize = 32 << 20;
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&m| (1..=256).contains(&m))
        .map(|m| m << 20)
        .unwrap_or(DEFAULT_CHUNK)
}

/// Host copies at least this large are split over threads.
const PARALLEL_MIN: usize = 1 << 20;
const PIECE: usize = 512 << 10;

/// `dst.copy_from_slice(src)`, on several threads when it is large (one
/// thread does not reach the memory bandwidth a DMA engine drains).
pub fn host_copy(dst: &mut [u8], src: &[u8]) {
    if src.len() >= PARALLEL_MIN {
        dst.par_chunks_mut(PIECE)
            .zip(src.par_chunks(PIECE))
            .for_each(|(d, s)| d.copy_from_slice(s));
    } else {
        dst.copy_from_slice(src);
    }
}

/// Spins (yielding) until `ready` reports completion: these waits are
/// bounded by one chunk or one copy, so a sleep would only add latency.
pub fn spin_until(mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    while !ready()? {
        std::thread::yield_now();
    }
    Ok(())
}
