//! The host side of one CUDA stream.
//!
//! Runs go straight to the driver, except behind a wait command that the
//! GPU cannot be trusted with: a wait for a value that no queued work will
//! write yet (a later host signal, or a signal in a run not queued yet).
//! Parked on the GPU, such a wait holds a hardware queue that other streams
//! share, and anything that synchronises the device (freeing memory, loading
//! a kernel lazily, another library's `cudaDeviceSynchronize`) would block
//! behind it until the signal comes, or forever (measured on H100, CUDA 13).
//! So the rest of that run, and every later run on the stream, is held here
//! and queued by a worker thread as soon as the signal is given or queued.
//! Every wait that reaches the GPU therefore waits only for work already
//! queued, as with CUDA's own events, and cannot deadlock.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::result as r;
use super::schedule::Steps;
use super::sys::{CUstream, Driver};
use super::{Gpu, Handle};
use crate::error::{Error, Result, Status};

/// The rest of a run, from a wait that could not be queued yet.
struct Held {
    steps: Arc<Steps>,
    from: usize,
    ticket: u64,
}

#[derive(Default)]
struct State {
    held: VecDeque<Held>,
    /// Tickets of held runs are 1, 2, ...; `queued` is the last one that
    /// has fully gone to the driver.
    issued: u64,
    queued: u64,
    worker: bool,
    /// The first failure of a held run, reported by the next wait.
    failure: Option<Error>,
}

pub(crate) struct StreamQueue {
    d: &'static Driver,
    stream: Handle,
    /// Set for user streams, which the queue destroys when dropped; the
    /// device's default stream lives as long as the process.
    owner: Option<Arc<Gpu>>,
    state: Mutex<State>,
    progress: Condvar,
    /// Wakes an idle worker when a run is held.
    arrived: Condvar,
}

impl StreamQueue {
    pub(crate) fn new(d: &'static Driver, stream: Handle, owner: Option<Arc<Gpu>>) -> Self {
        StreamQueue {
            d,
            stream,
            owner,
            state: Mutex::new(State::default()),
            progress: Condvar::new(),
            arrived: Condvar::new(),
        }
    }

    pub(crate) fn raw(&self) -> CUstream {
        self.stream.0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a run (the calling thread has the stream's context current).
    /// Returns the ticket of the part held on the host, if any.
    pub(crate) fn submit(self: &Arc<Self>, steps: &Arc<Steps>) -> Result<Option<u64>> {
        let mut st = self.lock();
        let from = if st.held.is_empty() {
            match steps.queue_from(0, self.stream.0)? {
                None => return Ok(None),
                Some(i) => i,
            }
        } else {
            0
        };
        st.issued += 1;
        let ticket = st.issued;
        st.held.push_back(Held {
            steps: steps.clone(),
            from,
            ticket,
        });
        if !st.worker {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("nexus-cuda-held".into())
                .spawn(move || me.work());
            match spawned {
                Ok(_) => st.worker = true,
                Err(e) => {
                    st.held.pop_back();
                    st.issued -= 1;
                    return Err(Error::new(
                        Status::DriverError,
                        format!("cannot start a thread for a held run: {e}"),
                    ));
                }
            }
        }
        self.arrived.notify_one();
        Ok(Some(ticket))
    }

    /// The worker: waits for the first held run's wait to become queueable,
    /// queues what it can, and repeats. It stays a while once nothing is
    /// held, so a pipeline that holds a run every iteration does not pay for
    /// a new thread each time.
    fn work(self: Arc<Self>) {
        const IDLE: Duration = Duration::from_secs(1);
        loop {
            let (steps, from) = {
                let mut st = self.lock();
                let idle_since = Instant::now();
                while st.held.is_empty() && idle_since.elapsed() < IDLE {
                    st = self
                        .arrived
                        .wait_timeout(st, IDLE)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                match st.held.front() {
                    Some(h) => (h.steps.clone(), h.from),
                    None => {
                        st.worker = false;
                        self.progress.notify_all();
                        return;
                    }
                }
            };
            steps.wait_queueable(from);
            let mut st = self.lock();
            let result = steps
                .gpu()
                .bind()
                .and_then(|_| steps.queue_from(from, self.stream.0));
            match result {
                Ok(Some(next)) => {
                    if let Some(h) = st.held.front_mut() {
                        h.from = next;
                    }
                }
                Ok(None) | Err(_) => {
                    if let Err(e) = result {
                        log::error!("CUDA: queueing a held run failed: {}", e.message);
                        st.failure.get_or_insert(e);
                    }
                    if let Some(h) = st.held.pop_front() {
                        st.queued = h.ticket;
                    }
                    self.progress.notify_all();
                }
            }
        }
    }

    /// Waits until the held run `ticket` (every held run for `None`) has gone
    /// to the driver. `Ok(false)` if the deadline passed first.
    fn wait_queued(&self, ticket: Option<u64>, deadline: Option<Instant>) -> Result<bool> {
        let mut st = self.lock();
        loop {
            let done = match ticket {
                Some(t) => st.queued >= t,
                None => st.held.is_empty(),
            };
            if done {
                return match st.failure.take() {
                    Some(e) => Err(e),
                    None => Ok(true),
                };
            }
            st = match deadline {
                None => self.progress.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    self.progress
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Waits for the held run `ticket` (if any) to be queued and for the
    /// stream to drain.
    pub(crate) fn wait(&self, ticket: Option<u64>, deadline: Option<Instant>) -> Result<bool> {
        if ticket.is_some() && !self.wait_queued(ticket, deadline)? {
            return Ok(false);
        }
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let (d, s) = (self.d, self.stream.0);
        // SAFETY: the stream lives as long as this queue.
        r::poll_until(
            d,
            "cuStreamQuery (waiting for a stream)",
            timeout,
            || unsafe { (d.cuStreamQuery)(s) },
        )
    }

    /// Everything queued or held so far is done.
    pub(crate) fn synchronize(&self, deadline: Option<Instant>) -> Result<bool> {
        if !self.wait_queued(None, deadline)? {
            return Ok(false);
        }
        self.wait(None, deadline)
    }
}

impl Drop for StreamQueue {
    fn drop(&mut self) {
        // The worker holds the queue, so nothing is held any more.
        if let Some(gpu) = &self.owner {
            if gpu.bind().is_ok() {
                // SAFETY: created by cuStreamCreate, destroyed once (queued
                // work still completes; the driver frees it afterwards).
                unsafe { (self.d.cuStreamDestroy_v2)(self.stream.0) };
            }
        }
    }
}
