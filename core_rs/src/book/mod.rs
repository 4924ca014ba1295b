//! The book as the core keeps it between calls: instruments, mandates and accounts indexed by
//! position, live marks, and the firm's net position per instrument. Loaded once at start of day
//! and then updated incrementally (account upserts, fills, price ticks).

use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::domain::{
    AccountIn, AccountType, BookIn, InstrumentIn, KillSwitch, MandateIn, RiskConfig, Side, MAX_LOT,
    MAX_QUANTITY,
};
use crate::errors::{CoreError, CoreResult};

#[derive(Debug, Clone)]
pub struct Instrument {
    pub symbol: String,
    pub sector: String,
    pub sector_idx: usize,
    pub lot: i64,
    pub tick: f64,
    pub beta: f64,
}

#[derive(Debug, Clone)]
pub struct Mandate {
    pub mandate_id: String,
    pub max_position_pct: Option<f64>,
    /// `max_position_pct / 100`, divided once.
    pub max_position_frac: Option<f64>,
    pub max_position_shares: Option<i64>,
    /// Sector cap in percent of NAV, by sector index (None: no cap for that sector).
    pub sector_caps_pct: Vec<Option<f64>>,
    pub default_sector_cap_pct: Option<f64>,
    pub max_gross_leverage: f64,
    pub allow_short: bool,
    pub restricted_symbols: Vec<usize>,
    pub restricted_sectors: Vec<usize>,
    pub restricted_sector_names: Vec<String>,
    pub min_trade_value: f64,
    pub cash_buffer_pct: f64,
    /// `cash_buffer_pct / 100`, divided once.
    pub cash_buffer_frac: f64,
    pub fill_policy: crate::fills::FillPolicy,
    pub fill_priority: i64,
    raw_sector_caps: Vec<(String, f64)>,
    raw_restricted_symbols: Vec<String>,
}

