//! Per-account room under every mandate rule, for one symbol and side, at one price.
//!
//! A trade of `x` shares splits into a reducing part (closing an opposite position: never capped,
//! it lowers risk) and an adding part. Each rule caps the adding part; the account's cap is the
//! reducing part plus the smallest of those caps. The same rules serve allocation (at the
//! block's reference price) and layer-2 risk (at the live price): an account's position and
//! exposures are gathered once per block (`Ctx`), then its caps are evaluated at each price.

use std::borrow::Cow;

use crate::book::{worst_case, Book, Mandate};
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
    // most instruments trade in single shares, and x / 1 is x: skip the division
    let v = if lot == 1 { shares } else { shares / lot as f64 } + LOT_EPS;
    if v < 1.0 {
        0
    } else if v >= MAX_LOTS as f64 {
        MAX_LOTS
    } else {
        // positive: truncation is the floor (and avoids a libm call on baseline x86-64)
        v as i64
    }
}

/// What the mandate rules read of one account for one block: gathered once, evaluated at
/// any price.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub mandate: usize,
    /// Position in the order's symbol, and the working quantity on the order's side added.
    pub pos: i64,
    /// Shares of the trade that only reduce an opposite (working) position.
    pub reducing: i64,
    /// Same-direction exposure already held or working, in shares.
    pub e0: i64,
    pub nav: f64,
    /// Gross exposure at marks of the account's other symbols, and of those in the sector,
    /// counting their working orders as filled (the larger way).
    pub gross_other: f64,
    pub sector_other: f64,
    /// Gross exposure at marks of the other symbols' positions alone (what Reg T margins).
    pub gross_pos_other: f64,
    pub restricted_symbol: bool,
    pub restricted_sector: bool,
    pub short_ban: bool,
    pub cash_account: bool,
    pub sell: bool,
    pub sector_cap_pct: Option<f64>,
    /// `sector_cap_pct / 100` (0 without a cap).
    pub sector_cap_frac: f64,
    /// Settled cash less pending withdrawals, reserved cash and buffer (cash accounts).
    pub funds: f64,
    /// Net liquidation less pending withdrawals and buffer (margin accounts).
    pub equity: f64,
    pub reserved_cash: f64,
}

/// What a mandate says about one symbol for all its accounts: gathered once per block.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    pub restricted_symbol: bool,
    pub restricted_sector: bool,
    pub sector_cap_pct: Option<f64>,
    pub sector_cap_frac: f64,
}

impl Terms {
    pub fn of(m: &Mandate, k: usize, sector_idx: usize) -> Self {
        Terms {
            restricted_symbol: m.restricted_symbols.contains(&k),
            restricted_sector: m.restricted_sectors.contains(&sector_idx),
            sector_cap_pct: m.sector_cap(sector_idx),
            sector_cap_frac: m.sector_cap(sector_idx).map_or(0.0, |pct| pct / 100.0),
        }
    }
}

/// Gathers what the rules need of account `i`, holding `pos` of instrument `k`, for trading `k`
/// on `side`; `terms` are its mandate's for `k`. The account's exposure totals must be fresh
/// (`Book::refresh_exposures`).
pub fn context(book: &Book, i: usize, pos: i64, k: usize, side: Side, terms: &Terms) -> Ctx {
    let acct = &book.accounts[i];
    let ins = &book.instruments[k];
    let m = &book.mandates[acct.mandate];
    let s = side.sign();
    let (b, s_) = acct.open(k).map_or((0, 0), |o| (o.buy, o.sell));
    let eff = match side {
        Side::Buy => pos + b,
        Side::Sell => pos - s_,
    };
    // the account's totals less the symbol's own part, at marks
    let (own, own_pos) = if pos != 0 || b != 0 || s_ != 0 {
        let mark = book.prices[k];
        (worst_case(pos, b, s_) as f64 * mark, pos.abs() as f64 * mark)
    } else {
        (0.0, 0.0)
    };
    let nav = acct.net_liq;
    let buffer = m.cash_buffer_frac * nav;
    Ctx {
        mandate: acct.mandate,
        pos,
        reducing: if -s * eff > 0 { -s * eff } else { 0 },
        e0: if s * eff > 0 { s * eff } else { 0 },
        nav,
        gross_other: acct.gross - own,
        sector_other: book.sector_gross(i, ins.sector_idx) - own,
        gross_pos_other: acct.gross_pos - own_pos,
        restricted_symbol: terms.restricted_symbol,
        restricted_sector: terms.restricted_sector,
        short_ban: s < 0 && (acct.cash_account || !m.allow_short),
        cash_account: acct.cash_account,
        sell: s < 0,
        sector_cap_pct: terms.sector_cap_pct,
        sector_cap_frac: terms.sector_cap_frac,
        funds: acct.settled_cash - acct.pending_withdrawals - acct.reserved_cash - buffer,
        equity: nav - acct.pending_withdrawals - buffer,
        reserved_cash: acct.reserved_cash,
    }
}

