//! Per-account room under every mandate rule, for one symbol and side, at one price.
//!
//! A trade of `x` shares splits into a reducing part (closing an opposite position: never capped,
//! it lowers risk) and an adding part. Each rule caps the adding part; the account's cap is the
//! reducing part plus the smallest of those caps. The same function serves allocation (at the
//! block's reference price) and layer-2 risk (at the live price).

use std::borrow::Cow;

use crate::book::{Account, Book};
use crate::codes::Code;
use crate::decision::Check;
use crate::domain::Side;

/// Reg T initial margin for equities (12 CFR 220.12: 50 %).
pub const REG_T_INITIAL_MARGIN: f64 = 0.5;
/// Slack added before flooring a cap to whole lots, so that a cap that is a whole number of lots
/// in exact arithmetic (300 shares computed as 299.99999999997) is not cut by one lot.
pub const LOT_EPS: f64 = 1e-9;
/// Largest cap in lots; keeps sums over many accounts inside `i64`.
pub const MAX_LOTS: i64 = 1_000_000_000_000;

/// Whole lots in `shares`, floored, never negative.
pub fn floor_lots(shares: f64, lot: i64) -> i64 {
    if shares == f64::INFINITY {
        return MAX_LOTS;
    }
    let v = shares / lot as f64 + LOT_EPS;
    if v < 1.0 {
        0
    } else if v >= MAX_LOTS as f64 {
        MAX_LOTS
    } else {
        // positive: truncation is the floor (and avoids a libm call on baseline x86-64)
        v as i64
    }
}

/// One mandate rule for one account. `e_cap` is the most shares it lets the account add;
/// `base + added * per_share` is the measure compared with `limit`, in the limit's unit.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub code: Code,
    pub e_cap: f64,
    pub limit: f64,
    pub base: f64,
    pub per_share: f64,
}

const MAX_RULES: usize = 9;

/// Every rule's room for one account: no allocation on the hot path.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub reducing: i64,
    rules: [Rule; MAX_RULES],
    n: usize,
}

impl Caps {
    fn new(reducing: i64) -> Self {
        let empty =
            Rule { code: Code::GrossLeverage, e_cap: 0.0, limit: 0.0, base: 0.0, per_share: 0.0 };
        Caps { reducing, rules: [empty; MAX_RULES], n: 0 }
    }

    fn push(&mut self, rule: Rule) {
        self.rules[self.n] = rule;
        self.n += 1;
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules[..self.n]
    }

    /// Most shares the account can trade (reducing part plus the tightest adding cap).
    pub fn cap_shares(&self) -> f64 {
        let rules = self.rules();
        let Some(first) = rules.first() else {
            return f64::INFINITY;
        };
        let mut m = first.e_cap;
        for r in &rules[1..] {
            if r.e_cap < m {
                m = r.e_cap;
            }
        }
        self.reducing as f64 + if m > 0.0 { m } else { 0.0 }
    }

    /// The tightest rule (first in rule order on ties).
    pub fn binding(&self) -> Option<Rule> {
        let mut best: Option<Rule> = None;
        for r in self.rules() {
            if best.is_none_or(|b| r.e_cap < b.e_cap) {
                best = Some(*r);
            }
        }
        best
    }

    /// The rule as a reported check, its measure evaluated for an order of `qty` shares.
    pub fn check_of(&self, rule: &Rule, qty: f64, lot: i64) -> Check {
        rule_check(self.reducing, rule, qty, lot)
    }
}

/// A rule as a reported check for an account whose trade has `reducing` reducing shares: its
/// measure after `qty` shares, and its cap in whole lots.
pub fn rule_check(reducing: i64, rule: &Rule, qty: f64, lot: i64) -> Check {
    let mut added = qty - reducing as f64;
    if added < 0.0 {
        added = 0.0;
    }
    let value = rule.base + added * rule.per_share;
    let cap = reducing as f64 + if rule.e_cap > 0.0 { rule.e_cap } else { 0.0 };
    Check {
        code: rule.code,
        limit: Some(rule.limit),
        value: Some(value),
        cap: Some((floor_lots(cap, lot) * lot) as f64),
        message: Cow::Borrowed(rule_message(rule)),
    }
}

/// Static text per rule: the numbers are in the check's fields, the account on its line.
fn rule_message(rule: &Rule) -> &'static str {
    match rule.code {
        Code::RestrictedSymbol => "symbol restricted by the account's mandate",
        Code::RestrictedSector => "sector restricted by the account's mandate",
        Code::ShortSaleNotAllowed => "short selling not allowed for this account",
        Code::MaxPositionPct => "position limit, % of account NAV",
        Code::MaxPositionShares => "position limit, shares",
        Code::SectorCap => "sector cap, % of account NAV",
        Code::GrossLeverage => "gross leverage ceiling, times NAV",
        Code::SettledCash => "settled cash after withdrawals, reservations and cash buffer",
        Code::BuyingPower => "Reg T buying power (50% initial margin)",
        other => other.as_str(),
    }
}

