"""Domain models: the wire and file shapes of MATS, validated with pydantic v2.

Every model is frozen and forbids unknown fields, so a typo in a mandate file or a request is an
error that names the field instead of a silently ignored setting. The Rust core mirrors these
shapes (``core_rs/src/domain``) and re-validates what it receives.

Percentages are written as percent numbers (``10.0`` means 10 %) everywhere a user types them.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-/]+$")]
Price = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Money = Annotated[float, Field(allow_inf_nan=False)]
NonNegMoney = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
# Quantities of shares up to 10^12 (the core's limit: sums over many accounts stay exact).
MAX_QUANTITY = 10**12
Quantity = Annotated[int, Field(ge=0, le=MAX_QUANTITY)]
SignedQuantity = Annotated[int, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY)]


class Frozen(BaseModel):
    """Base for all domain models: immutable, no extra fields, no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class AccountType(StrEnum):
    CASH = "cash"
    MARGIN = "margin"


class AllocationMethod(StrEnum):
    """How a block is split across accounts (see ``docs/allocation.md``)."""

    NET_LIQ = "net_liq"
    AVAILABLE_EQUITY = "available_equity"
    EQUAL = "equal"
    RATIOS = "ratios"
    PERCENT = "percent"
    SHARES = "shares"
    TARGET_WEIGHT = "target_weight"


class LotFailurePolicy(StrEnum):
    """What to do with a block when some allocated lots fail layer-2 risk at the live price."""

    REJECT_BLOCK = "reject_block"
    DROP_LOTS = "drop_lots"
    REDUCE_LOTS = "reduce_lots"


class FillPolicy(StrEnum):
    """How an account takes partial fills of a block (used by the fill allocator)."""

    PRO_RATA = "pro_rata"
    PRIORITY = "priority"
    AS_ALLOCATED = "as_allocated"


class KillSwitch(StrEnum):
    NORMAL = "normal"
    REDUCING = "reducing"
    HALTED = "halted"


class Instrument(Frozen):
    symbol: Identifier
    sector: Annotated[str, Field(min_length=1)]
    lot_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    tick_size: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 0.01
    currency: Annotated[str, Field(min_length=3, max_length=3)] = "USD"
    beta: Annotated[float, Field(allow_inf_nan=False, ge=-10.0, le=10.0)] = 1.0


class Mandate(Frozen):
    """An account's investment mandate: the limits allocation and layer-2 risk enforce."""

    mandate_id: Identifier
    max_position_pct: Annotated[float, Field(gt=0.0, le=100.0, allow_inf_nan=False)] | None = None
    max_position_shares: Annotated[int, Field(ge=0)] | None = None
    sector_caps_pct: dict[str, Percent] = Field(default_factory=dict)
    default_sector_cap_pct: Percent | None = None
    max_gross_leverage: Annotated[float, Field(gt=0.0, le=20.0, allow_inf_nan=False)] = 1.0
    allow_short: bool = False
    restricted_symbols: list[Identifier] = Field(default_factory=list)
    restricted_sectors: list[str] = Field(default_factory=list)
    min_trade_value: NonNegMoney = 0.0
    cash_buffer_pct: Percent = 0.0
    fill_policy: FillPolicy = FillPolicy.PRO_RATA
    fill_priority: Annotated[int, Field(ge=0)] = 0


class OpenOrders(Frozen):
    """Working (not yet filled) quantity of one account in one symbol, and cash held for buys."""

    buy: Quantity = 0
    sell: Quantity = 0
    buy_reserved: NonNegMoney = 0.0


