//! Core errors to Python exceptions: one mapping, used by every binding.

use pyo3::exceptions::{PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use nexus::Status;

pyo3::create_exception!(
    nexus,
    Error,
    PyRuntimeError,
    "A nexus failure; `.status` holds the nexus.status member."
);

/// `nexus.status.Status(code)` (an IntEnum member), or the plain int if the
/// Python package is not importable (the native module used on its own).
pub fn status_object(py: Python<'_>, status: Status) -> Py<PyAny> {
    static ENUM: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();
    let cls = ENUM.get_or_init(py, || {
        py.import("nexus.status")
            .and_then(|m| m.getattr("Status"))
            .ok()
            .map(Bound::unbind)
    });
    cls.as_ref()
        .and_then(|c| c.call1(py, (status.code(),)).ok())
        .unwrap_or_else(|| {
            status
                .code()
                .into_pyobject(py)
                .map(|o| o.into_any().unbind())
                .expect("int conversion")
        })
}

/// `NXS_Success`, cached: returned by every call that reports a status.
pub fn success(py: Python<'_>) -> Py<PyAny> {
    static SUCCESS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    SUCCESS
        .get_or_init(py, || status_object(py, Status::Success))
        .clone_ref(py)
}

pub fn to_py(e: nexus::Error) -> PyErr {
    let err = match e.status {
        Status::InvalidValue | Status::InvalidSize | Status::InvalidArgument => {
            PyValueError::new_err(e.message)
        }
        Status::InvalidType => PyTypeError::new_err(e.message),
        Status::Timeout => PyTimeoutError::new_err(e.message),
        _ => Error::new_err(e.message),
    };
    Python::attach(|py| {
        let _ = err.value(py).setattr("status", status_object(py, e.status));
    });
    err
}

/// `?` on core results inside bindings.
pub trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for nexus::Result<T> {
    fn py(self) -> PyResult<T> {
        // Every binding call passes here with the GIL held and no core lock:
        // the place to hand queued log records to Python.
        crate::logging::emit_pending();
        self.map_err(to_py)
    }
}
