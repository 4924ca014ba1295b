"""The SQL store's event log: migrations, idempotent recording, journeys, messages to rows.

Every test of the store runs twice: on SQLite (a file of the test's own) and on PostgreSQL
(Debian's server, one per session, see ``conftest.postgres``; a database of the test's own).
No Kafka and no Faust here: the ``sink`` agent is checked on a real broker by the end-to-end
tests in ``tests/test_blocks.py`` (SQLite) and ``tests/test_pg.py`` (PostgreSQL).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from mats import Engine
from mats.blocks import Alert, AllocationInstruction, ChildOrder, block_messages, event_id
from mats.intake import KnownIds, SignalError, dead_letter, validate_signal
from mats.store import KINDS, Event, Store, db_url, event_from_message, migrate
from test_blocks import BOOK, BROKERS, NOW, order


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of the test's own, on each backend the store supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'mats.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(url: str) -> Any:
    with Store(url) as s:
        yield s


def _messages(quantity: int = 4_000, policy: str = "reduce_lots") -> tuple[Any, list[Any]]:
    o = order(policy, quantity=quantity)
    decision = Engine(BOOK).decide(o, as_of=NOW)
    return o, block_messages(decision, BROKERS, order=o, decided_at=NOW)


def _rows(o: Any, messages: list[Any], offset: int = 0) -> list[Event]:
    signal = event_from_message("mats.blocks", 0, offset, o.model_dump_json().encode(),
                                timestamp=(NOW - timedelta(seconds=1)).timestamp())
    return [signal, *(event_from_message(m.topic, 1, offset + i, m.value(),
                                         key=m.key.encode())
                      for i, m in enumerate(messages))]


# ------------------------------------------------------------------------------ schema


def test_migrations_create_the_table_in_a_fresh_database(url: str, tmp_path: Path) -> None:
    if url.startswith("sqlite"):
        assert not (tmp_path / "db").exists()
    else:
        engine = create_engine(url)
        try:
            assert inspect(engine).get_table_names() == []
        finally:
            engine.dispose()
    migrate(url)
    engine = create_engine(url)
    try:
        schema = inspect(engine)
        assert set(schema.get_table_names()) == {"events", "sod_state", "alembic_version"}
        columns = {c["name"]: c for c in schema.get_columns("events")}
        if engine.dialect.name == "postgresql":  # an instant (timestamptz), not a wall time
            assert columns["occurred_at"]["type"].timezone is True
            assert columns["recorded_at"]["type"].timezone is True
        assert list(columns) == ["event_id", "kind", "journey_id", "order_id", "account_id",
                                 "topic", "occurred_at", "recorded_at", "payload"]
        assert [c for c, col in columns.items() if col["nullable"]] == [
            "journey_id", "order_id", "account_id"]
        assert schema.get_pk_constraint("events")["constrained_columns"] == ["event_id"]
        assert {tuple(ix["column_names"]) for ix in schema.get_indexes("events")} == {
            ("journey_id",), ("order_id",)}
        with engine.connect() as c:
            assert c.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                ("0002",)]
    finally:
        engine.dispose()
    migrate(url)  # at head already: nothing to do, nothing fails
    with Store(url) as s:
        assert s.count() == 0


def test_the_url_comes_from_the_environment() -> None:
    assert db_url({}) == "sqlite:///run/mats.db"
    assert db_url({"MATS_DB_URL": "postgresql://mats@db/mats"}) == "postgresql://mats@db/mats"


# ------------------------------------------------------------------------------ recording


def test_recording_is_idempotent_by_event_id(store: Store) -> None:
    o, messages = _messages()
    rows = _rows(o, messages)
    assert store.record(rows) == len(rows) == 1 + len(messages)
    assert store.count() == len(rows)
    # the same messages read again (a redelivery), even at other offsets: no new row
    assert store.record(_rows(o, messages, offset=100)) == 0
    (again,) = [r for r in _rows(o, messages) if r.kind == "allocation_instruction"]
    assert store.record([again, again]) == 0
    assert store.count() == len(rows)
    # in one batch, a repeated id counts once
    o2, messages2 = _messages(quantity=3_000)
    more = _rows(o2, messages2)
    assert store.record([*more, *more]) == len(more)
    assert store.record([]) == 0


def test_a_journey_walks_from_the_signal_to_its_alerts(store: Store) -> None:
    o, messages = _messages()
    rows = _rows(o, messages)
    store.record(reversed(rows))  # the order of arrival does not matter
    store.record(_rows(*_messages(quantity=20_000)))  # another journey

    journey = store.journey(o.journey_id)
    assert [e.kind for e in journey] == ["signal", "allocation_instruction", "child_order",
                                         "child_order", "alert"]
    assert {e.journey_id for e in journey} == {o.journey_id}
    assert {e.order_id for e in journey} == {o.order_id}
    signal, instruction, prime, retail, alert = journey
    assert signal.event_id == event_id(o.order_id, "signal")
    assert instruction.event_id == event_id(o.order_id, "allocation_instruction")
    assert [prime.topic, retail.topic] == ["mats.orders.prime-a", "mats.orders.retail-b"]
    assert (alert.account_id, alert.data()["severity"]) == ("A", "warning")
    assert signal.data()["quantity"] == 4_000
    assert ChildOrder.model_validate_json(prime.payload).quantity == 1_974
    for e in journey:
        assert e.occurred_at.tzinfo is not None and e.recorded_at.tzinfo is not None
    assert instruction.occurred_at == NOW
    assert store.journey("no-such-journey") == []


def test_concurrent_writers_store_each_event_once(url: str) -> None:
    # four sinks recording the same messages at the same time (a redelivery racing the first
    # delivery): the database decides, no insert fails and each event is stored once
    o, messages = _messages()
    rows = _rows(o, messages)
    migrate(url)
    stores = [Store(url) for _ in range(4)]
    start = threading.Barrier(len(stores), timeout=60)
    new: list[int] = []
    errors: list[BaseException] = []

    def write(s: Store) -> None:
        try:
            start.wait()
            new.append(s.record(_rows(o, messages)))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        assert not any(th.is_alive() for th in threads)
        assert errors == []
        assert sorted(new, reverse=True)[0] >= 1 and sum(new) == len(rows)
        assert stores[0].count() == len(rows)
    finally:
        for s in stores:
            s.close()


def test_times_come_back_in_utc_as_the_same_instants(store: Store) -> None:
    india, new_york = timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-4))
    occurred = datetime(2024, 6, 3, 20, 0, 0, 123_456, tzinfo=india)
    recorded = datetime(2024, 6, 3, 10, 30, 1, 654_321, tzinfo=new_york)
    row = Event(event_id="E-tz", kind="alert", journey_id="J-tz", order_id="O-tz",
                account_id="A", topic="mats.alerts", occurred_at=occurred,
                recorded_at=recorded, payload="{}")
    assert store.record([row]) == 1
    (back,) = store.journey("J-tz")
    assert (back.occurred_at, back.recorded_at) == (occurred, recorded)
    assert back.occurred_at.utcoffset() == back.recorded_at.utcoffset() == timedelta(0)
    assert back.occurred_at.isoformat() == "2024-06-03T14:30:00.123456+00:00"
    if store.engine.dialect.name == "postgresql":
        # a session in another zone reads the same instants, still handed back in UTC
        elsewhere = make_url(store.url).update_query_dict({"options": "-c TimeZone=Asia/Tokyo"})
        with Store(elsewhere.render_as_string(hide_password=False)) as tokyo:
            with tokyo.engine.connect() as c:
                assert c.exec_driver_sql("SHOW TimeZone").scalar() == "Asia/Tokyo"
            (seen,) = tokyo.journey("J-tz")
            assert seen.occurred_at.isoformat() == back.occurred_at.isoformat()
            assert seen.recorded_at.isoformat() == back.recorded_at.isoformat()
    naive = Event(event_id="E-naive", kind="alert", journey_id="J-tz", topic="mats.alerts",
                  occurred_at=datetime(2024, 6, 3, 14, 30), payload="{}")
    with pytest.raises(Exception, match="without zone"):
        store.record([naive])
    assert store.count() == 1


def test_refused_block_journey(store: Store) -> None:
    o, messages = _messages(quantity=20_000)
    store.record(_rows(o, messages))
    journey = store.journey(o.journey_id)
    assert [e.kind for e in journey] == ["signal", "allocation_instruction", "alert"]
    assert journey[2].data()["scope"] == "block" and journey[2].account_id is None


# ------------------------------------------------------------------------------ messages to rows


def test_each_message_type_is_its_row() -> None:
    o, messages = _messages()
    instruction, prime, _, alert = (event_from_message(m.topic, 0, i, m.value())
                                    for i, m in enumerate(messages))
    (want_instruction,) = [m.message for m in messages
                           if isinstance(m.message, AllocationInstruction)]
    assert (instruction.kind, instruction.event_id, instruction.topic) == (
        "allocation_instruction", want_instruction.event_id, "mats.allocations")
    assert (instruction.journey_id, instruction.order_id, instruction.account_id) == (
        o.journey_id, o.order_id, None)
    assert json.loads(instruction.payload) == json.loads(messages[0].value())
    assert (prime.kind, prime.order_id) == ("child_order", o.order_id)
    assert isinstance(messages[3].message, Alert)
    assert (alert.kind, alert.account_id, alert.event_id) == ("alert", "A",
                                                              messages[3].message.event_id)
    assert alert.recorded_at is None  # set by Store.record

    when = datetime(2024, 6, 3, 14, 29, 59, tzinfo=UTC)
    signal = event_from_message("mats.blocks", 3, 7, o.model_dump_json(), timestamp=when)
    assert (signal.kind, signal.journey_id, signal.order_id) == ("signal", o.journey_id,
                                                                 o.order_id)
    assert signal.occurred_at == when
    # the id is the block's, not the offset's: intake forwarding a signal twice is one row
    again = event_from_message("mats.blocks", 5, 99, o.model_dump_json().encode(),
                               timestamp=when.timestamp())
    assert again.event_id == signal.event_id and again.occurred_at == when


def test_a_dead_letter_is_its_row_with_an_id_of_its_source() -> None:
    known = KnownIds(symbols=frozenset({"XYZ"}), accounts=frozenset({"A"}))
    bad = order(quantity=1).model_dump(mode="json") | {"quantity": 0}
    raw = json.dumps(bad).encode()
    with pytest.raises(SignalError) as caught:
        validate_signal(raw, known)
    letter = dead_letter(raw, caught.value, topic="mats.signals", partition=2, offset=41,
                         key=b"growth")
    row = event_from_message("mats.dlq", 0, 5, letter.model_dump_json().encode(),
                             key=b"mats.signals")
    assert (row.kind, row.journey_id, row.order_id) == ("dead_letter", bad["journey_id"],
                                                        bad["order_id"])
    assert row.occurred_at == letter.rejected_at
    assert row.data()["code"] == "INVALID_FIELD"
    # the same rejected message dead-lettered again, at another dlq offset: the same id
    assert event_from_message("mats.dlq", 1, 6, letter.model_dump_json()).event_id == (
        row.event_id)
    other = dead_letter(raw, caught.value, topic="mats.signals", partition=2, offset=42)
    assert event_from_message("mats.dlq", 0, 7, other.model_dump_json()).event_id != (
        row.event_id)
    # a tick that was not JSON: no journey, no order
    tick = dead_letter(b"not a tick", caught.value,
                       topic="mats.marketdata", partition=0, offset=0, stage="marketdata")
    tick_row = event_from_message("mats.dlq", 0, 8, tick.model_dump_json())
    assert tick_row.kind == "dead_letter" and tick_row.order_id is None


GARBAGE: list[tuple[str, bytes | None]] = [
    ("mats.allocations", b"not json"),
    ("mats.allocations", b'{"kind": "allocation_instruction"}'),  # fields missing
    ("mats.orders.prime-a", b"[1, 2, 3]"),
    ("mats.alerts", b"\xff\xfe\x00binary"),
    ("mats.dlq", None),  # a tombstone
    ("mats.blocks", b'{"order_id": "X", "journey_id": "J-X"}'),
    ("mats.blocks", b"{" * 10_000),
    ("mats.elsewhere", b"{}"),  # a topic the sink has no model for
    # text PostgreSQL cannot hold (NUL) or no database can (a lone surrogate), as ids
    ("mats.allocations", b'{"journey_id": "J\\u0000X", "order_id": "O\\u0000"}'),
    ("mats.blocks", b'{"order_id": "\\ud800", "journey_id": "J-\\udfff"}'),
]


@pytest.mark.parametrize(("topic", "value"), GARBAGE)
def test_garbage_is_kept_as_unparsed(topic: str, value: bytes | None, store: Store) -> None:
    row = event_from_message(topic, 4, 17, value, key=b"k", timestamp=1.7e9)
    assert row.kind == "unparsed" and row.topic == topic
    data = row.data()
    assert data["error"] and data["key"] == "k"
    if value is not None and data["payload_encoding"] == "utf-8":
        assert data["payload"] == value.decode()
    assert row.event_id == event_from_message(topic, 4, 17, value).event_id
    assert row.event_id != event_from_message(topic, 4, 18, value).event_id
    assert row.occurred_at == datetime.fromtimestamp(1.7e9, UTC)
    assert store.record([row]) == 1 and store.record([row]) == 0


def test_a_message_with_an_id_no_database_can_hold_is_kept_as_unparsed(store: Store) -> None:
    o, messages = _messages()
    (instruction,) = [m for m in messages if isinstance(m.message, AllocationInstruction)]
    data = json.loads(instruction.value())
    bad = [json.dumps({**data, "order_id": "O\x00"}),  # json.dumps writes \u0000
           json.dumps({**data, "journey_id": "J\ud800"}),
           json.dumps({**data, "event_id": "E\x00"})]
    rows = [event_from_message("mats.allocations", 0, i, v.encode()) for i, v in enumerate(bad)]
    assert [r.kind for r in rows] == ["unparsed"] * 3
    # what can be stored still ties the row to its journey
    assert [(r.journey_id, r.order_id) for r in rows] == [
        (o.journey_id, None), (None, o.order_id), (o.journey_id, o.order_id)]
    # pydantic takes a NUL (\u0000 is valid JSON), not a lone surrogate; json.loads takes both
    assert ["NUL" in r.data()["error"] for r in rows] == [True, False, True]
    assert store.record(rows) == 3
    assert [json.loads(r.data()["payload"]) for r in rows] == [json.loads(v) for v in bad]


def test_unparsed_keeps_what_it_can_of_the_journey_and_binary_as_base64() -> None:
    row = event_from_message("mats.blocks", 0, 0, b'{"order_id": "X", "journey_id": "J-X"}')
    assert (row.kind, row.journey_id, row.order_id) == ("unparsed", "J-X", "X")
    binary = event_from_message("mats.alerts", 0, 0, b"\xff\xfe")
    assert binary.data()["payload_encoding"] == "base64"
    assert binary.data()["payload"] == "//4="
    assert binary.journey_id is None


def test_kinds_are_in_journey_order() -> None:
    assert KINDS[0] == "signal" and KINDS.index("allocation_instruction") < KINDS.index(
        "child_order") < KINDS.index("alert")


def test_a_postgresql_server_that_never_answers_fails_within_the_connect_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that takes the TCP connection and then says nothing (stopping, or a network
    that dropped): opening the store fails after the connect timeout, with the database's
    error, instead of waiting for ever (the sink would then wait with it)."""
    import socket
    import time

    from sqlalchemy.exc import OperationalError

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or writes
    port = silent.getsockname()[1]
    monkeypatch.setenv("MATS_DB_CONNECT_TIMEOUT_S", "2")
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="timeout"):
            Store(f"postgresql+psycopg://mats@127.0.0.1:{port}/mats")
        took = time.monotonic() - started
    finally:
        silent.close()
    assert took < 60  # a bound on a broken run (it would hang), not a timing check


def test_postgresql_connection_options_yield_to_the_url() -> None:
    from mats.store import DB_CONNECT_TIMEOUT_S, _pg_connect_args

    args = _pg_connect_args(make_url("postgresql+psycopg://h/db"), env={})
    assert args["connect_timeout"] == DB_CONNECT_TIMEOUT_S and args["keepalives"] == 1
    args = _pg_connect_args(make_url("postgresql+psycopg://h/db?connect_timeout=3"),
                            env={"MATS_DB_CONNECT_TIMEOUT_S": "5"})
    assert "connect_timeout" not in args  # the URL's own 3 s stands
    assert _pg_connect_args(make_url("postgresql+psycopg://h/db"),
                            env={"MATS_DB_CONNECT_TIMEOUT_S": "5"})["connect_timeout"] == 5
