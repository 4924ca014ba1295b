//! Allocation of a block across accounts: method weights, mandate caps, redistribution of what a
//! capped account cannot take, rounding to lots, minimum trade sizes.

pub mod caps;
pub mod waterfill;

use crate::book::Book;
use crate::codes::Code;
use crate::decision::{Check, Requested};
use crate::domain::{AllocationMethod, BlockOrder};
use crate::errors::{CoreError, CoreResult};
use caps::{
    cap_monotone_in_price, context, floor_lots, rule_check, tightest_at, Ctx, Terms, LOT_EPS,
    REG_T_INITIAL_MARGIN,
};
use waterfill::Split;

/// Why the layer-2 policy capped an account: a check, or a mandate rule at a price, made into
/// a check only if the cap binds in the allocation reported.
#[derive(Debug, Clone)]
pub enum Why {
    Check(Check),
    /// Rule `code` at price `px` for a lot of `qty` shares (as `rule_check` reports it).
    Rule {
        code: Code,
        px: f64,
        qty: f64,
    },
}

/// Extra caps from the layer-2 policy, in lots, with why, by account position.
#[derive(Debug, Default)]
pub struct Forced {
    caps: Vec<Option<(i64, Why)>>,
    /// The positions that have one, in the order they were first set.
    set: Vec<usize>,
}

