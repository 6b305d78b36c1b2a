//! HIP streams: a HIP stream under the common queue of tickets and
//! held runs (`backends/common/queue.rs`), and the `hal::Stream` users see.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ffi::safe::{Context, Event, Stream};
use super::ffi::sys::hipStream_t;
use super::Gpu;
use crate::backends::common::queue::{self, DeviceStream};
use crate::error::Result;
use crate::hal;

/// One HIP stream as the common queue drives it; checkpoints are events.
pub(crate) struct HipDeviceStream {
    ctx: Context,
    stream: Stream,
}

pub(crate) type StreamQueue = queue::StreamQueue<HipDeviceStream>;

/// A queue over a new non-blocking stream in `ctx`.
pub(crate) fn new_queue(ctx: &Context) -> Result<Arc<StreamQueue>> {
    Ok(StreamQueue::new(HipDeviceStream {
        ctx: *ctx,
        stream: Stream::create(ctx)?,
    }))
}

impl HipDeviceStream {
    pub(crate) fn raw(&self) -> hipStream_t {
        self.stream.raw()
    }

    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }
}

impl DeviceStream for HipDeviceStream {
    type Marker = Event;
    const WORKER_NAME: &'static str = "nexus-hip-held";

    fn is_idle(&self) -> Result<bool> {
        self.stream.is_idle()
    }

    fn mark(&self, spare: Option<Event>) -> Option<Event> {
        let event = match spare {
            Some(e) => e,
            None => Event::create(&self.ctx).ok()?,
        };
        event.record(self.stream.raw()).ok()?;
        Some(event)
    }

    fn is_reached(&self, marker: &Event) -> bool {
        marker.is_reached().unwrap_or(false)
    }

    fn finish(&self) {
        if let Ok(_bound) = self.ctx.bind() {
            // Used by nothing else now; its work completes before it is freed.
            let _ = self.stream.synchronize();
        }
    }
}

pub struct HipStream {
    pub(super) gpu: Arc<Gpu>,
    pub(super) queue: Arc<StreamQueue>,
}

impl HipStream {
    pub(crate) fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        let queue = new_queue(&gpu.context()?)?;
        gpu.register_queue(&queue);
        Ok(HipStream {
            gpu: gpu.clone(),
            queue,
        })
    }
}

impl hal::Stream for HipStream {
    fn synchronize(&self) -> Result<()> {
        let _ctx = self.gpu.bind()?;
        self.queue.synchronize(None).map(|_| ())
    }

    fn synchronize_for(&self, timeout: Duration) -> Result<bool> {
        let _ctx = self.gpu.bind()?;
        self.queue.synchronize(Some(Instant::now() + timeout))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
