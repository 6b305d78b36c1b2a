//! Buffers: device memory with a size and an element type.
//!
//! Host access follows the execution model: `read`, `write` and exports
//! first wait for every submitted run that uses the memory (on any stream),
//! and views (`alias`, `keep_alive`) hold the memory itself, so `release()`
//! of the buffer never frees what a view or a queued run still uses.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::backends::common::{release, usage::Usage};
use crate::device::Device;
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::handle::Handle;
use crate::property::Properties;
use crate::types::DataType;

/// Largest buffer nexus accepts before asking the runtime (catches sizes
/// that are negative numbers seen as unsigned, and other absurd requests).
pub const MAX_BUFFER_BYTES: u64 = 1 << 48;

pub(crate) struct BufferShared {
    pub device: Device,
    hal: Handle<dyn hal::Buffer>,
    /// The runs that use the memory; shared by every alias of it.
    pub(crate) usage: Arc<Usage>,
    size: usize,
    pub data_type: DataType,
    /// Elements per axis, set once when the buffer is made from an array
    /// or a shape; otherwise one axis of `size / itemsize` elements.
    shape: std::sync::OnceLock<Vec<usize>>,
}

/// How long an allocation that failed waits for pending frees before it
/// tries again.
const RECLAIM_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Buffer {
    pub(crate) inner: Arc<BufferShared>,
}

impl Buffer {
    pub(crate) fn allocate(device: &Device, size: i64, data_type: DataType) -> Result<Buffer> {
        if size <= 0 || size as u64 > MAX_BUFFER_BYTES {
            return Err(Error::new(
                Status::InvalidSize,
                format!("buffer size {size} on device {} is invalid (must be 1..={MAX_BUFFER_BYTES} bytes)", device.label()),
            ));
        }
        let hal = match device.hal().allocate(size as usize) {
            Err(e) if e.status == Status::OutOfMemory => {
                // Memory dropped by the user may only be waiting for its
                // last runs or for the release thread: free it, then retry.
                device.hal().reclaim();
                release::drain(RECLAIM_WAIT);
                device.hal().allocate(size as usize)?
            }
            other => other?,
        };
        Ok(Buffer::from_hal(device, hal, data_type))
    }

    /// A buffer over memory a backend already holds (allocated or wrapped).
    pub(crate) fn from_hal(
        device: &Device,
        hal: Arc<dyn hal::Buffer>,
        data_type: DataType,
    ) -> Buffer {
        let size = hal.size();
        let buffer = Buffer {
            inner: Arc::new(BufferShared {
                device: device.clone(),
                hal: Handle::new(hal),
                usage: Arc::new(Usage::default()),
                size,
                data_type,
                shape: std::sync::OnceLock::new(),
            }),
        };
        device.inner.buffers.add(&buffer.inner);
        buffer
    }

    /// Another buffer over the same memory (a buffer made from a buffer):
    /// it keeps the memory alive after this one is released, and shares
    /// its record of the runs that use it.
    pub fn alias(&self) -> Result<Buffer> {
        let hal = self.hal()?;
        Ok(Buffer {
            inner: Arc::new(BufferShared {
                device: self.inner.device.clone(),
                hal: Handle::new(hal),
                usage: self.inner.usage.clone(),
                size: self.inner.size,
                data_type: self.inner.data_type,
                shape: self.inner.shape.clone(),
            }),
        })
    }

    /// Bytes per element (1 for raw bytes).
    pub fn itemsize(&self) -> usize {
        self.inner.data_type.size().max(1)
    }

    /// Elements per axis.
    pub fn shape(&self) -> Vec<usize> {
        match self.inner.shape.get() {
            Some(s) => s.clone(),
            None => vec![self.size() / self.itemsize()],
        }
    }

