"""Publishing the start-of-day state: the compacted Kafka topic and the SQL store.

The ``mats_sod`` DAG builds the day's :class:`mats.models.Account` list with
:func:`mats.batch.sod.run_sod` and, only when no input had a critical problem, hands it here:

* :func:`publish_to_kafka` - one message per account on ``mats.sod-state`` (compacted: the
  newest message of each key is the account's state), keyed by account id, the value the
  account as JSON, the day in the ``as_of`` header. An idempotent producer with ``acks=all``:
  a retried send is not written twice, and a send counts only once every in-sync replica has it.
* :func:`publish_to_store` - the ``sod_state`` table (:class:`mats.store.SodState`): the
  day's rows replaced in one transaction, so a re-run of the same day leaves one state, never
  a mix of two.

Both refuse an empty state: an empty list is what a failed start of day builds, and publishing
it would read downstream as "every account gone".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mats.batch.alerts import ALERTS_TOPIC, BatchAlert
from mats.errors import MatsError
from mats.models import Account
from mats.store import SodState, Store

__all__ = [
    "SOD_TOPIC",
    "PublishError",
    "load_state",
    "publish_to_kafka",
    "publish_to_store",
    "read_from_kafka",
    "read_from_store",
    "state_summary",
]

SOD_TOPIC = "mats.sod-state"
_ACCOUNTS = TypeAdapter(list[Account])


class PublishError(MatsError):
    """The state could not be published (nothing to publish, Kafka unreachable, no client)."""


def load_state(path: str | Path) -> list[Account]:
    """The accounts of a ``sod_state.json`` that :meth:`mats.batch.sod.SodResult.write` wrote."""
    p = Path(path)
    try:
        return _ACCOUNTS.validate_json(p.read_bytes())
    except OSError as e:
        raise PublishError(f"cannot read the start-of-day state {p}: {e.strerror}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise PublishError(f"{p} is not a start-of-day state: {where}: {first['msg']}") from None


def _not_empty(accounts: Sequence[Account]) -> None:
    if not accounts:
        raise PublishError("the start-of-day state is empty: nothing is published (a start of "
                           "day with a critical problem builds no state)")


# ------------------------------------------------------------------------------ SQL store


def publish_to_store(url: str, as_of: date, accounts: Sequence[Account]) -> int:
    """Replace the day ``as_of`` in the store's ``sod_state`` table with ``accounts``.

    The store at ``url`` is migrated first (:class:`mats.store.Store`). Returns the number of
    rows written.
    """
    _not_empty(accounts)
    now = datetime.now(UTC)
    with Store(url) as store, Session(store.engine) as session, session.begin():
        session.execute(delete(SodState).where(SodState.as_of == as_of))
        session.add_all(SodState(as_of=as_of, account_id=a.account_id, published_at=now,
                                 payload=a.model_dump_json()) for a in accounts)
    return len(accounts)


def read_from_store(url: str, as_of: date) -> list[Account]:
    """The state published for ``as_of``, by account id (empty when none was)."""
    query = select(SodState).where(SodState.as_of == as_of).order_by(SodState.account_id)
    with Store(url) as store, Session(store.engine) as session:
        return [Account.model_validate_json(row.payload) for row in session.scalars(query)]


# ------------------------------------------------------------------------------ Kafka


def _aiokafka() -> Any:
    try:
        import aiokafka
    except ImportError:
        raise PublishError("aiokafka is not installed in this environment: pip install "
                           "'aiokafka>=0.13' to publish to Kafka") from None
    return aiokafka


async def _produce(bootstrap: str, topic: str, accounts: Sequence[Account], as_of: date,
                   timeout: float) -> None:
    producer = _aiokafka().AIOKafkaProducer(
        bootstrap_servers=bootstrap.split(","), acks="all", enable_idempotence=True,
        client_id="mats-sod", request_timeout_ms=max(int(timeout * 1000), 1000))
    try:
        await asyncio.wait_for(producer.start(), timeout)
        header = [("as_of", as_of.isoformat().encode())]
        sends = [await producer.send(topic, key=a.account_id.encode(),
                                     value=a.model_dump_json().encode(), headers=header)
                 for a in accounts]
        await asyncio.wait_for(asyncio.gather(*sends), timeout)
    finally:
        await producer.stop()


def publish_to_kafka(bootstrap: str, as_of: date, accounts: Sequence[Account], *,
                     topic: str = SOD_TOPIC, timeout: float = 30.0) -> int:
    """Send every account to ``topic`` at ``bootstrap``; the number sent.

    Returns only when the brokers have acknowledged every message (``acks=all``).

    Raises
    ------
    PublishError
        The state is empty, aiokafka is missing, or Kafka did not take the messages within
        ``timeout`` seconds.
    """
    _not_empty(accounts)
    _aiokafka()
    try:
        asyncio.run(_produce(bootstrap, topic, accounts, as_of, timeout))
    except PublishError:
        raise
    except TimeoutError:
        raise PublishError(f"Kafka at {bootstrap} did not take the start-of-day state within "
                           f"{timeout:g} s") from None
    except Exception as e:  # aiokafka's errors have no common base worth naming
        raise PublishError(f"cannot publish the start-of-day state to Kafka at {bootstrap}: "
                           f"{type(e).__name__}: {e}") from None
    return len(accounts)


async def _consume(bootstrap: str, topic: str, timeout: float) -> dict[str, tuple[str, Account]]:
    aiokafka = _aiokafka()
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap.split(","),
                                         enable_auto_commit=False, auto_offset_reset="earliest",
                                         request_timeout_ms=max(int(timeout * 1000), 1000))
    out: dict[str, tuple[str, Account]] = {}
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        # no subscription: the client's metadata covers every topic once it is updated
        await consumer._client.force_metadata_update()
        parts = [aiokafka.TopicPartition(topic, p)
                 for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            return out
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while [p for p in parts if await consumer.position(p) < ends[p]]:
            if loop.time() > deadline:
                raise TimeoutError
            batches = await consumer.getmany(*parts, timeout_ms=500)
            for messages in batches.values():
                for m in messages:
                    headers = dict(m.headers or ())
                    out[m.key.decode()] = (headers.get("as_of", b"").decode(),
                                           Account.model_validate_json(m.value))
    finally:
        await consumer.stop()
    return out


def read_from_kafka(bootstrap: str, *, topic: str = SOD_TOPIC,
                    timeout: float = 30.0) -> dict[str, tuple[str, Account]]:
    """The topic read from its start: each account's newest ``(as_of, Account)`` by id."""
    _aiokafka()
    try:
        return asyncio.run(_consume(bootstrap, topic, timeout))
    except TimeoutError:
        raise PublishError(f"{topic} at {bootstrap} was not read within {timeout:g} s") from None


