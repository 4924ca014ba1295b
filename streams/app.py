"""The MATS stream app: the desk's Faust app on Kafka, run as ``faust -A streams.app worker``.

Agents
------
``intake``
    reads strategy signals from ``mats.signals`` (raw bytes), checks each one into a
    :class:`mats.models.BlockOrder` with :func:`mats.intake.validate_signal`, forwards the valid
    ones to ``mats.blocks`` (keyed by strategy) and the rest to ``mats.dlq`` with the reason.
``marketdata``
    reads live prices from ``mats.marketdata`` (``{"symbol", "price", "ts"}``, checked with
    :func:`mats.blocks.validate_tick`) into the sequenced desk's marks at once (the newest per
    symbol, kept in the ``marks`` table) and publishes the exposure of the accounts holding the
    symbol and of the firm, with any limit alerts; bad ticks go to ``mats.dlq``.
``blocks``
    reads block orders from ``mats.blocks`` into the sequenced desk (:class:`mats.desk.Desk`):
    one core call per block (layer 1, allocation, layer 2, committed), journaled in the
    ``journal`` table, and publishes what :func:`mats.blocks.block_messages` says: the
    allocation instruction to ``mats.allocations``, one child order per broker of an accepted
    block to ``mats.orders.<broker>``, alerts to ``mats.alerts``.
``executions``
    reads the gateways' execution reports from ``mats.exec-reports`` into the desk: fills go
    to each child order's accounts at its average price (``mats.account-fills``,
    ``mats.account-state``), a report that ends a child order closes it with every account's
    shortfall, exposure and limit alerts follow.

The SQL event store is written by another Faust app in its own process, ``streams.sink``
(``faust -A streams.sink worker``), so that a slow or failed database never holds back trading.

The sequenced topics (block orders, prices, execution reports) and the desk's tables have one
partition, so one worker holds the desk at a time and applies them in one order; the journal
makes its state survive a crash, a rebalance or a broker restart (see ``docs/streams.md``).

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
``MATS_SESSION_TIMEOUT_S``
    how long a silent worker keeps its partitions before another takes them (default 10)
``APP_DATADIR``
    Faust's own: the worker's local state folder (default: ``run/streams`` in the checkout)

Importing this module connects to nothing and reads no book: the worker does both when it
starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT
from mode.services import WaitResults

from mats import kafka
from mats.blocks import PriceTick, brokers_of, validate_tick
from mats.config import load_book
from mats.desk import (
    Desk,
    JournalEntry,
    JournalOfAnotherBook,
    Mark,
    OutMessage,
    SourceRef,
    journal_key,
)
from mats.errors import MatsError
from mats.executions import ExecutionReport
from mats.intake import (
    INVALID_FIELD,
    NOT_JSON,
    DeadLetter,
    KnownIds,
    Problem,
    SignalError,
    dead_letter,
    validate_signal,
)
from mats.models import BlockOrder

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BOOK_DIR = ROOT / "data" / "sample"

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


def session_timeout_s(env: dict[str, str] | None = None) -> float:
    """How long a silent worker keeps its partitions: ``MATS_SESSION_TIMEOUT_S`` (default 10)."""
    env = dict(os.environ) if env is None else env
    text = env.get("MATS_SESSION_TIMEOUT_S") or "10"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 6.0 <= value <= 300.0:  # the broker's own bounds (group.min/max.session.timeout.ms)
        raise MatsError(f"MATS_SESSION_TIMEOUT_S must be a number of seconds from 6 to 300, "
                        f"not {text!r}", ("MATS_SESSION_TIMEOUT_S",))
    return value


class GatewayMissing(MatsError):
    """The book has accounts at a broker that no gateway (``mats.orders.<broker>``) serves."""


@functools.cache
def brokers() -> dict[str, str]:
    """Each account's broker in the book of :func:`book_dir`, checked against the gateways.

    Raises
    ------
    GatewayMissing
        An account's broker has no gateway among ``MATS_KAFKA_GATEWAYS`` (or the defaults).
    """
    book = load_book(book_dir())
    found = brokers_of(book)
    gateways = set(kafka.settings().gateways)
    missing = sorted(set(found.values()) - gateways)
    if missing:
        raise GatewayMissing(f"no gateway for broker{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(missing)} of the book's accounts (gateways: "
                             f"{', '.join(sorted(gateways))}); set MATS_KAFKA_GATEWAYS",
                             ("MATS_KAFKA_GATEWAYS",))
    return found


# ------------------------------------------------------------------------------ the app


class _IdempotentProducer(faust_aiokafka.Producer):
    # Faust turns idempotence on only inside transactions (exactly-once); MATS wants every
    # producer idempotent with acks=all, so a retried send is never written twice.
    def _settings_extra(self) -> dict[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _fetch_records(self, consumer: Any, active_partitions: Any,
                             timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        # Faust hands the thread its live set of active partitions, and a rebalance empties it
        # (every partition paused) while a fetch is on its way here. aiokafka reads an empty
        # set as "every partition": it would hand over the records of the paused partitions,
        # moving their positions past them, and Faust would then drop them as not active. A
        # table recovery then waits for ever for changelog entries already passed over, and a
        # sequenced partition skips messages. The fetch takes a snapshot, and none when empty.
        if active_partitions is not None:  # (None: a client-only app, every partition)
            active_partitions = set(active_partitions)
            if not active_partitions:
                return {}
        return await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                            max_records=max_records)


class _Resumed:
    """Awaits the rest of a coroutine that already ran up to its first suspension.

    What the coroutine yielded goes to the task awaiting this, and what that task sends or
    throws back goes on to the coroutine: the same as if the task had started it.
    """

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._yielded
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as e:  # a cancellation, or an error thrown in: passed on
                try:
                    value = coro.throw(e)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        # Faust hands every message it reads to the streams as
        # ``wait_first(callback(message), suspend_flow.wait())``: four tasks made and three
        # cancelled per message, though the callback almost always finishes at once (it only
        # waits when a stream's buffer is full or the flow is suspended). The callback runs
        # here first; only if it has to wait does the race with the rest begin, on its rest.
        first = coros[0] if coros else None
        if (not asyncio.iscoroutine(first) or self._stopped.is_set()
                or self._crashed.is_set()):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            yielded = first.send(None)
        except BaseException as e:
            for other in coros[1:]:
                if asyncio.iscoroutine(other):
                    other.close()  # never started: nothing to wait for
            if isinstance(e, StopIteration):
                return WaitResults([first], [e.value], False)
            raise
        return await super().wait_first(_Resumed(first, yielded), *coros[1:], timeout=timeout)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
    Producer = _IdempotentProducer


class MatsApp(faust.App):
    """A :class:`faust.App` on aiokafka whose producers are idempotent with ``acks=all``.

    As it starts, a worker runs :meth:`check` (the desk's loads the book, the sink's opens the
    SQL store), so that a missing or broken book folder, a broker without a gateway, or a
    database it cannot open, stops it at once instead of at the first message; and
    ``kill -USR1`` makes it log its state (:func:`_dump_state`).
    """

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> TransportT:
        return _Transport(self.conf.broker_producer, self)

    def check(self) -> None:
        """What must hold before the worker takes any message; raises if it does not."""
        known_ids()
        brokers()

    async def on_start(self) -> None:
        self.check()
        _quiet_root_logger()
        _freeze_start()
        _watch_gc()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals here
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGUSR1, functools.partial(_dump_state, self))
        await super().on_start()


GC_PAUSE_WARN_S = 0.05  # a collection that holds the worker this long is logged


class _GcWatch:
    """Times the interpreter's garbage collections; one that takes :data:`GC_PAUSE_WARN_S` or
    more is logged (``gc: generation 2 held the worker 123 ms``), since every agent of the
    worker waits for it."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = self._clock()
            return
        took = self._clock() - self._began
        if took >= GC_PAUSE_WARN_S:
            log.warning("gc: generation %d held the worker %.0f ms (%d collected)",
                        info.get("generation", -1), took * 1000, info.get("collected", 0))


