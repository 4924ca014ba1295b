"""Block processing: decided blocks into allocation instructions, child orders and alerts.

Three levels, as for intake: the plain functions (:mod:`mats.blocks`, no Faust); the ``blocks``
and ``marketdata`` agents in Faust's test context, their outgoing topics replaced by recorders;
and the whole path against a real Kafka broker, with ``faust -A streams.app worker`` in its own
process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from mode.utils.locks import Event as ModeEvent

from conftest import SAMPLE_DIR
from mats import Engine, kafka
from mats.blocks import (
    Alert,
    AllocationInstruction,
    ChildOrder,
    Outgoing,
    PriceTick,
    Severity,
    block_messages,
    brokers_of,
    event_id,
    validate_tick,
)
from mats.config import load_book, load_day, load_orders
from mats.intake import DeadLetter, KnownIds, SignalError
from mats.models import (
    Account,
    BlockOrder,
    Book,
    Decision,
    Instrument,
    InstrumentLimit,
    Mandate,
    RiskConfig,
    Side,
)
from mats.store import Store
from workers import WAIT_S, partitions, start_sink, start_worker, stop_worker

NOW = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)

# The stale-price story of docs/risk.md, with the accounts at two brokers: allocation at 100
# gives A 1,000 / B 1,000 / C 2,000; at the live 104 A's lot is 10.4 % of its NAV (limit 10 %).
BOOK = Book(
    instruments=[Instrument(symbol="XYZ", sector="Information Technology")],
    mandates=[Mandate(mandate_id="pos10", max_position_pct=10.0),
              Mandate(mandate_id="pos20", max_position_pct=20.0),
              Mandate(mandate_id="std")],
    accounts=[
        Account(account_id=name, account_type="margin", mandate_id=mandate, broker=broker,
                net_liq=nav, cash=nav, settled_cash=nav, strategies=["growth"])
        for name, mandate, broker, nav in [("A", "pos10", "prime-a", 1e6),
                                           ("B", "pos20", "prime-a", 1e6),
                                           ("C", "std", "retail-b", 2e6)]
    ],
    risk=RiskConfig(default_instrument_limit=InstrumentLimit(max_quantity=10_000,
                                                             max_notional=1e9),
                    max_reference_age_s=60.0),
    prices={"XYZ": 104.0},
)
BROKERS = brokers_of(BOOK)


def order(policy: str = "reduce_lots", quantity: int = 4_000, **changes: Any) -> BlockOrder:
    fields: dict[str, Any] = dict(
        order_id=f"o-{policy}-{quantity}", journey_id=f"j-{policy}-{quantity}",
        strategy="growth", symbol="XYZ", side="buy", quantity=quantity, method="net_liq",
        reference_price=100.0, reference_time=NOW - timedelta(seconds=45),
        on_lot_failure=policy, limit_price=101.0)
    return BlockOrder(**{**fields, **changes})


def decide(o: BlockOrder, book: Book = BOOK) -> Decision:
    return Engine(book).decide(o, as_of=NOW)


def of_kind(messages: list[Outgoing], kind: type[Any]) -> list[Any]:
    return [m.message for m in messages if isinstance(m.message, kind)]


def gateway_messages(messages: list[Outgoing]) -> list[Outgoing]:
    return [m for m in messages if m.topic.startswith(kafka.GATEWAY_TOPIC_PREFIX)]


# ------------------------------------------------------------------------------ the functions


def test_an_accepted_block_is_one_instruction_and_one_child_order_per_broker() -> None:
    o = order(quantity=3_000)  # small enough for A's limit at 104: nothing cut
    d = decide(o)
    assert d.status == "accepted"
    messages = block_messages(d, BROKERS, order=o, decided_at=NOW)

    (instruction,) = of_kind(messages, AllocationInstruction)
    assert messages[0].topic == "mats.allocations" and messages[0].key == o.order_id
    assert (instruction.order_id, instruction.journey_id) == (o.order_id, o.journey_id)
    assert (instruction.symbol, instruction.side, instruction.status) == ("XYZ", "buy",
                                                                          "accepted")
    assert [(lot.account_id, lot.broker, lot.quantity) for lot in instruction.lots] == [
        ("A", "prime-a", 750), ("B", "prime-a", 750), ("C", "retail-b", 1_500)]
    assert instruction.placed_quantity == 3_000 and instruction.live_price == 104.0

    children = gateway_messages(messages)
    assert [(m.topic, m.key) for m in children] == [("mats.orders.prime-a", o.order_id),
                                                    ("mats.orders.retail-b", o.order_id)]
    orders = [m.message for m in children]
    assert [(c.gateway, c.quantity, c.limit_price) for c in orders] == [
        ("prime-a", 1_500, 101.0), ("retail-b", 1_500, 101.0)]
    assert [[a.account_id for a in c.allocations] for c in orders] == [["A", "B"], ["C"]]
    assert sum(c.quantity for c in orders) == d.placed_quantity
    assert of_kind(messages, Alert) == []
    for m in messages:
        assert m.message.journey_id == o.journey_id
        assert json.loads(m.value())["event_id"] == m.message.event_id


def test_an_l1_refused_block_is_a_critical_alert_and_no_child_order() -> None:
    o = order(quantity=20_000)  # above the firm's 10,000 shares
    d = decide(o)
    assert (d.status, d.stage) == ("rejected", "l1")
    messages = block_messages(d, BROKERS, order=o, decided_at=NOW)
    assert gateway_messages(messages) == []
    (instruction,) = of_kind(messages, AllocationInstruction)
    assert (instruction.status, instruction.stage, instruction.lots) == ("rejected", "l1", [])
    (alert,) = of_kind(messages, Alert)
    assert (alert.severity, alert.scope, alert.stage) == (Severity.CRITICAL, "block", "l1")
    assert alert.journey_id == o.journey_id
    assert [(r.code, r.limit, r.value) for r in alert.reasons] == [
        ("MAX_ORDER_QUANTITY", 10_000.0, 20_000.0)]
    assert [m.key for m in messages if m.topic == "mats.alerts"] == [o.order_id]


def test_an_l2_rejected_block_is_alerts_and_no_child_order() -> None:
    o = order("reject_block")
    d = decide(o)
    assert (d.status, d.stage) == ("rejected", "l2")
    messages = block_messages(d, BROKERS, order=o, decided_at=NOW)
    assert gateway_messages(messages) == []
    block_alert, lot_alert = of_kind(messages, Alert)
    assert (block_alert.severity, block_alert.scope) == (Severity.CRITICAL, "block")
    assert [(r.account_id, r.code, r.limit, r.value) for r in block_alert.reasons] == [
        ("A", "MAX_POSITION_PCT", 10.0, 10.4)]
    # only A broke a rule; B and C are blocked with it, which the block alert says
    assert (lot_alert.scope, lot_alert.account_id, lot_alert.status) == ("lot", "A", "blocked")
    assert lot_alert.severity == Severity.CRITICAL
    (instruction,) = of_kind(messages, AllocationInstruction)
    assert {lot.status for lot in instruction.lots} == {"blocked"}
    assert sum(lot.quantity for lot in instruction.lots) == 0


def test_reduced_lots_are_warnings_and_the_child_orders_carry_what_is_placed() -> None:
    o = order("reduce_lots")
    d = decide(o)
    assert d.status == "accepted"
    messages = block_messages(d, BROKERS, order=o, decided_at=NOW)
    (alert,) = of_kind(messages, Alert)
    assert (alert.severity, alert.scope, alert.account_id) == (Severity.WARNING, "lot", "A")
    assert (alert.allocated, alert.quantity, alert.status) == (1_000, 961, "reduced")
    assert [(r.code, r.limit, r.value, r.cap) for r in alert.reasons] == [
        ("MAX_POSITION_PCT", 10.0, 10.4, 961.0)]
    assert [m.key for m in messages if m.topic == "mats.alerts"] == ["A"]
    children = [m.message for m in gateway_messages(messages)]
    # A 961 + B 1,013 at prime-a, C 2,026 at retail-b: the placed quantity, not the allocation
    assert [(c.gateway, c.quantity) for c in children] == [("prime-a", 1_974),
                                                           ("retail-b", 2_026)]
    assert sum(c.quantity for c in children) == d.placed_quantity == 4_000


def test_dropped_lots_are_warnings() -> None:
    o = order("drop_lots")
    messages = block_messages(decide(o), BROKERS, order=o, decided_at=NOW)
    (alert,) = of_kind(messages, Alert)
    assert (alert.severity, alert.account_id, alert.status) == (Severity.WARNING, "A",
                                                                "dropped")
    assert alert.quantity == 0 and alert.reasons[0].code == "MAX_POSITION_PCT"
    children = [m.message for m in gateway_messages(messages)]
    assert [(c.gateway, c.quantity, [a.account_id for a in c.allocations])
            for c in children] == [("prime-a", 1_333, ["B"]), ("retail-b", 2_667, ["C"])]


def test_event_ids_depend_only_on_the_block_and_the_event() -> None:
    o = order("reject_block")
    first = block_messages(decide(o), BROKERS, order=o, decided_at=NOW)
    again = block_messages(decide(o), BROKERS, order=o, decided_at=NOW + timedelta(hours=1))
    assert [m.message.event_id for m in first] == [m.message.event_id for m in again]
    ids = [m.message.event_id for m in first]
    assert len(set(ids)) == len(ids)
    assert first[0].message.event_id == event_id(o.order_id, "allocation_instruction")
    accepted = block_messages(decide(order()), BROKERS, order=order(), decided_at=NOW)
    assert len({m.message.event_id for m in accepted}) == len(accepted)
    assert event_id("a", "b", "c") == event_id("a", "b", "c") != event_id("a", "b:c")


def test_nothing_reaches_a_gateway_unless_both_layers_passed() -> None:
    # the sample day: accepted blocks, blocks refused at l1, at allocation and at l2
    book = load_book(SAMPLE_DIR)
    day = load_day(SAMPLE_DIR / "day.yaml")
    engine = Engine(book)
    brokers = brokers_of(book)
    stages = set()
    for o in load_orders(SAMPLE_DIR / "orders.json"):
        d = engine.decide(o, as_of=day.as_of)
        stages.add(d.stage)
        messages = block_messages(d, brokers, order=o, decided_at=day.as_of)
        children = gateway_messages(messages)
        if d.status != "accepted":
            assert children == [] and d.stage in {"l1", "allocation", "l2"}
            assert any(isinstance(m.message, Alert) and m.message.scope == "block"
                       for m in messages)
        else:
            assert sum(m.message.quantity for m in children) == d.placed_quantity
            for m in children:
                child = m.message
                assert m.topic == f"mats.orders.{child.gateway}"
                assert {brokers[a.account_id] for a in child.allocations} == {child.gateway}
                assert child.quantity == sum(a.quantity for a in child.allocations) > 0
    assert stages == {None, "l1", "allocation", "l2"}

    # and it goes by the decision, not by the lines: a refused decision with shares on its
    # lines (which the core never gives) still sends nothing
    d = decide(order("reduce_lots", quantity=3_000))
    forged = d.model_copy(update={"status": "rejected", "stage": "l2"})
    assert gateway_messages(block_messages(forged, BROKERS, decided_at=NOW)) == []


def test_messages_are_frozen_and_strict() -> None:
    o = order(quantity=3_000)
    messages = block_messages(decide(o), BROKERS, order=o, decided_at=NOW)
    for m in messages:
        model = type(m.message)
        assert model.model_validate_json(m.value()) == m.message
        with pytest.raises(ValueError, match="extra"):
            model.model_validate({**json.loads(m.value()), "surprise": 1})
    with pytest.raises(ValueError, match="frozen"):
        messages[0].message.status = "rejected"  # type: ignore[misc]


@pytest.mark.parametrize(("value", "code", "field"), [
    (None, "NOT_JSON", ""),
    (b"", "NOT_JSON", ""),
    (b"{nope", "NOT_JSON", ""),
    (b"\xff", "NOT_JSON", ""),
    (b"[1]", "NOT_AN_OBJECT", ""),
    (b'{"symbol": "XYZ", "ts": "2024-06-03T14:30:00Z"}', "MISSING_FIELD", "price"),
    (b'{"symbol": "XYZ", "price": -1, "ts": "2024-06-03T14:30:00Z"}', "INVALID_FIELD", "price"),
    (b'{"symbol": "XYZ", "price": NaN, "ts": "2024-06-03T14:30:00Z"}', "INVALID_FIELD",
     "price"),
    (b'{"symbol": "XYZ", "price": 1, "ts": "2024-06-03T14:30:00"}', "INVALID_FIELD", "ts"),
    (b'{"symbol": "NOPE", "price": 1, "ts": "2024-06-03T14:30:00Z"}', "UNKNOWN_SYMBOL",
     "symbol"),
    (b'{"symbol": "XYZ", "price": 1, "ts": "2024-06-03T14:30:00Z", "x": 1}', "INVALID_FIELD",
     "x"),
])
def test_a_bad_tick_is_refused_with_the_reason(value: bytes | None, code: str,
                                               field: str) -> None:
    known = KnownIds.of(BOOK)
    with pytest.raises(SignalError) as caught:
        validate_tick(value, known)
    assert (caught.value.code, caught.value.problems[0].field) == (code, field)


def test_a_good_tick() -> None:
    tick = validate_tick(b'{"symbol": "XYZ", "price": 104.5, "ts": "2024-06-03T14:30:00Z"}',
                         KnownIds.of(BOOK))
    assert tick == PriceTick(symbol="XYZ", price=104.5, ts=NOW)


# ------------------------------------------------------------------------------ the agents


@pytest.fixture
def streams_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """``streams.app`` with the small book above: finalized, in-memory, its sends recorded."""
    import streams.app as sa

    book_dir = tmp_path / "book"
    book_dir.mkdir()
    _write_book(BOOK, book_dir)
    monkeypatch.setenv("MATS_BOOK_DIR", str(book_dir))
    monkeypatch.setenv("MATS_KAFKA_GATEWAYS", "prime-a,retail-b")
    sa.known_ids.cache_clear()
    sa.brokers.cache_clear()
    sa.reset_desk()
    sa.app.finalize()
    sa.app.flow_control.resume()
    # dead letters go through their Faust topic, what the desk publishes through the producer
    monkeypatch.setattr(sa.dlq_topic, "send", AsyncMock())
    monkeypatch.setattr(sa.app.producer, "send", AsyncMock())
    # no broker here: every partition starts at offset 0, as a channel's messages do
    monkeypatch.setattr(sa, "_log_start", AsyncMock(return_value=0))
    for table in (sa.journal, sa.marks):
        # the tables keep their data in memory; what would go to their changelogs is recorded
        table.data._clear()
        monkeypatch.setattr(table, "send_changelog", MagicMock())
    yield sa
    sa.known_ids.cache_clear()
    sa.brokers.cache_clear()
    sa.reset_desk()
    for table in (sa.journal, sa.marks):
        table.data._clear()


def _write_book(book: Book, folder: Path) -> None:
    """``book`` as a book folder (the files load_book reads)."""
    (folder / "instruments.csv").write_text(
        "symbol,sector\n" + "".join(f"{i.symbol},{i.sector}\n" for i in book.instruments))
    (folder / "prices.csv").write_text(
        "symbol,price\n" + "".join(f"{s},{p}\n" for s, p in book.prices.items()))
    mandates = {m.mandate_id: m.model_dump(mode="json", exclude={"mandate_id"},
                                           exclude_defaults=True) for m in book.mandates}
    (folder / "mandates.yaml").write_text(yaml.safe_dump({"mandates": mandates}))
    (folder / "risk.yaml").write_text(
        yaml.safe_dump(book.risk.model_dump(mode="json", exclude_defaults=True)))
    (folder / "accounts.json").write_text(
        json.dumps([a.model_dump(mode="json") for a in book.accounts]))


def _letters(sa: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.kwargs["key"], json.loads(c.kwargs["value"]))
            for c in sa.dlq_topic.send.await_args_list]


def _sends(sa: Any, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """What the desk handed the producer for ``topic``: (key, message), in order."""
    calls = [c.args for c in sa.app.producer.send.await_args_list]
    assert all(len(args) == 6 and args[3:] == (None, None, None) for args in calls)
    return [(key.decode(), json.loads(value)) for name, key, value, *_ in calls if name == topic]


def test_agents_apply_prices_then_publish_each_block(streams_app: Any) -> None:
    sa = streams_app
    now = datetime.now(UTC)
    ticks = [
        json.dumps({"symbol": "XYZ", "price": 104.0, "ts": now.isoformat()}).encode(),
        b'{"symbol": "XYZ", "price": 0}',  # bad: to the dead-letter topic
        json.dumps({"symbol": "XYZ", "price": 90.0,  # older than the first: ignored
                    "ts": (now - timedelta(seconds=5)).isoformat()}).encode(),
    ]
    blocks = [order("reduce_lots", reference_time=now),
              order("reduce_lots", quantity=20_000, reference_time=now)]

    async def run() -> tuple[list[Any], list[Any]]:
        md_channel = sa.app.channel(schema=sa.marketdata_topic.schema)
        block_channel = sa.app.channel(schema=sa.blocks_topic.schema)
        async with sa.marketdata.test_context(channel=md_channel) as md:
            for value in ticks:
                await md.put(value, key=b"XYZ")
            md_results = [md.results[i] for i in range(len(ticks))]
        async with sa.blocks.test_context(channel=block_channel) as agent:
            for o in blocks:
                await agent.put(sa.BlockRecord.from_order(o), key=o.strategy)
            return md_results, [agent.results[i] for i in range(len(blocks))]

    md_results, results = asyncio.run(run())
    assert isinstance(md_results[0], PriceTick) and md_results[0].price == 104.0
    assert isinstance(md_results[1], DeadLetter)
    assert (md_results[1].stage, md_results[1].code) == ("marketdata", "INVALID_FIELD")
    (letter,) = _letters(sa)
    assert letter[0] == md_results[1].source.topic

    accepted, refused = results
    instructions = _sends(sa, "mats.allocations")
    assert [(k, v["status"], v["live_price"]) for k, v in instructions] == [
        (blocks[0].order_id, "accepted", 104.0), (blocks[1].order_id, "rejected", 104.0)]
    assert instructions[0][1]["placed_quantity"] == 4_000
    # each block is one journal entry, with what it published, at the prices taken before it
    assert [e.seq for e in (accepted, refused)] == [0, 1]
    assert accepted.marks["XYZ"].price == 104.0 and refused.marks == {}
    assert accepted.out[0].topic == "mats.allocations"
    assert sa.journal.send_changelog.call_count == 2
    assert sa.marks.send_changelog.call_count == 1  # the tick kept; the older one ignored
    prime = _sends(sa, "mats.orders.prime-a")
    retail = _sends(sa, "mats.orders.retail-b")
    assert [(k, v["quantity"]) for k, v in prime] == [(blocks[0].order_id, 1_974)]
    assert [(k, v["quantity"]) for k, v in retail] == [(blocks[0].order_id, 2_026)]
    alerts = _sends(sa, "mats.alerts")
    assert [(k, v["severity"], v["scope"]) for k, v in alerts] == [
        ("A", "warning", "lot"), (blocks[1].order_id, "critical", "block")]
    assert all(v["journey_id"] == o.journey_id
               for (_, v), o in zip(alerts, blocks, strict=True))
    assert alerts[-1][1]["reasons"][0]["code"] == "MAX_ORDER_QUANTITY"


def test_a_block_the_core_refuses_to_process_is_dead_lettered(
        streams_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sa = streams_app
    desk = sa.desk()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("core failure")

    monkeypatch.setattr(desk.engine, "process", broken)

    async def run() -> Any:
        channel = sa.app.channel(schema=sa.blocks_topic.schema)
        async with sa.blocks.test_context(channel=channel) as agent:
            await agent.put(sa.BlockRecord.from_order(order()), key="growth")
            return agent.results[0]

    letter = asyncio.run(run())
    assert isinstance(letter, DeadLetter)
    assert (letter.stage, letter.code, letter.journey_id) == ("blocks", "BLOCK_FAILED",
                                                              order().journey_id)
    assert "core failure" in letter.message
    assert sa.app.producer.send.await_count == 0


def test_a_broker_without_a_gateway_stops_the_worker(streams_app: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sa = streams_app
    monkeypatch.setenv("MATS_KAFKA_GATEWAYS", "prime-a")
    sa.brokers.cache_clear()
    with pytest.raises(sa.GatewayMissing, match="retail-b"):
        sa.desk()


def test_a_stalled_table_recovery_is_read_again_from_where_it_stopped(
        streams_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sa = streams_app
    tp = TopicPartition("mats-journal-changelog", 0)
    recovery = sa.app.tables.recovery
    monkeypatch.setattr(recovery, "active_highwaters", {tp: 29})
    monkeypatch.setattr(recovery, "active_offsets", {tp: 11})
    monkeypatch.setattr(sa.app, "in_recovery", True)
    assigned = {tp}
    monkeypatch.setattr(sa.app.consumer, "assignment", lambda: assigned)
    seek = AsyncMock()
    monkeypatch.setattr(sa.app.consumer, "seek_wait", seek)
    queued = [0]  # changelog entries fetched and not yet applied
    monkeypatch.setattr(sa.app.tables.changelog_queue, "qsize", lambda: queued[0])
    dumps = MagicMock()
    monkeypatch.setattr(sa, "_dump_state", dumps)
    clock = [1000.0]
    monkeypatch.setattr(sa, "_clock", lambda: clock[0])
    sa._recovery_progress.clear()

    def tick(seconds: float) -> None:
        clock[0] += seconds
        asyncio.run(sa._watch_recovery())

    tick(0)
    tick(sa.RECOVERY_STALL_S - 1)  # not long enough yet
    assert seek.await_count == 0
    recovery.active_offsets[tp] = 20  # it moved: the wait starts again
    tick(2)
    tick(sa.RECOVERY_STALL_S - 1)
    assert seek.await_count == 0
    queued[0] = 3  # entries wait to be applied: slow, not stalled
    tick(sa.RECOVERY_STALL_S * 2)
    assert seek.await_count == 0
    queued[0] = 0
    tick(sa.RECOVERY_STALL_S - 1)
    assert seek.await_count == 0
    tick(2)  # no entry read for longer than the limit: read again from the first one left
    seek.assert_awaited_once_with({tp: 21})
    dumps.assert_called_once_with(sa.app)
    tick(1)  # and not again at once
    assert seek.await_count == 1
    assigned.clear()  # a rebalance took the partition away meanwhile: no seek on it
    tick(sa.RECOVERY_STALL_S + 1)
    assert seek.await_count == 1
    assert tp in sa._recovery_progress
    monkeypatch.setattr(sa.app, "in_recovery", False)  # recovery over: nothing is watched
    tick(1)
    assert sa._recovery_progress == {}
    recovery.active_offsets[tp] = 29  # recovered to the end: nothing left to watch
    monkeypatch.setattr(sa.app, "in_recovery", True)
    tick(sa.RECOVERY_STALL_S * 2)
    tick(sa.RECOVERY_STALL_S * 2)
    assert seek.await_count == 1 and sa._recovery_progress == {}


def test_a_watch_that_fails_is_logged_and_runs_again(
        streams_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    sa = streams_app
    rounds = []

    async def broken() -> None:
        rounds.append(1)
        raise RuntimeError("the broker went away")

    guarded = sa._never_raises(broken)
    asyncio.run(guarded())
    asyncio.run(guarded())
    assert len(rounds) == 2
    assert "broken failed; it runs again" in caplog.text and "the broker went away" in caplog.text


def test_a_long_garbage_collection_is_logged_and_a_short_one_is_not(
        streams_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Every agent of a worker waits while the interpreter collects garbage: a collection that
    holds it 50 ms or more is told in the log, with its generation."""
    sa = streams_app
    now = [100.0]
    watch = sa._GcWatch(clock=lambda: now[0])
    watch("start", {"generation": 0})
    now[0] += 0.002
    watch("stop", {"generation": 0, "collected": 5})
    assert "gc:" not in caplog.text
    watch("start", {"generation": 2})
    now[0] += 0.123
    watch("stop", {"generation": 2, "collected": 40})
    assert "gc: generation 2 held the worker 123 ms (40 collected)" in caplog.text
    sa._watch_gc()
    sa._watch_gc()  # once per process, however often a worker starts
    import gc
    assert sum(isinstance(cb, sa._GcWatch) for cb in gc.callbacks) == 1


