//! The Python classes of the spec: each wraps one core object and only
//! converts arguments, results and errors.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};

use nexus::LibrarySource;
use nexus::{DataType, EventType, Scalar};

use crate::convert::{dims, host_array, strict_int};
use crate::errors::{success, IntoPyResult};
use crate::properties::{property_getters, PyProperties};

/// `release()` and the context-manager protocol over the core object's
/// `release()`: resources go at once, later use raises NXS_Released.
macro_rules! releasable {
    ($($ty:ty),*) => {$(
        #[pymethods]
        impl $ty {
            fn release(&self) {
                self.inner.release()
            }
            fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
                slf
            }
            fn __exit__(&self, _t: &Bound<'_, PyAny>, _v: &Bound<'_, PyAny>, _tb: &Bound<'_, PyAny>) -> bool {
                self.inner.release();
                false
            }
        }
    )*};
}

releasable!(PyBuffer, PyLibrary, PyEvent, PyStream, PySchedule);

// ---------------------------------------------------------------- Runtime

#[pyclass(name = "Runtime", module = "nexus", frozen)]
pub struct PyRuntime {
    pub inner: nexus::Runtime,
}

impl PyRuntime {
    fn properties_for_query(&self) -> nexus::Properties {
        self.inner.properties()
    }
}
property_getters!(PyRuntime);

#[pymethods]
impl PyRuntime {
    fn get_devices(&self) -> Vec<PyDevice> {
        self.inner
            .devices()
            .iter()
            .map(|d| PyDevice { inner: d.clone() })
            .collect()
    }
    fn get_device(&self, id: &Bound<'_, PyAny>) -> PyResult<PyDevice> {
        let id = strict_int(id, "device id")?;
        Ok(PyDevice {
            inner: self.inner.device(id).py()?,
        })
    }
    fn get_name(&self) -> &'static str {
        self.inner.name()
    }
    fn __len__(&self) -> usize {
        self.inner.devices().len()
    }
    fn __repr__(&self) -> String {
        format!(
            "<nexus.Runtime '{}' with {} device(s)>",
            self.inner.name(),
            self.inner.devices().len()
        )
    }
}

// ---------------------------------------------------------------- Device

#[pyclass(name = "Device", module = "nexus", frozen, eq)]
#[derive(PartialEq)]
pub struct PyDevice {
    pub inner: nexus::Device,
}

impl PyDevice {
    fn properties_for_query(&self) -> nexus::Properties {
        self.inner.properties()
    }
}
property_getters!(PyDevice);

/// `create_buffer(size | array)` on any device.
pub fn create_buffer_on(
    device: &nexus::Device,
    data: &Bound<'_, PyAny>,
    data_type: Option<i64>,
) -> PyResult<PyBuffer> {
    let py = data.py();
    if data.is_instance_of::<PyInt>() {
        let size = strict_int(data, "buffer size")?;
        let dt = match data_type {
            Some(code) => DataType::from_code(code).py()?,
            None => DataType::U8,
        };
        let buf = py.detach(|| device.create_buffer(size, dt)).py()?;
        return Ok(PyBuffer::new(buf));
    }
    if let Some(buf) = crate::interop::try_import(device, data, data_type)? {
        return Ok(buf);
    }
    if data.is_instance_of::<PyFloat>() || data.is_instance_of::<PyString>() || data.is_none() {
        return Err(PyTypeError::new_err(format!(
            "create_buffer takes a size in bytes (int) or an array, got {}",
            data.get_type().name()?
        )));
    }
    let (_keep, view) = host_array(data, "create_buffer data", false, true)?;
    let dt = match data_type {
        Some(code) => DataType::from_code(code).py()?,
        None => view.data_type,
    };
    let (ptr, len) = (view.ptr, view.len);
    let buf = py
        .detach(|| {
            // SAFETY: `_keep` holds the array alive and unchanged for this call.
            let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
            device.create_buffer_from(bytes, dt)
        })
        .py()?;
    Ok(PyBuffer::new(buf))
}