/// Whether every number the rules read of `c` is finite. Then no rule's room is NaN (every
/// room is a finite or infinite number), and the account's cap never shrinks as the price
/// falls: at `p2 <= p1`, each room is at least what it is at `p1` (a numerator that does not
/// depend on the price, divided by a smaller price, correctly rounded operations being monotone;
/// buying power's numerator also grows as the price falls), or the room at `p1` is negative,
/// which caps the account at its reducing part there, the least it can be capped at anywhere.
pub fn cap_monotone_in_price(c: &Ctx) -> bool {
    c.nav.is_finite()
        && c.gross_other.is_finite()
        && c.sector_other.is_finite()
        && c.gross_pos_other.is_finite()
        && c.funds.is_finite()
        && c.equity.is_finite()
        && c.reserved_cash.is_finite()
}

const MAX_RULES: usize = 9;

/// Every rule's room (shares it lets the account add) for one account at one price.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub reducing: i64,
    rules: [(Code, f64); MAX_RULES],
    n: usize,
}

impl Caps {
    fn push(&mut self, code: Code, e_cap: f64) {
        self.rules[self.n] = (code, e_cap);
        self.n += 1;
    }

    /// (code, shares the rule lets the account add), in rule order.
    pub fn rules(&self) -> &[(Code, f64)] {
        &self.rules[..self.n]
    }

    /// Most shares the account can trade (reducing part plus the tightest adding cap).
    pub fn cap_shares(&self) -> f64 {
        let rules = self.rules();
        let Some(first) = rules.first() else {
            return f64::INFINITY;
        };
        let mut m = first.1;
        for r in &rules[1..] {
            if r.1 < m {
                m = r.1;
            }
        }
        self.reducing as f64 + if m > 0.0 { m } else { 0.0 }
    }

    /// The tightest rule (first in rule order on ties).
    pub fn binding(&self) -> Option<Code> {
        let mut best: Option<(Code, f64)> = None;
        for &r in self.rules() {
            if best.is_none_or(|b| r.1 < b.1) {
                best = Some(r);
            }
        }
        best.map(|b| b.0)
    }
}

/// Every mandate rule's room for the account of `c` at price `px`.
pub fn caps_at(c: &Ctx, m: &Mandate, px: f64) -> Caps {
    let mut caps =
        Caps { reducing: c.reducing, rules: [(Code::GrossLeverage, 0.0); MAX_RULES], n: 0 };
    each_rule(c, m, px, |code, e_cap| caps.push(code, e_cap));
    caps
}

/// The account's cap in shares at price `px` and the rule that sets it: what
/// `caps_at(c, m, px)` gives by `cap_shares()` and `binding()`, without listing the rules.
pub fn tightest_at(c: &Ctx, m: &Mandate, px: f64) -> (f64, Option<Code>) {
    let mut best: Option<(Code, f64)> = None;
    each_rule(c, m, px, |code, e_cap| {
        if best.is_none_or(|b| e_cap < b.1) {
            best = Some((code, e_cap));
        }
    });
    match best {
        None => (f64::INFINITY, None),
        Some((code, m)) => (c.reducing as f64 + if m > 0.0 { m } else { 0.0 }, Some(code)),
    }
}

