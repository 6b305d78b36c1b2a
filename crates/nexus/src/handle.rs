//! Explicit release: an object's backend resource, dropped on `release()`.
//!
//! Every release bumps a process-wide epoch, so encoded schedules notice
//! (one atomic load per run) and re-validate, which names what was released.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result, Status};

static RELEASE_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Count of explicit releases so far in this process.
pub(crate) fn release_epoch() -> u64 {
    RELEASE_EPOCH.load(Ordering::Acquire)
}

pub(crate) struct Handle<T: ?Sized> {
    slot: RwLock<Option<Arc<T>>>,
}

impl<T: ?Sized> Handle<T> {
    pub fn new(value: Arc<T>) -> Self {
        Handle {
            slot: RwLock::new(Some(value)),
        }
    }

    /// The live resource, or `Status::Released` naming `what`.
    pub fn get(&self, what: impl FnOnce() -> String) -> Result<Arc<T>> {
        self.slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::new(Status::Released, format!("{} was released", what())))
    }

    pub fn is_released(&self) -> bool {
        self.slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Drops this object's reference at once; work already queued keeps its own.
    pub fn release(&self) {
        let old = self.slot.write().unwrap_or_else(|e| e.into_inner()).take();
        if old.is_some() {
            RELEASE_EPOCH.fetch_add(1, Ordering::AcqRel);
        }
        drop(old);
    }
}
