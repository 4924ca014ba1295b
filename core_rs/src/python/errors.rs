//! Core errors raised as the exception classes of `mats.errors`, with the field path.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{CoreError, ErrorKind};

pub fn to_py(py: Python<'_>, err: CoreError) -> PyErr {
    let name = match err.kind {
        ErrorKind::Book => "BookError",
        ErrorKind::Order => "OrderError",
    };
    let build = || -> PyResult<PyErr> {
        let cls = py.import("mats.errors")?.getattr(name)?;
        let loc = PyTuple::new(py, &err.loc)?;
        let exc = cls.call1((err.message.clone(), loc))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|_| PyValueError::new_err(err.message.clone()))
}

/// Converts a core result, raising the matching `mats.errors` class.
pub fn py_result<T>(py: Python<'_>, r: Result<T, CoreError>) -> PyResult<T> {
    r.map_err(|e| to_py(py, e))
}
