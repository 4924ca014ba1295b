"""The MATS stream app: one Faust app on Kafka, run as ``faust -A streams.app worker``.

Agents
------
``intake``
    reads strategy signals from ``mats.signals`` (raw bytes), checks each one into a
    :class:`mats.models.BlockOrder` with :func:`mats.intake.validate_signal`, forwards the valid
    ones to ``mats.blocks`` (keyed by strategy) and the rest to ``mats.dlq`` with the reason.

Wire types are Faust records (:class:`BlockRecord`) converted to the pydantic models at the
agent's edge; the rules live in the models and in :mod:`mats.intake`, not here. Topic names and
partition counts come from the topic table, :data:`mats.kafka.TOPICS`.

Environment
-----------
``MATS_KAFKA_BOOTSTRAP``
    the Kafka bootstrap servers (default: the local broker of ``mats kafka up``, as
    :func:`mats.kafka.settings` finds it)
``MATS_BOOK_DIR``
    the book folder whose symbols and accounts signals may name (default: ``data/sample`` in
    the checkout); read when the worker starts
``APP_DATADIR``
    Faust's own: the worker's local state folder (default: ``run/streams`` in the checkout)

Importing this module connects to nothing and reads no book: the worker does both when it
starts.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

from mats import kafka
from mats.config import load_book
from mats.intake import DeadLetter, KnownIds, SignalError, dead_letter, validate_signal
from mats.models import BlockOrder

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BOOK_DIR = ROOT / "data" / "sample"


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

    The worker also loads the book (:func:`known_ids`) as it starts, so that a missing or
    broken book folder stops it at once instead of at the first signal.
    """

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> TransportT:
        return _Transport(self.conf.broker_producer, self)

    async def on_start(self) -> None:
        known_ids()
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
