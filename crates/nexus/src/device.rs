//! A device and what is created on it.

use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;

use crate::backends::common::lock;
use crate::buffer::{Buffer, BufferShared};
use crate::database;
use crate::error::{Error, Result, Status};
use crate::hal;
use crate::handle::Handle;
use crate::library::{Library, LibraryShared};
use crate::property::Properties;
use crate::schedule::{Schedule, ScheduleShared};
use crate::sync::{Event, EventShared, Stream};
use crate::types::{DataType, EventType};

pub(crate) struct DeviceShared {
    pub runtime: &'static str,
    pub index: usize,
    pub hal: Arc<dyn hal::Device>,
    pub name: String,
    events: Mutex<Vec<Weak<EventShared>>>,
    pub(crate) buffers: Tracked<BufferShared>,
    pub(crate) libraries: Tracked<LibraryShared>,
    pub(crate) streams: Tracked<Handle<dyn hal::Stream>>,
    pub(crate) schedules: Tracked<ScheduleShared>,
    /// The stream `copy_buffer` copies on (made on first use).
    copy_stream: std::sync::OnceLock<Arc<dyn hal::Stream>>,
}

/// The objects of one kind made on a device that are still alive, for
/// `get_buffers()` and its siblings: weak references, pruned as they grow.
pub(crate) struct Tracked<T: ?Sized> {
    items: Mutex<(Vec<Weak<T>>, usize)>,
}

impl<T: ?Sized> Default for Tracked<T> {
    fn default() -> Self {
        Tracked {
            items: Mutex::new((Vec::new(), 16)),
        }
    }
}

impl<T: ?Sized> Tracked<T> {
    pub(crate) fn add(&self, item: &Arc<T>) {
        let mut items = lock(&self.items);
        let (list, prune_at) = &mut *items;
        if list.len() >= *prune_at {
            // Amortised: prune only when the list has doubled since.
            list.retain(|w| w.strong_count() > 0);
            *prune_at = (list.len() * 2).max(16);
        }
        list.push(Arc::downgrade(item));
    }

