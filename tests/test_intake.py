"""Intake: signals checked into block orders or dead-lettered with the reason.

Three levels: the plain validation function (:mod:`mats.intake`, no Faust); the Faust agent
(``streams.app.intake``) in its test context, its outgoing topics replaced by recorders; and the
whole path against a real Kafka broker, with ``faust -A streams.app worker`` in its own process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from conftest import SAMPLE_DIR
from mats import intake, kafka
from mats.config import load_book, load_orders, render_loc
from mats.intake import DeadLetter, KnownIds, SignalError, dead_letter, validate_signal
from mats.models import BlockOrder
from workers import WAIT_S, partitions, start_worker, stop_worker

ORDERS = load_orders(SAMPLE_DIR / "orders.json")
GOOD = ORDERS[0]  # GRO-0001: growth, UFY, sell 801, net_liq


def signal_of(**changes: Any) -> dict[str, Any]:
    """The good order as a JSON object, with fields changed (a value of ... drops the field)."""
    data: dict[str, Any] = json.loads(GOOD.model_dump_json(exclude_none=True))
    for name, value in changes.items():
        if value is ...:
            del data[name]
        else:
            data[name] = value
    return data


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()  # NaN and Infinity written as JS tokens, as Python does


@pytest.fixture(scope="module")
def known() -> KnownIds:
    return KnownIds.of(load_book(SAMPLE_DIR))


# ------------------------------------------------------------------------------ the function


def test_a_good_signal_is_its_block_order(known: KnownIds) -> None:
    for order in ORDERS[:20]:
        text = order.model_dump_json()
        assert validate_signal(text.encode(), known) == order
        assert validate_signal(text, known) == order


BAD: list[tuple[str, bytes | None, str, str, str]] = [
    # (id, message value, code, field, words in the message)
    ("none", None, intake.NOT_JSON, "", "empty message"),
    ("empty", b"", intake.NOT_JSON, "", "empty message"),
    ("blank", b" \n\t", intake.NOT_JSON, "", "empty message"),
    ("not-utf8", b'{"order_id": "\xff"}', intake.NOT_JSON, "", "not UTF-8 text (bad byte at"),
    ("truncated", raw(signal_of())[:40], intake.NOT_JSON, "", "invalid JSON at line 1"),
    ("trailing", raw(signal_of()) + b"}", intake.NOT_JSON, "", "Extra data"),
    ("single-quotes", b"{'order_id': 'A'}", intake.NOT_JSON, "", "invalid JSON"),
    ("list", raw([signal_of()]), intake.NOT_AN_OBJECT, "", "found a list"),
    ("number", b"42", intake.NOT_AN_OBJECT, "", "found a number"),
    ("null", b"null", intake.NOT_AN_OBJECT, "", "found null"),
    ("missing-side", raw(signal_of(side=...)), intake.MISSING_FIELD, "side", "Field required"),
    ("missing-price", raw(signal_of(reference_price=...)), intake.MISSING_FIELD,
     "reference_price", "Field required"),
    ("missing-journey", raw(signal_of(journey_id=...)), intake.MISSING_FIELD, "journey_id",
     "Field required"),
    ("zero-quantity", raw(signal_of(quantity=0)), intake.INVALID_FIELD, "quantity",
     "greater than 0, got 0"),
    ("negative-quantity", raw(signal_of(quantity=-300)), intake.INVALID_FIELD, "quantity",
     "greater than 0, got -300"),
    ("fractional-quantity", raw(signal_of(quantity=10.5)), intake.INVALID_FIELD, "quantity",
     "fractional part"),
    ("nan-price", raw(signal_of(reference_price=float("nan"))), intake.INVALID_FIELD,
     "reference_price", "finite number"),
    ("nan-price-text", raw(signal_of(reference_price="NaN")), intake.INVALID_FIELD,
     "reference_price", "finite number"),
    ("infinite-limit", raw(signal_of(limit_price=float("inf"))), intake.INVALID_FIELD,
     "limit_price", "finite number"),
    ("negative-price", raw(signal_of(reference_price=-1.5)), intake.INVALID_FIELD,
     "reference_price", "greater than 0"),
    ("bad-side", raw(signal_of(side="hold")), intake.INVALID_FIELD, "side", "'buy' or 'sell'"),
    ("naive-time", raw(signal_of(reference_time="2025-06-13T14:29:53")), intake.INVALID_FIELD,
     "reference_time", "timezone"),
    ("unknown-field", raw(signal_of(qty=5)), intake.INVALID_FIELD, "qty", "unknown field"),
    ("duplicate-key", b'{"order_id": "A", "order_id": "B"}', intake.INVALID_FIELD, "",
     "key 'order_id' given twice"),
    ("two-sizes", raw(signal_of(target_weight_pct=2.0)), intake.INVALID_FIELD, "",
     "exactly one of quantity and target_weight_pct"),
    ("unknown-symbol", raw(signal_of(symbol="NOPE")), intake.UNKNOWN_SYMBOL, "symbol",
     "unknown symbol 'NOPE'"),
    ("unknown-account", raw(signal_of(accounts=["ACC-001", "ACC-999"])),
     intake.UNKNOWN_ACCOUNT, "accounts[1]", "unknown account 'ACC-999'"),
    ("unknown-ratio-account",
     raw(signal_of(method="ratios", ratios={"ACC-001": 1.0, "ACC 999": 2.0})),
     intake.UNKNOWN_ACCOUNT, "ratios['ACC 999']", "unknown account 'ACC 999'"),
    ("unknown-shares-account",
     raw(signal_of(method="shares", quantity=801, shares={"ACC-002": 800, "X-1": 1})),
     intake.UNKNOWN_ACCOUNT, "shares.X-1", "unknown account 'X-1'"),
]


@pytest.mark.parametrize(("value", "code", "field", "words"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_a_bad_signal_is_refused_with_the_reason(value: bytes | None, code: str, field: str,
                                                 words: str, known: KnownIds) -> None:
    with pytest.raises(SignalError) as caught:
        validate_signal(value, known)
    e = caught.value
    assert (e.code, render_loc(e.loc), e.problems[0].field) == (code, field, field)
    assert words in e.message
    assert e.problems[0].message == e.message


def test_every_problem_is_reported(known: KnownIds) -> None:
    with pytest.raises(SignalError) as caught:
        validate_signal(raw(signal_of(side="hold", quantity=-5, limit_price=float("nan"))),
                        known)
    assert {(p.code, p.field) for p in caught.value.problems} == {
        (intake.INVALID_FIELD, "side"), (intake.INVALID_FIELD, "quantity"),
        (intake.INVALID_FIELD, "limit_price")}
    with pytest.raises(SignalError) as caught:
        validate_signal(raw(signal_of(symbol="NOPE", accounts=["ZZ-1", "ACC-001", "ZZ-2"])),
                        known)
    assert [(p.code, p.field) for p in caught.value.problems] == [
        (intake.UNKNOWN_SYMBOL, "symbol"), (intake.UNKNOWN_ACCOUNT, "accounts[0]"),
        (intake.UNKNOWN_ACCOUNT, "accounts[2]")]


def test_a_rejection_keeps_the_journey_id(known: KnownIds) -> None:
    with pytest.raises(SignalError) as caught:
        validate_signal(raw(signal_of(symbol="NOPE")), known)
    assert caught.value.journey_id == GOOD.journey_id
    with pytest.raises(SignalError) as caught:
        validate_signal(raw(signal_of(journey_id=7, quantity=0)), known)
    assert caught.value.journey_id is None


def test_an_unexpected_failure_is_a_rejection_not_a_crash(
        known: KnownIds, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(order: BlockOrder, known: KnownIds) -> list[intake.Problem]:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(intake, "_reference_problems", broken)
    with pytest.raises(SignalError) as caught:
        validate_signal(raw(signal_of()), known)
    assert caught.value.code == intake.INTAKE_FAILED
    assert caught.value.message == "ZeroDivisionError: a bug"
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    with pytest.raises(SignalError) as caught:
        validate_signal({"order_id": "A"}, known)  # type: ignore[arg-type]
    assert caught.value.code == intake.NOT_JSON


def test_dead_letter_carries_reason_payload_source_and_time(known: KnownIds) -> None:
    value = raw(signal_of(quantity=0))
    with pytest.raises(SignalError) as caught:
        validate_signal(value, known)
    now = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    letter = dead_letter(value, caught.value, topic="mats.signals", partition=4, offset=17,
                         key=b"growth", timestamp=1_764_082_800.25, now=now)
    doc = json.loads(letter.model_dump_json())
    assert doc["stage"] == "intake"
    assert (doc["code"], doc["field"]) == ("INVALID_FIELD", "quantity")
    assert doc["message"] == "Input should be greater than 0, got 0"
    assert doc["problems"] == [{"code": "INVALID_FIELD", "loc": ["quantity"], "field": "quantity",
                                "message": "Input should be greater than 0, got 0"}]
    assert doc["journey_id"] == GOOD.journey_id
    assert doc["source"] == {"topic": "mats.signals", "partition": 4, "offset": 17,
                             "key": "growth", "key_encoding": "utf-8",
                             "timestamp": "2025-11-25T15:00:00.250000Z"}
    assert (doc["payload"].encode(), doc["payload_encoding"]) == (value, "utf-8")
    assert doc["rejected_at"] == "2026-11-25T15:00:00Z"
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


def test_dead_letter_of_bytes_that_are_not_text(known: KnownIds) -> None:
    value = b"\x00\xff\xfe{"
    with pytest.raises(SignalError) as caught:
        validate_signal(value, known)
    letter = dead_letter(value, caught.value, topic="mats.signals", partition=0, offset=0,
                         key=b"\xff")
    assert letter.payload_encoding == "base64"
    assert base64.b64decode(letter.payload) == value
    assert letter.source.key_encoding == "base64"
    assert base64.b64decode(letter.source.key or "") == b"\xff"
    assert letter.source.timestamp is None
    assert letter.rejected_at.tzinfo is not None
    tombstone = dead_letter(None, caught.value, topic="mats.signals", partition=0, offset=1)
    assert (tombstone.payload, tombstone.source.key) == ("", None)


# ------------------------------------------------------------------------------ the Faust app


@pytest.fixture
def streams_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``streams.app`` ready for agent tests: finalized, in-memory store, its sends recorded."""
    import streams.app as sa

    monkeypatch.setenv("MATS_BOOK_DIR", str(SAMPLE_DIR))
    sa.known_ids.cache_clear()
    sa.app.finalize()
    sa.app.flow_control.resume()
    monkeypatch.setattr(sa.app.producer, "send", AsyncMock())
    monkeypatch.setattr(sa.dlq_topic, "send", AsyncMock())
    yield sa
    sa.known_ids.cache_clear()


