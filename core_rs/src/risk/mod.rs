//! Two-layer pre-trade risk: layer 1 checks the whole block against the firm, layer 2 checks
//! every allocated lot against its account's mandate at the live price.

pub mod firm;
pub mod lots;

pub use firm::{layer1, FirmState};
pub use lots::{layer2, LotFailure, LIVE_CAP_UNKNOWN};
