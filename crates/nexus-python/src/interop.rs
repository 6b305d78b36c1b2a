//! Zero-copy interop with torch, CuPy and other array libraries.
//!
//! Export: CUDA buffers carry `__cuda_array_interface__` (version 3) and
//! every buffer `__dlpack__` / `__dlpack_device__` (kDLCUDA for CUDA
//! buffers, kDLCPU for host buffers). An export first waits (in slices, so
//! Ctrl-C works) for the runs that use the buffer, and holds the memory
//! itself, so `release()` of the buffer never frees what a view reads.
//! Import: `create_buffer(x)` of an object with `__cuda_array_interface__`
//! (a torch or CuPy CUDA tensor), or else a DLPack tensor on a CUDA device,
//! waits for the producer's stream and wraps the memory on the CUDA device
//! that owns it, keeping `x` (or the DLPack capsule) alive, and copies only
//! when the target is another device or the array is read-only.

use std::any::Any;
use std::ffi::{c_void, CStr};
use std::sync::Arc;

use pyo3::exceptions::{PyAttributeError, PyBufferError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use nexus::DataType;
use nexus::{ForeignMemory, MemoryDomain, ProducerStream};

use crate::errors::IntoPyResult;
use crate::objects::{wait_in_slices, PyBuffer};

/// DLPack (v0.8 ABI, the unversioned capsule every consumer accepts).
#[repr(C)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}
#[repr(C)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}
#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}
#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// The managed tensor and what it keeps alive; `tensor` first, so a
/// pointer to the context is a pointer to the tensor.
#[repr(C)]
struct Export {
    tensor: DLManagedTensor,
    shape: Box<[i64]>,
    _memory: Arc<dyn Any + Send + Sync>,
}

unsafe extern "C" fn export_deleter(t: *mut DLManagedTensor) {
    if !t.is_null() {
        // SAFETY: `t` is the Export boxed in `__dlpack__`, deleted once.
        drop(unsafe { Box::from_raw(t as *mut Export) });
    }
}

const DLTENSOR: &CStr = c"dltensor";

unsafe extern "C" fn capsule_destructor(capsule: *mut pyo3::ffi::PyObject) {
    // A consumer renames the capsule "used_dltensor" and owns the tensor
    // then; an unconsumed capsule still owns it. The destructor may run
    // while an exception is being raised: it is kept, not cleared.
    // SAFETY: called by Python, with the GIL, on a live capsule; the error
    // indicator is saved first and restored last.
    unsafe {
        let (mut t, mut v, mut tb) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        pyo3::ffi::PyErr_Fetch(&mut t, &mut v, &mut tb);
        if pyo3::ffi::PyCapsule_IsValid(capsule, DLTENSOR.as_ptr()) == 1 {
            let p =
                pyo3::ffi::PyCapsule_GetPointer(capsule, DLTENSOR.as_ptr()) as *mut DLManagedTensor;
            if let Some(d) = p.as_ref().and_then(|t| t.deleter) {
                d(p);
            }
        }
        pyo3::ffi::PyErr_Restore(t, v, tb);
    }
}

impl PyBuffer {
    fn speaks_cuda_array_interface(&self) -> bool {
        self.inner
            .device()
            .memory_domain()
            .speaks_cuda_array_interface()
    }

    /// Waits, in slices that answer Ctrl-C, for the runs that use the buffer.
    fn wait_uses(&self, py: Python<'_>) -> PyResult<()> {
        wait_in_slices(py, None, |t| self.inner.wait_idle(t)).map(|_| ())
    }
}

#[pymethods]
impl PyBuffer {
    /// The CUDA Array Interface (v3) of a CUDA buffer: torch, CuPy, Numba
    /// and JAX read the memory in place. Pending nexus work on the device's
    /// default stream is finished first, so no stream is named.
    #[getter(__cuda_array_interface__)]
    fn cuda_array_interface<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if !self.speaks_cuda_array_interface() {
            return Err(PyAttributeError::new_err(
                "__cuda_array_interface__ exists only on buffers of the CUDA runtime",
            ));
        }
        self.wait_uses(py)?;
        // The consumer keeps this object, not the memory: from now on this
        // object holds the memory too, so `release()` cannot free it.
        let memory = self.inner.keep_alive().py()?;
        let _ = self.exported.set(memory);
        let dt = self.inner.data_type();
        let ts = dt.typestr();
        let d = PyDict::new(py);
        d.set_item("shape", PyTuple::new(py, self.inner.shape())?)?;
        d.set_item("typestr", ts)?;
        d.set_item("data", (self.inner.address().py()?, false))?;
        d.set_item("version", 3)?;
        d.set_item("strides", py.None())?;
        Ok(d)
    }

    /// A DLPack capsule over the buffer's memory (no copy).
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__(
        &self,
        py: Python<'_>,
        stream: Option<&Bound<'_, PyAny>>,
        max_version: Option<&Bound<'_, PyAny>>,
        dl_device: Option<&Bound<'_, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let _ = (stream, max_version);
        self.inner.ensure_live().py()?;
        if copy == Some(true) {
            return Err(PyBufferError::new_err(
                "nexus buffers export without copying (copy=True is not supported)",
            ));
        }
        let (dev_type, dev_id) = self.__dlpack_device__()?;
        let shape: Vec<i64> = self.inner.shape().iter().map(|&d| d as i64).collect();
        if let Some(want) = dl_device {
            if !want.is_none() {
                let (t, i): (i32, i32) = want.extract()?;
                if (t, i) != (dev_type, dev_id) {
                    return Err(PyBufferError::new_err(format!("cannot export to DLPack device ({t}, {i}); the buffer lives on ({dev_type}, {dev_id})")));
                }
            }
        }
        self.wait_uses(py)?;
        let (code, bits) = self.inner.data_type().dlpack();
        let dtype = DLDataType {
            code,
            bits,
            lanes: 1,
        };
        let mut export = Box::new(Export {
            tensor: DLManagedTensor {
                dl_tensor: DLTensor {
                    data: self.inner.address().py()? as usize as *mut c_void,
                    device: DLDevice {
                        device_type: dev_type,
                        device_id: dev_id,
                    },
                    ndim: shape.len() as i32,
                    dtype,
                    shape: std::ptr::null_mut(),
                    strides: std::ptr::null_mut(),
                    byte_offset: 0,
                },
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(export_deleter),
            },
            shape: shape.into_boxed_slice(),
            _memory: self.inner.keep_alive().py()?,
        });
        export.tensor.dl_tensor.shape = export.shape.as_mut_ptr();
        let raw = Box::into_raw(export);
        // SAFETY: `raw` is a live Export; manager_ctx points back at it.
        unsafe { (*raw).tensor.manager_ctx = raw as *mut c_void };
        // SAFETY: creating a capsule over the managed tensor; the
        // destructor frees it unless a consumer took it.
        let cap = unsafe {
            pyo3::ffi::PyCapsule_New(
                raw as *mut c_void,
                DLTENSOR.as_ptr(),
                Some(capsule_destructor),
            )
        };
        if cap.is_null() {
            // SAFETY: the capsule was not made; reclaim the export.
            unsafe { export_deleter(raw as *mut DLManagedTensor) };
            return Err(PyErr::fetch(py));
        }
        // SAFETY: a new reference we own.
        Ok(unsafe { Bound::from_owned_ptr(py, cap) }.unbind())
    }

    /// The DLPack device of the buffer's memory: (kDLCPU, 0) for host
    /// memory, else (the memory's device type, the driver's ordinal).
    fn __dlpack_device__(&self) -> PyResult<(i32, i32)> {
        let device = self.inner.device();
        let domain = device.memory_domain();
        let id = match domain {
            MemoryDomain::Host => 0,
            _ => device.native_ordinal() as i32,
        };
        match domain.dlpack_device_type() {
            Some(code) => Ok((code, id)),
            None => Err(PyBufferError::new_err(format!(
                "{} has no memory address other libraries can use; copy it to the host with buffer.numpy()",
                self.inner.label()
            ))),
        }
    }
}

