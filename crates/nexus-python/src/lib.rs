//! `nexus._nexus`: the native half of the `nexus` Python package.
//! Conversion only; every rule lives in the `nexus` core crate.

mod aio;
mod convert;
mod errors;
mod interop;
mod logging;
mod objects;
mod properties;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use errors::IntoPyResult;
use objects::*;
use properties::PyProperties;

#[pyfunction]
fn get_runtimes() -> Vec<PyRuntime> {
    nexus::get_runtimes()
        .into_iter()
        .map(|r| PyRuntime { inner: r })
        .collect()
}

/// Every runtime nexus knows, with or without devices, in listing order
/// (what `get_runtime(name)` accepts).
#[pyfunction]
fn known_runtimes() -> Vec<PyRuntime> {
    nexus::known_runtimes()
        .iter()
        .map(|r| PyRuntime { inner: r.clone() })
        .collect()
}

#[pyfunction]
fn get_runtime(name: &str) -> PyResult<PyRuntime> {
    Ok(PyRuntime {
        inner: nexus::get_runtime(name).py()?,
    })
}

/// The whole device database: name -> Properties.
#[pyfunction]
fn get_device_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (name, entry) in nexus::database::entries() {
        d.set_item(
            name,
            PyProperties {
                inner: nexus::database::entry_properties(entry),
            },
        )?;
    }
    Ok(d)
}

#[pyfunction]
fn lookup_device_info(name: &str) -> Option<PyProperties> {
    nexus::database::lookup(name).map(|inner| PyProperties { inner })
}

/// A system (host) buffer from a size in bytes or an array.
#[pyfunction]
#[pyo3(signature = (data, data_type=None, *, copy=true))]
fn create_buffer(
    data: &Bound<'_, PyAny>,
    data_type: Option<&Bound<'_, PyAny>>,
    copy: bool,
) -> PyResult<PyBuffer> {
    let device = nexus::system_device().py()?;
    create_buffer_on(&device, data, data_type, copy)
}

/// Starts recording a trace (`nexus.trace`).
#[pyfunction]
fn _trace_start() {
    nexus::trace::start();
}

/// Stops recording and returns the Chrome trace JSON, waiting up to
/// `timeout` seconds for the recorded runs to complete.
#[pyfunction]
fn _trace_stop(py: Python<'_>, timeout: f64) -> String {
    let timeout = std::time::Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
    py.detach(|| nexus::trace::stop(timeout).to_string())
}

/// Name tables of the core, so the Python enums can be checked against them.
#[pyfunction]
fn _enum_tables(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    let status: Vec<(&str, i32)> = nexus::Status::ALL
        .iter()
        .map(|s| (s.name(), s.code()))
        .collect();
    let property: Vec<(&str, usize)> = nexus::property::PROPERTY_NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i))
        .collect();
    let data_type: Vec<(&str, i32)> = nexus::DataType::ALL
        .iter()
        .map(|t| (t.name(), *t as i32))
        .collect();
    let event_type: Vec<(&str, i32)> = nexus::EventType::ALL
        .iter()
        .map(|t| (t.name(), *t as i32))
        .collect();
    d.set_item("status", status)?;
    d.set_item("property", property)?;
    d.set_item("data_type", data_type)?;
    d.set_item("event_type", event_type)?;
    Ok(d)
}

#[pymodule]
fn _nexus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    m.add("Error", m.py().get_type::<errors::Error>())?;
    m.add_class::<PyRuntime>()?;
    m.add_class::<PyDevice>()?;
    m.add_class::<PyBuffer>()?;
    m.add_class::<PyLibrary>()?;
    m.add_class::<PyKernel>()?;
    m.add_class::<PyEvent>()?;
    m.add_class::<PyStream>()?;
    m.add_class::<PySchedule>()?;
    m.add_class::<PyCommand>()?;
    m.add_class::<PyProperties>()?;
    m.add_function(wrap_pyfunction!(get_runtimes, m)?)?;
    m.add_function(wrap_pyfunction!(_trace_start, m)?)?;
    m.add_function(wrap_pyfunction!(_trace_stop, m)?)?;
    m.add_function(wrap_pyfunction!(get_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(known_runtimes, m)?)?;
    m.add_function(wrap_pyfunction!(get_device_info, m)?)?;
    m.add_function(wrap_pyfunction!(lookup_device_info, m)?)?;
    m.add_function(wrap_pyfunction!(create_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(_enum_tables, m)?)?;
    m.add("MAX_KERNEL_ARGS", nexus::MAX_KERNEL_ARGS)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
