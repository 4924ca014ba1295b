"""The SQL store's event log: every message the stream app publishes, one row per event.

The ``sink`` agent of the stream app (``streams/app.py``) reads the output topics and writes
each message here as an :class:`Event`: the block order that passed intake (kind ``signal``),
allocation instructions, child orders, alerts and dead letters, and anything it could not read
(kind ``unparsed``, with the raw value). The table is append-only and keyed by event id, so a
message read twice (a redelivery after a restart) is one row: :meth:`Store.record` inserts with
``ON CONFLICT DO NOTHING``. Every row carries its journey id, so :meth:`Store.journey` walks
from any event back to the signal it came from.

:func:`event_from_message` says what row a message (topic, partition, offset, key, value) is;
it never raises, and it knows nothing about Faust or Kafka clients.

SQLite is the embedded default (``sqlite:///run/mats.db``, or ``MATS_DB_URL``); PostgreSQL
works with the same code. The schema is made by the Alembic migrations shipped in
``mats/migrations/``; :class:`Store` runs them (:func:`migrate`) when it opens the database.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from pydantic import BaseModel, ValidationError
from sqlalchemy import (
    Date,
    DateTime,
    Dialect,
    Engine,
    String,
    Text,
    TypeDecorator,
    case,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from mats import kafka
from mats.batch.alerts import BatchAlert
from mats.blocks import ALERTS_TOPIC, ALLOCATIONS_TOPIC, Alert, AllocationInstruction, ChildOrder
from mats.blocks import event_id as block_event_id
from mats.desk import ACCOUNT_FILLS_TOPIC, AccountFillEvent, ChildClosed, ExecutionAlert
from mats.executions import EXEC_REPORTS_TOPIC, CancelRequest, ExecutionReport, ReplaceRequest
from mats.exposure import LimitAlert
from mats.intake import DeadLetter
from mats.models import BlockOrder

__all__ = [
    "DEFAULT_URL",
    "KINDS",
    "Base",
    "Event",
    "SodState",
    "Store",
    "db_url",
    "event_from_message",
    "migrate",
    "sink_topic_names",
]

DEFAULT_URL = "sqlite:///run/mats.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

BLOCKS_TOPIC = "mats.blocks"
DLQ_TOPIC = "mats.dlq"

# The kinds of event, in the order a journey goes through them: among events of one journey at
# the same time (every message of a block carries the block's decision time) this order decides.
KINDS = ("signal", "allocation_instruction", "child_order", "cancel_request", "replace_request",
         "alert", "execution_report", "account_fill", "child_closed", "execution_alert",
         "limit_alert", "batch_alert", "dead_letter", "unparsed")

# Fixed namespace for the ids this module derives (dead letters, unreadable messages).
_NAMESPACE = uuid.UUID("0b6f4f3e-8d0a-4c51-b8a4-7f2e9c1d5a63")


def db_url(env: Mapping[str, str] | None = None) -> str:
    """The store's URL: ``MATS_DB_URL``, else :data:`DEFAULT_URL` (relative to the cwd)."""
    env = os.environ if env is None else env
    return env.get("MATS_DB_URL") or DEFAULT_URL


def sink_topic_names(gateways: Sequence[str] | None = None) -> list[str]:
    """The topics whose messages the store keeps (what the sink reads): the block orders and
    what the desk and the gateways publish about them (``gateways``: default, the configured
    ones of :func:`mats.kafka.settings`)."""
    if gateways is None:
        gateways = kafka.settings().gateways
    return [BLOCKS_TOPIC, ALLOCATIONS_TOPIC,
            *(kafka.gateway_topic(g).name for g in gateways), EXEC_REPORTS_TOPIC,
            ACCOUNT_FILLS_TOPIC, ALERTS_TOPIC, DLQ_TOPIC]


# ------------------------------------------------------------------------------ schema


class UTCDateTime(TypeDecorator[datetime]):
    """A zone-aware time, stored in UTC; read back aware (SQLite keeps no zone itself)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a time without zone cannot be stored: {value!r}")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The store's declarative base (its metadata is what the migrations build)."""


