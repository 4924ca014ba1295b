"""The sequenced desk (mats.desk): fill booking, realised P&L, exposure alerts, journal replay."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from execs import fills, report
from mats import Account, BlockOrder, Book, Instrument, Mandate, RiskConfig
from mats.blocks import ChildOrder, PriceTick
from mats.config import load_book, load_orders
from mats.desk import (
    AccountFillEvent,
    ChildClosed,
    Desk,
    ExecutionAlert,
    JournalEntry,
    Ledger,
    SourceRef,
)
from mats.executions import ExecType, OrdStatus
from mats.exposure import AccountExposure, Level, LimitAlert, LimitWatch, Usage, level_of
from mats.models import InstrumentLimit

NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def small_book() -> Book:
    return Book(
        instruments=[Instrument(symbol="MSFT", sector="Information Technology", beta=1.2)],
        mandates=[Mandate(mandate_id="pos10", max_position_pct=10.0),
                  Mandate(mandate_id="std", max_gross_leverage=1.0)],
        accounts=[Account(account_id=name, account_type="margin", mandate_id=mandate,
                          broker=broker, net_liq=1e6, cash=1e6, settled_cash=1e6,
                          strategies=["growth"])
                  for name, mandate, broker in [("A", "pos10", "prime-a"),
                                                ("B", "std", "prime-a"),
                                                ("C", "std", "retail-b")]],
        risk=RiskConfig(default_instrument_limit=InstrumentLimit(max_quantity=100_000,
                                                                 max_notional=1e9),
                        max_reference_age_s=1e9),
        prices={"MSFT": 100.0},
    )


def buy(order_id: str, quantity: int, side: str = "buy") -> BlockOrder:
    return BlockOrder(order_id=order_id, journey_id=f"J-{order_id}", strategy="growth",
                      symbol="MSFT", side=side, quantity=quantity, reference_price=100.0,
                      reference_time=NOW)


class Feed:
    """Inputs for a desk with increasing offsets per topic, as Kafka would give them."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    def at(self, topic: str) -> SourceRef:
        n = self.offsets.get(topic, 0)
        self.offsets[topic] = n + 1
        return SourceRef(topic=topic, partition=0, offset=n)


def children(entry: JournalEntry) -> list[ChildOrder]:
    return [ChildOrder.model_validate_json(o.value) for o in entry.out
            if o.topic.startswith("mats.orders.")]


def published(entry: JournalEntry, kind: str) -> list[dict[str, object]]:
    return [m for m in (json.loads(o.value) for o in entry.out) if m.get("kind") == kind]


# ------------------------------------------------------------------------------ realised P&L


def test_ledger_average_cost_realises_pnl_on_reducing_fills() -> None:
    ledger = Ledger(small_book())
    # buy 100 @ 10 and 100 @ 12: average 11
    ledger.book("A", "MSFT", "buy", 100, -1_000.0)
    ledger.book("A", "MSFT", "buy", 100, -1_200.0)
    # sell 50 @ 13: realises 50 x (13 - 11) = 100
    assert ledger.book("A", "MSFT", "sell", 50, 650.0) == pytest.approx(100.0)
    # sell 200 @ 10: closes 150 at a loss of 150 x 1, opens 50 short at 10
    assert ledger.book("A", "MSFT", "sell", 200, 2_000.0) == pytest.approx(100.0 - 150.0)
    # buy back 50 @ 9: the short gains 50 x 1
    assert ledger.book("A", "MSFT", "buy", 50, -450.0) == pytest.approx(-50.0 + 50.0)
    assert ledger.realized("A") == pytest.approx(0.0)


def test_ledger_carries_start_of_day_positions_at_the_mark() -> None:
    book = small_book()
    book = book.model_copy(update={"accounts": [
        book.accounts[0].model_copy(update={"positions": {"MSFT": 1_000}}), *book.accounts[1:]]})
    ledger = Ledger(book)
    assert ledger.book("A", "MSFT", "sell", 400, 400 * 101.5) == pytest.approx(400 * 1.5)


# ------------------------------------------------------------------------------ limit alerts


def exposure(utilization: float) -> AccountExposure:
    return AccountExposure(account_id="A", nav=1e6, long=0, short=0, gross=0, net=0,
                           beta_delta=0, gross_leverage=0, usage=[Usage(
                               metric="position_pct", subject="MSFT", value=utilization * 10,
                               limit=10.0, utilization=utilization)])


