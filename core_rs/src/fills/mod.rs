//! Fill allocation: executions of a block handed back to its accounts.
//!
//! Rules (see `docs/fills.md`):
//! - **Same average price.** Every account's cumulative quantity is priced at the block's
//!   cumulative average price (VWAP of its executions). The block's notional, in cents, is
//!   apportioned over the accounts in proportion to their filled quantity by largest remainder,
//!   so the accounts' cash adds up to the block's to the cent. Each execution trues every
//!   account's booked cost up to the new average.
//! - **Partial fills, per account policy** (the mandate's `fill_policy`):
//!   `priority` accounts are filled first, in order of `fill_priority` then book order, each up to
//!   its allocation; `pro_rata` and `as_allocated` accounts share the rest in step: after every
//!   execution each is within one share of its exact proportional share of what the group has
//!   received (a quota method: never takes back a share already given).
//! - **Closing** (done, cancelled, expired) records each account's shortfall; `as_allocated`
//!   shortfalls are carried to the end-of-day re-allocation, the others are final.
//! - Executions are idempotent by execution id; an execution beyond the block's quantity is an
//!   error (an overfill), never silently absorbed.

use std::sync::Arc;

use rustc_hash::FxHashSet as HashSet;
use serde::Serialize;

use crate::domain::Side;
use crate::errors::{CoreError, CoreResult};

/// How an account takes partial fills of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FillPolicy {
    ProRata,
    Priority,
    AsAllocated,
}

/// One account's part of a block.
#[derive(Debug, Clone)]
pub struct FillLine {
    pub account_id: Arc<str>,
    pub allocated: i64,
    pub policy: FillPolicy,
    pub priority: i64,
    pub filled: i64,
    /// Cost booked so far, in cents (the block's average price times `filled`, apportioned).
    pub cost_cents: i64,
}

/// What one execution gives one account.
#[derive(Debug, Clone, Serialize)]
pub struct AccountFill {
    pub account_id: Arc<str>,
    /// Shares this execution adds to the account (zero when only its cost is trued up).
    pub quantity: i64,
    pub filled: i64,
    /// The block's average price so far: every account's average.
    pub avg_price: f64,
    /// Signed change of the account's cash: minus the cost change for a buy, plus for a sell.
    pub cash_delta: f64,
}

/// Why a block ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Done,
    Cancelled,
    Expired,
}

impl CloseReason {
    pub fn parse(s: &str) -> CoreResult<Self> {
        match s {
            "done" => Ok(Self::Done),
            "cancelled" => Ok(Self::Cancelled),
            "expired" => Ok(Self::Expired),
            other => Err(CoreError::order(format!(
                "close reason must be done, cancelled or expired, not {other:?}"
            ))),
        }
    }
}

/// An account's unfilled allocation when its block closed.
#[derive(Debug, Clone, Serialize)]
pub struct Shortfall {
    pub account_id: Arc<str>,
    pub allocated: i64,
    pub filled: i64,
    pub shortfall: i64,
    /// True for `as_allocated` accounts: the shortfall goes to the end-of-day re-allocation.
    pub carried: bool,
}

/// The fill state of one block order.
#[derive(Debug, Clone)]
pub struct BlockFills {
    pub order_id: String,
    pub symbol: String,
    pub side: Side,
    pub lines: Vec<FillLine>,
    pub cum_qty: i64,
    pub cum_notional: f64,
    /// Quantity the pro-rata group (pro_rata and as_allocated accounts) has received.
    group_qty: i64,
    seen: HashSet<String>,
    pub closed: Option<CloseReason>,
}

/// Splits `total` units in proportion to integer `weights` by largest remainder (ties: larger
/// weight, then earlier position). Exact integer arithmetic.
pub fn apportion(total: i64, weights: &[i64]) -> Vec<i64> {
    let sum: i128 = weights.iter().map(|&w| w as i128).sum();
    let mut out = vec![0i64; weights.len()];
    if sum <= 0 || total <= 0 {
        return out;
    }
    let mut rems = Vec::with_capacity(weights.len());
    let mut given: i64 = 0;
    for (j, &w) in weights.iter().enumerate() {
        let num = total as i128 * w as i128;
        out[j] = (num / sum) as i64;
        given += out[j];
        rems.push((num % sum, w, j));
    }
    let mut left = total - given;
    rems.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    for &(_, _, j) in &rems {
        if left == 0 {
            break;
        }
        out[j] += 1;
        left -= 1;
    }
    out
}

