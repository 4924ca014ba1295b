"""The core engine through its Python face: allocation examples, every risk check, policies."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from mats import Engine
from mats.errors import BookError, OrderError
from mats.models import BlockOrder, Book, Decision, Mandate
from mats.reference import ReferenceEngine

T0 = dt.datetime(2026, 11, 25, 14, 30, tzinfo=dt.UTC)


def make_book(navs: list[float], *, mandate: dict[str, Any] | None = None,
              risk: dict[str, Any] | None = None, account: dict[str, Any] | None = None,
              prices: dict[str, float] | None = None, lot: int = 1) -> Book:
    return Book.model_validate({
        "instruments": [
            {"symbol": "MSFT", "sector": "Tech", "lot_size": lot, "beta": 1.2},
            {"symbol": "AAPL", "sector": "Tech", "lot_size": lot},
            {"symbol": "XOM", "sector": "Energy", "lot_size": lot, "beta": 0.8},
        ],
        "mandates": [{"mandate_id": "m", "max_gross_leverage": 2.0, **(mandate or {})}],
        "accounts": [
            {"account_id": f"A{i}", "account_type": "margin", "mandate_id": "m",
             "net_liq": nav, "cash": nav, "settled_cash": nav, "strategies": ["growth"],
             **(account or {})}
            for i, nav in enumerate(navs)
        ],
        "risk": {"default_instrument_limit": {"max_quantity": 1_000_000, "max_notional": 1e10},
                 **(risk or {})},
        "prices": prices or {"MSFT": 10.0, "AAPL": 10.0, "XOM": 10.0},
    })


_seq = iter(range(1_000_000))


def order(**kw: Any) -> BlockOrder:
    n = next(_seq)
    body: dict[str, Any] = {
        "order_id": f"O{n}", "journey_id": f"J{n}", "strategy": "growth", "symbol": "MSFT",
        "side": "buy", "quantity": 100, "reference_price": 10.0, "reference_time": T0,
    }
    body.update(kw)
    return BlockOrder.model_validate(body)


def decide(engine: Engine, o: BlockOrder, at: dt.datetime = T0) -> Decision:
    return engine.decide(o, as_of=at)


def qty(d: Decision) -> list[int]:
    return [line.quantity for line in d.lines]


def l1(d: Decision) -> set[str]:
    return {c.code for c in d.l1_breaches}


# ----------------------------------------------------------------------- allocation methods


def test_net_liq_example() -> None:
    d = decide(Engine(make_book([25_000, 50_000, 100_000])), order(quantity=700))
    assert d.status == "accepted"
    assert qty(d) == [100, 200, 400]


def test_ratios_example() -> None:
    e = Engine(make_book([1e6] * 4))
    d = decide(e, order(quantity=1000, method="ratios",
                        ratios={"A0": 4, "A1": 2, "A2": 1, "A3": 1}))
    assert qty(d) == [500, 250, 125, 125]


def test_equal_example_residue_goes_in_book_order() -> None:
    d = decide(Engine(make_book([1e6] * 6)), order(quantity=400, method="equal"))
    assert qty(d) == [67, 67, 67, 67, 66, 66]


def test_equal_remainders_go_to_the_larger_weight_first() -> None:
    # 2 lots over weights 1:3 -> ideal 0.5 / 1.5: equal remainders, the larger weight wins.
    o = order(quantity=2, method="ratios", ratios={"A0": 1, "A1": 3})
    assert qty(decide(Engine(make_book([1e6, 1e6])), o)) == [0, 2]
    ref = Decision.model_validate(ReferenceEngine(make_book([1e6, 1e6])).process(o, as_of=T0))
    assert qty(ref) == [0, 2]


def test_percent_and_shares_methods() -> None:
    e = Engine(make_book([1e6] * 3))
    d = decide(e, order(quantity=1000, method="percent",
                        percents={"A0": 50, "A1": 30, "A2": 20}))
    assert qty(d) == [500, 300, 200]
    d = decide(e, order(quantity=60, method="shares", shares={"A0": 10, "A1": 20, "A2": 30}))
    assert qty(d) == [10, 20, 30]


def test_available_equity_weights_by_excess_equity() -> None:
    # A1 holds 10,000 of stock: Reg T needs 5,000 of its 20,000, so it has 15,000 available.
    book = make_book([20_000, 20_000])
    accts = [book.accounts[0], book.accounts[1].model_copy(update={"positions": {"XOM": 1000}})]
    e = Engine(book.model_copy(update={"accounts": accts}))
    d = decide(e, order(quantity=70, method="available_equity"))
    assert [line.weight for line in d.lines] == [20_000, 15_000]
    assert qty(d) == [40, 30]


def test_target_weight_buys_each_account_its_gap() -> None:
    book = make_book([100_000, 200_000], mandate={"max_position_pct": 50})
    accts = [book.accounts[0].model_copy(update={"positions": {"MSFT": 500}}), book.accounts[1]]
    e = Engine(book.model_copy(update={"accounts": accts}))
    # target 10%: A0 holds 5,000 of 100,000 (gap 500 sh), A1 holds none of 200,000 (gap 2,000)
    d = decide(e, order(quantity=None, method="target_weight", target_weight_pct=10.0))
    assert qty(d) == [500, 2000]
    assert d.requested_quantity == 2500


def test_lot_rounding_never_breaks_a_cap() -> None:
    # max 1,000 sh per account, lots of 100: a 2,500 block over 3 equal accounts gives
    # 800/800/800 ideal -> lots 8,8,9 or similar, never above 10 lots each.
    d = decide(Engine(make_book([1e6] * 3, mandate={"max_position_shares": 1_000}, lot=100)),
               order(quantity=2500, method="equal"))
    assert sum(qty(d)) == 2500
    assert all(q % 100 == 0 and q <= 1000 for q in qty(d))


# ------------------------------------------------------------------- mandate caps


def test_capped_account_is_reported_and_its_share_redistributed() -> None:
    # 5% position limit: A0 (NAV 20,000) may hold 1,000 of MSFT = 100 shares at 10.
    e = Engine(make_book([20_000, 1e6, 1e6], mandate={"max_position_pct": 5}))
    d = decide(e, order(quantity=1000, method="equal"))
    assert qty(d) == [100, 450, 450]
    a0 = d.lines[0]
    assert a0.status == "capped"
    assert a0.binding is not None and a0.binding.code == "MAX_POSITION_PCT"
    assert a0.binding.limit == 5.0
    assert a0.binding.value == pytest.approx(333.3333 * 10 / 20_000 * 100, rel=1e-4)
    assert a0.binding.cap == 100


def test_block_larger_than_every_cap_reports_the_unplaced_rest() -> None:
    e = Engine(make_book([20_000, 20_000], mandate={"max_position_pct": 5}))
    d = decide(e, order(quantity=1000))
    assert qty(d) == [100, 100]
    assert d.placed_quantity == 200 and d.unplaced_quantity == 800


def test_sector_cap_counts_other_holdings_in_the_sector() -> None:
    book = make_book([100_000], mandate={"sector_caps_pct": {"Tech": 30}})
    acct = book.accounts[0].model_copy(update={"positions": {"AAPL": 2_000}})  # 20% in Tech
    d = decide(Engine(book.model_copy(update={"accounts": [acct]})), order(quantity=5000))
    assert qty(d) == [1000]  # 10% of NAV left in Tech
    assert d.lines[0].binding is not None and d.lines[0].binding.code == "SECTOR_CAP"


def test_restricted_symbol_and_sector() -> None:
    e = Engine(make_book([1e6, 1e6], mandate={"restricted_sectors": ["Energy"]}))
    d = decide(e, order(symbol="XOM", quantity=100))
    assert qty(d) == [0, 0]
    assert d.lines[0].binding is not None and d.lines[0].binding.code == "RESTRICTED_SECTOR"


def test_sells_never_exceed_holdings_without_shorting() -> None:
    book = make_book([1e6, 1e6])
    accts = [book.accounts[0].model_copy(update={"positions": {"MSFT": 30}}), book.accounts[1]]
    e = Engine(book.model_copy(update={"accounts": accts}))
    d = decide(e, order(side="sell", quantity=100, method="equal"))
    assert qty(d) == [30, 0]
    assert d.lines[1].binding is not None
    assert d.lines[1].binding.code == "SHORT_SALE_NOT_ALLOWED"
    assert d.unplaced_quantity == 70


def test_short_selling_when_the_mandate_allows_it() -> None:
    e = Engine(make_book([1e6, 1e6], mandate={"allow_short": True}))
    d = decide(e, order(side="sell", quantity=100, method="equal"))
    assert qty(d) == [50, 50]


def test_cash_account_uses_settled_cash_only_and_keeps_its_buffer() -> None:
    book = make_book([100_000], mandate={"cash_buffer_pct": 2},
                     account={"account_type": "cash", "cash": 30_000, "settled_cash": 10_000})
    e = Engine(book)
    d = decide(e, order(quantity=5000))
    # settled 10,000 - buffer 2,000 = 8,000 -> 800 shares at 10; unsettled cash is not used
    assert qty(d) == [800]
    assert d.lines[0].binding is not None and d.lines[0].binding.code == "SETTLED_CASH"


def test_cash_account_no_free_riding_on_unsettled_sale_proceeds() -> None:
    book = make_book([100_000], account={"account_type": "cash", "cash": 0.0,
                                         "settled_cash": 0.0, "positions": {"XOM": 1_000}})
    e = Engine(book)
    sell = decide(e, order(symbol="XOM", side="sell", quantity=1000))
    assert qty(sell) == [1000]
    e.apply_fill("A0", "XOM", "sell", 1000, 10.0)
    cash, settled, _ = e.cash("A0")
    assert (cash, settled) == (10_000.0, 0.0)
    buy = decide(e, order(quantity=100))
    assert qty(buy) == [0]
    assert buy.lines[0].binding is not None and buy.lines[0].binding.code == "SETTLED_CASH"


def test_margin_account_buying_power_is_reg_t() -> None:
    # NAV 10,000, no positions, leverage ceiling 4x: Reg T buying power is 20,000 (50% margin)
    e = Engine(make_book([10_000], mandate={"max_gross_leverage": 4.0}))
    d = decide(e, order(quantity=5000))
    assert qty(d) == [2000]
    assert d.lines[0].binding is not None and d.lines[0].binding.code == "BUYING_POWER"
    assert d.lines[0].binding.limit == pytest.approx(20_000)


def test_min_trade_size_drops_small_lots_and_reoffers_them() -> None:
    e = Engine(make_book([10_000, 1e6], mandate={"min_trade_value": 500}))
    d = decide(e, order(quantity=101))
    # A0's pro-rata share is 1 share (10 < 500): dropped, its share goes to A1
    assert qty(d) == [0, 101]
    assert d.lines[0].binding is not None and d.lines[0].binding.code == "MIN_TRADE_SIZE"


def test_accepted_blocks_reserve_and_fills_release() -> None:
    e = Engine(make_book([20_000], mandate={"max_position_pct": 10}))
    first = decide(e, order(quantity=150))
    assert qty(first) == [150]
    assert e.open_orders("A0", "MSFT") == (150, 0)
    assert e.cash("A0")[2] == pytest.approx(1500.0)
    second = decide(e, order(quantity=150))
    assert qty(second) == [50]  # 200 allowed in all, 150 already working
    e.apply_fill("A0", "MSFT", "buy", 150, 10.0)
    assert e.position("A0", "MSFT") == 150
    assert e.open_orders("A0", "MSFT") == (50, 0)
    e.release("A0", "MSFT", "buy", 50)
    assert e.open_orders("A0", "MSFT") == (0, 0)
    assert e.cash("A0")[2] == pytest.approx(0.0)
    third = decide(e, order(quantity=150))
    assert qty(third) == [50]


# ------------------------------------------------------------------------- layer 1


def test_each_firm_check_has_its_code() -> None:
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"restricted_symbols": ["MSFT"]}, {}, "FIRM_RESTRICTED"),
        ({"instrument_limits": {"MSFT": {"max_quantity": 50, "max_notional": 1e9}}}, {},
         "MAX_ORDER_QUANTITY"),
        ({"instrument_limits": {"MSFT": {"max_quantity": 10_000, "max_notional": 500}}}, {},
         "MAX_ORDER_NOTIONAL"),
        ({}, {"limit_price": 11.0}, "PRICE_COLLAR"),
        ({}, {"limit_price": 10.005}, "PRICE_NOT_ON_TICK"),
        ({}, {"reference_time": T0 - dt.timedelta(seconds=6)}, "STALE_REFERENCE_PRICE"),
        ({"max_gross_exposure": 500.0}, {}, "FIRM_GROSS_EXPOSURE"),
        ({"max_net_exposure": 500.0}, {}, "FIRM_NET_EXPOSURE"),
        ({"max_sector_pct": 0.01}, {}, "FIRM_SECTOR_CONCENTRATION"),
        ({"max_beta_delta": 500.0}, {}, "FIRM_BETA_DELTA"),
        ({"kill_switch": "halted"}, {}, "KILL_SWITCH_HALTED"),
        ({"kill_switch": "reducing"}, {}, "KILL_SWITCH_REDUCING"),
    ]
    for risk, fields, code in cases:
        for engine in (Engine(make_book([1e6], risk=risk)),
                       ReferenceEngine(make_book([1e6], risk=risk))):
            o = order(**fields)
            if isinstance(engine, Engine):
                d = decide(engine, o)
            else:
                d = Decision.model_validate(engine.process(o, as_of=T0))
            assert d.status == "rejected" and d.stage == "l1", (code, d)
            assert code in l1(d), (code, l1(d))
            assert qty(d) == [] and d.placed_quantity == 0


def test_every_check_reports_limit_and_value() -> None:
    e = Engine(make_book([1e6], risk={"instrument_limits": {
        "MSFT": {"max_quantity": 50, "max_notional": 1e9}}}))
    d = decide(e, order(quantity=60))
    (c,) = d.l1_breaches
    assert (c.code, c.limit, c.value) == ("MAX_ORDER_QUANTITY", 50, 60)


def test_instrument_without_a_limit_fails_closed() -> None:
    book = make_book([1e6]).model_copy(update={"risk": make_book([1e6]).risk.model_copy(
        update={"default_instrument_limit": None})})
    d = decide(Engine(book), order())
    assert "NO_INSTRUMENT_LIMIT" in l1(d)


def test_duplicate_order_and_journey_ids_are_refused() -> None:
    e = Engine(make_book([1e6]))
    o = order()
    assert decide(e, o).status == "accepted"
    again = decide(e, o)
    assert l1(again) == {"DUPLICATE_ORDER_ID", "DUPLICATE_JOURNEY_ID"}
    same_journey = order(journey_id=o.journey_id)
    assert l1(decide(e, same_journey)) == {"DUPLICATE_JOURNEY_ID"}


def test_throttle_per_strategy_over_a_sliding_window() -> None:
    e = Engine(make_book([1e9], risk={"throttle": {"max_orders": 2, "window_s": 10}}))
    def at(s: float) -> dt.datetime:
        return T0 + dt.timedelta(seconds=s)

    assert decide(e, order(reference_time=at(0)), at(0)).status == "accepted"
    assert decide(e, order(reference_time=at(1)), at(1)).status == "accepted"
    third = decide(e, order(reference_time=at(2)), at(2))
    assert l1(third) == {"THROTTLED"}
    assert third.l1_breaches[0].value == 3
    # another strategy has its own budget
    assert decide(e, order(strategy="value", reference_time=at(2)), at(2)).status != "accepted"
    # ten seconds after the throttled one, the window has room again
    assert decide(e, order(reference_time=at(12.001)), at(12.001)).status == "accepted"


def test_kill_switch_reducing_lets_risk_reducing_orders_through() -> None:
    book = make_book([1e6])
    acct = book.accounts[0].model_copy(update={"positions": {"MSFT": 500}})
    e = Engine(book.model_copy(update={"accounts": [acct]}))
    e.set_kill_switch("reducing")
    assert "KILL_SWITCH_REDUCING" in l1(decide(e, order(quantity=100)))
    assert decide(e, order(side="sell", quantity=100)).status == "accepted"
    e.set_kill_switch("halted")
    assert "KILL_SWITCH_HALTED" in l1(decide(e, order(side="sell", quantity=100)))
    e.set_kill_switch("normal")
    assert decide(e, order(quantity=100)).status == "accepted"


# ------------------------------------------------------------------------- layer 2


def stale_price_book() -> Book:
    # Every account may hold 10% of NAV in one name. The signal was priced at 100; the market
    # has since moved to 104 (inside the 5% collar, so layer 1 passes on the reference price).
    book = make_book([100_000, 100_000, 1_000_000], mandate={"max_position_pct": 10},
                     prices={"MSFT": 104.0, "AAPL": 10.0, "XOM": 10.0})
    accts = [a.model_copy(update={"positions": {"MSFT": 90}}) if a.account_id != "A2" else a
             for a in book.accounts]
    return book.model_copy(update={"accounts": accts})


def test_stale_price_story_lots_breaching_at_the_live_price_are_blocked() -> None:
    e = Engine(stale_price_book())
    d = decide(e, order(quantity=30, method="equal", reference_price=100.0,
                        on_lot_failure="reject_block"))
    # at 100 the small accounts had room for 10 shares each (100 * 100 = 10% of 100,000 with 90
    # held); at 104 their 100 shares are 10.4% of NAV -> their lots break MAX_POSITION_PCT
    assert d.status == "rejected" and d.stage == "l2"
    assert [line.allocated for line in d.lines] == [10, 10, 10]
    assert [line.status for line in d.lines] == ["blocked", "blocked", "blocked"]
    assert [c.code for c in d.lines[0].l2_breaches] == ["MAX_POSITION_PCT"]
    assert d.lines[0].l2_breaches[0].value == pytest.approx(100 * 104 / 100_000 * 100)
    assert d.lines[2].l2_breaches == []
    assert d.placed_quantity == 0


def test_stale_price_drop_lots_reoffers_to_the_accounts_that_pass() -> None:
    e = Engine(stale_price_book())
    d = decide(e, order(quantity=30, method="equal", reference_price=100.0,
                        on_lot_failure="drop_lots"))
    assert d.status == "accepted"
    assert qty(d) == [0, 0, 30]
    assert [line.status for line in d.lines] == ["dropped", "dropped", "ok"]


def test_stale_price_reduce_lots_keeps_what_passes_at_the_live_price() -> None:
    e = Engine(stale_price_book())
    d = decide(e, order(quantity=30, method="equal", reference_price=100.0,
                        on_lot_failure="reduce_lots"))
    # at 104, 10% of 100,000 is 96 shares: the 90 held leave room for 6 each
    assert d.status == "accepted"
    assert qty(d) == [6, 6, 18]
    assert [line.status for line in d.lines] == ["reduced", "reduced", "ok"]


def test_layer2_without_a_live_price_fails_closed() -> None:
    book = make_book([1e6]).model_copy(update={"prices": {"AAPL": 10.0, "XOM": 10.0}})
    d = decide(Engine(book), order())
    assert d.status == "rejected" and d.stage == "l2"
    assert d.lines[0].l2_breaches[0].code == "NO_LIVE_PRICE"


def test_price_ticks_reach_layer2() -> None:
    e = Engine(make_book([100_000], mandate={"max_position_pct": 10}))
    e.update_prices({"MSFT": 20.0})
    d = decide(e, order(quantity=1000, reference_price=20.0))
    assert qty(d) == [500]


# ------------------------------------------------------------------------ bad input


def test_bad_input_raises_clear_errors_never_panics() -> None:
    e = Engine(make_book([1e6]))
    with pytest.raises(OrderError) as err:
        e.process(order(symbol="NOPE"), as_of=T0)
    assert err.value.loc == ("symbol",)
    assert "NOPE" in str(err.value)
    lots = Engine(make_book([1e6], lot=100))
    with pytest.raises(OrderError, match="whole number of lots") as err:
        lots.process(order(quantity=150), as_of=T0)
    assert err.value.loc == ("quantity",)
    with pytest.raises(OrderError) as err:
        e.process(order(method="ratios", ratios={"ZZ": 1.0}), as_of=T0)
    assert err.value.loc == ("ratios", "ZZ")
    with pytest.raises(OrderError):
        e.apply_fill("A0", "MSFT", "buy", -5, 10.0)
    with pytest.raises(OrderError):
        e.update_prices({"MSFT": float("nan")})
    with pytest.raises(OrderError):
        e.set_kill_switch("maybe")


def test_bad_book_is_refused_with_the_path() -> None:
    from mats import _core

    with pytest.raises(BookError, match="book JSON"):
        _core.Engine("{not json")
    book = make_book([1e6]).model_dump(mode="json")
    book["accounts"][0]["mandate_id"] = "nope"
    import json

    with pytest.raises(BookError) as err:
        _core.Engine(json.dumps(book))
    assert err.value.loc == ("accounts", 0)
    assert "unknown mandate" in err.value.message


def test_the_core_revalidates_orders_it_is_given() -> None:
    """A caller that bypasses pydantic still gets a clear error, not a panic."""
    bad = order().model_copy(update={"reference_price": float("nan")})
    with pytest.raises(OrderError) as err:
        Engine(make_book([1e6])).process(bad, as_of=T0)
    assert err.value.loc == ("reference_price",)
    bad = order().model_copy(update={"quantity": 0})
    with pytest.raises(OrderError):
        Engine(make_book([1e6])).process(bad, as_of=T0)


def test_upsert_account_updates_the_book_incrementally() -> None:
    book = make_book([20_000], mandate={"max_position_pct": 10})
    e = Engine(book)
    e.upsert_account(book.accounts[0].model_copy(update={"net_liq": 40_000.0}))
    assert qty(decide(e, order(quantity=1000))) == [400]
    e.upsert_account(book.accounts[0].model_copy(update={"account_id": "B1"}))
    d = decide(e, order(quantity=600))
    assert [line.account_id for line in d.lines] == ["A0", "B1"]


# ------------------------------------------------------------- previews, working orders


def test_a_preview_leaves_no_trace() -> None:
    e = Engine(make_book([1e6], risk={"throttle": {"max_orders": 1, "window_s": 60}}))
    o = order()
    preview = e.decide(o, as_of=T0, commit=False)
    assert preview.status == "accepted"
    assert e.open_orders("A0", "MSFT") == (0, 0)
    # same ids, and the throttle has room: the preview neither used the ids nor counted
    assert decide(e, o).status == "accepted"
    assert e.open_orders("A0", "MSFT") == (100, 0)


def test_working_blocks_count_towards_firm_limits() -> None:
    # net limit 1,500 at 10 per share: each 100-share block (1,000) passes alone
    e = Engine(make_book([1e6], risk={"max_net_exposure": 1_500.0}))
    assert decide(e, order()).status == "accepted"
    second = decide(e, order())
    assert l1(second) == {"FIRM_NET_EXPOSURE"}
    assert second.l1_breaches[0].value == pytest.approx(2_000.0)
    # the first block's child orders are cancelled: its working quantity no longer counts
    e.release("A0", "MSFT", "buy", 100)
    assert decide(e, order()).status == "accepted"
    # a fill moves quantity from working to filled: the firm total stays the same
    e.apply_fill("A0", "MSFT", "buy", 100, 10.0)
    assert l1(decide(e, order())) == {"FIRM_NET_EXPOSURE"}


def test_a_block_nobody_can_take_is_refused_at_allocation() -> None:
    d = decide(Engine(make_book([1e6, 1e6])), order(side="sell"))
    assert d.status == "rejected" and d.stage == "allocation"
    assert [c.code for c in d.allocation_breaches] == ["NO_CAPACITY"]
    assert {line.binding.code for line in d.lines if line.binding} == {"SHORT_SALE_NOT_ALLOWED"}
    assert d.unplaced_quantity == 100


def test_available_equity_is_net_of_buffer_and_reservations() -> None:
    e = Engine(make_book([20_000, 20_000], mandate={"cash_buffer_pct": 10}))
    assert qty(decide(e, order(quantity=50, accounts=["A0"]))) == [50]  # reserves 500
    d = decide(e, order(quantity=100, method="available_equity"))
    # A0: 20,000 - 2,000 buffer - 0.5 x 500 reserved = 17,750; A1: 18,000
    assert [line.weight for line in d.lines] == [17_750, 18_000]


def test_drop_lots_reoffers_only_what_passes_at_the_live_price() -> None:
    # 10% position limit; reference 100, live 104 (10% of 100,000 is 96 shares at 104).
    book = make_book([100_000, 100_000, 1_000_000], mandate={"max_position_pct": 10},
                     prices={"MSFT": 104.0, "AAPL": 10.0, "XOM": 10.0})
    held = {"A0": 90, "A1": 85}
    accts = [a.model_copy(update={"positions": {"MSFT": held[a.account_id]}})
             if a.account_id in held else a for a in book.accounts]
    e = Engine(book.model_copy(update={"accounts": accts}))
    d = decide(e, order(quantity=30, method="equal", reference_price=100.0,
                        on_lot_failure="drop_lots"))
    # A0's 10 break the limit at 104 and are dropped. A1's 10 pass (95 <= 96): when A0's share
    # is re-offered, A1 takes only what still passes at 104 (11), not its room at 100 (15), so
    # it is not dropped in turn; the big account takes the rest.
    assert d.status == "accepted"
    assert qty(d) == [0, 11, 19]
    assert [line.status for line in d.lines] == ["dropped", "capped", "ok"]
    assert d.lines[1].binding is not None and d.lines[1].binding.code == "MAX_POSITION_PCT"
    assert d.lines[1].binding.cap == 11


# ------------------------------------------------------------------------ regressions


def both(book: Book) -> tuple[Engine, ReferenceEngine]:
    return Engine(book), ReferenceEngine(book)


def test_a_tiny_weight_beside_a_huge_one_never_overfills_the_block() -> None:
    e, r = both(make_book([1e6, 1e6], mandate={"max_position_shares": 10}))
    o = order(quantity=100, method="ratios", ratios={"A0": 1e16, "A1": 1.0})
    d = decide(e, o)
    ref = Decision.model_validate(r.process(o, as_of=T0))
    assert sum(qty(d)) <= 100
    assert qty(d) == qty(ref)


def test_a_capped_account_reports_what_it_was_offered() -> None:
    book = make_book([1e6, 1e6])
    mandates = [Mandate(mandate_id="m", max_gross_leverage=2.0),
                Mandate(mandate_id="small", max_position_shares=10),
                Mandate(mandate_id="mid", max_position_shares=60)]
    accts = [book.accounts[0].model_copy(update={"mandate_id": "small"}),
             book.accounts[1].model_copy(update={"mandate_id": "mid"})]
    e = Engine(book.model_copy(update={"mandates": mandates, "accounts": accts}))
    d = decide(e, order(quantity=100, method="equal"))
    assert qty(d) == [10, 60]
    b = d.lines[1].binding
    assert b is not None and b.code == "MAX_POSITION_SHARES"
    assert (b.limit, b.value) == (60, 90)  # offered 90 once A0 was capped at 10


def test_unpriced_working_orders_are_refused_at_load() -> None:
    with pytest.raises(ValueError, match="no price"):
        make_book([1e6], account={"open_orders": {"XOM": {"buy": 100}}},
                  prices={"MSFT": 10.0, "AAPL": 10.0})


def test_quantities_beyond_the_core_limit_are_clear_errors() -> None:
    e = Engine(make_book([1e6]))
    e.decide(order(order_id="B", journey_id="JB", quantity=100), as_of=T0)
    e.execution("B", "x1", 10, 10.0)
    with pytest.raises(OrderError):
        e.execution("B", "x2", 2**63 - 1, 10.0)
    with pytest.raises(OrderError):
        e.apply_fill("A0", "MSFT", "buy", 2**63, 10.0)
    with pytest.raises(OrderError):
        e.apply_fill("A0", "MSFT", "buy", 10**13, 10.0)
    assert e.position("A0", "MSFT") == 10


def test_a_bad_price_batch_changes_nothing() -> None:
    for engine in both(make_book([10_000], mandate={"max_position_pct": 100})):
        with pytest.raises(OrderError):
            engine.update_prices({"MSFT": 12.0, "XOM": -1.0})
    e = Engine(make_book([10_000], mandate={"max_position_pct": 100}))
    with pytest.raises(OrderError) as err:
        e.update_prices({"MSFT": 12.0, "XOM": -1.0})
    assert err.value.loc == ("prices", "XOM")
    # MSFT still marked at 10: 100 % of 10,000 NAV is 1,000 shares (833 had 12 been applied)
    assert qty(decide(e, order(quantity=5000))) == [1000]


def test_the_reference_refuses_an_unpriced_holding_like_the_core() -> None:
    book = make_book([1e6], prices={"MSFT": 10.0, "AAPL": 10.0})
    acct = book.accounts[0].model_copy(update={"positions": {"XOM": 100}})
    for engine in both(book):
        with pytest.raises(BookError, match="no price"):
            engine.upsert_account(acct)


def test_working_orders_in_other_symbols_count_against_leverage_and_sector_caps() -> None:
    book = make_book([100_000], mandate={"max_gross_leverage": 1.0,
                                         "sector_caps_pct": {"Tech": 50.0}})
    for e in both(book):
        def run(symbol: str, q: int, n: int, engine: Any = e) -> list[int]:
            o = order(order_id=f"W{n}", journey_id=f"WJ{n}", symbol=symbol, quantity=q)
            if isinstance(engine, Engine):
                return qty(engine.decide(o, as_of=T0))
            return [line["quantity"] for line in engine.process(o, as_of=T0)["lines"]]

        assert run("AAPL", 5_000, 1) == [5_000]   # Tech 50 % of NAV, working
        assert run("MSFT", 5_000, 2) == [0]       # Tech is full with AAPL's working order
        assert run("XOM", 8_000, 3) == [5_000]    # gross 1x NAV: 50,000 left
        for sym, q in (("AAPL", 5_000), ("XOM", 5_000)):
            e.apply_fill("A0", sym, "buy", q, 10.0)
        gross = sum(abs(e.position("A0", s)) * 10.0 for s in ("MSFT", "AAPL", "XOM"))
        assert gross <= 100_000


def test_account_state_is_read_for_the_accounts_asked_in_their_order() -> None:
    e = Engine(make_book([1e6, 2e6, 3e6]))
    e.apply_fill("A1", "MSFT", "buy", 100, 10.0)
    every = json.loads(e.accounts_json())
    assert [r["account_id"] for r in every] == ["A0", "A1", "A2"]  # book order
    some = json.loads(e.accounts_json(["A2", "A1"]))
    assert some == [every[2], every[1]]
    assert some[1]["positions"] == {"MSFT": 100}
    assert json.loads(e.accounts_json([])) == []
    with pytest.raises(OrderError, match='unknown account "A9"'):
        e.accounts_json(["A1", "A9"])