/// Checks that `strides` (in elements of `item` bytes, or bytes when
/// `in_bytes`) describe a C-contiguous array of `shape`.
fn check_contiguous(
    shape: &[i64],
    strides: &[i64],
    item: usize,
    in_bytes: bool,
    what: &str,
) -> PyResult<()> {
    let mut expect: i64 = if in_bytes { item as i64 } else { 1 };
    for (s, n) in strides.iter().zip(shape.iter()).rev() {
        if *n > 1 && *s != expect {
            return Err(PyValueError::new_err(format!(
                "create_buffer needs a C-contiguous CUDA array ({what}: shape {shape:?}, strides {strides:?}); call .contiguous() first"
            )));
        }
        expect *= n;
    }
    Ok(())
}

fn element_count(shape: &[i64], what: &str) -> PyResult<usize> {
    if shape.iter().any(|&s| s < 0) {
        return Err(PyValueError::new_err(format!(
            "invalid shape {shape:?} in {what}"
        )));
    }
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n as usize));
    count.ok_or_else(|| PyValueError::new_err(format!("shape {shape:?} in {what} overflows")))
}

/// `__cuda_array_interface__` (v2/v3): `Ok(None)` when `x` has none.
fn from_cuda_array_interface(data: &Bound<'_, PyAny>) -> PyResult<Option<ForeignMemory>> {
    let py = data.py();
    let cai = match data.getattr("__cuda_array_interface__") {
        Ok(c) => c,
        Err(e) if e.is_instance_of::<PyAttributeError>(py) => return Ok(None),
        Err(e) => return Err(e),
    };
    let cai = cai
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("__cuda_array_interface__ is not a dict"))?
        .clone();
    let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
        cai.get_item(k)?
            .ok_or_else(|| PyValueError::new_err(format!("__cuda_array_interface__ has no '{k}'")))
    };
    let shape: Vec<i64> = get("shape")?.extract()?;
    let ts: String = get("typestr")?.extract()?;
    let (ptr, readonly): (u64, bool) = get("data")?.extract()?;
    let (dt, item) = DataType::from_typestr(&ts).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unsupported typestr {ts:?} in __cuda_array_interface__"
        ))
    })?;
    let count = element_count(&shape, "__cuda_array_interface__")?;
    if let Some(strides) = cai.get_item("strides")? {
        if !strides.is_none() {
            let strides: Vec<i64> = strides.extract()?;
            check_contiguous(&shape, &strides, item, true, "__cuda_array_interface__")?;
        }
    }
    let stream = match cai.get_item("stream")? {
        Some(s) if !s.is_none() => {
            let handle: i64 = s.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "__cuda_array_interface__ 'stream' must be an int or None, got {}",
                    s.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ))
            })?;
            if handle <= 0 {
                return Err(PyValueError::new_err(format!(
                    "__cuda_array_interface__ 'stream' {handle} is not a stream handle (0 is disallowed by the protocol; 1 is the legacy default stream, 2 the per-thread one)"
                )));
            }
            ProducerStream::Handle(handle as u64)
        }
        _ => ProducerStream::None,
    };
    Ok(Some(ForeignMemory {
        address: ptr,
        size: count * item,
        data_type: dt,
        domain: MemoryDomain::Cuda,
        stream,
        readonly,
        keep_alive: Arc::new(data.clone().unbind()),
    }))
}

