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

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub account_id: Arc<str>,
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

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
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

impl Decision {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a decision always serialises")
    }
}
