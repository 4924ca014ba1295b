"""The day's events in the SQL store, turned into the end-of-day inputs.

The stream app's sink writes every published message to the store's ``events`` table
(:mod:`mats.store`). :func:`store_frames` reads one trading day of them and builds the four
inputs that describe what we did (schemas in :mod:`mats.batch.eod_tables`):

``blocks``
    One row per block that had an execution, an account fill or an accepted allocation
    instruction on the day. From the block order (kind ``signal``): strategy, allocator (its
    ``method``), symbol, side, the decision (``reference_time``, ``reference_price``); arrival
    is the first report the broker sent for the block (its acknowledgement) at the live price
    layer 2 checked against (``live_price``, else the reference price). ``vwap`` is the
    volume-weighted price of all our executions in the symbol that day (the store holds no
    market tape), ``close_price`` the day's close from the market data.
``lots``
    Each account's placed quantity of the allocation instruction (after layer 2), with the
    gateway (its broker) that worked it; lots of nothing are left out.
``executions``
    Execution reports that filled shares (``last_qty`` > 0), once per gateway and exec id.
    Reports carry no commission: ``fee`` is ``fee_per_share`` times the quantity.
``fills``
    Account fills (the fill allocator's output), summed per execution and account; an
    account's share of nothing (the allocator's zero lines) is left out.

The day is the calendar day in ``time_zone`` (New York by default) of each event's
``occurred_at``. Blocks are found from the day's instructions, reports and fills, and
their signal, instruction and reports are read whatever their time.

:func:`write_store_eod_inputs` writes these beside the broker's statement (a file the caller
gives, or, with none, a copy of our own executions: a clean statement), market data (a folder
the caller gives, or the generated sample's) and the start-of-day holdings, and returns the
:class:`mats.batch.eod.EodInputs` for :func:`mats.batch.eod.run_eod`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from mats.batch.eod import EodInputs
from mats.batch.eod_tables import BLOCKS, EXECUTIONS, FILLS, HOLDINGS, LOTS, STATEMENT
from mats.batch.fixtures import write_eod_inputs, write_table
from mats.batch.tables import Table, find_input
from mats.blocks import AllocationInstruction
from mats.desk import AccountFillEvent
from mats.errors import MatsError
from mats.executions import ExecutionReport
from mats.models import Account, BlockOrder, Book
from mats.store import Event, Store

__all__ = [
    "MARKET_INPUTS",
    "StoreEventsError",
    "day_events",
    "holdings_frame",
    "statement_from_executions",
    "store_frames",
    "write_store_eod_inputs",
]

# the inputs that come from market data and reference files, not from the store
MARKET_INPUTS = ("market", "benchmark", "targets", "history")
_DAY_KINDS = ("allocation_instruction", "execution_report", "account_fill")
_BLOCK_KINDS = ("signal", "allocation_instruction", "execution_report", "account_fill")


class StoreEventsError(MatsError):
    """The store holds nothing usable for the day, or a given input file is missing."""


def day_events(store: Store, trade_date: date, time_zone: str = "America/New_York"
               ) -> list[Event]:
    """Every event of the blocks active on ``trade_date`` (in ``time_zone``), oldest first."""
    zone = ZoneInfo(time_zone)
    start = datetime.combine(trade_date, time(), zone)
    end = datetime.combine(trade_date + timedelta(days=1), time(), zone)
    with Session(store.engine) as session:
        today = select(Event.order_id).where(
            Event.kind.in_(_DAY_KINDS), Event.occurred_at >= start, Event.occurred_at < end,
            Event.order_id.is_not(None)).distinct()
        orders = [o for o in session.scalars(today) if o is not None]
        if not orders:
            return []
        query = (select(Event).where(Event.kind.in_(_BLOCK_KINDS), Event.order_id.in_(orders))
                 .order_by(Event.occurred_at, Event.event_id))
        return list(session.scalars(query))


def _frame(rows: list[dict[str, Any]], table: Table) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=table.schema, orient="row") if rows else table.empty()


def store_frames(events: Iterable[Event], closes: dict[str, float], *,
                 fee_per_share: float = 0.0) -> dict[str, pl.DataFrame]:
    """``blocks``, ``lots``, ``executions`` and ``fills`` of the events (see the module).

    ``closes`` is each symbol's close of the day; a block in a symbol without one takes its
    arrival price (the input checks then report the symbol unpriced in the market data).
    """
    signals: dict[str, BlockOrder] = {}
    instructions: dict[str, AllocationInstruction] = {}
    reports: dict[tuple[str, str], ExecutionReport] = {}
    first_report: dict[str, datetime] = {}
    fills: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in events:
        if e.kind == "signal":
            signals[e.order_id or ""] = BlockOrder.model_validate_json(e.payload)
        elif e.kind == "allocation_instruction":
            instructions[e.order_id or ""] = AllocationInstruction.model_validate_json(e.payload)
        elif e.kind == "execution_report":
            r = ExecutionReport.model_validate_json(e.payload)
            seen = first_report.get(r.order_id)
            first_report[r.order_id] = r.transact_time if seen is None else min(
                seen, r.transact_time)
            if r.last_qty > 0 and r.last_px is not None:
                reports.setdefault((r.gateway, r.exec_id), r)
        elif e.kind == "account_fill":
            f = AccountFillEvent.model_validate_json(e.payload)
            row = fills.setdefault((f.gateway, f.exec_id, f.account_id), {
                "gateway": f.gateway, "exec_id": f.exec_id, "order_id": f.order_id,
                "account_id": f.account_id, "quantity": 0})
            row["quantity"] += f.quantity
    executions = [{"exec_id": r.exec_id, "order_id": r.order_id, "gateway": r.gateway,
                   "symbol": r.symbol, "side": r.side, "quantity": r.last_qty,
                   "price": r.last_px, "fee": round(fee_per_share * r.last_qty, 2),
                   "exec_time": r.transact_time} for r in reports.values()]
    traded: dict[str, list[float]] = {}
    for r in reports.values():
        acc = traded.setdefault(r.symbol, [0.0, 0.0])
        acc[0] += r.last_qty * (r.last_px or 0.0)
        acc[1] += r.last_qty
    blocks, lots = [], []
    for oid in sorted(instructions):
        ins = instructions[oid]
        placed = [lot for lot in ins.lots if lot.quantity > 0]
        if ins.status != "accepted" or ins.stage is not None or not placed:
            continue  # refused, or nothing sent to a broker: nothing traded, nothing to measure
        order = signals.get(oid)
        arrival_price = ins.live_price if ins.live_price is not None else ins.reference_price
        notional, volume = traded.get(ins.symbol, (0.0, 0.0))
        blocks.append({
            "order_id": oid, "strategy": ins.strategy,
            "allocator": str(order.method) if order is not None else "unknown",
            "symbol": ins.symbol, "side": ins.side,
            "decision_time": order.reference_time if order is not None else ins.decided_at,
            "decision_price": order.reference_price if order is not None
            else ins.reference_price,
            "arrival_time": first_report.get(oid, ins.decided_at),
            "arrival_price": arrival_price,
            "vwap": notional / volume if volume else arrival_price,
            "close_price": closes.get(ins.symbol, arrival_price)})
        lots += [{"order_id": oid, "account_id": lot.account_id, "gateway": lot.broker,
                  "allocated": lot.quantity} for lot in placed]
    return {"blocks": _frame(blocks, BLOCKS), "lots": _frame(lots, LOTS),
            "executions": _frame(executions, EXECUTIONS),
            "fills": _frame([f for f in fills.values() if f["quantity"] > 0], FILLS)
            .sort("order_id", "account_id", "gateway", "exec_id")}


def statement_from_executions(executions: pl.DataFrame) -> pl.DataFrame:
    """A broker statement that agrees with ``executions`` in every line (a clean statement)."""
    return executions.select(STATEMENT.names)


def holdings_frame(accounts: Sequence[Account]) -> pl.DataFrame:
    """The ``holdings`` input: every non-zero position of the accounts."""
    rows = [{"account_id": a.account_id, "symbol": s, "quantity": q}
            for a in accounts for s, q in sorted(a.positions.items()) if q != 0]
    return _frame(rows, HOLDINGS)


def _find(folder: Path, name: str) -> Path:
    found = find_input(folder, name)
    if found is not None:
        return found
    raise StoreEventsError(f"no {name}.parquet or {name}.csv in the market data folder {folder}")


def write_store_eod_inputs(book: Book, store_url: str, trade_date: date, folder: str | Path, *,
                           statement: str | Path | None = None,
                           market_dir: str | Path | None = None,
                           holdings: Sequence[Account] | None = None,
                           time_zone: str = "America/New_York",
                           fee_per_share: float = 0.0) -> EodInputs:
    """Write the end-of-day inputs of ``trade_date`` from the store at ``store_url``.

    Parameters
    ----------
    book
        The book (its accounts are the start-of-day holdings unless ``holdings`` is given).
    store_url
        The SQL store holding the day's events.
    folder
        Where the inputs are written (Parquet; the market data and statement are referred to
        where they are, or written here when generated).
    statement
        The broker's statement or drop-copy file; ``None`` writes a clean one from our own
        executions (a demo: reconciliation then finds nothing).
    market_dir
        A folder holding ``market``, ``benchmark``, ``targets`` and ``history`` (CSV or
        Parquet, named after the input); ``None`` generates the sample's for the book.
    holdings
        The start-of-day accounts (the day's published state).

    Raises
    ------
    StoreEventsError
        The store has no event of the day, or a given file is missing.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if market_dir is None:
        generated = write_eod_inputs(book, trade_date, out / "generated", plant_breaks=False)
        market = {n: Path(getattr(generated, n)) for n in MARKET_INPUTS}
    else:
        market_path = Path(market_dir)
        if not market_path.is_dir():
            raise StoreEventsError(f"the market data folder {market_path} does not exist")
        market = {n: _find(market_path, n) for n in MARKET_INPUTS}
    if statement is not None and not Path(statement).is_file():
        raise StoreEventsError(f"the broker statement {statement} does not exist")
    closes_frame = (pl.read_parquet(market["market"]) if market["market"].suffix == ".parquet"
                    else pl.read_csv(market["market"]))
    closes = dict(zip(closes_frame["symbol"].cast(pl.String).to_list(),
                      closes_frame["close"].cast(pl.Float64).to_list(), strict=True))
    with Store(store_url) as store:
        events = day_events(store, trade_date, time_zone)
    if not events:
        raise StoreEventsError(f"the store {store_url} holds no event of {trade_date} "
                               f"({time_zone}): no block was traded that day")
    frames = store_frames(events, closes, fee_per_share=fee_per_share)
    paths = {name: str(write_table(frame, table, out, "parquet"))
             for name, frame, table in (
                 ("blocks", frames["blocks"], BLOCKS), ("lots", frames["lots"], LOTS),
                 ("executions", frames["executions"], EXECUTIONS),
                 ("fills", frames["fills"], FILLS),
                 ("holdings", holdings_frame(book.accounts if holdings is None else holdings),
                  HOLDINGS))}
    if statement is None:
        paths["statement"] = str(write_table(statement_from_executions(frames["executions"]),
                                             STATEMENT, out, "parquet"))
    else:
        paths["statement"] = str(statement)
    paths.update({n: str(p) for n, p in market.items()})
    return EodInputs(**paths)