/// A DLPack capsule nexus keeps unconsumed while it uses the memory: the
/// producer's own capsule destructor frees the tensor when the capsule goes
/// (DLPack's rule for capsules nobody renamed), so dropping it needs no
/// GIL here: PyO3 defers the reference count to the next GIL holder, and
/// no core lock ever waits for Python.
struct DlpackOwner {
    _capsule: Py<PyAny>,
}

/// DLPack on a device (`__dlpack_device__()` names device memory):
/// `Ok(None)` for host tensors and objects without DLPack (the host path
/// takes them).
fn from_dlpack(data: &Bound<'_, PyAny>) -> PyResult<Option<ForeignMemory>> {
    let Ok(dev) = data.getattr("__dlpack_device__") else {
        return Ok(None);
    };
    let (dev_type, _dev_id): (i32, i32) = dev.call0()?.extract()?;
    let domain = match MemoryDomain::from_dlpack_device_type(dev_type) {
        None | Some(MemoryDomain::Host) => return Ok(None),
        Some(domain) => domain,
    };
    // No stream argument: the producer orders its work before the legacy
    // default stream, which is then synchronised here.
    let capsule = data.call_method0("__dlpack__")?;
    let cap = capsule.as_ptr();
    // SAFETY: checks the capsule's name before reading its pointer.
    let t = unsafe {
        if pyo3::ffi::PyCapsule_IsValid(cap, DLTENSOR.as_ptr()) != 1 {
            return Err(PyTypeError::new_err(
                "__dlpack__ did not return an unused 'dltensor' capsule",
            ));
        }
        pyo3::ffi::PyCapsule_GetPointer(cap, DLTENSOR.as_ptr()) as *mut DLManagedTensor
    };
    if t.is_null() {
        return Err(PyValueError::new_err(
            "__dlpack__ returned an empty capsule",
        ));
    }
    let owner = DlpackOwner {
        _capsule: capsule.clone().unbind(),
    };
    // SAFETY: a live managed tensor from the producer; the capsule (held
    // by `owner`) keeps it alive.
    let tensor = unsafe { &(*t).dl_tensor };
    let dtype = &tensor.dtype;
    let dt = (dtype.lanes == 1)
        .then(|| DataType::from_dlpack(dtype.code, dtype.bits))
        .flatten()
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "unsupported DLPack dtype (code {}, bits {}, lanes {})",
                tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes
            ))
        })?;
    if tensor.ndim < 0 || (tensor.ndim > 0 && tensor.shape.is_null()) {
        return Err(PyValueError::new_err(format!(
            "invalid DLPack tensor of {} dimensions",
            tensor.ndim
        )));
    }
    let ndim = tensor.ndim as usize;
    // SAFETY: shape (and strides when set) hold ndim values.
    let shape: Vec<i64> = (0..ndim).map(|i| unsafe { *tensor.shape.add(i) }).collect();
    let count = element_count(&shape, "the DLPack tensor")?;
    if !tensor.strides.is_null() {
        let strides: Vec<i64> = (0..ndim)
            // SAFETY: strides, when set, hold ndim values.
            .map(|i| unsafe { *tensor.strides.add(i) })
            .collect();
        check_contiguous(&shape, &strides, 1, false, "DLPack")?;
    }
    let item = tensor.dtype.bits as usize / 8;
    let ptr = tensor.data as u64 + tensor.byte_offset;
    Ok(Some(ForeignMemory {
        address: ptr,
        size: count * item,
        data_type: dt,
        domain,
        // No stream was passed to `__dlpack__`: the producer ordered its
        // work before the legacy default stream.
        stream: ProducerStream::LegacyDefault,
        readonly: false,
        keep_alive: Arc::new(owner),
    }))
}