def test_the_app_takes_its_topics_from_the_table() -> None:
    import streams.app as sa

    specs = {s.name: s for s in kafka.TOPICS}
    for topic in (sa.signals_topic, sa.blocks_topic, sa.dlq_topic, sa.marketdata_topic,
                  sa.exec_reports_topic, sa.account_fills_topic, sa.exposure_topic):
        (name,) = topic.topics
        assert topic.partitions == specs[name].partitions
    assert specs["mats.signals"].partitions == 6  # intake scales out
    # the sequenced path and the desk's state tables: one partition, so one order
    for name in ("mats.blocks", "mats.marketdata", "mats.exec-reports"):
        assert specs[name].partitions == kafka.SEQUENCED_PARTITIONS == 1
    assert sa.journal.partitions == sa.marks.partitions == 1
    assert specs["mats.blocks"].cleanup_policy == "delete"
    assert sa.intake.channel is sa.signals_topic
    assert sa.app.conf.id == "mats"


def test_broker_urls_from_the_environment(tmp_path: Path) -> None:
    import streams.app as sa

    assert sa.broker_urls({"MATS_KAFKA_BOOTSTRAP": "k1:9092,k2:9093"}) == [
        "kafka://k1:9092", "kafka://k2:9093"]
    default = f"kafka://{kafka.DEFAULT_HOST}:{kafka.DEFAULT_PORT}"
    assert sa.broker_urls({"MATS_KAFKA_RUN_DIR": str(tmp_path)}) == [default]
    assert sa.book_dir({}) == SAMPLE_DIR
    assert sa.book_dir({"MATS_BOOK_DIR": "elsewhere"}) == Path("elsewhere")


