"""A :class:`mats.models.Book` as polars frames: the reference data the batch joins against."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from mats.models import Account, Book

__all__ = ["accounts_frame", "instruments_frame", "positions_frame"]


def accounts_frame(book: Book) -> pl.DataFrame:
    """One row per account: ``account_id, account_type, mandate_id, broker, strategy,
    cash_buffer_pct, fill_policy, fill_priority, book_rank`` (``strategy``: the first one the
    account follows, "" if none; ``book_rank``: the account's place in the book, 0-based)."""
    mandates = {m.mandate_id: m for m in book.mandates}
    rows = []
    for rank, a in enumerate(book.accounts):
        m = mandates[a.mandate_id]
        rows.append({
            "account_id": a.account_id, "account_type": a.account_type.value,
            "mandate_id": a.mandate_id, "broker": a.broker,
            "strategy": a.strategies[0] if a.strategies else "",
            "cash_buffer_pct": m.cash_buffer_pct, "fill_policy": m.fill_policy.value,
            "fill_priority": m.fill_priority, "book_rank": rank,
        })
    return pl.DataFrame(rows, schema={
        "account_id": pl.String, "account_type": pl.String, "mandate_id": pl.String,
        "broker": pl.String, "strategy": pl.String, "cash_buffer_pct": pl.Float64,
        "fill_policy": pl.String, "fill_priority": pl.Int64, "book_rank": pl.Int64})


def instruments_frame(book: Book) -> pl.DataFrame:
    """One row per instrument: ``symbol, sector, lot_size, beta``."""
    return pl.DataFrame(
        [{"symbol": i.symbol, "sector": i.sector, "lot_size": i.lot_size, "beta": i.beta}
         for i in book.instruments],
        schema={"symbol": pl.String, "sector": pl.String, "lot_size": pl.Int64,
                "beta": pl.Float64})


def positions_frame(accounts: Sequence[Account]) -> pl.DataFrame:
    """Non-zero positions: ``account_id, symbol, quantity``."""
    return pl.DataFrame(
        [{"account_id": a.account_id, "symbol": s, "quantity": q}
         for a in accounts for s, q in a.positions.items() if q != 0],
        schema={"account_id": pl.String, "symbol": pl.String, "quantity": pl.Int64})
