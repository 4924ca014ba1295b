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
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from mats.batch.sod import CASH, DIVIDENDS, OPEN_ORDERS, POSITIONS, PRICES, TRANSFERS, SodInputs
from mats.batch.tables import Table
from mats.models import Book

__all__ = ["SEED", "business_days_before", "write_sod_inputs", "write_table"]

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
