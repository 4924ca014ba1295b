"""Performance attribution: Brinson-Fachler sector effects against a benchmark, and each
account's allocation effect (drift from its target weights, cash drag).

Brinson-Fachler [1] (the Brinson, Hood and Beebower decomposition [2] with the allocation effect
measured against the benchmark's total return). For each sector ``i``, with portfolio and
benchmark weights ``wp_i, wb_i``, sector returns ``rp_i, rb_i`` and benchmark return
``Rb = Σ wb_i rb_i``::

    allocation_i  = (wp_i - wb_i) (rb_i - Rb)
    selection_i   = wb_i (rp_i - rb_i)
    interaction_i = (wp_i - wb_i) (rp_i - rb_i)

and the three add up, over sectors, to ``Rp - Rb``. A sector the portfolio does not hold takes
``rp_i = rb_i`` (no selection); a sector outside the benchmark takes ``rb_i = rp_i``, so the
off-benchmark bet is all allocation. The day is one period: weights are the start-of-day market
values over the invested total (an account whose net invested value is not positive is left
out), returns are ``close / prev_close - 1``.

[1] G. P. Brinson and N. Fachler, "Measuring non-US equity portfolio performance", *Journal of
    Portfolio Management* 11(3), 73-76, 1985.
[2] G. P. Brinson, L. R. Hood and G. L. Beebower, "Determinants of portfolio performance",
    *Financial Analysts Journal* 42(4), 39-44, 1986.
"""

from __future__ import annotations

import polars as pl

__all__ = ["allocation_effect", "brinson_fachler", "sector_weights"]


def brinson_fachler(sectors: pl.DataFrame, by: str = "account_id") -> pl.DataFrame:
    """Effects per sector from ``by, sector, wp, rp, wb, rb`` (weights sum to 1 per ``by``).

    Adds ``Rp, Rb, allocation, selection, interaction, total`` (``total`` per sector is the
    sum of the three; summed over sectors it is ``Rp - Rb``).
    """
    df = sectors.with_columns(
        pl.when(pl.col("wp") == 0).then(pl.col("rb")).otherwise(pl.col("rp")).alias("rp"))
    df = df.with_columns(
        pl.when(pl.col("wb") == 0).then(pl.col("rp")).otherwise(pl.col("rb")).alias("rb"))
    df = df.with_columns((pl.col("wb") * pl.col("rb")).sum().over(by).alias("Rb"),
                         (pl.col("wp") * pl.col("rp")).sum().over(by).alias("Rp"))
    a = (pl.col("wp") - pl.col("wb")) * (pl.col("rb") - pl.col("Rb"))
    s = pl.col("wb") * (pl.col("rp") - pl.col("rb"))
    i = (pl.col("wp") - pl.col("wb")) * (pl.col("rp") - pl.col("rb"))
    return df.with_columns(a.alias("allocation"), s.alias("selection"),
                           i.alias("interaction"), (a + s + i).alias("total"))


def _returns(market: pl.DataFrame) -> pl.DataFrame:
    return market.select("symbol", (pl.col("close") / pl.col("prev_close") - 1).alias("ret"))


