//! Live exposure: per account and firm-wide gross, net, sector concentration and beta-weighted
//! net delta at the book's marks, each beside the limit it is held to.
//!
//! Exposure here is of positions (what the account holds), valued at the live marks; working
//! orders are not counted (pre-trade risk counts them, see `allocation::caps`). An account's
//! figures are relative to its net liquidation value, as its mandate's limits are.

use serde::Serialize;

use crate::book::Book;

/// One figure held to a limit: `utilization` is `value / limit`; a limit of zero is used
/// `f64::MAX` times by any positive value (a finite number, so it goes through JSON).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Usage {
    /// What is measured: `gross_leverage`, `position_pct`, `position_shares`, `sector_pct`,
    /// `gross`, `net`, `beta_delta`.
    pub metric: &'static str,
    /// The symbol or sector it is about, if any.
    pub subject: Option<String>,
    pub value: f64,
    pub limit: f64,
    pub utilization: f64,
}

impl Usage {
    fn new(metric: &'static str, subject: Option<String>, value: f64, limit: f64) -> Self {
        let utilization = if limit > 0.0 {
            value / limit
        } else if value > 0.0 {
            f64::MAX
        } else {
            0.0
        };
        Usage { metric, subject, value, limit, utilization }
    }
}

/// Exposure of one account at marks.
#[derive(Debug, Clone, Serialize)]
pub struct AccountExposure {
    pub account_id: String,
    pub nav: f64,
    pub long: f64,
    pub short: f64,
    pub gross: f64,
    pub net: f64,
    pub beta_delta: f64,
    pub gross_leverage: f64,
    /// Gross exposure per sector, sectors in name order (only sectors held).
    pub sectors: Vec<(String, f64)>,
    /// Every figure that has a limit, the largest use of each kind of limit first.
    pub usage: Vec<Usage>,
    /// Symbols whose mark is not known: their positions are left out of the figures.
    pub unpriced: Vec<String>,
}

/// The firm's exposure at marks, on its net position per instrument (positions only).
#[derive(Debug, Clone, Serialize)]
pub struct FirmExposure {
    pub nav: f64,
    pub long: f64,
    pub short: f64,
    pub gross: f64,
    pub net: f64,
    pub beta_delta: f64,
    pub sectors: Vec<(String, f64)>,
    pub usage: Vec<Usage>,
    pub unpriced: Vec<String>,
}

fn sector_names(book: &Book) -> Vec<String> {
    let mut names = vec![String::new(); book.sectors.len()];
    for (name, &s) in &book.sectors {
        names[s] = name.clone();
    }
    names
}

/// Long, short, beta-weighted and per-sector sums of positions at marks.
struct Totals {
    long: f64,
    short: f64,
    beta: f64,
    sector: Vec<f64>,
    unpriced: Vec<String>,
}

impl Totals {
    fn new(book: &Book) -> Self {
        Totals {
            long: 0.0,
            short: 0.0,
            beta: 0.0,
            sector: vec![0.0; book.sectors.len()],
            unpriced: Vec::new(),
        }
    }

    /// Adds `q` shares of instrument `k`; its value at the mark, or None when it has no mark
    /// (then it is listed as unpriced and left out).
    fn add(&mut self, book: &Book, k: usize, q: i64) -> Option<f64> {
        let ins = &book.instruments[k];
        let mark = book.prices[k];
        if !(mark.is_finite() && mark > 0.0) {
            self.unpriced.push(ins.symbol.clone());
            return None;
        }
        let v = q as f64 * mark;
        if v >= 0.0 {
            self.long += v;
        } else {
            self.short -= v;
        }
        self.beta += v * ins.beta;
        self.sector[ins.sector_idx] += v.abs();
        Some(v)
    }
}