class Account(Frozen):
    account_id: Identifier
    account_type: AccountType
    mandate_id: Identifier
    broker: Identifier = "default"
    net_liq: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    cash: Money
    settled_cash: Money
    pending_dividends: NonNegMoney = 0.0
    pending_withdrawals: NonNegMoney = 0.0
    positions: dict[str, SignedQuantity] = Field(default_factory=dict)
    open_orders: dict[str, OpenOrders] = Field(default_factory=dict)
    reserved_cash: NonNegMoney = 0.0
    strategies: list[Identifier] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cash_account_long_only(self) -> Self:
        if self.account_type is AccountType.CASH:
            short = sorted(s for s, q in self.positions.items() if q < 0)
            if short:
                raise ValueError(f"cash account holds short positions in {', '.join(short)}")
        return self


class InstrumentLimit(Frozen):
    max_quantity: Annotated[int, Field(gt=0)]
    max_notional: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class Throttle(Frozen):
    max_orders: Annotated[int, Field(gt=0)]
    window_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class RiskConfig(Frozen):
    """Firm-wide limits checked by layer 1 against the whole block."""

    instrument_limits: dict[str, InstrumentLimit] = Field(default_factory=dict)
    default_instrument_limit: InstrumentLimit | None = None
    price_collar_pct: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 5.0
    max_reference_age_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 5.0
    restricted_symbols: list[Identifier] = Field(default_factory=list)
    max_gross_exposure: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    max_net_exposure: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    max_sector_pct: Percent | None = None
    sector_limits_pct: dict[str, Percent] = Field(default_factory=dict)
    max_beta_delta: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    throttle: Throttle | None = None
    kill_switch: KillSwitch = KillSwitch.NORMAL