def _freeze_start() -> None:
    """Moves what the worker holds once started (modules, classes, the book) out of the
    collector's sight (:func:`gc.freeze`): they live as long as the process, and a full
    collection that scanned them every time held the worker about 100 ms."""
    gc.collect()
    gc.freeze()
    log.info("gc: %d objects of the worker's start frozen", gc.get_freeze_count())


def _watch_gc() -> None:
    if not any(isinstance(cb, _GcWatch) for cb in gc.callbacks):
        gc.callbacks.append(_GcWatch())


def _quiet_root_logger() -> None:
    """Leaves debug records unmade when no handler wants them.

    At ``--loglevel warn`` and above, Faust's worker puts the root logger at DEBUG for a
    terminal spinner that turns on every record: Faust and aiokafka then build a debug record
    for every message (about a tenth of a busy worker's time). The spinner goes; the root
    logger's level is its handlers' lowest again.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ == "SpinnerHandler":
            root.removeHandler(handler)
    levels = [h.level for h in root.handlers]
    if levels and min(levels) > root.level:
        root.setLevel(min(levels))


def app_settings() -> dict[str, Any]:
    """The settings every MATS Faust app shares (the desk's and the sink's)."""
    return dict(
        broker=broker_urls(),
        producer_acks=-1,
        store="memory://",
        # Agents here need no leader; without this Faust would make one more topic for it.
        topic_disable_leader=True,
        # On stop, do not wait for messages still buffered in a stream (that wait can hang).
        # Their offsets are not committed, so they are read again on restart, and every input
        # is known by where it was read (the desk) or by its event id (the sink).
        stream_wait_empty=False,
        # A worker that dies is noticed after the session timeout; then its partitions, and
        # the sequenced desk with them, go to a worker still alive.
        broker_session_timeout=session_timeout_s(),
        broker_heartbeat_interval=min(3.0, session_timeout_s() / 3),
    )


def _dump_state(app: faust.App) -> None:
    """``kill -USR1 <worker>``: every task's stack and the consumer's partitions, to the log."""
    lines = []
    for task in asyncio.all_tasks():
        frames: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None and hasattr(coro, "cr_frame"):  # down the chain of awaits
            if coro.cr_frame is not None:
                code = coro.cr_frame.f_code
                frames.append(f"{code.co_filename}:{coro.cr_frame.f_lineno} {code.co_name}")
            coro = coro.cr_await
        lines.append(f"{task.get_name()}: " + " -> ".join(frames))
    try:
        c: Any = app.consumer  # Faust's consumer: more than its ConsumerT type shows
        inner = c._thread._ensure_consumer()  # the aiokafka consumer under Faust
        paused = set(inner.paused())
        active = c._active_partitions
        lines.append(f"flow active {c.flow_active} suspended {c.suspend_flow.is_set()} "
                     f"rebalancing {app.rebalancing} in recovery {app.in_recovery}")
        tables: Any = app.tables  # Faust's TableManager: more than its type shows
        recovery = tables.recovery
        lines.append(f"recovery active {sorted(map(str, recovery.active_tps))} standby "
                     f"{sorted(map(str, recovery.standby_tps))} changelog queue "
                     f"{tables.changelog_queue.qsize()} active offsets "
                     f"{ {str(k): v for k, v in recovery.active_offsets.items()} } highwaters "
                     f"{ {str(k): v for k, v in recovery.active_highwaters.items()} }")
        # aiokafka's buffer of fetched records, which its own thread changes meanwhile
        fetched = {str(tp) for tp in list(getattr(inner._fetcher, "_records", {}))}
        for tp in sorted(inner.assignment()):
            try:
                lines.append(
                    f"{tp.topic}:{tp.partition} position "
                    f"{inner._subscription.subscription.assignment.state_value(tp)}"
                    f" highwater {inner.highwater(tp)} read offset {c._read_offset.get(tp)}"
                    f" paused {tp in paused} faust-paused {tp in c._paused_partitions}"
                    f" faust-active {active is None or tp in active}"
                    f" buffered {tp in c._buffered_partitions} fetched {str(tp) in fetched}")
            except Exception as exc:  # reassigned meanwhile: the other partitions still
                lines.append(f"{tp.topic}:{tp.partition} unreadable: {exc!r}")
    except Exception as exc:  # a dump is for reading; it must not end the worker
        lines.append(f"consumer state unreadable: {exc!r}")
    log.warning("state dump:\n%s", "\n".join(lines))


app = MatsApp(
    "mats",
    # The worker's local state goes beside run/kafka, which git ignores. Faust's APP_DATADIR
    # overrides it (its --datadir option does not: it is read after the app is imported).
    datadir=ROOT / "run" / "streams",
    # the second worker keeps a standby copy of the journal, so a takeover replays from memory
    table_standby_replicas=1,
    **app_settings(),
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
# Execution reports from the gateways (mats.executions.ExecutionReport JSON), as raw bytes so a
# bad one is dead-lettered; what fill booking publishes, as the models' JSON.
exec_reports_topic = _topic("mats.exec-reports", key_type=bytes, value_type=bytes,
                            key_serializer="raw", value_serializer="raw")
account_fills_topic = _topic("mats.account-fills", key_type=str, value_type=bytes,
                             key_serializer="raw", value_serializer="raw")
exposure_topic = _topic("mats.exposure", key_type=str, value_type=bytes,
                        key_serializer="raw", value_serializer="raw")
account_state_topic = _topic("mats.account-state", key_type=str, value_type=bytes,
                             key_serializer="raw", value_serializer="raw")


# ------------------------------------------------------------------------------ agents


async def _send(topic: str, key: str, value: bytes) -> None:
    """One message the worker publishes, handed to the app's producer as it is.

    Not through Faust's ``Topic.send``, which makes a future, a pending message and sensor
    calls for every message: what the worker publishes is bytes already, partitioned by key as
    ``Topic.send`` would. Nothing is lost by it: Faust flushes the producer before it commits
    the offsets of the inputs, so an input is read again after a crash until everything it
    published was acknowledged.
    """
    await app.producer.send(topic, key.encode(), value, None, None, None)


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
            yield await _dead_letter(message, e, event.value, stage="intake")
        else:
            # the order's JSON is the BlockRecord's wire form (the record mirrors the model)
            await _send(blocks_topic.get_topic_name(), order.strategy,
                        order.model_dump_json().encode())
            yield order


class _Message(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> Any: ...
    @property
    def timestamp(self) -> float | None: ...


async def _dead_letter(message: _Message, error: SignalError, value: Any,
                       stage: str) -> DeadLetter:
    letter = dead_letter(value, error, topic=message.topic, partition=message.partition,
                         offset=message.offset, key=message.key, timestamp=message.timestamp,
                         stage=stage)
    await dlq_topic.send(key=message.topic, value=letter.model_dump_json().encode())
    return letter


# ------------------------------------------------------------------------------ the sequenced desk

# The journal of the sequenced desk (mats.desk): one entry per block order or execution report
# applied, keyed by its position; and the newest mark per symbol. Both live in Kafka changelog
# topics (compacted) with the sequenced topics' partition count, so the worker that owns the
# sequenced partition owns them, and one that takes over recovers them before it reads on.
journal = app.Table("journal", partitions=kafka.SEQUENCED_PARTITIONS, key_type=str,
                    value_type=bytes, help="the sequenced desk's journal (mats.desk)")
marks = app.Table("marks", partitions=kafka.SEQUENCED_PARTITIONS, key_type=str,
                  value_type=bytes, help="the newest live price per symbol")


_Taken = JournalEntry | DeadLetter  # what a sequenced agent did with one input


@dataclass
class _Holder:
    desk: Desk | None = None


_current = _Holder()


EXIT_WRONG_BOOK = 78  # EX_CONFIG of sysexits.h: the book does not match the journal


def desk() -> Desk:
    """The worker's :class:`mats.desk.Desk`, brought up to date with the journal.

    Built from the book in :func:`book_dir` the first time (and after a rebalance took the
    sequenced partition away), then every journal entry not yet applied is replayed, in order;
    the newest marks kept beside the journal are applied last.
    """
    d = _current.desk
    fresh = d is None
    if d is None:
        brokers()  # a broker without a gateway stops here, before any state is built
        d = _current.desk = Desk(load_book(book_dir()))
    replayed = 0
    while (value := journal.get(journal_key(d.seq))) is not None:
        try:
            d.replay(JournalEntry.model_validate_json(value))
        except JournalOfAnotherBook as e:
            # nothing can be applied on a journal that decided from other accounts: the worker
            # stops with the reason (exit status 78, a configuration error), rather than refuse
            # every input one by one. Nothing was applied and no input of the desk's acked, so
            # there is nothing to save: it exits at once (Faust's own stop can hang here).
            log.critical("desk: %s (MATS_BOOK_DIR=%s); the worker stops", e, book_dir())
            logging.shutdown()
            os._exit(EXIT_WRONG_BOOK)
        replayed += 1
    if fresh:
        d.restore_marks({sym: Mark.model_validate_json(v) for sym, v in marks.items()})
        d.settle_watch()
    if replayed:
        log.info("desk: replayed %d journal entries (now at %d)", replayed, d.seq)
    return d


def reset_desk() -> None:
    """Forgets the desk: the next event rebuilds it from the book and the journal."""
    _current.desk = None


@app.on_partitions_revoked.connect
async def _on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    # Another worker may apply the sequenced topics from here on: the state this one holds
    # is rebuilt from the journal when it gets them back.
    reset_desk()


@dataclass(frozen=True)
class _Input:
    """One message of a sequenced topic: as an agent got it, or read again from Kafka."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any  # what the agent's topic gives (a BlockRecord, bytes), or the raw bytes
    timestamp: float | None

    @classmethod
    def of(cls, event: faust.EventT[Any]) -> _Input:
        m = event.message
        return cls(m.topic, m.partition, m.offset, m.key, event.value, m.timestamp)

    @property
    def source(self) -> SourceRef:
        return SourceRef(topic=self.topic, partition=self.partition, offset=self.offset)


