//! Layer 2: each allocated lot against its account's mandate, at the live price.

use crate::allocation::caps::{caps_at, floor_lots, rule_check, tightest_at, Ctx};
use crate::book::Book;
use crate::codes::Code;
use crate::decision::Check;

/// A lot that fails at the live price: the account's cap there in lots, and every rule it breaks.
#[derive(Debug, Clone)]
pub struct LotFailure {
    pub j: usize,
    pub cap_lots: i64,
    pub broken: Vec<Check>,
}

/// Marks an account whose cap at the live price has not been evaluated in this block yet.
pub const LIVE_CAP_UNKNOWN: i64 = -1;

/// The lots allocated (`lots`, whole lots per account) that break a mandate rule at `live`.
/// `ctx` holds each account's position and exposures for this block (indexed like `lots`).
///
/// `live_caps` keeps each account's cap in lots at the live price across the passes of one
/// block (the book does not change between them), so a lot is evaluated once; `live_codes`
/// the rule that sets it.
pub fn layer2(
    book: &Book,
    lot: i64,
    ctx: &[Ctx],
    lots: &[i64],
    live: f64,
    live_caps: &mut [i64],
    live_codes: &mut [Option<Code>],
) -> Vec<LotFailure> {
    let mut out = Vec::new();
    for (j, c) in ctx.iter().enumerate() {
        let q_lots = lots[j];
        if q_lots == 0 {
            continue;
        }
        if live_caps[j] != LIVE_CAP_UNKNOWN && q_lots <= live_caps[j] {
            continue;
        }
        let m = &book.mandates[c.mandate];
        let (cap, code) = tightest_at(c, m, live);
        live_caps[j] = floor_lots(cap, lot);
        live_codes[j] = code;
        if q_lots <= live_caps[j] {
            continue;
        }
        let q = q_lots * lot;
        let caps = caps_at(c, m, live);
        let mut broken = Vec::new();
        for &(code, e_cap) in caps.rules() {
            let allowed = caps.reducing as f64 + if e_cap > 0.0 { e_cap } else { 0.0 };
            if q_lots > floor_lots(allowed, lot) {
                broken.push(rule_check(c, m, code, live, q as f64, lot));
            }
        }
        out.push(LotFailure { j, cap_lots: live_caps[j], broken });
    }
    out
}
