//! The current process id, cached.
//!
//! Backends compare it with the id of the process that opened a driver or
//! started a thread, to notice a `fork`. `getpid` is a system call and the
//! launch paths ask on every call, so the id is cached and a fork handler
//! (registered on first use, never at import) clears the cache in the child.
//!
//! It also knows when the process is exiting: drivers tear their state down
//! in their own exit handlers, and a free or a completion callback that
//! reaches a driver after that crashes the process (NVIDIA's OpenCL did, with
//! kernels still running at exit). Backends ask `exiting()` and leave such
//! calls out: the process is ending, the operating system takes it all back.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

static PID: AtomicU32 = AtomicU32::new(0);
static EXITING: AtomicBool = AtomicBool::new(false);

extern "C" fn mark_exiting_handler() {
    EXITING.store(true, Ordering::SeqCst);
}

/// The interpreter is shutting down (Python's `atexit`, which runs before
/// objects are torn down): frees from here on leave the drivers alone.
pub fn mark_exiting() {
    mark_exiting_handler();
}

/// Call after a driver library is opened: exit handlers run in reverse order
/// of registration, so this one runs before the driver's own.
pub(crate) fn watch_exit_after_driver_opened() {
    // SAFETY: registers a handler that only stores to an atomic.
    let _ = unsafe { libc::atexit(mark_exiting_handler) };
}

/// Whether `exit()` has begun (the interpreter finished finalizing).
pub(crate) fn exiting() -> bool {
    EXITING.load(Ordering::Relaxed)
}

#[cfg(unix)]
extern "C" fn forget_in_child() {
    PID.store(0, Ordering::SeqCst);
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
