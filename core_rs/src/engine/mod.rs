//! The engine: the book plus layer-1 memory, and the one call that runs layer 1, allocation and
//! layer 2 for a block, so the intraday path crosses the Python/Rust boundary once per block.

use crate::allocation::caps::{caps_at, floor_lots, rule_check};
use crate::allocation::{prepare, split, Alloc, Forced};
use crate::book::Book;
use crate::codes::Code;
use crate::decision::{Check, Decision, Line, LineStatus, Stage, Status};
use crate::domain::{BlockOrder, BookIn, KillSwitch, LotFailurePolicy, Side};
use crate::errors::{CoreError, CoreResult};
use crate::fills::{AccountFill, BlockFills, CloseReason, Shortfall};
use crate::risk::{layer1, layer2, FirmState, LotFailure, LIVE_CAP_UNKNOWN};
use rustc_hash::FxHashMap as HashMap;

#[derive(Debug, Clone)]
pub struct Engine {
    pub book: Book,
    pub firm: FirmState,
    /// Fill state of every block accepted with `commit`, by order id.
    pub blocks: HashMap<String, BlockFills>,
}

impl Engine {
    pub fn new(book: BookIn) -> CoreResult<Self> {
        Ok(Engine {
            book: Book::load(book)?,
            firm: FirmState::default(),
            blocks: HashMap::default(),
        })
    }

    pub fn set_kill_switch(&mut self, mode: KillSwitch) {
        self.book.kill_switch = mode;
    }