impl Forced {
    /// No extra cap on any of `n` accounts.
    pub fn new(n: usize) -> Self {
        Forced { caps: vec![None; n], set: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn get(&self, j: usize) -> Option<&(i64, Why)> {
        self.caps.get(j).and_then(Option::as_ref)
    }

    pub fn insert(&mut self, j: usize, cap: (i64, Why)) {
        if self.caps[j].is_none() {
            self.set.push(j);
        }
        self.caps[j] = Some(cap);
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &(i64, Why))> + '_ {
        self.set.iter().map(|&j| (j, self.caps[j].as_ref().expect("a set cap")))
    }
}

/// What bound an account's cap.
#[derive(Debug, Clone)]
enum Bound {
    Rule(Code),
    /// Its own quantity (fixed shares, gap to target): not a limit.
    Own,
}

/// Each eligible account's parameter under the ratios, percent or shares method (0 for an
/// account the order does not name), into `out`; false for the other methods. `eligible` is
/// in book order. `slot` maps a book account to its position among the eligible while it runs
/// (`NO_SLOT` for the others): all `NO_SLOT`, as long as the book, before and after.
fn params_by_account(
    book: &Book,
    order: &BlockOrder,
    eligible: &[usize],
    slot: &mut Vec<u32>,
    out: &mut Vec<f64>,
) -> CoreResult<bool> {
    let Some(list) = &order.params else {
        return Ok(false);
    };
    debug_assert!(eligible.windows(2).all(|w| w[0] < w[1]), "accounts in book order");
    out.clear();
    out.resize(eligible.len(), 0.0);
    if slot.len() != book.accounts.len() {
        slot.clear();
        slot.resize(book.accounts.len(), NO_SLOT);
    }
    for (j, &i) in eligible.iter().enumerate() {
        slot[i] = j as u32;
    }
    let mut unknown = None;
    for (a, v) in list {
        match book.account_idx.get(a.as_str()).map(|&i| slot[i]) {
            Some(j) if j != NO_SLOT => out[j as usize] = *v,
            _ => {
                unknown = Some(a);
                break;
            }
        }
    }
    for &i in eligible {
        slot[i] = NO_SLOT;
    }
    if let Some(a) = unknown {
        let field = match order.method {
            AllocationMethod::Ratios => "ratios",
            AllocationMethod::Percent => "percents",
            _ => "shares",
        };
        return Err(CoreError::order(format!(
            "account {a:?} does not follow strategy {:?}",
            order.strategy
        ))
        .at([field.to_owned(), a.clone()]));
    }
    Ok(true)
}

/// Marks a book account that is not among a block's eligible accounts.
const NO_SLOT: u32 = u32::MAX;

/// An account's weight under the order's method, and for some methods an extra cap in shares
/// (fixed shares; gap to the target weight). `param` is its parameter under the ratios,
/// percent or shares method; `ctx` its context for the block.
fn weight(
    book: &Book,
    order: &BlockOrder,
    lot: i64,
    i: usize,
    ctx: &Ctx,
    param: f64,
    px: f64,
) -> (f64, Option<i64>) {
    let acct = &book.accounts[i];
    let mut cap = None;
    let w = match order.method {
        AllocationMethod::NetLiq => acct.net_liq,
        AllocationMethod::AvailableEquity => {
            // the same funds the SETTLED_CASH and BUYING_POWER rules start from
            let buffer = book.mandate_of(acct).cash_buffer_frac * acct.net_liq;
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
        AllocationMethod::Ratios | AllocationMethod::Percent => param,
        AllocationMethod::Shares => {
            cap = Some(param as i64);
            param
        }
        AllocationMethod::TargetWeight => {
            let tw = order.target_weight_pct.unwrap_or(0.0);
            let s = order.side.sign();
            // the working position on the order's side (e0 and reducing are its two signs)
            let eff = s * (ctx.e0 - ctx.reducing);
            let target = tw / 100.0 * acct.net_liq / px;
            let w = (target - eff as f64) * s as f64;
            cap = Some(if w > 0.0 { floor_lots(w, lot) * lot } else { 0 });
            w
        }
    };
    (if w > 0.0 { w } else { 0.0 }, cap)
}

/// What the accounts bring to one block at one price: weights, caps in lots and what bound
/// them, minimum lots; and the latest allocation pass over them. Kept by the engine between
/// blocks, so that a block reuses the memory of the one before.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    px: f64,
    lot: i64,
    /// Each account's position and exposures for this block (layer 2 reuses them).
    pub ctx: Vec<Ctx>,
    weights: Vec<f64>,
    /// Each account's cap in lots at the block's price (mandate rules and own quantity); 0 for
    /// an account of no weight, which the allocation passes leave out.
    pub caps_lots: Vec<i64>,
    bound: Vec<Option<Bound>>,
    min_lots: Vec<i64>,
    total_w: f64,
    /// Each mandate's terms for the block's symbol and its minimum trade in lots.
    terms: Vec<(Terms, i64)>,
    /// Each account's parameter under the ratios, percent or shares method.
    params: Vec<f64>,
    /// Position among the eligible accounts by book account, while parameters are read.
    slot: Vec<u32>,
    /// Working memory of the allocation passes, and the latest pass's result.
    work: Work,
}

/// What one allocation pass works in, kept between the passes of a block.
#[derive(Debug, Clone, Default)]
struct Work {
    caps_lots: Vec<i64>,
    excluded: Vec<bool>,
    /// What replaces the prepared binding (layer-2 policy, minimum trade size); empty when
    /// nothing does.
    over: Vec<Option<Why>>,
    split: Split,
    /// The lots the latest pass split.
    q_lots: i64,
}

/// Evaluates every eligible account's weight and mandate caps for `order` at price `px`, into
/// `prep` (whatever it held before is replaced).
pub fn prepare(
    book: &Book,
    order: &BlockOrder,
    k: usize,
    eligible: &[usize],
    px: f64,
    prep: &mut Prepared,
) -> CoreResult<()> {
    let ins = &book.instruments[k];
    let lot = ins.lot;
    let has_params = params_by_account(book, order, eligible, &mut prep.slot, &mut prep.params)?;
    prep.terms.clear();
    prep.terms.extend(book.mandates.iter().map(|m| {
        let mtv = m.min_trade_value;
        let min_lots =
            if mtv > 0.0 { (mtv / (px * lot as f64) - LOT_EPS).ceil() as i64 } else { 0 };
        (Terms::of(m, k, ins.sector_idx), min_lots)
    }));
    prep.px = px;
    prep.lot = lot;
    prep.total_w = 0.0;
    prep.ctx.clear();
    prep.weights.clear();
    prep.caps_lots.clear();
    prep.bound.clear();
    prep.min_lots.clear();
    let Prepared {
        ctx: ctxs,
        weights,
        caps_lots,
        bound,
        min_lots: mins,
        terms,
        total_w,
        params,
        ..
    } = prep;
    // positions from the symbol's holders, merged with the accounts (both in book order)
    let holders = book.holders(k);
    let mut h = 0;
    for (j, &i) in eligible.iter().enumerate() {
        while h < holders.len() && holders[h].0 < i {
            h += 1;
        }
        let pos = if h < holders.len() && holders[h].0 == i { holders[h].1 } else { 0 };
        let acct = &book.accounts[i];
        let (t, min_lots) = &terms[acct.mandate];
        let ctx = context(book, i, pos, k, order.side, t);
        let param = if has_params { params[j] } else { 0.0 };
        let (w, extra) = weight(book, order, lot, i, &ctx, param, px);
        // an account of no weight gets nothing and is never capped: its cap is not evaluated
        let (mut c, mut b) = (0, None);
        if w > 0.0 {
            let (cap_shares, binding) = tightest_at(&ctx, &book.mandates[acct.mandate], px);
            c = floor_lots(cap_shares, lot);
            b = binding.map(Bound::Rule);
            if let Some(e) = extra {
                if e / lot <= c {
                    c = e / lot;
                    b = Some(Bound::Own);
                }
            }
        }
        ctxs.push(ctx);
        weights.push(w);
        caps_lots.push(c);
        bound.push(b);
        mins.push(*min_lots);
        *total_w += w;
    }
    Ok(())
}

/// One allocation pass over prepared accounts: splits `q_lots` (None: every account's whole
/// gap, for target weights) under every cap, with the extra caps of layer 2 in `forced`. The
/// result stays in `prep`: [`Prepared::lots`], [`Prepared::ideal_lots`], [`Prepared::binding`].
pub fn split(
    book: &Book,
    eligible: &[usize],
    prep: &mut Prepared,
    q_lots: Option<i64>,
    forced: &Forced,
) {
    let lot = prep.lot;
    let px = prep.px;
    let n = eligible.len();
    let weights = &prep.weights;
    let Work { caps_lots, excluded, over, split, q_lots: q_used } = &mut prep.work;
    caps_lots.clear();
    caps_lots.extend_from_slice(&prep.caps_lots);
    over.clear();
    if !forced.is_empty() {
        over.resize(n, None);
        for (j, (f, why)) in forced.iter() {
            if *f <= caps_lots[j] {
                caps_lots[j] = *f;
                over[j] = Some(why.clone());
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
    *q_used = q_lots;
    excluded.clear();
    excluded.resize(n, false);
    loop {
        split.fill(q_lots, weights, caps_lots, excluded);
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
                over[j] = Some(Why::Check(check));
            }
        }
        if !any {
            break;
        }
    }
}

impl Prepared {
    /// Whether no lot of the first pass can break a mandate rule at price `live`: at a price no
    /// higher than the block's, every account's cap is at least its cap at the block's price,
    /// which its lots are within (see `cap_monotone_in_price`).
    pub fn fits_at(&self, live: f64) -> bool {
        live <= self.px && self.ctx.iter().all(cap_monotone_in_price)
    }

    /// Whole lots per account from the latest pass.
    pub fn lots(&self) -> &[i64] {
        &self.work.split.qty
    }

    /// Each account's weight.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Each account's ideal share from the latest pass, in lots.
    pub fn ideal_lots(&self) -> &[f64] {
        &self.work.split.ideal
    }

    /// How the lines' requested shares follow from their weights, for the latest pass.
    pub fn requested(&self, method: AllocationMethod) -> Requested {
        Requested {
            own_gap: method == AllocationMethod::TargetWeight,
            q_lots: self.work.q_lots,
            total_w: self.total_w,
        }
    }

    /// The limit that bound account `j` in the latest pass, if one did. The check of a
    /// layer-2 or minimum-trade cap is handed over (asked again, it is None).
    #[inline]
    pub fn binding(&mut self, book: &Book, j: usize) -> Option<Check> {
        let w = &mut self.work;
        if !(w.split.capped[j] || w.excluded[j]) {
            return None;
        }
        match w.over.get_mut(j).and_then(Option::take) {
            Some(Why::Check(c)) => Some(c),
            Some(Why::Rule { code, px, qty }) => {
                let c = &self.ctx[j];
                Some(rule_check(c, &book.mandates[c.mandate], code, px, qty, self.lot))
            }
            None => match &self.bound[j] {
                Some(Bound::Rule(code)) => {
                    let c = &self.ctx[j];
                    let m = &book.mandates[c.mandate];
                    let want = w.split.want[j] * self.lot as f64;
                    Some(rule_check(c, m, *code, self.px, want, self.lot))
                }
                Some(Bound::Own) | None => None,
            },
        }
    }
}
