//! Allocation of a block across accounts: method weights, mandate caps, redistribution of what a
//! capped account cannot take, rounding to lots, minimum trade sizes.

pub mod caps;
pub mod waterfill;

use rustc_hash::FxHashMap as HashMap;

use crate::book::Book;
use crate::codes::Code;
use crate::decision::Check;
use crate::domain::{AllocationMethod, BlockOrder};
use crate::errors::{CoreError, CoreResult};
use caps::{caps_at, context, floor_lots, rule_check, Ctx, LOT_EPS, REG_T_INITIAL_MARGIN};
use waterfill::waterfill;

/// One account's share of a block, before layer 2.
#[derive(Debug, Clone)]
pub struct Alloc {
    pub weight: f64,
    pub requested: f64,
    pub ideal: f64,
    pub quantity: i64,
    pub binding: Option<Check>,
}

/// An extra cap from the layer-2 policy, in lots, with the check to report.
pub type Forced = HashMap<usize, (i64, Check)>;

/// What bound an account's cap.
#[derive(Debug, Clone)]
enum Bound {
    Rule(Code),
    /// Its own quantity (fixed shares, gap to target): not a limit.
    Own,
}

/// Each eligible account's weight under the order's method, and for some methods an extra cap
/// in shares (fixed shares; gap to the target weight).
pub fn weights(
    book: &Book,
    order: &BlockOrder,
    k: usize,
    eligible: &[usize],
    px: f64,
) -> CoreResult<(Vec<f64>, Vec<Option<i64>>)> {
    let ins = &book.instruments[k];
    let mut params: Option<HashMap<&str, f64>> = None;
    if let Some(list) = &order.params {
        let map: HashMap<&str, f64> = list.iter().map(|(a, v)| (a.as_str(), *v)).collect();
        let mut matched = 0;
        for &i in eligible {
            if map.contains_key(book.accounts[i].account_id.as_ref()) {
                matched += 1;
            }
        }
        if matched != map.len() {
            let known: rustc_hash::FxHashSet<&str> =
                eligible.iter().map(|&i| book.accounts[i].account_id.as_ref()).collect();
            let (bad, _) =
                list.iter().find(|(a, _)| !known.contains(a.as_str())).expect("unmatched");
            let field = match order.method {
                AllocationMethod::Ratios => "ratios",
                AllocationMethod::Percent => "percents",
                _ => "shares",
            };
            return Err(CoreError::order(format!(
                "account {bad:?} does not follow strategy {:?}",
                order.strategy
            ))
            .at([field.to_owned(), bad.clone()]));
        }
        params = Some(map);
    }
    let mut w_out = Vec::with_capacity(eligible.len());
    let mut extra = Vec::with_capacity(eligible.len());
    for &i in eligible {
        let acct = &book.accounts[i];
        let mut cap = None;
        let w = match order.method {
            AllocationMethod::NetLiq => acct.net_liq,
            AllocationMethod::AvailableEquity => {
                // the same funds the SETTLED_CASH and BUYING_POWER rules start from
                let buffer = book.mandate_of(acct).cash_buffer_pct / 100.0 * acct.net_liq;
                if acct.cash_account {
                    acct.settled_cash - acct.pending_withdrawals - acct.reserved_cash - buffer
                } else {
                    acct.net_liq
                        - acct.pending_withdrawals
                        - buffer
                        - REG_T_INITIAL_MARGIN * acct.gross_pos
                        - REG_T_INITIAL_MARGIN * acct.reserved_cash
                }
            }
            AllocationMethod::Equal => 1.0,
            AllocationMethod::Ratios | AllocationMethod::Percent | AllocationMethod::Shares => {
                let w = params
                    .as_ref()
                    .and_then(|p| p.get(acct.account_id.as_ref()).copied())
                    .unwrap_or(0.0);
                if order.method == AllocationMethod::Shares {
                    cap = Some(w as i64);
                }
                w
            }
            AllocationMethod::TargetWeight => {
                let tw = order.target_weight_pct.unwrap_or(0.0);
                let s = order.side.sign();
                let eff = acct.effective_position(k, order.side);
                let target = tw / 100.0 * acct.net_liq / px;
                let w = (target - eff as f64) * s as f64;
                cap = Some(if w > 0.0 { floor_lots(w, ins.lot) * ins.lot } else { 0 });
                w
            }
        };
        w_out.push(if w > 0.0 { w } else { 0.0 });
        extra.push(cap);
    }
    Ok((w_out, extra))
}

/// What the accounts bring to one block at one price: weights, caps in lots and what bound
/// them, minimum lots. Computed once per block; each allocation pass reuses it.
#[derive(Debug, Clone)]
pub struct Prepared {
    px: f64,
    /// Each account's position and exposures for this block (layer 2 reuses them).
    pub ctx: Vec<Ctx>,
    weights: Vec<f64>,
    /// Each account's cap in lots at the block's price (mandate rules and own quantity).
    pub caps_lots: Vec<i64>,
    bound: Vec<Option<Bound>>,
    min_lots: Vec<i64>,
    total_w: f64,
}