#[pymethods]
impl PyDevice {
    fn get_info(&self) -> PyProperties {
        PyProperties {
            inner: self.inner.info(),
        }
    }
    #[pyo3(signature = (data, data_type=None))]
    fn create_buffer(&self, data: &Bound<'_, PyAny>, data_type: Option<i64>) -> PyResult<PyBuffer> {
        create_buffer_on(&self.inner, data, data_type)
    }
    fn copy_buffer(&self, py: Python<'_>, buffer: PyRef<'_, PyBuffer>) -> PyResult<PyBuffer> {
        let src = buffer.inner.clone();
        wait_in_slices(py, None, |t| src.wait_idle(t))?;
        Ok(PyBuffer::new(
            py.detach(|| self.inner.copy_buffer(&src)).py()?,
        ))
    }
    #[pyo3(signature = (event_type=None))]
    fn create_event(&self, event_type: Option<&Bound<'_, PyAny>>) -> PyResult<PyEvent> {
        let t = match event_type {
            Some(t) => EventType::from_code(strict_int(t, "event_type")?).py()?,
            None => EventType::Shared,
        };
        Ok(PyEvent {
            inner: self.inner.create_event(t).py()?,
        })
    }
    fn get_events(&self) -> Vec<PyEvent> {
        self.inner
            .events()
            .into_iter()
            .map(|e| PyEvent { inner: e })
            .collect()
    }
    /// A library from a file path (str or os.PathLike) or from bytes.
    fn load_library(&self, py: Python<'_>, filepath: &Bound<'_, PyAny>) -> PyResult<PyLibrary> {
        let source = if let Ok(b) = filepath.cast::<PyBytes>() {
            LibrarySource::Bytes(b.as_bytes().to_vec())
        } else if let Ok(p) = filepath.extract::<PathBuf>() {
            LibrarySource::File(p)
        } else {
            return Err(PyTypeError::new_err(format!(
                "load_library takes a path (str or os.PathLike) or bytes, got {}",
                filepath.get_type().name()?
            )));
        };
        Ok(PyLibrary {
            inner: py.detach(|| self.inner.load_library(source)).py()?,
        })
    }
    /// The kernels nexus ships for this device (`add_vectors`, `empty`).
    fn get_builtin_library(&self) -> PyResult<PyLibrary> {
        Ok(PyLibrary {
            inner: self.inner.load_library(LibrarySource::Builtin).py()?,
        })
    }
    fn create_schedule(&self) -> PySchedule {
        PySchedule {
            inner: self.inner.create_schedule(),
        }
    }
    fn create_stream(&self) -> PyResult<PyStream> {
        Ok(PyStream {
            inner: self.inner.create_stream().py()?,
        })
    }
    fn __repr__(&self) -> String {
        format!("<nexus.Device {}>", self.inner.label())
    }
}

// ---------------------------------------------------------------- Buffer

#[pyclass(name = "Buffer", module = "nexus", frozen)]
pub struct PyBuffer {
    pub inner: nexus::Buffer,
    /// The memory, once `__cuda_array_interface__` exported it: consumers
    /// of that protocol keep this object, so it keeps the memory.
    pub exported: std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl PyBuffer {
    pub fn new(inner: nexus::Buffer) -> Self {
        PyBuffer {
            inner,
            exported: std::sync::OnceLock::new(),
        }
    }
}

impl PyBuffer {
    fn properties_for_query(&self) -> nexus::Properties {
        self.inner.properties()
    }
}
property_getters!(PyBuffer);

#[pymethods]
impl PyBuffer {
    /// Copies the buffer into `host_array` (writable, C-contiguous, large enough).
    fn copy(&self, py: Python<'_>, host_array: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let (_keep, view) =
            crate::convert::host_array(host_array, "copy destination", true, false)?;
        self.inner.check_destination(view.len).py()?;
        let (ptr, len) = (view.ptr, view.len);
        // Runs that use the buffer finish first: waited here in slices, so
        // a buffer behind a held run answers Ctrl-C.
        wait_in_slices(py, None, |t| self.inner.wait_idle(t))?;
        py.detach(|| {
            // SAFETY: `_keep` holds the writable array alive for this call.
            let dst = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) };
            self.inner.read(dst)
        })
        .py()?;
        Ok(success(py))
    }
    /// Copies `host_array` (at most the buffer's size) into the buffer.
    fn write(&self, py: Python<'_>, host_array: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let (_keep, view) = crate::convert::host_array(host_array, "write source", false, true)?;
        let (ptr, len) = (view.ptr, view.len);
        wait_in_slices(py, None, |t| self.inner.wait_idle(t))?;
        py.detach(|| {
            // SAFETY: `_keep` holds the array alive for this call.
            let src = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
            self.inner.write(src)
        })
        .py()?;
        Ok(success(py))
    }
    #[getter]
    fn size(&self) -> usize {
        self.inner.size()
    }
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.size()
    }
    fn get_device(&self) -> PyDevice {
        PyDevice {
            inner: self.inner.device().clone(),
        }
    }
    fn __len__(&self) -> usize {
        self.inner.size()
    }
    fn __repr__(&self) -> String {
        let state = if self.inner.is_released() {
            " released"
        } else {
            ""
        };
        format!("<nexus.{}{state}>", self.inner.label())
    }
}

