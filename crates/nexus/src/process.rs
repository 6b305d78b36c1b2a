//! The current process id, cached.
//!
//! Backends compare it with the id of the process that opened a driver or
//! started a thread, to notice a `fork`. `getpid` is a system call and the
//! launch paths ask on every call, so the id is cached and a fork handler
//! (registered on first use, never at import) clears the cache in the child.
//!
//! It also knows when the process is exiting: drivers tear their state down
//! in their own C exit handlers, and a free, a completion callback or a wait
//! that reaches a driver after that crashes the process (NVIDIA's OpenCL and
//! Vulkan drivers did, with work in flight or a thread waiting at exit).
//! nexus registers its own exit handler after each driver is set up (exit
//! handlers run in reverse order of registration, so it runs before the
//! driver's), and backends ask `exiting()` and leave such calls out: the
//! process is ending, the operating system takes it all back. Python's own
//! finalization runs before every C exit handler, with the drivers intact,
//! so objects it tears down are freed normally.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static PID: AtomicU32 = AtomicU32::new(0);
static EXITING: AtomicBool = AtomicBool::new(false);
/// Threads inside a blocking driver wait (`enter_driver_wait`).
static IN_DRIVER_WAIT: AtomicUsize = AtomicUsize::new(0);

/// How long a blocking driver wait lasts at most before its thread looks
/// at `exiting()` again; exit waits at most twice that for them to leave.
pub(crate) const DRIVER_WAIT_SLICE: Duration = Duration::from_millis(50);

extern "C" fn mark_exiting() {
    EXITING.store(true, Ordering::SeqCst);
    // Threads blocked in a driver wait (daemon threads in `event.wait`)
    // leave it within a slice and park; the driver's teardown, which runs
    // after this handler, then finds none of them inside. A second run of
    // the handler (one registration per driver) finds none at once.
    let deadline = Instant::now() + 2 * DRIVER_WAIT_SLICE;
    while IN_DRIVER_WAIT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Call once a driver is set up: exit handlers run in reverse order of
/// registration, so this one runs before the driver's own.
pub(crate) fn watch_exit_after_driver_opened() {
    // SAFETY: registers a handler that only touches atomics and sleeps.
    let _ = unsafe { libc::atexit(mark_exiting) };
}

/// Whether `exit()` has begun (the interpreter has finished).
pub(crate) fn exiting() -> bool {
    EXITING.load(Ordering::Relaxed)
}

/// A thread inside a blocking driver wait, counted while it lives.
// Used by the runtimes whose drivers block in waits of their own.
#[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
pub(crate) struct InDriverWait(());

impl Drop for InDriverWait {
    fn drop(&mut self) {
        IN_DRIVER_WAIT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Enters a blocking driver wait of at most `DRIVER_WAIT_SLICE`; `None`
/// once exit has begun (the caller then stays out of the driver).
#[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
pub(crate) fn enter_driver_wait() -> Option<InDriverWait> {
    IN_DRIVER_WAIT.fetch_add(1, Ordering::SeqCst);
    // SeqCst, like the handler's store then load: one of the two sees the
    // other (a relaxed load here could miss the flag while the handler
    // misses the count).
    if EXITING.load(Ordering::SeqCst) {
        IN_DRIVER_WAIT.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    Some(InDriverWait(()))
}

/// Where a thread that must not return into a dying driver goes: the
/// process is ending, and only C exit handlers run now (no thread can hold
/// the interpreter's lock).
#[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
pub(crate) fn park_until_exit() -> ! {
    loop {
        std::thread::park();
    }
}

#[cfg(unix)]
extern "C" fn forget_in_child() {
    PID.store(0, Ordering::SeqCst);
    // The parent's waiting threads do not exist here; a child forked while
    // the parent exits starts afresh.
    IN_DRIVER_WAIT.store(0, Ordering::SeqCst);
    EXITING.store(false, Ordering::SeqCst);
}

/// `std::process::id()`, without a system call after the first.
pub(crate) fn id() -> u32 {
    let cached = PID.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    #[cfg(unix)]
    {
        static REGISTER: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers a handler that only stores to an atomic.
        REGISTER.call_once(|| unsafe {
            libc::pthread_atfork(None, None, Some(forget_in_child));
        });
    }
    let pid = std::process::id();
    PID.store(pid, Ordering::SeqCst);
    pid
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_system_call() {
        assert_eq!(super::id(), std::process::id());
        assert_eq!(super::id(), std::process::id());
    }
}