def test_producers_are_idempotent_with_acks_all(streams_app: Any) -> None:
    producer = streams_app.app.producer
    settings = {**producer._settings_default(), **producer._settings_extra()}
    assert settings["acks"] == "all"
    assert settings["enable_idempotence"] is True


def test_block_record_mirrors_the_model() -> None:
    from streams.app import BlockRecord

    assert set(BlockRecord._options.fields) == set(BlockOrder.model_fields)
    for order in ORDERS:
        record = BlockRecord.from_order(order)
        wire = record.dumps()
        assert json.loads(wire) == json.loads(order.model_dump_json())  # plain model JSON
        assert BlockRecord.loads(wire).to_order() == order


async def _through_agent(sa: Any, messages: list[tuple[bytes | None, bytes | None]]) -> list[Any]:
    # The test channel decodes as the real topic does (raw bytes), so what the agent sees is
    # what a Kafka consumer hands it.
    channel = sa.app.channel(schema=sa.signals_topic.schema)
    async with sa.intake.test_context(channel=channel) as agent:
        for key, value in messages:
            await agent.put(value, key=key)
        return [agent.results[i] for i in range(len(messages))]


def test_agent_sends_orders_to_blocks_and_bad_signals_to_the_dlq(streams_app: Any) -> None:
    sa = streams_app
    good = ORDERS[:4]
    bad = [case[1] for case in BAD]
    messages: list[tuple[bytes | None, bytes | None]] = [
        (good[0].strategy.encode(), good[0].model_dump_json().encode()),
        *[(b"k", value) for value in bad[:10]],
        *[(o.strategy.encode(), o.model_dump_json().encode()) for o in good[1:]],
        *[(None, value) for value in bad[10:]],
    ]
    bad_offsets = [*range(1, 11), *range(10 + len(good), len(messages))]
    results = asyncio.run(_through_agent(sa, messages))

    blocks = [c.args for c in sa.app.producer.send.await_args_list]
    assert {args[0] for args in blocks} == {"mats.blocks"}
    assert [args[1] for args in blocks] == [o.strategy.encode() for o in good]
    assert [sa.BlockRecord.loads(args[2]).to_order() for args in blocks] == good
    assert [r for r in results if isinstance(r, BlockOrder)] == good

    letters = [DeadLetter.model_validate_json(c.kwargs["value"])
               for c in sa.dlq_topic.send.await_args_list]
    assert {c.kwargs["key"] for c in sa.dlq_topic.send.await_args_list} == {"mats.signals"}
    assert [(d.code, d.field) for d in letters] == [(code, field) for _, _, code, field, _ in BAD]
    assert [r for r in results if isinstance(r, DeadLetter)] == letters
    assert [d.source.offset for d in letters] == bad_offsets
    assert {d.source.topic for d in letters} == {"mats.signals"}
    for d, value in zip(letters, bad, strict=True):
        sent = base64.b64decode(d.payload) if d.payload_encoding == "base64" else d.payload.encode()
        assert sent == (value or b"")