/// Evaluates every eligible account's weight and mandate caps for `order` at price `px`.
pub fn prepare(
    book: &Book,
    order: &BlockOrder,
    k: usize,
    eligible: &[usize],
    px: f64,
) -> CoreResult<Prepared> {
    let lot = book.instruments[k].lot;
    let (weights, extra) = weights(book, order, k, eligible, px)?;
    let n = eligible.len();
    let mut caps_lots = Vec::with_capacity(n);
    let mut ctxs = Vec::with_capacity(n);
    let mut bound = Vec::with_capacity(n);
    let mut min_lots = Vec::with_capacity(n);
    let mut total_w = 0.0;
    let positions = book.positions_in(k, eligible);
    for (j, &i) in eligible.iter().enumerate() {
        let acct = &book.accounts[i];
        let ctx = context(book, i, positions[j], k, order.side);
        let caps = caps_at(&ctx, book.mandate_of(acct), px);
        ctxs.push(ctx);
        let mut c = floor_lots(caps.cap_shares(), lot);
        let mut b = caps.binding().map(Bound::Rule);
        if let Some(e) = extra[j] {
            if e / lot <= c {
                c = e / lot;
                b = Some(Bound::Own);
            }
        }
        caps_lots.push(c);
        bound.push(b);
        total_w += weights[j];
        let mtv = book.mandate_of(acct).min_trade_value;
        min_lots.push(if mtv > 0.0 {
            (mtv / (px * lot as f64) - LOT_EPS).ceil() as i64
        } else {
            0
        });
    }
    Ok(Prepared { px, ctx: ctxs, weights, caps_lots, bound, min_lots, total_w })
}

/// One allocation pass over prepared accounts: splits `q_lots` (None: every account's whole
/// gap, for target weights) under every cap, with the extra caps of layer 2 in `forced`.
pub fn split(
    book: &Book,
    order: &BlockOrder,
    k: usize,
    eligible: &[usize],
    prep: &Prepared,
    q_lots: Option<i64>,
    forced: &Forced,
) -> Vec<Alloc> {
    let lot = book.instruments[k].lot;
    let px = prep.px;
    let n = eligible.len();
    let weights = &prep.weights;
    let mut caps_lots = prep.caps_lots.clone();
    // checks that replace the prepared binding (layer-2 policy, minimum trade size)
    let mut over: Vec<Option<Check>> = Vec::new();
    if !forced.is_empty() {
        over.resize(n, None);
        for (&j, (f, check)) in forced {
            if *f <= caps_lots[j] {
                caps_lots[j] = *f;
                over[j] = Some(check.clone());
            }
        }
    }
    let q_lots = match q_lots {
        Some(q) => q,
        None => {
            let mut q = 0;
            for j in 0..n {
                if weights[j] > 0.0 {
                    q += caps_lots[j];
                }
            }
            q
        }
    };
    let mut excluded = vec![false; n];
    let split = loop {
        let split = waterfill(q_lots, weights, &caps_lots, &excluded);
        let mut any = false;
        for j in 0..n {
            if split.qty[j] > 0 && split.qty[j] < prep.min_lots[j] {
                any = true;
                excluded[j] = true;
                let mtv = book.mandate_of(&book.accounts[eligible[j]]).min_trade_value;
                let mut check = Check::new(
                    Code::MinTradeSize,
                    Some(mtv),
                    Some((split.qty[j] * lot) as f64 * px),
                    "below the mandate's minimum trade value",
                );
                check.cap = Some(0.0);
                if over.is_empty() {
                    over.resize(n, None);
                }
                over[j] = Some(check);
            }
        }
        if !any {
            break split;
        }
    };
    let mut out = Vec::with_capacity(n);
    for j in 0..n {
        let mut binding = None;
        if split.capped[j] || excluded[j] {
            binding = match over.get(j).and_then(Option::as_ref) {
                Some(c) => Some(c.clone()),
                None => match &prep.bound[j] {
                    Some(Bound::Rule(code)) => {
                        let c = &prep.ctx[j];
                        let m = &book.mandates[c.mandate];
                        Some(rule_check(c, m, *code, px, split.want[j] * lot as f64, lot))
                    }
                    Some(Bound::Own) | None => None,
                },
            };
        }
        let requested = if order.method == AllocationMethod::TargetWeight {
            weights[j] / lot as f64 // the account's own gap to its target
        } else if prep.total_w > 0.0 {
            q_lots as f64 * weights[j] / prep.total_w
        } else {
            0.0
        };
        out.push(Alloc {
            weight: weights[j],
            requested: requested * lot as f64,
            ideal: split.ideal[j] * lot as f64,
            quantity: split.qty[j] * lot,
            binding,
        });
    }
    out
}
