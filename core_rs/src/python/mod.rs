//! Python bindings: `mats._core`. Thin: every rule lives in the Rust modules above.

mod engine;
mod errors;

use pyo3::prelude::*;

use crate::codes::Code;

/// Every reason code the core can give.
#[pyfunction]
fn reason_codes() -> Vec<&'static str> {
    Code::ALL.iter().map(|c| c.as_str()).collect()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<engine::Decision>()?;
    m.add_function(wrap_pyfunction!(reason_codes, m)?)?;
    Ok(())
}
