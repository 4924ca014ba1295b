"""Fill allocation: executions handed back to a block's accounts at the same average price."""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mats import Engine
from mats.errors import OrderError
from mats.models import BlockOrder, Book
from mats.reference import ReferenceEngine, apportion

T0 = dt.datetime(2026, 11, 25, 14, 30, tzinfo=dt.UTC)


def fill_book(policies: list[tuple[str, int]], navs: list[float]) -> Book:
    mandates = [{"mandate_id": f"m{i}", "max_gross_leverage": 2.0, "fill_policy": p,
                 "fill_priority": r} for i, (p, r) in enumerate(policies)]
    return Book.model_validate({
        "instruments": [{"symbol": "MSFT", "sector": "Tech"}],
        "mandates": mandates,
        "accounts": [{"account_id": f"A{i}", "account_type": "margin", "mandate_id": f"m{i}",
                      "net_liq": nav, "cash": nav, "settled_cash": nav, "strategies": ["g"]}
                     for i, nav in enumerate(navs)],
        "risk": {"default_instrument_limit": {"max_quantity": 10**9, "max_notional": 1e15},
                 "max_reference_age_s": 1e9},
        "prices": {"MSFT": 10.0},
    })


def block(quantity: int, side: str = "buy", method: str = "net_liq") -> BlockOrder:
    return BlockOrder.model_validate({
        "order_id": "B1", "journey_id": "J1", "strategy": "g", "symbol": "MSFT", "side": side,
        "quantity": quantity, "reference_price": 10.0, "reference_time": T0, "method": method,
    })


def test_partial_fills_keep_pro_rata_accounts_in_step_at_one_average_price() -> None:
    e = Engine(fill_book([("pro_rata", 0)] * 3, [100_000, 200_000, 300_000]))
    d = e.decide(block(600), as_of=T0)
    assert [line.quantity for line in d.lines] == [100, 200, 300]
    f1 = e.execution("B1", "x1", 60, 10.00)
    assert f1 is not None
    assert [(f.account_id, f.quantity) for f in f1] == [("A0", 10), ("A1", 20), ("A2", 30)]
    f2 = e.execution("B1", "x2", 1, 10.30)
    assert f2 is not None
    # one share can go to one account only; the others are trued up to the new average price
    assert sum(f.quantity for f in f2) == 1
    avg = (60 * 10.00 + 10.30) / 61
    assert all(f.avg_price == pytest.approx(avg) for f in f2)
    # the accounts' cash adds up to the block's cost, to the cent
    spent = [100_000 - e.cash("A0")[0], 200_000 - e.cash("A1")[0], 300_000 - e.cash("A2")[0]]
    assert sum(spent) == pytest.approx(60 * 10.00 + 10.30, abs=1e-9)
    positions = [e.position(f"A{i}", "MSFT") for i in range(3)]
    for pos, cost in zip(positions, spent, strict=True):
        assert abs(cost - pos * avg) < 0.01 + 1e-9


def test_redelivered_execution_is_not_counted_twice() -> None:
    e = Engine(fill_book([("pro_rata", 0)], [1e6]))
    e.decide(block(100), as_of=T0)
    assert e.execution("B1", "x1", 40, 10.0) is not None
    assert e.execution("B1", "x1", 40, 10.0) is None
    assert e.position("A0", "MSFT") == 40
    assert e.open_orders("A0", "MSFT") == (60, 0)


def test_priority_accounts_are_filled_first_in_rank_order() -> None:
    e = Engine(fill_book([("pro_rata", 0), ("priority", 2), ("priority", 1)],
                         [1e6, 1e6, 1e6]))
    e.decide(block(300, method="equal"), as_of=T0)
    e.execution("B1", "x1", 150, 10.0)
    assert [e.position(f"A{i}", "MSFT") for i in range(3)] == [0, 50, 100]