// ---------------------------------------------------------------- Library, Kernel

#[pyclass(name = "Library", module = "nexus", frozen)]
pub struct PyLibrary {
    pub inner: nexus::Library,
}

impl PyLibrary {
    fn properties_for_query(&self) -> nexus::Properties {
        self.inner.properties()
    }
}
property_getters!(PyLibrary);

#[pymethods]
impl PyLibrary {
    fn get_kernel(&self, name: &Bound<'_, PyAny>) -> PyResult<PyKernel> {
        let name: String = name
            .cast::<PyString>()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "kernel name must be a str, got {}",
                    name.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ))
            })?
            .extract::<String>()?;
        if name.is_empty() || name.contains('\0') {
            return Err(PyValueError::new_err(format!(
                "kernel name {name:?} is not a valid symbol name"
            )));
        }
        Ok(PyKernel {
            inner: self.inner.kernel(&name).py()?,
        })
    }
    fn __repr__(&self) -> String {
        format!(
            "<nexus.Library '{}' on {}>",
            self.inner.origin(),
            self.inner.device().label()
        )
    }
}

#[pyclass(name = "Kernel", module = "nexus", frozen)]
pub struct PyKernel {
    pub inner: nexus::Kernel,
}

impl PyKernel {
    fn properties_for_query(&self) -> nexus::Properties {
        self.inner.properties()
    }
}
property_getters!(PyKernel);

#[pymethods]
impl PyKernel {
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }
    fn __repr__(&self) -> String {
        format!(
            "<nexus.Kernel '{}' on {}>",
            self.inner.name(),
            self.inner.device().label()
        )
    }
}

// ---------------------------------------------------------------- Event, Stream

#[pyclass(name = "Event", module = "nexus", frozen)]
pub struct PyEvent {
    pub inner: nexus::Event,
}

impl PyEvent {
    fn properties_for_query(&self) -> nexus::Properties {
        self.inner.properties()
    }
}
property_getters!(PyEvent);

fn timeline_value(v: &Bound<'_, PyAny>) -> PyResult<u64> {
    let v = strict_int(v, "event value")?;
    u64::try_from(v).map_err(|_| {
        PyValueError::new_err(format!(
            "event value {v} is negative; timeline values are 0..2**63"
        ))
    })
}

/// How long a blocking call waits with the GIL released before it checks
/// for signals (Ctrl-C) and waits again.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// Calls `step(timeout)` (a wait returning whether it is done) until it
/// reports done or `deadline` passes (`Ok(false)`): first a poll with the
/// GIL held (most waits are over by then), then waits of at most WAIT_SLICE
/// with the GIL released, checking signals (Ctrl-C) between them.
pub(crate) fn wait_in_slices(
    py: Python<'_>,
    deadline: Option<Instant>,
    step: impl Fn(Duration) -> nexus::Result<bool> + Send + Sync,
) -> PyResult<bool> {
    if step(Duration::ZERO).py()? {
        return Ok(true);
    }
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(WAIT_SLICE),
            None => WAIT_SLICE,
        };
        if py.detach(|| step(slice)).py()? {
            return Ok(true);
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

#[pymethods]
impl PyEvent {
    #[pyo3(signature = (value=None))]
    fn signal(&self, py: Python<'_>, value: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let v = match value {
            Some(v) => timeline_value(v)?,
            None => 1,
        };
        self.inner.signal(v).py()?;
        Ok(success(py))
    }
    /// Waits until the event's value is >= `value`; `TimeoutError` after `timeout` seconds.
    #[pyo3(signature = (value=None, timeout=None))]
    fn wait(
        &self,
        py: Python<'_>,
        value: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let v = match value {
            Some(v) => timeline_value(v)?,
            None => 1,
        };
        let timeout = match timeout {
            None => None,
            Some(t) if (0.0..1e9).contains(&t) => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "timeout {t} must be a number of seconds >= 0"
                )))
            }
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        if wait_in_slices(py, deadline, |t| self.inner.wait_for(v, t))? {
            Ok(success(py))
        } else {
            Err(crate::errors::to_py(
                self.inner.timed_out(v, timeout.unwrap_or_default()),
            ))
        }
    }
    fn get_value(&self) -> PyResult<u64> {
        self.inner.value().py()
    }
    fn __repr__(&self) -> String {
        match self.inner.value() {
            Ok(v) => format!("<nexus.{} value={v}>", self.inner.label()),
            Err(_) => format!("<nexus.{} released>", self.inner.label()),
        }
    }
}

