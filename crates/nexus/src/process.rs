//! The current process id, cached.
//!
//! Backends compare it with the id of the process that opened a driver or
//! started a thread, to notice a `fork`. `getpid` is a system call and the
//! launch paths ask on every call, so the id is cached and a fork handler
//! (registered on first use, never at import) clears the cache in the child.

use std::sync::atomic::{AtomicU32, Ordering};

static PID: AtomicU32 = AtomicU32::new(0);

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