/// Calls `f` with every rule that applies (code, shares it lets the account add), in rule order.
#[inline(always)]
fn each_rule(c: &Ctx, m: &Mandate, px: f64, mut f: impl FnMut(Code, f64)) {
    let e0f = c.e0 as f64;
    if c.restricted_symbol {
        f(Code::RestrictedSymbol, 0.0);
    }
    if c.restricted_sector {
        f(Code::RestrictedSector, 0.0);
    }
    if c.short_ban {
        f(Code::ShortSaleNotAllowed, 0.0);
    }
    if let Some(frac) = m.max_position_frac {
        f(Code::MaxPositionPct, frac * c.nav / px - e0f);
    }
    if let Some(max_sh) = m.max_position_shares {
        f(Code::MaxPositionShares, (max_sh - c.e0) as f64);
    }
    if c.sector_cap_pct.is_some() {
        f(Code::SectorCap, (c.sector_cap_frac * c.nav - c.sector_other) / px - e0f);
    }
    f(Code::GrossLeverage, (m.max_gross_leverage * c.nav - c.gross_other) / px - e0f);
    if c.cash_account {
        // a cash account never adds on the sell side (no shorts), so cash binds buys only
        if !c.sell {
            f(Code::SettledCash, c.funds / px);
        }
    } else {
        f(Code::BuyingPower, buying_power(c, px) / px);
    }
}

/// Reg T buying power of a margin account: twice the equity above initial margin on its
/// positions (the order's symbol at `px`) and on its reserved cash.
fn buying_power(c: &Ctx, px: f64) -> f64 {
    let im = REG_T_INITIAL_MARGIN * (c.gross_pos_other + c.pos.abs() as f64 * px);
    let excess = c.equity - im - REG_T_INITIAL_MARGIN * c.reserved_cash;
    excess / REG_T_INITIAL_MARGIN
}

/// Rule `code` as a reported check for the account of `c` at price `px`: the limit in its own
/// unit, the measure after an order of `qty` shares, and the rule's cap in whole lots.
pub fn rule_check(c: &Ctx, m: &Mandate, code: Code, px: f64, qty: f64, lot: i64) -> Check {
    let e0f = c.e0 as f64;
    let nav = c.nav;
    // (cap on the adding part, limit, measure before the trade, measure per added share)
    let (e_cap, limit, base, per_share) = match code {
        Code::RestrictedSymbol | Code::RestrictedSector | Code::ShortSaleNotAllowed => {
            (0.0, 0.0, e0f, 1.0)
        }
        Code::MaxPositionPct => {
            let pct = m.max_position_pct.unwrap_or(0.0);
            let frac = m.max_position_frac.unwrap_or(0.0);
            (frac * nav / px - e0f, pct, e0f * px / nav * 100.0, px / nav * 100.0)
        }
        Code::MaxPositionShares => {
            let max_sh = m.max_position_shares.unwrap_or(0);
            ((max_sh - c.e0) as f64, max_sh as f64, e0f, 1.0)
        }
        Code::SectorCap => {
            let cap_pct = c.sector_cap_pct.unwrap_or(0.0);
            (
                (c.sector_cap_frac * nav - c.sector_other) / px - e0f,
                cap_pct,
                (c.sector_other + e0f * px) / nav * 100.0,
                px / nav * 100.0,
            )
        }
        Code::GrossLeverage => {
            let lev = m.max_gross_leverage;
            (
                (lev * nav - c.gross_other) / px - e0f,
                lev,
                (c.gross_other + e0f * px) / nav,
                px / nav,
            )
        }
        Code::SettledCash => (c.funds / px, c.funds, 0.0, px),
        _ => {
            let bp = buying_power(c, px);
            (bp / px, bp, 0.0, px)
        }
    };
    let mut added = qty - c.reducing as f64;
    if added < 0.0 {
        added = 0.0;
    }
    let cap = c.reducing as f64 + if e_cap > 0.0 { e_cap } else { 0.0 };
    Check {
        code,
        limit: Some(limit),
        value: Some(base + added * per_share),
        cap: Some((floor_lots(cap, lot) * lot) as f64),
        message: Cow::Borrowed(rule_message(code)),
    }
}

/// Static text per rule: the numbers are in the check's fields, the account on its line.
fn rule_message(code: Code) -> &'static str {
    match code {
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
