"""Reconciliation of our executions against the broker's statement (or drop-copy file).

Executions are matched on ``(gateway, exec_id)``. Every difference is one row of the breaks
table, with a ``break_type``:

``missing``
    on the broker's statement, not in our books (we never booked it);
``extra``
    in our books, not on the statement (the broker does not know it);
``quantity_mismatch``, ``price_mismatch``, ``fee_mismatch``, ``side_mismatch``,
``symbol_mismatch``, ``order_mismatch``
    matched, but that field differs (prices and fees beyond ``tolerance``);
``duplicate``
    one execution id appears more than once on one side (``source`` says which);
``allocation_mismatch``
    the accounts' fills of one of our executions do not add up to its quantity.
"""

from __future__ import annotations

import polars as pl

__all__ = ["BREAK_TYPES", "reconcile"]

BREAK_TYPES = ("missing", "extra", "quantity_mismatch", "price_mismatch", "fee_mismatch",
               "side_mismatch", "symbol_mismatch", "order_mismatch", "duplicate",
               "allocation_mismatch")
_KEY = ["gateway", "exec_id"]
_SCHEMA = {"break_type": pl.String, "source": pl.String, "gateway": pl.String,
           "exec_id": pl.String, "order_id": pl.String, "symbol": pl.String,
           "ours": pl.String, "theirs": pl.String, "detail": pl.String}


def _fmt(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.String)


def _beyond(diff: pl.Expr, tolerance: float) -> pl.Expr:
    """``|diff| > tolerance``, the difference taken to 9 decimals first: 100.005 - 100.00 is
    0.00500000000000256 in binary floating point, and is exactly at a half-cent tolerance."""
    return diff.abs().round(9) > tolerance


def reconcile(executions: pl.DataFrame, statement: pl.DataFrame, fills: pl.DataFrame,
              tolerance: float = 0.005) -> pl.DataFrame:
    """Every break between ``executions`` (ours) and ``statement`` (the broker's).

    Returns the breaks table (columns ``break_type, source, gateway, exec_id, order_id,
    symbol, ours, theirs, detail``), empty when everything agrees.
    """
    parts: list[pl.DataFrame] = []
    for source, frame in (("ours", executions), ("theirs", statement)):
        dup = frame.filter(pl.len().over(_KEY) > 1).group_by(_KEY, maintain_order=True).agg(
            pl.col("order_id").first(), pl.col("symbol").first(), pl.len().alias("n"))
        parts.append(dup.select(
            pl.lit("duplicate").alias("break_type"), pl.lit(source).alias("source"), *_KEY,
            "order_id", "symbol", pl.lit(None, pl.String).alias("ours"),
            pl.lit(None, pl.String).alias("theirs"),
            pl.format("exec_id appears {} times", pl.col("n")).alias("detail")))
    cols = ["order_id", "symbol", "side", "quantity", "price", "fee"]
    ours = executions.unique(_KEY, keep="first", maintain_order=True).select(*_KEY, *cols)
    theirs = statement.unique(_KEY, keep="first", maintain_order=True).select(*_KEY, *cols)
    j = ours.join(theirs, on=_KEY, how="full", coalesce=True, suffix="_theirs").with_columns(
        pl.col("order_id").is_not_null().alias("_ours"),
        pl.col("order_id_theirs").is_not_null().alias("_theirs"))
    base: list[pl.Expr | str] = [
        *_KEY, pl.coalesce("order_id", "order_id_theirs").alias("order_id"),
        pl.coalesce("symbol", "symbol_theirs").alias("symbol")]
    parts.append(j.filter(~pl.col("_ours")).select(
        pl.lit("missing").alias("break_type"), pl.lit("theirs").alias("source"), *base,
        pl.lit(None, pl.String).alias("ours"),
        pl.format("{} {} @ {}", "side_theirs", "quantity_theirs", "price_theirs")
        .alias("theirs"),
        pl.lit("on the broker's statement, not in our books").alias("detail")))
    parts.append(j.filter(~pl.col("_theirs")).select(
        pl.lit("extra").alias("break_type"), pl.lit("ours").alias("source"), *base,
        pl.format("{} {} @ {}", "side", "quantity", "price").alias("ours"),
        pl.lit(None, pl.String).alias("theirs"),
        pl.lit("in our books, not on the broker's statement").alias("detail")))
    both = j.filter(pl.col("_ours") & pl.col("_theirs"))
    checks = [
        ("quantity_mismatch", "quantity", pl.col("quantity") != pl.col("quantity_theirs")),
        ("price_mismatch", "price", _beyond(pl.col("price") - pl.col("price_theirs"), tolerance)),
        ("fee_mismatch", "fee", _beyond(pl.col("fee") - pl.col("fee_theirs"), tolerance)),
        ("side_mismatch", "side", pl.col("side") != pl.col("side_theirs")),
        ("symbol_mismatch", "symbol", pl.col("symbol") != pl.col("symbol_theirs")),
        ("order_mismatch", "order_id", pl.col("order_id") != pl.col("order_id_theirs")),
    ]
    for kind, col, cond in checks:
        parts.append(both.filter(cond).select(
            pl.lit(kind).alias("break_type"), pl.lit("both").alias("source"), *base,
            _fmt(col).alias("ours"), _fmt(f"{col}_theirs").alias("theirs"),
            pl.lit(f"{col} differs").alias("detail")))
    alloc = (fills.group_by(_KEY).agg(pl.col("quantity").sum().alias("allocated"))
             .join(ours, on=_KEY, how="full", coalesce=True)
             .with_columns(pl.col("allocated", "quantity").fill_null(0))
             .filter(pl.col("allocated") != pl.col("quantity")))
    parts.append(alloc.select(
        pl.lit("allocation_mismatch").alias("break_type"), pl.lit("ours").alias("source"),
        "gateway", "exec_id", "order_id", "symbol", _fmt("quantity").alias("ours"),
        _fmt("allocated").alias("theirs"),
        pl.lit("the accounts' fills do not add up to the execution").alias("detail")))
    out = pl.concat([p.cast(_SCHEMA) for p in parts])  # type: ignore[arg-type]
    return out.sort("break_type", "gateway", "exec_id", nulls_last=True)
