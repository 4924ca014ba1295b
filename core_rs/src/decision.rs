//! What the core answers for a block: the layer-1 verdict, every account's line with what bound
//! it, the layer-2 verdict per lot, and the totals.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

use crate::codes::Code;

/// A limit that bound or broke: code, limit and measured value in the limit's own unit, and the
/// most shares the rule allows (per-account rules only).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub code: Code,
    pub limit: Option<f64>,
    pub value: Option<f64>,
    pub cap: Option<f64>,
    pub message: Cow<'static, str>,
}

impl Check {
    pub fn new(
        code: Code,
        limit: Option<f64>,
        value: Option<f64>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Check { code, limit, value, cap: None, message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineStatus {
    /// Got its pro-rata share.
    Ok,
    /// A mandate rule capped it below its pro-rata share.
    Capped,
    /// Failed layer 2; its lot was reduced to what passes at the live price.
    Reduced,
    /// Failed layer 2; its lot was dropped.
    Dropped,
    /// The block was rejected at layer 2; the lot was allocated but is not sent.
    Blocked,
    /// Nothing allocated (zero weight).
    Zero,
}

/// One account's line of a decision, put together from [`Lines`].
#[derive(Debug, Clone)]
pub struct Line {
    /// Position of the account in the decision's `account_ids`.
    pub account: usize,
    /// The method's weight for the account (net liquidation, ratio, gap in shares, ...).
    pub weight: f64,
    /// Unconstrained pro-rata share, in shares.
    pub requested: f64,
    /// Pro-rata share after caps and redistribution, before rounding to lots, in shares.
    pub ideal: f64,
    /// Shares from the first allocation, at the reference price.
    pub allocated: i64,
    /// Shares sent for this account.
    pub quantity: i64,
    pub binding: Option<Check>,
    pub l2_breaches: Vec<Check>,
    pub status: LineStatus,
}

/// How a line's requested share follows from its weight.
#[derive(Debug, Clone, Copy, Default)]
pub struct Requested {
    /// Target weights: the weight is the account's own gap to its target, in shares.
    pub own_gap: bool,
    /// Lots the allocation split, and the sum of the weights.
    pub q_lots: i64,
    pub total_w: f64,
}

/// Every account's line, column by column: a block writes a few arrays rather than a record
/// per account, and the figures that follow from others (requested and ideal shares) are
/// worked out when asked for. Rules that bound or broke are kept for the lines that have them.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    /// Position of each line's account in the decision's `account_ids`, in book order.
    pub accounts: Vec<usize>,
    pub weights: Vec<f64>,
    pub requested: Requested,
    /// Each line's ideal share in lots.
    pub ideal_lots: Vec<f64>,
    pub lot: i64,
    /// Shares from the first allocation.
    pub allocated: Vec<i64>,
    /// Shares sent.
    pub quantity: Vec<i64>,
    pub status: Vec<LineStatus>,
    /// (line, check) of the lines a limit bound, in line order.
    pub bindings: Vec<(usize, Check)>,
    /// (line, checks) of the lines whose lot broke rules at layer 2, in line order.
    pub l2_breaches: Vec<(usize, Vec<Check>)>,
}

impl Lines {
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Line `j`'s unconstrained pro-rata share, in shares.
    pub fn requested(&self, j: usize) -> f64 {
        let r = &self.requested;
        let lot = self.lot as f64;
        let w = self.weights[j];
        let requested = if r.own_gap {
            w / lot
        } else if r.total_w > 0.0 {
            r.q_lots as f64 * w / r.total_w
        } else {
            0.0
        };
        requested * lot
    }

    /// Line `j`'s ideal share, in shares.
    pub fn ideal(&self, j: usize) -> f64 {
        self.ideal_lots[j] * self.lot as f64
    }

    /// Every line in full, in order.
    pub fn iter(&self) -> impl Iterator<Item = Line> + '_ {
        let mut b = self.bindings.iter().peekable();
        let mut l2 = self.l2_breaches.iter().peekable();
        (0..self.len()).map(move |j| Line {
            account: self.accounts[j],
            weight: self.weights[j],
            requested: self.requested(j),
            ideal: self.ideal(j),
            allocated: self.allocated[j],
            quantity: self.quantity[j],
            binding: b.next_if(|x| x.0 == j).map(|x| x.1.clone()),
            l2_breaches: l2.next_if(|x| x.0 == j).map(|x| x.1.clone()).unwrap_or_default(),
            status: self.status[j],
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Accepted,
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Refused by a firm rule.
    L1,
    /// Every account's share was capped to nothing: no order to send.
    Allocation,
    /// Refused because allocated lots fail at the live price (reject_block policy, or no price).
    L2,
}

/// Serialised by `to_json`, which resolves each line's account id.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The book's account ids when the block was decided, shared rather than copied per line.
    pub account_ids: Arc<Vec<Arc<str>>>,
    pub order_id: String,
    pub journey_id: String,
    pub strategy: String,
    pub symbol: String,
    pub side: &'static str,
    pub status: Status,
    pub stage: Option<Stage>,
    pub reference_price: f64,
    pub live_price: Option<f64>,
    pub requested_quantity: i64,
    pub placed_quantity: i64,
    pub unplaced_quantity: i64,
    pub l1_breaches: Vec<Check>,
    /// Why nothing could be placed (stage `allocation`).
    pub allocation_breaches: Vec<Check>,
    pub lines: Lines,
}

/// A line with its account id, for output.
#[derive(Serialize)]
struct LineOut<'a> {
    account_id: &'a str,
    weight: f64,
    requested: f64,
    ideal: f64,
    allocated: i64,
    quantity: i64,
    binding: Option<&'a Check>,
    l2_breaches: &'a [Check],
    status: LineStatus,
}

impl Decision {
    /// The account id of line `j`.
    pub fn account_id(&self, j: usize) -> &str {
        &self.account_ids[self.lines.accounts[j]]
    }

    /// (account id, shares) of the accounts that get shares, in book order.
    pub fn quantities(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        let l = &self.lines;
        (0..l.len()).filter(|&j| l.quantity[j] > 0).map(|j| (self.account_id(j), l.quantity[j]))
    }

    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            order_id: &'a str,
            journey_id: &'a str,
            strategy: &'a str,
            symbol: &'a str,
            side: &'a str,
            status: Status,
            stage: Option<Stage>,
            reference_price: f64,
            live_price: Option<f64>,
            requested_quantity: i64,
            placed_quantity: i64,
            unplaced_quantity: i64,
            l1_breaches: &'a [Check],
            allocation_breaches: &'a [Check],
            lines: Vec<LineOut<'a>>,
        }
        let l = &self.lines;
        let mut b = l.bindings.iter().peekable();
        let mut l2 = l.l2_breaches.iter().peekable();
        let lines = (0..l.len())
            .map(|j| LineOut {
                account_id: self.account_id(j),
                weight: l.weights[j],
                requested: l.requested(j),
                ideal: l.ideal(j),
                allocated: l.allocated[j],
                quantity: l.quantity[j],
                binding: b.next_if(|x| x.0 == j).map(|x| &x.1),
                l2_breaches: l2.next_if(|x| x.0 == j).map_or(&[], |x| &x.1[..]),
                status: l.status[j],
            })
            .collect();
        let out = Out {
            order_id: &self.order_id,
            journey_id: &self.journey_id,
            strategy: &self.strategy,
            symbol: &self.symbol,
            side: self.side,
            status: self.status,
            stage: self.stage,
            reference_price: self.reference_price,
            live_price: self.live_price,
            requested_quantity: self.requested_quantity,
            placed_quantity: self.placed_quantity,
            unplaced_quantity: self.unplaced_quantity,
            l1_breaches: &self.l1_breaches,
            allocation_breaches: &self.allocation_breaches,
            lines,
        };
        serde_json::to_string(&out).expect("a decision always serialises")
    }
}
