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

use std::cell::Cell;
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

/// A poll that starts within this long of the same thread's last timed-out
/// one continues that wait (see `poll_until`).
const CONTINUATION: Duration = Duration::from_millis(1);

thread_local! {
    /// When this thread's last poll timed out, and when that wait began.
    static TIMED_OUT: Cell<Option<(Instant, Instant)>> = const { Cell::new(None) };
}

/// Checks `ready()` until it is `true` (returns `true`) or `deadline`
/// passes (returns `false`), yielding for `busy`, then sleeping.
///
/// Long waits are often made of slices (the Python binding waits 50 ms at a
/// time to check for Ctrl-C): a poll that starts right after the same
/// thread's last one timed out counts from that wait's beginning, so it
/// does not yield and sleep briefly again at every slice.
pub fn poll_until(
    deadline: Option<Instant>,
    busy: Duration,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let start = wait_began(Instant::now());
    loop {
        if ready() {
            return true;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            TIMED_OUT.set(Some((now, start)));
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

/// When a poll starting at `now` counts its wait from: the beginning of
/// this thread's last wait if that timed out less than `CONTINUATION` ago.
fn wait_began(now: Instant) -> Instant {
    match TIMED_OUT.take() {
        Some((at, began)) if now.saturating_duration_since(at) < CONTINUATION => began,
        _ => now,
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

    #[test]
    fn a_slice_right_after_a_timed_out_one_continues_its_wait() {
        let first = Instant::now();
        assert!(!poll_until(Some(first), Duration::ZERO, || false));
        let (at, began) = TIMED_OUT.get().expect("a timed-out poll is remembered");
        assert!(began >= first && at >= began);
        // The next slice, started right after, counts from the same start;
        // one started later, or after a wait that ended ready, does not.
        assert_eq!(wait_began(at + Duration::from_micros(10)), began);
        TIMED_OUT.set(Some((at, began)));
        let later = at + CONTINUATION;
        assert_eq!(wait_began(later), later);
        TIMED_OUT.set(Some((at, began)));
        assert!(poll_until(None, Duration::ZERO, || true));
        assert_eq!(TIMED_OUT.get(), None);
    }
}
