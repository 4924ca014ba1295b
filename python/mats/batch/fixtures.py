"""Deterministic input files for the batch, generated from a book (the demo and tests use them).

:func:`write_sod_inputs` writes the start-of-day custodian files that agree with the book's
accounts (taken as yesterday's end state): positions, a cash ledger whose settled part is each
account's settled cash, closing prices, a few dividends (some pending), deposits and
withdrawals, and the open orders that make the book's reserved cash.
:func:`eod_inputs` makes one trading day's end-of-day inputs (blocks, lots, executions, fills,
broker statement, market data, benchmark, targets, return history) over the same book.

All randomness comes from one ``random.Random(seed)`` (or ``numpy.random.default_rng(seed)``),
and iteration never depends on set or hash order: a seed always gives the same files.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from mats.batch.book import accounts_frame
from mats.batch.eod import EodInputs
from mats.batch.eod_tables import (
    BENCHMARK,
    BLOCKS,
    EXECUTIONS,
    FILLS,
    HISTORY,
    HOLDINGS,
    LOTS,
    MARKET,
    STATEMENT,
    TARGETS,
)
from mats.batch.reallocation import reallocate
from mats.batch.sod import CASH, DIVIDENDS, OPEN_ORDERS, POSITIONS, PRICES, TRANSFERS, SodInputs
from mats.batch.tables import Table
from mats.models import Book

__all__ = ["SEED", "business_days_before", "write_eod_inputs", "write_sod_inputs",
           "write_table"]

SEED = 20250613


def business_days_before(d: date, n: int) -> date:
    """The date ``n`` business days (Monday to Friday) before ``d``."""
    out = d
    while n > 0:
        out -= timedelta(days=1)
        if out.weekday() < 5:
            n -= 1
    return out


def _next_business_day(d: date, n: int = 1) -> date:
    out = d
    while n > 0:
        out += timedelta(days=1)
        if out.weekday() < 5:
            n -= 1
    return out


def write_table(frame: pl.DataFrame, table: Table, folder: Path,
                fmt: Literal["csv", "parquet"] = "csv") -> Path:
    """``frame`` (the table's columns, in order) as ``folder/<table>.<fmt>``."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = frame.select(table.names)
    path = folder / f"{table.name}.{fmt}"
    if fmt == "csv":
        frame.write_csv(path, date_format="%Y-%m-%d")
    else:
        frame.write_parquet(path)
    return path


def write_sod_inputs(book: Book, as_of: date, folder: str | Path,
                     fmt: Literal["csv", "parquet"] = "csv", seed: int = SEED) -> SodInputs:
    """Write the six start-of-day inputs for ``as_of`` into ``folder``; their paths.

    The files agree with ``book`` as yesterday's end state, so :func:`mats.batch.sod.run_sod`
    finds no critical problem in them.
    """
    rng = random.Random(seed)
    out = Path(folder)
    prev = business_days_before(as_of, 1)
    positions = pl.DataFrame(
        [{"account_id": a.account_id, "symbol": s, "quantity": q}
         for a in book.accounts for s, q in a.positions.items()],
        schema=POSITIONS.schema)
    ledger: list[dict[str, object]] = []
    for a in book.accounts:
        n = 0

        def entry(kind: str, amount: float, day: date, acct: str = a.account_id) -> None:
            nonlocal n
            n += 1
            ledger.append({"entry_id": f"{acct}-{n:04d}", "account_id": acct, "kind": kind,
                           "amount": round(amount, 2), "trade_date": day})

        dividend = round(rng.uniform(0, 0.002) * a.net_liq, 2)
        fee = -round(rng.uniform(5, 50), 2)
        entry("opening", a.settled_cash - dividend - fee, business_days_before(as_of, 5))
        entry("dividend", dividend, business_days_before(as_of, 3))
        entry("fee", fee, business_days_before(as_of, 2))
        if round(a.cash - a.settled_cash, 2) != 0:
            # yesterday's trades: they settle today (T+1), so not settled when the day opens
            entry("trade", a.cash - a.settled_cash, prev)
    cash = pl.DataFrame(ledger, schema=CASH.schema)
    prices = pl.DataFrame(
        [{"symbol": s, "price": p, "price_date": prev} for s, p in book.prices.items()],
        schema=PRICES.schema)
    held = sorted({s for a in book.accounts for s, q in a.positions.items() if q > 0})
    divs = []
    for s in rng.sample(held, min(12, len(held))):
        ex = business_days_before(as_of, rng.randint(0, 6)) if rng.random() < 0.7 \
            else _next_business_day(as_of, rng.randint(1, 5))
        divs.append({"symbol": s, "ex_date": ex,
                     "pay_date": _next_business_day(ex, rng.randint(2, 20)),
                     "amount": round(book.prices[s] * rng.uniform(0.002, 0.01), 4)})
    transfers = []
    for i, a in enumerate(rng.sample(list(book.accounts), min(8, len(book.accounts)))):
        withdrawal = i % 2 == 0
        amount = round(max(a.settled_cash, 0.0) * rng.uniform(0.01, 0.05), 2) \
            if withdrawal else round(rng.uniform(1_000, 25_000), 2)
        if amount <= 0:
            continue
        transfers.append({"transfer_id": f"T-{as_of:%Y%m%d}-{i + 1:03d}",
                          "account_id": a.account_id,
                          "kind": "withdrawal" if withdrawal else "deposit",
                          "amount": amount,
                          "value_date": _next_business_day(as_of, rng.randint(0, 3))})
    orders = []
    for a in book.accounts:
        for s, oo in a.open_orders.items():
            for side, q in (("buy", oo.buy), ("sell", oo.sell)):
                if q > 0:
                    limit = oo.buy_reserved / q if side == "buy" and oo.buy_reserved > 0 \
                        else None
                    orders.append({"order_id": f"GTC-{a.account_id}-{s}-{side}",
                                   "account_id": a.account_id, "symbol": s, "side": side,
                                   "quantity": q, "limit_price": limit})
    return SodInputs(
        positions=str(write_table(positions, POSITIONS, out, fmt)),
        cash=str(write_table(cash, CASH, out, fmt)),
        prices=str(write_table(prices, PRICES, out, fmt)),
        dividends=str(write_table(pl.DataFrame(divs, schema=DIVIDENDS.schema), DIVIDENDS,
                                  out, fmt)),
        transfers=str(write_table(pl.DataFrame(transfers, schema=TRANSFERS.schema), TRANSFERS,
                                  out, fmt)),
        open_orders=str(write_table(pl.DataFrame(orders, schema=OPEN_ORDERS.schema),
                                    OPEN_ORDERS, out, fmt)),
    )


def _policy_split(order_id: str, symbol: str, alloc: dict[str, int], filled: int,
                  policies: pl.DataFrame) -> dict[str, int]:
    """What each account of a block ends with when ``filled`` shares were executed: the split
    :func:`mats.batch.reallocation.reallocate` computes (it depends only on the total)."""
    lots = pl.DataFrame({"order_id": order_id, "account_id": list(alloc),
                         "allocated": list(alloc.values())})
    fills = pl.DataFrame({"order_id": [order_id], "account_id": [next(iter(alloc))],
                          "quantity": [filled]})
    blocks = pl.DataFrame({"order_id": [order_id], "strategy": [""], "symbol": [symbol],
                           "side": ["buy"], "close_price": [1.0]})
    final, _ = reallocate(lots, fills, blocks, policies,
                          pl.DataFrame({"symbol": [symbol], "lot_size": [1]}), date.min)
    return dict(zip(final["account_id"].to_list(), final["target"].to_list(), strict=True))


def write_eod_inputs(book: Book, trade_date: date, folder: str | Path, seed: int = SEED,
                     n_blocks: int = 40, history_days: int = 520,
                     plant_breaks: bool = True) -> EodInputs:
    """Write one trading day's end-of-day inputs over ``book`` into ``folder``; their paths.

    Blocks follow the book's strategies; each block's lots go to accounts that follow its
    strategy, worked per broker gateway, part-filled or filled. Returns follow a one-factor
    model (beta to a market factor, a sector factor, noise). Each account's fills add up to what
    its fill policy gives it. With ``plant_breaks`` the broker statement differs from our
    executions in four places (one execution missing from it, one it has that we lack, one
    quantity and one price), and one share of an execution is booked to the wrong account.
    """
    rng = np.random.default_rng(seed)
    out = Path(folder)
    instruments = [i for i in book.instruments if i.symbol in book.prices]
    symbols = [i.symbol for i in instruments]
    prev = {s: book.prices[s] for s in symbols}
    sectors = sorted({i.sector for i in instruments})
    # return history: market factor, sector factors, idiosyncratic noise
    days: list[date] = []
    d = trade_date
    for _ in range(history_days):
        days.append(d)
        d = business_days_before(d, 1)
    days.reverse()
    mkt = rng.standard_t(5, history_days) * 0.008
    sec = {s: rng.normal(0, 0.006, history_days) for s in sectors}
    rets = np.column_stack([i.beta * mkt + sec[i.sector] + rng.normal(0, 0.012, history_days)
                            for i in instruments])
    history = pl.DataFrame({"date": np.repeat(np.array(days, dtype="datetime64[D]"),
                                              len(symbols)),
                            "symbol": symbols * history_days,
                            "ret": rets.reshape(-1)}).with_columns(pl.col("date").cast(pl.Date))
    today = dict(zip(symbols, rets[-1], strict=True))
    market = pl.DataFrame({"symbol": symbols, "prev_close": [prev[s] for s in symbols],
                           "close": [round(prev[s] * (1 + today[s]), 2) for s in symbols]})
    close = dict(zip(market["symbol"], market["close"], strict=True))
    benchmark = pl.DataFrame({"symbol": symbols,
                              "weight": np.round(rng.lognormal(0, 1, len(symbols)), 6)})
    holdings = pl.DataFrame(
        [{"account_id": a.account_id, "symbol": s, "quantity": q}
         for a in book.accounts for s, q in a.positions.items() if q != 0],
        schema=HOLDINGS.schema)
    targets = []
    for a in book.accounts:
        mv = {s: q * prev[s] / a.net_liq for s, q in a.positions.items() if q > 0}
        total = sum(mv.values())
        scale = 0.97 / total if total > 0.97 else 1.0
        for s, w in mv.items():
            targets.append({"account_id": a.account_id, "symbol": s,
                            "weight": round(w * scale * float(rng.uniform(0.9, 1.1)), 6)})
    lot = {i.symbol: i.lot_size for i in instruments}
    policies = accounts_frame(book)
    room: dict[tuple[str, str], int] = {}  # shares an account could still take in a block
    followers: dict[str, list[str]] = {}
    for a in book.accounts:
        for s in a.strategies:
            followers.setdefault(s, []).append(a.account_id)
    broker = {a.account_id: a.broker for a in book.accounts}
    methods = ("net_liq", "available_equity", "equal", "ratios", "target_weight")
    blocks, lots, execs, fills = [], [], [], []
    open_utc = datetime(trade_date.year, trade_date.month, trade_date.day, 13, 30, tzinfo=UTC)
    for b in range(n_blocks):
        strategy = sorted(followers)[b % len(followers)]
        sym = symbols[int(rng.integers(len(symbols)))]
        side = "buy" if rng.random() < 0.6 else "sell"
        sign = 1 if side == "buy" else -1
        order_id = f"{strategy[:3].upper()}-{b + 1:04d}"
        decided = open_utc + timedelta(minutes=float(rng.uniform(0, 380)))
        arrived = decided + timedelta(seconds=float(rng.uniform(1, 90)))
        p_d = round(prev[sym] * (1 + rng.normal(0, 0.004)), 2)
        p_a = round(p_d * (1 + rng.normal(0, 0.0008)), 2)
        members = list(rng.choice(followers[strategy], size=min(
            len(followers[strategy]), int(rng.integers(3, 12))), replace=False))
        alloc = {a: int(rng.integers(1, 30)) * lot[sym] * (1 if lot[sym] > 1 else 10)
                 for a in sorted(members)}
        fill_frac = 1.0 if rng.random() < 0.4 else float(rng.uniform(0.3, 0.95))
        filled = int(sum(alloc.values()) * fill_frac) // lot[sym] * lot[sym]
        # each account ends with what its fill policy gives it (the day's fill allocator)
        target = _policy_split(order_id, sym, alloc, filled, policies)
        room.update({(order_id, a): alloc[a] - target[a] for a in alloc})
        exec_notional = 0.0
        exec_qty = 0
        for gw in sorted({broker[a] for a in alloc}):
            accts = [a for a in alloc if broker[a] == gw]
            still = {a: target[a] for a in accts}
            left = sum(still.values())
            n_exec = int(rng.integers(1, 5))
            for k in range(n_exec):
                q = left if k == n_exec - 1 else (int(left * rng.uniform(0.2, 0.6))
                                                 // lot[sym] * lot[sym])
                if q <= 0:
                    continue
                left -= q
                px = round(p_a * (1 + sign * abs(rng.normal(0.0004, 0.0008))), 2)
                exec_id = f"{gw}-{order_id}-{k + 1}"
                execs.append({"exec_id": exec_id, "order_id": order_id, "gateway": gw,
                              "symbol": sym, "side": side, "quantity": q, "price": px,
                              "fee": round(q * 0.0035, 2),
                              "exec_time": arrived + timedelta(minutes=5 * (k + 1))})
                exec_notional += q * px
                exec_qty += q
                # the execution's shares to the accounts still short of their end quantity
                rest = q
                for a in accts:
                    take = min(rest, still[a])
                    if take > 0:
                        still[a] -= take
                        rest -= take
                        fills.append({"gateway": gw, "exec_id": exec_id,
                                      "order_id": order_id,
                                      "account_id": a, "quantity": take})
            lots += [{"order_id": order_id, "account_id": a, "gateway": gw,
                      "allocated": alloc[a]} for a in accts]
        vwap = (exec_notional / exec_qty if exec_qty else p_a) * (1 + rng.normal(0, 0.0003))
        blocks.append({"order_id": order_id, "strategy": strategy,
                       "allocator": methods[b % len(methods)], "symbol": sym, "side": side,
                       "decision_time": decided, "decision_price": p_d,
                       "arrival_time": arrived, "arrival_price": p_a,
                       "vwap": round(vwap, 4), "close_price": close[sym]})
    executions = pl.DataFrame(execs, schema=EXECUTIONS.schema)
    if plant_breaks:
        # one share of an execution booked to the wrong one of two accounts: the execution
        # still adds up, the end-of-day re-allocation moves the share back
        for i in range(1, len(fills)):
            one, two = fills[i - 1], fills[i]
            if one["exec_id"] == two["exec_id"] and int(str(one["quantity"])) > 1 \
                    and room[(str(two["order_id"]), str(two["account_id"]))] > 0:
                one["quantity"] = int(str(one["quantity"])) - 1
                two["quantity"] = int(str(two["quantity"])) + 1
                break
    statement = executions.drop("exec_time")
    if plant_breaks and statement.height >= 4:
        statement = statement.with_columns(
            pl.when(pl.int_range(pl.len()) == 1).then(pl.col("quantity") - lot.get(
                statement["symbol"][1], 1)).otherwise(pl.col("quantity")).alias("quantity"),
            pl.when(pl.int_range(pl.len()) == 2).then(pl.col("price") + 0.05)
            .otherwise(pl.col("price")).alias("price"))
        statement = pl.concat([statement.slice(1), pl.DataFrame([{
            **statement.row(0, named=True), "exec_id": "UNBOOKED-1"}],
            schema=statement.schema)])
    tables: list[tuple[pl.DataFrame, Table]] = [
        (pl.DataFrame(blocks, schema=BLOCKS.schema), BLOCKS),
        (pl.DataFrame(lots, schema=LOTS.schema), LOTS), (executions, EXECUTIONS),
        (pl.DataFrame(fills, schema=FILLS.schema), FILLS), (statement, STATEMENT),
        (market, MARKET), (holdings, HOLDINGS), (benchmark, BENCHMARK),
        (pl.DataFrame(targets, schema=TARGETS.schema), TARGETS), (history, HISTORY)]
    paths = {t.name: str(write_table(f, t, out, "parquet")) for f, t in tables}
    return EodInputs(**paths)