class Event(Base):
    """One event of a journey: a message the stream app published, as it was published.

    ``payload`` is JSON text: the message's value as received, or, for kind ``unparsed``, an
    object with the ``error``, the raw ``payload`` and its ``payload_encoding`` (``utf-8`` or
    ``base64``). ``recorded_at`` is when the store got it, ``occurred_at`` when it happened (the
    decision's or rejection's time, else the Kafka message's timestamp).
    """

    __tablename__ = "events"

    event_id: Mapped[str] = mapped_column(String, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    journey_id: Mapped[str | None] = mapped_column(String, index=True)
    order_id: Mapped[str | None] = mapped_column(String, index=True)
    account_id: Mapped[str | None] = mapped_column(String)
    topic: Mapped[str] = mapped_column(String)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[str] = mapped_column(Text)

    def data(self) -> Any:
        """The payload, parsed."""
        return json.loads(self.payload)

    def __repr__(self) -> str:
        return (f"Event({self.kind}, event_id={self.event_id!r}, journey_id={self.journey_id!r}, "
                f"order_id={self.order_id!r}, topic={self.topic!r})")


class SodState(Base):
    """One account's start-of-day state for one day, as the ``mats_sod`` DAG published it.

    ``payload`` is the :class:`mats.models.Account` as JSON; ``published_at`` when it was
    written. Keyed by day and account: publishing a day again replaces that day's rows.
    """

    __tablename__ = "sod_state"

    as_of: Mapped[date] = mapped_column(Date, primary_key=True)
    account_id: Mapped[str] = mapped_column(String, primary_key=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[str] = mapped_column(Text)


_COLUMNS = [c.key for c in Event.__table__.columns]


# ------------------------------------------------------------------------------ migrations


def _alembic_config() -> Config:
    # no alembic.ini: the script location is the package's own folder, so it ships with mats
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def migrate(target: str | Engine) -> None:
    """Bring the database at ``target`` (a URL or an engine) to the newest schema (``head``)."""
    engine = _engine(target) if isinstance(target, str) else target
    try:
        with engine.begin() as connection:
            cfg = _alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    finally:
        if isinstance(target, str):
            engine.dispose()


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # several workers may share one file: readers do not wait for the writer, writers queue
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# How long a PostgreSQL connection may take to open, and how soon a connection whose server
# went silent is found dead (TCP keepalives: idle, interval, probes). Without them, a server
# that went away without closing its sockets (stopped, or a network that dropped) leaves a
# call waiting for ever, and the sink with it; with them the call fails and is tried again.
DB_CONNECT_TIMEOUT_S = 10
_PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                  "keepalives_count": 3}


def _pg_connect_args(parsed: Any, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connection options MATS sets for PostgreSQL, less those the URL sets itself.
    ``MATS_DB_CONNECT_TIMEOUT_S`` overrides :data:`DB_CONNECT_TIMEOUT_S`."""
    env = os.environ if env is None else env
    timeout = env.get("MATS_DB_CONNECT_TIMEOUT_S")
    args: dict[str, Any] = {"connect_timeout": int(float(timeout)) if timeout
                            else DB_CONNECT_TIMEOUT_S, **_PG_KEEPALIVES}
    return {k: v for k, v in args.items() if k not in parsed.query}


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # pre-ping: a connection the pool kept from before a server restart is replaced
        return create_engine(url, pool_pre_ping=True, connect_args=_pg_connect_args(parsed))
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    if database and database != ":memory:":
        event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


# ------------------------------------------------------------------------------ the store


class Store:
    """The event log in the SQL database at ``url`` (default :func:`db_url`).

    Opening it creates or upgrades the schema (:func:`migrate`). SQLite and PostgreSQL are
    supported: :meth:`record` uses their ``INSERT ... ON CONFLICT DO NOTHING``.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or db_url()
        self.engine = _engine(self.url)
        if self.engine.dialect.name not in ("sqlite", "postgresql"):
            self.engine.dispose()
            raise ValueError(f"unsupported database {self.engine.dialect.name!r}: MATS stores "
                             "events in SQLite or PostgreSQL")
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, events: Iterable[Event]) -> int:
        """Append ``events``, skipping any whose event id is stored already; how many were new.

        An event without ``recorded_at`` gets the current time.
        """
        now = datetime.now(UTC)
        rows: dict[str, dict[str, Any]] = {}
        for e in events:
            row = {name: getattr(e, name) for name in _COLUMNS}
            row["recorded_at"] = row["recorded_at"] or now
            rows.setdefault(row["event_id"], row)
        if not rows:
            return 0
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        statement = (insert(Event).on_conflict_do_nothing(index_elements=["event_id"])
                     .returning(Event.event_id))
        with self.engine.begin() as connection:
            # RETURNING names only the rows inserted: a count that holds for many rows at once,
            # where rowcount of an executemany does not on every driver
            return len(connection.execute(statement, list(rows.values())).all())

    def journey(self, journey_id: str) -> list[Event]:
        """Every event of one journey, the signal first.

        By time, then by stage (:data:`KINDS`); events of one stage at one time (the child
        orders and alerts of a block) by topic (gateway) and account, the block's first.
        """
        stage = case({k: i for i, k in enumerate(KINDS)}, value=Event.kind, else_=len(KINDS))
        query = (select(Event).where(Event.journey_id == journey_id)
                 .order_by(Event.occurred_at, stage, Event.topic,
                           Event.account_id.nulls_first(), Event.event_id))
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(query))

    def count(self) -> int:
        """How many events are stored."""
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(Event)) or 0


