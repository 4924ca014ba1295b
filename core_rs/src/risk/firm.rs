//! Layer 1: the block against firm limits, kill switch, duplicates and throttles.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::book::Book;
use crate::codes::Code;
use crate::decision::Check;
use crate::domain::{BlockOrder, KillSwitch};

/// Layer-1 memory between calls: ids seen today and each strategy's recent order times.
#[derive(Debug, Clone, Default)]
pub struct FirmState {
    pub seen_orders: HashSet<String>,
    pub seen_journeys: HashSet<String>,
    pub throttle_log: HashMap<String, VecDeque<f64>>,
}

/// Firm measures with the order's instrument marked at `px`.
struct FirmMeasures {
    gross: f64,
    net: f64,
    sector: f64,
    beta: f64,
    nav: f64,
}

/// Firm exposure is measured on the firm's net position per instrument (accounts netted): the
/// book's totals at marks, with the order's instrument re-marked at `px`.
fn firm_measures(book: &Book, k: usize, px: f64) -> FirmMeasures {
    let t = book.firm_totals();
    let ins = &book.instruments[k];
    let mut m = FirmMeasures {
        gross: t.gross,
        net: t.net,
        sector: t.sector[ins.sector_idx],
        beta: t.beta,
        nav: book.firm_nav,
    };
    let q = book.firm_qty(k);
    if q != 0 {
        let at_mark = q as f64 * book.prices[k];
        let at_px = q as f64 * px;
        m.gross = m.gross - at_mark.abs() + at_px.abs();
        m.net = m.net - at_mark + at_px;
        m.sector = m.sector - at_mark.abs() + at_px.abs();
        m.beta = m.beta - at_mark * ins.beta + at_px * ins.beta;
    }
    m
}

/// Every firm rule the block of `qty` shares breaks; records the order for duplicate and
/// throttle checks. `as_of` is seconds since the epoch.
pub fn layer1(
    book: &Book,
    state: &mut FirmState,
    order: &BlockOrder,
    k: usize,
    qty: i64,
    as_of: f64,
    record: bool,
) -> Vec<Check> {
    let r = &book.risk;
    let ins = &book.instruments[k];
    let mut out = Vec::new();
    let s = order.side.sign();
    let px = order.reference_price;
    let firm_q = book.firm_qty(k);
    let reducing = s * firm_q < 0 && qty <= firm_q.abs();
    match book.kill_switch {
        KillSwitch::Halted => out.push(Check::new(
            Code::KillSwitchHalted,
            None,
            None,
            "trading is halted by the kill switch",
        )),
        KillSwitch::Reducing if !reducing => out.push(Check::new(
            Code::KillSwitchReducing,
            Some(firm_q.abs() as f64),
            Some((firm_q + s * qty).abs() as f64),
            "kill switch allows only orders that reduce the firm's position",
        )),
        _ => {}
    }
    if state.seen_orders.contains(&order.order_id) {
        out.push(Check::new(
            Code::DuplicateOrderId,
            None,
            None,
            format!("order id {} was seen before", order.order_id),
        ));
    }
    if state.seen_journeys.contains(&order.journey_id) {
        out.push(Check::new(
            Code::DuplicateJourneyId,
            None,
            None,
            format!("journey id {} was seen before", order.journey_id),
        ));
    }
    if let Some(t) = r.throttle {
        let log = state.throttle_log.entry(order.strategy.clone()).or_default();
        let lo = as_of - t.window_s;
        while log.front().is_some_and(|&t0| t0 <= lo) {
            log.pop_front();
        }
        if log.len() >= t.max_orders {
            out.push(Check::new(
                Code::Throttled,
                Some(t.max_orders as f64),
                Some((log.len() + 1) as f64),
                format!(
                    "more than {} orders in {}s for strategy {}",
                    t.max_orders, t.window_s, order.strategy
                ),
            ));
        }
        if record {
            log.push_back(as_of);
        }
    }
    if book.restricted_firm[k] {
        out.push(Check::new(
            Code::FirmRestricted,
            None,
            None,
            format!("{} is on the firm's restricted list", ins.symbol),
        ));
    }
    let limit = r.instrument_limits.get(&ins.symbol).copied().or(r.default_instrument_limit);
    let chk_px = order.limit_price.unwrap_or(px);
    let notional = qty as f64 * chk_px;
    match limit {
        None => out.push(Check::new(
            Code::NoInstrumentLimit,
            None,
            None,
            format!("no order limit is configured for {}", ins.symbol),
        )),
        Some(l) => {
            if qty > l.max_quantity {
                out.push(Check::new(
                    Code::MaxOrderQuantity,
                    Some(l.max_quantity as f64),
                    Some(qty as f64),
                    "block quantity above the instrument limit",
                ));
            }
            if notional > l.max_notional {
                out.push(Check::new(
                    Code::MaxOrderNotional,
                    Some(l.max_notional),
                    Some(notional),
                    "block notional above the instrument limit",
                ));
            }
        }
    }
    if let Some(lp) = order.limit_price {
        let dev = (lp - px).abs() / px * 100.0;
        if dev > r.price_collar_pct {
            out.push(Check::new(
                Code::PriceCollar,
                Some(r.price_collar_pct),
                Some(dev),
                "limit price outside the collar around the reference price",
            ));
        }
        let ticks = lp / ins.tick;
        if (ticks - ticks.round()).abs() > 1e-6 {
            out.push(Check::new(
                Code::PriceNotOnTick,
                Some(ins.tick),
                Some(lp),
                format!("limit price is not a multiple of the tick size {}", ins.tick),
            ));
        }
    }
    let age = as_of - order.reference_ts;
    if age > r.max_reference_age_s {
        out.push(Check::new(
            Code::StaleReferencePrice,
            Some(r.max_reference_age_s),
            Some(age),
            format!("reference price is {age:.1}s old"),
        ));
    }
    let f = firm_measures(book, k, px);
    let old_v = firm_q.abs() as f64 * px;
    let new_v = (firm_q + s * qty).abs() as f64 * px;
    if let Some(lim) = r.max_gross_exposure {
        let after = f.gross - old_v + new_v;
        // written so that a measure that is not a number fails (closed), never passes
        if !(after <= lim || after <= f.gross) {
            out.push(Check::new(
                Code::FirmGrossExposure,
                Some(lim),
                Some(after),
                "firm gross exposure after the block",
            ));
        }
    }
    if let Some(lim) = r.max_net_exposure {
        let after = f.net + (s * qty) as f64 * px;
        if !(after.abs() <= lim || after.abs() <= f.net.abs()) {
            out.push(Check::new(
                Code::FirmNetExposure,
                Some(lim),
                Some(after),
                "firm net exposure after the block",
            ));
        }
    }
    let sector_limit = r.sector_limits_pct.get(&ins.sector).copied().or(r.max_sector_pct);
    if let Some(lim) = sector_limit {
        if f.nav > 0.0 {
            let after = f.sector - old_v + new_v;
            let pct = after / f.nav * 100.0;
            if !(pct <= lim || after <= f.sector) {
                out.push(Check::new(
                    Code::FirmSectorConcentration,
                    Some(lim),
                    Some(pct),
                    format!("firm exposure to sector {}, % of firm NAV", ins.sector),
                ));
            }
        }
    }
    if let Some(lim) = r.max_beta_delta {
        let after = f.beta + (s * qty) as f64 * px * ins.beta;
        if !(after.abs() <= lim || after.abs() <= f.beta.abs()) {
            out.push(Check::new(
                Code::FirmBetaDelta,
                Some(lim),
                Some(after),
                "firm beta-weighted net delta after the block",
            ));
        }
    }
    out
}