def test_closing_records_shortfalls_and_releases_working_quantity() -> None:
    e = Engine(fill_book([("pro_rata", 0), ("as_allocated", 0)], [1e6, 1e6]))
    e.decide(block(200, method="equal"), as_of=T0)
    e.execution("B1", "x1", 50, 10.0)
    short = e.close_block("B1", "cancelled")
    assert [(s.account_id, s.filled, s.shortfall, s.carried) for s in short] == [
        ("A0", 25, 75, False), ("A1", 25, 75, True)]
    assert e.open_orders("A0", "MSFT") == (0, 0)
    assert e.cash("A0")[2] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(OrderError, match="closed"):
        e.execution("B1", "x2", 10, 10.0)


def test_overfill_and_unknown_block_are_refused() -> None:
    e = Engine(fill_book([("pro_rata", 0)], [1e6]))
    e.decide(block(100), as_of=T0)
    with pytest.raises(OrderError, match="overfills"):
        e.execution("B1", "x1", 101, 10.0)
    with pytest.raises(OrderError) as err:
        e.execution("NOPE", "x1", 1, 10.0)
    assert err.value.loc == ("order_id",)
    assert e.position("A0", "MSFT") == 0


def test_sell_fills_credit_cash() -> None:
    book = fill_book([("pro_rata", 0)], [1e6])
    acct = book.accounts[0].model_copy(update={"positions": {"MSFT": 500}})
    e = Engine(book.model_copy(update={"accounts": [acct]}))
    e.decide(block(200, side="sell"), as_of=T0)
    e.execution("B1", "x1", 200, 11.0)
    assert e.position("A0", "MSFT") == 300
    assert e.cash("A0")[0] == pytest.approx(1e6 + 2200.0)


def test_a_block_at_two_brokers_fills_each_brokers_accounts_from_its_own_child_order() -> None:
    book = fill_book([("pro_rata", 0)] * 4, [100_000.0] * 4)
    brokers = {"A0": "pb-x", "A1": "pb-y", "A2": "pb-x", "A3": "pb-y"}
    book = book.model_copy(update={"accounts": [
        a.model_copy(update={"broker": brokers[a.account_id]}) for a in book.accounts]})
    engines: list[Engine | ReferenceEngine] = [Engine(book), ReferenceEngine(book)]
    for e in engines:
        e.process(block(400), as_of=T0)
        with pytest.raises(OrderError, match="went to 2 brokers"):
            e.execution("B1", "x1", 10, 10.0)
        fills = e.execution("B1:pb-x", "x1", 100, 10.5)
        assert fills is not None
        got = sorted((f["account_id"], f["quantity"]) if isinstance(f, dict)
                     else (f.account_id, f.quantity) for f in fills)
        assert got == [("A0", 50), ("A2", 50)]  # pb-y's accounts get nothing from pb-x
        # the same execution id at the other broker is another execution
        assert e.execution("B1:pb-y", "x1", 60, 10.0) is not None
        assert e.position("A1", "MSFT") == 30 and e.position("A0", "MSFT") == 50
        first = e.close_block("B1:pb-x", "done")
        assert [(s["account_id"], s["shortfall"]) if isinstance(s, dict)
                else (s.account_id, s.shortfall) for s in first] == [("A0", 50), ("A2", 50)]
        rest = e.close_block("B1", "cancelled")  # the child orders still open
        assert [(s["account_id"], s["shortfall"]) if isinstance(s, dict)
                else (s.account_id, s.shortfall) for s in rest] == [("A1", 70), ("A3", 70)]
        with pytest.raises(OrderError, match="already closed"):
            e.close_block("B1", "done")
        if isinstance(e, Engine):
            assert e.open_orders("A3", "MSFT") == (0, 0)


def test_apportion() -> None:
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(7, [100, 200, 400]) == [1, 2, 4]


POLICIES = st.sampled_from([("pro_rata", 0), ("priority", 1), ("priority", 2),
                            ("as_allocated", 0)])