# ------------------------------------------------------------------------------ messages to rows


def _derived_id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, json.dumps(parts, default=str)))


def _as_text(value: bytes | str | None) -> tuple[str, Literal["utf-8", "base64"]]:
    if value is None:
        return "", "utf-8"
    if isinstance(value, str):
        return value, "utf-8"
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


def _utc(timestamp: float | datetime | None) -> datetime | None:
    if timestamp is None:
        return None
    if isinstance(timestamp, datetime):
        return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    try:
        return datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


# What each output topic carries; where it is more than one model, the ``kind`` field says which.
_TOPIC_MODELS: dict[str, tuple[type[BaseModel], ...]] = {
    BLOCKS_TOPIC: (BlockOrder,),
    ALLOCATIONS_TOPIC: (AllocationInstruction,),
    kafka.GATEWAY_TOPIC_PREFIX: (ChildOrder, CancelRequest, ReplaceRequest),
    EXEC_REPORTS_TOPIC: (ExecutionReport,),
    ACCOUNT_FILLS_TOPIC: (AccountFillEvent, ChildClosed),
    ALERTS_TOPIC: (Alert, LimitAlert, ExecutionAlert, BatchAlert),
    DLQ_TOPIC: (DeadLetter,),
}


def _model_of(topic: str, value: bytes | str) -> type[BaseModel] | None:
    key = kafka.GATEWAY_TOPIC_PREFIX if topic.startswith(kafka.GATEWAY_TOPIC_PREFIX) else topic
    models = _TOPIC_MODELS.get(key)
    if models is None:
        return None
    if len(models) == 1:
        return models[0]
    kind = _str_field(json.loads(value), "kind")
    for model in models:
        if model.model_fields["kind"].default == kind:
            return model
    names = ", ".join(str(m.model_fields["kind"].default) for m in models)
    raise ValueError(f"kind {kind!r} is not one of {names} (what {topic} carries)")


# The field that says when each kind of message happened.
_WHEN = ("decided_at", "transact_time", "booked_at", "closed_at", "raised_at", "requested_at")


def _str_field(data: Any, name: str) -> str | None:
    """The text field ``name`` of parsed JSON, if there is one that the SQL store can hold."""
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) and _is_storable(value) else None