class Book(Frozen):
    """Everything the core needs between calls: instruments, mandates, accounts, limits, marks."""

    instruments: list[Instrument]
    mandates: list[Mandate]
    accounts: list[Account]
    risk: RiskConfig = Field(default_factory=RiskConfig)
    prices: dict[str, Price] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        symbols = _unique("instruments", "symbol", [i.symbol for i in self.instruments])
        mandates = _unique("mandates", "mandate_id", [m.mandate_id for m in self.mandates])
        _unique("accounts", "account_id", [a.account_id for a in self.accounts])
        problems: list[str] = []
        for i, acct in enumerate(self.accounts):
            where = f"accounts[{i}] ({acct.account_id})"
            if acct.mandate_id not in mandates:
                problems.append(f"{where}: unknown mandate_id {acct.mandate_id!r}")
            for sym in sorted(set(acct.positions) | set(acct.open_orders)):
                oo = acct.open_orders.get(sym)
                working = oo is not None and (oo.buy > 0 or oo.sell > 0)
                if sym not in symbols:
                    problems.append(f"{where}: position or open order in unknown symbol {sym!r}")
                elif (acct.positions.get(sym, 0) != 0 or working) and sym not in self.prices:
                    problems.append(f"{where}: holds or works {sym!r} but the book has no "
                                    "price for it")
        for sym in sorted(self.prices):
            if sym not in symbols:
                problems.append(f"prices: unknown symbol {sym!r}")
        for sym in sorted(self.risk.instrument_limits):
            if sym not in symbols:
                problems.append(f"risk.instrument_limits: unknown symbol {sym!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _unique(collection: str, field: str, values: list[str]) -> set[str]:
    seen: set[str] = set()
    dupes: list[str] = []
    for v in values:
        if v in seen:
            dupes.append(v)
        seen.add(v)
    if dupes:
        raise ValueError(f"{collection}: duplicate {field} {', '.join(sorted(set(dupes)))}")
    return seen


class BlockOrder(Frozen):
    """A strategy's block order: what to trade for every account that follows the strategy."""

    order_id: Identifier
    journey_id: Identifier
    strategy: Identifier
    symbol: Identifier
    side: Side
    quantity: Annotated[int, Field(gt=0, le=MAX_QUANTITY)] | None = None
    target_weight_pct: Percent | None = None
    limit_price: Price | None = None
    reference_price: Price
    reference_time: AwareDatetime
    method: AllocationMethod = AllocationMethod.NET_LIQ
    ratios: dict[str, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] | None = None
    percents: dict[str, Percent] | None = None
    shares: dict[str, Quantity] | None = None
    accounts: list[Identifier] | None = None
    on_lot_failure: LotFailurePolicy = LotFailurePolicy.REDUCE_LOTS

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.quantity is None) == (self.target_weight_pct is None):
            raise ValueError("give exactly one of quantity and target_weight_pct")
        is_tw = self.method is AllocationMethod.TARGET_WEIGHT
        if is_tw != (self.target_weight_pct is not None):
            raise ValueError("target_weight_pct goes with method 'target_weight' and only with it")
        needs = {
            AllocationMethod.RATIOS: "ratios",
            AllocationMethod.PERCENT: "percents",
            AllocationMethod.SHARES: "shares",
        }
        for method, name in needs.items():
            given = getattr(self, name) is not None
            if (self.method is method) != given:
                raise ValueError(f"{name} goes with method {method.value!r} and only with it")
        if self.ratios is not None and not any(v > 0 for v in self.ratios.values()):
            raise ValueError("ratios: at least one ratio must be positive")
        if self.percents is not None:
            total = sum(self.percents.values())
            if not math.isclose(total, 100.0, abs_tol=1e-6):
                raise ValueError(f"percents must sum to 100, they sum to {total:g}")
        if self.shares is not None and self.quantity is not None:
            total_shares = sum(self.shares.values())
            if total_shares != self.quantity:
                raise ValueError(
                    f"shares: per-account shares sum to {total_shares}, "
                    f"the block quantity is {self.quantity}"
                )
        return self

    @field_validator("accounts")
    @classmethod
    def _no_duplicate_accounts(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            _unique("accounts", "account_id", v)
        return v


# ---------------------------------------------------------------- decisions (core output)


class Check(Frozen):
    """One limit that bound or broke: a fixed code, the limit, the value measured against it.

    ``limit`` and ``value`` are in the limit's own unit (percent of NAV, shares, currency, times
    NAV for leverage); ``cap`` is the most shares the rule allows the account in this order.
    """

    code: str
    limit: float | None = None
    value: float | None = None
    cap: float | None = None
    message: str = ""


class AllocationLine(Frozen):
    """One account's share of a block (quantities in shares).

    ``requested`` is the unconstrained pro-rata share, ``ideal`` the share after caps and
    redistribution before rounding to lots, ``allocated`` the first allocation at the reference
    price and ``quantity`` what is sent after layer 2. ``status`` is one of ``ok``, ``capped``,
    ``reduced``, ``dropped``, ``blocked``, ``zero``.
    """

    account_id: str
    weight: float
    requested: float
    ideal: float
    allocated: int
    quantity: int
    binding: Check | None = None
    l2_breaches: list[Check] = Field(default_factory=list)
    status: str


class Decision(Frozen):
    order_id: str
    journey_id: str
    strategy: str
    symbol: str
    side: Side
    status: str
    stage: str | None = None
    reference_price: float
    live_price: float | None = None
    requested_quantity: int
    placed_quantity: int
    unplaced_quantity: int
    l1_breaches: list[Check] = Field(default_factory=list)
    allocation_breaches: list[Check] = Field(default_factory=list)
    lines: list[AllocationLine] = Field(default_factory=list)


class AccountFill(Frozen):
    """One account's share of one execution of its block, at the block's average price."""

    account_id: str
    quantity: int
    filled: int
    avg_price: float
    cash_delta: float


class Shortfall(Frozen):
    """An account's unfilled allocation when its block closed; ``carried`` goes to end of day."""

    account_id: str
    allocated: int
    filled: int
    shortfall: int
    carried: bool


class AllocateRequest(Frozen):
    """Input of ``mats allocate``: a book (inline, or a folder path) and the block orders to run."""

    book: Book | str
    orders: list[BlockOrder]
    as_of: AwareDatetime | None = None
    prices: dict[str, Price] = Field(default_factory=dict)