async def _read_again(topic: str, partition: int, start: int, stop: int) -> list[_Input]:
    """The messages of one partition from ``start`` up to (not including) ``stop``, read
    straight from Kafka by a consumer of no group."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.settings().bootstrap_servers,
                                enable_auto_commit=False)
    await consumer.start()
    out: list[_Input] = []
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < stop:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if record.offset < stop:
                    out.append(_Input(topic, partition, record.offset, record.key,
                                      record.value, record.timestamp / 1000))
    finally:
        await consumer.stop()
    return out


async def _log_start(topic: str, partition: int) -> int:
    """The first offset Kafka still has of a partition, asked by a consumer of no group (not
    the worker's own, whose thread may be busy fetching)."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.settings().bootstrap_servers,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        first: int = (await asyncio.wait_for(consumer.beginning_offsets([tp]), 60))[tp]
        return first
    finally:
        await consumer.stop()


# When each sequenced partition last had an input taken (time.monotonic()), and a lock each:
# the agent and the stall watch (_watch_sequenced) never take from one partition at once.
_last_take: dict[tuple[str, int], float] = {}
_take_locks: dict[tuple[str, int], asyncio.Lock] = {}


def _take_lock(topic: str, partition: int) -> asyncio.Lock:
    return _take_locks.setdefault((topic, partition), asyncio.Lock())


async def _take_in_order(inp: _Input, take: Callable[[_Input], Awaitable[_Taken]],
                         ) -> list[_Taken]:
    async with _take_lock(inp.topic, inp.partition):
        _last_take[(inp.topic, inp.partition)] = time.monotonic()
        try:
            return await _take_in_order_locked(inp, take)
        finally:
            _last_take[(inp.topic, inp.partition)] = time.monotonic()


async def _take_in_order_locked(inp: _Input, take: Callable[[_Input], Awaitable[_Taken]],
                                ) -> list[_Taken]:
    """Takes ``inp`` in offset order: first whatever of its partition was passed over.

    The desk takes each sequenced partition's messages one after another, by offset. Faust's
    consumer can pass over messages while its flow is suspended (a rebalance, a table
    recovery) and then deliver later ones, and its committed offset can pass them too. The
    desk knows the next offset it must take (from the journal; before any input, the
    partition's first offset): when a later message comes, the ones between are read straight
    from Kafka and taken first. A message taken before is taken again harmlessly (its entry's
    outbox is published again).
    """
    expected = desk().next_offset(inp.topic, inp.partition)
    if expected is None:
        expected = await _log_start(inp.topic, inp.partition)
    results: list[_Taken] = []
    if inp.offset > expected:
        missed = await _read_again(inp.topic, inp.partition, expected, inp.offset)
        log.warning("desk: %s:%d went from %d to %d; %d passed over, taken now",
                    inp.topic, inp.partition, expected, inp.offset, len(missed))
        for m in missed:
            results.append(await take(m))
    results.append(await take(inp))
    return results


async def _publish(out: Sequence[OutMessage]) -> None:
    for o in out:
        await _send(o.topic, o.key, o.value.encode())


async def _sequenced(inp: _Input,
                     apply: Callable[[Desk, SourceRef, datetime], JournalEntry | int],
                     ) -> JournalEntry:
    """Applies one input to the desk, journals it, and publishes what it made.

    An input already in the journal (read again after a crash), or a block order that repeats
    one (published again by intake after a crash), is not applied again: the outbox of its
    entry is published again instead, since the crash may have lost some of it.
    """
    state = desk()
    source = inp.source
    seq = state.applied(source)
    applied = seq if seq is not None else apply(state, source, datetime.now(UTC))
    if isinstance(applied, int):
        seq = applied
        state.handled(source)
        entry = JournalEntry.model_validate_json(journal[journal_key(seq)])
        log.info("desk: %s:%d@%d was applied as entry %d; publishing its outbox again",
                 source.topic, source.partition, source.offset, seq)
    else:
        entry = applied
        # one table write per input: in the changelog whole, or not at all
        journal[entry.key()] = entry.model_dump_json().encode()
    await _publish(entry.out)
    return entry


def _apply_block(order: BlockOrder, d: Desk, source: SourceRef,
                 at: datetime) -> JournalEntry | int:
    repeated = d.repeat_of(order)
    return repeated if repeated is not None else d.block(order, source, at)


def _apply_report(report: ExecutionReport, d: Desk, source: SourceRef,
                  at: datetime) -> JournalEntry | int:
    return d.execution(report, source, at)


@app.agent(marketdata_topic)
async def marketdata(stream: faust.StreamT[bytes]) -> AsyncIterator[PriceTick | DeadLetter]:
    """Live prices in: applied to the desk's marks at once (the newest per symbol), with the
    exposure of the accounts holding the symbol and of the firm, and any limit alerts, out;
    bad ticks to ``mats.dlq``."""
    known = known_ids()
    async for event in stream.events():
        try:
            tick = validate_tick(event.value, known)
        except SignalError as e:
            yield await _dead_letter(event.message, e, event.value, stage="marketdata")
            continue
        out = desk().tick(tick)
        if out is not None:
            marks[tick.symbol] = Mark(price=tick.price, ts=tick.ts).model_dump_json().encode()
            for o in out:
                await _send(o.topic, o.key, o.value())
        yield tick


def _failed(code: str, e: Exception, journey_id: str | None) -> SignalError:
    problem = Problem(code=code, loc=[], field="", message=f"{type(e).__name__}: {e}")
    return SignalError([problem], journey_id=journey_id)


async def _take_block(inp: _Input) -> _Taken:
    record: BlockRecord | None = None
    try:
        record = inp.value if isinstance(inp.value, BlockRecord) else BlockRecord.loads(
            inp.value)
        order = record.to_order()
    except Exception as e:  # not a block order after all: kept with the reason
        desk().handled(inp.source)
        journey = record.journey_id if record is not None else None
        value = json.dumps(record.asdict(), default=str) if record is not None else inp.value
        return await _dead_letter(inp, _failed("INVALID_BLOCK", e, journey), value,
                                  stage="blocks")
    try:
        return await _sequenced(inp, functools.partial(_apply_block, order))
    except Exception as e:  # a bug or a core refusal must not stop the stream
        desk().handled(inp.source)
        return await _dead_letter(inp, _failed("BLOCK_FAILED", e, order.journey_id),
                                  order.model_dump_json(), stage="blocks")


@app.agent(blocks_topic)
async def blocks(stream: faust.StreamT[BlockRecord]) -> AsyncIterator[_Taken]:
    """Block orders in; allocation instructions, child orders and alerts out.

    One core call per block (layer 1, allocation, layer 2; an accepted block reserves its lots
    and opens one child order per broker), at the current time and marks, through the desk,
    in offset order (:func:`_take_in_order`). Yields the journal entry (what was published is
    its ``out``), or the dead letter of a block it could not process, for tests and replies.
    """
    async for event in stream.events():
        for taken in await _take_in_order(_Input.of(event), _take_block):
            yield taken


async def _take_report(inp: _Input) -> _Taken:
    try:
        report = ExecutionReport.model_validate_json(inp.value or b"")
    except ValueError as e:
        desk().handled(inp.source)
        problem = Problem(code=INVALID_FIELD if inp.value else NOT_JSON, loc=[], field="",
                          message=f"not an execution report: {e}")
        return await _dead_letter(inp, SignalError([problem]), inp.value, stage="executions")
    try:
        return await _sequenced(inp, functools.partial(_apply_report, report))
    except Exception as e:  # a bug must not stop the stream: kept with the reason
        desk().handled(inp.source)
        return await _dead_letter(inp, _failed("EXECUTION_FAILED", e, report.journey_id),
                                  inp.value, stage="executions")


@app.agent(exec_reports_topic)
async def executions(stream: faust.StreamT[bytes]) -> AsyncIterator[_Taken]:
    """Execution reports in; each account's share of every fill, child order closes with
    shortfalls, exposure and alerts out, in offset order (:func:`_take_in_order`).

    Fills go to the child order's accounts at its average price (:mod:`mats.fills` rules,
    the accounts' fill policies); a report that ends the child order closes it. A report
    that is not an execution report goes to ``mats.dlq``; one that cannot be booked (an
    unknown child order, an overfill) raises a critical alert.
    """
    async for event in stream.events():
        for taken in await _take_in_order(_Input.of(event), _take_report):
            yield taken


# A sequenced partition the worker's consumer has read past the desk's next offset, with
# nothing taken for this long, had messages passed over and no later one came to show the gap.
STALL_S = 5.0
_SEQUENCED_TOPICS = ("mats.blocks", "mats.exec-reports")


def _consumer_position(tp: Any) -> int | None:
    """The next offset the worker's consumer will fetch on ``tp``; None when it cannot say."""
    try:
        c: Any = app.consumer  # Faust's consumer: more than its ConsumerT type shows
        inner = c._thread._ensure_consumer()  # aiokafka's consumer under Faust
        return int(inner._subscription.subscription.assignment.state_value(tp).position)
    except Exception:  # not assigned, not started, or another aiokafka: no answer
        return None


async def _watch_sequenced() -> None:
    """Takes up a sequenced partition that stalled with messages passed over.

    Faust's fetcher can pass over the messages it fetched while the flow was suspended (a
    rebalance, a table recovery), and its seek to the committed offsets afterwards does not
    go back on a partition with no committed offset: a worker that took over while execution
    reports were arriving would wait for ever, its consumer at the end of a partition whose
    messages the desk never took. :func:`_take_in_order` mends a gap when a later message
    comes; this watch mends one when none does. When a partition's consumer is past the
    desk's next offset, no take is under way and none happened for :data:`STALL_S`, the
    consumer goes back to that offset, so the messages come again, in order. It waits while
    partitions are reassigned and while the tables recover.
    """
    consumer: Any = app.consumer
    # not while the tables recover: the journal is incomplete (the desk's next offsets with
    # it), and Faust reads the changelogs with the flow resumed
    if app.rebalancing or app.in_recovery or not consumer.flow_active:
        return
    now = time.monotonic()
    for tp in app.consumer.assignment():
        if tp.topic not in _SEQUENCED_TOPICS:
            continue
        key = (tp.topic, tp.partition)
        last = _last_take.setdefault(key, now)
        position = _consumer_position(tp)
        if position is None or now - last < STALL_S or _take_lock(*key).locked():
            continue
        expected = desk().next_offset(*key)
        if expected is None:
            expected = await _log_start(*key)
        if position > expected:
            log.warning("desk: %s:%d stalled at %d with the consumer at %d; reading again "
                        "from %d", tp.topic, tp.partition, expected, position, expected)
            _last_take[key] = now  # one seek, then time for the messages to come
            await _seek(tp, expected)


SEEK_TIMEOUT_S = 10.0


async def _seek(tp: Any, offset: int) -> None:
    """Sends the worker's consumer to ``offset`` of ``tp``, on the consumer's own thread (where
    aiokafka runs, as Faust's recovery does), if the partition is still the worker's."""
    consumer: Any = app.consumer
    if tp not in consumer.assignment():
        log.warning("%s:%d is not this worker's any more: no seek", tp.topic, tp.partition)
        return
    await asyncio.wait_for(consumer.seek_wait({tp: offset}), SEEK_TIMEOUT_S)


def _never_raises(watch: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A watch for a timer: what goes wrong in one round is logged, and the next round runs
    (an exception out of a Faust timer would stop the worker)."""
    @functools.wraps(watch)
    async def guarded() -> None:
        try:
            await watch()
        except Exception:
            log.exception("%s failed; it runs again at its next round", watch.__name__)
    return guarded


app.timer(interval=1.0)(_never_raises(_watch_sequenced))


# A table recovery that read nothing for this long while the changelog still had entries to
# give had its fetch stuck: the watch below logs the worker's state and reads the rest again.
RECOVERY_STALL_S = 15.0
_recovery_progress: dict[Any, tuple[int, float]] = {}  # changelog TP -> (offset, since when)
_clock = time.monotonic  # the recovery watch's clock (a test sets its own)


async def _watch_recovery() -> None:
    """Starts a stalled table recovery again from where it stopped.

    After a rebalance, Faust reads each changelog partition it must recover up to its end
    before the worker takes any input. Now and then it waits for ever for the entries that
    are left, with no error (Faust logs "No event received for active tp ... since recovery
    start" every few seconds), and the desk never comes back. When a partition's recovery
    has not moved for :data:`RECOVERY_STALL_S` while nothing fetched waits to be applied, the
    worker's state goes to the log (:func:`_dump_state`) and the consumer is sent back to the
    first entry not yet read, so the rest comes again; an entry read twice is applied once
    (recovery keeps the newest offset it applied).
    """
    tables: Any = app.tables  # Faust's TableManager: more than its TableManagerT type shows
    recovery = tables.recovery
    if not app.in_recovery:
        _recovery_progress.clear()
        return
    now = _clock()
    waiting = tables.changelog_queue.qsize()  # fetched, not yet applied: not a stall
    for tp, highwater in list(recovery.active_highwaters.items()):
        offset = recovery.active_offsets.get(tp)
        if offset is None or highwater is None or offset >= highwater:
            _recovery_progress.pop(tp, None)
            continue
        seen, since = _recovery_progress.get(tp, (offset, now))
        if seen != offset or tp not in _recovery_progress or waiting:
            _recovery_progress[tp] = (offset, now)
            continue
        if now - since < RECOVERY_STALL_S:
            continue
        log.warning("recovery: %s:%d stalled at offset %d of %d for %.0f s; reading it again "
                    "from %d", tp.topic, tp.partition, offset, highwater, now - since,
                    offset + 1)
        _dump_state(app)
        _recovery_progress[tp] = (offset, now)
        await _seek(tp, offset + 1)


app.timer(interval=1.0)(_never_raises(_watch_recovery))
