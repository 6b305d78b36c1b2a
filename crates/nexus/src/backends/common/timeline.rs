//! Timeline events kept in memory that both the host and the GPU write
//! (CUDA and HIP: a u64 in mapped pinned memory), and how a wait command on
//! one is carried out.
//!
//! The host signals with an atomic store and waits by polling; a stream
//! signals with a memory write. A wait is decided when it is about to be
//! queued behind everything before it in its stream (`Epochs::plan`): on
//! the GPU when a signal reaching the value was queued after the last host
//! store; passed once the stream's earlier work is done when the host
//! already set the value; otherwise the rest of the run is held on the host
//! (`queue.rs`) until a signal is given or queued. So a wait sees the value
//! when it executes (resets included), and no wait that reaches the GPU
//! waits for anything but queued work.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::lock;
use crate::error::{Error, Result, Status};

/// How a wait for a value may be carried out, decided when it is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitPlan {
    /// A GPU signal reaching the value is queued after the last host store:
    /// a GPU-side wait only waits for queued work.
    OnGpu,
    /// The value is already there and only the host sets it now: the wait
    /// passes if it executes now, i.e. once the stream's earlier work is done.
    PassWhenDrained,
    /// Neither: held on the host until a signal is given or queued.
    Hold,
}

/// Who last set a timeline's value: the host (a store, which starts a new
/// epoch) or a GPU signal queued since.
#[derive(Default)]
pub struct Epochs {
    /// Bumped by every host store (`signal(v)` from the host, resets too).
    epoch: AtomicU64,
    /// (epoch, value) of the GPU signal queued last, in queue order.
    last_queued: Mutex<Option<(u64, u64)>>,
}

impl Epochs {
    /// Stores `value` from the host into `word`: a new epoch.
    pub fn host_store(&self, word: &AtomicU64, value: u64) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        word.store(value, Ordering::SeqCst);
        notify_moved();
    }

    /// Records that a GPU signal of `value` has been queued.
    pub fn queued_signal(&self, value: u64) {
        *lock(&self.last_queued) = Some((self.epoch.load(Ordering::SeqCst), value));
        notify_moved();
    }

    /// How a wait for `value` queued now may be carried out (`gpu_waits`:
    /// the GPU can wait on memory; `current`: the value now).
    pub fn plan(&self, value: u64, current: u64, gpu_waits: bool) -> WaitPlan {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let last = *lock(&self.last_queued);
        match last {
            Some((e, v)) if e == epoch => {
                if gpu_waits && v >= value {
                    WaitPlan::OnGpu
                } else {
                    // A queued GPU signal will set the value (maybe lower):
                    // what the value is now says nothing.
                    WaitPlan::Hold
                }
            }
            _ if current >= value => WaitPlan::PassWhenDrained,
            _ => WaitPlan::Hold,
        }
    }
}

/// Wakes runs held on the host whenever some timeline moves (a host signal,
/// or a GPU signal queued). One process-wide condition: held runs are rare
/// and each re-checks its own event, so a shared wake-up costs nothing.
static MOVED: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());
/// Threads waiting on `MOVED`; signals skip the lock when there are none.
static WATCHERS: AtomicUsize = AtomicUsize::new(0);

fn notify_moved() {
    if WATCHERS.load(Ordering::SeqCst) > 0 {
        let mut generation = lock(&MOVED.0);
        *generation = generation.wrapping_add(1);
        MOVED.1.notify_all();
    }
}

/// Blocks until `ready()` holds. `ready` is re-checked after every timeline
/// move, and every 50 ms in case a value changed behind nexus's back.
pub fn wait_until_moved(mut ready: impl FnMut() -> bool) {
    WATCHERS.fetch_add(1, Ordering::SeqCst);
    let mut generation = lock(&MOVED.0);
    while !ready() {
        generation = match MOVED.1.wait_timeout(generation, Duration::from_millis(50)) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
    }
    drop(generation);
    WATCHERS.fetch_sub(1, Ordering::SeqCst);
}