    pub(crate) fn alive(&self) -> Vec<Arc<T>> {
        lock(&self.items)
            .0
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

/// One device of a runtime. Cheap to clone; clones are the same device.
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<DeviceShared>,
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Device {
    pub(crate) fn new(runtime: &'static str, index: usize, hal: Arc<dyn hal::Device>) -> Self {
        let name = hal
            .properties()
            .get("Name")
            .and_then(Value::as_str)
            .unwrap_or("unnamed")
            .to_string();
        Device {
            inner: Arc::new(DeviceShared {
                runtime,
                index,
                hal,
                name,
                events: Mutex::new(Vec::new()),
                buffers: Tracked::default(),
                libraries: Tracked::default(),
                streams: Tracked::default(),
                schedules: Tracked::default(),
                copy_stream: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn runtime_name(&self) -> &'static str {
        self.inner.runtime
    }

    pub fn index(&self) -> usize {
        self.inner.index
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// "cpu:0 'AMD EPYC ...'" — how messages name this device.
    pub fn label(&self) -> String {
        format!(
            "{}:{} '{}'",
            self.inner.runtime, self.inner.index, self.inner.name
        )
    }

    /// Live properties only.
    pub fn properties(&self) -> Properties {
        let mut root = self.inner.hal.properties();
        if let Value::Object(map) = &mut root {
            map.insert("Runtime".into(), Value::from(self.inner.runtime));
            map.insert("ID".into(), Value::from(self.inner.index));
        }
        Properties::new(format!("Device {}", self.label()), root)
    }

    /// Live properties merged over the device database entry of this device.
    pub fn info(&self) -> Properties {
        let live = self.properties();
        database::merge_live(&live)
    }

    pub fn create_buffer(&self, size: i64, data_type: DataType) -> Result<Buffer> {
        Buffer::allocate(self, size, data_type)
    }

    /// A buffer in page-locked host memory of this device (copies between
    /// it and device buffers run on the DMA engines, in stream order).
    pub fn create_host_buffer(&self, size: i64, data_type: DataType) -> Result<Buffer> {
        if size <= 0 || size as u64 > crate::buffer::MAX_BUFFER_BYTES {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "host buffer size {size} on device {} is invalid",
                    self.label()
                ),
            ));
        }
        let hal = self.inner.hal.allocate_host(size as usize)?;
        Ok(Buffer::from_hal(self, hal, data_type))
    }

    pub fn create_buffer_from(&self, bytes: &[u8], data_type: DataType) -> Result<Buffer> {
        Buffer::check_data_size(bytes.len())?;
        let buf = Buffer::allocate(self, bytes.len() as i64, data_type)?;
        buf.write(bytes)?;
        Ok(buf)
    }

    /// A buffer over device memory another library owns (a CUDA tensor of
    /// torch or CuPy), with no copy; `owner` stays alive as long as the buffer.
    pub fn wrap_device_memory(
        &self,
        address: u64,
        size: usize,
        data_type: DataType,
        owner: Arc<dyn std::any::Any + Send + Sync>,
    ) -> Result<Buffer> {
        if size == 0 {
            return Err(Error::new(
                Status::InvalidSize,
                format!("cannot wrap 0 bytes of memory on device {}", self.label()),
            ));
        }
        let hal = self.inner.hal.wrap_device_memory(address, size, owner)?;
        Ok(Buffer::from_hal(self, hal, data_type))
    }

    /// Blocks until the work queued on this device's default stream is done.
    pub fn synchronize(&self) -> Result<()> {
        self.inner.hal.synchronize()
    }

    /// Blocks until another library's work on this device, ordered on
    /// `stream`, has finished.
    pub fn synchronize_external_stream(&self, stream: hal::ProducerStream) -> Result<()> {
        self.inner.hal.synchronize_external_stream(stream)
    }

    /// Where this device's memory lives, as interop protocols name it.
    pub fn memory_domain(&self) -> hal::MemoryDomain {
        self.inner.hal.memory_domain()
    }

    /// Whether `address` is memory of this device.
    pub fn owns_address(&self, address: u64) -> bool {
        self.inner.hal.owns_address(address)
    }

    /// The device's number in its driver (the CUDA ordinal, ...).
    pub fn native_ordinal(&self) -> i64 {
        self.inner.hal.native_ordinal()
    }

    /// Whether copy commands of this device reach memory of `other`.
    pub fn can_copy_with(&self, other: &Device) -> Result<bool> {
        if other == self {
            return Ok(true);
        }
        self.inner.hal.can_copy_with(other.inner.hal.as_ref())
    }

    /// A copy of `buffer` on this device, with its shape: a device copy
    /// where this device reaches the memory (its own, a peer GPU's), else
    /// through the host. Like a host copy, it acts after every run
    /// submitted earlier that uses `buffer`.
    pub fn copy_buffer(&self, buffer: &Buffer) -> Result<Buffer> {
        let src = buffer.hal()?;
        if !self.can_copy_with(buffer.device())? {
            let mut staging = vec![0u8; buffer.size()];
            buffer.read(&mut staging)?;
            let out = self.create_buffer_from(&staging, buffer.data_type())?;
            out.set_shape(buffer.shape())?;
            return Ok(out);
        }
        let out = Buffer::allocate(self, buffer.size() as i64, buffer.data_type())?;
        out.set_shape(buffer.shape())?;
        buffer.wait_all_uses();
        let copy = hal::Op::Copy {
            src,
            dst: out.hal()?,
            src_offset: 0,
            dst_offset: 0,
            size: buffer.size(),
        };
        // On a stream of its own: a wait held on the default stream holds
        // that stream only, never this copy.
        let stream = self.copy_stream()?;
        let start = crate::trace::now_us();
        let run = self.inner.hal.encode(vec![copy])?;
        let fence = run.submit(Some(stream.as_ref()), true)?;
        buffer.inner.usage.record(&fence);
        out.inner.usage.record(&fence);
        buffer.trace_copy("device to device", buffer.size(), start);
        Ok(out)
    }

    /// The stream `copy_buffer` uses, made on first use.
    fn copy_stream(&self) -> Result<Arc<dyn hal::Stream>> {
        if let Some(s) = self.inner.copy_stream.get() {
            return Ok(s.clone());
        }
        let s = self.inner.hal.create_stream()?;
        Ok(self.inner.copy_stream.get_or_init(|| s).clone())
    }

    pub fn load_library(&self, source: hal::LibrarySource) -> Result<Library> {
        if let hal::LibrarySource::Bytes(b) = &source {
            if b.is_empty() {
                return Err(Error::new(
                    Status::InvalidLibrary,
                    "library bytes are empty",
                ));
            }
        }
        // A catalog is resolved to the build that fits this device (from its
        // Runtime and Architecture) before the backend sees one concrete
        // file; anything else goes to the backend as it is.
        let hal = crate::catalog::load(self, &source)?;
        Library::from_hal(self, &source, hal)
    }

    pub fn create_event(&self, event_type: EventType) -> Result<Event> {
        let event = Event::create(self, event_type)?;
        let mut events = lock(&self.inner.events);
        events.retain(|w| w.strong_count() > 0);
        events.push(Arc::downgrade(&event.inner));
        Ok(event)
    }

    /// Buffers made on this device that are alive and not released.
    pub fn buffers(&self) -> Vec<Buffer> {
        let all = self.inner.buffers.alive().into_iter();
        all.map(|inner| Buffer { inner })
            .filter(|b| !b.is_released())
            .collect()
    }

    /// Libraries loaded on this device that are alive and not released.
    pub fn libraries(&self) -> Vec<Library> {
        let all = self.inner.libraries.alive().into_iter();
        all.map(|inner| Library { inner })
            .filter(|l| !l.is_released())
            .collect()
    }

    /// Streams made on this device that are alive and not released.
    pub fn streams(&self) -> Vec<Stream> {
        let all = self.inner.streams.alive().into_iter();
        all.filter(|h| !h.is_released())
            .map(|hal| Stream::from_parts(self, hal))
            .collect()
    }

    /// Schedules made on this device that are alive and not released.
    pub fn schedules(&self) -> Vec<Schedule> {
        let all = self.inner.schedules.alive().into_iter();
        all.map(|inner| Schedule { inner })
            .filter(|s| !s.is_released())
            .collect()
    }

    /// Events created on this device that are still alive.
    pub fn events(&self) -> Vec<Event> {
        let events = lock(&self.inner.events);
        events
            .iter()
            .filter_map(Weak::upgrade)
            .map(|inner| Event { inner })
            .collect()
    }

    pub fn create_schedule(&self) -> Schedule {
        Schedule::new(self, false)
    }

    /// A schedule whose runs record how long each command took
    /// (`ElapsedTime` properties, in milliseconds).
    pub fn create_profiled_schedule(&self) -> Schedule {
        Schedule::new(self, true)
    }

    pub fn create_stream(&self) -> Result<Stream> {
        Stream::create(self)
    }

    /// A GPU, not a CPU or software device (see `hal::Device::is_gpu`).
    pub fn is_gpu(&self) -> bool {
        self.hal().is_gpu()
    }

    pub(crate) fn hal(&self) -> &Arc<dyn hal::Device> {
        &self.inner.hal
    }
}
