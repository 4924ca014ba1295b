"""Plain-Python reference of the core's allocation and two-layer risk rules.

This module is the executable specification of ``core_rs``: the Rust engine must give the same
answers (the property tests compare them), and it is the baseline ``make bench`` measures the
Rust core against. It is written for clarity, in the same order of floating-point operations as
the Rust code so that both round the same way; it is not meant to be fast.

The rules are described in ``docs/allocation.md`` and ``docs/risk.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mats import codes
from mats.errors import BookError, OrderError
from mats.models import (
    Account,
    AccountType,
    AllocationMethod,
    BlockOrder,
    Book,
    Instrument,
    KillSwitch,
    LotFailurePolicy,
    Mandate,
    RiskConfig,
    Side,
)

REG_T_INITIAL_MARGIN = 0.5
# Caps are floored to whole lots after adding this slack, so that a cap which is a whole number of
# lots in exact arithmetic (say 300 shares computed as 299.99999999997) is not cut by one lot.
LOT_EPS = 1e-9
# Largest cap in lots (keeps sums over many accounts exact), and largest quantity of shares.
MAX_LOTS = 10**12
MAX_QUANTITY = 10**12
# Rounds of simultaneous capping before the accounts still in play are swept in sorted order.
MAX_ROUNDS = 8


RULE_TEXT = {
    codes.RESTRICTED_SYMBOL: "symbol restricted by the account's mandate",
    codes.RESTRICTED_SECTOR: "sector restricted by the account's mandate",
    codes.SHORT_SALE_NOT_ALLOWED: "short selling not allowed for this account",
    codes.MAX_POSITION_PCT: "position limit, % of account NAV",
    codes.MAX_POSITION_SHARES: "position limit, shares",
    codes.SECTOR_CAP: "sector cap, % of account NAV",
    codes.GROSS_LEVERAGE: "gross leverage ceiling, times NAV",
    codes.SETTLED_CASH: "settled cash after withdrawals, reservations and cash buffer",
    codes.BUYING_POWER: "Reg T buying power (50% initial margin)",
}

# ------------------------------------------------------------------------------ book state


@dataclass
class _OpenOrders:
    buy: int = 0
    sell: int = 0
    buy_reserved: float = 0.0


@dataclass
class _Account:
    account_id: str
    cash_account: bool
    mandate: Mandate
    net_liq: float
    cash: float
    settled_cash: float
    pending_withdrawals: float
    reserved_cash: float
    # instrument index -> quantity; iterated in instrument order
    positions: dict[int, int]
    open_orders: dict[int, _OpenOrders]
    strategies: set[str]
    restricted_symbols: set[str]
    restricted_sectors: set[str]
    # Gross exposure at marks, summed over positions in instrument order, and per sector: kept
    # between calls and re-summed when positions or marks of held instruments move.
    gross: float = 0.0  # working orders counted as filled, the larger way
    gross_pos: float = 0.0  # positions alone (what Reg T margins)
    sector_gross: list[float] = field(default_factory=list)
    fresh: bool = False


@dataclass
class _Instrument:
    idx: int
    symbol: str
    sector: str
    sector_idx: int
    lot: int
    tick: float
    beta: float


def _check(code: str, limit: float | None, value: float | None, cap: float | None,
           message: str) -> dict[str, Any]:
    return {"code": code, "limit": limit, "value": value, "cap": cap, "message": message}


@dataclass
class _Rule:
    """One mandate rule applied to one account for one order side.

    ``e_cap`` is the most shares the rule lets the account *add* to its exposure (after any
    reducing part of the trade); ``limit`` is in the rule's own unit and ``usage`` maps an order
    quantity to the value compared with ``limit``.
    """

    code: str
    e_cap: float
    limit: float
    base: float  # value of the measure before the trade, in the limit's unit
    per_share: float  # how much one added share moves the measure
    text: str


@dataclass
class _Caps:
    reducing: int  # shares of the trade that only reduce an opposite position
    rules: list[_Rule]

    def cap_shares(self) -> float:
        if not self.rules:
            return math.inf
        m = self.rules[0].e_cap
        for r in self.rules[1:]:
            if r.e_cap < m:
                m = r.e_cap
        return self.reducing + (m if m > 0.0 else 0.0)

    def binding(self) -> _Rule | None:
        best: _Rule | None = None
        for r in self.rules:
            if best is None or r.e_cap < best.e_cap:
                best = r
        return best

    def check_of(self, rule: _Rule, qty: float, lot: int) -> dict[str, Any]:
        """The rule as a reported check: its measure after ``qty`` shares, its cap in lots."""
        added = qty - self.reducing
        if added < 0.0:
            added = 0.0
        value = rule.base + added * rule.per_share
        cap = self.reducing + (rule.e_cap if rule.e_cap > 0.0 else 0.0)
        return _check(rule.code, rule.limit, value, float(_floor_lots(cap, lot) * lot),
                      rule.text)


def _worst_case(position: int, open_buy: int, open_sell: int) -> int:
    """Shares of exposure if every working order filled, the larger way: buys or sells."""
    up = abs(position + open_buy)
    down = abs(position - open_sell)
    return up if up > down else down


def _floor_lots(shares: float, lot: int) -> int:
    """Whole lots in ``shares``, floored, never negative, at most ``MAX_LOTS``."""
    if shares == math.inf:
        return MAX_LOTS
    v = shares / lot + LOT_EPS
    if not v >= 1.0:  # also NaN
        return 0
    if v >= MAX_LOTS:
        return MAX_LOTS
    return math.floor(v)


class ReferenceEngine:
    """Same API and answers as ``mats.Engine``, in plain Python."""

    def __init__(self, book: Book) -> None:
        self._load(book)

    # -------------------------------------------------------------------- loading and updates

    def _load(self, book: Book) -> None:
        self.instruments: list[_Instrument] = []
        self.by_symbol: dict[str, _Instrument] = {}
        self.sector_ids: dict[str, int] = {}
        for ins in book.instruments:
            self._add_instrument(ins)
        self.mandates = {m.mandate_id: m for m in book.mandates}
        self.prices: list[float] = [math.nan] * len(self.instruments)
        for sym, px in book.prices.items():
            self.prices[self.by_symbol[sym].idx] = px
        self.accounts: list[_Account] = []
        self.account_idx: dict[str, int] = {}
        self.brokers: dict[str, str] = {}
        self.firm_pos: list[int] = [0] * len(self.instruments)
        # working (accepted, unfilled) quantity, buys less sells: firm checks count it as filled
        self.firm_work: list[int] = [0] * len(self.instruments)
        for acct in book.accounts:
            self._upsert_account(acct)
            self.brokers[acct.account_id] = acct.broker
        self.risk: RiskConfig = book.risk
        self.kill_switch = book.risk.kill_switch
        self.seen_orders: set[str] = set()
        # fill state per child order (one per broker of a block's accounts), by child order id
        self.blocks: dict[str, _BlockFills] = {}
        self.children: dict[str, list[str]] = {}
        self.seen_journeys: set[str] = set()
        self.throttle_log: dict[str, list[float]] = {}

    def _add_instrument(self, ins: Instrument) -> None:
        if ins.sector not in self.sector_ids:
            self.sector_ids[ins.sector] = len(self.sector_ids)
        r = _Instrument(len(self.instruments), ins.symbol, ins.sector,
                        self.sector_ids[ins.sector], ins.lot_size, ins.tick_size, ins.beta)
        self.instruments.append(r)
        self.by_symbol[ins.symbol] = r

    def _upsert_account(self, acct: Account) -> None:
        mandate = self.mandates.get(acct.mandate_id)
        if mandate is None:
            raise BookError(f"account {acct.account_id}: unknown mandate {acct.mandate_id!r}")
        positions: dict[int, int] = {}
        for sym, q in acct.positions.items():
            if sym not in self.by_symbol:
                raise BookError(f"account {acct.account_id}: unknown symbol {sym!r}")
            if q != 0:
                if math.isnan(self.prices[self.by_symbol[sym].idx]):
                    raise BookError(f"{acct.account_id}: holds {sym} but it has no price")
                positions[self.by_symbol[sym].idx] = q
        open_orders: dict[int, _OpenOrders] = {}
        for sym, oo in acct.open_orders.items():
            if sym not in self.by_symbol:
                raise BookError(f"account {acct.account_id}: unknown symbol {sym!r}")
            if (oo.buy > 0 or oo.sell > 0) and math.isnan(self.prices[self.by_symbol[sym].idx]):
                raise BookError(f"{acct.account_id}: works {sym} but it has no price")
            open_orders[self.by_symbol[sym].idx] = _OpenOrders(oo.buy, oo.sell, oo.buy_reserved)
        new = _Account(
            account_id=acct.account_id,
            cash_account=acct.account_type is AccountType.CASH,
            mandate=mandate,
            net_liq=acct.net_liq,
            cash=acct.cash,
            settled_cash=acct.settled_cash,
            pending_withdrawals=acct.pending_withdrawals,
            reserved_cash=acct.reserved_cash,
            positions=dict(sorted(positions.items())),
            open_orders=open_orders,
            strategies=set(acct.strategies),
            restricted_symbols=set(mandate.restricted_symbols),
            restricted_sectors=set(mandate.restricted_sectors),
        )
        old_i = self.account_idx.get(acct.account_id)
        if old_i is not None:
            old = self.accounts[old_i]
            for k, q in old.positions.items():
                self.firm_pos[k] -= q
            for k, o in old.open_orders.items():
                self.firm_work[k] -= o.buy - o.sell
            self.accounts[old_i] = new
        else:
            self.account_idx[acct.account_id] = len(self.accounts)
            self.accounts.append(new)
        for k, q in new.positions.items():
            self.firm_pos[k] += q
        for k, o in new.open_orders.items():
            self.firm_work[k] += o.buy - o.sell

    def upsert_account(self, acct: Account) -> None:
        self._upsert_account(acct)
        self.brokers[acct.account_id] = acct.broker

    def update_prices(self, prices: dict[str, float]) -> None:
        """Sets live marks: every one is checked first, so a bad entry changes nothing."""
        for sym, px in prices.items():
            if sym not in self.by_symbol:
                raise OrderError(f"price for unknown symbol {sym!r}", ("prices", sym))
            if not (px > 0.0 and math.isfinite(px)):
                raise OrderError(f"price for {sym} must be a positive number, got {px!r}",
                                 ("prices", sym))
        for sym, px in prices.items():
            ins = self.by_symbol[sym]
            self.prices[ins.idx] = px
            for acct in self.accounts:
                oo = acct.open_orders.get(ins.idx)
                if ins.idx in acct.positions or (oo is not None and (oo.buy or oo.sell)):
                    acct.fresh = False

    def set_kill_switch(self, mode: KillSwitch) -> None:
        self.kill_switch = KillSwitch(mode)

    def apply_fill(self, account_id: str, symbol: str, side: Side, quantity: int,
                   price: float) -> None:
        acct = self._account(account_id)
        ins = self._instrument(symbol)
        if not 1 <= quantity <= MAX_QUANTITY or not (price > 0.0 and math.isfinite(price)):
            raise OrderError(f"fill quantity must be from 1 to {MAX_QUANTITY} and price positive")
        s = Side(side).sign
        k = ins.idx
        if math.isnan(self.prices[k]):
            self.prices[k] = price
        self._move_position(acct, k, s * quantity)
        notional = quantity * price
        if s > 0:
            acct.cash -= notional
            if acct.cash_account:
                acct.settled_cash -= notional
        else:
            acct.cash += notional
        self._release(acct, k, Side(side), quantity)

    def _release(self, acct: _Account, k: int, side: Side, quantity: int) -> None:
        """Takes up to ``quantity`` off the working quantity, with its share of reserved cash."""
        oo = acct.open_orders.get(k)
        if oo is None:
            return
        if side is Side.BUY and oo.buy > 0:
            take = quantity if quantity < oo.buy else oo.buy
            release = oo.buy_reserved * take / oo.buy
            oo.buy -= take
            oo.buy_reserved -= release
            acct.reserved_cash -= release
            if acct.reserved_cash < 0.0:
                acct.reserved_cash = 0.0
            self.firm_work[k] -= take
            acct.fresh = False
        elif side is Side.SELL and oo.sell > 0:
            take = quantity if quantity < oo.sell else oo.sell
            oo.sell -= take
            self.firm_work[k] += take
            acct.fresh = False

    def release(self, account_id: str, symbol: str, side: Side, quantity: int) -> None:
        """Release working quantity that will not fill (cancelled or expired child orders)."""
        acct = self._account(account_id)
        k = self._instrument(symbol).idx
        if not 1 <= quantity <= MAX_QUANTITY:
            raise OrderError(f"release quantity must be from 1 to {MAX_QUANTITY}")
        self._release(acct, k, Side(side), quantity)

    def position(self, account_id: str, symbol: str) -> int:
        return self._account(account_id).positions.get(self._instrument(symbol).idx, 0)

    def _account(self, account_id: str) -> _Account:
        i = self.account_idx.get(account_id)
        if i is None:
            raise OrderError(f"unknown account {account_id!r}")
        return self.accounts[i]

    def _instrument(self, symbol: str) -> _Instrument:
        ins = self.by_symbol.get(symbol)
        if ins is None:
            raise OrderError(f"unknown symbol {symbol!r}")
        return ins

    # -------------------------------------------------------------------- exposure measures

    def _refresh_exposures(self, accounts: list[int]) -> None:
        n_sectors = len(self.sector_ids)
        for i in accounts:
            acct = self.accounts[i]
            if acct.fresh:
                continue
            sectors = [0.0] * n_sectors
            gross = 0.0
            gross_pos = 0.0
            for k in sorted(set(acct.positions) | set(acct.open_orders)):
                q = acct.positions.get(k, 0)
                oo = acct.open_orders.get(k)
                b, s = (oo.buy, oo.sell) if oo is not None else (0, 0)
                if q == 0 and b == 0 and s == 0:
                    continue
                mark = self.prices[k]
                v = _worst_case(q, b, s) * mark
                gross += v
                gross_pos += abs(q) * mark
                sectors[self.instruments[k].sector_idx] += v
            acct.gross = gross
            acct.gross_pos = gross_pos
            acct.sector_gross = sectors
            acct.fresh = True

    def _account_exposure(self, acct: _Account, ins: _Instrument, px: float
                          ) -> tuple[float, float, float]:
        """Other symbols' gross, their gross in the order's sector (working orders counted as
        filled, the larger way), and their positions' gross alone, at marks.

        The account's totals less the symbol's own part (totals must be fresh).
        """
        pos = acct.positions.get(ins.idx, 0)
        oo = acct.open_orders.get(ins.idx)
        b, s = (oo.buy, oo.sell) if oo is not None else (0, 0)
        own, own_pos = 0.0, 0.0
        if pos != 0 or b != 0 or s != 0:
            mark = self.prices[ins.idx]
            own, own_pos = _worst_case(pos, b, s) * mark, abs(pos) * mark
        return (acct.gross - own, acct.sector_gross[ins.sector_idx] - own,
                acct.gross_pos - own_pos)

    def _caps(self, acct: _Account, ins: _Instrument, side: Side, px: float) -> _Caps:
        """Every mandate rule's room for this account in this symbol and side, at price ``px``."""
        m = acct.mandate
        s = side.sign
        pos = acct.positions.get(ins.idx, 0)
        oo = acct.open_orders.get(ins.idx)
        eff = pos + (oo.buy if oo else 0) if s > 0 else pos - (oo.sell if oo else 0)
        reducing = -s * eff if -s * eff > 0 else 0
        e0 = s * eff if s * eff > 0 else 0
        nav = acct.net_liq
        rules: list[_Rule] = []
        if ins.symbol in acct.restricted_symbols:
            rules.append(_Rule(codes.RESTRICTED_SYMBOL, 0.0, 0.0, float(e0), 1.0,
                               RULE_TEXT[codes.RESTRICTED_SYMBOL]))
        if ins.sector in acct.restricted_sectors:
            rules.append(_Rule(codes.RESTRICTED_SECTOR, 0.0, 0.0, float(e0), 1.0,
                               RULE_TEXT[codes.RESTRICTED_SECTOR]))
        if s < 0 and (acct.cash_account or not m.allow_short):
            rules.append(_Rule(codes.SHORT_SALE_NOT_ALLOWED, 0.0, 0.0, float(e0), 1.0,
                               RULE_TEXT[codes.SHORT_SALE_NOT_ALLOWED]))
        if m.max_position_pct is not None:
            limit_sh = m.max_position_pct / 100.0 * nav / px
            rules.append(_Rule(codes.MAX_POSITION_PCT, limit_sh - e0, m.max_position_pct,
                               e0 * px / nav * 100.0, px / nav * 100.0,
                               RULE_TEXT[codes.MAX_POSITION_PCT]))
        if m.max_position_shares is not None:
            rules.append(_Rule(codes.MAX_POSITION_SHARES, float(m.max_position_shares - e0),
                               float(m.max_position_shares), float(e0), 1.0,
                               RULE_TEXT[codes.MAX_POSITION_SHARES]))
        gross_other, sector_other, gross_pos_other = self._account_exposure(acct, ins, px)
        cap_pct = m.sector_caps_pct.get(ins.sector, m.default_sector_cap_pct)
        if cap_pct is not None:
            room = (cap_pct / 100.0 * nav - sector_other) / px - e0
            rules.append(_Rule(codes.SECTOR_CAP, room, cap_pct,
                               (sector_other + e0 * px) / nav * 100.0, px / nav * 100.0,
                               RULE_TEXT[codes.SECTOR_CAP]))
        lev = m.max_gross_leverage
        room = (lev * nav - gross_other) / px - e0
        rules.append(_Rule(codes.GROSS_LEVERAGE, room, lev, (gross_other + e0 * px) / nav,
                           px / nav, RULE_TEXT[codes.GROSS_LEVERAGE]))
        buffer = m.cash_buffer_pct / 100.0 * nav
        if acct.cash_account:
            # a cash account never adds on the sell side (no shorts), so cash binds buys only
            if s > 0:
                funds = (acct.settled_cash - acct.pending_withdrawals - acct.reserved_cash
                         - buffer)
                rules.append(_Rule(codes.SETTLED_CASH, funds / px, funds, 0.0, px,
                                   RULE_TEXT[codes.SETTLED_CASH]))
        else:
            im = REG_T_INITIAL_MARGIN * (gross_pos_other + abs(pos) * px)
            excess = (nav - acct.pending_withdrawals - buffer - im
                      - REG_T_INITIAL_MARGIN * acct.reserved_cash)
            bp = excess / REG_T_INITIAL_MARGIN
            rules.append(_Rule(codes.BUYING_POWER, bp / px, bp, 0.0, px,
                               RULE_TEXT[codes.BUYING_POWER]))
        return _Caps(reducing, rules)

    # ------------------------------------------------------------------------- allocation

    def _eligible(self, order: BlockOrder) -> list[int]:
        if order.accounts is not None:
            out = []
            for a in order.accounts:
                i = self.account_idx.get(a)
                if i is None:
                    raise OrderError(f"order {order.order_id}: accounts: unknown account {a!r}")
                out.append(i)
            return sorted(out)
        return [i for i, a in enumerate(self.accounts) if order.strategy in a.strategies]

    def _weights(self, order: BlockOrder, ins: _Instrument, eligible: list[int], px: float
                 ) -> tuple[list[float], list[int | None]]:
        """Each eligible account's weight, and for some methods an extra cap in shares."""
        method = order.method
        weights: list[float] = []
        extra: list[int | None] = []
        params: dict[str, float] | None = None
        if method is AllocationMethod.RATIOS:
            params = dict(order.ratios or {})
        elif method is AllocationMethod.PERCENT:
            params = dict(order.percents or {})
        elif method is AllocationMethod.SHARES:
            params = {k: float(v) for k, v in (order.shares or {}).items()}
        if params is not None:
            known = {self.accounts[i].account_id for i in eligible}
            for a in params:
                if a not in known:
                    raise OrderError(f"order {order.order_id}: {method.value}: account {a!r} "
                                     f"does not follow strategy {order.strategy!r}")
        for i in eligible:
            acct = self.accounts[i]
            cap: int | None = None
            if method is AllocationMethod.NET_LIQ:
                w = acct.net_liq
            elif method is AllocationMethod.AVAILABLE_EQUITY:
                # the same funds the SETTLED_CASH and BUYING_POWER rules start from
                buffer = acct.mandate.cash_buffer_pct / 100.0 * acct.net_liq
                if acct.cash_account:
                    w = (acct.settled_cash - acct.pending_withdrawals - acct.reserved_cash
                         - buffer)
                else:
                    w = (acct.net_liq - acct.pending_withdrawals - buffer
                         - REG_T_INITIAL_MARGIN * acct.gross_pos
                         - REG_T_INITIAL_MARGIN * acct.reserved_cash)
            elif method is AllocationMethod.EQUAL:
                w = 1.0
            elif params is not None:
                w = params.get(acct.account_id, 0.0)
                if method is AllocationMethod.SHARES:
                    cap = int(w)
            else:  # target weight: the gap between the account's weight and the target
                assert order.target_weight_pct is not None
                s = order.side.sign
                pos = acct.positions.get(ins.idx, 0)
                oo = acct.open_orders.get(ins.idx)
                eff = pos + (oo.buy if oo else 0) if s > 0 else pos - (oo.sell if oo else 0)
                target = order.target_weight_pct / 100.0 * acct.net_liq / px
                w = (target - eff) * s
                cap = _floor_lots(w, ins.lot) * ins.lot if w > 0.0 else 0
            weights.append(w if w > 0.0 else 0.0)
            extra.append(cap)
        return weights, extra

    def _prepare(self, order: BlockOrder, ins: _Instrument, eligible: list[int], px: float
                 ) -> dict[str, Any]:
        """Weights, caps in lots and what bound them, minimum lots: once per block and price."""
        lot = ins.lot
        weights, extra = self._weights(order, ins, eligible, px)
        n = len(eligible)
        caps_lots: list[int] = [0] * n
        # what bound each account: a rule to evaluate at its wanted quantity, or a fixed check
        rules: list[tuple[_Caps, _Rule] | None] = [None] * n
        fixed: list[dict[str, Any] | None] = [None] * n
        min_lots = [0] * n
        total_w = 0.0
        for j, i in enumerate(eligible):
            caps = self._caps(self.accounts[i], ins, order.side, px)
            c = _floor_lots(caps.cap_shares(), lot)
            rule = caps.binding()
            if rule is not None:
                rules[j] = (caps, rule)
            e = extra[j]
            if e is not None and e // lot <= c:
                # the account asks for no more than its own quantity (fixed shares or the gap
                # to its target weight): reaching it is not a limit binding
                c = e // lot
                fixed[j] = {}
            caps_lots[j] = c
            total_w += weights[j]
            mtv = self.accounts[i].mandate.min_trade_value
            if mtv > 0.0:
                min_lots[j] = math.ceil(mtv / (px * lot) - LOT_EPS)
        return {"px": px, "weights": weights, "caps_lots": caps_lots, "rules": rules,
                "fixed": fixed, "min_lots": min_lots, "total_w": total_w}

    def _allocate(self, order: BlockOrder, ins: _Instrument, eligible: list[int],
                  prep: dict[str, Any], q_lots: int | None,
                  forced: dict[int, tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Split ``q_lots`` lots over ``eligible`` accounts under every cap (one pass).

        ``forced`` maps an account position in ``eligible`` to an extra cap in lots (from layer-2
        policy), with the check to report. With ``q_lots`` None (target weight without a
        quantity) every account is offered its whole gap.
        """
        lot = ins.lot
        px = prep["px"]
        weights = prep["weights"]
        rules = prep["rules"]
        min_lots = prep["min_lots"]
        total_w = prep["total_w"]
        n = len(eligible)
        caps_lots = list(prep["caps_lots"])
        fixed = list(prep["fixed"])
        for j, (f_cap, f_check) in forced.items():
            if f_cap <= caps_lots[j]:
                caps_lots[j] = f_cap
                fixed[j] = f_check
        if q_lots is None:
            q_lots = 0
            for j in range(n):
                if weights[j] > 0.0:
                    q_lots += caps_lots[j]
        excluded = [False] * n
        while True:
            wf = _waterfill(q_lots, weights, caps_lots, excluded)
            small = [j for j in range(n) if 0 < wf.qty[j] < min_lots[j]]
            if not small:
                break
            for j in small:
                excluded[j] = True
                mtv = self.accounts[eligible[j]].mandate.min_trade_value
                fixed[j] = _check(codes.MIN_TRADE_SIZE, mtv, wf.qty[j] * lot * px, 0.0,
                                  "below the mandate's minimum trade value")
        lines = []
        for j, i in enumerate(eligible):
            binding: dict[str, Any] | None = None
            if wf.capped[j] or excluded[j]:
                if fixed[j] is not None:
                    binding = fixed[j] or None
                elif rules[j] is not None:
                    caps, rule = rules[j]
                    binding = caps.check_of(rule, wf.want[j] * lot, lot)
            if order.method is AllocationMethod.TARGET_WEIGHT:
                requested = weights[j] / lot  # the account's own gap to its target
            else:
                requested = q_lots * weights[j] / total_w if total_w > 0.0 else 0.0
            lines.append({
                "account_id": self.accounts[i].account_id,
                "weight": weights[j],
                "requested": requested * lot,
                "ideal": wf.ideal[j] * lot,
                "quantity": wf.qty[j] * lot,
                "binding": binding,
            })
        return lines

    # --------------------------------------------------------------------------- risk

    def _firm_measures(self, ins: _Instrument, px: float) -> dict[str, float]:
        """Firm exposure on its net position per instrument, the order's symbol marked at px.

        Totals at marks are summed in instrument order, then the order's instrument is taken
        out at its mark and put back at ``px``.
        """
        gross = 0.0
        net = 0.0
        beta = 0.0
        sectors = [0.0] * len(self.sector_ids)
        for k, filled in enumerate(self.firm_pos):
            q = filled + self.firm_work[k]
            if q == 0:
                continue
            v = q * self.prices[k]
            gross += abs(v)
            net += v
            beta += v * self.instruments[k].beta
            sectors[self.instruments[k].sector_idx] += abs(v)
        sector = sectors[ins.sector_idx]
        q = self.firm_pos[ins.idx] + self.firm_work[ins.idx]
        if q != 0:
            at_mark = q * self.prices[ins.idx]
            at_px = q * px
            gross = gross - abs(at_mark) + abs(at_px)
            net = net - at_mark + at_px
            sector = sector - abs(at_mark) + abs(at_px)
            beta = beta - at_mark * ins.beta + at_px * ins.beta
        nav = 0.0
        for a in self.accounts:
            nav += a.net_liq
        return {"gross": gross, "net": net, "sector": sector, "beta": beta, "nav": nav}

    def _layer1(self, order: BlockOrder, ins: _Instrument, qty: int, as_of: float,
                record: bool) -> list[dict[str, Any]]:
        r = self.risk
        out: list[dict[str, Any]] = []
        s = order.side.sign
        px = order.reference_price
        firm_q = self.firm_pos[ins.idx] + self.firm_work[ins.idx]
        reducing = s * firm_q < 0 and qty <= abs(firm_q)
        if self.kill_switch is KillSwitch.HALTED:
            out.append(_check(codes.KILL_SWITCH_HALTED, None, None, None,
                              "trading is halted by the kill switch"))
        elif self.kill_switch is KillSwitch.REDUCING and not reducing:
            out.append(_check(codes.KILL_SWITCH_REDUCING, float(abs(firm_q)),
                              float(abs(firm_q + s * qty)), None,
                              "kill switch allows only orders that reduce the firm's position"))
        if order.order_id in self.seen_orders:
            out.append(_check(codes.DUPLICATE_ORDER_ID, None, None, None,
                              f"order id {order.order_id} was seen before"))
        if order.journey_id in self.seen_journeys:
            out.append(_check(codes.DUPLICATE_JOURNEY_ID, None, None, None,
                              f"journey id {order.journey_id} was seen before"))
        if r.throttle is not None:
            log = self.throttle_log.setdefault(order.strategy, [])
            lo = as_of - r.throttle.window_s
            while log and log[0] <= lo:
                log.pop(0)
            if len(log) >= r.throttle.max_orders:
                out.append(_check(codes.THROTTLED, float(r.throttle.max_orders),
                                  float(len(log) + 1), None,
                                  f"more than {r.throttle.max_orders} orders in "
                                  f"{r.throttle.window_s:g}s for strategy {order.strategy}"))
            if record:
                log.append(as_of)
        if ins.symbol in r.restricted_symbols:
            out.append(_check(codes.FIRM_RESTRICTED, None, None, None,
                              f"{ins.symbol} is on the firm's restricted list"))
        limit = r.instrument_limits.get(ins.symbol, r.default_instrument_limit)
        chk_px = order.limit_price if order.limit_price is not None else px
        notional = qty * chk_px
        if limit is None:
            out.append(_check(codes.NO_INSTRUMENT_LIMIT, None, None, None,
                              f"no order limit is configured for {ins.symbol}"))
        else:
            if qty > limit.max_quantity:
                out.append(_check(codes.MAX_ORDER_QUANTITY, float(limit.max_quantity),
                                  float(qty), None, "block quantity above the instrument limit"))
            if notional > limit.max_notional:
                out.append(_check(codes.MAX_ORDER_NOTIONAL, limit.max_notional, notional, None,
                                  "block notional above the instrument limit"))
        if order.limit_price is not None:
            dev = abs(order.limit_price - px) / px * 100.0
            if dev > r.price_collar_pct:
                out.append(_check(codes.PRICE_COLLAR, r.price_collar_pct, dev, None,
                                  "limit price outside the collar around the reference price"))
            ticks = order.limit_price / ins.tick
            if abs(ticks - round(ticks)) > 1e-6:
                out.append(_check(codes.PRICE_NOT_ON_TICK, ins.tick, order.limit_price, None,
                                  f"limit price is not a multiple of the tick size {ins.tick:g}"))
        age = as_of - order.reference_time.timestamp()
        if age > r.max_reference_age_s:
            out.append(_check(codes.STALE_REFERENCE_PRICE, r.max_reference_age_s, age, None,
                              f"reference price is {age:.1f}s old"))
        f = self._firm_measures(ins, px)
        old_v = abs(firm_q) * px
        new_v = abs(firm_q + s * qty) * px
        if r.max_gross_exposure is not None:
            after = f["gross"] - old_v + new_v
            # written so that a measure that is not a number fails (closed), never passes
            if not (after <= r.max_gross_exposure or after <= f["gross"]):
                out.append(_check(codes.FIRM_GROSS_EXPOSURE, r.max_gross_exposure, after, None,
                                  "firm gross exposure after the block"))
        if r.max_net_exposure is not None:
            after = f["net"] + s * qty * px
            if not (abs(after) <= r.max_net_exposure or abs(after) <= abs(f["net"])):
                out.append(_check(codes.FIRM_NET_EXPOSURE, r.max_net_exposure, after, None,
                                  "firm net exposure after the block"))
        sector_limit = r.sector_limits_pct.get(ins.sector, r.max_sector_pct)
        if sector_limit is not None and f["nav"] > 0.0:
            after = f["sector"] - old_v + new_v
            pct = after / f["nav"] * 100.0
            if not (pct <= sector_limit or after <= f["sector"]):
                out.append(_check(codes.FIRM_SECTOR_CONCENTRATION, sector_limit, pct, None,
                                  f"firm exposure to sector {ins.sector}, % of firm NAV"))
        if r.max_beta_delta is not None:
            after = f["beta"] + s * qty * px * ins.beta
            if not (abs(after) <= r.max_beta_delta or abs(after) <= abs(f["beta"])):
                out.append(_check(codes.FIRM_BETA_DELTA, r.max_beta_delta, after, None,
                                  "firm beta-weighted net delta after the block"))
        return out

    def _layer2(self, order: BlockOrder, ins: _Instrument, eligible: list[int],
                lines: list[dict[str, Any]], live: float, live_caps: dict[int, int]
                ) -> dict[int, tuple[_Caps, list[dict[str, Any]]]]:
        """Lots that break their account's mandate at the live price, with every broken rule.

        ``live_caps`` keeps each account's cap in lots at the live price across the passes of
        one block (the book does not change between them).
        """
        failing: dict[int, tuple[_Caps, list[dict[str, Any]]]] = {}
        for j, i in enumerate(eligible):
            q = lines[j]["quantity"]
            known = live_caps.get(j)
            if q == 0 or (known is not None and q // ins.lot <= known):
                continue
            caps = self._caps(self.accounts[i], ins, order.side, live)
            live_caps[j] = _floor_lots(caps.cap_shares(), ins.lot)
            if q // ins.lot <= live_caps[j]:
                continue
            broken = []
            for rule in caps.rules:
                allowed = caps.reducing + (rule.e_cap if rule.e_cap > 0.0 else 0.0)
                if q // ins.lot > _floor_lots(allowed, ins.lot):
                    broken.append(caps.check_of(rule, float(q), ins.lot))
            failing[j] = (caps, broken)
        return failing

    # --------------------------------------------------------------------------- the call

    def process(self, order: BlockOrder, as_of: datetime | None = None,
                commit: bool = True) -> dict[str, Any]:
        """Layer 1, allocation and layer 2 for one block; returns the decision as a dict."""
        ins = self._instrument(order.symbol)
        now = (as_of or datetime.now().astimezone()).timestamp()
        lot = ins.lot
        if order.quantity is not None and order.quantity % lot != 0:
            raise OrderError(f"order {order.order_id}: quantity {order.quantity} is not a whole "
                             f"number of lots of {lot}")
        if order.shares is not None:
            for a, q in order.shares.items():
                if q % lot != 0:
                    raise OrderError(f"order {order.order_id}: shares[{a}] = {q} is not a whole "
                                     f"number of lots of {lot}")
        eligible = self._eligible(order)
        self._refresh_exposures(eligible)
        px = order.reference_price
        live = self.prices[ins.idx]
        has_live = not math.isnan(live)
        q_lots = None if order.quantity is None else order.quantity // lot
        decision: dict[str, Any] = {
            "order_id": order.order_id, "journey_id": order.journey_id,
            "strategy": order.strategy, "symbol": order.symbol, "side": order.side.value,
            "status": "rejected", "stage": None, "reference_price": px,
            "live_price": live if has_live else None, "requested_quantity": 0,
            "placed_quantity": 0, "unplaced_quantity": 0, "l1_breaches": [],
            "allocation_breaches": [], "lines": [],
        }
        prep = self._prepare(order, ins, eligible, px)
        lines = self._allocate(order, ins, eligible, prep, q_lots, {}) if eligible else []
        requested = order.quantity
        if requested is None:
            requested = sum(line["quantity"] for line in lines)
        decision["requested_quantity"] = requested
        # a preview (commit=False) leaves no trace: ids stay unused, the throttle uncounted
        l1 = self._layer1(order, ins, requested, now, record=commit)
        if commit:
            self.seen_orders.add(order.order_id)
            self.seen_journeys.add(order.journey_id)
        if not eligible:
            l1.append(_check(codes.NO_ELIGIBLE_ACCOUNTS, None, None, None,
                             f"no account follows strategy {order.strategy}"))
        if l1:
            decision["stage"] = "l1"
            decision["l1_breaches"] = l1
            decision["unplaced_quantity"] = requested
            return decision
        first = [line["quantity"] for line in lines]
        breaches: dict[int, list[dict[str, Any]]] = {}
        if not has_live:
            for j, line in enumerate(lines):
                if line["quantity"] > 0:
                    breaches[j] = [_check(codes.NO_LIVE_PRICE, None, None, 0.0,
                                          f"no live price for {ins.symbol}")]
        else:
            forced: dict[int, tuple[int, dict[str, Any]]] = {}
            live_caps: dict[int, int] = {}
            for _ in range(len(eligible) + 1):
                failing = self._layer2(order, ins, eligible, lines, live, live_caps)
                if not failing:
                    break
                for j, (_caps, broken) in failing.items():
                    breaches.setdefault(j, broken)
                if order.on_lot_failure is LotFailurePolicy.REJECT_BLOCK:
                    break
                for j, i in enumerate(eligible):
                    if j in failing:
                        caps, broken = failing[j]
                        if order.on_lot_failure is LotFailurePolicy.DROP_LOTS:
                            forced[j] = (0, _check(
                                codes.L2_DROPPED, 0.0, 0.0, 0.0,
                                "lot dropped: failed layer-2 risk at live price"))
                        else:
                            c = _floor_lots(caps.cap_shares(), lot)
                            prev = forced.get(j)
                            if prev is None or c < prev[0]:
                                # the tightest rule always breaks, so a failing lot names one
                                forced[j] = (c, broken[0])
                        continue
                    # an account that passed keeps what passes at the live price too, so the
                    # quantity re-offered to it cannot make it fail
                    caps = self._caps(self.accounts[i], ins, order.side, live)
                    c = _floor_lots(caps.cap_shares(), lot)
                    live_caps[j] = c
                    prev_cap = forced[j][0] if j in forced else prep["caps_lots"][j]
                    rule = caps.binding()
                    if c < prev_cap and rule is not None:
                        forced[j] = (c, caps.check_of(rule, float(c * lot), lot))
                lines = self._allocate(order, ins, eligible, prep, q_lots, forced)
        rejected = bool(breaches) and (
            order.on_lot_failure is LotFailurePolicy.REJECT_BLOCK or not has_live)
        placed = 0
        out_lines = []
        for j, line in enumerate(lines):
            qty = 0 if rejected else line["quantity"]
            placed += qty
            if rejected and first[j] > 0:
                status = "blocked"
            elif j in breaches:
                status = "dropped" if qty == 0 else "reduced"
            elif line["binding"] is not None:
                status = "capped"
            else:
                status = "ok" if qty > 0 else "zero"
            out_lines.append({
                "account_id": line["account_id"], "weight": line["weight"],
                "requested": line["requested"], "ideal": line["ideal"],
                "allocated": first[j], "quantity": qty,
                "binding": line["binding"], "l2_breaches": breaches.get(j, []),
                "status": status,
            })
        decision["lines"] = out_lines
        decision["placed_quantity"] = placed
        decision["unplaced_quantity"] = requested - placed if requested > placed else 0
        if rejected:
            decision["stage"] = "l2"
            return decision
        if placed == 0:
            # every account is capped at nothing (or its lots failed): no order to send
            decision["stage"] = "allocation"
            decision["allocation_breaches"] = [_check(
                codes.NO_CAPACITY, None, None, 0.0,
                "no account can take any of the block under its mandate")]
            return decision
        decision["status"] = "accepted"
        if commit:
            self._reserve(order, ins, eligible, out_lines, live if has_live else px)
        return decision

    def _reserve(self, order: BlockOrder, ins: _Instrument, eligible: list[int],
                 lines: list[dict[str, Any]], live: float) -> None:
        if order.order_id in self.children:
            raise OrderError(f"block {order.order_id} was committed already", ("order_id",))
        px = order.limit_price if order.limit_price is not None else live
        by_broker: dict[str, list[_FillLine]] = {}
        for j, i in enumerate(eligible):
            q = lines[j]["quantity"]
            if q == 0:
                continue
            acct = self.accounts[i]
            by_broker.setdefault(self.brokers[acct.account_id], []).append(
                _FillLine(acct.account_id, q, acct.mandate.fill_policy.value,
                          acct.mandate.fill_priority))
            oo = acct.open_orders.setdefault(ins.idx, _OpenOrders())
            if order.side is Side.BUY:
                oo.buy += q
                oo.buy_reserved += q * px
                acct.reserved_cash += q * px
            else:
                oo.sell += q
            self.firm_work[ins.idx] += order.side.sign * q
            acct.fresh = False
        ids = []
        for broker in sorted(by_broker):
            child = f"{order.order_id}:{broker}"
            self.blocks[child] = _BlockFills(child, ins.symbol, order.side, by_broker[broker])
            ids.append(child)
        self.children[order.order_id] = ids

    def _child_of(self, order_id: str) -> _BlockFills:
        block = self.blocks.get(order_id)
        if block is not None:
            return block
        ids = self.children.get(order_id)
        if ids is None:
            raise OrderError(f"no open block with order id {order_id!r}", ("order_id",))
        if len(ids) > 1:
            raise OrderError(f"block {order_id!r} went to {len(ids)} brokers: name one of its "
                             f"child orders ({', '.join(ids)})", ("order_id",))
        return self.blocks[ids[0]]

    def execution(self, order_id: str, exec_id: str, quantity: int, price: float
                  ) -> list[dict[str, Any]] | None:
        """Hands an execution of a child order (or of a block at one broker) to its accounts
        and books each account's share."""
        block = self._child_of(order_id)
        fills = block.execution(exec_id, quantity, price)
        if fills is None:
            return None
        k = self.by_symbol[block.symbol].idx
        for f in fills:
            acct = self._account(f["account_id"])
            self._book_allocation(acct, k, block.side, f["quantity"], f["cash_delta"], price)
        return fills

    def close_block(self, order_id: str, reason: str = "done") -> list[dict[str, Any]]:
        """Ends a child order, or every child order of a block still open."""
        if reason not in ("done", "cancelled", "expired"):
            raise OrderError(f"close reason must be done, cancelled or expired, not {reason!r}")
        if order_id in self.children and order_id not in self.blocks:
            open_ = [c for c in self.children[order_id] if self.blocks[c].closed is None]
            if not open_:
                raise OrderError(f"block {order_id} is already closed")
            return [s for c in open_ for s in self._close_child(self.blocks[c], reason)]
        block = self._child_of(order_id)
        if block.closed is not None:
            raise OrderError(f"child order {block.order_id} is already closed")
        return self._close_child(block, reason)

    def _close_child(self, block: _BlockFills, reason: str) -> list[dict[str, Any]]:
        out = block.close(reason)
        k = self.by_symbol[block.symbol].idx
        for s in out:
            if s["shortfall"] > 0:
                self._release(self._account(s["account_id"]), k, block.side, s["shortfall"])
        return out

    def _move_position(self, acct: _Account, k: int, delta: int) -> None:
        """Moves the account's position in ``k`` by ``delta``: account (kept in instrument
        order, its exposure stale) and firm."""
        acct.positions[k] = acct.positions.get(k, 0) + delta
        if acct.positions[k] == 0:
            del acct.positions[k]
        acct.positions = dict(sorted(acct.positions.items()))
        acct.fresh = False
        self.firm_pos[k] += delta

    def _book_allocation(self, acct: _Account, k: int, side: Side, qty: int,
                         cash_delta: float, price: float) -> None:
        if math.isnan(self.prices[k]):
            self.prices[k] = price
        if qty != 0:
            self._move_position(acct, k, side.sign * qty)
        acct.cash += cash_delta
        if acct.cash_account and side is Side.BUY:
            acct.settled_cash += cash_delta
        if qty != 0:
            self._release(acct, k, side, qty)


@dataclass
class _Fill:
    qty: list[int]
    ideal: list[float]
    want: list[float]
    capped: list[bool]


def _waterfill(q_lots: int, weights: list[float], caps: list[int], excluded: list[bool]
               ) -> _Fill:
    """Pro-rata split of ``q_lots`` under per-account caps, then largest-remainder rounding.

    The constrained ideal is found in rounds: every account whose pro-rata share of what is left
    reaches its cap is capped (all at one level) and leaves the pool, until no share reaches a
    cap; after ``MAX_ROUNDS`` rounds the accounts still in play are swept one at a time in order
    of cap/weight.
    Rounding floors every ideal, then hands the lots left over one each to the largest remainders;
    ties go to the larger weight, then to the earlier account in book order.
    """
    n = len(weights)
    out = _Fill([0] * n, [0.0] * n, [0.0] * n, [False] * n)
    live = [j for j in range(n) if not excluded[j] and weights[j] > 0.0]
    cap_total = 0
    for j in live:
        cap_total += caps[j]
    target = q_lots if q_lots < cap_total else cap_total

    def pool_weight(pool: list[int]) -> float:
        # summed afresh over the pool: subtraction can leave zero next to a tiny weight
        w = 0.0
        for j in pool:
            w += weights[j]
        return w

    # rounds of simultaneous capping at one level; after MAX_ROUNDS a sorted sweep
    rem_q = float(q_lots)
    active = list(live)
    rounds = 0
    settled = False
    while rounds < MAX_ROUNDS:
        if not active:
            settled = True
            break
        rem_w = pool_weight(active)
        any_capped = False
        for j in active:
            share = rem_q * weights[j] / rem_w
            if share >= caps[j]:
                out.ideal[j] = float(caps[j])
                out.want[j] = share
                out.capped[j] = True
                any_capped = True
        if not any_capped:
            settled = True
            break
        for j in active:
            if out.capped[j]:
                rem_q -= caps[j]
        active = [j for j in active if not out.capped[j]]
        rounds += 1
    if not settled:
        active = sorted(active, key=lambda j: (caps[j] / weights[j], j))
        suffix = [0.0] * (len(active) + 1)
        for m in range(len(active) - 1, -1, -1):
            suffix[m] = weights[active[m]] + suffix[m + 1]
        k = 0
        while k < len(active):
            j = active[k]
            share = rem_q * weights[j] / suffix[k]
            if share < caps[j]:
                break
            out.ideal[j] = float(caps[j])
            out.want[j] = share
            out.capped[j] = True
            rem_q -= caps[j]
            k += 1
        active = active[k:]
    rem_w = pool_weight(active)
    for j in active:
        share = rem_q * weights[j] / rem_w
        if share < 0.0:
            share = 0.0  # rounding can leave a hair below zero to share
        out.want[j] = share
        out.ideal[j] = share if share < caps[j] else float(caps[j])
    qty = out.qty
    ideal = out.ideal
    floored = 0
    for j in live:
        f = math.floor(ideal[j])
        if f > caps[j]:
            f = caps[j]
        qty[j] = f
        floored += f
    left = target - floored
    if left > 0:
        cand = sorted((j for j in live if qty[j] < caps[j]),
                      key=lambda j: (-(ideal[j] - math.floor(ideal[j])), -weights[j], j))
        while left > 0 and cand:
            nxt = []
            for j in cand:
                if left == 0:
                    break
                qty[j] += 1
                left -= 1
                if qty[j] < caps[j]:
                    nxt.append(j)
            cand = nxt
    elif left < 0:
        cand = sorted((j for j in live if qty[j] > 0),
                      key=lambda j: (ideal[j] - math.floor(ideal[j]), weights[j], -j))
        # one lot each from the smallest remainders, round after round, until the total fits
        while left < 0 and cand:
            for j in cand:
                if left == 0:
                    break
                if qty[j] > 0:
                    qty[j] -= 1
                    left += 1
            cand = [j for j in cand if qty[j] > 0]
    return out


# ------------------------------------------------------------------------------ fills


def apportion(total: int, weights: list[int]) -> list[int]:
    """``total`` units in proportion to integer ``weights``, largest remainder (exact)."""
    out = [0] * len(weights)
    wsum = sum(weights)
    if wsum <= 0 or total <= 0:
        return out
    rems = []
    given = 0
    for j, w in enumerate(weights):
        out[j], r = divmod(total * w, wsum)
        given += out[j]
        rems.append((r, w, j))
    left = total - given
    rems.sort(key=lambda t: (-t[0], -t[1], t[2]))
    for _, _, j in rems:
        if left == 0:
            break
        out[j] += 1
        left -= 1
    return out


@dataclass
class _FillLine:
    account_id: str
    allocated: int
    policy: str
    priority: int
    filled: int = 0
    cost_cents: int = 0


class _BlockFills:
    """The fill state of one block (same rules as ``core_rs/src/fills``)."""

    def __init__(self, order_id: str, symbol: str, side: Side, lines: list[_FillLine]) -> None:
        self.order_id = order_id
        self.symbol = symbol
        self.side = side
        self.lines = lines
        self.cum_qty = 0
        self.cum_notional = 0.0
        self.group_qty = 0
        self.seen: set[str] = set()
        self.closed: str | None = None

    def execution(self, exec_id: str, qty: int, price: float) -> list[dict[str, Any]] | None:
        if exec_id in self.seen:
            return None
        if self.closed is not None:
            raise OrderError(f"block {self.order_id} is closed; execution {exec_id} refused")
        if not 1 <= qty <= MAX_QUANTITY or not (price > 0.0 and math.isfinite(price)):
            raise OrderError(f"execution {exec_id}: quantity and price must be positive")
        allocated = sum(line.allocated for line in self.lines)
        if qty > allocated - self.cum_qty:
            raise OrderError(f"execution {exec_id} overfills block {self.order_id}")
        self.seen.add(exec_id)
        self.cum_qty += qty
        self.cum_notional += qty * price
        delta = [0] * len(self.lines)
        left = qty
        ranked = sorted((j for j, line in enumerate(self.lines) if line.policy == "priority"),
                        key=lambda j: (self.lines[j].priority, j))
        for j in ranked:
            if left == 0:
                break
            room = self.lines[j].allocated - self.lines[j].filled
            take = room if room < left else left
            delta[j] += take
            left -= take
        if left > 0:
            self.group_qty += left
            group = [j for j, line in enumerate(self.lines) if line.policy != "priority"]
            self._quota(group, left, delta)
        for j, d in enumerate(delta):
            self.lines[j].filled += d
        return self._true_up(delta)

    def _quota(self, group: list[int], q: int, delta: list[int]) -> None:
        a = sum(self.lines[j].allocated for j in group)
        if a == 0:
            return
        c = self.group_qty
        given = 0
        below = []
        for j in group:
            line = self.lines[j]
            exact = c * line.allocated
            floor = exact // a
            target = line.filled if line.filled > floor else floor
            delta[j] += target - line.filled
            given += target - line.filled
            gap = exact - target * a
            if gap > 0 and target < line.allocated:
                below.append((gap, line.allocated, j))
        left = q - given
        if left < 0:
            raise AssertionError("quota gave more than the execution")  # the invariant broke
        below.sort(key=lambda t: (-t[0], -t[1], t[2]))
        for _, _, j in below:
            if left <= 0:
                break
            delta[j] += 1
            left -= 1
        for j in group:
            while left > 0 and self.lines[j].filled + delta[j] < self.lines[j].allocated:
                delta[j] += 1
                left -= 1

    def _true_up(self, delta: list[int]) -> list[dict[str, Any]]:
        total_cents = math.floor(self.cum_notional * 100.0 + 0.5)
        cents = apportion(total_cents, [line.filled for line in self.lines])
        avg = self.cum_notional / self.cum_qty
        sign = -1.0 if self.side is Side.BUY else 1.0
        out = []
        for j, line in enumerate(self.lines):
            change = cents[j] - line.cost_cents
            if delta[j] == 0 and change == 0:
                continue
            line.cost_cents = cents[j]
            out.append({"account_id": line.account_id, "quantity": delta[j],
                        "filled": line.filled, "avg_price": avg,
                        "cash_delta": sign * change / 100.0})
        return out

    def close(self, reason: str) -> list[dict[str, Any]]:
        self.closed = reason
        return [{"account_id": line.account_id, "allocated": line.allocated,
                 "filled": line.filled, "shortfall": line.allocated - line.filled,
                 "carried": line.policy == "as_allocated" and line.allocated > line.filled}
                for line in self.lines]