def state_summary(accounts: Sequence[Account]) -> str:
    """One line for a log: how many accounts and their total net liquidation value."""
    total = sum(a.net_liq for a in accounts)
    return f"{len(accounts)} accounts, net liquidation value {total:,.2f}"


# ------------------------------------------------------------------------------ alerts

def publish_alerts(bootstrap: str, alerts: Sequence[BatchAlert], *,
                   topic: str = ALERTS_TOPIC, timeout: float = 30.0) -> int:
    """Send ``alerts`` to ``topic`` (keyed by job); the number sent, once acknowledged."""
    if not alerts:
        return 0
    _aiokafka()

    async def send() -> None:
        producer = _aiokafka().AIOKafkaProducer(
            bootstrap_servers=bootstrap.split(","), acks="all", enable_idempotence=True,
            client_id="mats-batch-alerts", request_timeout_ms=max(int(timeout * 1000), 1000))
        try:
            await asyncio.wait_for(producer.start(), timeout)
            sends = [await producer.send(topic, key=a.job.encode(),
                                         value=a.model_dump_json().encode()) for a in alerts]
            await asyncio.wait_for(asyncio.gather(*sends), timeout)
        finally:
            await producer.stop()

    try:
        asyncio.run(send())
    except TimeoutError:
        raise PublishError(f"Kafka at {bootstrap} did not take the alerts within "
                           f"{timeout:g} s") from None
    except PublishError:
        raise
    except Exception as e:  # aiokafka's errors have no common base worth naming
        raise PublishError(f"cannot publish alerts to Kafka at {bootstrap}: "
                           f"{type(e).__name__}: {e}") from None
    return len(alerts)