def test_limit_levels_and_one_alert_per_change() -> None:
    assert [level_of(u) for u in (0.5, 0.9, 1.0, 1.0001)] == [
        Level.OK, Level.WARNING, Level.WARNING, Level.CRITICAL]
    watch = LimitWatch()
    seen: list[tuple[str, str]] = []
    for n, u in enumerate([0.5, 0.92, 0.95, 1.05, 1.2, 0.8, 0.3]):
        for a in watch.observe(exposure(u), journey_id="J", cause=f"c{n}", at=NOW):
            seen.append((a.severity, a.previous.value))
    # near the limit twice: one warning; over it twice: one critical; back under: cleared
    assert seen == [("warning", "ok"), ("critical", "warning"), ("cleared", "critical")]
    again = LimitWatch().observe(exposure(0.95), journey_id="J", cause="c1", at=NOW)
    first = LimitWatch().observe(exposure(0.95), journey_id="J", cause="c1", at=NOW)
    assert again[0].event_id == first[0].event_id  # the same update: the same event id
    with pytest.raises(ValueError, match="warn_at"):
        LimitWatch(warn_at=1.5)


# ------------------------------------------------------------------------------ the desk


def test_fills_go_to_each_brokers_accounts_at_one_average_price_and_close_with_shortfalls(
) -> None:
    desk, feed = Desk(small_book()), Feed()
    entry = desk.block(buy("GRO-1", 3_000), feed.at("mats.blocks"), NOW)
    prime, retail = sorted(children(entry), key=lambda c: c.gateway)
    assert (prime.child_order_id, prime.quantity) == ("GRO-1:prime-a", 2_000)
    assert (retail.child_order_id, retail.quantity) == ("GRO-1:retail-b", 1_000)

    r1 = report(prime, 1, ExecType.PARTIAL_FILL, OrdStatus.PARTIALLY_FILLED, last_qty=600,
                last_px=100.5, cum_qty=600)
    e1 = desk.execution(r1, feed.at("mats.exec-reports"), NOW)
    got = [AccountFillEvent.model_validate(m) for m in published(e1, "account_fill")]
    assert [(f.account_id, f.quantity, f.avg_price) for f in got] == [
        ("A", 300, 100.5), ("B", 300, 100.5)]  # C is at retail-b: nothing from prime-a
    assert got[0].position == 300 and got[0].cash == pytest.approx(1e6 - 300 * 100.5)
    assert {f.journey_id for f in got} == {"J-GRO-1"}

    # the same report again (a gateway re-sent it): nothing booked twice
    again = desk.execution(r1, feed.at("mats.exec-reports"), NOW)
    assert again.out == [] and desk.duplicates == 1
    r2 = report(prime, 2, ExecType.PARTIAL_FILL, OrdStatus.PARTIALLY_FILLED, last_qty=400,
                last_px=99.5, cum_qty=1_000)
    desk.execution(r2, feed.at("mats.exec-reports"), NOW)
    end = report(prime, 3, ExecType.CANCELLED, OrdStatus.CANCELLED, cum_qty=1_000)
    e3 = desk.execution(end, feed.at("mats.exec-reports"), NOW)
    (closed,) = [ChildClosed.model_validate(m) for m in published(e3, "child_closed")]
    assert (closed.reason, closed.filled) == ("cancelled", 1_000)
    assert [(s.account_id, s.filled, s.shortfall) for s in closed.shortfalls] == [
        ("A", 500, 500), ("B", 500, 500)]
    state = {a["account_id"]: a for a in desk.accounts()}
    # both at the child order's average, 100.1, to the cent
    assert state["A"]["positions"] == {"MSFT": 500} == state["B"]["positions"]
    assert state["A"]["cash"] == pytest.approx(1e6 - 500 * 100.1)
    assert state["A"]["open_orders"] == {}  # the cancelled rest released
    assert state["C"]["open_orders"]["MSFT"]["buy"] == 1_000  # retail-b still working
    # the account state published with the close: what the desk holds
    (a_state,) = [m for m in published(e3, "account_state") if m["account_id"] == "A"]
    assert a_state["positions"] == {"MSFT": 500} and a_state["open_orders"] == {}
    assert a_state["cash"] == pytest.approx(state["A"]["cash"])


def test_unbookable_reports_raise_critical_alerts_and_book_nothing() -> None:
    desk, feed = Desk(small_book()), Feed()
    (prime, _) = sorted(children(desk.block(buy("GRO-1", 3_000), feed.at("mats.blocks"), NOW)),
                        key=lambda c: c.gateway)
    stranger = prime.model_copy(update={"child_order_id": "NOPE:prime-a"})
    unknown = report(stranger, 1, ExecType.FILL, OrdStatus.FILLED, last_qty=10, last_px=100.0,
                     cum_qty=10)
    over = report(prime, 1, ExecType.FILL, OrdStatus.FILLED, last_qty=2_001, last_px=100.0,
                  cum_qty=2_001)
    codes = []
    for r in (unknown, over):
        e = desk.execution(r, feed.at("mats.exec-reports"), NOW)
        (alert,) = [ExecutionAlert.model_validate(m) for m in published(e, "execution_alert")]
        codes.append((alert.code, alert.severity))
    assert codes == [("UNKNOWN_CHILD_ORDER", "critical"), ("FILL_NOT_BOOKED", "critical")]
    assert all(a["positions"] == {} for a in desk.accounts())


