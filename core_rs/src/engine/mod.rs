//! The engine: the book plus layer-1 memory, and the one call that runs layer 1, allocation and
//! layer 2 for a block, so the intraday path crosses the Python/Rust boundary once per block.

use crate::allocation::caps::{floor_lots, tightest_at};
use crate::allocation::{prepare, split, Forced, Prepared, Why};
use crate::book::Book;
use crate::codes::Code;
use crate::decision::{Check, Decision, LineStatus, Lines, Stage, Status};
use crate::domain::{AccountIn, BlockOrder, BookIn, KillSwitch, LotFailurePolicy, Side};
use crate::errors::{CoreError, CoreResult};
use crate::fills::{AccountFill, BlockFills, CloseReason, FillPolicy, Shortfall};
use crate::risk::{layer1, layer2, FirmState, LotFailure, LIVE_CAP_UNKNOWN};
use rustc_hash::FxHashMap as HashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The broker of an account without one.
pub const DEFAULT_BROKER: &str = "default";

/// The id of a block's child order at one broker: `"<order id>:<broker>"`.
pub fn child_order_id(order_id: &str, broker: &str) -> String {
    format!("{order_id}:{broker}")
}

#[derive(Debug, Clone)]
pub struct Engine {
    pub book: Book,
    pub firm: FirmState,
    /// Each account's broker, by account index.
    pub brokers: Vec<Arc<str>>,
    /// Fill state of every child order of the blocks accepted with `commit`, by child order id
    /// (one per broker of the block's accounts: fills at a broker go to its accounts only).
    pub blocks: HashMap<String, BlockFills>,
    /// The child order ids of each committed block, by block order id, brokers in name order.
    pub children: HashMap<String, Vec<String>>,
    /// Working memory of `process`, kept so that a block reuses the memory of the one before.
    scratch: Scratch,
}

/// What `process` works in for one block; nothing in it outlives the call.
#[derive(Debug, Clone, Default)]
struct Scratch {
    eligible: Vec<usize>,
    prep: Prepared,
    /// Shares per account from the first allocation.
    first: Vec<i64>,
    /// The rules each account's lot broke at layer 2 (the first failing pass).
    breaches: Vec<Option<Vec<Check>>>,
    live_caps: Vec<i64>,
    /// The rule that sets each account's cap at the live price, where `live_caps` has one.
    live_codes: Vec<Option<Code>>,
    failed: Vec<Option<LotFailure>>,
}

impl Engine {
    pub fn new(book: BookIn) -> CoreResult<Self> {
        let brokers: Vec<(String, Arc<str>)> = book
            .accounts
            .iter()
            .map(|a| {
                (a.account_id.clone(), Arc::from(a.broker.as_deref().unwrap_or(DEFAULT_BROKER)))
            })
            .collect();
        let mut engine = Engine {
            book: Book::load(book)?,
            firm: FirmState::default(),
            brokers: Vec::new(),
            blocks: HashMap::default(),
            children: HashMap::default(),
            scratch: Scratch::default(),
        };
        engine.brokers = vec![Arc::from(DEFAULT_BROKER); engine.book.accounts.len()];
        for (id, broker) in brokers {
            let i = engine.book.account(&id)?;
            engine.brokers[i] = broker;
        }
        Ok(engine)
    }

    /// Adds an account or replaces it (the same id keeps its place in book order).
    pub fn upsert_account(&mut self, a: &AccountIn) -> CoreResult<()> {
        self.book.upsert_account(a)?;
        let i = self.book.account(&a.account_id)?;
        let broker: Arc<str> = Arc::from(a.broker.as_deref().unwrap_or(DEFAULT_BROKER));
        if i < self.brokers.len() {
            self.brokers[i] = broker;
        } else {
            self.brokers.resize(i, Arc::from(DEFAULT_BROKER));
            self.brokers.push(broker);
        }
        Ok(())
    }

    pub fn set_kill_switch(&mut self, mode: KillSwitch) {
        self.book.kill_switch = mode;
    }

    /// The accounts a block goes to, in book order, into `out`.
    fn eligible(&mut self, order: &BlockOrder, out: &mut Vec<usize>) -> CoreResult<()> {
        out.clear();
        match &order.accounts {
            Some(list) => {
                for (n, a) in list.iter().enumerate() {
                    let i = self.book.account_idx.get(a).copied().ok_or_else(|| {
                        CoreError::order(format!("unknown account {a:?}"))
                            .at(["accounts".to_owned(), n.to_string()])
                    })?;
                    out.push(i);
                }
                out.sort_unstable();
                out.dedup();
            }
            None => out.extend_from_slice(self.book.followers(&order.strategy)),
        }
        Ok(())
    }