    fn eligible(&mut self, order: &BlockOrder) -> CoreResult<Vec<usize>> {
        match &order.accounts {
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (n, a) in list.iter().enumerate() {
                    let i = self.book.account_idx.get(a).copied().ok_or_else(|| {
                        CoreError::order(format!("unknown account {a:?}"))
                            .at(["accounts".to_owned(), n.to_string()])
                    })?;
                    out.push(i);
                }
                out.sort_unstable();
                out.dedup();
                Ok(out)
            }
            None => Ok(self.book.followers(&order.strategy)),
        }
    }

    /// Layer 1, allocation and layer 2 for one block. `as_of` is seconds since the epoch. With
    /// `commit`, an accepted block reserves its lots (working quantity and cash).
    pub fn process(
        &mut self,
        order: &BlockOrder,
        as_of: f64,
        commit: bool,
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
        let eligible = self.eligible(order)?;
        self.book.refresh_exposures(&eligible);
        self.book.refresh_firm_totals();
        let px = order.reference_price;
        let live = self.book.prices[k];
        let has_live = !live.is_nan();
        let q_lots = order.quantity.map(|q| q / lot);
        let none = Forced::default();
        let prep = prepare(&self.book, order, k, &eligible, px)?;
        let mut allocs = if eligible.is_empty() {
            Vec::new()
        } else {
            split(&self.book, order, k, &eligible, &prep, q_lots, &none)
        };
        let requested = match order.quantity {
            Some(q) => q,
            None => allocs.iter().map(|a| a.quantity).sum(),
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
            lines: Vec::new(),
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
        let first: Vec<i64> = allocs.iter().map(|a| a.quantity).collect();
        let mut breaches: Vec<Option<Vec<Check>>> = vec![None; eligible.len()];
        let mut any_breach = false;
        if !has_live {
            for (j, a) in allocs.iter().enumerate() {
                if a.quantity > 0 {
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
        } else {
            let mut forced = Forced::default();
            let mut live_caps = vec![LIVE_CAP_UNKNOWN; eligible.len()];
            for _ in 0..=eligible.len() {
                let failing = layer2(&self.book, lot, &prep.ctx, &allocs, live, &mut live_caps);
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
                let mut failed: Vec<Option<LotFailure>> = vec![None; eligible.len()];
                for f in failing {
                    let j = f.j;
                    failed[j] = Some(f);
                }
                for (j, fail) in failed.into_iter().enumerate() {
                    if let Some(f) = fail {
                        if order.on_lot_failure == LotFailurePolicy::DropLots {
                            let mut c = Check::new(
                                Code::L2Dropped,
                                Some(0.0),
                                Some(0.0),
                                "lot dropped: failed layer-2 risk at live price",
                            );
                            c.cap = Some(0.0);
                            forced.insert(j, (0, c));
                        } else {
                            let c = f.cap_lots;
                            if forced.get(&j).is_none_or(|prev| c < prev.0) {
                                // the tightest rule always breaks, so a failing lot names one
                                let check = f.broken.into_iter().next().expect("a broken rule");
                                forced.insert(j, (c, check));
                            }
                        }
                        continue;
                    }
                    // an account that passed keeps what passes at the live price too, so the
                    // quantity re-offered to it cannot make it fail
                    let ctx = &prep.ctx[j];
                    let m = &self.book.mandates[ctx.mandate];
                    let caps = caps_at(ctx, m, live);
                    let c = floor_lots(caps.cap_shares(), lot);
                    live_caps[j] = c;
                    let prev_cap = forced.get(&j).map_or(prep.caps_lots[j], |f| f.0);
                    if let (true, Some(code)) = (c < prev_cap, caps.binding()) {
                        let check = rule_check(ctx, m, code, live, (c * lot) as f64, lot);
                        forced.insert(j, (c, check));
                    }
                }
                allocs = split(&self.book, order, k, &eligible, &prep, q_lots, &forced);
            }
        }
        let rejected =
            any_breach && (order.on_lot_failure == LotFailurePolicy::RejectBlock || !has_live);
        let mut placed = 0;
        let mut lines = Vec::with_capacity(allocs.len());
        for (j, (a, brk)) in allocs.into_iter().zip(breaches).enumerate() {
            let Alloc { weight, requested, ideal, quantity, binding } = a;
            let qty = if rejected { 0 } else { quantity };
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
            lines.push(Line {
                account: eligible[j],
                weight,
                requested,
                ideal,
                allocated: first[j],
                quantity: qty,
                binding,
                l2_breaches: brk.unwrap_or_default(),
                status,
            });
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
            let res_px = order.limit_price.unwrap_or(live);
            let mut fill_lines = Vec::new();
            for (j, &i) in eligible.iter().enumerate() {
                let q = lines[j].quantity;
                if q > 0 {
                    self.book.reserve(i, k, order.side, q, res_px);
                    let acct = &self.book.accounts[i];
                    let m = self.book.mandate_of(acct);
                    fill_lines.push((acct.account_id.clone(), q, m.fill_policy, m.fill_priority));
                }
            }
            let block = BlockFills::new(&order.order_id, &order.symbol, order.side, fill_lines)?;
            self.blocks.insert(order.order_id.clone(), block);
        }
        decision.lines = lines;
        Ok(decision)
    }

    /// Hands an execution of a block to its accounts and books each account's share.
    /// Returns None for an execution id already booked.
    pub fn execution(
        &mut self,
        order_id: &str,
        exec_id: &str,
        qty: i64,
        price: f64,
    ) -> CoreResult<Option<Vec<AccountFill>>> {
        let block = self.blocks.get_mut(order_id).ok_or_else(|| {
            CoreError::order(format!("no open block with order id {order_id:?}")).at(["order_id"])
        })?;
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

    /// Ends a block (done, cancelled, expired): releases what its accounts still had working
    /// and returns their shortfalls.
    pub fn close_block(
        &mut self,
        order_id: &str,
        reason: CloseReason,
    ) -> CoreResult<Vec<Shortfall>> {
        let block = self.blocks.get_mut(order_id).ok_or_else(|| {
            CoreError::order(format!("no open block with order id {order_id:?}")).at(["order_id"])
        })?;
        if block.closed.is_some() {
            return Err(CoreError::order(format!("block {order_id} is already closed")));
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