#[pyclass(name = "Stream", module = "nexus", frozen)]
pub struct PyStream {
    pub inner: nexus::Stream,
}

impl PyStream {
    fn properties_for_query(&self) -> nexus::Properties {
        self.inner.properties()
    }
}
property_getters!(PyStream);

#[pymethods]
impl PyStream {
    fn synchronize(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        wait_in_slices(py, None, |t| self.inner.synchronize_for(t))?;
        Ok(success(py))
    }
    fn __repr__(&self) -> String {
        format!("<nexus.Stream on {}>", self.inner.device().label())
    }
}

// ---------------------------------------------------------------- Schedule, Command

#[pyclass(name = "Schedule", module = "nexus", frozen)]
pub struct PySchedule {
    pub inner: nexus::Schedule,
}

impl PySchedule {
    fn properties_for_query(&self) -> nexus::Properties {
        self.inner.properties()
    }
}
property_getters!(PySchedule);

#[pymethods]
impl PySchedule {
    fn create_command(&self, kernel: PyRef<'_, PyKernel>) -> PyResult<PyCommand> {
        Ok(PyCommand {
            inner: self.inner.create_command(&kernel.inner).py()?,
        })
    }
    #[pyo3(signature = (event, value=None))]
    fn create_signal_command(
        &self,
        event: PyRef<'_, PyEvent>,
        value: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCommand> {
        let v = value.map(timeline_value).transpose()?.unwrap_or(1);
        Ok(PyCommand {
            inner: self.inner.create_signal_command(&event.inner, v).py()?,
        })
    }
    #[pyo3(signature = (event, value=None))]
    fn create_wait_command(
        &self,
        event: PyRef<'_, PyEvent>,
        value: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCommand> {
        let v = value.map(timeline_value).transpose()?.unwrap_or(1);
        Ok(PyCommand {
            inner: self.inner.create_wait_command(&event.inner, v).py()?,
        })
    }
    fn get_commands(&self) -> Vec<PyCommand> {
        self.inner
            .commands()
            .into_iter()
            .map(|c| PyCommand { inner: c })
            .collect()
    }
    #[pyo3(signature = (stream=None, blocking=true))]
    fn run(
        &self,
        py: Python<'_>,
        stream: Option<PyRef<'_, PyStream>>,
        blocking: bool,
    ) -> PyResult<Py<PyAny>> {
        let stream = stream.map(|s| s.inner.clone());
        if blocking {
            // Wait in slices so a run stuck on a wait command answers Ctrl-C.
            let run = py
                .detach(|| self.inner.submit(stream.as_ref(), true))
                .py()?;
            wait_in_slices(py, None, |t| run.wait(t))?;
        } else {
            // Queuing returns at once: keeping the GIL saves the hand-off
            // (a launch-rate cost of ~0.1 us per run).
            self.inner.submit(stream.as_ref(), false).py()?;
        }
        Ok(success(py))
    }
    fn __len__(&self) -> usize {
        self.inner.commands().len()
    }
    fn __repr__(&self) -> String {
        format!(
            "<nexus.Schedule of {} command(s) on {}>",
            self.inner.commands().len(),
            self.inner.device().label()
        )
    }
}

#[pyclass(name = "Command", module = "nexus", frozen)]
pub struct PyCommand {
    pub inner: nexus::Command,
}

impl PyCommand {
    fn properties_for_query(&self) -> nexus::Properties {
        self.inner.properties()
    }
}
property_getters!(PyCommand);

fn scalar(value: &Bound<'_, PyAny>, data_type: Option<i64>) -> PyResult<Scalar> {
    if value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(
            "kernel argument is a bool; pass an int with an explicit data_type",
        ));
    }
    // numpy scalars carry their own type (np.float64(1.0) is a float64).
    let dt = match data_type {
        Some(code) => DataType::from_code(code).py()?,
        None if value.hasattr("dtype")? && !value.is_instance_of::<PyBuffer>() => {
            let name: String = value.getattr("dtype")?.getattr("name")?.extract()?;
            DataType::from_numpy_name(&name)
        }
        None if value.is_instance_of::<PyInt>() => DataType::I32,
        None if value.is_instance_of::<PyFloat>() => DataType::F32,
        None => {
            return Err(PyTypeError::new_err(format!(
                "kernel argument must be a Buffer, an int or a float, got {}",
                value.get_type().name()?
            )))
        }
    };
    let out_of_range = |v: &dyn std::fmt::Display| {
        PyValueError::new_err(format!(
            "kernel argument {v} does not fit {}",
            dt.numpy_name()
        ))
    };
    let as_int = || -> PyResult<i128> {
        value.extract::<i128>().map_err(|_| {
            PyTypeError::new_err(format!(
                "kernel argument for {} must be an int",
                dt.numpy_name()
            ))
        })
    };
    Ok(match dt {
        DataType::I32 => {
            let v = as_int()?;
            Scalar::I32(i32::try_from(v).map_err(|_| out_of_range(&v))?)
        }
        DataType::U32 => {
            let v = as_int()?;
            Scalar::U32(u32::try_from(v).map_err(|_| out_of_range(&v))?)
        }
        DataType::I64 => {
            let v = as_int()?;
            Scalar::I64(i64::try_from(v).map_err(|_| out_of_range(&v))?)
        }
        DataType::U64 => {
            let v = as_int()?;
            Scalar::U64(u64::try_from(v).map_err(|_| out_of_range(&v))?)
        }
        DataType::F32 => Scalar::F32(value.extract::<f64>()? as f32),
        DataType::F64 => Scalar::F64(value.extract::<f64>()?),
        other => {
            return Err(PyValueError::new_err(format!(
            "scalar kernel arguments are int32, uint32, int64, uint64, float32 or float64, not {}",
            other.numpy_name()
        )))
        }
    })
}