fn named_sectors(names: &[String], gross: &[f64]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = gross
        .iter()
        .enumerate()
        .filter(|(_, &g)| g != 0.0)
        .map(|(s, &g)| (names[s].clone(), g))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Account `i`'s exposure and the use of its mandate's limits.
pub fn account_exposure(book: &Book, i: usize) -> AccountExposure {
    let a = &book.accounts[i];
    let m = book.mandate_of(a);
    let names = sector_names(book);
    let mut t = Totals::new(book);
    let mut usage = Vec::new();
    let nav = a.net_liq;
    for &(k, q) in &a.positions {
        let Some(v) = t.add(book, k, q) else {
            continue;
        };
        let ins = &book.instruments[k];
        if let Some(pct) = m.max_position_pct {
            let value = 100.0 * v.abs() / nav;
            usage.push(Usage::new("position_pct", Some(ins.symbol.clone()), value, pct));
        }
        if let Some(shares) = m.max_position_shares {
            let value = q.abs() as f64;
            usage.push(Usage::new(
                "position_shares",
                Some(ins.symbol.clone()),
                value,
                shares as f64,
            ));
        }
    }
    let Totals { long, short, beta, sector, unpriced } = t;
    for (s, &g) in sector.iter().enumerate() {
        if g == 0.0 {
            continue;
        }
        if let Some(cap) = m.sector_cap(s) {
            usage.push(Usage::new("sector_pct", Some(names[s].clone()), 100.0 * g / nav, cap));
        }
    }
    let gross = long + short;
    let leverage = gross / nav;
    usage.push(Usage::new("gross_leverage", None, leverage, m.max_gross_leverage));
    usage.sort_by(|x, y| y.utilization.total_cmp(&x.utilization));
    AccountExposure {
        account_id: a.account_id.to_string(),
        nav,
        long,
        short,
        gross,
        net: long - short,
        beta_delta: beta,
        gross_leverage: leverage,
        sectors: named_sectors(&names, &sector),
        usage,
        unpriced,
    }
}

/// The firm's exposure and the use of its firm-wide limits (those the risk config sets); sector
/// concentration is a percentage of the firm's NAV, as layer 1 checks it.
pub fn firm_exposure(book: &Book) -> FirmExposure {
    let names = sector_names(book);
    let mut t = Totals::new(book);
    for (k, &q) in book.firm_pos.iter().enumerate() {
        if q != 0 {
            t.add(book, k, q);
        }
    }
    let Totals { long, short, beta, sector, unpriced } = t;
    let gross = long + short;
    let net = long - short;
    let r = &book.risk;
    let mut usage = Vec::new();
    if let Some(limit) = r.max_gross_exposure {
        usage.push(Usage::new("gross", None, gross, limit));
    }
    if let Some(limit) = r.max_net_exposure {
        usage.push(Usage::new("net", None, net.abs(), limit));
    }
    if let Some(limit) = r.max_beta_delta {
        usage.push(Usage::new("beta_delta", None, beta.abs(), limit));
    }
    if book.firm_nav > 0.0 {
        for (s, &g) in sector.iter().enumerate() {
            if g == 0.0 {
                continue;
            }
            let limit = r.sector_limits_pct.get(&names[s]).copied().or(r.max_sector_pct);
            if let Some(limit) = limit {
                let pct = 100.0 * g / book.firm_nav;
                usage.push(Usage::new("sector_pct", Some(names[s].clone()), pct, limit));
            }
        }
    }
    usage.sort_by(|x, y| y.utilization.total_cmp(&x.utilization));
    FirmExposure {
        nav: book.firm_nav,
        long,
        short,
        gross,
        net,
        beta_delta: beta,
        sectors: named_sectors(&names, &sector),
        usage,
        unpriced,
    }
}

/// The accounts that hold instrument `k` (a position, not only working orders), in book order.
pub fn holders(book: &Book, k: usize) -> Vec<usize> {
    (0..book.accounts.len()).filter(|&i| book.accounts[i].position(k) != 0).collect()
}
