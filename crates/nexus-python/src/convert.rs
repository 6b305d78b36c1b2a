//! Python values to core values: property keys, sizes, host arrays, JSON.

use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::Value;

use nexus::property::{parse_path, property_name, PathItem};
use nexus::DataType;

use crate::errors::IntoPyResult;

fn is_enum_member(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyInt>()
        && !obj.is_exact_instance_of::<PyInt>()
        && obj.hasattr("name").unwrap_or(false)
}

/// A property key: a name, a `nexus.property` member, or a path list mixing
/// names, members and integer indexes.
pub fn property_path(key: &Bound<'_, PyAny>) -> PyResult<Vec<PathItem>> {
    if key.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(
            "property key must be a str, a nexus.property member or a list, got bool",
        ));
    }
    if let Ok(s) = key.cast::<PyString>() {
        let s = s.extract::<String>()?;
        // "MemorySubsystem.MemoryTypes[1].Size": a whole path as text.
        if s.contains(['.', '[', ']']) {
            return parse_path(&s).py();
        }
        return Ok(vec![PathItem::Key(s)]);
    }
    if key.is_instance_of::<PyInt>() {
        let id: i64 = key.extract()?;
        return Ok(vec![PathItem::Key(property_name(id).py()?.to_string())]);
    }
    if key.is_instance_of::<PyList>() || key.is_instance_of::<PyTuple>() {
        let mut path = Vec::new();
        for item in key.try_iter()? {
            let item = item?;
            if let Ok(s) = item.cast::<PyString>() {
                path.push(PathItem::Key(s.extract::<String>()?));
            } else if item.is_instance_of::<PyBool>() {
                return Err(PyTypeError::new_err(
                    "property path items must be str, int or nexus.property members, got bool",
                ));
            } else if is_enum_member(&item) {
                let id: i64 = item.extract()?;
                path.push(PathItem::Key(property_name(id).py()?.to_string()));
            } else if item.is_instance_of::<PyInt>() {
                let i: i64 = item.extract()?;
                let i = usize::try_from(i).map_err(|_| {
                    PyValueError::new_err(format!("property path index {i} is negative"))
                })?;
                path.push(PathItem::Index(i));
            } else {
                return Err(PyTypeError::new_err(format!(
                    "property path items must be str, int or nexus.property members, got {}",
                    item.get_type().name()?
                )));
            }
        }
        if path.is_empty() {
            return Err(PyValueError::new_err("property path is empty"));
        }
        return Ok(path);
    }
    Err(PyTypeError::new_err(format!(
        "property key must be a str, a nexus.property member or a list of keys and indexes, got {}",
        key.get_type().name()?
    )))
}

/// An integer that is not a bool (Python's bool is an int subclass).
pub fn strict_int(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int, got {}",
            obj.get_type().name()?
        )));
    }
    obj.extract::<i64>().map_err(|_| {
        PyValueError::new_err(format!(
            "{what} {} is out of range",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })
}

/// An int or a sequence of 1-3 ints (launch sizes).
pub fn dims(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<i64>> {
    if obj.is_instance_of::<PyInt>() {
        return Ok(vec![strict_int(obj, what)?]);
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        return obj.try_iter()?.map(|x| strict_int(&x?, what)).collect();
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be an int or a list of 1 to 3 ints, got {}",
        obj.get_type().name()?
    )))
}

/// A host array as raw bytes: its address, its size, element type and shape.
pub struct HostView {
    pub ptr: usize,
    pub len: usize,
    pub data_type: DataType,
    pub shape: Vec<usize>,
}

/// A host object that is not a buffer-protocol object but describes host
/// memory through the array interface or DLPack (a torch CPU tensor, a
/// JAX CPU array ...), as a numpy array over the same memory.
fn host_protocol_array<'py>(
    np: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if obj.hasattr("__array_interface__")? {
        return np.call_method1("asarray", (obj,)).map(Some);
    }
    if obj.hasattr("__dlpack__")? && obj.hasattr("__dlpack_device__")? {
        let (device_type, _): (i32, i32) = obj.call_method0("__dlpack_device__")?.extract()?;
        if device_type == 1 {
            return np.call_method1("from_dlpack", (obj,)).map(Some);
        }
    }
    Ok(None)
}