# ------------------------------------------------------------------------------ real Kafka


class _Outputs:
    """Everything on ``mats.blocks`` and ``mats.dlq``, read from the start."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.blocks: list[tuple[bytes | None, bytes | None]] = []
        self.dlq: list[tuple[bytes | None, bytes | None]] = []

    async def start(self) -> None:
        await self.consumer.start()
        parts = [TopicPartition(name, p) for name in ("mats.blocks", "mats.dlq")
                 for p in range(partitions(name))]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)

    async def until(self, blocks: int, dlq: int, worker: subprocess.Popen[bytes],
                    log: Path) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.blocks) < blocks or len(self.dlq) < dlq:
            assert worker.poll() is None, f"the worker died:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"{len(self.blocks)}/{blocks} blocks, {len(self.dlq)}/{dlq} dead letters; "
                f"worker log:\n{log.read_text()[-3000:]}")
            for tp, records in (await self.consumer.getmany(timeout_ms=500)).items():
                into = self.blocks if tp.topic == "mats.blocks" else self.dlq
                into.extend((r.key, r.value) for r in records)


async def _send(producer: AIOKafkaProducer,
                messages: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    out = []
    for key, value in messages:
        meta = await producer.send_and_wait("mats.signals", value, key=key)
        out.append((meta.partition, meta.offset))
    return out


async def _committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) or 0
                for p in range(partitions(topic))}
    finally:
        await consumer.stop()


@pytest.mark.slow
def test_worker_on_real_kafka_routes_every_signal(broker: kafka.KafkaSettings,
                                                  tmp_path: Path) -> None:
    good = ORDERS[:12]
    goods = [(o.strategy.encode(), o.model_dump_json().encode()) for o in good]
    bads = [(b"bad-" + case[0].encode(), case[1]) for case in BAD]
    codes = {value_key: case[2] for value_key, case in zip(bads, BAD, strict=True)}
    # half before the worker starts (a backlog), half while it runs
    first = goods[:6] + bads[: len(bads) // 2]
    second = bads[len(bads) // 2:] + goods[6:]
    log = tmp_path / "worker.log"
    bootstrap = broker.bootstrap_servers

    async def scenario(worker_box: list[subprocess.Popen[bytes]]) -> tuple[_Outputs, list[Any]]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                    enable_idempotence=True)
        outputs = _Outputs(bootstrap)
        await producer.start()
        await outputs.start()
        try:
            where = await _send(producer, first)
            worker_box.append(start_worker(broker, tmp_path, SAMPLE_DIR, log))
            await outputs.until(6, len(first) - 6, worker_box[0], log)
            where += await _send(producer, second)
            await outputs.until(len(goods), len(bads), worker_box[0], log)
        finally:
            await producer.stop()
            await outputs.consumer.stop()
        return outputs, where

    box: list[subprocess.Popen[bytes]] = []
    try:
        outputs, where = asyncio.run(scenario(box))
    finally:
        code = stop_worker(box[0]) if box else None
    assert code == 0, log.read_text()[-3000:]
    # a clean stop: the worker's group has committed every signal it consumed
    committed = asyncio.run(_committed(bootstrap, "mats.signals", group="mats"))
    assert sum(committed.values()) == len(first) + len(second)

    sent = first + second
    position = dict(zip(where, sent, strict=True))
    assert len(outputs.blocks) == len(goods)
    assert sorted(k or b"" for k, _ in outputs.blocks) == sorted(k or b"" for k, _ in goods)
    by_id = {o.order_id: o for o in good}
    for key, value in outputs.blocks:
        order = BlockOrder.model_validate_json(value or b"")
        assert order == by_id.pop(order.order_id)
        assert key == order.strategy.encode()
    assert by_id == {}

    assert len(outputs.dlq) == len(bads)
    for key, value in outputs.dlq:
        assert key == b"mats.signals"
        letter = DeadLetter.model_validate_json(value or b"")
        source = letter.source
        assert source.topic == "mats.signals"
        original = position.pop((source.partition, source.offset))
        assert original in bads
        assert letter.code == codes[original]
        assert letter.message and letter.problems
        payload = (base64.b64decode(letter.payload) if letter.payload_encoding == "base64"
                   else letter.payload.encode())
        assert payload == (original[1] or b"")
        assert (source.key or "").encode() == original[0]
        assert source.timestamp is not None and letter.rejected_at.tzinfo is not None
    assert all(message in goods for message in position.values())

    text = log.read_text()
    assert "Traceback" not in text and "Crashed" not in text, text[-3000:]