impl BlockFills {
    /// A block's fill state from its accepted lines (`(account, allocated, policy, priority)`).
    pub fn new(
        order_id: &str,
        symbol: &str,
        side: Side,
        lines: Vec<(Arc<str>, i64, FillPolicy, i64)>,
    ) -> CoreResult<Self> {
        if lines.iter().any(|l| l.1 <= 0) {
            return Err(CoreError::order(
                "every line of a block must allocate a positive quantity",
            ));
        }
        Ok(BlockFills {
            order_id: order_id.to_owned(),
            symbol: symbol.to_owned(),
            side,
            lines: lines
                .into_iter()
                .map(|(account_id, allocated, policy, priority)| FillLine {
                    account_id,
                    allocated,
                    policy,
                    priority,
                    filled: 0,
                    cost_cents: 0,
                })
                .collect(),
            cum_qty: 0,
            cum_notional: 0.0,
            group_qty: 0,
            seen: HashSet::default(),
            closed: None,
        })
    }

    pub fn allocated(&self) -> i64 {
        self.lines.iter().map(|l| l.allocated).sum()
    }

    /// Hands one execution to the accounts. Returns None for an execution id seen before.
    pub fn execution(
        &mut self,
        exec_id: &str,
        qty: i64,
        price: f64,
    ) -> CoreResult<Option<Vec<AccountFill>>> {
        if self.seen.contains(exec_id) {
            return Ok(None);
        }
        if let Some(r) = self.closed {
            return Err(CoreError::order(format!(
                "block {} is closed ({r:?}); execution {exec_id} cannot be booked",
                self.order_id
            )));
        }
        if !((1..=crate::domain::MAX_QUANTITY).contains(&qty) && price.is_finite() && price > 0.0) {
            return Err(CoreError::order(format!(
                "execution {exec_id}: quantity and price must be positive"
            )));
        }
        if qty > self.allocated() - self.cum_qty {
            return Err(CoreError::order(format!(
                "execution {exec_id} overfills block {}: {} + {qty} > {}",
                self.order_id,
                self.cum_qty,
                self.allocated()
            )));
        }
        self.seen.insert(exec_id.to_owned());
        self.cum_qty += qty;
        self.cum_notional += qty as f64 * price;
        let mut delta = vec![0i64; self.lines.len()];
        let mut left = qty;
        // priority accounts first, in rank order
        let mut ranked: Vec<usize> = (0..self.lines.len())
            .filter(|&j| self.lines[j].policy == FillPolicy::Priority)
            .collect();
        ranked.sort_by_key(|&j| (self.lines[j].priority, j));
        for j in ranked {
            if left == 0 {
                break;
            }
            let room = self.lines[j].allocated - self.lines[j].filled;
            let take = if room < left { room } else { left };
            delta[j] += take;
            left -= take;
        }
        if left > 0 {
            self.group_qty += left;
            let group: Vec<usize> = (0..self.lines.len())
                .filter(|&j| self.lines[j].policy != FillPolicy::Priority)
                .collect();
            self.quota(&group, left, &mut delta);
        }
        for (j, d) in delta.iter().enumerate() {
            self.lines[j].filled += d;
        }
        Ok(Some(self.true_up(&delta)))
    }

