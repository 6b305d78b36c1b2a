//! Which submitted work uses a resource.
//!
//! A buffer (its memory, shared by every view of it) records the fence of
//! each run that uses it, one per stream: streams are in order, so a later
//! run's fence covers an earlier one's on the same stream. Host copies,
//! writes, exports and frees wait on exactly these, on any stream.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;
use crate::hal::Fence;

#[derive(Default)]
pub struct Usage {
    fences: Mutex<Vec<Fence>>,
}

impl Usage {
    /// Notes that the run behind `fence` uses the resource.
    pub fn record(&self, fence: &Fence) {
        let mut fences = lock(&self.fences);
        fences.retain(|f| !f.is_complete() && !f.same_stream(fence));
        fences.push(fence.clone());
    }

    /// Whether every run that used the resource has completed.
    pub fn is_idle(&self) -> bool {
        let mut fences = lock(&self.fences);
        fences.retain(|f| !f.is_complete());
        fences.is_empty()
    }

    /// Waits up to `timeout` for every run recorded so far: `true` once
    /// they are all complete. The lock is not held while waiting.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let pending: Vec<Fence> = lock(&self.fences).clone();
        for f in &pending {
            let left = deadline.saturating_duration_since(Instant::now());
            if !f.wait(left) {
                return false;
            }
        }
        let mut fences = lock(&self.fences);
        fences.retain(|f| !f.is_complete());
        true
    }

    /// The fences still pending (for a deferred free to wait on).
    pub fn pending(&self) -> Vec<Fence> {
        let mut fences = lock(&self.fences);
        fences.retain(|f| !f.is_complete());
        fences.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::Usage;
    use crate::error::Error;
    use crate::hal::{Fence, Submissions};

    /// A stream whose completed count the test moves by hand.
    #[derive(Default)]
    struct Manual(AtomicU64);

    impl Submissions for Manual {
        fn is_complete(&self, ticket: u64) -> bool {
            self.0.load(Ordering::SeqCst) >= ticket
        }
        fn wait(&self, ticket: u64, _timeout: Duration) -> bool {
            self.is_complete(ticket)
        }
        fn take_failure(&self, _ticket: u64) -> Option<Error> {
            None
        }
    }

    #[test]
    fn one_fence_per_stream_and_idle_once_all_complete() {
        let (a, b) = (Arc::new(Manual::default()), Arc::new(Manual::default()));
        let usage = Usage::default();
        for t in 1..=3 {
            usage.record(&Fence {
                queue: a.clone(),
                ticket: t,
            });
        }
        usage.record(&Fence {
            queue: b.clone(),
            ticket: 7,
        });
        assert_eq!(
            usage.pending().len(),
            2,
            "a later fence covers an earlier one on its stream"
        );
        assert!(!usage.is_idle());
        a.0.store(3, Ordering::SeqCst);
        assert!(!usage.wait(Duration::ZERO), "stream b is still busy");
        b.0.store(7, Ordering::SeqCst);
        assert!(usage.wait(Duration::ZERO));
        assert!(usage.is_idle());
    }
}
