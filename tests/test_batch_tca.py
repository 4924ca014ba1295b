"""Implementation shortfall (Perold 1988) on a block computed by hand, and TCA groupings."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from mats.batch.eod_tables import BLOCKS, EXECUTIONS, FILLS, LOTS
from mats.batch.tca import lot_costs, tca_by_dimension

T = datetime(2025, 6, 13, 14, 5, tzinfo=UTC)  # 10:05 in New York


def _frames() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    blocks = pl.DataFrame([
        {"order_id": "B1", "strategy": "growth", "allocator": "net_liq", "symbol": "XYZ",
         "side": "buy", "decision_time": T, "decision_price": 100.0, "arrival_time": T,
         "arrival_price": 100.5, "vwap": 100.8, "close_price": 102.0},
        {"order_id": "S1", "strategy": "value", "allocator": "equal", "symbol": "ABC",
         "side": "sell", "decision_time": T, "decision_price": 50.0,
         "arrival_time": datetime(2025, 6, 13, 19, 40, tzinfo=UTC),
         "arrival_price": 49.8, "vwap": 49.75, "close_price": 49.0},
    ], schema=BLOCKS.schema)
    lots = pl.DataFrame([("B1", "A", "gw1", 1000), ("B1", "B", "gw2", 500),
                         ("S1", "A", "gw1", 200)], schema=LOTS.schema, orient="row")
    executions = pl.DataFrame([
        ("E1", "B1", "gw1", "XYZ", "buy", 600, 100.6, 6.0, T),
        ("E2", "B1", "gw1", "XYZ", "buy", 300, 101.0, 3.0, T),
        ("E3", "S1", "gw1", "ABC", "sell", 100, 49.7, 1.0, T),
    ], schema=EXECUTIONS.schema, orient="row")
    fills = pl.DataFrame([("gw1", "E1", "B1", "A", 400), ("gw1", "E1", "B1", "B", 200),
                          ("gw1", "E2", "B1", "A", 200), ("gw1", "E2", "B1", "B", 100),
                          ("gw1", "E3", "S1", "A", 100)], schema=FILLS.schema, orient="row")
    return blocks, lots, executions, fills


def test_implementation_shortfall_by_hand() -> None:
    lots = lot_costs(*(f.lazy() for f in _frames())).collect().sort("order_id", "account_id")
    got = {(r["order_id"], r["account_id"]): r for r in lots.iter_rows(named=True)}
    # Account A, buy: 1000 allocated at a decision price of 100; 400 @ 100.60 and
    # 200 @ 101.00 filled (60,440), arrival 100.50, close 102, fees 0.01 a share.
    a = got[("B1", "A")]
    assert a["delay"] == pytest.approx(600 * 0.50)                    # 300
    assert a["execution"] == pytest.approx(60_440 - 600 * 100.5)      # 140
    assert a["opportunity"] == pytest.approx(400 * 2.0)               # 800
    assert a["fees"] == pytest.approx(6.0)
    assert a["shortfall"] == pytest.approx(1_246.0)
    b = got[("B1", "B")]
    assert (b["delay"], b["execution"], b["opportunity"], b["fees"]) == pytest.approx(
        (150.0, 70.0, 400.0, 3.0))
    # The sell: 200 allocated at 50, 100 sold @ 49.70 (arrival 49.80, close 49, fee 1).
    s = got[("S1", "A")]
    assert (s["delay"], s["execution"], s["opportunity"], s["fees"]) == pytest.approx(
        (20.0, 10.0, 100.0, 1.0))
    # Perold's definition: paper gain minus real gain, marked at the close.
    paper = 1_500 * (102.0 - 100.0)
    real = 900 * 102.0 - (600 * 100.6 + 300 * 101.0) - 9.0
    assert a["shortfall"] + b["shortfall"] == pytest.approx(paper - real)   # 1,869


def test_tca_by_dimension() -> None:
    lots = lot_costs(*(f.lazy() for f in _frames()))
    t = tca_by_dimension(lots)
    row = {(r["dimension"], r["key"]): r for r in t.iter_rows(named=True)}
    firm = row[("firm", "all")]
    assert firm["shortfall"] == pytest.approx(1_246 + 623 + 131)
    assert row[("strategy", "growth")]["shortfall_bps"] == pytest.approx(
        1e4 * 1_869 / 150_000)                                    # 124.6 bps
    acct_b = row[("account_id", "B")]
    assert acct_b["arrival_slippage_bps"] == pytest.approx(1e4 * 70 / (300 * 100.5))
    assert acct_b["vwap_slippage_bps"] == pytest.approx(1e4 * (30_220 - 300 * 100.8)
                                                        / (300 * 100.8))
    assert acct_b["fill_rate"] == pytest.approx(0.6)
    assert row[("gateway", "gw2")]["shortfall"] == pytest.approx(623.0)
    assert row[("allocator", "equal")]["shortfall"] == pytest.approx(131.0)
    # time of day in New York: the buy arrived 10:05 (the 10:00 bucket), the sell 15:40
    assert row[("bucket", "10:00")]["shortfall"] == pytest.approx(1_869.0)
    assert row[("bucket", "15:30")]["shortfall"] == pytest.approx(131.0)
    for dim in ("account_id", "strategy", "allocator", "gateway", "bucket"):
        part = t.filter(pl.col("dimension") == dim)
        assert part["shortfall"].sum() == pytest.approx(firm["shortfall"])


def test_block_dimensions_summed_over_blocks_match_the_lots() -> None:
    """Strategy, allocator and bucket are summed over the blocks' sums; the same figures as
    summing the lots of each value directly."""
    lots = lot_costs(*(f.lazy() for f in _frames())).collect()
    # a third block of the same strategy, so that a key spans blocks
    more = lots.filter(pl.col("order_id") == "B1").with_columns(
        pl.lit("B2").alias("order_id"), pl.lit("13:00").alias("bucket"))
    lots = pl.concat([lots, more])
    fast = tca_by_dimension(lots.lazy())
    direct = tca_by_dimension(lots.lazy(), block_dimensions=())
    assert fast.columns == direct.columns
    assert fast.select("dimension", "key", "lots").equals(direct.select("dimension", "key", "lots"))
    for col in fast.columns[3:]:
        assert fast[col].to_list() == pytest.approx(direct[col].to_list(), rel=1e-12), col
    assert fast.filter(pl.col("dimension") == "strategy", pl.col("key") == "growth")["lots"][0] == 4


def test_an_execution_id_two_gateways_share_is_two_executions() -> None:
    """Two brokers may use the same execution id: each fill is priced by its own gateway's."""
    blocks, lots, executions, fills = _frames()
    # gw2 reports an E1 of its own, at another price, for account B's shares
    executions = pl.concat([executions, pl.DataFrame(
        [("E1", "B1", "gw2", "XYZ", "buy", 200, 100.0, 2.0, T)], schema=EXECUTIONS.schema,
        orient="row")])
    fills = fills.with_columns(
        pl.when((pl.col("exec_id") == "E1") & (pl.col("account_id") == "B")).then(pl.lit("gw2"))
        .otherwise(pl.col("gateway")).alias("gateway"))
    got = {(r["order_id"], r["account_id"]): r for r in lot_costs(
        *(f.lazy() for f in (blocks, lots, executions, fills))).collect().iter_rows(named=True)}
    assert got[("B1", "B")]["filled_notional"] == pytest.approx(200 * 100.0 + 100 * 101.0)
    assert got[("B1", "B")]["fees"] == pytest.approx(2.0 + 1.0)
    assert got[("B1", "A")]["filled_notional"] == pytest.approx(400 * 100.6 + 200 * 101.0)
    assert got[("B1", "A")]["filled"] == 600 and got[("B1", "B")]["filled"] == 300


def test_a_fill_of_another_gateways_execution_gets_no_price_either_way() -> None:
    """With unique execution ids the fills join on the id alone; a fill naming the wrong
    gateway is left unpriced, as the join on gateway and id leaves it."""
    blocks, lots, executions, fills = _frames()
    fills = fills.with_columns(pl.when(pl.col("exec_id") == "E2").then(pl.lit("gw9"))
                               .otherwise(pl.col("gateway")).alias("gateway"))
    fast = lot_costs(*(f.lazy() for f in (blocks, lots, executions, fills))).collect()
    # a shared id elsewhere (another gateway's E3, nobody's fill) takes the two-column join
    other = pl.DataFrame([("E3", "S1", "gw8", "ABC", "sell", 100, 49.0, 1.0, T)],
                         schema=EXECUTIONS.schema, orient="row")
    shared = pl.concat([executions, other])
    both = lot_costs(*(f.lazy() for f in (blocks, lots, shared, fills))).collect()
    key = ["order_id", "account_id"]
    assert fast.sort(key).equals(both.sort(key))
    a = fast.filter(pl.col("order_id") == "B1", pl.col("account_id") == "A").row(0, named=True)
    assert a["filled"] == 600 and a["filled_notional"] == pytest.approx(400 * 100.6)