/// `create_buffer(x)` for device arrays: a nexus buffer, else
/// `__cuda_array_interface__`, else DLPack on a device. `Ok(None)` when `x`
/// is none of them (the caller takes the host path).
pub fn try_import(
    device: &nexus::Device,
    data: &Bound<'_, PyAny>,
    data_type: Option<i64>,
) -> PyResult<Option<PyBuffer>> {
    let py = data.py();
    if let Ok(b) = data.cast::<PyBuffer>() {
        // A nexus buffer: the same memory (an alias that keeps it alive and
        // shares its record of runs), or a copy on another device.
        let src = b.get().inner.clone();
        if src.device() == device && data_type.is_none() {
            return Ok(Some(PyBuffer::new(src.alias().py()?)));
        }
        wait_in_slices(py, None, |t| src.wait_idle(t))?;
        let copied = py.detach(|| device.copy_buffer(&src)).py()?;
        return Ok(Some(PyBuffer::new(copied)));
    }
    let mut found = match from_cuda_array_interface(data)? {
        Some(f) => f,
        None => match from_dlpack(data)? {
            Some(f) => f,
            None => return Ok(None),
        },
    };
    if let Some(code) = data_type {
        found.data_type = DataType::from_code(code).py()?;
    }
    // Which device owns it, waiting for the producer, wrap or copy: the
    // core's policy (`nexus::interop`).
    let buffer = py.detach(|| nexus::interop::import(device, found)).py()?;
    Ok(Some(PyBuffer::new(buffer)))
}

/// A device array (CUDA array interface or DLPack) on `device`, as a buffer
/// over the same memory; `None` when it is not memory of that device.
pub fn import_in_place(
    device: &nexus::Device,
    data: &Bound<'_, PyAny>,
) -> PyResult<Option<PyBuffer>> {
    let py = data.py();
    let found = match from_cuda_array_interface(data)? {
        Some(f) => f,
        None => match from_dlpack(data)? {
            Some(f) => f,
            None => return Ok(None),
        },
    };
    let buffer = py
        .detach(|| nexus::interop::import_in_place(device, found))
        .py()?;
    Ok(buffer.map(PyBuffer::new))
}