/// A value word: the host's view and the device address of one u64.
pub type Slot = (&'static AtomicU64, u64);

/// Free value words, handed out first in, first out: a word freed while a
/// dropped schedule's write to it may still be in flight goes back behind
/// thousands of others before it is reused. Words come in slabs allocated
/// ahead and never freed (allocating pinned memory synchronises a device).
pub struct SlotPool {
    free: Mutex<VecDeque<Slot>>,
}

impl SlotPool {
    pub const fn new() -> Self {
        SlotPool {
            free: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds a slab of words.
    pub fn add(&self, words: impl IntoIterator<Item = Slot>) {
        lock(&self.free).extend(words);
    }

    /// A free word, set to 0, calling `grow` for another slab when none is.
    pub fn take(&self, grow: impl FnOnce() -> Result<Vec<Slot>>) -> Result<Slot> {
        let pop = || lock(&self.free).pop_front();
        let slot = match pop() {
            Some(slot) => slot,
            None => {
                self.add(grow()?);
                pop().ok_or_else(|| {
                    Error::new(Status::OutOfMemory, "no memory for another event value")
                })?
            }
        };
        slot.0.store(0, Ordering::SeqCst);
        Ok(slot)
    }

    /// Gives a word back once nothing queued refers to it any more.
    pub fn give_back(&self, slot: Slot) {
        lock(&self.free).push_back(slot);
    }
}

impl Default for SlotPool {
    fn default() -> Self {
        Self::new()
    }
}

/// Blocks until `event` (of another runtime or device, so only its own API
/// can wait for it) reaches `value`: its own wait in slices, backing off
/// instead of spinning while that wait fails.
pub fn wait_for_foreign(event: &dyn crate::hal::Event, value: u64) {
    loop {
        match event.wait(value, Some(Duration::from_millis(100))) {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) if event.value().is_ok_and(|v| v >= value) => return,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_planned_from_the_last_store_or_queued_signal() {
        let word = AtomicU64::new(0);
        let e = Epochs::default();
        assert_eq!(e.plan(1, 0, true), WaitPlan::Hold);
        e.host_store(&word, 5);
        assert_eq!(e.plan(5, 5, true), WaitPlan::PassWhenDrained);
        e.queued_signal(7);
        // A queued signal decides: on the GPU if it reaches the value.
        assert_eq!(e.plan(7, 5, true), WaitPlan::OnGpu);
        assert_eq!(e.plan(8, 5, true), WaitPlan::Hold);
        assert_eq!(e.plan(7, 5, false), WaitPlan::Hold);
        // A host store (a reset) starts a new epoch: the queued signal no
        // longer says anything about the value.
        e.host_store(&word, 0);
        assert_eq!(e.plan(7, 0, true), WaitPlan::Hold);
        assert_eq!(e.plan(0, 0, true), WaitPlan::PassWhenDrained);
    }

    #[test]
    fn slots_are_reused_first_in_first_out() {
        static WORDS: [AtomicU64; 3] = [AtomicU64::new(9), AtomicU64::new(9), AtomicU64::new(9)];
        let pool = SlotPool::new();
        let mut grown = 0;
        let a = pool
            .take(|| {
                grown += 1;
                Ok(WORDS
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (w, i as u64))
                    .collect())
            })
            .map(|s| s.1);
        assert_eq!((a.ok(), grown), (Some(0), 1));
        assert_eq!(
            WORDS[0].load(Ordering::SeqCst),
            0,
            "a slot is handed out zeroed"
        );
        pool.give_back((&WORDS[0], 0));
        let next: Vec<u64> = (0..3)
            .filter_map(|_| pool.take(|| Ok(Vec::new())).ok().map(|s| s.1))
            .collect();
        assert_eq!(next, vec![1, 2, 0]);
    }
}
