"""Shortfall re-allocation: what each account of a part-filled block ends with, and the next
day's top-ups.

For each block the filled shares ``X`` are split by the accounts' fill policies (mandate
``fill_policy``, see ``docs/fills.md``): ``priority`` accounts first, in order of
``fill_priority`` then book order, each up to its allocation; what is left, ``R``, goes to the
``pro_rata`` and ``as_allocated`` accounts in proportion to their allocations, each getting
``floor(R · a / A)`` and the leftover shares one each by largest remainder (ties: larger
allocation, then book order), in whole-share integer arithmetic. ``adjustment`` is that target
minus what the account was booked (zero when the day's fill allocator did its job).

The shortfall (allocation minus target) of a ``priority`` or ``pro_rata`` account is final; an
``as_allocated`` account's is carried: a top-up for the next day, floored to whole lots.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

import polars as pl

from mats.models import AllocationMethod, BlockOrder

__all__ = ["reallocate", "topup_orders"]


def reallocate(lots: pl.DataFrame, fills: pl.DataFrame, blocks: pl.DataFrame,
               policies: pl.DataFrame, instruments: pl.DataFrame,
               next_date: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The final split of every block and the top-ups.

    Parameters
    ----------
    lots, fills, blocks
        As :data:`mats.batch.eod_tables.LOTS`, ``FILLS``, ``BLOCKS``.
    policies
        ``account_id, fill_policy, fill_priority, book_rank``
        (:func:`mats.batch.book.accounts_frame`).
    instruments
        ``symbol, lot_size``.
    next_date
        The trading day the top-ups are for.

    Returns
    -------
    (final, topups)
        ``final``: one row per lot with ``allocated, filled, target, adjustment, shortfall,
        fill_policy, carried``; ``topups``: ``trade_date, source_order_id, strategy, symbol,
        side, account_id, quantity, reference_price``.
    """
    booked = fills.group_by("order_id", "account_id").agg(
        pl.col("quantity").sum().alias("filled"))
    df = (lots.select("order_id", "account_id", "allocated")
          .join(booked, on=["order_id", "account_id"], how="left")
          .with_columns(pl.col("filled").fill_null(0))
          .join(policies.select("account_id", "fill_policy", "fill_priority", "book_rank"),
                on="account_id", how="left")
          .with_columns(pl.col("fill_policy").fill_null("pro_rata"),
                        pl.col("fill_priority").fill_null(0),
                        pl.col("book_rank").fill_null(2**31),
                        (pl.col("fill_policy") == "priority").alias("_prio"))
          .with_columns(pl.col("filled").sum().over("order_id").alias("_x"))
          .sort("order_id", "_prio", "fill_priority", "book_rank",
                descending=[False, True, False, False]))
    before = pl.col("allocated").cum_sum().over("order_id", "_prio") - pl.col("allocated")
    df = df.with_columns(
        pl.when(pl.col("_prio"))
        .then((pl.col("_x") - before).clip(0, None).clip(None, pl.col("allocated")))
        .otherwise(0).alias("_pfill"))
    df = df.with_columns(
        (pl.col("_x") - pl.col("_pfill").sum().over("order_id")).alias("_r"),
        pl.col("allocated").filter(~pl.col("_prio")).sum().over("order_id").alias("_a"))
    num = pl.col("_r") * pl.col("allocated")
    df = df.with_columns(
        pl.when(pl.col("_prio") | (pl.col("_a") == 0)).then(0)
        .otherwise(num // pl.col("_a")).alias("_base"),
        pl.when(pl.col("_prio") | (pl.col("_a") == 0)).then(-1)
        .otherwise(num % pl.col("_a")).alias("_rem"))
    df = df.with_columns(
        (pl.col("_r") - pl.col("_base").filter(~pl.col("_prio")).sum().over("order_id"))
        .alias("_left"))
    df = df.sort("order_id", "_prio", "_rem", "allocated", "book_rank",
                 descending=[False, False, True, True, False])
    df = df.with_columns(pl.int_range(pl.len()).over("order_id", "_prio").alias("_rank"))
    df = df.with_columns(
        (pl.col("_pfill") + pl.col("_base")
         + (~pl.col("_prio") & (pl.col("_rank") < pl.col("_left"))).cast(pl.Int64))
        .alias("target"))
    final = (df.with_columns(
        (pl.col("target") - pl.col("filled")).alias("adjustment"),
        (pl.col("allocated") - pl.col("target")).alias("shortfall"),
        (pl.col("fill_policy") == "as_allocated").alias("carried"))
        .select("order_id", "account_id", "fill_policy", "allocated", "filled", "target",
                "adjustment", "shortfall", "carried")
        .sort("order_id", "account_id"))
    b = blocks.select("order_id", "strategy", "symbol", "side", "close_price")
    topups = (final.filter(pl.col("carried") & (pl.col("shortfall") > 0))
              .join(b, on="order_id", how="left")
              .join(instruments.select("symbol", "lot_size"), on="symbol", how="left")
              .with_columns((pl.col("shortfall") // pl.col("lot_size").fill_null(1)
                             * pl.col("lot_size").fill_null(1)).alias("quantity"))
              .filter(pl.col("quantity") > 0)
              .select(pl.lit(next_date).alias("trade_date"),
                      pl.col("order_id").alias("source_order_id"), "strategy", "symbol",
                      "side", "account_id", "quantity",
                      pl.col("close_price").alias("reference_price"))
              .sort("source_order_id", "account_id"))
    return final, topups


def topup_orders(topups: pl.DataFrame, reference_time: datetime | None = None
                 ) -> list[BlockOrder]:
    """One ``shares`` block order per source block, for the next day's strategy to send."""
    out: list[BlockOrder] = []
    at = reference_time or datetime.now(UTC)
    groups: Sequence[pl.DataFrame] = topups.partition_by("source_order_id", maintain_order=True)
    for g in groups:
        first = g.row(0, named=True)
        shares = dict(zip(g["account_id"].to_list(), g["quantity"].to_list(), strict=True))
        out.append(BlockOrder(
            order_id=f"TOPUP-{first['source_order_id']}",
            journey_id=f"J-TOPUP-{first['source_order_id']}",
            strategy=first["strategy"], symbol=first["symbol"], side=first["side"],
            quantity=sum(shares.values()), reference_price=first["reference_price"],
            reference_time=at, method=AllocationMethod.SHARES, shares=shares,
            accounts=list(shares)))
    return out
