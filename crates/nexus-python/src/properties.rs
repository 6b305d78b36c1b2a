//! `Properties` and the `get_property_*` family every object shares.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use nexus::PathItem;

use crate::convert::{json_to_py, property_path};
use crate::errors::IntoPyResult;

#[pyclass(name = "Properties", module = "nexus", frozen)]
pub struct PyProperties {
    pub inner: nexus::Properties,
}

/// Gives a class the six `get_property_*` getters over its `properties()`.
macro_rules! property_getters {
    ($ty:ty) => {
        impl $ty {
            /// The properties, built without the GIL: a profiled schedule's
            /// may be read from the device (a copy of its timestamps).
            fn properties_detached(&self, py: Python<'_>) -> nexus::Properties {
                py.detach(|| self.properties_for_query())
            }
        }

        #[pymethods]
        impl $ty {
            fn get_property_str(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<String> {
                self.properties_detached(py)
                    .get_str(&crate::convert::property_path(key)?)
                    .py()
            }
            fn get_property_int(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<i64> {
                self.properties_detached(py)
                    .get_int(&crate::convert::property_path(key)?)
                    .py()
            }
            fn get_property_flt(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<f64> {
                self.properties_detached(py)
                    .get_flt(&crate::convert::property_path(key)?)
                    .py()
            }
            fn get_property_str_vec(
                &self,
                py: Python<'_>,
                key: &Bound<'_, PyAny>,
            ) -> PyResult<Vec<String>> {
                self.properties_detached(py)
                    .get_str_vec(&crate::convert::property_path(key)?)
                    .py()
            }
            fn get_property_int_vec(
                &self,
                py: Python<'_>,
                key: &Bound<'_, PyAny>,
            ) -> PyResult<Vec<i64>> {
                self.properties_detached(py)
                    .get_int_vec(&crate::convert::property_path(key)?)
                    .py()
            }
            fn get_property_flt_vec(
                &self,
                py: Python<'_>,
                key: &Bound<'_, PyAny>,
            ) -> PyResult<Vec<f64>> {
                self.properties_detached(py)
                    .get_flt_vec(&crate::convert::property_path(key)?)
                    .py()
            }
            /// Top-level property names, or those under `path`.
            #[pyo3(signature = (path=None))]
            fn get_property_keys(
                &self,
                py: Python<'_>,
                path: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<Vec<String>> {
                let path = match path {
                    Some(p) => crate::convert::property_path(p)?,
                    None => Vec::new(),
                };
                self.properties_detached(py).keys(&path).py()
            }
            /// All properties as a `Properties` object.
            fn get_properties(&self, py: Python<'_>) -> crate::properties::PyProperties {
                crate::properties::PyProperties {
                    inner: self.properties_detached(py),
                }
            }
        }
    };
}
pub(crate) use property_getters;

impl PyProperties {
    fn properties_for_query(&self) -> nexus::Properties {
        self.inner.clone()
    }
}

property_getters!(PyProperties);

fn optional_path(path: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<PathItem>> {
    match path {
        Some(p) => property_path(p),
        None => Ok(Vec::new()),
    }
}

#[pymethods]
impl PyProperties {
    fn get_str(&self, key: &Bound<'_, PyAny>) -> PyResult<String> {
        self.inner.get_str(&property_path(key)?).py()
    }
    fn get_int(&self, key: &Bound<'_, PyAny>) -> PyResult<i64> {
        self.inner.get_int(&property_path(key)?).py()
    }
    fn get_flt(&self, key: &Bound<'_, PyAny>) -> PyResult<f64> {
        self.inner.get_flt(&property_path(key)?).py()
    }
    fn get_str_vec(&self, key: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        self.inner.get_str_vec(&property_path(key)?).py()
    }
    fn get_int_vec(&self, key: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
        self.inner.get_int_vec(&property_path(key)?).py()
    }
    fn get_flt_vec(&self, key: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
        self.inner.get_flt_vec(&property_path(key)?).py()
    }
    /// Where the value at `key` came from: "live" or "database '<name>'".
    fn get_source(&self, key: &Bound<'_, PyAny>) -> PyResult<String> {
        self.inner.source(&property_path(key)?).py()
    }
    /// The value at `key` as plain Python data (dict, list, str, int, float).
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, self.inner.get(&property_path(key)?).py()?)
    }
    /// The sub-tree at `key` as `Properties`.
    fn get_properties_at(&self, key: &Bound<'_, PyAny>) -> PyResult<PyProperties> {
        Ok(PyProperties {
            inner: self.inner.subtree(&property_path(key)?).py()?,
        })
    }
    #[pyo3(signature = (path=None))]
    fn to_dict<'py>(
        &self,
        py: Python<'py>,
        path: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, self.inner.get(&optional_path(path)?).py()?)
    }
    #[pyo3(signature = (indent=None))]
    fn to_json(&self, indent: Option<usize>) -> PyResult<String> {
        let out = match indent {
            None => serde_json::to_string(self.inner.root()),
            Some(n) => {
                let pad = vec![b' '; n];
                let mut buf = Vec::new();
                let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
                let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
                serde::Serialize::serialize(self.inner.root(), &mut ser)
                    .map(|_| String::from_utf8_lossy(&buf).into_owned())
            }
        };
        out.map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    }
    fn __len__(&self) -> usize {
        match self.inner.root() {
            serde_json::Value::Object(m) => m.len(),
            serde_json::Value::Array(a) => a.len(),
            _ => 0,
        }
    }
    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let path = match property_path(key) {
            Ok(p) => p,
            Err(_) if !key.is_instance_of::<PyString>() => {
                return Err(PyTypeError::new_err("property keys are str, int or lists"))
            }
            Err(e) => return Err(e),
        };
        Ok(self.inner.get(&path).is_ok())
    }
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let keys = self.inner.keys(&[]).unwrap_or_default();
        keys.into_pyobject(py)?
            .into_any()
            .try_iter()
            .map(Bound::into_any)
    }
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.get(py, key)
    }
    fn __repr__(&self) -> String {
        let keys = self.inner.keys(&[]).unwrap_or_default();
        let shown: Vec<&str> = keys.iter().take(8).map(String::as_str).collect();
        let more = if keys.len() > 8 {
            format!(", ... {} more", keys.len() - 8)
        } else {
            String::new()
        };
        format!(
            "<nexus.Properties of {}: {}{}>",
            self.inner.owner(),
            shown.join(", "),
            more
        )
    }
}
