"""Hypothesis strategies for random books and block orders, and an independent mandate checker.

The checker measures a trade's outcome directly on the account's post-trade state, written
apart from both engines, so that "no mandate limit is broken" is not the engines checking
themselves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from mats.models import Account, BlockOrder, Book

T0 = dt.datetime(2026, 11, 25, 14, 30, tzinfo=dt.UTC)
SECTORS = ["Tech", "Energy", "Health"]
METHODS = ["net_liq", "available_equity", "equal", "ratios", "percent", "shares",
           "target_weight"]


def price() -> st.SearchStrategy[float]:
    return st.integers(100, 50_000).map(lambda c: c / 100)


@st.composite
def books(draw: st.DrawFn, max_accounts: int = 10) -> Book:
    n_ins = draw(st.integers(2, 6))
    instruments = []
    prices = {}
    for k in range(n_ins):
        sym = f"S{k}"
        instruments.append({
            "symbol": sym,
            "sector": draw(st.sampled_from(SECTORS)),
            "lot_size": draw(st.sampled_from([1, 1, 10, 100])),
            "beta": draw(st.sampled_from([0.5, 1.0, 1.3])),
        })
        prices[sym] = draw(price())
    n_m = draw(st.integers(1, 3))
    mandates = []
    for m in range(n_m):
        mandates.append({
            "mandate_id": f"M{m}",
            "max_position_pct": draw(st.one_of(st.none(), st.sampled_from([2.0, 5.0, 10.0, 25.0]))),
            "max_position_shares": draw(st.one_of(st.none(), st.integers(0, 5_000))),
            "sector_caps_pct": draw(st.dictionaries(st.sampled_from(SECTORS),
                                                    st.sampled_from([10.0, 30.0, 60.0]),
                                                    max_size=2)),
            "default_sector_cap_pct": draw(st.one_of(st.none(), st.just(50.0))),
            "max_gross_leverage": draw(st.sampled_from([1.0, 1.5, 2.0])),
            "allow_short": draw(st.booleans()),
            "restricted_symbols": draw(st.lists(st.sampled_from(list(prices)), max_size=1)),
            "restricted_sectors": draw(st.lists(st.sampled_from(SECTORS), max_size=1)),
            "min_trade_value": draw(st.sampled_from([0.0, 0.0, 500.0, 5_000.0])),
            "cash_buffer_pct": draw(st.sampled_from([0.0, 1.0, 3.0])),
        })
    n_acc = draw(st.integers(1, max_accounts))
    accounts = []
    for a in range(n_acc):
        cash_acct = draw(st.booleans())
        nav = float(draw(st.integers(5_000, 5_000_000)))
        positions = {}
        for sym in draw(st.lists(st.sampled_from(list(prices)), max_size=3, unique=True)):
            q = draw(st.integers(-2_000 if not cash_acct else 1, 2_000))
            if q:
                positions[sym] = q
        accounts.append({
            "account_id": f"A{a:02d}",
            "account_type": "cash" if cash_acct else "margin",
            "mandate_id": f"M{draw(st.integers(0, n_m - 1))}",
            "net_liq": nav,
            "cash": nav * draw(st.sampled_from([0.0, 0.2, 0.6])),
            "settled_cash": nav * draw(st.sampled_from([0.0, 0.1, 0.5])),
            "pending_withdrawals": draw(st.sampled_from([0.0, 0.0, 1_000.0])),
            "positions": positions,
            "strategies": draw(st.lists(st.sampled_from(["g", "v"]), min_size=1, max_size=2,
                                        unique=True)),
        })
    risk = {
        "default_instrument_limit": {"max_quantity": 1_000_000, "max_notional": 1e12},
        "max_reference_age_s": 30.0,
        "price_collar_pct": 5.0,
        "max_gross_exposure": draw(st.one_of(st.none(), st.just(5e8))),
        "max_sector_pct": draw(st.one_of(st.none(), st.just(80.0))),
        "max_beta_delta": draw(st.one_of(st.none(), st.just(1e8))),
        "throttle": draw(st.one_of(st.none(), st.just({"max_orders": 3, "window_s": 10.0}))),
    }
    return Book.model_validate({"instruments": instruments, "mandates": mandates,
                                "accounts": accounts, "risk": risk, "prices": prices})


@st.composite
def orders(draw: st.DrawFn, book: Book, n: int) -> BlockOrder:
    ins = draw(st.sampled_from(book.instruments))
    strategy = draw(st.sampled_from(["g", "v"]))
    followers = [a.account_id for a in book.accounts if strategy in a.strategies]
    method = draw(st.sampled_from(METHODS))
    lot = ins.lot_size
    px = book.prices[ins.symbol] * draw(st.sampled_from([1.0, 1.0, 0.85, 0.9, 1.1]))
    px = round(px, 2)
    body: dict[str, Any] = {
        "order_id": f"O{n}", "journey_id": f"J{n}", "strategy": strategy,
        "symbol": ins.symbol, "side": draw(st.sampled_from(["buy", "sell"])),
        "reference_price": px,
        "reference_time": T0 + dt.timedelta(seconds=n - draw(st.sampled_from([1, 1, 1, 1, 60]))),
        "method": method,
        "on_lot_failure": draw(st.sampled_from(["reject_block", "drop_lots", "reduce_lots"])),
    }
    if draw(st.booleans()):
        body["limit_price"] = round(px * draw(st.sampled_from([1.0, 1.01, 0.99, 1.2])), 2)
    if method == "target_weight":
        body["target_weight_pct"] = draw(st.sampled_from([0.0, 1.0, 5.0, 12.0]))
    elif method == "shares":
        shares = {a: lot * draw(st.integers(0, 50)) for a in followers}
        if not any(shares.values()) and followers:
            shares[followers[0]] = lot
        body["shares"] = shares
        body["quantity"] = sum(shares.values()) or lot
    else:
        body["quantity"] = lot * draw(st.integers(1, 400))
        if method == "ratios":
            body["ratios"] = {a: float(draw(st.integers(0, 5))) for a in followers}
            if not any(body["ratios"].values()) and followers:
                body["ratios"][followers[0]] = 1.0
        elif method == "percent":
            if followers:
                cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(followers) - 1,
                                            max_size=len(followers) - 1)))
                bounds = [0, *cuts, 100]
                body["percents"] = {a: float(bounds[i + 1] - bounds[i])
                                    for i, a in enumerate(followers)}
            else:
                body["percents"] = {}
    if method in ("ratios", "percent", "shares") and not followers:
        body["method"] = "equal"
        body.pop("ratios", None)
        body.pop("percents", None)
        body.pop("shares", None)
        body.setdefault("quantity", lot)
    return BlockOrder.model_validate(body)


@dataclass
class AccountView:
    """Post-trade measures of one account, computed from first principles."""

    account: Account
    prices: dict[str, float]
    sectors: dict[str, str]


def mandate_breaches(book: Book, account: Account, symbol: str, side: str, qty: int,
                     px: float, open_buy: int = 0, open_sell: int = 0,
                     reserved: float = 0.0) -> list[str]:
    """Which mandate limits the account would break after trading ``qty`` at ``px``.

    A limit counts as broken only if the trade makes the measure worse and ends above the
    limit (reducing trades are always allowed). Open orders count as if filled.
    """
    if qty == 0:
        return []
    mandate = next(m for m in book.mandates if m.mandate_id == account.mandate_id)
    sectors = {i.symbol: i.sector for i in book.instruments}
    s = 1 if side == "buy" else -1
    before = dict(account.positions)
    eff = before.get(symbol, 0) + (open_buy if s > 0 else -open_sell)
    after_pos = eff + s * qty
    marks = dict(book.prices)
    marks[symbol] = px
    nav = account.net_liq
    tol = 1e-6
    out = []
    grows = abs(after_pos) > abs(eff) and (after_pos * eff >= 0 or abs(after_pos) > 0)
    added = max(0, abs(after_pos) - (abs(eff) if after_pos * eff > 0 else 0))
    if added == 0:
        return []
    if symbol in mandate.restricted_symbols:
        out.append("RESTRICTED_SYMBOL")
    if sectors[symbol] in mandate.restricted_sectors:
        out.append("RESTRICTED_SECTOR")
    if after_pos < 0 and (account.account_type == "cash" or not mandate.allow_short):
        out.append("SHORT_SALE_NOT_ALLOWED")
    if mandate.max_position_pct is not None:
        if abs(after_pos) * px / nav * 100 > mandate.max_position_pct + tol:
            out.append("MAX_POSITION_PCT")
    if mandate.max_position_shares is not None and abs(after_pos) > mandate.max_position_shares:
        out.append("MAX_POSITION_SHARES")
    held = {k: v for k, v in before.items() if k != symbol}
    cap = mandate.sector_caps_pct.get(sectors[symbol], mandate.default_sector_cap_pct)
    if cap is not None:
        sector_val = sum(abs(q) * marks[k] for k, q in held.items()
                         if sectors[k] == sectors[symbol]) + abs(after_pos) * px
        if sector_val / nav * 100 > cap + tol:
            out.append("SECTOR_CAP")
    gross = sum(abs(q) * marks[k] for k, q in held.items()) + abs(after_pos) * px
    if gross / nav > mandate.max_gross_leverage + tol:
        out.append("GROSS_LEVERAGE")
    cost = added * px
    buffer = mandate.cash_buffer_pct / 100 * nav
    if account.account_type == "cash":
        if cost > account.settled_cash - account.pending_withdrawals - reserved - buffer + tol:
            out.append("SETTLED_CASH")
    else:
        im_before = 0.5 * (gross - abs(after_pos) * px + abs(before.get(symbol, 0)) * px)
        excess = nav - account.pending_withdrawals - buffer - im_before - 0.5 * reserved
        if cost > 2 * excess + tol:
            out.append("BUYING_POWER")
    del grows
    return out
