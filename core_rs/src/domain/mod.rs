//! Domain types as they arrive from Python (the JSON of the pydantic models in
//! `python/mats/models.py`). Unknown fields are refused, as on the Python side.

mod book;
mod order;

pub use book::{
    AccountIn, AccountType, BookIn, FillPolicy, InstrumentIn, InstrumentLimit, KillSwitch,
    MandateIn, OpenOrdersIn, RiskConfig, Throttle,
};
pub use order::{AllocationMethod, BlockOrder, LotFailurePolicy, Side, MAX_LOT, MAX_QUANTITY};
