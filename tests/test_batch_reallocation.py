"""Shortfall re-allocation per fill policy, and the next day's top-ups."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl

from mats.batch.reallocation import reallocate, topup_orders
from mats.models import AllocationMethod

POLICIES = pl.DataFrame({
    "account_id": ["P1", "P2", "R1", "A1", "R2", "R3", "R4"],
    "fill_policy": ["priority", "priority", "pro_rata", "as_allocated", "pro_rata",
                    "as_allocated", "pro_rata"],
    "fill_priority": [0, 1, 0, 0, 0, 0, 0],
    "book_rank": [5, 4, 3, 2, 6, 1, 0],
})
BLOCKS = pl.DataFrame({"order_id": ["B1", "B2", "B3"], "strategy": ["g", "g", "v"],
                       "symbol": ["XYZ", "LOT", "XYZ"], "side": ["buy", "buy", "sell"],
                       "close_price": [10.0, 20.0, 30.0]})
INSTRUMENTS = pl.DataFrame({"symbol": ["XYZ", "LOT"], "lot_size": [1, 100]})


def _run(lots: list[tuple[str, str, int]], fills: list[tuple[str, str, int]]
         ) -> tuple[dict[tuple[str, str], dict[str, object]], pl.DataFrame]:
    lf = pl.DataFrame(lots, schema={"order_id": pl.String, "account_id": pl.String,
                                    "allocated": pl.Int64}, orient="row")
    ff = pl.DataFrame(fills, schema={"order_id": pl.String, "account_id": pl.String,
                                     "quantity": pl.Int64}, orient="row")
    final, topups = reallocate(lf, ff, BLOCKS, POLICIES, INSTRUMENTS, date(2025, 6, 16))
    return {(r["order_id"], r["account_id"]): r for r in final.iter_rows(named=True)}, topups


def test_priority_first_then_pro_rata_and_carried_shortfall() -> None:
    # 1,000 allocated, 700 filled: P1 (priority 0) 300, P2 (priority 1) 200 take 500 first;
    # the 200 left go to R1 and A1 in proportion 300:200 -> 120 and 80.
    lots = [("B1", "P1", 300), ("B1", "P2", 200), ("B1", "R1", 300), ("B1", "A1", 200)]
    booked = [("B1", "P1", 250), ("B1", "P2", 200), ("B1", "R1", 150), ("B1", "A1", 100)]
    final, topups = _run(lots, booked)
    assert {k[1]: v["target"] for k, v in final.items()} == {
        "P1": 300, "P2": 200, "R1": 120, "A1": 80}
    assert {k[1]: v["adjustment"] for k, v in final.items()} == {
        "P1": 50, "P2": 0, "R1": -30, "A1": -20}
    assert final[("B1", "R1")]["shortfall"] == 180 and not final[("B1", "R1")]["carried"]
    assert final[("B1", "A1")]["shortfall"] == 120 and final[("B1", "A1")]["carried"]
    assert topups.select("source_order_id", "account_id", "quantity", "side",
                         "reference_price").rows() == [("B1", "A1", 120, "buy", 10.0)]
    assert topups["trade_date"].to_list() == [date(2025, 6, 16)]


def test_priority_order_when_short() -> None:
    # only 250 filled: all of it to P1 (priority 0, allocated 300); P2 and R1 get nothing
    lots = [("B1", "P1", 300), ("B1", "P2", 200), ("B1", "R1", 300)]
    final, _ = _run(lots, [("B1", "P2", 250)])
    assert {k[1]: v["target"] for k, v in final.items()} == {"P1": 250, "P2": 0, "R1": 0}


def test_largest_remainder_ties_go_by_book_order() -> None:
    # 7 shares over three equal pro-rata allocations: 2 each, the odd share to the first in
    # the book (R4 has book rank 0, R1 3, R2 6)
    lots = [("B3", "R1", 3), ("B3", "R2", 3), ("B3", "R4", 3)]
    final, _ = _run(lots, [("B3", "R1", 7)])
    assert {k[1]: v["target"] for k, v in final.items()} == {"R1": 2, "R2": 2, "R4": 3}
    assert sum(int(str(v["target"])) for v in final.values()) == 7


def test_topups_in_whole_lots_become_block_orders() -> None:
    # LOT trades in lots of 100: a carried shortfall of 250 tops up 200
    lots = [("B2", "A1", 500), ("B2", "R3", 300)]
    final, topups = _run(lots, [("B2", "A1", 250), ("B2", "R3", 150)])
    assert final[("B2", "A1")]["shortfall"] == 250 and final[("B2", "R3")]["shortfall"] == 150
    assert topups.select("account_id", "quantity").rows() == [("A1", 200), ("R3", 100)]
    (order,) = topup_orders(topups, datetime(2025, 6, 16, 13, 30, tzinfo=UTC))
    assert order.method is AllocationMethod.SHARES and order.quantity == 300
    assert order.shares == {"A1": 200, "R3": 100} and order.order_id == "TOPUP-B2"
