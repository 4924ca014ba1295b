use std::collections::BTreeMap;

use serde::Deserialize;

use crate::errors::{CoreError, CoreResult};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentIn {
    pub symbol: String,
    pub sector: String,
    #[serde(default = "one")]
    pub lot_size: i64,
    #[serde(default = "cent")]
    pub tick_size: f64,
    #[serde(default = "usd")]
    pub currency: String,
    #[serde(default = "one_f")]
    pub beta: f64,
}

fn one() -> i64 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn cent() -> f64 {
    0.01
}
fn usd() -> String {
    "USD".to_owned()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FillPolicy {
    ProRata,
    Priority,
    AsAllocated,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MandateIn {
    pub mandate_id: String,
    #[serde(default)]
    pub max_position_pct: Option<f64>,
    #[serde(default)]
    pub max_position_shares: Option<i64>,
    #[serde(default)]
    pub sector_caps_pct: BTreeMap<String, f64>,
    #[serde(default)]
    pub default_sector_cap_pct: Option<f64>,
    #[serde(default = "one_f")]
    pub max_gross_leverage: f64,
    #[serde(default)]
    pub allow_short: bool,
    #[serde(default)]
    pub restricted_symbols: Vec<String>,
    #[serde(default)]
    pub restricted_sectors: Vec<String>,
    #[serde(default)]
    pub min_trade_value: f64,
    #[serde(default)]
    pub cash_buffer_pct: f64,
    #[serde(default = "pro_rata")]
    pub fill_policy: FillPolicy,
    #[serde(default)]
    pub fill_priority: i64,
}

fn pro_rata() -> FillPolicy {
    FillPolicy::ProRata
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccountType {
    Cash,
    Margin,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenOrdersIn {
    #[serde(default)]
    pub buy: i64,
    #[serde(default)]
    pub sell: i64,
    #[serde(default)]
    pub buy_reserved: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountIn {
    pub account_id: String,
    pub account_type: AccountType,
    pub mandate_id: String,
    #[serde(default)]
    pub broker: Option<String>,
    pub net_liq: f64,
    pub cash: f64,
    pub settled_cash: f64,
    #[serde(default)]
    pub pending_dividends: f64,
    #[serde(default)]
    pub pending_withdrawals: f64,
    // Insertion order is kept (serde_json without preserve_order sorts; the state sorts anyway).
    #[serde(default)]
    pub positions: BTreeMap<String, i64>,
    #[serde(default)]
    pub open_orders: BTreeMap<String, OpenOrdersIn>,
    #[serde(default)]
    pub reserved_cash: f64,
    #[serde(default)]
    pub strategies: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentLimit {
    pub max_quantity: i64,
    pub max_notional: f64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    pub max_orders: usize,
    pub window_s: f64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KillSwitch {
    Normal,
    Reducing,
    Halted,
}

impl KillSwitch {
    pub fn parse(s: &str) -> CoreResult<Self> {
        match s {
            "normal" => Ok(Self::Normal),
            "reducing" => Ok(Self::Reducing),
            "halted" => Ok(Self::Halted),
            other => Err(CoreError::order(format!(
                "kill switch must be normal, reducing or halted, not {other:?}"
            ))),
        }
    }
}

fn five() -> f64 {
    5.0
}
fn normal() -> KillSwitch {
    KillSwitch::Normal
}

/// Firm-wide limits, checked by layer 1 against the whole block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    #[serde(default)]
    pub instrument_limits: BTreeMap<String, InstrumentLimit>,
    #[serde(default)]
    pub default_instrument_limit: Option<InstrumentLimit>,
    #[serde(default = "five")]
    pub price_collar_pct: f64,
    #[serde(default = "five")]
    pub max_reference_age_s: f64,
    #[serde(default)]
    pub restricted_symbols: Vec<String>,
    #[serde(default)]
    pub max_gross_exposure: Option<f64>,
    #[serde(default)]
    pub max_net_exposure: Option<f64>,
    #[serde(default)]
    pub max_sector_pct: Option<f64>,
    #[serde(default)]
    pub sector_limits_pct: BTreeMap<String, f64>,
    #[serde(default)]
    pub max_beta_delta: Option<f64>,
    #[serde(default)]
    pub throttle: Option<Throttle>,
    #[serde(default = "normal")]
    pub kill_switch: KillSwitch,
}

impl Default for RiskConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults of RiskConfig")
    }
}

/// The book as loaded at start of day.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookIn {
    pub instruments: Vec<InstrumentIn>,
    pub mandates: Vec<MandateIn>,
    pub accounts: Vec<AccountIn>,
    #[serde(default)]
    pub risk: RiskConfig,
    #[serde(default)]
    pub prices: BTreeMap<String, f64>,
}

impl BookIn {
    pub fn from_json(text: &str) -> CoreResult<Self> {
        serde_json::from_str(text).map_err(|e| CoreError::book(format!("book JSON: {e}")))
    }
}
