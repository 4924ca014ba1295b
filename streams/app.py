"""The MATS stream app: one Faust app on Kafka, run as ``faust -A streams.app worker``.

Agents
------
``intake``
    reads strategy signals from ``mats.signals`` (raw bytes), checks each one into a
    :class:`mats.models.BlockOrder` with :func:`mats.intake.validate_signal`, forwards the valid
    ones to ``mats.blocks`` (keyed by strategy) and the rest to ``mats.dlq`` with the reason.
``marketdata``
    reads live prices from ``mats.marketdata`` (``{"symbol", "price", "ts"}``, checked with
    :func:`mats.blocks.validate_tick`) and keeps the newest per symbol for ``blocks``; bad ticks
    go to ``mats.dlq`` with the reason.
``blocks``
    reads block orders from ``mats.blocks``, hands the prices received since the last block to
    the worker's engine, runs the block through the core in one call (layer 1, allocation,
    layer 2, committed) and publishes what :func:`mats.blocks.block_messages` says: the
    allocation instruction to ``mats.allocations``, the child orders of an accepted block to
    ``mats.orders.<broker>``, alerts to ``mats.alerts``.
``sink``
    reads what the app publishes (``mats.blocks``, ``mats.allocations``, the order topics of the
    configured gateways, ``mats.alerts``, ``mats.dlq``) and writes each message to the SQL store
    as one event (:func:`mats.store.event_from_message`, :meth:`mats.store.Store.record`),
    idempotently by event id; a message it cannot read is kept as kind ``unparsed``.

Wire types are Faust records (:class:`BlockRecord`) converted to the pydantic models at the
agent's edge; the rules live in the models and in :mod:`mats.intake`, not here. Topic names and
partition counts come from the topic table, :data:`mats.kafka.TOPICS`.

Environment
-----------
``MATS_KAFKA_BOOTSTRAP``
    the Kafka bootstrap servers (default: the local broker of ``mats kafka up``, as
    :func:`mats.kafka.settings` finds it)
``MATS_BOOK_DIR``
    the book folder whose symbols and accounts signals may name, and which the worker's engine
    starts from (default: ``data/sample`` in the checkout); read when the worker starts
``MATS_KAFKA_GATEWAYS``
    the gateways there are order topics for (as for ``mats kafka``); a worker whose book has
    accounts at a broker without a gateway refuses to start
``MATS_DB_URL``
    the SQL store the ``sink`` agent writes to (default: SQLite, ``run/mats.db`` in the
    checkout); its schema is migrated when the worker starts
``APP_DATADIR``
    Faust's own: the worker's local state folder (default: ``run/streams`` in the checkout)

Importing this module connects to nothing and reads no book: the worker does both when it
starts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT
from sqlalchemy.exc import OperationalError

from mats import kafka
from mats.blocks import Outgoing, PriceTick, block_messages, brokers_of, validate_tick
from mats.config import load_book
from mats.engine import Engine, load_decision
from mats.errors import MatsError
from mats.intake import (
    DeadLetter,
    KnownIds,
    Problem,
    SignalError,
    dead_letter,
    validate_signal,
)
from mats.models import BlockOrder
from mats.store import Event, Store, event_from_message

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BOOK_DIR = ROOT / "data" / "sample"
DEFAULT_DB = ROOT / "run" / "mats.db"

log = logging.getLogger(__name__)


def broker_urls(env: dict[str, str] | None = None) -> list[str]:
    """Faust broker URLs (``kafka://host:port``, one per bootstrap server)."""
    servers = kafka.settings(env=env).bootstrap_servers
    return [f"kafka://{server}" for server in servers.split(",")]


def book_dir(env: dict[str, str] | None = None) -> Path:
    """The book folder signals are checked against: ``MATS_BOOK_DIR``, else the sample book."""
    env = dict(os.environ) if env is None else env
    return Path(env.get("MATS_BOOK_DIR") or DEFAULT_BOOK_DIR)


@functools.cache
def known_ids() -> KnownIds:
    """The symbols and accounts of the book in :func:`book_dir`, loaded once per process."""
    return KnownIds.of(load_book(book_dir()))


def db_url(env: dict[str, str] | None = None) -> str:
    """The SQL store's URL: ``MATS_DB_URL``, else SQLite in ``run/mats.db`` of the checkout."""
    env = dict(os.environ) if env is None else env
    return env.get("MATS_DB_URL") or f"sqlite:///{DEFAULT_DB}"


@functools.cache
def store() -> Store:
    """The worker's SQL store (:func:`db_url`), opened and migrated once per process."""
    return Store(db_url())


class GatewayMissing(MatsError):
    """The book has accounts at a broker that no gateway (``mats.orders.<broker>``) serves."""


@dataclass
class Desk:
    """A worker's block-processing state: its engine, the accounts' brokers, prices to apply.

    ``pending`` holds the newest tick per symbol received since the last block; the ``blocks``
    agent hands them to the engine in one call before it runs the next block.
    """

    engine: Engine
    brokers: dict[str, str]
    known: KnownIds
    pending: dict[str, PriceTick] = field(default_factory=dict)
    last: dict[str, datetime] = field(default_factory=dict)

    def take_tick(self, tick: PriceTick) -> bool:
        """Keeps ``tick`` unless a newer one for its symbol came first; whether it was kept."""
        seen = self.last.get(tick.symbol)
        if seen is not None and tick.ts < seen:
            return False
        self.last[tick.symbol] = tick.ts
        self.pending[tick.symbol] = tick
        return True

    def apply_prices(self) -> None:
        if self.pending:
            self.engine.update_prices({s: t.price for s, t in self.pending.items()})
            self.pending.clear()


@functools.cache
def desk() -> Desk:
    """The worker's :class:`Desk`, built once per process from the book in :func:`book_dir`.

    Raises
    ------
    GatewayMissing
        An account's broker has no gateway among ``MATS_KAFKA_GATEWAYS`` (or the defaults).
    """
    book = load_book(book_dir())
    brokers = brokers_of(book)
    gateways = set(kafka.settings().gateways)
    missing = sorted(set(brokers.values()) - gateways)
    if missing:
        raise GatewayMissing(f"no gateway for broker{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(missing)} of the book's accounts (gateways: "
                             f"{', '.join(sorted(gateways))}); set MATS_KAFKA_GATEWAYS",
                             ("MATS_KAFKA_GATEWAYS",))
    return Desk(engine=Engine(book), brokers=brokers, known=KnownIds.of(book))


# ------------------------------------------------------------------------------ the app


class _IdempotentProducer(faust_aiokafka.Producer):
    # Faust turns idempotence on only inside transactions (exactly-once); MATS wants every
    # producer idempotent with acks=all, so a retried send is never written twice.
    def _settings_extra(self) -> dict[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class _Transport(faust_aiokafka.Transport):
    Producer = _IdempotentProducer


class MatsApp(faust.App):
    """A :class:`faust.App` on aiokafka whose producers are idempotent with ``acks=all``.

    The worker also loads the book (:func:`known_ids`, :func:`desk`) and opens the SQL store
    (:func:`store`) as it starts, so that a missing or broken book folder, a broker without a
    gateway, or a database it cannot open, stops it at once instead of at the first message.
    """

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> TransportT:
        return _Transport(self.conf.broker_producer, self)

    async def on_start(self) -> None:
        known_ids()
        desk()
        store()
        await super().on_start()


app = MatsApp(
    "mats",
    broker=broker_urls(),
    producer_acks=-1,
    store="memory://",
    # The worker's local state goes beside run/kafka, which git ignores. Faust's APP_DATADIR
    # overrides it (its --datadir option does not: it is read after the app is imported).
    datadir=ROOT / "run" / "streams",
    # Agents here need no leader; without this Faust would make one more topic for it.
    topic_disable_leader=True,
    # On stop, do not wait for messages still buffered in a stream: with two agents on one
    # topic (blocks and sink on mats.blocks) that wait can hang. Their offsets are not
    # committed, so they are read again on restart; every event is recorded by its event id.
    stream_wait_empty=False,
)

_SPECS = {spec.name: spec for spec in kafka.TOPICS}


def _topic(name: str, **options: Any) -> faust.TopicT:
    spec = _SPECS[name]  # a KeyError here: the topic is not in mats.kafka.TOPICS
    return app.topic(spec.name, partitions=spec.partitions, **options)


# ------------------------------------------------------------------------------ wire types


class BlockRecord(faust.Record, serializer="json", include_metadata=False):
    """A block order on ``mats.blocks``: the JSON of :class:`mats.models.BlockOrder`.

    The fields are those of the model, in their JSON form (enums and times as text); the model
    validates them (:meth:`to_order`), the record only carries them.
    """

    order_id: str
    journey_id: str
    strategy: str
    symbol: str
    side: str
    reference_price: float
    reference_time: str
    method: str
    on_lot_failure: str
    quantity: int | None = None
    target_weight_pct: float | None = None
    limit_price: float | None = None
    ratios: dict[str, float] | None = None
    percents: dict[str, float] | None = None
    shares: dict[str, int] | None = None
    accounts: list[str] | None = None

    @classmethod
    def from_order(cls, order: BlockOrder) -> BlockRecord:
        return cls(**order.model_dump(mode="json"))

    def to_order(self) -> BlockOrder:
        return BlockOrder.model_validate(self.asdict())


# ------------------------------------------------------------------------------ topics

# Signals are taken as raw bytes, decoded by intake itself: with Faust's default JSON codec a
# malformed message would fail in the consumer and be skipped, never dead-lettered. (value_type
# bytes alone does not do it: an app's default serializer wins over the type.)
signals_topic = _topic("mats.signals", key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
blocks_topic = _topic("mats.blocks", key_type=str, value_type=BlockRecord,
                      key_serializer="raw")
# DeadLetter JSON as bytes: a pydantic model, since the dead-letter shape is shared beyond Faust
dlq_topic = _topic("mats.dlq", key_type=str, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
# Ticks as raw bytes for the same reason as signals: a bad one is dead-lettered, not skipped.
marketdata_topic = _topic("mats.marketdata", key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")
# What block processing publishes: pydantic models' JSON (mats.blocks), as bytes.
allocations_topic = _topic("mats.allocations", key_type=str, value_type=bytes,
                           key_serializer="raw", value_serializer="raw")
alerts_topic = _topic("mats.alerts", key_type=str, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")


@functools.cache
def gateway_topic(gateway: str) -> faust.TopicT:
    """The order topic of one gateway, ``mats.orders.<gateway>``, as the table has it."""
    spec = kafka.gateway_topic(gateway)
    return app.topic(spec.name, partitions=spec.partitions, key_type=str, value_type=bytes,
                     key_serializer="raw", value_serializer="raw")


def sink_topic_names(gateways: Sequence[str] | None = None) -> list[str]:
    """What the ``sink`` agent reads: the block orders and every topic block processing writes."""
    if gateways is None:
        gateways = kafka.settings().gateways
    return ["mats.blocks", "mats.allocations",
            *(kafka.gateway_topic(g).name for g in gateways), "mats.alerts", "mats.dlq"]


# Raw bytes, decoded by the sink itself: a message it cannot read is kept, not skipped.
sink_topic = app.topic(*sink_topic_names(), key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")


def _out_topic(name: str) -> faust.TopicT:
    if name == allocations_topic.get_topic_name():
        return allocations_topic
    if name == alerts_topic.get_topic_name():
        return alerts_topic
    return gateway_topic(name.removeprefix(kafka.GATEWAY_TOPIC_PREFIX))


# ------------------------------------------------------------------------------ agents


@app.agent(signals_topic)
async def intake(stream: faust.StreamT[bytes]) -> AsyncIterator[BlockOrder | DeadLetter]:
    """Signals in; block orders to ``mats.blocks``, rejected signals to ``mats.dlq``.

    Yields what it did with each signal (the order, or the dead letter), for tests and replies.
    """
    known = known_ids()
    async for event in stream.events():
        message = event.message
        try:
            order = validate_signal(event.value, known)
        except SignalError as e:
            letter = dead_letter(event.value, e, topic=message.topic,
                                 partition=message.partition, offset=message.offset,
                                 key=message.key, timestamp=message.timestamp)
            await dlq_topic.send(key=message.topic, value=letter.model_dump_json().encode())
            yield letter
        else:
            await blocks_topic.send(key=order.strategy, value=BlockRecord.from_order(order))
            yield order


async def _dead_letter(event: faust.EventT[Any], error: SignalError, value: Any,
                       stage: str) -> DeadLetter:
    message = event.message
    letter = dead_letter(value, error, topic=message.topic, partition=message.partition,
                         offset=message.offset, key=message.key, timestamp=message.timestamp,
                         stage=stage)
    await dlq_topic.send(key=message.topic, value=letter.model_dump_json().encode())
    return letter


@app.agent(marketdata_topic)
async def marketdata(stream: faust.StreamT[bytes]) -> AsyncIterator[PriceTick | DeadLetter]:
    """Live prices in; kept for ``blocks`` (newest per symbol), bad ticks to ``mats.dlq``."""
    state = desk()
    async for event in stream.events():
        try:
            tick = validate_tick(event.value, state.known)
        except SignalError as e:
            yield await _dead_letter(event, e, event.value, stage="marketdata")
        else:
            state.take_tick(tick)
            yield tick


def _failed(code: str, e: Exception, journey_id: str | None) -> SignalError:
    problem = Problem(code=code, loc=[], field="", message=f"{type(e).__name__}: {e}")
    return SignalError([problem], journey_id=journey_id)


@app.agent(blocks_topic)
async def blocks(stream: faust.StreamT[BlockRecord]) -> AsyncIterator[list[Outgoing] | DeadLetter]:
    """Block orders in; allocation instructions, child orders and alerts out.

    One core call per block (``Engine.process``, committed, at the current time), after the
    prices received since the last block. Yields the messages it published (or the dead letter
    of a block it could not process), for tests and replies.
    """
    state = desk()
    async for event in stream.events():
        record: BlockRecord = event.value
        try:
            order = record.to_order()
        except Exception as e:  # not a block order after all: kept with the reason
            yield await _dead_letter(event, _failed("INVALID_BLOCK", e, record.journey_id),
                                     json.dumps(record.asdict(), default=str), stage="blocks")
            continue
        try:
            state.apply_prices()
            now = datetime.now(UTC)
            decision = load_decision(state.engine.process(order, as_of=now, commit=True))
            messages = block_messages(decision, state.brokers, order=order, decided_at=now)
        except Exception as e:  # a bug or a core refusal must not stop the stream
            yield await _dead_letter(event, _failed("BLOCK_FAILED", e, order.journey_id),
                                     order.model_dump_json(), stage="blocks")
            continue
        for out in messages:
            await _out_topic(out.topic).send(key=out.key, value=out.value())
        yield messages


SINK_RETRY_S = (0.5, 30.0)  # first and longest wait between tries of a database that fails


async def _record(events: list[Event]) -> int:
    # the database call is blocking: off the event loop, so the other agents go on meanwhile
    wait, longest = SINK_RETRY_S
    while True:
        try:
            return await asyncio.to_thread(store().record, events)
        except OperationalError as e:
            # the database is down or locked: the message waits (its offset is not committed)
            log.warning("sink: the SQL store failed (%s); trying again in %.1f s", e, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)


@app.agent(sink_topic)
async def sink(stream: faust.StreamT[bytes]) -> AsyncIterator[Event]:
    """Published messages in; one event each in the SQL store, idempotently by event id.

    Yields the event it recorded for each message (recorded already or not), for tests.
    """
    async for event in stream.events():
        message = event.message
        row = event_from_message(message.topic, message.partition, message.offset, event.value,
                                 key=message.key, timestamp=message.timestamp)
        await _record([row])
        yield row
