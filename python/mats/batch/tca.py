"""Transaction cost analysis: implementation shortfall and slippage per lot, then per account,
strategy, allocator (allocation method), gateway and time-of-day bucket.

Perold's implementation shortfall [1] is the paper portfolio's gain (every allocated share
traded at the decision price) minus the real one. For one account's lot of a block, with side
sign ``s`` (+1 buy, -1 sell), allocated shares ``Q``, filled shares ``X`` at prices ``p_j``
(``Σ q_j = X``), decision price ``P_d``, arrival price ``P_a`` and close ``P_c``::

    delay        = s · X · (P_a - P_d)              # the market moved before the order arrived
    execution    = s · Σ q_j · (p_j - P_a)          # impact: paid against the arrival price
    opportunity  = s · (Q - X) · (P_c - P_d)        # shares never filled, marked at the close
    fees         = the lot's share of the executions' fees (pro rata to shares)
    shortfall    = delay + execution + opportunity + fees

The delay / execution split of Perold's execution cost follows Wagner and Edwards [2]. In basis
points, the shortfall is over the paper notional ``Q · P_d``; arrival-price slippage is
``s · Σ q_j (p_j - P_a) / (X · P_a)`` and VWAP slippage ``s · Σ q_j (p_j - VWAP) / (X · VWAP)``,
both x 10⁴ and positive when they cost. A fill is priced at its execution's price, so that
Σ over accounts is the block exactly; fees are shared by shares filled.

[1] A. F. Perold, "The implementation shortfall: paper versus reality", *Journal of Portfolio
    Management* 14(3), 4-9, 1988.
[2] W. H. Wagner and M. Edwards, "Best execution", *Financial Analysts Journal* 49(1), 65-71,
    1993.
"""

from __future__ import annotations

import polars as pl

__all__ = ["BLOCK_DIMENSIONS", "DIMENSIONS", "lot_costs", "tca", "tca_by_dimension"]

DIMENSIONS = ("account_id", "strategy", "allocator", "gateway", "bucket")
BLOCK_DIMENSIONS = ("strategy", "allocator", "bucket")  # one value per block
_SUMS = ("allocated", "filled", "paper_notional", "filled_notional", "arrival_notional",
         "vwap_notional", "delay", "execution", "opportunity", "fees", "shortfall", "vwap_cost")


def lot_costs(blocks: pl.LazyFrame, lots: pl.LazyFrame, executions: pl.LazyFrame,
              fills: pl.LazyFrame, time_zone: str = "America/New_York",
              bucket_minutes: int = 30) -> pl.LazyFrame:
    """One row per lot (block x account) with its shortfall components, in currency.

    ``bucket`` is the block's arrival time in ``time_zone``, floored to ``bucket_minutes``
    (``"09:30"``): the time-of-day the order went to market.

    The lots' gateways are read at once (one pass over ``lots``' ``gateway`` column, before
    the plan returned runs): a scan of a file reads that column twice.
    """
    # A fill is its execution's, and an execution its gateway's: two brokers may report the
    # same exec_id, so fills meet their execution on both columns.
    price = (pl.col("price"), (pl.col("fee") / pl.col("quantity")).alias("fee_per_share"))
    gateway = pl.col("gateway").cast(pl.String)  # (a Categorical one too)
    priced = (fills.select(gateway, "exec_id", "order_id", "account_id", "quantity")
              .join(executions.select(gateway, "exec_id", *price), on=["gateway", "exec_id"],
                    how="left"))
    # Lots and fills summed in one group-by (a lot's row brings its allocation, each fill its
    # shares): cheaper than summing the fills and joining the lots, and a fill without a lot
    # still shows up (allocated 0, so the output check on overfilled lots catches it). The
    # lot's gateway rides along as an Enum of the lots' gateways and comes back as a string
    # after the group-by: the max of a small integer per group is cheaper than of a string
    # (about 30 ms of 440 at 10M fills, bench/eod_bench.py).
    gateways = pl.Enum(lots.select(gateway.drop_nulls().unique().sort()).collect().to_series())
    zero_f, zero_i = pl.lit(0.0), pl.lit(0, pl.Int64)
    from_lots = lots.select("order_id", "account_id", pl.col("allocated").cast(pl.Int64),
                            gateway.cast(gateways), zero_i.alias("filled"),
                            zero_f.alias("filled_notional"), zero_f.alias("fees"))
    from_fills = (priced
                  .select("order_id", "account_id", zero_i.alias("allocated"),
                          pl.lit(None, gateways).alias("gateway"),
                          pl.col("quantity").cast(pl.Int64).alias("filled"),
                          (pl.col("quantity") * pl.col("price")).alias("filled_notional"),
                          (pl.col("quantity") * pl.col("fee_per_share")).alias("fees")))
    per_lot = pl.concat([from_lots, from_fills]).group_by("order_id", "account_id").agg(
        pl.col("allocated", "filled", "filled_notional", "fees").sum(),
        pl.col("gateway").max().cast(pl.String))
    b = blocks.select(
        "order_id", "strategy", "allocator", "symbol",
        pl.when(pl.col("side") == "buy").then(1.0).otherwise(-1.0).alias("sign"),
        "decision_price", "arrival_price", "vwap", "close_price",
        pl.col("arrival_time").dt.convert_time_zone(time_zone)
        .dt.truncate(f"{bucket_minutes}m").dt.strftime("%H:%M").alias("bucket"))
    s = pl.col("sign")
    q, x = pl.col("allocated"), pl.col("filled")
    return (per_lot
            .join(b, on="order_id", how="left")
            .with_columns(
                (q * pl.col("decision_price")).alias("paper_notional"),
                (x * pl.col("arrival_price")).alias("arrival_notional"),
                (x * pl.col("vwap")).alias("vwap_notional"),
                (s * x * (pl.col("arrival_price") - pl.col("decision_price"))).alias("delay"),
                (s * (pl.col("filled_notional") - x * pl.col("arrival_price")))
                .alias("execution"),
                (s * (q - x) * (pl.col("close_price") - pl.col("decision_price")))
                .alias("opportunity"),
                (s * (pl.col("filled_notional") - x * pl.col("vwap"))).alias("vwap_cost"))
            .with_columns((pl.col("delay") + pl.col("execution") + pl.col("opportunity")
                           + pl.col("fees")).alias("shortfall")))


