"""The MATS event store's writer: a Faust app of its own (id ``mats-sink``), run as
``faust -A streams.sink worker`` beside the desk's (``faust -A streams.app worker``).

Agent
-----
``sink``
    reads what the desk and the gateways publish (``mats.blocks``, ``mats.allocations``, the
    order topics of the configured gateways, ``mats.exec-reports``, ``mats.account-fills``,
    ``mats.alerts``, ``mats.dlq``) and writes each message to the SQL store as one event
    (:func:`mats.store.event_from_message`, :meth:`mats.store.Store.record`), in batches,
    idempotently by event id; a message it cannot read is kept as kind ``unparsed``.

It is its own consumer group and process so that the database sets no pace for trading: a
slow or failed store makes the sink fall behind (its offsets wait, nothing is lost) while the
desk goes on; the sink catches up when the store is back. Several sink workers share the
topics' partitions.

Environment
-----------
``MATS_KAFKA_BOOTSTRAP``, ``MATS_KAFKA_GATEWAYS``, ``MATS_SESSION_TIMEOUT_S``
    as for :mod:`streams.app`
``MATS_DB_URL``
    the SQL store (default: SQLite, ``run/mats.db`` in the checkout); its schema is migrated
    when the worker starts
``APP_DATADIR``
    Faust's own: the worker's local state folder (default: ``run/streams-sink``)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator

import faust
from sqlalchemy.exc import OperationalError

from mats.store import Event, Store, event_from_message, sink_topic_names
from streams.app import ROOT, MatsApp, app_settings

DEFAULT_DB = ROOT / "run" / "mats.db"

log = logging.getLogger(__name__)


def db_url(env: dict[str, str] | None = None) -> str:
    """The SQL store's URL: ``MATS_DB_URL``, else SQLite in ``run/mats.db`` of the checkout."""
    env = dict(os.environ) if env is None else env
    return env.get("MATS_DB_URL") or f"sqlite:///{DEFAULT_DB}"


@functools.cache
def store() -> Store:
    """The worker's SQL store (:func:`db_url`), opened and migrated once per process."""
    return Store(db_url())


class SinkApp(MatsApp):
    """The sink's app: it needs the SQL store, not the book."""

    def check(self) -> None:
        store()


app = SinkApp("mats-sink", datadir=ROOT / "run" / "streams-sink", **app_settings())


# The topics of mats.store.sink_topic_names, as raw bytes decoded by the sink itself: a message
# it cannot read is kept, not skipped.
sink_topic = app.topic(*sink_topic_names(), key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")

SINK_RETRY_S = (0.5, 30.0)  # first and longest wait between tries of a database that fails


async def _record(events: list[Event]) -> int:
    # the database call is blocking: off the event loop, so the stream goes on reading meanwhile
    wait, longest = SINK_RETRY_S
    while True:
        try:
            return await asyncio.to_thread(store().record, events)
        except OperationalError as e:
            # the database is down or locked: the messages wait (their offsets are not
            # committed) and the desk, in its own process, is not held back
            log.warning("sink: the SQL store failed (%s); trying again in %.1f s", e, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)


# The sink writes what came in the last moment in one transaction: one commit per message
# would make the database, not the stream, set the pace.
SINK_BATCH = 500
SINK_WITHIN_S = 0.05


@app.agent(sink_topic)
async def sink(stream: faust.StreamT[bytes]) -> AsyncIterator[Event]:
    """Published messages in; one event each in the SQL store, idempotently by event id,
    written in batches (up to :data:`SINK_BATCH` messages, or what came within
    :data:`SINK_WITHIN_S`), one transaction each.

    Yields the event it recorded for each message (recorded already or not), for tests.
    """
    async for events in stream.take_events(  # type: ignore[attr-defined]
            SINK_BATCH, within=SINK_WITHIN_S):
        rows = [event_from_message(e.message.topic, e.message.partition, e.message.offset,
                                   e.value, key=e.message.key, timestamp=e.message.timestamp)
                for e in events]
        await _record(rows)
        for row in rows:
            yield row
