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
    /// Boxed: most lines have none, and a line stays small to move.
    pub binding: Option<Box<Check>>,
    pub l2_breaches: Vec<Check>,
    pub status: LineStatus,
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
    pub lines: Vec<Line>,
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
    binding: &'a Option<Box<Check>>,
    l2_breaches: &'a [Check],
    status: LineStatus,
}

impl Decision {
    pub fn account_id(&self, line: &Line) -> &str {
        &self.account_ids[line.account]
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
            lines: self
                .lines
                .iter()
                .map(|l| LineOut {
                    account_id: self.account_id(l),
                    weight: l.weight,
                    requested: l.requested,
                    ideal: l.ideal,
                    allocated: l.allocated,
                    quantity: l.quantity,
                    binding: &l.binding,
                    l2_breaches: &l.l2_breaches,
                    status: l.status,
                })
                .collect(),
        };
        serde_json::to_string(&out).expect("a decision always serialises")
    }
}