@st.composite
def fill_runs(draw: st.DrawFn) -> tuple[list[tuple[str, int]], list[float], int, list[Any]]:
    n = draw(st.integers(1, 7))
    policies = [draw(POLICIES) for _ in range(n)]
    navs = [float(draw(st.integers(10_000, 5_000_000))) for _ in range(n)]
    qty = draw(st.integers(1, 5_000))
    steps: list[Any] = []
    left = qty
    for k in range(draw(st.integers(1, 25))):
        if left == 0:
            break
        q = draw(st.integers(1, min(left, draw(st.sampled_from([1, 3, 50, left])))))
        px = draw(st.integers(900, 1100)) / 100
        steps.append((f"x{k}", q, px))
        left -= q
        if draw(st.integers(0, 5)) == 0:
            steps.append((f"x{k}", q, px))  # redelivered
    return policies, navs, qty, steps


@settings(max_examples=int(os.environ.get("MATS_HYPOTHESIS_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(fill_runs())
def test_fills_match_reference_and_keep_their_invariants(run: Any) -> None:
    policies, navs, qty, steps = run
    book = fill_book(policies, navs)
    rust, ref = Engine(book), ReferenceEngine(book)
    d = rust.decide(block(qty), as_of=T0)
    ref.process(block(qty), as_of=T0)
    policy = {f"A{i}": p for i, (p, _) in enumerate(policies)}
    nav = {f"A{i}": v for i, v in enumerate(navs)}
    alloc = {line.account_id: line.quantity for line in d.lines if line.quantity > 0}
    group = [a for a in alloc if policy[a] != "priority"]
    filled = dict.fromkeys(alloc, 0)
    cum = 0
    notional = 0.0
    group_got = 0
    seen: set[str] = set()
    total = sum(alloc.values())
    for exec_id, q, px in steps:
        if cum + q > total and exec_id not in seen:
            # more than the accounts could take: an overfill, refused by both, nothing booked
            with pytest.raises(OrderError, match="overfills"):
                rust.execution("B1", exec_id, q, px)
            with pytest.raises(OrderError, match="overfills"):
                ref.execution("B1", exec_id, q, px)
            continue
        seen.add(exec_id)
        r_out = rust.execution("B1", exec_id, q, px)
        p_out = ref.execution("B1", exec_id, q, px)
        if p_out is None:
            assert r_out is None
            continue
        assert r_out is not None
        assert [(f.account_id, f.quantity, f.filled) for f in r_out] == [
            (f["account_id"], f["quantity"], f["filled"]) for f in p_out]
        for a, b in zip(r_out, p_out, strict=True):
            assert a.cash_delta == pytest.approx(b["cash_delta"], abs=1e-9)
            assert a.avg_price == pytest.approx(b["avg_price"], rel=1e-12)
        cum += q
        notional += q * px
        assert sum(f.quantity for f in r_out) == q
        for f in r_out:
            assert f.quantity >= 0
            filled[f.account_id] += f.quantity
            group_got += f.quantity if f.account_id in group else 0
        a_group = sum(alloc[a] for a in group)
        for a in alloc:
            assert filled[a] <= alloc[a]
            assert rust.position(a, "MSFT") == filled[a]
            if a in group:
                # every pro-rata account within one share of its exact share
                assert abs(filled[a] - group_got * alloc[a] / a_group) < 1
        # the same average price: each account's cost is its quantity at the block's average,
        # to the cent, and the costs add up to the block's
        avg = notional / cum
        costs = [nav[a] - rust.cash(a)[0] for a in alloc]
        assert sum(costs) == pytest.approx(math.floor(notional * 100 + 0.5) / 100, abs=1e-6)
        for a, cost in zip(alloc, costs, strict=True):
            assert abs(cost - filled[a] * avg) < 0.01 + 1e-6
    short_r = rust.close_block("B1", "done")
    short_p = ref.close_block("B1", "done")
    assert [(s.account_id, s.shortfall, s.carried) for s in short_r] == [
        (s["account_id"], s["shortfall"], s["carried"]) for s in short_p]
    assert sum(s.shortfall for s in short_r) == sum(alloc.values()) - cum
    for a in alloc:
        assert rust.open_orders(a, "MSFT") == (0, 0)
