//! What runs in flight keep alive.
//!
//! A stream holds, per submitted run, whatever that run uses (the encoded
//! schedule, with its buffers, kernels, events and foreign owners such as a
//! torch tensor) until the run's ticket completes. So a user may drop or
//! release anything at any time: memory goes back to its allocator only
//! after the device is done with it.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::lock;

pub type KeepAlive = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
pub struct InFlight {
    runs: Mutex<VecDeque<(u64, KeepAlive)>>,
}

impl InFlight {
    pub fn push(&self, ticket: u64, keep: KeepAlive) {
        lock(&self.runs).push_back((ticket, keep));
    }

    pub fn len(&self) -> usize {
        lock(&self.runs).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops what runs up to `completed` kept alive. The drops happen after
    /// the lock is released (a drop may free device memory or a foreign
    /// owner).
    pub fn retire(&self, completed: u64) {
        let mut done = Vec::new();
        {
            let mut runs = lock(&self.runs);
            while runs.front().is_some_and(|(t, _)| *t <= completed) {
                if let Some((_, keep)) = runs.pop_front() {
                    done.push(keep);
                }
            }
        }
        drop(done);
    }
}
