//! Events (64-bit timelines) and streams (in-order queues).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::device::Device;
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::handle::Handle;
use crate::property::Properties;
use crate::types::EventType;

pub(crate) struct EventShared {
    pub device: Device,
    hal: Handle<dyn hal::Event>,
    pub event_type: EventType,
}

#[derive(Clone)]
pub struct Event {
    pub(crate) inner: Arc<EventShared>,
}

impl Event {
    pub(crate) fn create(device: &Device, event_type: EventType) -> Result<Event> {
        let hal = device.hal().create_event(event_type)?;
        Ok(Event {
            inner: Arc::new(EventShared {
                device: device.clone(),
                hal: Handle::new(hal),
                event_type,
            }),
        })
    }

    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    pub fn event_type(&self) -> EventType {
        self.inner.event_type
    }

    pub fn signal(&self, value: u64) -> Result<()> {
        self.hal()?.signal(value)
    }

    pub fn value(&self) -> Result<u64> {
        self.hal()?.value()
    }

    /// Blocks until the timeline reaches `value`; `Status::Timeout` after `timeout`.
    pub fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<()> {
        let hal = self.hal()?;
        if hal.wait(value, timeout)? {
            Ok(())
        } else {
            Err(self.timed_out(value, timeout.unwrap_or_default()))
        }
    }

    /// The error of a wait for `value` that gave up after `timeout`.
    pub fn timed_out(&self, value: u64, timeout: Duration) -> Error {
        let current = self
            .value()
            .map(|v| v.to_string())
            .unwrap_or_else(|e| e.message);
        Error::new(
            Status::Timeout,
            format!(
                "{}: timed out after {:.3} s waiting for value {value} (current value {current})",
                self.label(),
                timeout.as_secs_f64(),
            ),
        )
    }

    /// Like `wait`, but returns `Ok(false)` on timeout instead of an error.
    pub fn wait_for(&self, value: u64, timeout: Duration) -> Result<bool> {
        self.hal()?.wait(value, Some(timeout))
    }

    pub fn label(&self) -> String {
        format!(
            "Event({}) on {}",
            self.event_type().name(),
            self.inner.device.label()
        )
    }

    pub fn properties(&self) -> Properties {
        Properties::new(
            self.label(),
            json!({
                "EventType": self.event_type().name(),
                "Value": self.value().ok(),
                "Released": self.inner.hal.is_released(),
                "Device": self.inner.device.label(),
            }),
        )
    }

    pub(crate) fn hal(&self) -> Result<Arc<dyn hal::Event>> {
        self.inner.hal.get(|| self.label())
    }

    /// Drops the event; waiters already blocked keep it until they return.
    pub fn release(&self) {
        self.inner.hal.release()
    }

    pub fn is_released(&self) -> bool {
        self.inner.hal.is_released()
    }
}

#[derive(Clone)]
pub struct Stream {
    device: Device,
    hal: Arc<Handle<dyn hal::Stream>>,
}

impl Event {
    /// Identifies the event (for traces): the same for every clone.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }
}

impl Stream {
    pub(crate) fn create(device: &Device) -> Result<Stream> {
        let stream = Stream {
            device: device.clone(),
            hal: Arc::new(Handle::new(device.hal().create_stream()?)),
        };
        device.inner.streams.add(&stream.hal);
        Ok(stream)
    }

    /// A stream the device tracks (see `Device::streams`).
    pub(crate) fn from_parts(device: &Device, hal: Arc<Handle<dyn hal::Stream>>) -> Stream {
        Stream {
            device: device.clone(),
            hal,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// How traces name the stream.
    pub fn name(&self) -> String {
        format!("stream {:#x}", Arc::as_ptr(&self.hal) as *const () as usize)
    }

    pub fn synchronize(&self) -> Result<()> {
        self.hal()?.synchronize()
    }

    /// `Ok(false)` if work is still pending after `timeout`.
    pub fn synchronize_for(&self, timeout: Duration) -> Result<bool> {
        self.hal()?.synchronize_for(timeout)
    }

    /// Drops the stream; work already queued still completes.
    pub fn release(&self) {
        self.hal.release()
    }

    pub fn properties(&self) -> Properties {
        Properties::new(
            format!("Stream on {}", self.device.label()),
            json!({"Device": self.device.label()}),
        )
    }

    pub(crate) fn hal(&self) -> Result<Arc<dyn hal::Stream>> {
        self.hal
            .get(|| format!("Stream on {}", self.device.label()))
    }
}
