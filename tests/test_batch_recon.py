"""Reconciliation with planted breaks: every kind is reported, nothing else is."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from mats.batch.eod_tables import EXECUTIONS, FILLS, STATEMENT
from mats.batch.recon import reconcile

T = datetime(2025, 6, 13, 15, 0, tzinfo=UTC)


def test_planted_breaks() -> None:
    ours = pl.DataFrame([
        ("E1", "B1", "gw", "XYZ", "buy", 100, 10.00, 1.0, T),    # agrees
        ("E2", "B1", "gw", "XYZ", "buy", 100, 10.00, 1.0, T),    # broker says 90 shares
        ("E3", "B1", "gw", "XYZ", "buy", 100, 10.00, 1.0, T),    # broker says 10.05
        ("E4", "B1", "gw", "XYZ", "buy", 100, 10.00, 1.0, T),    # not on the statement
        ("E6", "B1", "gw", "XYZ", "buy", 100, 10.00, 1.0, T),    # price within tolerance
        ("E7", "B1", "gw", "XYZ", "buy", 100, 10.00, 1.0, T),    # accounts got 90 of it
        ("E8", "B2", "gw", "ABC", "sell", 50, 20.00, 1.0, T),    # broker says buy
    ], schema=EXECUTIONS.schema, orient="row")
    theirs = pl.DataFrame([
        ("E1", "B1", "gw", "XYZ", "buy", 100, 10.00, 1.0),
        ("E2", "B1", "gw", "XYZ", "buy", 90, 10.00, 1.0),
        ("E3", "B1", "gw", "XYZ", "buy", 100, 10.05, 1.0),
        ("E5", "B1", "gw", "XYZ", "buy", 100, 10.00, 1.0),        # we never booked it
        ("E6", "B1", "gw", "XYZ", "buy", 100, 10.004, 1.0),
        ("E7", "B1", "gw", "XYZ", "buy", 100, 10.00, 1.0),
        ("E7", "B1", "gw", "XYZ", "buy", 100, 10.00, 1.0),        # sent twice
        ("E8", "B2", "gw", "ABC", "buy", 50, 20.00, 1.0),
        ("E1", "B1", "gw2", "XYZ", "buy", 100, 10.00, 1.0),       # other gateway's E1
    ], schema=STATEMENT.schema, orient="row")
    fills = pl.DataFrame(
        [("gw", e, o, "A", q) for e, o, q in [
            ("E1", "B1", 100), ("E2", "B1", 100), ("E3", "B1", 100), ("E4", "B1", 100),
            ("E6", "B1", 100), ("E7", "B1", 90), ("E8", "B2", 50)]],
        schema=FILLS.schema, orient="row")
    breaks = reconcile(ours, theirs, fills)
    got = sorted((r["break_type"], r["gateway"], r["exec_id"], r["ours"], r["theirs"])
                 for r in breaks.iter_rows(named=True))
    assert got == sorted([
        ("quantity_mismatch", "gw", "E2", "100", "90"),
        ("price_mismatch", "gw", "E3", "10.0", "10.05"),
        ("extra", "gw", "E4", "buy 100 @ 10.0", None),
        ("missing", "gw", "E5", None, "buy 100 @ 10.0"),
        ("missing", "gw2", "E1", None, "buy 100 @ 10.0"),
        ("duplicate", "gw", "E7", None, None),
        ("allocation_mismatch", "gw", "E7", "100", "90"),
        ("side_mismatch", "gw", "E8", "sell", "buy"),
    ])
    dup = breaks.filter(pl.col("break_type") == "duplicate").row(0, named=True)
    assert dup["source"] == "theirs" and dup["detail"] == "exec_id appears 2 times"


def test_clean_day_has_no_breaks() -> None:
    ours = pl.DataFrame([("E1", "B1", "gw", "XYZ", "buy", 100, 10.0, 1.0, T)],
                        schema=EXECUTIONS.schema, orient="row")
    theirs = ours.drop("exec_time")
    fills = pl.DataFrame([("gw", "E1", "B1", "A", 60), ("gw", "E1", "B1", "B", 40)],
                         schema=FILLS.schema, orient="row")
    assert reconcile(ours, theirs, fills).height == 0


def test_two_gateways_may_use_the_same_execution_id() -> None:
    """Executions are their gateway's: the same id from two brokers is two executions, and
    each one's fills add up to it."""
    ours = pl.DataFrame([("E1", "B1", "gw1", "XYZ", "buy", 100, 10.0, 1.0, T),
                         ("E1", "B1", "gw2", "XYZ", "buy", 50, 10.1, 0.5, T)],
                        schema=EXECUTIONS.schema, orient="row")
    fills = pl.DataFrame([("gw1", "E1", "B1", "A", 100), ("gw2", "E1", "B1", "B", 50)],
                         schema=FILLS.schema, orient="row")
    assert reconcile(ours, ours.drop("exec_time"), fills).height == 0
    short = fills.with_columns(pl.when(pl.col("gateway") == "gw2").then(40)
                               .otherwise(pl.col("quantity")).alias("quantity"))
    got = reconcile(ours, ours.drop("exec_time"), short)
    assert got.select("break_type", "gateway", "exec_id", "ours", "theirs").rows() == [
        ("allocation_mismatch", "gw2", "E1", "50", "40")]


def test_a_difference_of_exactly_the_tolerance_is_no_break() -> None:
    """Half a cent apart at a half-cent tolerance, whatever the price level's binary
    rounding (100.005 - 100.0 is 0.00500000000000256 in floating point)."""
    ours = pl.DataFrame([(f"E{i}", "B1", "gw", "XYZ", "buy", 100, p, 1.0, T)
                         for i, p in enumerate((1.0, 10.0, 100.0, 1000.0))],
                        schema=EXECUTIONS.schema, orient="row")
    theirs = ours.drop("exec_time").with_columns(pl.col("price") + 0.005)
    fills = ours.select("gateway", "exec_id", "order_id", pl.lit("A").alias("account_id"),
                        "quantity")
    assert reconcile(ours, theirs, fills, tolerance=0.005).height == 0
    beyond = reconcile(ours, theirs.with_columns(pl.col("price") + 0.0001), fills, 0.005)
    assert sorted(beyond["exec_id"]) == ["E0", "E1", "E2", "E3"]
