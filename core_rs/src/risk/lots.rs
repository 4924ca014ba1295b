//! Layer 2: each allocated lot against its account's mandate, at the live price.

use crate::allocation::caps::{account_caps, floor_lots, Caps};
use crate::allocation::Alloc;
use crate::book::Book;
use crate::decision::Check;
use crate::domain::BlockOrder;

/// A lot that fails at the live price: the account's caps there and every rule it breaks.
#[derive(Debug, Clone)]
pub struct LotFailure {
    pub j: usize,
    pub caps: Caps,
    pub broken: Vec<Check>,
}

/// Marks an account whose cap at the live price has not been evaluated in this block yet.
pub const LIVE_CAP_UNKNOWN: i64 = -1;

/// The lots of `allocs` (indexed like `eligible`) that break a mandate rule at `live`.
///
/// `live_caps` keeps each account's cap in lots at the live price across the passes of one
/// block (the book does not change between them), so a lot is evaluated once.
pub fn layer2(
    book: &Book,
    order: &BlockOrder,
    k: usize,
    eligible: &[usize],
    allocs: &[Alloc],
    live: f64,
    live_caps: &mut [i64],
) -> Vec<LotFailure> {
    let ins = &book.instruments[k];
    let lot = ins.lot;
    let mut out = Vec::new();
    for (j, &i) in eligible.iter().enumerate() {
        let q = allocs[j].quantity;
        if q == 0 || (live_caps[j] != LIVE_CAP_UNKNOWN && q / lot <= live_caps[j]) {
            continue;
        }
        let acct = &book.accounts[i];
        let caps = account_caps(book, acct, k, order.side, live);
        live_caps[j] = floor_lots(caps.cap_shares(), lot);
        if q / lot <= live_caps[j] {
            continue;
        }
        let mut broken = Vec::new();
        for rule in caps.rules() {
            let allowed = caps.reducing as f64 + if rule.e_cap > 0.0 { rule.e_cap } else { 0.0 };
            if q / lot > floor_lots(allowed, lot) {
                broken.push(caps.check_of(rule, q as f64, lot));
            }
        }
        out.push(LotFailure { j, caps, broken });
    }
    out
}