impl Mandate {
    pub fn sector_cap(&self, sector_idx: usize) -> Option<f64> {
        self.sector_caps_pct.get(sector_idx).copied().flatten().or(self.default_sector_cap_pct)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOrders {
    pub buy: i64,
    pub sell: i64,
    pub buy_reserved: f64,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub account_id: Arc<str>,
    pub cash_account: bool,
    pub mandate: usize,
    pub net_liq: f64,
    pub cash: f64,
    pub settled_cash: f64,
    pub pending_withdrawals: f64,
    pub reserved_cash: f64,
    /// (instrument index, quantity), sorted by instrument index, no zero quantities.
    pub positions: Vec<(usize, i64)>,
    pub open_orders: Vec<(usize, OpenOrders)>,
    pub strategies: Vec<String>,
    /// Gross exposure at marks counting working orders as filled, the larger way (cached):
    /// Σ max(|position + open buys|, |position − open sells|) × mark, in instrument order.
    pub gross: f64,
    /// Gross exposure of the positions alone at marks (cached): what Reg T margins.
    pub gross_pos: f64,
    /// False when positions or marks of held instruments changed since the totals were summed.
    pub exposure_fresh: bool,
}

impl Account {
    pub fn position(&self, k: usize) -> i64 {
        match self.positions.binary_search_by_key(&k, |p| p.0) {
            Ok(i) => self.positions[i].1,
            Err(_) => 0,
        }
    }

    pub fn open(&self, k: usize) -> Option<&OpenOrders> {
        match self.open_orders.binary_search_by_key(&k, |o| o.0) {
            Ok(i) => Some(&self.open_orders[i].1),
            Err(_) => None,
        }
    }

    /// The open orders in `k`, created if needed (the list stays sorted by instrument).
    fn open_mut(&mut self, k: usize) -> &mut OpenOrders {
        let i = match self.open_orders.binary_search_by_key(&k, |o| o.0) {
            Ok(i) => i,
            Err(i) => {
                self.open_orders.insert(i, (k, OpenOrders::default()));
                i
            }
        };
        &mut self.open_orders[i].1
    }

    /// Whether the account holds or works instrument `k`.
    pub fn in_instrument(&self, k: usize) -> bool {
        self.position(k) != 0 || self.open(k).is_some_and(|o| o.buy > 0 || o.sell > 0)
    }

    /// Adds `delta` shares to the position in instrument `k`, keeping the list sorted.
    /// Returns the new position.
    fn add_position(&mut self, k: usize, delta: i64) -> i64 {
        self.exposure_fresh = false;
        match self.positions.binary_search_by_key(&k, |p| p.0) {
            Ok(i) => {
                self.positions[i].1 += delta;
                let q = self.positions[i].1;
                if q == 0 {
                    self.positions.remove(i);
                }
                q
            }
            Err(i) => {
                if delta != 0 {
                    self.positions.insert(i, (k, delta));
                }
                delta
            }
        }
    }

    /// Working quantity of `k` on the order's side: positions plus open buys for a buy, minus
    /// open sells for a sell.
    pub fn effective_position(&self, k: usize, side: Side) -> i64 {
        let pos = self.position(k);
        match (side, self.open(k)) {
            (Side::Buy, Some(o)) => pos + o.buy,
            (Side::Sell, Some(o)) => pos - o.sell,
            (_, None) => pos,
        }
    }

    /// Adds a reservation for working quantity of an accepted lot.
    fn reserve(&mut self, k: usize, side: Side, qty: i64, price: f64) {
        let oo = self.open_mut(k);
        match side {
            Side::Buy => {
                oo.buy += qty;
                oo.buy_reserved += qty as f64 * price;
                self.reserved_cash += qty as f64 * price;
            }
            Side::Sell => oo.sell += qty,
        }
    }

    /// Releases up to `qty` of working quantity (filled, cancelled or expired) and its share of
    /// reserved cash; returns how much was working.
    fn release(&mut self, k: usize, side: Side, qty: i64) -> i64 {
        let Some(i) = self.open_orders.iter().position(|o| o.0 == k) else {
            return 0;
        };
        let oo = &mut self.open_orders[i].1;
        match side {
            Side::Buy if oo.buy > 0 => {
                let take = if qty < oo.buy { qty } else { oo.buy };
                let release = oo.buy_reserved * take as f64 / oo.buy as f64;
                oo.buy -= take;
                oo.buy_reserved -= release;
                self.reserved_cash -= release;
                if self.reserved_cash < 0.0 {
                    self.reserved_cash = 0.0;
                }
                take
            }
            Side::Sell if oo.sell > 0 => {
                let take = if qty < oo.sell { qty } else { oo.sell };
                oo.sell -= take;
                take
            }
            _ => 0,
        }
    }
}

/// Shares of exposure if every working order filled, the larger way: buys or sells.
pub fn worst_case(position: i64, open_buy: i64, open_sell: i64) -> i64 {
    let up = (position + open_buy).abs();
    let down = (position - open_sell).abs();
    if up > down {
        up
    } else {
        down
    }
}

/// The firm's exposure totals at marks, on its net position per instrument.
#[derive(Debug, Clone, Default)]
pub struct FirmTotals {
    pub gross: f64,
    pub net: f64,
    pub beta: f64,
    /// Gross per sector index.
    pub sector: Vec<f64>,
}

/// Instruments, mandates, accounts, marks and firm limits.
#[derive(Debug, Clone)]
pub struct Book {
    pub instruments: Vec<Instrument>,
    pub by_symbol: HashMap<String, usize>,
    pub sectors: HashMap<String, usize>,
    pub mandates: Vec<Mandate>,
    pub mandate_idx: HashMap<String, usize>,
    pub accounts: Vec<Account>,
    pub account_idx: HashMap<String, usize>,
    /// Account ids in book order, shared with the decisions made on this book.
    pub account_ids: Arc<Vec<Arc<str>>>,
    /// Live mark per instrument; NaN when none has been seen.
    pub prices: Vec<f64>,
    /// Sum over accounts of each instrument's position.
    pub firm_pos: Vec<i64>,
    /// Sum over accounts of each instrument's working quantity (buys less sells). Firm checks
    /// count working orders as if filled, so quick successive blocks cannot each pass a limit
    /// they break together.
    pub firm_work: Vec<i64>,
    pub risk: RiskConfig,
    pub restricted_firm: Vec<bool>,
    pub kill_switch: KillSwitch,
    /// Accounts following each strategy, in book order; rebuilt after an account changes.
    followers: HashMap<String, Vec<usize>>,
    /// Per instrument, (account index, quantity) of every account holding it, by account index:
    /// the block's positions come from one merge, and a tick marks the holders' exposure stale.
    holders: Vec<Vec<(usize, i64)>>,
    /// Gross exposure at marks per account and sector (`account * n_sectors + sector`), summed
    /// with the account's `gross` when its exposure is stale.
    sector_gross: Vec<f64>,
    /// Sum of the accounts' net liquidation, in book order.
    pub firm_nav: f64,
    /// Firm totals, summed in instrument order; None after a fill, tick or account change.
    firm_totals: Option<FirmTotals>,
}

fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

fn non_negative(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

impl Book {
    pub fn load(input: BookIn) -> CoreResult<Self> {
        let mut book = Book {
            instruments: Vec::with_capacity(input.instruments.len()),
            by_symbol: HashMap::default(),
            sectors: HashMap::default(),
            mandates: Vec::new(),
            mandate_idx: HashMap::default(),
            accounts: Vec::with_capacity(input.accounts.len()),
            account_idx: HashMap::default(),
            account_ids: Arc::new(Vec::new()),
            prices: Vec::new(),
            firm_pos: Vec::new(),
            firm_work: Vec::new(),
            risk: input.risk.clone(),
            restricted_firm: Vec::new(),
            kill_switch: input.risk.kill_switch,
            followers: HashMap::default(),
            holders: Vec::new(),
            sector_gross: Vec::new(),
            firm_nav: 0.0,
            firm_totals: None,
        };
        for (i, ins) in input.instruments.iter().enumerate() {
            book.add_instrument(ins).map_err(|e| {
                let msg = e.message.clone();
                CoreError::book(msg).at(["instruments".to_owned(), i.to_string()])
            })?;
        }
        book.prices = vec![f64::NAN; book.instruments.len()];
        book.firm_pos = vec![0; book.instruments.len()];
        book.firm_work = vec![0; book.instruments.len()];
        book.holders = vec![Vec::new(); book.instruments.len()];
        for (sym, px) in &input.prices {
            let k = book.symbol(sym).map_err(|_| {
                CoreError::book(format!("unknown symbol {sym:?}")).at(["prices", sym.as_str()])
            })?;
            if !positive(*px) {
                return Err(CoreError::book(format!("price must be positive, got {px}"))
                    .at(["prices", sym.as_str()]));
            }
            book.prices[k] = *px;
        }
        for (i, m) in input.mandates.iter().enumerate() {
            book.add_mandate(m).map_err(|e| {
                CoreError::book(e.message).at(["mandates".to_owned(), i.to_string()])
            })?;
        }
        for (i, a) in input.accounts.iter().enumerate() {
            if book.account_idx.contains_key(&a.account_id) {
                return Err(CoreError::book(format!("duplicate account_id {}", a.account_id))
                    .at(["accounts".to_owned(), i.to_string()]));
            }
            book.upsert_account(a).map_err(|e| {
                CoreError::book(e.message).at(["accounts".to_owned(), i.to_string()])
            })?;
        }
        book.restricted_firm = vec![false; book.instruments.len()];
        for sym in &input.risk.restricted_symbols {
            // A restricted symbol the firm does not trade is harmless; one it does is blocked.
            if let Some(&k) = book.by_symbol.get(sym) {
                book.restricted_firm[k] = true;
            }
        }
        for sym in input.risk.instrument_limits.keys() {
            if !book.by_symbol.contains_key(sym) {
                return Err(CoreError::book(format!("unknown symbol {sym:?}")).at([
                    "risk",
                    "instrument_limits",
                    sym.as_str(),
                ]));
            }
        }
        Ok(book)
    }

    fn add_instrument(&mut self, ins: &InstrumentIn) -> CoreResult<()> {
        if ins.symbol.is_empty() {
            return Err(CoreError::book("symbol must not be empty"));
        }
        if self.by_symbol.contains_key(&ins.symbol) {
            return Err(CoreError::book(format!("duplicate symbol {}", ins.symbol)));
        }
        if !(1..=MAX_LOT).contains(&ins.lot_size) {
            return Err(CoreError::book(format!(
                "{}: lot_size must be from 1 to {MAX_LOT}",
                ins.symbol
            )));
        }
        if !positive(ins.tick_size) || !ins.beta.is_finite() {
            return Err(CoreError::book(format!("{}: tick size or beta invalid", ins.symbol)));
        }
        let next = self.sectors.len();
        let sector_idx = *self.sectors.entry(ins.sector.clone()).or_insert(next);
        self.by_symbol.insert(ins.symbol.clone(), self.instruments.len());
        self.instruments.push(Instrument {
            symbol: ins.symbol.clone(),
            sector: ins.sector.clone(),
            sector_idx,
            lot: ins.lot_size,
            tick: ins.tick_size,
            beta: ins.beta,
        });
        Ok(())
    }

    fn add_mandate(&mut self, m: &MandateIn) -> CoreResult<()> {
        if self.mandate_idx.contains_key(&m.mandate_id) {
            return Err(CoreError::book(format!("duplicate mandate_id {}", m.mandate_id)));
        }
        let pct_ok = |v: f64| v.is_finite() && (0.0..=100.0).contains(&v);
        if m.max_position_pct.is_some_and(|v| !(pct_ok(v) && v > 0.0))
            || m.default_sector_cap_pct.is_some_and(|v| !pct_ok(v))
            || m.sector_caps_pct.values().any(|v| !pct_ok(*v))
            || !pct_ok(m.cash_buffer_pct)
        {
            return Err(CoreError::book(format!(
                "{}: percentages must be numbers from 0 to 100",
                m.mandate_id
            )));
        }
        if !positive(m.max_gross_leverage)
            || !non_negative(m.min_trade_value)
            || m.max_position_shares.is_some_and(|v| v < 0)
        {
            return Err(CoreError::book(format!(
                "{}: leverage must be positive, minimum trade and share limits non-negative",
                m.mandate_id
            )));
        }
        let mut mandate = Mandate {
            mandate_id: m.mandate_id.clone(),
            max_position_pct: m.max_position_pct,
            max_position_frac: m.max_position_pct.map(|pct| pct / 100.0),
            max_position_shares: m.max_position_shares,
            sector_caps_pct: Vec::new(),
            default_sector_cap_pct: m.default_sector_cap_pct,
            max_gross_leverage: m.max_gross_leverage,
            allow_short: m.allow_short,
            restricted_symbols: Vec::new(),
            restricted_sectors: Vec::new(),
            restricted_sector_names: m.restricted_sectors.clone(),
            min_trade_value: m.min_trade_value,
            cash_buffer_pct: m.cash_buffer_pct,
            cash_buffer_frac: m.cash_buffer_pct / 100.0,
            fill_policy: match m.fill_policy {
                crate::domain::FillPolicy::ProRata => crate::fills::FillPolicy::ProRata,
                crate::domain::FillPolicy::Priority => crate::fills::FillPolicy::Priority,
                crate::domain::FillPolicy::AsAllocated => crate::fills::FillPolicy::AsAllocated,
            },
            fill_priority: m.fill_priority,
            raw_sector_caps: m.sector_caps_pct.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            raw_restricted_symbols: m.restricted_symbols.clone(),
        };
        self.resolve_mandate(&mut mandate);
        self.mandate_idx.insert(m.mandate_id.clone(), self.mandates.len());
        self.mandates.push(mandate);
        Ok(())
    }

    /// Maps a mandate's sector and symbol names onto indexes of the current universe.
    fn resolve_mandate(&self, m: &mut Mandate) {
        m.sector_caps_pct = vec![None; self.sectors.len()];
        for (name, v) in &m.raw_sector_caps {
            if let Some(&s) = self.sectors.get(name) {
                m.sector_caps_pct[s] = Some(*v);
            }
        }
        m.restricted_sectors =
            m.restricted_sector_names.iter().filter_map(|s| self.sectors.get(s).copied()).collect();
        m.restricted_symbols = m
            .raw_restricted_symbols
            .iter()
            .filter_map(|s| self.by_symbol.get(s).copied())
            .collect();
    }

    pub fn symbol(&self, sym: &str) -> CoreResult<usize> {
        self.by_symbol
            .get(sym)
            .copied()
            .ok_or_else(|| CoreError::order(format!("unknown symbol {sym:?}")).at(["symbol"]))
    }

    pub fn account(&self, id: &str) -> CoreResult<usize> {
        self.account_idx
            .get(id)
            .copied()
            .ok_or_else(|| CoreError::order(format!("unknown account {id:?}")).at(["account_id"]))
    }

    /// Adds an account or replaces it (same id keeps its place in book order).
    pub fn upsert_account(&mut self, a: &AccountIn) -> CoreResult<()> {
        let id = &a.account_id;
        if id.is_empty() {
            return Err(CoreError::book("account_id must not be empty"));
        }
        let mandate = *self
            .mandate_idx
            .get(&a.mandate_id)
            .ok_or_else(|| CoreError::book(format!("{id}: unknown mandate {:?}", a.mandate_id)))?;
        if !positive(a.net_liq) {
            return Err(CoreError::book(format!("{id}: net_liq must be positive")));
        }
        if !a.cash.is_finite()
            || !a.settled_cash.is_finite()
            || !non_negative(a.pending_withdrawals)
            || !non_negative(a.pending_dividends)
            || !non_negative(a.reserved_cash)
        {
            return Err(CoreError::book(format!("{id}: cash figures must be finite numbers")));
        }
        let cash_account = a.account_type == AccountType::Cash;
        let mut positions = Vec::with_capacity(a.positions.len());
        for (sym, &q) in &a.positions {
            let k = *self
                .by_symbol
                .get(sym)
                .ok_or_else(|| CoreError::book(format!("{id}: unknown symbol {sym:?}")))?;
            if q == 0 {
                continue;
            }
            if q.abs() > MAX_QUANTITY {
                return Err(CoreError::book(format!("{id}: position in {sym} is too large")));
            }
            if cash_account && q < 0 {
                return Err(CoreError::book(format!("{id}: cash account holds a short in {sym}")));
            }
            if self.prices.get(k).is_none_or(|p| p.is_nan()) {
                return Err(CoreError::book(format!("{id}: holds {sym} but it has no price")));
            }
            positions.push((k, q));
        }
        positions.sort_unstable_by_key(|p| p.0);
        let mut open_orders = Vec::with_capacity(a.open_orders.len());
        for (sym, oo) in &a.open_orders {
            let k = *self
                .by_symbol
                .get(sym)
                .ok_or_else(|| CoreError::book(format!("{id}: unknown symbol {sym:?}")))?;
            if !(0..=MAX_QUANTITY).contains(&oo.buy)
                || !(0..=MAX_QUANTITY).contains(&oo.sell)
                || !non_negative(oo.buy_reserved)
            {
                return Err(CoreError::book(format!("{id}: open orders in {sym} are negative")));
            }
            if (oo.buy > 0 || oo.sell > 0) && self.prices.get(k).is_none_or(|p| p.is_nan()) {
                return Err(CoreError::book(format!("{id}: works {sym} but it has no price")));
            }
            open_orders.push((
                k,
                crate::book::OpenOrders {
                    buy: oo.buy,
                    sell: oo.sell,
                    buy_reserved: oo.buy_reserved,
                },
            ));
        }
        open_orders.sort_unstable_by_key(|o| o.0);
        let account = Account {
            account_id: Arc::from(id.as_str()),
            cash_account,
            mandate,
            net_liq: a.net_liq,
            cash: a.cash,
            settled_cash: a.settled_cash,
            pending_withdrawals: a.pending_withdrawals,
            reserved_cash: a.reserved_cash,
            positions,
            open_orders,
            strategies: a.strategies.clone(),
            gross: 0.0,
            gross_pos: 0.0,
            exposure_fresh: false,
        };
        for &(k, q) in &account.positions {
            self.firm_pos[k] += q;
        }
        for (k, o) in &account.open_orders {
            self.firm_work[*k] += o.buy - o.sell;
        }
        self.followers.clear();
        self.firm_totals = None;
        let existing = self.account_idx.get(id).copied();
        let slot = existing.unwrap_or(self.accounts.len());
        // instruments the account held or worked before and holds or works now
        let mut touched: Vec<usize> = account
            .positions
            .iter()
            .map(|p| p.0)
            .chain(account.open_orders.iter().map(|o| o.0))
            .collect();
        if let Some(i) = existing {
            let old = &self.accounts[i];
            touched.extend(old.positions.iter().map(|p| p.0));
            touched.extend(old.open_orders.iter().map(|o| o.0));
        } else {
            self.sector_gross.resize(self.sector_gross.len() + self.sectors.len(), 0.0);
        }
        match self.account_idx.get(id) {
            Some(&i) => {
                for &(k, q) in &self.accounts[i].positions {
                    self.firm_pos[k] -= q;
                }
                for (k, o) in &self.accounts[i].open_orders {
                    self.firm_work[*k] -= o.buy - o.sell;
                }
                self.accounts[i] = account;
            }
            None => {
                self.account_idx.insert(id.clone(), self.accounts.len());
                Arc::make_mut(&mut self.account_ids).push(account.account_id.clone());
                self.accounts.push(account);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for k in touched {
            self.sync_holder(k, slot);
        }
        let mut nav = 0.0;
        for a in &self.accounts {
            nav += a.net_liq;
        }
        self.firm_nav = nav;
        Ok(())
    }

    /// Re-sums the firm's totals if a fill, tick or account change made them stale.
    pub fn refresh_firm_totals(&mut self) {
        if self.firm_totals.is_some() {
            return;
        }
        let mut t = FirmTotals { sector: vec![0.0; self.sectors.len()], ..FirmTotals::default() };
        for j in 0..self.firm_pos.len() {
            let q = self.firm_qty(j);
            if q == 0 {
                continue;
            }
            let ins = &self.instruments[j];
            let v = q as f64 * self.prices[j];
            t.gross += v.abs();
            t.net += v;
            t.beta += v * ins.beta;
            t.sector[ins.sector_idx] += v.abs();
        }
        self.firm_totals = Some(t);
    }

    /// The firm's quantity in instrument `k` for firm limits: filled plus working.
    pub fn firm_qty(&self, k: usize) -> i64 {
        self.firm_pos[k] + self.firm_work[k]
    }

    /// Reserves an accepted lot: the account's working quantity and cash, the firm's working.
    pub fn reserve(&mut self, i: usize, k: usize, side: Side, qty: i64, price: f64) {
        self.accounts[i].reserve(k, side, qty, price);
        self.accounts[i].exposure_fresh = false;
        self.sync_holder(k, i);
        self.firm_work[k] += side.sign() * qty;
        self.firm_totals = None;
    }

    /// Releases working quantity of one account, keeping the firm's working total in step.
    pub fn release_working(&mut self, i: usize, k: usize, side: Side, qty: i64) {
        let taken = self.accounts[i].release(k, side, qty);
        if taken != 0 {
            self.accounts[i].exposure_fresh = false;
            self.sync_holder(k, i);
            self.firm_work[k] -= side.sign() * taken;
            self.firm_totals = None;
        }
    }

    /// The firm's totals; `refresh_firm_totals` must have run since the last change.
    pub fn firm_totals(&self) -> &FirmTotals {
        self.firm_totals.as_ref().expect("firm totals refreshed before use")
    }

    /// Re-sums the exposure totals of the given accounts where positions or marks moved:
    /// gross exposure at marks, in instrument order, in total and per sector.
    pub fn refresh_exposures(&mut self, accounts: &[usize]) {
        let n_sectors = self.sectors.len();
        for &i in accounts {
            let a = &mut self.accounts[i];
            if a.exposure_fresh {
                continue;
            }
            let sectors = &mut self.sector_gross[i * n_sectors..(i + 1) * n_sectors];
            sectors.fill(0.0);
            let (mut gross, mut gross_pos) = (0.0, 0.0);
            // positions and open orders are both sorted by instrument: walk them together
            let (mut p, mut o) = (0, 0);
            loop {
                let kp = a.positions.get(p).map_or(usize::MAX, |x| x.0);
                let ko = a.open_orders.get(o).map_or(usize::MAX, |x| x.0);
                let j = kp.min(ko);
                if j == usize::MAX {
                    break;
                }
                let q = if kp == j { a.positions[p].1 } else { 0 };
                let (b, s) = if ko == j {
                    (a.open_orders[o].1.buy, a.open_orders[o].1.sell)
                } else {
                    (0, 0)
                };
                p += usize::from(kp == j);
                o += usize::from(ko == j);
                if q == 0 && b == 0 && s == 0 {
                    continue;
                }
                let mark = self.prices[j];
                let v = worst_case(q, b, s) as f64 * mark;
                gross += v;
                gross_pos += q.abs() as f64 * mark;
                sectors[self.instruments[j].sector_idx] += v;
            }
            a.gross = gross;
            a.gross_pos = gross_pos;
            a.exposure_fresh = true;
        }
    }

    /// Account `i`'s gross exposure at marks in sector `s` (fresh after `refresh_exposures`).
    pub fn sector_gross(&self, i: usize, s: usize) -> f64 {
        self.sector_gross[i * self.sectors.len() + s]
    }

    /// Positions in instrument `k` of the accounts `sorted` (ascending indexes), in one merge.
    pub fn positions_in(&self, k: usize, sorted: &[usize]) -> Vec<i64> {
        debug_assert!(sorted.windows(2).all(|w| w[0] < w[1]), "accounts in book order");
        let holders = &self.holders[k];
        let mut out = Vec::with_capacity(sorted.len());
        let mut h = 0;
        for &i in sorted {
            while h < holders.len() && holders[h].0 < i {
                h += 1;
            }
            out.push(if h < holders.len() && holders[h].0 == i { holders[h].1 } else { 0 });
        }
        out
    }

    /// (account index, position) of every account holding or working instrument `k`, in book
    /// order.
    pub fn holders(&self, k: usize) -> &[(usize, i64)] {
        &self.holders[k]
    }

    /// Brings the holders index of `k` in line with account `i`: listed, with its position,
    /// while it holds or works the instrument.
    fn sync_holder(&mut self, k: usize, i: usize) {
        let acct = &self.accounts[i];
        let (listed, q) = (acct.in_instrument(k), acct.position(k));
        let list = &mut self.holders[k];
        match list.binary_search_by_key(&i, |h| h.0) {
            Ok(n) if !listed => {
                list.remove(n);
            }
            Ok(n) => list[n].1 = q,
            Err(n) if listed => list.insert(n, (i, q)),
            Err(_) => {}
        }
    }

    /// Moves account `i`'s position in `k` by `delta`: account, holders index and firm.
    fn move_position(&mut self, i: usize, k: usize, delta: i64) {
        self.accounts[i].add_position(k, delta);
        self.sync_holder(k, i);
        self.firm_pos[k] += delta;
    }

    /// Indexes of the accounts that follow `strategy`, in book order.
    pub fn followers(&mut self, strategy: &str) -> &[usize] {
        if !self.followers.contains_key(strategy) {
            let v: Vec<usize> = self
                .accounts
                .iter()
                .enumerate()
                .filter(|(_, a)| a.strategies.iter().any(|s| s == strategy))
                .map(|(i, _)| i)
                .collect();
            self.followers.insert(strategy.to_owned(), v);
        }
        &self.followers[strategy]
    }

    /// Sets live marks: every one is checked first, so a bad entry changes nothing.
    pub fn update_prices(&mut self, batch: &[(String, f64)]) -> CoreResult<()> {
        for (sym, px) in batch {
            if !self.by_symbol.contains_key(sym) {
                return Err(CoreError::order(format!("price for unknown symbol {sym:?}"))
                    .at(["prices", sym.as_str()]));
            }
            if !positive(*px) {
                return Err(CoreError::order(format!(
                    "price for {sym} must be positive, got {px}"
                ))
                .at(["prices", sym.as_str()]));
            }
        }
        for (sym, px) in batch {
            let k = self.by_symbol[sym];
            self.set_mark(k, *px);
        }
        Ok(())
    }

    /// Sets the live mark of instrument `k`; a change makes the firm's totals and the exposure
    /// of its holders stale.
    fn set_mark(&mut self, k: usize, px: f64) {
        if self.prices[k] != px {
            self.prices[k] = px;
            self.firm_totals = None;
            for &(i, _) in &self.holders[k] {
                self.accounts[i].exposure_fresh = false;
            }
        }
    }

    /// Books an execution for one account: position, cash, settled cash, reservations, firm.
    pub fn apply_fill(
        &mut self,
        account_id: &str,
        sym: &str,
        side: Side,
        qty: i64,
        price: f64,
    ) -> CoreResult<()> {
        let i = self.account(account_id)?;
        let k = self.symbol(sym)?;
        if !(1..=MAX_QUANTITY).contains(&qty) || !positive(price) {
            return Err(CoreError::order(format!(
                "fill quantity must be from 1 to {MAX_QUANTITY} and price positive"
            )));
        }
        if self.prices[k].is_nan() {
            self.prices[k] = price;
        }
        self.firm_totals = None;
        let s = side.sign();
        self.move_position(i, k, s * qty);
        let acct = &mut self.accounts[i];
        let notional = qty as f64 * price;
        match side {
            Side::Buy => {
                acct.cash -= notional;
                if acct.cash_account {
                    acct.settled_cash -= notional;
                }
            }
            Side::Sell => acct.cash += notional,
        }
        self.release_working(i, k, side, qty);
        Ok(())
    }

    /// Books an account's share of a block execution: `qty` shares (positions, working
    /// quantity, firm) and `cash_delta` (cash; settled cash too for a cash account's buy).
    pub fn book_allocation(
        &mut self,
        i: usize,
        k: usize,
        side: Side,
        qty: i64,
        cash_delta: f64,
        price: f64,
    ) {
        if self.prices[k].is_nan() {
            self.prices[k] = price;
        }
        self.firm_totals = None;
        if qty != 0 {
            self.move_position(i, k, side.sign() * qty);
        }
        let acct = &mut self.accounts[i];
        acct.cash += cash_delta;
        if acct.cash_account && side == Side::Buy {
            acct.settled_cash += cash_delta;
        }
        if qty != 0 {
            self.release_working(i, k, side, qty);
        }
    }

    pub fn release(&mut self, account_id: &str, sym: &str, side: Side, qty: i64) -> CoreResult<()> {
        let i = self.account(account_id)?;
        let k = self.symbol(sym)?;
        if !(1..=MAX_QUANTITY).contains(&qty) {
            return Err(CoreError::order(format!(
                "release quantity must be from 1 to {MAX_QUANTITY}"
            )));
        }
        self.release_working(i, k, side, qty);
        Ok(())
    }

    pub fn mandate_of(&self, a: &Account) -> &Mandate {
        &self.mandates[a.mandate]
    }
}