/// Any buffer-protocol object (numpy arrays first) as a C-contiguous numpy
/// array; `writable` also requires the array to accept writes.
pub fn host_array<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    writable: bool,
    allow_copy: bool,
) -> PyResult<(Bound<'py, PyAny>, HostView)> {
    let py = obj.py();
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an array or bytes-like object, got str"
        )));
    }
    let np = py.import("numpy")?;
    let arr =
        if obj.cast::<PyUntypedArray>().is_ok() {
            obj.clone()
        } else {
            // bytes, bytearray, memoryview, array.array, ...: a view of the same
            // memory (a memoryview keeps read-only sources read-only). Sources
            // without the buffer protocol (lists) are converted when allowed.
            let type_error =
                || {
                    PyTypeError::new_err(format!(
                "{what} must be a numpy array or an object with the buffer protocol, got {}",
                obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
                };
            match py.import("builtins")?.getattr("memoryview")?.call1((obj,)) {
                Ok(view) => np
                    .call_method1("asarray", (view,))
                    .map_err(|_| type_error())?,
                Err(_) => match host_protocol_array(&np, obj) {
                    Ok(Some(arr)) => arr,
                    Ok(None) | Err(_) if allow_copy && !obj.is_none() => np
                        .call_method1("asarray", (obj,))
                        .map_err(|_| type_error())?,
                    Ok(None) => return Err(type_error()),
                    Err(e) => {
                        return Err(PyTypeError::new_err(format!(
                            "{what}: cannot use {} as host memory: {e}",
                            obj.get_type()
                                .name()
                                .map(|n| n.to_string())
                                .unwrap_or_default()
                        )))
                    }
                },
            }
        };
    let mut arr = arr;
    {
        let a = arr
            .cast::<PyUntypedArray>()
            .map_err(|_| PyTypeError::new_err(format!("{what} is not an array")))?;
        if !a.is_c_contiguous() {
            if !allow_copy {
                return Err(PyValueError::new_err(format!(
                    "{what} must be C-contiguous (got strides {:?})",
                    a.strides()
                )));
            }
            arr = np.call_method1("ascontiguousarray", (a,))?;
        }
    }
    let a = arr
        .cast::<PyUntypedArray>()
        .map_err(|_| PyTypeError::new_err(format!("{what} is not an array")))?;
    if writable
        && !arr
            .getattr("flags")?
            .getattr("writeable")?
            .extract::<bool>()?
    {
        return Err(PyValueError::new_err(format!(
            "{what} is read-only; pass a writable array"
        )));
    }
    // Object arrays hold PyObject pointers, not data: copying them to or
    // from a device would forge or leak references.
    if arr
        .getattr("dtype")?
        .getattr("hasobject")?
        .extract::<bool>()?
    {
        return Err(PyTypeError::new_err(format!(
            "{what} holds Python objects (dtype=object); pass an array of numbers or bytes"
        )));
    }
    let itemsize: usize = arr.getattr("itemsize")?.extract()?;
    let len = a.len() * itemsize;
    let dtype_name: String = arr.getattr("dtype")?.getattr("name")?.extract()?;
    // SAFETY: reading the data pointer field of a live numpy array.
    let ptr = unsafe { (*a.as_array_ptr()).fields.data } as usize;
    let view = HostView {
        ptr,
        len,
        data_type: DataType::from_numpy_name(&dtype_name),
        shape: a.shape().to_vec(),
    };
    Ok((arr, view))
}

/// A JSON value as plain Python objects.
pub fn json_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let d = PyDict::new(py);
            for (k, item) in map {
                d.set_item(k, json_to_py(py, item)?)?;
            }
            d.into_any()
        }
    })
}

/// An element type given as a `nexus.data_type` member (or its int code),
/// a numpy dtype, a numpy scalar type (`np.float32`) or a name ("float32").
pub fn data_type_of(obj: &Bound<'_, PyAny>) -> PyResult<DataType> {
    let py = obj.py();
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        let code: i64 = obj.extract()?;
        return DataType::from_code(code).py();
    }
    let name: String = match py.import("numpy")?.call_method1("dtype", (obj,)) {
        Ok(dt) => dt.getattr("name")?.extract()?,
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "data type must be a nexus.data_type member, a numpy dtype or a type name, got {}",
                obj.repr().map(|r| r.to_string()).unwrap_or_default()
            )))
        }
    };
    match DataType::from_numpy_name(&name) {
        DataType::Undefined => Err(PyValueError::new_err(format!(
            "data type {name} is not one nexus buffers hold (float16/32/64, bfloat16, int8-64, uint8-64, bool)"
        ))),
        dt => Ok(dt),
    }
}

/// A shape: an int or a tuple/list of ints, each >= 1.
pub fn shape_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<usize>> {
    let dims: Vec<i64> = if obj.is_instance_of::<PyInt>() {
        vec![strict_int(obj, what)?]
    } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        obj.try_iter()?
            .map(|x| strict_int(&x?, what))
            .collect::<PyResult<_>>()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int or a tuple of ints, got {}",
            obj.get_type().name()?
        )));
    };
    if dims.is_empty() || dims.iter().any(|&d| d < 1) {
        return Err(PyValueError::new_err(format!(
            "{what} {dims:?} is invalid: every dimension must be >= 1"
        )));
    }
    Ok(dims.into_iter().map(|d| d as usize).collect())
}
