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
//!
//! A forked child inherits the parent's exit handlers and driver state, but
//! no runtime lets a child use a driver its parent opened. NVIDIA's Vulkan
//! driver hangs in its teardown there (its threads did not survive the
//! fork). So a driver whose teardown cannot run in a child registers with
//! `ChildExit::SkipTeardown`: in a process forked after it was opened,
//! nexus's handler ends the exit at once with the status given to `exit()`
//! (C stdio flushed), skipping the handlers registered before it, glibc
//! only. That costs a child the C exit handlers its parent registered
//! before that driver (Python's own exit work runs earlier and is kept).
//! Drivers the child opened itself register handlers of the child's, which
//! run first, as usual.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static PID: AtomicU32 = AtomicU32::new(0);
static EXIT: ExitState = ExitState::new();

/// How long a blocking driver wait lasts at most before its thread looks
/// at `exiting()` again; exit waits at most twice that for them to leave.
pub(crate) const DRIVER_WAIT_SLICE: Duration = Duration::from_millis(50);

/// Whether exit has begun, and how many threads are inside a blocking
/// driver wait (one process-wide instance, `EXIT`).
struct ExitState {
    exiting: AtomicBool,
    in_driver_wait: AtomicUsize,
}

impl ExitState {
    const fn new() -> Self {
        ExitState {
            exiting: AtomicBool::new(false),
            in_driver_wait: AtomicUsize::new(0),
        }
    }

    /// Marks the exit, then gives threads in a driver wait up to `grace`
    /// to leave it (they park at the end of their slice).
    fn begin_exit(&self, grace: Duration) {
        self.exiting.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        while self.in_driver_wait.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Counts the caller in, unless exit has begun. SeqCst, like
    /// `begin_exit`'s store then load: one of the two sees the other (a
    /// relaxed load here could miss the flag while exit misses the count).
    fn enter(&'static self) -> Option<InDriverWait> {
        self.in_driver_wait.fetch_add(1, Ordering::SeqCst);
        if self.exiting.load(Ordering::SeqCst) {
            self.in_driver_wait.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(InDriverWait(self))
    }

    /// A forked child: the parent's waiting threads do not exist here, and
    /// a child forked while the parent exits starts afresh.
    fn reset(&self) {
        self.in_driver_wait.store(0, Ordering::SeqCst);
        self.exiting.store(false, Ordering::SeqCst);
    }
}

extern "C" fn mark_exiting() {
    // Threads blocked in a driver wait (daemon threads in `event.wait`)
    // leave it within a slice and park; the driver's teardown, which runs
    // after this handler, then finds none of them inside. A second run of
    // the handler (one registration per driver) finds none at once.
    EXIT.begin_exit(2 * DRIVER_WAIT_SLICE);
}

/// What a process forked after a driver was opened does at exit (see the
/// module documentation).
#[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
pub(crate) enum ChildExit {
    /// Runs the driver's teardown, as the parent would.
    RunTeardown,
    /// Ends the exit before the driver's teardown, which hangs in a child.
    SkipTeardown,
}

/// Call once a driver is set up: exit handlers run in reverse order of
/// registration, so this one runs before the driver's own.
pub(crate) fn watch_exit_after_driver_opened(child: ChildExit) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let ChildExit::SkipTeardown = child {
        extern "C" {
            // glibc: like `atexit`, with the exit status and an argument.
            fn on_exit(
                handler: extern "C" fn(std::ffi::c_int, *mut std::ffi::c_void),
                arg: *mut std::ffi::c_void,
            ) -> std::ffi::c_int;
        }
        // SAFETY: registers a handler that only touches atomics, sleeps,
        // or flushes stdio and ends the process; the argument is a number.
        let _ = unsafe { on_exit(mark_exiting_in, id() as usize as *mut std::ffi::c_void) };
        return;
    }
    let _ = child;
    // SAFETY: registers a handler that only touches atomics and sleeps.
    let _ = unsafe { libc::atexit(mark_exiting) };
}

/// The handler as registered by process `registered_in` (see the module
/// documentation for a forked child).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn mark_exiting_in(status: std::ffi::c_int, registered_in: *mut std::ffi::c_void) {
    if registered_in as usize != std::process::id() as usize {
        // SAFETY: flushing C stdio and ending the process, as exit would.
        unsafe {
            libc::fflush(std::ptr::null_mut());
            libc::_exit(status);
        }
    }
    mark_exiting();
}

/// Whether `exit()` has begun (the interpreter has finished).
pub(crate) fn exiting() -> bool {
    EXIT.exiting.load(Ordering::Relaxed)
}

/// A thread inside a blocking driver wait, counted while it lives.
// Used by the runtimes whose drivers block in waits of their own.
#[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
pub(crate) struct InDriverWait(&'static ExitState);

impl Drop for InDriverWait {
    fn drop(&mut self) {
        self.0.in_driver_wait.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Enters a blocking driver wait of at most `DRIVER_WAIT_SLICE`; `None`
/// once exit has begun (the caller then stays out of the driver).
#[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
pub(crate) fn enter_driver_wait() -> Option<InDriverWait> {
    EXIT.enter()
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
    EXIT.reset();
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
    use super::*;

    #[test]
    fn driver_waits_are_counted_refused_once_exit_began_and_reset_in_a_child() {
        // A state of the test's own: the process-wide one stays untouched.
        static STATE: ExitState = ExitState::new();
        let inside = STATE.enter().expect("not exiting yet");
        assert_eq!(STATE.in_driver_wait.load(Ordering::SeqCst), 1);
        let started = Instant::now();
        let leaver = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(inside); // the wait's slice ends
        });
        STATE.begin_exit(Duration::from_secs(5));
        assert!(
            started.elapsed() >= Duration::from_millis(15),
            "exit waited for the thread to leave"
        );
        leaver.join().unwrap();
        assert_eq!(STATE.in_driver_wait.load(Ordering::SeqCst), 0);
        assert!(STATE.enter().is_none());
        assert_eq!(STATE.in_driver_wait.load(Ordering::SeqCst), 0);
        STATE.begin_exit(Duration::from_secs(5)); // a second handler: at once
        STATE.reset();
        assert!(!STATE.exiting.load(Ordering::SeqCst));
        assert!(STATE.enter().is_some());
    }

    #[test]
    fn matches_the_system_call() {
        assert_eq!(super::id(), std::process::id());
        assert_eq!(super::id(), std::process::id());
    }
}