def tca_by_dimension(lots: pl.LazyFrame,
                     dimensions: tuple[str, ...] = DIMENSIONS,
                     block_dimensions: tuple[str, ...] = BLOCK_DIMENSIONS) -> pl.DataFrame:
    """The lot costs summed per value of each dimension, plus the firm (``firm``, ``all``).

    Columns: ``dimension, key, lots`` then the sums (shares, notionals, cost components in
    currency) and ``shortfall_bps, arrival_slippage_bps, vwap_slippage_bps, fill_rate``.

    Dimensions in ``block_dimensions`` hold one value per block (``order_id``): their sums are
    taken over the blocks' sums, one group-by of the lots instead of one per dimension (every
    column summed is a sum over lots, so the totals are the same).
    """
    sums = [pl.col(c).sum() for c in _SUMS]
    per_block = [d for d in dimensions if d in block_dimensions]
    parts = [lots.group_by(pl.col(d).cast(pl.String).alias("key"))
             .agg(pl.len().alias("lots"), *sums)
             .with_columns(pl.lit(d).alias("dimension"))
             for d in dimensions if d not in per_block]
    if per_block:
        blocks = lots.group_by("order_id").agg(pl.len().alias("lots"), *sums,
                                               *(pl.col(d).first() for d in per_block))
        parts += [blocks.group_by(pl.col(d).cast(pl.String).alias("key"))
                  .agg(pl.col("lots", *_SUMS).sum())
                  .with_columns(pl.lit(d).alias("dimension")) for d in per_block]
    parts.append(lots.select(pl.len().alias("lots"), *sums)
                 .with_columns(pl.lit("all").alias("key"), pl.lit("firm").alias("dimension")))
    def ratio(num: str, den: str, scale: float = 1.0) -> pl.Expr:
        # empty (not NaN) where nothing was traded: no fills, no slippage to measure
        return pl.when(pl.col(den) != 0).then(scale * pl.col(num) / pl.col(den))

    out = pl.concat(parts, how="diagonal").with_columns(
        ratio("shortfall", "paper_notional", 1e4).alias("shortfall_bps"),
        ratio("execution", "arrival_notional", 1e4).alias("arrival_slippage_bps"),
        ratio("vwap_cost", "vwap_notional", 1e4).alias("vwap_slippage_bps"),
        ratio("filled", "allocated").alias("fill_rate"))
    cols = ["dimension", "key", "lots", *_SUMS, "shortfall_bps", "arrival_slippage_bps",
            "vwap_slippage_bps", "fill_rate"]
    return out.select(cols).sort("dimension", "key").collect()


def tca(blocks: pl.DataFrame, lots: pl.DataFrame, executions: pl.DataFrame,
        fills: pl.DataFrame, time_zone: str = "America/New_York",
        bucket_minutes: int = 30) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`lot_costs` and :func:`tca_by_dimension` on in-memory frames: (lots, by dimension).

    The lot costs run on polars' streaming engine: the join of every fill to its execution
    and the sum per lot are its best case (measured about 1.5-2x the in-memory engine at 10M
    fills, ``bench/eod_bench.py``).
    """
    per_lot = lot_costs(blocks.lazy(), lots.lazy(), executions.lazy(), fills.lazy(),
                        time_zone, bucket_minutes).collect(engine="streaming")
    return per_lot, tca_by_dimension(per_lot.lazy())