#[pymethods]
impl PyCommand {
    fn set_buffer(
        &self,
        py: Python<'_>,
        index: &Bound<'_, PyAny>,
        buffer: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let index = strict_int(index, "argument index")?;
        let buffer = buffer.cast::<PyBuffer>().map_err(|_| {
            PyTypeError::new_err(format!(
                "set_buffer takes a nexus.Buffer, got {}",
                buffer
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        self.inner.set_buffer(index, &buffer.get().inner).py()?;
        Ok(success(py))
    }
    /// A buffer or a scalar (int -> int32, float -> float32, unless `data_type` says otherwise).
    #[pyo3(signature = (index, value, data_type=None))]
    fn set_arg(
        &self,
        py: Python<'_>,
        index: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        data_type: Option<i64>,
    ) -> PyResult<Py<PyAny>> {
        let index = strict_int(index, "argument index")?;
        if let Ok(b) = value.cast::<PyBuffer>() {
            self.inner.set_buffer(index, &b.get().inner).py()?;
        } else {
            self.inner
                .set_scalar(index, scalar(value, data_type)?)
                .py()?;
        }
        Ok(success(py))
    }
    /// Fixes the launch: `group_size` work-items per group, `grid_size` work-items in total.
    #[pyo3(signature = (group_size, grid_size, shared_memory=0))]
    fn finalize(
        &self,
        py: Python<'_>,
        group_size: &Bound<'_, PyAny>,
        grid_size: &Bound<'_, PyAny>,
        shared_memory: i64,
    ) -> PyResult<Py<PyAny>> {
        let group = dims(group_size, "group_size")?;
        let grid = dims(grid_size, "grid_size")?;
        self.inner.finalize(&group, &grid, shared_memory).py()?;
        Ok(success(py))
    }
    /// The event of a signal or wait command; None for a kernel command.
    fn get_event(&self) -> Option<PyEvent> {
        self.inner.event().map(|e| PyEvent { inner: e.clone() })
    }
    fn __repr__(&self) -> String {
        format!("<nexus.{}>", self.inner.label())
    }
}