def event_from_message(topic: str, partition: int, offset: int, value: bytes | str | None, *,
                       key: bytes | str | None = None,
                       timestamp: float | datetime | None = None) -> Event:
    """The event row one message of an output topic is; never raises.

    Parameters
    ----------
    topic, partition, offset
        Where the message was read.
    value
        The message's value as received (JSON of the topic's model).
    key
        The message's key (kept only for a message that cannot be read).
    timestamp
        The Kafka message's timestamp (seconds since the epoch, or a time): when a signal
        happened, for messages that carry no time of their own.

    Returns
    -------
    Event
        Not yet stored (``recorded_at`` unset). Event ids: the message's own
        (instructions, child orders, alerts); for a block order on ``mats.blocks`` (kind
        ``signal``) the same kind of id :func:`mats.blocks.event_id` gives the block's other
        events, from its order id; for a dead letter, one derived from the stage and the
        rejected message's topic, partition and offset; for anything unreadable, one derived
        from this message's topic, partition and offset. All are the same when the message
        is read again, or published again for the same input.
    """
    when = _utc(timestamp)
    try:
        return _storable(_parsed(topic, value, when))
    except Exception as e:  # whatever it is, it is kept: the sink never stops on a message
        return _unparsed(topic, partition, offset, value, key, when, e)


def _is_storable(text: str) -> bool:
    # PostgreSQL's text holds no NUL character; neither database takes a lone surrogate (JSON's
    # "\ud800" parses to one), which is not UTF-8
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(row: Event) -> Event:
    """``row``, if both databases can store every text of it; else ValueError (unparsed)."""
    for name in _COLUMNS:
        value = getattr(row, name)
        if isinstance(value, str) and not _is_storable(value):
            raise ValueError(f"{name} {value!r} holds text the SQL store cannot hold (a NUL "
                             "character or a lone surrogate)")
    return row


def _parsed(topic: str, value: bytes | str | None, when: datetime | None) -> Event:
    if value is None:
        raise ValueError("empty message (a tombstone)")
    model = _model_of(topic, value)
    if model is None:
        raise ValueError(f"no event is read from topic {topic!r}")
    message = model.model_validate_json(value)
    text = value if isinstance(value, str) else value.decode("utf-8")
    common: dict[str, Any] = dict(topic=topic, payload=text)
    if not isinstance(message, BlockOrder | DeadLetter):
        fields = vars(message)
        when_ = next(fields[f] for f in _WHEN if f in fields)
        return Event(event_id=fields["event_id"], kind=fields["kind"],
                     journey_id=fields["journey_id"] or None, order_id=fields.get("order_id"),
                     account_id=fields.get("account_id"), occurred_at=when_, **common)
    if isinstance(message, BlockOrder):
        return Event(event_id=block_event_id(message.order_id, "signal"), kind="signal",
                     journey_id=message.journey_id, order_id=message.order_id,
                     account_id=None, occurred_at=when or datetime.now(UTC), **common)
    if isinstance(message, DeadLetter):
        source = message.source
        try:
            rejected: Any = json.loads(message.payload)
        except ValueError:
            rejected = None
        return Event(event_id=_derived_id("dead_letter", message.stage, source.topic,
                                          source.partition, source.offset),
                     kind="dead_letter", journey_id=message.journey_id,
                     order_id=_str_field(rejected, "order_id"), account_id=None,
                     occurred_at=message.rejected_at, **common)
    raise AssertionError(f"no row for {type(message).__name__}")  # pragma: no cover


def _unparsed(topic: str, partition: int, offset: int, value: bytes | str | None,
              key: bytes | str | None, when: datetime | None, error: Exception) -> Event:
    text, encoding = _as_text(value)
    key_text, key_encoding = _as_text(key)
    reason = str(error.errors(include_url=False)[0]["msg"]) if isinstance(
        error, ValidationError) and error.errors() else str(error)
    try:  # what is readable of it still ties it to its journey
        data: Any = json.loads(text) if encoding == "utf-8" else None
    except (ValueError, RecursionError):
        data = None
    payload = {"error": f"{type(error).__name__}: {reason}", "payload": text,
               "payload_encoding": encoding, "key": key_text if key is not None else None,
               "key_encoding": key_encoding}
    return Event(event_id=_derived_id("unparsed", topic, partition, offset), kind="unparsed",
                 journey_id=_str_field(data, "journey_id"),
                 order_id=_str_field(data, "order_id"), account_id=None, topic=topic,
                 occurred_at=when or datetime.now(UTC), payload=json.dumps(payload))