def test_fills_and_prices_raise_limit_alerts_as_positions_near_their_limits() -> None:
    desk, feed = Desk(small_book()), Feed()
    (prime, _) = sorted(children(desk.block(buy("GRO-1", 3_000), feed.at("mats.blocks"), NOW)),
                        key=lambda c: c.gateway)
    fill = report(prime, 1, ExecType.FILL, OrdStatus.FILLED, last_qty=2_000, last_px=100.0,
                  cum_qty=2_000)
    e = desk.execution(fill, feed.at("mats.exec-reports"), NOW)
    # A holds 1,000 x 100 = 10 % of its NAV, its limit: a warning, on its journey
    (warning,) = [LimitAlert.model_validate(m) for m in published(e, "limit_alert")]
    assert (warning.account_id, warning.metric, warning.severity) == ("A", "position_pct",
                                                                      "warning")
    assert warning.journey_id == "J-GRO-1"
    assert {json.loads(o.value)["scope"] for o in e.out if o.topic == "mats.exposure"} == {
        "account", "firm"}
    # the price rises 2 %: A is over its 10 %, critical
    out = desk.tick(PriceTick(symbol="MSFT", price=102.0, ts=NOW + timedelta(seconds=1)))
    assert out is not None
    alerts = [o.message for o in out if isinstance(o.message, LimitAlert)]
    assert [(a.account_id, a.severity) for a in alerts] == [("A", "critical")]
    # an older tick changes nothing
    assert desk.tick(PriceTick(symbol="MSFT", price=90.0, ts=NOW)) is None


# ------------------------------------------------------------------------------ the journal


def _day(book: Book, seed: int) -> tuple[Desk, list[JournalEntry]]:
    """A desk run over the sample day's first blocks, with seeded fills and ticks between."""
    rng = random.Random(seed)
    desk, feed = Desk(book), Feed()
    entries: list[JournalEntry] = []
    t = NOW
    for order in load_orders("data/sample/orders.json")[:25]:
        t += timedelta(seconds=1)
        if rng.random() < 0.5:
            px = round(book.prices[order.symbol] * (1 + rng.uniform(-0.01, 0.01)), 2)
            desk.tick(PriceTick(symbol=order.symbol, price=px, ts=t))
        order = order.model_copy(update={"reference_time": t})
        entry = desk.block(order, feed.at("mats.blocks"), t)
        entries.append(entry)
        for child in children(entry):
            for r in fills(child, rng.randrange(1 << 30), share=rng.choice([1.0, 0.6, 0.0])):
                entries.append(desk.execution(r, feed.at("mats.exec-reports"), t))
                if rng.random() < 0.2:  # a report sent twice
                    entries.append(desk.execution(r, feed.at("mats.exec-reports"), t))
    return desk, entries


def test_replaying_the_journal_rebuilds_the_same_state() -> None:
    book = load_book("data/sample")
    book = book.model_copy(update={"risk": book.risk.model_copy(
        update={"max_reference_age_s": 1e9})})
    live, entries = _day(book, seed=7)
    assert any(published(e, "account_fill") for e in entries)
    assert any(published(e, "child_closed") for e in entries)
    # the entries go through JSON, as they do through the changelog
    wire = [JournalEntry.model_validate_json(e.model_dump_json()) for e in entries]
    rebuilt = Desk(book)
    for e in wire:
        rebuilt.replay(e)
    assert rebuilt.accounts() == live.accounts()
    assert rebuilt.seq == live.seq == len(entries)
    assert rebuilt.marks == live.marks
    # every input is known by where it was read, to the entry that applied it
    assert all(rebuilt.applied(e.source) == e.seq for e in wire)
    with pytest.raises(Exception, match="replayed at position"):
        rebuilt.replay(wire[0])
    # the journal of one start of day does not replay onto another: it would decide otherwise
    richer = book.model_copy(update={"accounts": [
        a.model_copy(update={"cash": a.cash + 1}) for a in book.accounts]})
    with pytest.raises(Exception, match="was made from book"):
        Desk(richer).replay(wire[0])
