//! MATS core: multi-account allocation, two-layer pre-trade risk and the book they run on.
//!
//! The Python package `mats` loads this crate as `mats._core` (see `python`).

pub mod allocation;
pub mod book;
pub mod codes;
pub mod decision;
pub mod domain;
pub mod engine;
pub mod errors;
pub mod exposure;
pub mod fills;
pub mod risk;

#[cfg(feature = "python")]
mod python;

// A block over many accounts allocates a few large vectors per call; the system allocator maps
// and faults in fresh pages for each of them, mimalloc reuses its pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