def sector_weights(holdings: pl.DataFrame, market: pl.DataFrame, instruments: pl.DataFrame,
                   benchmark: pl.DataFrame, firm: bool = True) -> pl.DataFrame:
    """The :func:`brinson_fachler` input per account (and the whole firm as ``FIRM``).

    ``holdings``: ``account_id, symbol, quantity`` at the start of the day; ``market``:
    ``symbol, prev_close, close``; ``instruments``: ``symbol, sector``; ``benchmark``:
    ``symbol, weight``.
    """
    rets = _returns(market)
    h = holdings.select("account_id", "symbol", "quantity")
    if firm:
        h = pl.concat([h, h.group_by("symbol").agg(pl.col("quantity").sum())
                       .select(pl.lit("FIRM").alias("account_id"), "symbol", "quantity")])
    pos = (h.join(market.select("symbol", "prev_close"), on="symbol")
           .join(rets, on="symbol").join(instruments.select("symbol", "sector"), on="symbol")
           .with_columns((pl.col("quantity") * pl.col("prev_close")).alias("mv"))
           # weights need a positive invested total: a net-flat or net-short book is left out
           .filter(pl.col("mv").sum().over("account_id") > 0)
           .with_columns((pl.col("mv") / pl.col("mv").sum().over("account_id")).alias("w")))
    port = pos.group_by("account_id", "sector").agg(
        pl.col("w").sum().alias("wp"), (pl.col("w") * pl.col("ret")).sum().alias("_wr"))
    bench = (benchmark.join(rets, on="symbol").join(instruments.select("symbol", "sector"),
                                                    on="symbol")
             .with_columns((pl.col("weight") / pl.col("weight").sum()).alias("w"))
             .group_by("sector").agg(pl.col("w").sum().alias("wb"),
                                     (pl.col("w") * pl.col("ret")).sum().alias("_wrb")))
    accts = port.select("account_id").unique()
    grid = accts.join(pl.concat([port.select("sector"), bench.select("sector")]).unique(),
                      how="cross")
    return (grid.join(port, on=["account_id", "sector"], how="left")
            .join(bench, on="sector", how="left")
            .with_columns(pl.col("wp", "_wr", "wb", "_wrb").fill_null(0.0))
            .select("account_id", "sector", "wp",
                    pl.when(pl.col("wp") != 0).then(pl.col("_wr") / pl.col("wp"))
                    .otherwise(0.0).alias("rp"), "wb",
                    pl.when(pl.col("wb") != 0).then(pl.col("_wrb") / pl.col("wb"))
                    .otherwise(0.0).alias("rb"))
            .sort("account_id", "sector"))


def allocation_effect(holdings: pl.DataFrame, accounts: pl.DataFrame, market: pl.DataFrame,
                      targets: pl.DataFrame, benchmark_return: float,
                      cash_return: float = 0.0) -> pl.DataFrame:
    """Per account: how far it sits from its targets and what that cost or earned today.

    ``accounts``: ``account_id, cash, net_liq`` (start of day). Weights are fractions of net
    liquidation value, cash included (its target is 1 - Σ targets). Columns:

    ``drift``
        ½ Σ |w - w_target| over instruments and cash: the share of the account that would
        have to trade to be on target (0 on target, 1 fully off).
    ``drift_effect``
        Σ (w - w_target) r over instruments and cash: the day's return from being off target.
    ``cash_weight``, ``cash_drag``
        cash / net_liq, and ``cash_weight x (cash_return - benchmark_return)``: the return
        given up by holding cash instead of the benchmark.
    """
    rets = pl.concat([_returns(market),
                      pl.DataFrame({"symbol": ["$CASH"], "ret": [cash_return]})])
    nav = accounts.select("account_id", "cash", "net_liq")
    actual = pl.concat([
        holdings.join(market.select("symbol", "prev_close"), on="symbol")
        .join(nav, on="account_id")
        .select("account_id", "symbol",
                (pl.col("quantity") * pl.col("prev_close") / pl.col("net_liq")).alias("w")),
        nav.select("account_id", pl.lit("$CASH").alias("symbol"),
                   (pl.col("cash") / pl.col("net_liq")).alias("w")),
    ])
    tgt = targets.select("account_id", "symbol", pl.col("weight").alias("wt"))
    # every account's cash target, 1 - Σ targets: all of it for an account without targets
    invested = tgt.group_by("account_id").agg(pl.col("wt").sum().alias("_invested"))
    tgt = pl.concat([tgt, nav.join(invested, on="account_id", how="left").select(
        "account_id", pl.lit("$CASH").alias("symbol"),
        (1 - pl.col("_invested").fill_null(0.0)).alias("wt"))])
    both = (actual.join(tgt, on=["account_id", "symbol"], how="full", coalesce=True)
            .with_columns(pl.col("w", "wt").fill_null(0.0))
            .join(rets, on="symbol", how="left").with_columns(pl.col("ret").fill_null(0.0)))
    out = both.group_by("account_id").agg(
        (0.5 * (pl.col("w") - pl.col("wt")).abs().sum()).alias("drift"),
        ((pl.col("w") - pl.col("wt")) * pl.col("ret")).sum().alias("drift_effect"),
        pl.col("w").filter(pl.col("symbol") == "$CASH").sum().alias("cash_weight"))
    return out.with_columns(
        (pl.col("cash_weight") * (cash_return - benchmark_return)).alias("cash_drag")
    ).sort("account_id")
