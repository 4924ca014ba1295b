//! Core errors raised as the exception classes of `mats.errors`, with the field path.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use crate::errors::{CoreError, ErrorKind};

pub fn to_py(py: Python<'_>, err: CoreError) -> PyErr {
    let name = match err.kind {
        ErrorKind::Book => "BookError",
        ErrorKind::Order => "OrderError",
    };
    let build = || -> PyResult<PyErr> {
        let cls = py.import("mats.errors")?.getattr(name)?;
        // list positions become ints, as in pydantic's error locations
        let parts: Vec<Py<PyAny>> = err
            .loc
            .iter()
            .map(|p| match p.parse::<usize>() {
                Ok(n) => n.into_pyobject(py).map(|o| o.into_any().unbind()).map_err(PyErr::from),
                Err(_) => Ok(PyString::new(py, p).into_any().unbind()),
            })
            .collect::<PyResult<_>>()?;
        let loc = PyTuple::new(py, parts)?;
        let exc = cls.call1((err.message.clone(), loc))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|_| PyValueError::new_err(err.message.clone()))
}

/// Converts a core result, raising the matching `mats.errors` class.
pub fn py_result<T>(py: Python<'_>, r: Result<T, CoreError>) -> PyResult<T> {
    r.map_err(|e| to_py(py, e))
}
