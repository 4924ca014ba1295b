//! Fixed reason codes (mirrored in `python/mats/codes.py`). A code never changes meaning.

use serde::{Serialize, Serializer};

macro_rules! codes {
    ($($variant:ident => $text:literal),* $(,)?) => {
        /// Why an account was capped or a block or lot refused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $($variant),* }

        impl Code {
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text),* }
            }

            pub const ALL: &'static [Code] = &[$(Code::$variant),*];
        }
    };
}

codes! {
    // mandate rules: allocation caps and layer-2 checks, per account
    RestrictedSymbol => "RESTRICTED_SYMBOL",
    RestrictedSector => "RESTRICTED_SECTOR",
    ShortSaleNotAllowed => "SHORT_SALE_NOT_ALLOWED",
    MaxPositionPct => "MAX_POSITION_PCT",
    MaxPositionShares => "MAX_POSITION_SHARES",
    SectorCap => "SECTOR_CAP",
    GrossLeverage => "GROSS_LEVERAGE",
    SettledCash => "SETTLED_CASH",
    BuyingPower => "BUYING_POWER",
    MinTradeSize => "MIN_TRADE_SIZE",
    NoLivePrice => "NO_LIVE_PRICE",
    L2Dropped => "L2_DROPPED",
    // firm rules: layer 1, per block
    KillSwitchHalted => "KILL_SWITCH_HALTED",
    KillSwitchReducing => "KILL_SWITCH_REDUCING",
    DuplicateOrderId => "DUPLICATE_ORDER_ID",
    DuplicateJourneyId => "DUPLICATE_JOURNEY_ID",
    Throttled => "THROTTLED",
    FirmRestricted => "FIRM_RESTRICTED",
    NoInstrumentLimit => "NO_INSTRUMENT_LIMIT",
    MaxOrderQuantity => "MAX_ORDER_QUANTITY",
    MaxOrderNotional => "MAX_ORDER_NOTIONAL",
    PriceCollar => "PRICE_COLLAR",
    PriceNotOnTick => "PRICE_NOT_ON_TICK",
    StaleReferencePrice => "STALE_REFERENCE_PRICE",
    FirmGrossExposure => "FIRM_GROSS_EXPOSURE",
    FirmNetExposure => "FIRM_NET_EXPOSURE",
    FirmSectorConcentration => "FIRM_SECTOR_CONCENTRATION",
    FirmBetaDelta => "FIRM_BETA_DELTA",
    NoEligibleAccounts => "NO_ELIGIBLE_ACCOUNTS",
    // allocation, per block
    NoCapacity => "NO_CAPACITY",
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