    /// Gives the buffer its shape (once, as it is made): the elements of
    /// `shape` times the item size must be the buffer's size.
    pub fn set_shape(&self, shape: Vec<usize>) -> Result<()> {
        let elements = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .unwrap_or(usize::MAX);
        if elements.checked_mul(self.itemsize()) != Some(self.size()) {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "shape {shape:?} of {} holds {elements} elements, the buffer {} of {} bytes",
                    self.data_type().numpy_name(),
                    self.label(),
                    self.size()
                ),
            ));
        }
        if self.inner.shape.set(shape).is_err() {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("{} already has a shape", self.label()),
            ));
        }
        Ok(())
    }

    /// Rows `start..stop` of the first axis (elements of a 1-D buffer): a
    /// buffer over the same memory, with the same element type. It keeps the
    /// memory alive and shares the record of the runs that use it.
    pub fn slice(&self, start: usize, stop: usize) -> Result<Buffer> {
        let shape = self.shape();
        let rows = shape.first().copied().unwrap_or(0);
        if start > stop || stop > rows {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "slice {start}:{stop} is out of range for {rows} rows of {}",
                    self.label()
                ),
            ));
        }
        if start == stop {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "slice {start}:{stop} of {} is empty; buffers hold at least one byte",
                    self.label()
                ),
            ));
        }
        let row_bytes = shape[1..].iter().product::<usize>() * self.itemsize();
        let hal: Arc<dyn hal::Buffer> = Arc::new(hal::SubBuffer::new(
            self.hal()?,
            start * row_bytes,
            (stop - start) * row_bytes,
        ));
        let view = Buffer {
            inner: Arc::new(BufferShared {
                device: self.inner.device.clone(),
                size: hal.size(),
                hal: Handle::new(hal),
                usage: self.inner.usage.clone(),
                data_type: self.inner.data_type,
                shape: std::sync::OnceLock::new(),
            }),
        };
        let mut view_shape = shape;
        view_shape[0] = stop - start;
        view.set_shape(view_shape)?;
        Ok(view)
    }

    /// What a zero-copy export (DLPack, the CUDA array interface) holds:
    /// the memory itself, alive while the export is, whatever happens to
    /// this buffer.
    pub fn keep_alive(&self) -> Result<Arc<dyn Any + Send + Sync>> {
        Ok(Arc::new(self.hal()?))
    }

    /// Waits up to `timeout` for every submitted run that uses this
    /// memory: `Ok(true)` once there is none left.
    pub fn wait_idle(&self, timeout: Duration) -> Result<bool> {
        self.hal()?;
        Ok(self.inner.usage.wait(timeout))
    }

    pub(crate) fn wait_all_uses(&self) {
        while !self.inner.usage.wait(Duration::from_secs(3600)) {}
    }

    pub fn size(&self) -> usize {
        self.inner.size
    }

    pub fn data_type(&self) -> DataType {
        self.inner.data_type
    }

    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// The address kernels receive (a host pointer on the CPU, a device pointer on a GPU).
    pub fn address(&self) -> Result<u64> {
        Ok(self.hal()?.address())
    }

    /// Host to buffer, from offset 0; `src` may be shorter than the buffer.
    pub fn write(&self, src: &[u8]) -> Result<()> {
        if src.len() > self.size() {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "cannot write {} bytes into a buffer of {} bytes",
                    src.len(),
                    self.size()
                ),
            ));
        }
        let hal = self.hal()?;
        self.wait_all_uses();
        let start = crate::trace::now_us();
        hal.write(0, src)?;
        self.trace_copy("host to device", src.len(), start);
        Ok(())
    }

    pub(crate) fn trace_copy(&self, what: &'static str, bytes: usize, start_us: f64) {
        if crate::trace::active() {
            crate::trace::record(crate::trace::Record::HostCopy {
                device: self.device().label(),
                what,
                bytes,
                start_us,
                end_us: crate::trace::now_us(),
            });
        }
    }

    /// Refuses a copy destination smaller than the buffer.
    pub fn check_destination(&self, len: usize) -> Result<()> {
        if len < self.size() {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "copy destination holds {len} bytes, {} has {} bytes",
                    self.label(),
                    self.size()
                ),
            ));
        }
        Ok(())
    }

    /// Refuses data of 0 bytes to make a buffer from.
    pub fn check_data_size(len: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::new(
                Status::InvalidSize,
                "create_buffer data is empty (0 bytes)",
            ));
        }
        Ok(())
    }

    /// Buffer to host: fills `dst`, which must hold at least the buffer's size.
    pub fn read(&self, dst: &mut [u8]) -> Result<()> {
        self.check_destination(dst.len())?;
        let n = self.size();
        let hal = self.hal()?;
        self.wait_all_uses();
        let start = crate::trace::now_us();
        hal.read(0, &mut dst[..n])?;
        self.trace_copy("device to host", n, start);
        Ok(())
    }

    pub fn properties(&self) -> Properties {
        let dt = self.data_type();
        Properties::new(
            self.label(),
            json!({
                "Size": self.size(),
                "DataType": dt.numpy_name(),
                "Count": self.size() / self.itemsize(),
                "Shape": self.shape(),
                "Device": self.inner.device.label(),
                "Runtime": self.inner.device.runtime_name(),
                "Released": self.is_released(),
            }),
        )
    }

    pub fn label(&self) -> String {
        format!(
            "Buffer({} bytes, {}) on {}",
            self.size(),
            self.data_type().numpy_name(),
            self.inner.device.label()
        )
    }

    pub(crate) fn hal(&self) -> Result<Arc<dyn hal::Buffer>> {
        self.inner.hal.get(|| self.label())
    }

    /// Frees the memory now (work already queued keeps it until done);
    /// later use raises `Status::Released`.
    pub fn release(&self) {
        self.inner.hal.release()
    }

    pub fn is_released(&self) -> bool {
        self.inner.hal.is_released()
    }

    /// `Status::Released` if the buffer was released: checked before any
    /// other complaint, so a released buffer is reported as such everywhere.
    pub fn ensure_live(&self) -> Result<()> {
        self.hal().map(|_| ())
    }
}
