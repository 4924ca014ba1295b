"""Property tests: the Rust core against the plain-Python reference, and the invariants."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from books import T0, books, mandate_breaches, orders
from mats import Engine
from mats.errors import MatsError
from mats.models import BlockOrder, Book
from mats.reference import ReferenceEngine

# More examples for a deeper search: MATS_HYPOTHESIS_EXAMPLES=5000 make test
EXAMPLES = int(os.environ.get("MATS_HYPOTHESIS_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, where
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _same_check(r: dict[str, Any] | None, p: dict[str, Any] | None, where: str) -> None:
    assert (r is None) == (p is None), f"{where}: {r} vs {p}"
    if r is None or p is None:
        return
    for key in ("code", "limit", "value", "cap"):
        if r[key] is None or p[key] is None:
            assert r[key] == p[key], f"{where}.{key}: {r[key]} vs {p[key]}"
        else:
            _close(r[key], p[key], f"{where}.{key}")


def assert_same_decision(rust: dict[str, Any], ref: dict[str, Any]) -> None:
    oid = ref["order_id"]
    for key in ("order_id", "journey_id", "status", "stage", "side", "requested_quantity",
                "placed_quantity", "unplaced_quantity"):
        assert rust[key] == ref[key], f"{oid}.{key}: {rust[key]!r} vs {ref[key]!r}"
    assert len(rust["l1_breaches"]) == len(ref["l1_breaches"]), (oid, rust["l1_breaches"],
                                                                  ref["l1_breaches"])
    for i, (r, p) in enumerate(zip(rust["l1_breaches"], ref["l1_breaches"], strict=True)):
        _same_check(r, p, f"{oid}.l1[{i}]")
    assert [c["code"] for c in rust["allocation_breaches"]] == [
        c["code"] for c in ref["allocation_breaches"]], oid
    assert len(rust["lines"]) == len(ref["lines"]), oid
    for r, p in zip(rust["lines"], ref["lines"], strict=True):
        where = f"{oid}.{p['account_id']}"
        for key in ("account_id", "allocated", "quantity", "status"):
            assert r[key] == p[key], f"{where}.{key}: {r[key]!r} vs {p[key]!r}"
        for key in ("weight", "requested", "ideal"):
            _close(r[key], p[key], f"{where}.{key}")
        _same_check(r["binding"], p["binding"], f"{where}.binding")
        assert len(r["l2_breaches"]) == len(p["l2_breaches"]), where
        for i, (a, b) in enumerate(zip(r["l2_breaches"], p["l2_breaches"], strict=True)):
            _same_check(a, b, f"{where}.l2[{i}]")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Book, list[tuple[str, Any]]]:
    book = draw(books())
    steps: list[tuple[str, Any]] = []
    for n in range(draw(st.integers(1, 6))):
        steps.append(("order", draw(orders(book, n))))
        what = draw(st.sampled_from(["none", "fill", "price", "kill", "preview", "cancel"]))
        if what == "fill":
            steps.append(("fill", draw(st.floats(0.1, 1.0))))
        elif what == "cancel":
            steps.append(("cancel", draw(st.floats(0.1, 1.0))))
        elif what == "preview":
            steps.append(("preview", draw(orders(book, 1000 + n))))
        elif what == "price":
            sym = draw(st.sampled_from(book.instruments)).symbol
            steps.append(("price", {sym: round(book.prices[sym] * draw(
                st.sampled_from([0.8, 1.05, 1.3])), 2)}))
        elif what == "kill":
            steps.append(("kill", draw(st.sampled_from(["reducing", "normal", "halted"]))))
    return book, steps


@SETTINGS
@given(scenarios())
def test_rust_matches_reference(scenario: tuple[Book, list[tuple[str, Any]]]) -> None:
    book, steps = scenario
    rust = Engine(book)
    ref = ReferenceEngine(book)
    last: dict[str, Any] | None = None
    for n, (kind, arg) in enumerate(steps):
        as_of = T0 + dt.timedelta(seconds=n)
        if kind in ("order", "preview"):
            commit = kind == "order"
            try:
                ref_d = ref.process(arg, as_of=as_of, commit=commit)
            except MatsError as e:
                try:
                    rust.process(arg, as_of=as_of, commit=commit)
                except MatsError as e2:
                    assert type(e2) is type(e)
                else:
                    raise AssertionError(f"reference refused {arg.order_id}, Rust did not: {e}")
                continue
            rust_d = json.loads(rust.process(arg, as_of=as_of, commit=commit).to_json())
            assert_same_decision(rust_d, ref_d)
            if commit:
                last = ref_d
        elif kind == "cancel" and last is not None and last["status"] == "accepted":
            for line in last["lines"]:
                q = int(line["quantity"] * arg)
                if q > 0:
                    ref.release(line["account_id"], last["symbol"], last["side"], q)
                    rust.release(line["account_id"], last["symbol"], last["side"], q)
        elif kind == "fill" and last is not None and last["status"] == "accepted":
            px = last["live_price"]
            for line in last["lines"]:
                q = int(line["quantity"] * arg)
                if q > 0:
                    ref.apply_fill(line["account_id"], last["symbol"], last["side"], q, px)
                    rust.apply_fill(line["account_id"], last["symbol"], last["side"], q, px)
        elif kind == "price":
            ref.update_prices(arg)
            rust.update_prices(arg)
        elif kind == "kill":
            ref.set_kill_switch(arg)
            rust.set_kill_switch(arg)
    for acct in book.accounts:
        for ins in book.instruments:
            assert rust.position(acct.account_id, ins.symbol) == ref.position(
                acct.account_id, ins.symbol)
        r_cash = rust.cash(acct.account_id)
        a = ref.accounts[ref.account_idx[acct.account_id]]
        for x, y in zip(r_cash, (a.cash, a.settled_cash, a.reserved_cash), strict=True):
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6)


@SETTINGS
@given(st.data())
def test_allocation_invariants(data: st.DataObject) -> None:
    """One block on a fresh book: sum within the block, no mandate broken, fair shares."""
    book = data.draw(books(max_accounts=12))
    order = data.draw(orders(book, 0))
    try:
        d = Engine(book).decide(order, as_of=T0)
    except MatsError:
        return
    placed = sum(line.quantity for line in d.lines)
    assert placed == d.placed_quantity
    if order.quantity is not None:
        assert placed <= order.quantity
        assert d.placed_quantity + d.unplaced_quantity == order.quantity
    if d.status != "accepted":
        assert placed == 0
        return
    ins = next(i for i in book.instruments if i.symbol == order.symbol)
    live = book.prices[order.symbol]
    by_id = {a.account_id: a for a in book.accounts}
    mandates = {m.mandate_id: m for m in book.mandates}
    for line in d.lines:
        acct = by_id[line.account_id]
        assert line.quantity % ins.lot_size == 0
        assert line.quantity >= 0
        for px in (order.reference_price, live):
            broken = mandate_breaches(book, acct, order.symbol, order.side, line.quantity, px)
            assert not broken, (line, px, broken)
        mtv = mandates[acct.mandate_id].min_trade_value
        if line.quantity > 0:
            assert line.quantity * order.reference_price >= mtv - 1e-6
        # rounding never moves an account a whole lot away from its constrained ideal share
        if line.status in ("ok", "capped"):
            assert abs(line.quantity - line.ideal) < ins.lot_size + 1e-6, line
    # the unplaced remainder is real: every account that got less than its pro-rata request
    # was held back by a reported limit
    if d.unplaced_quantity > 0 and order.quantity is not None:
        for line in d.lines:
            if line.weight > 0 and line.quantity < line.requested - ins.lot_size:
                assert line.binding is not None or line.l2_breaches, line


def test_long_capping_chains_match_the_reference() -> None:
    """Caps that bind one account per round exercise the sorted sweep after MAX_ROUNDS."""
    n = 20
    # Each cap sits a little below the level left after capping the accounts before it, by a
    # margin that shrinks faster than the level rises, so each round caps one more account:
    # more rounds than MAX_ROUNDS, which hands the rest to the sorted sweep.
    q0 = 10**12
    chain: list[int] = []
    level, margin = q0 / n, 4e9
    for _ in range(12):
        chain.append(int(level - margin))
        level = (q0 - sum(chain)) / (n - len(chain))
        margin = margin / (n - len(chain)) * 0.9
    chain += [q0] * (n - len(chain))
    _check_chain(chain, [q0, q0 - 5])
    _check_chain([2 ** i for i in range(n)], [2 ** n - 2, 2 ** (n - 1) + 7, 3 * n, 1_000])


def _check_chain(caps: list[int], quantities: list[int]) -> None:
    n = len(caps)
    mandates = [{"mandate_id": f"m{i}", "max_position_shares": caps[i],
                 "max_gross_leverage": 20.0} for i in range(n)]
    accounts = [{"account_id": f"A{i:02d}", "account_type": "margin", "mandate_id": f"m{i}",
                 "net_liq": 1e13, "cash": 1e13, "settled_cash": 1e13, "strategies": ["g"]}
                for i in range(n)]
    book = Book.model_validate({
        "instruments": [{"symbol": "S", "sector": "Tech"}], "mandates": mandates,
        "accounts": accounts, "prices": {"S": 1.0},
        "risk": {"default_instrument_limit": {"max_quantity": 10**14, "max_notional": 1e15}}})
    for q in quantities:
        o = BlockOrder.model_validate({
            "order_id": f"O{q}", "journey_id": f"J{q}", "strategy": "g", "symbol": "S",
            "side": "buy", "quantity": q, "reference_price": 1.0, "reference_time": T0,
            "method": "equal"})
        rust = json.loads(Engine(book).process(o, as_of=T0).to_json())
        ref = ReferenceEngine(book).process(o, as_of=T0)
        assert_same_decision(rust, ref)
        got = [line["quantity"] for line in rust["lines"]]
        assert sum(got) == q
        # water-filling: every account below its cap has the same share, within one share
        uncapped = [g for i, g in enumerate(got) if g < caps[i]]
        if uncapped:
            assert max(uncapped) - min(uncapped) <= 1
            # and every capped account's cap is at most that share
            assert all(g <= max(uncapped) + 1 for i, g in enumerate(got) if g == caps[i])