/// Gross exposure of the account's other symbols, and of those in the order's sector, at marks.
/// Uses the account's cached totals (see `Book::refresh_exposures`) less the symbol's own part.
fn other_exposure(book: &Book, acct: &Account, k: usize, pos: i64, sector: usize) -> (f64, f64) {
    let own = if pos != 0 { pos.abs() as f64 * book.prices[k] } else { 0.0 };
    (acct.gross - own, acct.sector_gross[sector] - own)
}

/// Every mandate rule's room for `acct` trading instrument `k` on `side` at price `px`.
/// The account's exposure totals must be fresh (`Book::refresh_exposures`).
pub fn account_caps(book: &Book, acct: &Account, k: usize, side: Side, px: f64) -> Caps {
    let ins = &book.instruments[k];
    let m = &book.mandates[acct.mandate];
    let s = side.sign();
    let pos = acct.position(k);
    let eff = match (side, acct.open(k)) {
        (Side::Buy, Some(o)) => pos + o.buy,
        (Side::Sell, Some(o)) => pos - o.sell,
        (_, None) => pos,
    };
    let reducing = if -s * eff > 0 { -s * eff } else { 0 };
    let e0 = if s * eff > 0 { s * eff } else { 0 };
    let e0f = e0 as f64;
    let nav = acct.net_liq;
    let mut caps = Caps::new(reducing);
    if m.restricted_symbols.contains(&k) {
        caps.push(Rule {
            code: Code::RestrictedSymbol,
            e_cap: 0.0,
            limit: 0.0,
            base: e0f,
            per_share: 1.0,
        });
    }
    if m.restricted_sectors.contains(&ins.sector_idx) {
        caps.push(Rule {
            code: Code::RestrictedSector,
            e_cap: 0.0,
            limit: 0.0,
            base: e0f,
            per_share: 1.0,
        });
    }
    if s < 0 && (acct.cash_account || !m.allow_short) {
        caps.push(Rule {
            code: Code::ShortSaleNotAllowed,
            e_cap: 0.0,
            limit: 0.0,
            base: e0f,
            per_share: 1.0,
        });
    }
    if let Some(pct) = m.max_position_pct {
        let limit_sh = pct / 100.0 * nav / px;
        caps.push(Rule {
            code: Code::MaxPositionPct,
            e_cap: limit_sh - e0f,
            limit: pct,
            base: e0f * px / nav * 100.0,
            per_share: px / nav * 100.0,
        });
    }
    if let Some(max_sh) = m.max_position_shares {
        caps.push(Rule {
            code: Code::MaxPositionShares,
            e_cap: (max_sh - e0) as f64,
            limit: max_sh as f64,
            base: e0f,
            per_share: 1.0,
        });
    }
    let (gross_other, sector_other) = other_exposure(book, acct, k, pos, ins.sector_idx);
    if let Some(cap_pct) = m.sector_cap(ins.sector_idx) {
        let room = (cap_pct / 100.0 * nav - sector_other) / px - e0f;
        caps.push(Rule {
            code: Code::SectorCap,
            e_cap: room,
            limit: cap_pct,
            base: (sector_other + e0f * px) / nav * 100.0,
            per_share: px / nav * 100.0,
        });
    }
    let lev = m.max_gross_leverage;
    caps.push(Rule {
        code: Code::GrossLeverage,
        e_cap: (lev * nav - gross_other) / px - e0f,
        limit: lev,
        base: (gross_other + e0f * px) / nav,
        per_share: px / nav,
    });
    let buffer = m.cash_buffer_pct / 100.0 * nav;
    if acct.cash_account {
        // a cash account never adds on the sell side (no shorts), so cash binds buys only
        if s < 0 {
            return caps;
        }
        let funds = acct.settled_cash - acct.pending_withdrawals - acct.reserved_cash - buffer;
        caps.push(Rule {
            code: Code::SettledCash,
            e_cap: funds / px,
            limit: funds,
            base: 0.0,
            per_share: px,
        });
    } else {
        let im = REG_T_INITIAL_MARGIN * (gross_other + pos.abs() as f64 * px);
        let excess = nav
            - acct.pending_withdrawals
            - buffer
            - im
            - REG_T_INITIAL_MARGIN * acct.reserved_cash;
        let bp = excess / REG_T_INITIAL_MARGIN;
        caps.push(Rule {
            code: Code::BuyingPower,
            e_cap: bp / px,
            limit: bp,
            base: 0.0,
            per_share: px,
        });
    }
    caps
}