def test_what_a_worker_holds_at_start_is_frozen_out_of_full_collections(
        streams_app: Any) -> None:
    import gc

    try:
        gc.unfreeze()
        kept = object.__new__(type("Kept", (), {}))  # a tracked object held since the start
        sa = streams_app
        sa._freeze_start()
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # no collection scans it now
    finally:
        gc.unfreeze()


def test_a_fetch_while_every_partition_is_paused_takes_nothing(
        streams_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka reads an empty set of partitions as "every partition": a fetch made while a
    rebalance has paused them all would move every position past records Faust then drops
    (a changelog's, so the table recovery waits for ever). The worker's consumer thread
    fetches nothing then, and otherwise from a snapshot of the set."""
    sa = streams_app
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread = sa.app.consumer._thread
    assert isinstance(thread, sa._ConsumerThread)
    fetched = AsyncMock(return_value={"records": 1})
    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records", fetched)
    consumer = object()
    assert asyncio.run(thread._fetch_records(consumer, set(), timeout=1.0)) == {}
    assert fetched.await_count == 0
    active = {TopicPartition("mats-journal-changelog", 0)}
    got = asyncio.run(thread._fetch_records(consumer, active, timeout=1.0, max_records=5))
    assert got == {"records": 1}
    passed = fetched.await_args.args[1]
    assert passed == active and passed is not active  # a snapshot: the live set may change
    assert fetched.await_args.kwargs == {"timeout": 1.0, "max_records": 5}


def test_a_new_day_deletes_the_changelogs_of_the_desks_tables() -> None:
    import streams.app as sa

    names = {t.changelog_topic.get_topic_name() for t in (sa.journal, sa.marks)}
    assert names == set(kafka.desk_changelogs())


def test_the_allocations_topic_is_in_the_table() -> None:
    import streams.app as sa

    spec = {s.name: s for s in kafka.TOPICS}["mats.allocations"]
    assert (spec.partitions, spec.cleanup_policy) == (6, "delete")
    assert sa.allocations_topic.partitions == 6
    assert sa.blocks.channel is sa.blocks_topic
    assert sa.marketdata.channel is sa.marketdata_topic


# ------------------------------------------------------------------------------ real Kafka


async def _committed(consumer: AIOKafkaConsumer, topic: str) -> int:
    return sum([await consumer.committed(TopicPartition(topic, p)) or 0
                for p in range(partitions(topic))])


@pytest.mark.slow
def test_worker_on_real_kafka_publishes_instructions_orders_and_alerts(
        broker: kafka.KafkaSettings, book_copy: Path, tmp_path: Path) -> None:
    # the sample book, with room on the reference price's age: how long the worker takes to
    # start must not decide the outcome
    risk = yaml.safe_load((book_copy / "risk.yaml").read_text())
    (book_copy / "risk.yaml").write_text(yaml.safe_dump({**risk, "max_reference_age_s": 3600}))
    book = load_book(book_copy)
    brokers = brokers_of(book)
    base = load_orders(SAMPLE_DIR / "orders.json")[0]  # growth, UFY, net_liq
    now = datetime.now(UTC)
    live = round(book.prices[base.symbol] * 1.01, 2)
    tick = {"symbol": base.symbol, "price": live, "ts": now.isoformat()}
    good = base.model_copy(update={"order_id": "E2E-1", "journey_id": "J-E2E-1",
                                   "side": Side.BUY, "quantity": 1_000, "reference_price": live,
                                   "reference_time": now, "limit_price": None})
    refused = good.model_copy(update={"order_id": "E2E-2", "journey_id": "J-E2E-2",
                                      "quantity": 200_000})  # above the firm's 150,000
    # what the worker must decide, from the same book and price
    expected_engine = Engine(book)
    expected_engine.update_prices({base.symbol: live})
    expected = block_messages(expected_engine.decide(good, as_of=now), brokers, order=good,
                              decided_at=now)
    expected_children = {m.topic: m.message for m in gateway_messages(expected)}
    assert len(expected_children) >= 2  # the growth accounts are at several brokers
    outputs = ["mats.allocations", "mats.alerts", "mats.dlq", *expected_children]
    bootstrap = broker.bootstrap_servers
    log, sink_log = tmp_path / "worker.log", tmp_path / "sink.log"
    # what the sink must have written to the SQL store, journey by journey
    db = f"sqlite:///{tmp_path / 'store' / 'events.db'}"
    want_journeys = {
        "J-E2E-1": ["signal", "allocation_instruction", *["child_order"] * len(expected_children),
                    *["alert"] * len(of_kind(expected, Alert))],
        "J-E2E-2": ["signal", "allocation_instruction", "alert"],
    }

    async def scenario(box: list[subprocess.Popen[bytes]]) -> dict[str, list[Any]]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                    enable_idempotence=True)
        reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        group = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="mats",
                                 enable_auto_commit=False)
        await producer.start()
        await reader.start()
        await group.start()
        got: dict[str, list[Any]] = {name: [] for name in outputs}
        try:
            parts = [TopicPartition(n, p) for n in outputs for p in range(partitions(n))]
            reader.assign(parts)
            await reader.seek_to_beginning(*parts)
            await producer.send_and_wait("mats.marketdata", json.dumps(tick).encode(),
                                         key=base.symbol.encode())
            await producer.send_and_wait("mats.marketdata", b"not a tick", key=b"?")
            box.append(start_worker(broker, tmp_path, book_copy, log))
            box.append(start_sink(broker, tmp_path, book_copy, sink_log,
                                  extra_env={"MATS_DB_URL": db}))

            def check() -> None:
                assert box[0].poll() is None, f"the worker died:\n{log.read_text()[-3000:]}"
                assert box[1].poll() is None, f"the sink died:\n{sink_log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, (
                    f"{ {k: len(v) for k, v in got.items()} }; worker log:\n"
                    f"{log.read_text()[-3000:]}")

            # the signals go in once the worker has taken the tick (its group committed it), so
            # the block is decided at the live price whatever the order of the two topics
            deadline = time.monotonic() + WAIT_S
            while await _committed(group, "mats.marketdata") < 2:
                check()
                await asyncio.sleep(0.2)
            for o in (good, refused):
                await producer.send_and_wait("mats.signals", o.model_dump_json().encode(),
                                             key=o.strategy.encode())
            deadline = time.monotonic() + WAIT_S
            while (len(got["mats.allocations"]) < 2 or len(got["mats.dlq"]) < 1
                   or len(got["mats.alerts"]) < len(of_kind(expected, Alert)) + 1
                   or any(not got[t] for t in expected_children)):
                check()
                for tp, records in (await reader.getmany(timeout_ms=500)).items():
                    got[tp.topic].extend((r.key, r.value) for r in records)
            # the sink may lag the outputs: wait (bounded) until it has written them all
            with Store(db) as store:
                deadline = time.monotonic() + WAIT_S
                while ({j: len(store.journey(j)) for j in want_journeys}
                       != {j: len(kinds) for j, kinds in want_journeys.items()}
                       or store.count() < sum(map(len, want_journeys.values())) + 1):
                    check()
                    await asyncio.sleep(0.2)
        finally:
            await producer.stop()
            await reader.stop()
            await group.stop()
        return got

    box: list[subprocess.Popen[bytes]] = []
    try:
        got = asyncio.run(scenario(box))
    finally:
        codes = [stop_worker(p) for p in box]
    assert codes == [0, 0], log.read_text()[-3000:] + sink_log.read_text()[-3000:]

    instructions = {k.decode(): AllocationInstruction.model_validate_json(v)
                    for k, v in got["mats.allocations"]}
    assert set(instructions) == {"E2E-1", "E2E-2"}
    accepted = instructions["E2E-1"]
    (want,) = of_kind(expected, AllocationInstruction)
    assert (accepted.status, accepted.live_price, accepted.journey_id) == ("accepted", live,
                                                                          "J-E2E-1")
    assert accepted.lots == want.lots and accepted.event_id == want.event_id
    assert instructions["E2E-2"].status == "rejected"

    for topic, child in expected_children.items():
        (message,) = [(k, ChildOrder.model_validate_json(v)) for k, v in got[topic]]
        assert message[0] == b"E2E-1"
        assert message[1].model_dump(exclude={"decided_at"}) == child.model_dump(
            exclude={"decided_at"})
    assert sum(c.quantity for c in expected_children.values()) == accepted.placed_quantity
    # the refused block reached no gateway
    assert all(ChildOrder.model_validate_json(v).order_id == "E2E-1"
               for t in expected_children for _, v in got[t])

    alerts = [Alert.model_validate_json(v) for _, v in got["mats.alerts"]]
    block_alerts = [a for a in alerts if a.order_id == "E2E-2"]
    assert [(a.severity, a.scope, a.journey_id) for a in block_alerts] == [
        (Severity.CRITICAL, "block", "J-E2E-2")]
    assert "MAX_ORDER_QUANTITY" in [r.code for r in block_alerts[0].reasons]
    assert [a.event_id for a in alerts if a.order_id == "E2E-1"] == [
        a.event_id for a in of_kind(expected, Alert)]

    (letter,) = [DeadLetter.model_validate_json(v) for _, v in got["mats.dlq"]]
    assert (letter.stage, letter.code, letter.source.topic) == ("marketdata", "NOT_JSON",
                                                                "mats.marketdata")

    # the SQL store: from any event of a journey one walks back to its signal
    with Store(db) as store:
        journeys = {j: store.journey(j) for j in want_journeys}
        assert {j: [e.kind for e in events] for j, events in journeys.items()} == want_journeys
        passed = journeys["J-E2E-1"]
        signal = passed[0]
        assert (signal.topic, signal.order_id) == ("mats.blocks", "E2E-1")
        assert signal.data()["quantity"] == 1_000
        assert passed[1].event_id == accepted.event_id
        assert passed[1].data()["status"] == "accepted"
        children = [e for e in passed if e.kind == "child_order"]
        assert {e.topic for e in children} == set(expected_children)
        assert {e.event_id for e in children} == {c.event_id for c in expected_children.values()}
        assert sum(e.data()["quantity"] for e in children) == accepted.placed_quantity
        for e in children:  # a child order leads back to its signal
            assert store.journey(e.journey_id or "")[0].event_id == signal.event_id
        assert {e.order_id for e in passed} == {"E2E-1"}
        refused_journey = journeys["J-E2E-2"]
        assert refused_journey[1].data()["status"] == "rejected"
        (alert,) = [e for e in refused_journey if e.kind == "alert"]
        assert alert.event_id == block_alerts[0].event_id
        assert alert.data()["scope"] == "block" and alert.order_id == "E2E-2"
        # the bad tick's dead letter is there too, with no journey; nothing was unreadable
        assert store.count() == sum(map(len, want_journeys.values())) + 1
    text = log.read_text()
    assert "Traceback" not in text and "Crashed" not in text, text[-3000:]


def test_a_message_handed_over_at_once_makes_no_tasks_and_one_that_waits_still_races(
        streams_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The consumer hands each message to the streams as ``wait_first(callback(message),
    suspend_flow.wait())``. A callback that finishes at once is run in place (its result
    returned, the other waits never started); one that has to wait still races the others,
    and loses its rest when a suspension comes first."""
    consumer = streams_app.app.consumer
    assert isinstance(consumer, streams_app._Consumer)

    async def at_once(value: int) -> int:
        return value

    async def later(gate: asyncio.Event, log: list[str]) -> str:
        log.append("began")
        try:
            await gate.wait()
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        log.append("finished")
        return "done"

    async def scenario() -> None:
        # the consumer's own stop and crash events, new on this loop
        monkeypatch.setattr(consumer, "_stopped", ModeEvent())
        monkeypatch.setattr(consumer, "_crashed", ModeEvent())
        tasks_before = len(asyncio.all_tasks())
        never = asyncio.Event()
        suspended = never.wait()
        got = await consumer.wait_first(at_once(7), suspended)
        assert (got.done, got.results, got.stopped) == ([got.done[0]], [7], False)
        assert len(asyncio.all_tasks()) == tasks_before
        assert suspended.cr_frame is None  # closed, never started (no warning later)

        # the callback waits, then finishes first: its result, as before
        gate, log = asyncio.Event(), []
        asyncio.get_running_loop().call_later(0.01, gate.set)
        got = await consumer.wait_first(later(gate, log), asyncio.Event().wait())
        assert got.results == ["done"] and log == ["began", "finished"]

        # the callback waits and the flow is suspended first: the rest of it is cancelled
        gate, log, suspend = asyncio.Event(), [], asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, suspend.set)
        got = await consumer.wait_first(later(gate, log), suspend.wait())
        assert got.results == [True] and not got.stopped
        await asyncio.sleep(0)
        assert log == ["began", "cancelled"]

        # an error in a callback that finishes at once is raised, as before
        async def broken() -> None:
            raise ValueError("bad message")

        with pytest.raises(ValueError, match="bad message"):
            await consumer.wait_first(broken(), asyncio.Event().wait())

    # on the consumer's own loop, where the waits it races run
    loop = asyncio.new_event_loop()
    monkeypatch.setattr(consumer, "_loop", loop)
    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 10))
    finally:
        loop.close()
