//! Explicit release: an object's backend resource, dropped on `release()`.
//!
//! Releasing drops this object's reference only: work already submitted,
//! and views of a buffer, keep their own, so the resource lives until they
//! are done. A flag lets encoded schedules notice a release with one atomic
//! load per dependency and run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result, Status};

pub(crate) struct Handle<T: ?Sized> {
    slot: RwLock<Option<Arc<T>>>,
    released: AtomicBool,
}

impl<T: ?Sized> Handle<T> {
    pub fn new(value: Arc<T>) -> Self {
        Handle {
            slot: RwLock::new(Some(value)),
            released: AtomicBool::new(false),
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
        self.released.load(Ordering::Acquire)
    }

    /// Drops this object's reference at once; work already queued and views
    /// keep their own.
    pub fn release(&self) {
        let old = self.slot.write().unwrap_or_else(|e| e.into_inner()).take();
        self.released.store(true, Ordering::Release);
        drop(old);
    }
}