    /// Gives `q` more shares to `group` so that each account ends within one share of its exact
    /// share of `group_qty` without giving any share back: every account is raised to the floor
    /// of its exact share (or keeps what it has, if more), and the shares still to give go one
    /// each to the accounts furthest below their exact share (ties: larger allocation, then
    /// earlier in book order).
    fn quota(&self, group: &[usize], q: i64, delta: &mut [i64]) {
        let a: i128 = group.iter().map(|&j| self.lines[j].allocated as i128).sum();
        if a == 0 {
            return;
        }
        let c = self.group_qty as i128;
        let mut given: i64 = 0;
        // (fraction of the exact share above the target, scaled by `a`), allocation, position
        let mut below: Vec<(i128, i64, usize)> = Vec::with_capacity(group.len());
        for &j in group {
            let l = &self.lines[j];
            let exact = c * l.allocated as i128; // exact share, scaled by `a`
            let floor = (exact / a) as i64;
            let target = if l.filled > floor { l.filled } else { floor };
            delta[j] += target - l.filled;
            given += target - l.filled;
            let gap = exact - target as i128 * a;
            if gap > 0 && target < l.allocated {
                below.push((gap, l.allocated, j));
            }
        }
        let mut left = q - given;
        // Raising every account to the floor of its exact share never needs more than the
        // execution brings while each stays within one share of that share (the property tests
        // check both against the reference, which asserts it).
        debug_assert!(left >= 0, "quota gave more than the execution");
        below.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(y.1.cmp(&x.1)).then(x.2.cmp(&y.2)));
        for &(_, _, j) in &below {
            if left <= 0 {
                break;
            }
            delta[j] += 1;
            left -= 1;
        }
        // Unreachable while every account stays within one share of its exact share; kept so
        // the block's total is right whatever the state: the rest goes to any account with room.
        for &j in group {
            while left > 0 && self.lines[j].filled + delta[j] < self.lines[j].allocated {
                delta[j] += 1;
                left -= 1;
            }
        }
    }

    /// Re-prices every account's cumulative quantity at the block's average, to the cent.
    fn true_up(&mut self, delta: &[i64]) -> Vec<AccountFill> {
        let total_cents = (self.cum_notional * 100.0).round() as i64;
        let filled: Vec<i64> = self.lines.iter().map(|l| l.filled).collect();
        let cents = apportion(total_cents, &filled);
        let avg = self.cum_notional / self.cum_qty as f64;
        let sign = match self.side {
            Side::Buy => -1.0,
            Side::Sell => 1.0,
        };
        let mut out = Vec::new();
        for (j, l) in self.lines.iter_mut().enumerate() {
            let change = cents[j] - l.cost_cents;
            if delta[j] == 0 && change == 0 {
                continue;
            }
            l.cost_cents = cents[j];
            out.push(AccountFill {
                account_id: l.account_id.clone(),
                quantity: delta[j],
                filled: l.filled,
                avg_price: avg,
                cash_delta: sign * change as f64 / 100.0,
            });
        }
        out
    }

    /// Ends the block; returns every account's shortfall.
    pub fn close(&mut self, reason: CloseReason) -> Vec<Shortfall> {
        self.closed = Some(reason);
        self.lines
            .iter()
            .map(|l| Shortfall {
                account_id: l.account_id.clone(),
                allocated: l.allocated,
                filled: l.filled,
                shortfall: l.allocated - l.filled,
                carried: l.policy == FillPolicy::AsAllocated && l.allocated > l.filled,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(allocs: &[(i64, FillPolicy, i64)]) -> BlockFills {
        let lines = allocs
            .iter()
            .enumerate()
            .map(|(i, &(a, p, r))| (Arc::<str>::from(format!("A{i}")), a, p, r))
            .collect();
        BlockFills::new("b1", "MSFT", Side::Buy, lines).unwrap()
    }

    #[test]
    fn apportion_is_largest_remainder() {
        assert_eq!(apportion(10, &[1, 1, 1]), [4, 3, 3]);
        assert_eq!(apportion(7, &[100, 200, 400]), [1, 2, 4]);
        assert_eq!(apportion(0, &[1, 2]), [0, 0]);
    }

    #[test]
    fn pro_rata_accounts_stay_in_step() {
        let mut b = block(&[(100, FillPolicy::ProRata, 0), (200, FillPolicy::ProRata, 0)]);
        b.execution("e1", 30, 10.0).unwrap();
        assert_eq!(b.lines.iter().map(|l| l.filled).collect::<Vec<_>>(), [10, 20]);
        b.execution("e2", 1, 10.0).unwrap();
        b.execution("e3", 1, 10.0).unwrap();
        b.execution("e4", 1, 10.0).unwrap();
        assert_eq!(b.lines.iter().map(|l| l.filled).collect::<Vec<_>>(), [11, 22]);
    }

    #[test]
    fn priority_accounts_fill_first() {
        let mut b = block(&[(100, FillPolicy::ProRata, 0), (50, FillPolicy::Priority, 1)]);
        b.execution("e1", 60, 10.0).unwrap();
        assert_eq!(b.lines.iter().map(|l| l.filled).collect::<Vec<_>>(), [10, 50]);
    }

    #[test]
    fn same_average_price_to_the_cent() {
        let mut b = block(&[
            (1, FillPolicy::ProRata, 0),
            (1, FillPolicy::ProRata, 0),
            (1, FillPolicy::ProRata, 0),
        ]);
        b.execution("e1", 1, 10.00).unwrap();
        b.execution("e2", 1, 10.01).unwrap();
        b.execution("e3", 1, 10.01).unwrap();
        let cents: Vec<i64> = b.lines.iter().map(|l| l.cost_cents).collect();
        assert_eq!(cents.iter().sum::<i64>(), 3002);
        assert!(cents.iter().all(|&c| c == 1000 || c == 1001));
    }

    #[test]
    fn duplicates_are_ignored_and_overfills_refused() {
        let mut b = block(&[(10, FillPolicy::ProRata, 0)]);
        assert!(b.execution("e1", 5, 10.0).unwrap().is_some());
        assert!(b.execution("e1", 5, 10.0).unwrap().is_none());
        assert_eq!(b.cum_qty, 5);
        assert!(b.execution("e2", 6, 10.0).is_err());
        let s = b.close(CloseReason::Cancelled);
        assert_eq!(s[0].shortfall, 5);
        assert!(b.execution("e3", 1, 10.0).is_err());
    }
}