    /// Layer 1, allocation and layer 2 for one block. `as_of` is seconds since the epoch. With
    /// `commit`, an accepted block reserves its lots (working quantity and cash).
    pub fn process(
        &mut self,
        order: &BlockOrder,
        as_of: f64,
        commit: bool,
    ) -> CoreResult<Decision> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let out = self.process_in(order, as_of, commit, &mut scratch);
        self.scratch = scratch;
        out
    }

    fn process_in(
        &mut self,
        order: &BlockOrder,
        as_of: f64,
        commit: bool,
        scratch: &mut Scratch,
    ) -> CoreResult<Decision> {
        order.validate()?;
        let k = self.book.symbol(&order.symbol)?;
        let lot = self.book.instruments[k].lot;
        if let Some(q) = order.quantity {
            if q % lot != 0 {
                return Err(CoreError::order(format!(
                    "quantity {q} is not a whole number of lots of {lot}"
                ))
                .at(["quantity"]));
            }
        }
        if let (Some(params), crate::domain::AllocationMethod::Shares) =
            (&order.params, order.method)
        {
            for (a, v) in params {
                if (*v as i64) % lot != 0 || v.fract() != 0.0 {
                    return Err(CoreError::order(format!(
                        "{v} is not a whole number of lots of {lot}"
                    ))
                    .at(["shares".to_owned(), a.clone()]));
                }
            }
        }
        let Scratch { eligible, prep, first, breaches, live_caps, live_codes, failed } = scratch;
        self.eligible(order, eligible)?;
        let eligible = &eligible[..];
        let n = eligible.len();
        self.book.refresh_exposures(eligible);
        self.book.refresh_firm_totals();
        let px = order.reference_price;
        let live = self.book.prices[k];
        let has_live = !live.is_nan();
        let q_lots = order.quantity.map(|q| q / lot);
        prepare(&self.book, order, k, eligible, px, prep)?;
        if n > 0 {
            split(&self.book, eligible, prep, q_lots, &Forced::default());
        }
        first.clear();
        if n > 0 {
            first.extend(prep.lots().iter().map(|&q| q * lot));
        }
        let requested = match order.quantity {
            Some(q) => q,
            None => first.iter().sum(),
        };
        let mut decision = Decision {
            account_ids: self.book.account_ids.clone(),
            order_id: order.order_id.clone(),
            journey_id: order.journey_id.clone(),
            strategy: order.strategy.clone(),
            symbol: order.symbol.clone(),
            side: order.side.as_str(),
            status: Status::Rejected,
            stage: None,
            reference_price: px,
            live_price: if has_live { Some(live) } else { None },
            requested_quantity: requested,
            placed_quantity: 0,
            unplaced_quantity: 0,
            l1_breaches: Vec::new(),
            allocation_breaches: Vec::new(),
            lines: Lines::default(),
        };
        // a preview (commit=false) leaves no trace: ids stay unused, the throttle uncounted
        let mut l1 = layer1(&self.book, &mut self.firm, order, k, requested, as_of, commit);
        if commit {
            self.firm.seen_orders.insert(order.order_id.clone());
            self.firm.seen_journeys.insert(order.journey_id.clone());
        }
        if eligible.is_empty() {
            l1.push(Check::new(
                Code::NoEligibleAccounts,
                None,
                None,
                format!("no account follows strategy {}", order.strategy),
            ));
        }
        if !l1.is_empty() {
            decision.stage = Some(Stage::L1);
            decision.l1_breaches = l1;
            decision.unplaced_quantity = requested;
            return Ok(decision);
        }
        breaches.clear();
        breaches.resize(n, None);
        let mut any_breach = false;
        if !has_live {
            for (j, &q) in first.iter().enumerate() {
                if q > 0 {
                    let mut c = Check::new(
                        Code::NoLivePrice,
                        None,
                        None,
                        format!("no live price for {}", order.symbol),
                    );
                    c.cap = Some(0.0);
                    breaches[j] = Some(vec![c]);
                    any_breach = true;
                }
            }
        } else if prep.fits_at(live) {
            // layer 2 would pass every lot: check that it does, in debug builds
            debug_assert!({
                live_caps.clear();
                live_caps.resize(n, LIVE_CAP_UNKNOWN);
                live_codes.clear();
                live_codes.resize(n, None);
                let lots = prep.lots();
                layer2(&self.book, lot, &prep.ctx, lots, live, live_caps, live_codes).is_empty()
            });
        } else {
            let mut forced = Forced::default();
            live_caps.clear();
            live_caps.resize(n, LIVE_CAP_UNKNOWN);
            live_codes.clear();
            live_codes.resize(n, None);
            for _ in 0..=n {
                let lots = prep.lots();
                let failing = layer2(&self.book, lot, &prep.ctx, lots, live, live_caps, live_codes);
                if failing.is_empty() {
                    break;
                }
                any_breach = true;
                for f in &failing {
                    if breaches[f.j].is_none() {
                        breaches[f.j] = Some(f.broken.clone());
                    }
                }
                if order.on_lot_failure == LotFailurePolicy::RejectBlock {
                    break;
                }
                if forced.is_empty() {
                    forced = Forced::new(n);
                }
                failed.clear();
                failed.resize(n, None);
                for f in failing {
                    let j = f.j;
                    failed[j] = Some(f);
                }
                for (j, fail) in failed.drain(..).enumerate() {
                    if let Some(f) = fail {
                        if order.on_lot_failure == LotFailurePolicy::DropLots {
                            let mut c = Check::new(
                                Code::L2Dropped,
                                Some(0.0),
                                Some(0.0),
                                "lot dropped: failed layer-2 risk at live price",
                            );
                            c.cap = Some(0.0);
                            forced.insert(j, (0, Why::Check(c)));
                        } else {
                            let c = f.cap_lots;
                            if forced.get(j).is_none_or(|prev| c < prev.0) {
                                // the tightest rule always breaks, so a failing lot names one
                                let check = f.broken.into_iter().next().expect("a broken rule");
                                forced.insert(j, (c, Why::Check(check)));
                            }
                        }
                        continue;
                    }
                    // an account of no weight is offered nothing, whatever its cap
                    if prep.weights()[j] <= 0.0 {
                        continue;
                    }
                    // an account that passed keeps what passes at the live price too, so the
                    // quantity re-offered to it cannot make it fail
                    if live_caps[j] == LIVE_CAP_UNKNOWN {
                        let ctx = &prep.ctx[j];
                        let (cap, code) = tightest_at(ctx, &self.book.mandates[ctx.mandate], live);
                        live_caps[j] = floor_lots(cap, lot);
                        live_codes[j] = code;
                    }
                    let c = live_caps[j];
                    let prev_cap = forced.get(j).map_or(prep.caps_lots[j], |f| f.0);
                    if let (true, Some(code)) = (c < prev_cap, live_codes[j]) {
                        forced.insert(j, (c, Why::Rule { code, px: live, qty: (c * lot) as f64 }));
                    }
                }
                split(&self.book, eligible, prep, q_lots, &forced);
            }
        }
        let rejected =
            any_breach && (order.on_lot_failure == LotFailurePolicy::RejectBlock || !has_live);
        let mut placed = 0;
        let mut lines = Lines {
            accounts: eligible.to_vec(),
            weights: prep.weights().to_vec(),
            requested: prep.requested(order.method),
            ideal_lots: prep.ideal_lots().to_vec(),
            lot,
            allocated: first.clone(),
            quantity: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            bindings: Vec::new(),
            l2_breaches: Vec::new(),
        };
        for j in 0..n {
            let binding = prep.binding(&self.book, j);
            let brk = breaches[j].take();
            let qty = if rejected { 0 } else { prep.lots()[j] * lot };
            placed += qty;
            let status = if rejected && first[j] > 0 {
                LineStatus::Blocked
            } else if brk.is_some() {
                if qty == 0 {
                    LineStatus::Dropped
                } else {
                    LineStatus::Reduced
                }
            } else if binding.is_some() {
                LineStatus::Capped
            } else if qty > 0 {
                LineStatus::Ok
            } else {
                LineStatus::Zero
            };
            lines.quantity.push(qty);
            lines.status.push(status);
            if let Some(c) = binding {
                lines.bindings.push((j, c));
            }
            if let Some(v) = brk {
                lines.l2_breaches.push((j, v));
            }
        }
        decision.placed_quantity = placed;
        decision.unplaced_quantity = if requested > placed { requested - placed } else { 0 };
        if rejected {
            decision.stage = Some(Stage::L2);
            decision.lines = lines;
            return Ok(decision);
        }
        if placed == 0 {
            // Every account is capped at nothing (or its lots failed): there is no order to send.
            decision.stage = Some(Stage::Allocation);
            let mut c = Check::new(
                Code::NoCapacity,
                None,
                None,
                "no account can take any of the block under its mandate",
            );
            c.cap = Some(0.0);
            decision.allocation_breaches.push(c);
            decision.lines = lines;
            return Ok(decision);
        }
        decision.status = Status::Accepted;
        if commit {
            self.commit(order, eligible, &lines, k, live)?;
        }
        decision.lines = lines;
        Ok(decision)
    }

    /// Reserves an accepted block's lots and opens the fill state of its child orders, one per
    /// broker of the accounts that got shares.
    fn commit(
        &mut self,
        order: &BlockOrder,
        eligible: &[usize],
        lines: &Lines,
        k: usize,
        live: f64,
    ) -> CoreResult<()> {
        if self.children.contains_key(&order.order_id) {
            return Err(CoreError::order(format!(
                "block {} was committed already",
                order.order_id
            ))
            .at(["order_id"]));
        }
        let res_px = order.limit_price.unwrap_or(live);
        type FillLines = Vec<(Arc<str>, i64, FillPolicy, i64)>;
        let mut by_broker: BTreeMap<Arc<str>, FillLines> = BTreeMap::new();
        for (j, &i) in eligible.iter().enumerate() {
            let q = lines.quantity[j];
            if q > 0 {
                self.book.reserve(i, k, order.side, q, res_px);
                let acct = &self.book.accounts[i];
                let m = self.book.mandate_of(acct);
                let line = (acct.account_id.clone(), q, m.fill_policy, m.fill_priority);
                by_broker.entry(self.brokers[i].clone()).or_default().push(line);
            }
        }
        let mut ids = Vec::with_capacity(by_broker.len());
        for (broker, fill_lines) in by_broker {
            let id = child_order_id(&order.order_id, &broker);
            let block = BlockFills::new(&id, &order.symbol, order.side, fill_lines)?;
            self.blocks.insert(id.clone(), block);
            ids.push(id);
        }
        self.children.insert(order.order_id.clone(), ids);
        Ok(())
    }

    /// The child order an execution or close names: a child order id, or the id of a block
    /// that went to one broker only.
    fn child_of(&self, id: &str) -> CoreResult<String> {
        if self.blocks.contains_key(id) {
            return Ok(id.to_owned());
        }
        match self.children.get(id).map(Vec::as_slice) {
            Some([one]) => Ok(one.clone()),
            Some(many) => Err(CoreError::order(format!(
                "block {id:?} went to {} brokers: name one of its child orders ({})",
                many.len(),
                many.join(", ")
            ))
            .at(["order_id"])),
            None => {
                Err(CoreError::order(format!("no open block with order id {id:?}"))
                    .at(["order_id"]))
            }
        }
    }

    /// Hands an execution of a child order (or of a block at one broker) to its accounts and
    /// books each account's share. Returns None for an execution id already booked.
    pub fn execution(
        &mut self,
        order_id: &str,
        exec_id: &str,
        qty: i64,
        price: f64,
    ) -> CoreResult<Option<Vec<AccountFill>>> {
        let id = self.child_of(order_id)?;
        let block = self.blocks.get_mut(&id).expect("child_of names an open child order");
        let Some(fills) = block.execution(exec_id, qty, price)? else {
            return Ok(None);
        };
        let k = self.book.symbol(&block.symbol)?;
        let side = block.side;
        for f in &fills {
            let i = self.book.account(&f.account_id)?;
            self.book.book_allocation(i, k, side, f.quantity, f.cash_delta, price);
        }
        Ok(Some(fills))
    }

    /// Ends a child order, or every child order of a block still open (done, cancelled,
    /// expired): releases what their accounts still had working and returns their shortfalls.
    pub fn close_block(
        &mut self,
        order_id: &str,
        reason: CloseReason,
    ) -> CoreResult<Vec<Shortfall>> {
        let ids: Vec<String> = match self.children.get(order_id) {
            Some(ids) if !self.blocks.contains_key(order_id) => {
                let open: Vec<String> = ids
                    .iter()
                    .filter(|c| self.blocks.get(*c).is_some_and(|b| b.closed.is_none()))
                    .cloned()
                    .collect();
                if open.is_empty() {
                    return Err(CoreError::order(format!("block {order_id} is already closed")));
                }
                open
            }
            _ => vec![self.child_of(order_id)?],
        };
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.close_child(&id, reason)?);
        }
        Ok(out)
    }

    fn close_child(&mut self, order_id: &str, reason: CloseReason) -> CoreResult<Vec<Shortfall>> {
        let block = self.blocks.get_mut(order_id).expect("an open child order");
        if block.closed.is_some() {
            return Err(CoreError::order(format!("child order {order_id} is already closed")));
        }
        let shortfalls = block.close(reason);
        let k = self.book.symbol(&block.symbol)?;
        let side = block.side;
        for s in &shortfalls {
            if s.shortfall > 0 {
                let i = self.book.account(&s.account_id)?;
                self.book.release_working(i, k, side, s.shortfall);
            }
        }
        Ok(shortfalls)
    }

    pub fn apply_fill(
        &mut self,
        account_id: &str,
        sym: &str,
        side: Side,
        qty: i64,
        price: f64,
    ) -> CoreResult<()> {
        self.book.apply_fill(account_id, sym, side, qty, price)
    }
}
