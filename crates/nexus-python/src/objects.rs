//! The Python classes of the spec: each wraps one core object and only
//! converts arguments, results and errors.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PySlice, PyString, PyTuple};

use nexus::LibrarySource;
use nexus::{DataType, EventType, Scalar};

use crate::convert::{data_type_of, dims, host_array, shape_of, strict_int};
use crate::errors::{success, IntoPyResult};
use crate::properties::{property_getters, PyProperties};

/// `release()` and the context-manager protocol over the core object's
/// `release()`: resources go at once, later use raises NXS_Released.
macro_rules! releasable {
    ($($ty:ty),*) => {$(
        #[pymethods]
        impl $ty {
            // Without the GIL: freeing may wait for the driver.
            fn release(&self, py: Python<'_>) {
                py.detach(|| self.inner.release())
            }
            fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
                slf
            }
            fn __exit__(&self, py: Python<'_>, _t: &Bound<'_, PyAny>, _v: &Bound<'_, PyAny>, _tb: &Bound<'_, PyAny>) -> bool {
                py.detach(|| self.inner.release());
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
        if id.is_instance_of::<PyBool>() || !id.is_instance_of::<PyInt>() {
            strict_int(id, "device id")?;
        }
        let id: i128 = match id.extract() {
            Ok(v) => v,
            Err(_) => {
                return Err(PyIndexError::new_err(format!(
                    "runtime '{}' has no device {}",
                    self.inner.name(),
                    id.repr()?
                )))
            }
        };
        let count = self.inner.devices().len();
        if id < 0 || id >= count as i128 {
            return Err(PyIndexError::new_err(format!(
                "runtime '{}' has no device {id} ({count} devices)",
                self.inner.name()
            )));
        }
        Ok(PyDevice {
            inner: self.inner.device(id as i64).py()?,
        })
    }
    /// A buffer on the runtime's first device (upstream's `runtime.create_buffer`).
    #[pyo3(signature = (data, data_type=None))]
    fn create_buffer(
        &self,
        data: &Bound<'_, PyAny>,
        data_type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyBuffer> {
        let device = self.inner.devices().first().cloned().ok_or_else(|| {
            PyIndexError::new_err(format!("runtime '{}' has no device", self.inner.name()))
        })?;
        create_buffer_on(&device, data, data_type, true)
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

/// `create_buffer(size | shape | array, data_type=None, copy=True)` on any device.
pub fn create_buffer_on(
    device: &nexus::Device,
    data: &Bound<'_, PyAny>,
    data_type: Option<&Bound<'_, PyAny>>,
    copy: bool,
) -> PyResult<PyBuffer> {
    let py = data.py();
    let dt_arg = data_type
        .filter(|d| !d.is_none())
        .map(data_type_of)
        .transpose()?;
    if data.is_instance_of::<PyInt>() {
        // A size in bytes, as the specification has it.
        let size = strict_int(data, "buffer size")?;
        let dt = dt_arg.unwrap_or(DataType::U8);
        let buf = py.detach(|| device.create_buffer(size, dt)).py()?;
        return Ok(PyBuffer::new(buf));
    }
    if data.is_instance_of::<PyTuple>() {
        // A shape (upstream's `create_buffer(shape, data_type)`).
        let dt = dt_arg.unwrap_or(DataType::F32);
        return empty_on(device, data, dt, false);
    }
    if !copy {
        return wrap_host_on(device, data, dt_arg);
    }
    let code = dt_arg.map(|d| d as i64);
    if let Some(buf) = crate::interop::try_import(device, data, code)? {
        return Ok(buf);
    }
    if data.is_instance_of::<PyFloat>() || data.is_instance_of::<PyString>() || data.is_none() {
        return Err(PyTypeError::new_err(format!(
            "create_buffer takes a size in bytes (int), a shape (tuple) or an array, got {}",
            data.get_type().name()?
        )));
    }
    let (_keep, view) = host_array(data, "create_buffer data", false, true)?;
    let dt = dt_arg.unwrap_or(view.data_type);
    let (ptr, len) = (view.ptr, view.len);
    let buf = py
        .detach(|| {
            // SAFETY: `_keep` holds the array alive and unchanged for this call.
            let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
            device.create_buffer_from(bytes, dt)
        })
        .py()?;
    keep_array_shape(&buf, dt_arg.is_none(), &view.shape);
    Ok(PyBuffer::new(buf))
}

/// A buffer made from an array keeps the array's shape (when its element
/// type is one nexus knows and was not overridden).
fn keep_array_shape(buf: &nexus::Buffer, own_type: bool, shape: &[usize]) {
    if own_type && buf.data_type() != DataType::Undefined && !shape.is_empty() {
        let _ = buf.set_shape(shape.to_vec());
    }
}

/// `create_buffer(array, copy=False)`: the device uses the host array's
/// memory in place (host-memory devices only) and keeps the array alive.
fn wrap_host_on(
    device: &nexus::Device,
    data: &Bound<'_, PyAny>,
    data_type: Option<DataType>,
) -> PyResult<PyBuffer> {
    if device.memory_domain() != nexus::MemoryDomain::Host {
        return Err(PyValueError::new_err(format!(
            "create_buffer(copy=False) wraps host memory, which device {} cannot use in place; pass copy=True",
            device.label()
        )));
    }
    let (arr, view) = host_array(data, "create_buffer data", true, false).map_err(|e| {
        PyValueError::new_err(format!(
            "create_buffer(copy=False) needs a writable, C-contiguous host array: {}",
            e.value(data.py())
        ))
    })?;
    nexus::Buffer::check_data_size(view.len).py()?;
    let owner: std::sync::Arc<dyn std::any::Any + Send + Sync> = std::sync::Arc::new(arr.unbind());
    let dt = data_type.unwrap_or(view.data_type);
    let buf = device
        .wrap_device_memory(view.ptr as u64, view.len, dt, owner)
        .py()?;
    keep_array_shape(&buf, data_type.is_none(), &view.shape);
    Ok(PyBuffer::new(buf))
}

/// The bytes of `shape` elements of `dt`, within what one buffer may hold.
fn shape_bytes(shape: &[usize], dt: DataType) -> PyResult<i64> {
    shape
        .iter()
        .try_fold(dt.size().max(1) as u64, |n, &d| n.checked_mul(d as u64))
        .filter(|&n| n <= nexus::MAX_BUFFER_BYTES)
        .map(|n| n as i64)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "shape {shape:?} of {} is too large for one buffer",
                dt.numpy_name()
            ))
        })
}

/// An optional `dtype=` argument; float32 when left out.
fn dtype_or_f32(dtype: Option<&Bound<'_, PyAny>>) -> PyResult<DataType> {
    let dt = dtype
        .filter(|d| !d.is_none())
        .map(data_type_of)
        .transpose()?;
    Ok(dt.unwrap_or(DataType::F32))
}

/// `device.empty(shape, dtype)` (and `zeros`).
fn empty_on(
    device: &nexus::Device,
    shape: &Bound<'_, PyAny>,
    dt: DataType,
    zero: bool,
) -> PyResult<PyBuffer> {
    let py = shape.py();
    let shape = shape_of(shape, "shape")?;
    let size = shape_bytes(&shape, dt)?;
    let buf = py
        .detach(|| -> nexus::Result<nexus::Buffer> {
            let buf = device.create_buffer(size, dt)?;
            if zero {
                buf.write(&vec![0u8; size as usize])?;
            }
            Ok(buf)
        })
        .py()?;
    buf.set_shape(shape).py()?;
    Ok(PyBuffer::new(buf))
}

#[pymethods]
impl PyDevice {
    fn get_info(&self) -> PyProperties {
        PyProperties {
            inner: self.inner.info(),
        }
    }
    #[pyo3(signature = (data, data_type=None, *, copy=true))]
    fn create_buffer(
        &self,
        data: &Bound<'_, PyAny>,
        data_type: Option<&Bound<'_, PyAny>>,
        copy: bool,
    ) -> PyResult<PyBuffer> {
        create_buffer_on(&self.inner, data, data_type, copy)
    }
    /// A buffer of `shape` elements of `dtype`, contents undefined.
    #[pyo3(signature = (shape, dtype=None))]
    fn empty(
        &self,
        shape: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyBuffer> {
        empty_on(&self.inner, shape, dtype_or_f32(dtype)?, false)
    }
    /// A buffer of `shape` elements of `dtype`, all zero.
    #[pyo3(signature = (shape, dtype=None))]
    fn zeros(
        &self,
        shape: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyBuffer> {
        empty_on(&self.inner, shape, dtype_or_f32(dtype)?, true)
    }
    /// A buffer of `shape` elements in page-locked host memory of this
    /// device (pinned on CUDA): copy commands move data between it and
    /// device buffers on the DMA engines, in stream order.
    #[pyo3(signature = (shape, dtype=None))]
    fn create_host_buffer(
        &self,
        py: Python<'_>,
        shape: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyBuffer> {
        let dt = dtype_or_f32(dtype)?;
        let shape = shape_of(shape, "shape")?;
        let bytes = shape_bytes(&shape, dt)?;
        let buf = py
            .detach(|| self.inner.create_host_buffer(bytes, dt))
            .py()?;
        buf.set_shape(shape).py()?;
        Ok(PyBuffer::new(buf))
    }
    /// Buffers made on this device that are alive and not released.
    fn get_buffers(&self) -> Vec<PyBuffer> {
        self.inner
            .buffers()
            .into_iter()
            .map(PyBuffer::new)
            .collect()
    }
    fn get_libraries(&self) -> Vec<PyLibrary> {
        let all = self.inner.libraries().into_iter();
        all.map(|inner| PyLibrary { inner }).collect()
    }
    fn get_streams(&self) -> Vec<PyStream> {
        let all = self.inner.streams().into_iter();
        all.map(|inner| PyStream { inner }).collect()
    }
    fn get_schedules(&self) -> Vec<PySchedule> {
        let all = self.inner.schedules().into_iter();
        all.map(|inner| PySchedule { inner }).collect()
    }
    fn copy_buffer(&self, py: Python<'_>, buffer: PyRef<'_, PyBuffer>) -> PyResult<PyBuffer> {
        let src = buffer.inner.clone();
        wait_in_slices(py, None, |t| src.wait_idle(t))?;
        Ok(PyBuffer::new(
            py.detach(|| self.inner.copy_buffer(&src)).py()?,
        ))
    }
    #[pyo3(signature = (event_type=None))]
    fn create_event(
        &self,
        py: Python<'_>,
        event_type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyEvent> {
        let t = match event_type {
            Some(t) => EventType::from_code(strict_int(t, "event_type")?).py()?,
            None => EventType::Shared,
        };
        Ok(PyEvent {
            inner: py.detach(|| self.inner.create_event(t)).py()?,
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
    fn get_builtin_library(&self, py: Python<'_>) -> PyResult<PyLibrary> {
        Ok(PyLibrary {
            inner: py
                .detach(|| self.inner.load_library(LibrarySource::Builtin))
                .py()?,
        })
    }
    /// `profile=True`: each run records its commands' times
    /// (`get_property_flt("ElapsedTime")`, milliseconds).
    #[pyo3(signature = (profile=false))]
    fn create_schedule(&self, profile: bool) -> PySchedule {
        PySchedule {
            inner: if profile {
                self.inner.create_profiled_schedule()
            } else {
                self.inner.create_schedule()
            },
        }
    }
    // Driver calls run without the GIL (another thread's driver call
    // may hold the driver's own locks for long).
    fn create_stream(&self, py: Python<'_>) -> PyResult<PyStream> {
        Ok(PyStream {
            inner: py.detach(|| self.inner.create_stream()).py()?,
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
    /// Elements (numpy's `size`); `nbytes` and `get_size()` are bytes.
    #[getter(size)]
    fn element_count(&self) -> usize {
        self.inner.size() / self.inner.itemsize()
    }
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.size()
    }
    /// Bytes, as upstream nexus names it.
    #[pyo3(name = "get_size")]
    fn size_in_bytes(&self) -> usize {
        self.inner.size()
    }
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.inner.shape())
    }
    #[getter]
    fn ndim(&self) -> usize {
        self.inner.shape().len()
    }
    #[getter]
    fn itemsize(&self) -> usize {
        self.inner.itemsize()
    }
    /// Bytes between consecutive elements of each axis (C order).
    #[getter]
    fn strides<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let shape = self.inner.shape();
        let mut strides = vec![self.inner.itemsize(); shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        PyTuple::new(py, strides)
    }
    /// The element type as a numpy dtype (uint8 for raw bytes).
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let dt = self.inner.data_type();
        let name = match dt {
            DataType::Undefined => "uint8",
            DataType::BF16 => "<V2",
            other => other.numpy_name(),
        };
        py.import("numpy")?.call_method1("dtype", (name,))
    }
    /// The address kernels receive (a host pointer on the CPU, a device
    /// pointer on a GPU).
    fn data_ptr(&self) -> PyResult<u64> {
        self.inner.address().py()
    }
    /// The contents as bytes (a copy).
    fn get_data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = vec![0u8; self.inner.size()];
        wait_in_slices(py, None, |t| self.inner.wait_idle(t))?;
        py.detach(|| self.inner.read(&mut out)).py()?;
        Ok(PyBytes::new(py, &out))
    }
    /// The contents as a numpy array of the buffer's shape and dtype: a
    /// view of the memory where the host can address it (the CPU runtime),
    /// else a copy. `copy=True` always copies; `copy=False` refuses to.
    #[pyo3(signature = (copy=None))]
    fn numpy<'py>(slf: &Bound<'py, Self>, copy: Option<bool>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let np = py.import("numpy")?;
        let host = me.inner.device().memory_domain() == nexus::MemoryDomain::Host;
        if host && copy != Some(true) {
            return np.call_method1("asarray", (slf,));
        }
        if copy == Some(false) {
            return Err(PyValueError::new_err(format!(
                "{} is not host memory: numpy(copy=False) cannot view it",
                me.inner.label()
            )));
        }
        let out = np.call_method1("empty", (me.shape(py)?, me.dtype(py)?))?;
        me.copy(py, &out)?;
        Ok(out)
    }
    /// numpy's conversion protocol: `np.asarray(buffer)`.
    #[pyo3(signature = (dtype=None, copy=None))]
    fn __array__<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let arr = Self::numpy(slf, copy)?;
        match dtype {
            Some(dt) if !dt.is_none() => arr.call_method1("astype", (dt,)),
            _ => Ok(arr),
        }
    }
    /// The array interface (v3) of a host-memory buffer: numpy and others
    /// read and write it in place. Runs that use the buffer finish first,
    /// and the memory then lives as long as this object.
    #[getter(__array_interface__)]
    fn array_interface<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if self.inner.device().memory_domain() != nexus::MemoryDomain::Host {
            return Err(pyo3::exceptions::PyAttributeError::new_err(
                "__array_interface__ exists only on buffers in host memory (the CPU runtime)",
            ));
        }
        wait_in_slices(py, None, |t| self.inner.wait_idle(t))?;
        let memory = self.inner.keep_alive().py()?;
        let _ = self.exported.set(memory);
        let d = PyDict::new(py);
        d.set_item("shape", self.shape(py)?)?;
        d.set_item("typestr", self.dtype(py)?.getattr("str")?)?;
        d.set_item("data", (self.inner.address().py()?, false))?;
        d.set_item("strides", py.None())?;
        d.set_item("version", 3)?;
        Ok(d)
    }
    /// `buffer[a:b]`: rows a..b of the first axis as a buffer over the same
    /// memory (usable as a kernel argument; it keeps the memory alive).
    fn __getitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<PyBuffer> {
        let slice = key.cast::<PySlice>().map_err(|_| {
            PyTypeError::new_err(format!(
                "buffers are indexed by slices (buffer[a:b]), got {}",
                key.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let rows = self.inner.shape().first().copied().unwrap_or(0);
        let idx = slice.indices(rows as isize)?;
        if idx.step != 1 {
            return Err(PyValueError::new_err(format!(
                "buffer slices must be contiguous (step 1), got step {}",
                idx.step
            )));
        }
        let (start, stop) = (
            idx.start.max(0) as usize,
            idx.stop.max(idx.start).max(0) as usize,
        );
        Ok(PyBuffer::new(
            self.inner
                .slice(start, stop)
                .map_err(|e| PyIndexError::new_err(e.message))?,
        ))
    }
    fn get_device(&self) -> PyDevice {
        PyDevice {
            inner: self.inner.device().clone(),
        }
    }
    /// Rows of the first axis, as for a numpy array.
    fn __len__(&self) -> usize {
        self.inner.shape().first().copied().unwrap_or(0)
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
    /// The kernels the library lists (builtins, SPIR-V and OpenCL programs,
    /// catalogs); empty where the format does not list them.
    fn get_kernels(&self, py: Python<'_>) -> PyResult<Vec<PyKernel>> {
        let names = py.detach(|| self.inner.kernel_names());
        names
            .iter()
            .map(|n| {
                Ok(PyKernel {
                    inner: self.inner.kernel(n).py()?,
                })
            })
            .collect()
    }
    fn get_info(&self) -> PyProperties {
        PyProperties {
            inner: self.inner.properties(),
        }
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
    fn get_info(&self) -> PyProperties {
        PyProperties {
            inner: self.inner.properties(),
        }
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

/// A `timeout=` in seconds (`None`: wait for ever).
fn timeout_arg(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if (0.0..1e9).contains(&t) => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(PyValueError::new_err(format!(
            "timeout {t} must be a number of seconds >= 0"
        ))),
    }
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
        let v = value.map(timeline_value).transpose()?.unwrap_or(1);
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
        let v = value.map(timeline_value).transpose()?.unwrap_or(1);
        let timeout = timeout_arg(timeout)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        if wait_in_slices(py, deadline, |t| self.inner.wait_for(v, t))? {
            Ok(success(py))
        } else {
            Err(crate::errors::to_py(
                self.inner.timed_out(v, timeout.unwrap_or_default()),
            ))
        }
    }
    /// `await event.wait_async(value, timeout)`: resolves once the value is
    /// >= `value`; `TimeoutError` after `timeout` seconds.
    #[pyo3(signature = (value=None, timeout=None))]
    fn wait_async<'py>(
        &self,
        py: Python<'py>,
        value: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let v = value.map(timeline_value).transpose()?.unwrap_or(1);
        let timeout = timeout_arg(timeout)?;
        let event = self.inner.clone();
        let check = Box::new(move || match event.value() {
            Ok(now) if now >= v => crate::aio::Poll::Done,
            Ok(_) => crate::aio::Poll::Pending,
            Err(e) => crate::aio::Poll::Failed(e),
        });
        let event = self.inner.clone();
        let on_timeout = Box::new(move || event.timed_out(v, timeout.unwrap_or_default()));
        crate::aio::future(py, check, timeout, Some(on_timeout))
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
    /// `await stream.synchronize_async()`: resolves once everything
    /// submitted to the stream so far is done.
    fn synchronize_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = self.inner.clone();
        let check = Box::new(move || match stream.synchronize_for(Duration::ZERO) {
            Ok(true) => crate::aio::Poll::Done,
            Ok(false) => crate::aio::Poll::Pending,
            Err(e) => crate::aio::Poll::Failed(e),
        });
        crate::aio::future(py, check, None, None)
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
    /// A copy between two buffers of the schedule's device, in stream order
    /// with the other commands: `size` bytes (default: all that fits) from
    /// `src` at `src_offset` to `dst` at `dst_offset`.
    #[pyo3(signature = (src, dst, size=None, src_offset=None, dst_offset=None))]
    fn create_copy_command(
        &self,
        src: PyRef<'_, PyBuffer>,
        dst: PyRef<'_, PyBuffer>,
        size: Option<&Bound<'_, PyAny>>,
        src_offset: Option<&Bound<'_, PyAny>>,
        dst_offset: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCommand> {
        let int_or = |v: Option<&Bound<'_, PyAny>>, what: &str| -> PyResult<Option<i64>> {
            v.filter(|x| !x.is_none())
                .map(|x| strict_int(x, what))
                .transpose()
        };
        let size = int_or(size, "copy size")?;
        let so = int_or(src_offset, "src_offset")?.unwrap_or(0);
        let dof = int_or(dst_offset, "dst_offset")?.unwrap_or(0);
        Ok(PyCommand {
            inner: self
                .inner
                .create_copy_command(&src.inner, &dst.inner, size, so, dof)
                .py()?,
        })
    }
    /// Fills `buffer` with `value` (one element of the buffer's type), in
    /// stream order with the other commands.
    fn create_fill_command(
        &self,
        buffer: PyRef<'_, PyBuffer>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<PyCommand> {
        let py = value.py();
        if value.is_instance_of::<PyString>() || value.is_none() {
            return Err(PyTypeError::new_err(format!(
                "fill value must be a number, got {}",
                value.get_type().name()?
            )));
        }
        let dtype = buffer.dtype(py)?;
        let element = py
            .import("numpy")?
            .call_method1("array", (value, &dtype))
            .map_err(|e| {
                PyValueError::new_err(format!(
                    "fill value {} does not fit {}: {}",
                    value.repr().map(|r| r.to_string()).unwrap_or_default(),
                    dtype.str().map(|r| r.to_string()).unwrap_or_default(),
                    e.value(py)
                ))
            })?;
        let pattern: Vec<u8> = element.call_method0("tobytes")?.extract()?;
        Ok(PyCommand {
            inner: self
                .inner
                .create_fill_command(&buffer.inner, pattern)
                .py()?,
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
    /// `await schedule.run_async(stream)`: queues one run and resolves when
    /// it is complete (its failure raised), without blocking the event loop.
    #[pyo3(signature = (stream=None))]
    fn run_async<'py>(
        &self,
        py: Python<'py>,
        stream: Option<PyRef<'_, PyStream>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let stream = stream.map(|s| s.inner.clone());
        let run = self.inner.submit(stream.as_ref(), false).py()?;
        let check = Box::new(move || match run.wait(Duration::ZERO) {
            Ok(true) => crate::aio::Poll::Done,
            Ok(false) => crate::aio::Poll::Pending,
            Err(e) => crate::aio::Poll::Failed(e),
        });
        crate::aio::future(py, check, None, None)
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

    /// An array argument: a device array on the command's device (torch,
    /// CuPy, anything with `__dlpack__` or the CUDA array interface) becomes
    /// a buffer over its memory; a host array is refused with the way out.
    fn device_array(&self, index: i64, value: &Bound<'_, PyAny>) -> PyResult<Option<PyBuffer>> {
        let np_scalar = value.py().import("numpy")?.getattr("generic")?;
        if value.is_instance(&np_scalar)? {
            return Ok(None);
        }
        let is_array = value.cast::<numpy::PyUntypedArray>().is_ok_and(|a| {
            use numpy::PyUntypedArrayMethods;
            a.ndim() > 0
        }) || value.hasattr("__dlpack__")?
            || value.hasattr("__cuda_array_interface__")?
            || value.hasattr("__array_interface__")?;
        if !is_array {
            return Ok(None);
        }
        let device = self.inner.device();
        let host = |why: &str| {
            PyTypeError::new_err(format!(
                "kernel argument {index} is a {} in {why}; kernels take buffers: pass device.create_buffer(array) (or a device array on {})",
                value.get_type().name().map(|n| n.to_string()).unwrap_or_default(),
                device.label()
            ))
        };
        if device.memory_domain() == nexus::MemoryDomain::Host {
            return Err(host("host memory"));
        }
        match crate::interop::import_in_place(device, value)? {
            Some(buf) => Ok(Some(buf)),
            None => Err(host("memory not on this device")),
        }
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
        } else if let Some(buffer) = self.device_array(index, value)? {
            self.inner.set_buffer(index, &buffer.inner).py()?;
        } else {
            self.inner
                .set_scalar(index, scalar(value, data_type)?)
                .py()?;
        }
        Ok(success(py))
    }
    /// Fixes the launch: `group_size` work-items per group, and either
    /// `grid_size` work-items in total or `num_groups` groups (CUDA-style
    /// grids), exactly one of the two.
    #[pyo3(signature = (group_size, grid_size=None, shared_memory=0, *, num_groups=None))]
    fn finalize(
        &self,
        py: Python<'_>,
        group_size: &Bound<'_, PyAny>,
        grid_size: Option<&Bound<'_, PyAny>>,
        shared_memory: i64,
        num_groups: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let group = dims(group_size, "group_size")?;
        let grid = match (
            grid_size.filter(|g| !g.is_none()),
            num_groups.filter(|g| !g.is_none()),
        ) {
            (Some(g), None) => dims(g, "grid_size")?,
            (None, Some(n)) => {
                let groups = dims(n, "num_groups")?;
                if groups.len() != group.len() {
                    return Err(PyValueError::new_err(format!(
                        "num_groups {groups:?} and group_size {group:?} must have as many axes"
                    )));
                }
                groups
                    .iter()
                    .zip(&group)
                    .map(|(&n, &g)| {
                        if n < 1 || g < 1 {
                            return Err(PyValueError::new_err(format!(
                                "num_groups {groups:?} and group_size {group:?} must be >= 1 on every axis"
                            )));
                        }
                        n.checked_mul(g).ok_or_else(|| {
                            PyValueError::new_err(format!(
                                "num_groups {groups:?} times group_size {group:?} overflows"
                            ))
                        })
                    })
                    .collect::<PyResult<Vec<i64>>>()?
            }
            (Some(_), Some(_)) => {
                return Err(PyTypeError::new_err(
                    "finalize takes grid_size or num_groups, not both",
                ))
            }
            (None, None) => {
                return Err(PyTypeError::new_err(
                    "finalize needs grid_size (work-items in total) or num_groups (groups)",
                ))
            }
        };
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
