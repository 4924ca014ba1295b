"""Deterministic generator of the sample book and trading day shipped in ``data/sample/``.

``python -m mats.sample OUT_DIR [--seed N]`` writes a book folder (layout in :mod:`mats.config`)
and one trading day over it:

``instruments.csv``, ``prices.csv``, ``mandates.yaml``, ``accounts.json``, ``risk.yaml``
    About 300 instruments in the 11 GICS sectors, 7 mandates, 50 cash and margin accounts
    following the ``growth``, ``value`` and ``income`` strategies, and firm limits.
``day.yaml``, ``orders.json``
    The decision time ``as_of`` and about 120 block orders of that day, using every allocation
    method. Most are ordinary; a few are there to be refused for a real reason (stale reference,
    price collar, firm-restricted symbol, duplicate order id, instrument limit, a sell beyond the
    followers' holdings), and two carry a reference price well below the live mark, so that the
    allocation made at the reference breaks concentration limits at the live price (layer 2).
``request.json``
    A small ``mats allocate`` request over this book (``"book": "."``).

All randomness comes from one ``random.Random(seed)``; iteration never depends on set or hash
order, so a seed always gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from mats.models import Account, AllocateRequest, BlockOrder, Mandate, RiskConfig

SEED = 20250613
AS_OF = datetime(2025, 6, 13, 14, 30, tzinfo=UTC)
N_ACCOUNTS = 50
N_MARGIN = 20
ORDERS_PER_STRATEGY = 37
MAX_REFERENCE_AGE_S = 30.0
DEFAULT_LIMIT = {"max_quantity": 150_000, "max_notional": 15_000_000.0}

STRATEGIES = ("growth", "value", "income")
ORDER_PREFIX = {"growth": "GRO", "value": "VAL", "income": "INC"}

IT, HC, FIN, DISC, COMM, IND, STAP, ENE, UTIL, RE, MAT = (
    "Information Technology", "Health Care", "Financials", "Consumer Discretionary",
    "Communication Services", "Industrials", "Consumer Staples", "Energy", "Utilities",
    "Real Estate", "Materials",
)

# sector: (instruments, beta low, beta high, median price)
SECTORS: dict[str, tuple[int, float, float, float]] = {
    IT: (40, 1.0, 1.8, 160.0),
    HC: (36, 0.7, 1.2, 110.0),
    FIN: (38, 0.9, 1.4, 70.0),
    DISC: (32, 1.0, 1.6, 90.0),
    COMM: (18, 0.9, 1.5, 80.0),
    IND: (38, 0.8, 1.3, 120.0),
    STAP: (24, 0.5, 0.9, 65.0),
    ENE: (22, 0.9, 1.5, 55.0),
    UTIL: (16, 0.5, 0.8, 60.0),
    RE: (18, 0.6, 1.1, 45.0),
    MAT: (18, 0.8, 1.3, 75.0),
}

# How much each strategy's model list leans to each sector (others: the default weight).
TILT: dict[str, tuple[dict[str, float], float]] = {
    "growth": ({IT: 4.0, COMM: 2.5, DISC: 2.5, HC: 2.0, IND: 1.0}, 0.3),
    "value": ({FIN: 3.5, ENE: 2.5, IND: 2.0, MAT: 2.0, HC: 1.0, STAP: 1.0}, 0.4),
    "income": ({UTIL: 4.0, RE: 3.5, STAP: 3.0, FIN: 1.5, ENE: 1.0}, 0.2),
}

# Order of the allocation methods in each strategy's ordinary orders (shuffled per strategy).
METHOD_MIX = (
    ["net_liq"] * 12 + ["available_equity"] * 5 + ["equal"] * 3 + ["ratios"] * 4
    + ["percent"] * 4 + ["shares"] * 4 + ["target_weight"] * 5
)


@dataclass
class _Ins:
    symbol: str
    sector: str
    lot: int
    price: float
    beta: float


@dataclass
class _Acct:
    account_id: str
    account_type: str
    mandate_id: str
    broker: str
    net_liq: float
    strategies: list[str]
    positions: dict[str, int] = field(default_factory=dict)
    cash: float = 0.0
    settled_cash: float = 0.0
    pending_dividends: float = 0.0
    pending_withdrawals: float = 0.0
    open_orders: dict[str, dict[str, float]] = field(default_factory=dict)
    reserved_cash: float = 0.0


def _cents(x: float) -> float:
    return round(x, 2)


def _weighted_sample(rng: random.Random, items: Sequence[str], weights: Sequence[float],
                     k: int) -> list[str]:
    """``k`` distinct items, each drawn with probability proportional to its weight."""
    keyed = sorted(((rng.random() ** (1.0 / w), it) for it, w in zip(items, weights, strict=True)),
                   reverse=True)
    return [it for _, it in keyed[:k]]


class _Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.instruments: list[_Ins] = []
        self.by_symbol: dict[str, _Ins] = {}
        self.models: dict[str, list[str]] = {}
        self.mandates: list[tuple[str, str, dict[str, Any]]] = []
        self.accounts: list[_Acct] = []
        self.risk: dict[str, Any] = {}
        self.orders: list[dict[str, Any]] = []
        self.roles: dict[str, str] = {}  # order_id -> role, for picking request.json orders
        self.journeys = 0
        self.counters: dict[str, int] = {}

    # ------------------------------------------------------------------------ universe

    def universe(self) -> None:
        rng = self.rng
        seen: set[str] = set()
        for sector, (count, b_lo, b_hi, median) in SECTORS.items():
            for _ in range(count):
                while True:
                    k = 3 if rng.random() < 0.45 else 4
                    sym = "".join(rng.choice(string.ascii_uppercase) for _ in range(k))
                    if sym not in seen:
                        break
                seen.add(sym)
                price = min(1500.0, max(4.0, math.exp(rng.gauss(math.log(median), 0.75))))
                # round lots of 100 for low-priced names, as on some venues and for some ADRs
                lot = 100 if price < 40.0 and rng.random() < 0.35 else 1
                ins = _Ins(sym, sector, lot, _cents(price), round(rng.uniform(b_lo, b_hi), 2))
                self.instruments.append(ins)
                self.by_symbol[sym] = ins
        for strategy, (tilt, other) in TILT.items():
            syms = [i.symbol for i in self.instruments]
            weights = [tilt.get(i.sector, other) for i in self.instruments]
            self.models[strategy] = _weighted_sample(rng, syms, weights, 60)

    def pick(self, pool: Sequence[str], *, exclude: Sequence[str] = (),
             where: Callable[[_Ins], bool] | None = None) -> str:
        cands = [s for s in pool
                 if s not in exclude and (where is None or where(self.by_symbol[s]))]
        return self.rng.choice(cands)

    def special_names(self) -> None:
        rng = self.rng
        staples = [i.symbol for i in self.instruments if i.sector == STAP]
        self.tobacco = sorted(rng.sample(staples, 3))
        self.mega = [i.symbol for i in sorted(
            (i for i in self.instruments if i.sector == IT and i.lot == 1),
            key=lambda i: -i.price)[:2]]
        small = [i.symbol for i in self.instruments if i.price < 30.0 and i.lot == 1
                 and i.sector in (IND, MAT, FIN)]
        self.thin = sorted(rng.sample(small, 3))
        self.firm_restricted = sorted(rng.sample(
            [s for s in self.models["growth"] if s not in self.mega], 2))
        self.insider = self.pick(self.models["growth"], exclude=self.mega + self.firm_restricted)
        taken = self.mega + self.thin + self.firm_restricted + [self.insider] + self.tobacco
        self.story = [
            self.pick(self.models["growth"], exclude=taken,
                      where=lambda i: i.sector == IT and i.lot == 1 and 80 < i.price < 400),
        ]
        self.story.append(self.pick(
            self.models["value"], exclude=taken + self.story,
            where=lambda i: i.sector in (FIN, IND, MAT) and i.lot == 1 and 50 < i.price < 400))
        self.no_trade = taken + self.story  # kept out of the ordinary orders

    # ------------------------------------------------------------------------ mandates

    def make_mandates(self) -> None:
        self.mandates = [
            ("growth_cash", "Long-only growth in cash accounts", {
                "max_position_pct": 8.0,
                "sector_caps_pct": {IT: 40.0, COMM: 30.0},
                "default_sector_cap_pct": 30.0,
                "max_gross_leverage": 1.0,
                "min_trade_value": 1000.0,
                "cash_buffer_pct": 2.0,
            }),
            ("growth_margin", "Growth on margin, long only", {
                "max_position_pct": 10.0,
                "sector_caps_pct": {IT: 40.0},
                "default_sector_cap_pct": 35.0,
                "max_gross_leverage": 1.5,
                "min_trade_value": 2500.0,
                "cash_buffer_pct": 1.0,
            }),
            ("value_cash", "Long-only value in cash accounts", {
                "max_position_pct": 6.0,
                "sector_caps_pct": {FIN: 35.0},
                "default_sector_cap_pct": 25.0,
                "max_gross_leverage": 1.0,
                "min_trade_value": 1000.0,
                "cash_buffer_pct": 1.5,
            }),
            ("value_long_short", "Value long/short on margin: shorts allowed, up to 2x gross", {
                "max_position_pct": 7.0,
                "default_sector_cap_pct": 30.0,
                "max_gross_leverage": 2.0,
                "allow_short": True,
                "min_trade_value": 5000.0,
                "cash_buffer_pct": 1.0,
            }),
            ("income_cash", "Dividend income, cash accounts, larger cash buffer", {
                "max_position_pct": 5.0,
                "sector_caps_pct": {UTIL: 40.0, RE: 35.0, STAP: 35.0},
                "default_sector_cap_pct": 25.0,
                "max_gross_leverage": 1.0,
                "min_trade_value": 500.0,
                "cash_buffer_pct": 3.0,
            }),
            ("esg_cash", "ESG screen: no Energy sector, no tobacco names", {
                "max_position_pct": 6.0,
                "default_sector_cap_pct": 30.0,
                "max_gross_leverage": 1.0,
                "restricted_sectors": [ENE],
                "restricted_symbols": list(self.tobacco),
                "min_trade_value": 1000.0,
                "cash_buffer_pct": 2.0,
            }),
            ("insider_margin", "An executive's account: own company's stock restricted, "
             "first in line for partial fills", {
                "max_position_pct": 8.0,
                "max_position_shares": 25000,
                "default_sector_cap_pct": 35.0,
                "max_gross_leverage": 1.3,
                "restricted_symbols": [self.insider],
                "min_trade_value": 2500.0,
                "cash_buffer_pct": 1.0,
                "fill_policy": "priority",
                "fill_priority": 1,
            }),
        ]
        for mid, _, fields in self.mandates:
            Mandate.model_validate({**fields, "mandate_id": mid})

    def mandate(self, mid: str) -> dict[str, Any]:
        return next(f for m, _, f in self.mandates if m == mid)

    # ------------------------------------------------------------------------ accounts

    def make_accounts(self) -> None:
        rng = self.rng
        lo, hi = math.log(50_000.0), math.log(20_000_000.0)
        # stratified, so the sample always spans the whole range of account sizes
        navs = [math.exp(lo + (i + rng.random()) / N_ACCOUNTS * (hi - lo))
                for i in range(N_ACCOUNTS)]
        rng.shuffle(navs)
        types = ["margin"] * N_MARGIN + ["cash"] * (N_ACCOUNTS - N_MARGIN)
        rng.shuffle(types)
        margin_idx = [i for i, t in enumerate(types) if t == "margin"]
        insiders = margin_idx[:2]
        for i in range(N_ACCOUNTS):
            kind = types[i]
            if kind == "cash":
                primary = rng.choices(STRATEGIES, weights=(0.4, 0.3, 0.3))[0]
            else:
                primary = rng.choices(("growth", "value"), weights=(0.55, 0.45))[0]
            strategies = [primary]
            if rng.random() < 0.3:
                strategies.append(rng.choice([s for s in STRATEGIES if s != primary]))
            if i in insiders:
                mid = "insider_margin"
                strategies = ["growth"]
            elif kind == "margin":
                mid = "growth_margin" if primary == "growth" else "value_long_short"
            elif primary != "value" and rng.random() < 0.25:
                mid = "esg_cash"
            else:
                mid = f"{primary}_cash"
            broker = rng.choice(("prime-a", "prime-b")) if kind == "margin" \
                else rng.choice(("retail-a", "retail-b"))
            acct = _Acct(f"ACC-{i + 1:03d}", kind, mid, broker, _cents(navs[i]), strategies)
            self.fill_account(acct)
            self.accounts.append(acct)

    def fill_account(self, a: _Acct) -> None:
        """Positions, cash and pending flows of an account that starts the day within mandate."""
        rng = self.rng
        m = self.mandate(a.mandate_id)
        restricted_syms = m.get("restricted_symbols", [])
        restricted_sectors = m.get("restricted_sectors", [])
        pool: list[str] = []
        for s in a.strategies:
            pool += [x for x in self.models[s] if x not in pool]
        pool = [x for x in pool if x not in restricted_syms
                and self.by_symbol[x].sector not in restricted_sectors]
        n = min(len(pool), rng.randint(10, 30))
        names = rng.sample(pool, n)
        invested = rng.uniform(0.85, 0.96) if a.account_type == "cash" \
            else rng.uniform(0.95, min(1.4, 0.9 * m["max_gross_leverage"]))
        raw = [rng.uniform(0.4, 1.6) for _ in names]
        total = sum(raw)
        max_w = 0.8 * m["max_position_pct"] / 100.0
        weights = {s: min(max_w, w / total * invested) for s, w in zip(names, raw, strict=True)}
        for sector in SECTORS:
            cap = m.get("sector_caps_pct", {}).get(sector, m.get("default_sector_cap_pct"))
            if cap is None:
                continue
            in_sector = [s for s in names if self.by_symbol[s].sector == sector]
            used = sum(weights[s] for s in in_sector)
            room = 0.85 * cap / 100.0
            if used > room:
                for s in in_sector:
                    weights[s] *= room / used
        shorts: list[str] = []
        if m.get("allow_short"):
            shorts = rng.sample([x for x in self.models["value"] if x not in names], 2)
        nav = a.net_liq
        value = 0.0
        for s in [x for x in (i.symbol for i in self.instruments) if x in names or x in shorts]:
            ins = self.by_symbol[s]
            w = -rng.uniform(0.02, 0.04) if s in shorts else weights[s]
            qty = int(abs(w) * nav / ins.price / ins.lot) * ins.lot
            if qty == 0:
                continue
            qty = -qty if w < 0 else qty
            a.positions[s] = qty
            value += qty * ins.price
        a.cash = _cents(nav - value)
        unsettled = rng.uniform(0.0, 0.015) * nav if rng.random() < 0.5 else 0.0
        a.settled_cash = _cents(a.cash - unsettled)
        if rng.random() < 0.15:
            a.pending_withdrawals = float(round(rng.uniform(0.005, 0.03) * nav, -2))
        if "income" in a.strategies:
            a.pending_dividends = _cents(rng.uniform(0.0, 0.002) * nav)
        if rng.random() < 0.12:
            s = rng.choice([x for x in pool if x not in a.positions])
            ins = self.by_symbol[s]
            qty = max(1, int(0.005 * nav / ins.price / ins.lot)) * ins.lot
            reserved = _cents(qty * ins.price)
            a.open_orders[s] = {"buy": qty, "buy_reserved": reserved}
            a.reserved_cash = reserved

    def account_dicts(self) -> list[dict[str, Any]]:
        out = []
        for a in self.accounts:
            d: dict[str, Any] = {
                "account_id": a.account_id,
                "account_type": a.account_type,
                "mandate_id": a.mandate_id,
                "broker": a.broker,
                "strategies": a.strategies,
                "net_liq": a.net_liq,
                "cash": a.cash,
                "settled_cash": a.settled_cash,
            }
            if a.pending_dividends:
                d["pending_dividends"] = a.pending_dividends
            if a.pending_withdrawals:
                d["pending_withdrawals"] = a.pending_withdrawals
            d["positions"] = a.positions
            if a.open_orders:
                d["open_orders"] = a.open_orders
                d["reserved_cash"] = a.reserved_cash
            Account.model_validate(d)
            out.append(d)
        return out

    # ------------------------------------------------------------------------ firm limits

    def make_risk(self) -> None:
        gross = net = beta = nav = 0.0
        sector: dict[str, float] = {}
        for a in self.accounts:
            nav += a.net_liq
            for s, q in a.positions.items():
                ins = self.by_symbol[s]
                v = q * ins.price
                gross += abs(v)
                net += v
                beta += v * ins.beta
                sector[ins.sector] = sector.get(ins.sector, 0.0) + abs(v)

        def above(x: float, factor: float) -> float:
            return float(math.ceil(abs(x) * factor / 1e6) * 1_000_000)

        top_sector = max(v / nav * 100.0 for v in sector.values())
        energy = sector.get(ENE, 0.0) / nav * 100.0
        limits: dict[str, Any] = {}
        for s in self.mega:
            limits[s] = {"max_quantity": 400_000, "max_notional": 40_000_000.0}
        for s in self.thin:
            limits[s] = {"max_quantity": 5_000, "max_notional": 150_000.0}
        self.risk = {
            "default_instrument_limit": dict(DEFAULT_LIMIT),
            "instrument_limits": limits,
            "price_collar_pct": 5.0,
            "max_reference_age_s": MAX_REFERENCE_AGE_S,
            "restricted_symbols": list(self.firm_restricted),
            "max_gross_exposure": above(gross, 1.6),
            "max_net_exposure": above(net, 1.6),
            "max_sector_pct": float(max(40, math.ceil(top_sector + 8))),
            "sector_limits_pct": {ENE: float(max(15, math.ceil(energy + 5)))},
            "max_beta_delta": above(beta, 1.6),
            "throttle": {"max_orders": 60, "window_s": 1.0},
            "kill_switch": "normal",
        }
        RiskConfig.model_validate(self.risk)

    # ------------------------------------------------------------------------ orders

    def followers(self, strategy: str) -> list[_Acct]:
        return [a for a in self.accounts if strategy in a.strategies]

    def holdings(self, strategy: str, symbol: str) -> int:
        return sum(max(0, a.positions.get(symbol, 0)) for a in self.followers(strategy))

    def ref_time(self, age_s: float) -> str:
        return (AS_OF - timedelta(seconds=round(age_s, 3))).isoformat(timespec="milliseconds")

    def new_order(self, strategy: str, symbol: str, side: str, *, order_id: str | None = None,
                  reference: float | None = None, age_s: float | None = None
                  ) -> dict[str, Any]:
        rng = self.rng
        self.journeys += 1
        live = self.by_symbol[symbol].price
        if reference is None:
            reference = _cents(live * (1.0 + rng.uniform(-0.0015, 0.0015)))
        if order_id is None:
            n = self.counters[strategy] = self.counters.get(strategy, 0) + 1
            order_id = f"{ORDER_PREFIX[strategy]}-{n:04d}"
        return {
            "order_id": order_id,
            "journey_id": f"J-20250613-{self.journeys:05d}",
            "strategy": strategy,
            "symbol": symbol,
            "side": side,
            "reference_price": reference,
            "reference_time": self.ref_time(rng.uniform(0.3, 20.0) if age_s is None else age_s),
        }

    def lots(self, symbol: str, shares: float) -> int:
        lot = self.by_symbol[symbol].lot
        return max(1, round(shares / lot)) * lot

    def ordinary(self, strategy: str, method: str) -> dict[str, Any]:
        rng = self.rng
        fol = self.followers(strategy)
        fol_nav = sum(a.net_liq for a in fol)
        held = [s for s in self.models[strategy] if s not in self.no_trade
                and sum(1 for a in fol if a.positions.get(s, 0) > 0) >= 3]
        sell = bool(held) and rng.random() < (0.2 if method == "target_weight" else 0.35)
        if sell:
            sym = rng.choice(held)
        else:
            sym = self.pick(self.models[strategy], exclude=self.no_trade)
        ins = self.by_symbol[sym]
        side = "sell" if sell else "buy"
        o = self.new_order(strategy, sym, side)
        ref = o["reference_price"]
        if sell:
            qty = self.lots(sym, rng.uniform(0.15, 0.5) * self.holdings(strategy, sym))
        else:
            qty = self.lots(sym, rng.uniform(0.002, 0.008) * fol_nav / ref)
        qty = min(qty, int(DEFAULT_LIMIT["max_quantity"] * 0.5) // ins.lot * ins.lot,
                  int(DEFAULT_LIMIT["max_notional"] * 0.5 / ref) // ins.lot * ins.lot)
        o["method"] = method
        if method == "target_weight":
            o["target_weight_pct"] = rng.choice((0.5, 1.0)) if sell \
                else rng.choice((1.0, 1.5, 2.0, 2.5, 3.0))
        elif method == "ratios":
            o["quantity"] = qty
            o["ratios"] = {a.account_id: rng.choice((0.5, 1.0, 1.0, 2.0, 3.0)) for a in fol}
        elif method == "percent":
            o["quantity"] = qty
            chosen = rng.sample(fol, min(len(fol), rng.randint(3, 6)))
            cuts = sorted(rng.sample(range(1, 100), len(chosen) - 1))
            parts = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
            o["percents"] = {a.account_id: float(p)
                             for a, p in zip(chosen, parts, strict=True)}
        elif method == "shares":
            if sell:
                holders = [a for a in fol if a.positions.get(sym, 0) >= ins.lot]
                chosen = rng.sample(holders, min(len(holders), rng.randint(2, 4)))
                shares = {a.account_id: rng.randint(1, a.positions[sym] // ins.lot) * ins.lot
                          for a in chosen}
            else:
                chosen = rng.sample(fol, min(len(fol), rng.randint(2, 5)))
                shares = {a.account_id: self.lots(sym, rng.uniform(0.002, 0.01) * a.net_liq / ref)
                          for a in chosen}
            o["quantity"] = sum(shares.values())
            o["shares"] = shares
        else:
            o["quantity"] = qty
        if rng.random() < 0.35:
            drift = rng.uniform(0.001, 0.01) * (1 if side == "buy" else -1)
            o["limit_price"] = _cents(ref * (1.0 + drift))
        r = rng.random()
        if r < 0.1:
            o["on_lot_failure"] = "drop_lots"
        elif r < 0.18:
            o["on_lot_failure"] = "reject_block"
        return o

    def make_orders(self) -> None:
        rng = self.rng
        plans = {}
        for s in STRATEGIES:
            mix = list(METHOD_MIX)
            rng.shuffle(mix)
            plans[s] = mix
        # interleave the strategies the way signals arrive through a batch
        queue = [s for s in STRATEGIES for _ in range(ORDERS_PER_STRATEGY)]
        rng.shuffle(queue)
        for s in queue:
            method = plans[s].pop()
            o = self.ordinary(s, method)
            self.orders.append(o)
            self.roles.setdefault(o["order_id"], f"{s}:{method}:{o['side']}")
        specials = self.special_orders()
        for role, o in specials:
            lo = 10
            if role == "duplicate_order_id":
                ids = [x["order_id"] for x in self.orders]
                lo = ids.index(o["order_id"]) + 1
            self.orders.insert(rng.randint(lo, len(self.orders)), o)
            self.roles.setdefault(o["order_id"], role)
        for o in self.orders:
            BlockOrder.model_validate(o)

    def special_orders(self) -> list[tuple[str, dict[str, Any]]]:
        rng = self.rng
        out: list[tuple[str, dict[str, Any]]] = []

        def buy(strategy: str, sym: str, qty: int, **kw: Any) -> dict[str, Any]:
            o = self.new_order(strategy, sym, "buy", **kw)
            o["quantity"] = qty
            return o

        # a reference price taken 14 minutes ago
        sym = self.pick(self.models["value"], exclude=self.no_trade)
        o = buy("value", sym, self.lots(sym, 200_000 / self.by_symbol[sym].price), age_s=872.4)
        out.append(("stale_reference", o))

        # a limit price 7 % away from the reference
        sym = self.pick(self.models["growth"], exclude=self.no_trade)
        o = buy("growth", sym, self.lots(sym, 300_000 / self.by_symbol[sym].price))
        o["limit_price"] = _cents(o["reference_price"] * 1.07)
        out.append(("price_collar", o))

        # a limit price between two ticks
        sym = self.pick(self.models["income"], exclude=self.no_trade)
        o = buy("income", sym, self.lots(sym, 100_000 / self.by_symbol[sym].price))
        o["limit_price"] = round(o["reference_price"] + 0.005, 3)
        out.append(("off_tick", o))

        # the firm's restricted list
        sym = self.firm_restricted[0]
        out.append(("firm_restricted",
                    buy("growth", sym, self.lots(sym, 250_000 / self.by_symbol[sym].price))))

        # the same order id sent twice, with a new journey
        first = next(o for o in self.orders if o["strategy"] == "value" and o["side"] == "buy"
                     and "quantity" in o and o.get("method") == "net_liq")
        sym = self.pick(self.models["value"], exclude=self.no_trade)
        o = buy("value", sym, self.lots(sym, 150_000 / self.by_symbol[sym].price),
                order_id=first["order_id"])
        out.append(("duplicate_order_id", o))

        # larger than a thinly traded name's instrument limit
        sym = self.thin[0]
        out.append(("instrument_limit", buy("value", sym, 12_000)))

        # sells for the income strategy's cash accounts, which cannot sell short: three times
        # what they hold of a name, and a name none of them holds
        cash_fol = [a for a in self.followers("income") if a.account_type == "cash"]
        ids = [a.account_id for a in cash_fol]

        def held_by(sym: str) -> int:
            return sum(max(0, a.positions.get(sym, 0)) for a in cash_fol)

        sym = rng.choice([s for s in self.models["income"] if s not in self.no_trade
                          and held_by(s) > 0])
        o = self.new_order("income", sym, "sell")
        o["quantity"] = self.lots(sym, 3 * held_by(sym))
        o["accounts"] = ids
        out.append(("sell_beyond_holdings", o))
        sym = rng.choice([i.symbol for i in self.instruments if i.symbol not in self.no_trade
                          and held_by(i.symbol) == 0 and i.lot == 1])
        o = self.new_order("income", sym, "sell")
        o["quantity"] = self.lots(sym, 50_000 / self.by_symbol[sym].price)
        o["accounts"] = ids
        out.append(("sell_not_held", o))

        # The reference price was taken before the stock gapped up: layer 1 passes (the
        # reference is fresh and the limit inside the collar), allocation fills accounts up to
        # their concentration limits at the reference, and layer 2 at the live price finds those
        # lots over the limits.
        for strategy, sym, gap, pct, policy in (
                ("growth", self.story[0], 0.88, 0.12, "reject_block"),
                ("value", self.story[1], 0.90, 0.10, "reduce_lots")):
            live = self.by_symbol[sym].price
            ref = _cents(live * gap)
            fol_nav = sum(a.net_liq for a in self.followers(strategy))
            qty = min(self.lots(sym, pct * fol_nav / ref),
                      int(0.9 * DEFAULT_LIMIT["max_notional"] / ref))
            o = buy(strategy, sym, qty, reference=ref, age_s=1.8)
            o["limit_price"] = _cents(ref * 1.02)
            o["on_lot_failure"] = policy
            out.append((f"gap_{policy}", o))
        return out

    # ------------------------------------------------------------------------ files

    def files(self) -> dict[str, str]:
        return {
            "instruments.csv": self.instruments_csv(),
            "prices.csv": self.prices_csv(),
            "mandates.yaml": self.mandates_yaml(),
            "accounts.json": json.dumps(self.account_dicts(), indent=2) + "\n",
            "risk.yaml": self.risk_yaml(),
            "day.yaml": self.day_yaml(),
            "orders.json": _json_lines_list(self.orders),
            "request.json": self.request_json(),
        }

    def instruments_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(("symbol", "sector", "lot_size", "tick_size", "currency", "beta"))
        for i in self.instruments:
            w.writerow((i.symbol, i.sector, i.lot, "0.01", "USD", f"{i.beta:.2f}"))
        return buf.getvalue()

    def prices_csv(self) -> str:
        lines = ["symbol,price"]
        lines += [f"{i.symbol},{i.price:.2f}" for i in self.instruments]
        return "\n".join(lines) + "\n"

    def mandates_yaml(self) -> str:
        out = [
            "# Investment mandates of the sample accounts: the limits allocation caps each",
            "# account by and layer-2 risk checks at the live price. Percentages are percent",
            "# numbers (8.0 means 8 % of the account's net liquidation value).",
            "mandates:",
        ]
        for mid, comment, fields in self.mandates:
            out.append(f"  # {comment}")
            out.append(f"  {mid}:")
            out += [f"    {line}" for line in _yaml_block(fields).splitlines()]
        return "\n".join(out) + "\n"

    def risk_yaml(self) -> str:
        body = _yaml_block(self.risk)
        head = [
            "# Firm-wide limits, checked by layer 1 against the whole block at the reference",
            "# price. Exposure limits are in USD; sector limits in percent of the firm's NAV.",
            "# restricted_symbols: the firm's restricted list; instrument_limits: the two",
            f"# largest names get more room ({', '.join(self.mega)}), three thinly traded ones",
            f"# less ({', '.join(self.thin)}).",
        ]
        return "\n".join(head) + "\n" + body

    def day_yaml(self) -> str:
        return (
            "# The sample trading day: the block orders of one batch, decided at as_of.\n"
            f"description: Morning rebalance batch across the growth, value and income "
            f"strategies\n"
            f"as_of: '{AS_OF.isoformat()}'\n"
            "orders: orders.json\n"
        )

    def request_json(self) -> str:
        wanted = ["growth:net_liq:buy", "value:target_weight:buy", "income:percent:buy",
                  "stale_reference", "gap_reject_block"]
        orders = []
        for role in wanted:
            oid = next((k for k, v in self.roles.items() if v == role), None)
            if oid is not None:
                orders.append(next(o for o in self.orders if o["order_id"] == oid))
        request = {"book": ".", "as_of": AS_OF.isoformat(), "orders": orders}
        AllocateRequest.model_validate(request)
        return json.dumps(request, indent=2) + "\n"


def _yaml_block(fields: dict[str, Any]) -> str:
    """One ``key: value`` line per field; lists and mappings inline (flow style)."""
    out = ""
    for k, v in fields.items():
        flow = None if isinstance(v, dict | list) else False
        out += yaml.safe_dump({k: v}, sort_keys=False, default_flow_style=flow, width=200)
    return out


def _json_lines_list(items: list[dict[str, Any]]) -> str:
    """A JSON list with one object per line: compact, and a diff shows whole orders."""
    return "[\n" + ",\n".join("  " + json.dumps(o) for o in items) + "\n]\n"


def generate(seed: int = SEED) -> dict[str, str]:
    """The sample files as {file name: text}."""
    g = _Generator(seed)
    g.universe()
    g.special_names()
    g.make_mandates()
    g.make_accounts()
    g.make_risk()
    g.make_orders()
    return g.files()


def write_sample(out_dir: str | Path, seed: int = SEED) -> list[Path]:
    """Writes the sample files into ``out_dir`` (created if needed); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in generate(seed).items():
        p = out / name
        p.write_text(text, encoding="utf-8", newline="\n")
        paths.append(p)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mats.sample",
        description="Write the sample book and trading day (deterministic for a given seed).")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if needed)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    args = parser.parse_args(argv)
    try:
        paths = write_sample(args.out_dir, args.seed)
    except OSError as e:
        print(f"python -m mats.sample: error: {e}", file=sys.stderr)
        return 1
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files ({total / 1024:.0f} KiB) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
