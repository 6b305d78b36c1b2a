//! How a host thread waits for what only polling shows (a stream's marker,
//! a word the GPU writes): one policy for every backend.
//!
//! First it checks while yielding the CPU, for `busy` (most GPU work ends
//! within microseconds of the check that finds it, and a sleep costs at
//! least the kernel's timer slack, ~50 us on Linux). Then it sleeps a 32nd
//! of the time waited so far, at most 500 us, so a long wait is seen done
//! within ~3 % of its length plus that slack and costs almost no CPU. Fixed
//! sleeps of up to 200 us cost a 1 GiB peer copy (2.7 ms) 5-7 % of its
//! bandwidth (bench/RESULTS.md, seventh session).

use std::time::{Duration, Instant};

/// How long waits on a GPU (stream markers, event words) yield before
/// they sleep: the wake-up latency of short runs stays a few microseconds,
/// as with the driver's own spinning synchronisation, for at most 1 ms of
/// one core.
pub const GPU_BUSY: Duration = Duration::from_millis(1);

/// The longest sleep between two checks.
const MAX_SLEEP: Duration = Duration::from_micros(500);
/// The shortest one (shorter sleeps are rounded up to the timer slack).
const MIN_SLEEP: Duration = Duration::from_micros(10);

/// Checks `ready()` until it is `true` (returns `true`) or `deadline`
/// passes (returns `false`), yielding for `busy`, then sleeping.
pub fn poll_until(
    deadline: Option<Instant>,
    busy: Duration,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let start = Instant::now();
    loop {
        if ready() {
            return true;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return false;
        }
        let waited = now - start;
        if waited < busy {
            std::thread::yield_now();
            continue;
        }
        let mut sleep = sleep_after(waited);
        if let Some(d) = deadline {
            sleep = sleep.min(d - now);
        }
        std::thread::sleep(sleep);
    }
}

/// The sleep after `waited`: a 32nd of it, within [`MIN_SLEEP`, `MAX_SLEEP`].
fn sleep_after(waited: Duration) -> Duration {
    (waited / 32).clamp(MIN_SLEEP, MAX_SLEEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_grow_with_the_wait_within_bounds() {
        assert_eq!(sleep_after(Duration::ZERO), MIN_SLEEP);
        assert_eq!(
            sleep_after(Duration::from_millis(3)),
            Duration::from_micros(93) + Duration::from_nanos(750)
        );
        assert_eq!(sleep_after(Duration::from_secs(5)), MAX_SLEEP);
    }

    #[test]
    fn returns_once_ready_or_at_the_deadline() {
        let mut checks = 0;
        assert!(poll_until(None, Duration::from_micros(50), || {
            checks += 1;
            checks == 100
        }));
        assert_eq!(checks, 100);
        let deadline = Instant::now() + Duration::from_millis(5);
        assert!(!poll_until(
            Some(deadline),
            Duration::from_millis(1),
            || false
        ));
        assert!(Instant::now() >= deadline);
        // A deadline already passed still checks once.
        assert!(poll_until(Some(Instant::now()), Duration::ZERO, || true));
    }
}
