use crate::errors::{CoreError, CoreResult};

/// Largest quantity of shares the core accepts in one order, fill or position (10^12): far above
/// any real order, and small enough that sums over many accounts stay exact in `i64` and `f64`.
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;
/// Largest lot size.
pub const MAX_LOT: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn parse(s: &str) -> CoreResult<Self> {
        match s {
            "buy" => Ok(Self::Buy),
            "sell" => Ok(Self::Sell),
            other => {
                Err(CoreError::order(format!("side must be buy or sell, not {other:?}"))
                    .at(["side"]))
            }
        }
    }

    pub fn sign(self) -> i64 {
        match self {
            Self::Buy => 1,
            Self::Sell => -1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationMethod {
    NetLiq,
    AvailableEquity,
    Equal,
    Ratios,
    Percent,
    Shares,
    TargetWeight,
}

impl AllocationMethod {
    pub fn parse(s: &str) -> CoreResult<Self> {
        Ok(match s {
            "net_liq" => Self::NetLiq,
            "available_equity" => Self::AvailableEquity,
            "equal" => Self::Equal,
            "ratios" => Self::Ratios,
            "percent" => Self::Percent,
            "shares" => Self::Shares,
            "target_weight" => Self::TargetWeight,
            other => {
                return Err(
                    CoreError::order(format!("unknown allocation method {other:?}")).at(["method"])
                )
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NetLiq => "net_liq",
            Self::AvailableEquity => "available_equity",
            Self::Equal => "equal",
            Self::Ratios => "ratios",
            Self::Percent => "percent",
            Self::Shares => "shares",
            Self::TargetWeight => "target_weight",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LotFailurePolicy {
    RejectBlock,
    DropLots,
    ReduceLots,
}

impl LotFailurePolicy {
    pub fn parse(s: &str) -> CoreResult<Self> {
        Ok(match s {
            "reject_block" => Self::RejectBlock,
            "drop_lots" => Self::DropLots,
            "reduce_lots" => Self::ReduceLots,
            other => {
                return Err(CoreError::order(format!(
                    "on_lot_failure must be reject_block, drop_lots or reduce_lots, not {other:?}"
                ))
                .at(["on_lot_failure"]))
            }
        })
    }
}

/// A strategy's block order.
#[derive(Debug, Clone)]
pub struct BlockOrder {
    pub order_id: String,
    pub journey_id: String,
    pub strategy: String,
    pub symbol: String,
    pub side: Side,
    pub quantity: Option<i64>,
    pub target_weight_pct: Option<f64>,
    pub limit_price: Option<f64>,
    pub reference_price: f64,
    /// Seconds since the Unix epoch.
    pub reference_ts: f64,
    pub method: AllocationMethod,
    /// Per-account parameter of the ratios, percent or shares method, in the order given.
    pub params: Option<Vec<(String, f64)>>,
    pub accounts: Option<Vec<String>>,
    pub on_lot_failure: LotFailurePolicy,
}

impl BlockOrder {
    /// The checks the Python model also makes, repeated because the core trusts no caller.
    pub fn validate(&self) -> CoreResult<()> {
        let bad = |field: &str, msg: String| Err(CoreError::order(msg).at([field.to_owned()]));
        for (name, v) in [
            ("order_id", &self.order_id),
            ("journey_id", &self.journey_id),
            ("strategy", &self.strategy),
            ("symbol", &self.symbol),
        ] {
            if v.is_empty() {
                return bad(name, format!("{name} must not be empty"));
            }
        }
        if !(self.reference_price.is_finite() && self.reference_price > 0.0) {
            return bad(
                "reference_price",
                format!("reference price must be a positive number, got {}", self.reference_price),
            );
        }
        if !self.reference_ts.is_finite() {
            return bad("reference_time", "reference time is not a valid time".to_owned());
        }
        if let Some(lp) = self.limit_price {
            if !(lp.is_finite() && lp > 0.0) {
                return bad("limit_price", format!("limit price must be positive, got {lp}"));
            }
        }
        match (self.quantity, self.target_weight_pct) {
            (Some(q), None) if !(1..=MAX_QUANTITY).contains(&q) => {
                return bad(
                    "quantity",
                    format!("quantity must be from 1 to {MAX_QUANTITY}, got {q}"),
                )
            }
            (None, Some(w)) if !(w.is_finite() && (0.0..=100.0).contains(&w)) => {
                return bad("target_weight_pct", format!("target weight must be 0..100, got {w}"))
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return bad("quantity", "give exactly one of quantity and target_weight_pct".into())
            }
        }
        if (self.method == AllocationMethod::TargetWeight) != self.target_weight_pct.is_some() {
            return bad(
                "method",
                "target_weight_pct goes with method 'target_weight' and only with it".into(),
            );
        }
        let needs_params = matches!(
            self.method,
            AllocationMethod::Ratios | AllocationMethod::Percent | AllocationMethod::Shares
        );
        if needs_params != self.params.is_some() {
            return bad(
                self.method.as_str(),
                format!("method {:?} needs its per-account parameters", self.method.as_str()),
            );
        }
        if let Some(params) = &self.params {
            let field = match self.method {
                AllocationMethod::Ratios => "ratios",
                AllocationMethod::Percent => "percents",
                _ => "shares",
            };
            let mut total = 0.0;
            for (acct, v) in params {
                if !(v.is_finite() && *v >= 0.0) {
                    return Err(CoreError::order(format!(
                        "must be a non-negative number, got {v}"
                    ))
                    .at([field.to_owned(), acct.clone()]));
                }
                if self.method == AllocationMethod::Shares && *v > MAX_QUANTITY as f64 {
                    return Err(CoreError::order(format!(
                        "at most {MAX_QUANTITY} shares, got {v}"
                    ))
                    .at([field.to_owned(), acct.clone()]));
                }
                total += v;
            }
            match self.method {
                AllocationMethod::Ratios if total <= 0.0 => {
                    return bad(field, "at least one ratio must be positive".into())
                }
                AllocationMethod::Percent if (total - 100.0).abs() > 1e-6 => {
                    return bad(field, format!("percents must sum to 100, they sum to {total}"))
                }
                AllocationMethod::Shares => {
                    if let Some(q) = self.quantity {
                        if total != q as f64 {
                            return bad(
                                field,
                                format!(
                                    "per-account shares sum to {total}, the block quantity is {q}"
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
