"""One gateway process: its order topic in, the broker's reports and its heartbeat out.

:class:`Gateway` consumes ``mats.orders.<name>`` (consumer group ``mats-gateway-<name>``, offsets
committed by hand) and dispatches each message on its ``kind``:

* ``child_order`` (:class:`mats.blocks.ChildOrder`): recorded in the journal, sent as a new
  order (ClOrdID = child order id); one already in the journal is not sent again;
* ``cancel_request`` / ``replace_request``: a new ClOrdID (``<child order id>.<n>``) with the
  order's current id as OrigClOrdID; a request id seen before is not sent again;
* anything else, or anything invalid (not JSON, a missing field, another gateway's order, a
  cancel of an order this gateway never had): logged and dead-lettered on ``mats.dlq``
  (:class:`mats.intake.DeadLetter`, stage ``gateway``), never a crash.

A message's offset is committed once the broker has what it asked for (sent through the
session, which persists it) and the journal says so. Messages wait in Kafka while the session
is down.

The broker's reports go through the journal (:meth:`Journal.ingest`) to ``mats.exec-reports``
(keyed by block id) from an idempotent ``acks=all`` producer. Unknown ClOrdIDs, reports out of
order, refused requests and garbage are logged and alerted on ``mats.alerts``. A
:class:`GatewayStatus` goes to ``mats.gateway-status`` every ``status_interval_s`` and on every
change of the session's state. After a logon the gateway reconciles: an order it may or may not
have sent (``pending``) is asked about (OrderStatusRequest) and sent if the broker does not
know it; with ``cancel_on_disconnect`` every open order is cancelled after a reconnect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from mats import kafka
from mats.blocks import ALERTS_TOPIC, Alert, ChildOrder, Reason, Severity, event_id
from mats.config import pydantic_problem, render_loc
from mats.executions import (
    EXEC_REPORTS_TOPIC,
    CancelRequest,
    ExecType,
    ExecutionReport,
    OrdStatus,
    ReplaceRequest,
    report_event_id,
)
from mats.gateway.connectors import Connector, make_connector
from mats.gateway.journal import Ingested, Journal, OrderRecord, Outcome, Pending
from mats.gateway.models import (
    STATUS_TOPIC,
    BrokerReport,
    GatewayConfig,
    GatewayStatus,
    SessionState,
)
from mats.intake import (
    INVALID_FIELD,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    NOT_JSON,
    Problem,
    SignalError,
    dead_letter,
)

__all__ = [
    "DLQ_TOPIC",
    "UNKNOWN_CHILD_ORDER",
    "UNKNOWN_KIND",
    "WRONG_GATEWAY",
    "Gateway",
    "Throttle",
]

log = logging.getLogger("mats.gateway")

DLQ_TOPIC = "mats.dlq"
UNKNOWN_KIND = "UNKNOWN_KIND"
WRONG_GATEWAY = "WRONG_GATEWAY"
UNKNOWN_CHILD_ORDER = "UNKNOWN_CHILD_ORDER"

_MODELS: dict[str, type[ChildOrder] | type[CancelRequest] | type[ReplaceRequest]] = {
    "child_order": ChildOrder, "cancel_request": CancelRequest,
    "replace_request": ReplaceRequest}


class Throttle:
    """At most ``rate`` messages a second, in bursts of up to ``rate / 10`` (a token bucket)."""

    def __init__(self, rate: int) -> None:
        self.rate = float(rate)
        self.capacity = max(1.0, rate / 10)
        self._tokens = self.capacity
        self._at = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)


def _problem(code: str, message: str, loc: tuple[str | int, ...] = ()) -> Problem:
    return Problem(code=code, loc=list(loc), field=render_loc(loc), message=message)


OrderMessage = ChildOrder | CancelRequest | ReplaceRequest
# one pass of pydantic's JSON parser for a good message; a bad one is looked at again, slowly,
# for the reasons (parse_order_message)
_FAST: TypeAdapter[OrderMessage] = TypeAdapter(
    Annotated[OrderMessage, Field(discriminator="kind")])


def parse_order_message(value: bytes | None) -> OrderMessage:
    """The child order, cancel or replace a message of an order topic carries.

    Raises
    ------
    SignalError
        ``NOT_JSON``, ``NOT_AN_OBJECT``, ``UNKNOWN_KIND``, ``MISSING_FIELD`` or
        ``INVALID_FIELD``, with the field.
    """
    if value:
        try:
            return _FAST.validate_json(value)
        except ValidationError:
            pass
    if value is None or not value.strip():
        raise SignalError([_problem(NOT_JSON, "empty message")])
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise SignalError([_problem(NOT_JSON, f"not JSON text: {e}")]) from None
    if not isinstance(data, dict):
        raise SignalError([_problem(NOT_AN_OBJECT, f"expected a JSON object, found "
                                    f"{type(data).__name__}")])
    kind = data.get("kind")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    journey = data.get("journey_id") if isinstance(data.get("journey_id"), str) else None
    if model is None:
        raise SignalError([_problem(UNKNOWN_KIND, f"kind {kind!r} is not one of "
                                    f"{', '.join(_MODELS)}", ("kind",))], journey)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            loc, message = pydantic_problem([err], model)
            code = MISSING_FIELD if err["type"] == "missing" else INVALID_FIELD
            problems.append(_problem(code, message, loc))
        raise SignalError(problems, journey) from None


async def _bounded(step: Any, timeout: float = 5.0) -> None:
    """Await one shutdown step for at most ``timeout`` seconds, whatever it raises.

    aiokafka's clients can raise CancelledError out of their own stop when the cluster is
    gone (their background tasks are cancelled under them); at shutdown that is not ours.
    """
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(step, timeout)


class _Cursor:
    """The HTTP event feed's cursor, kept in the journal."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def get(self) -> int:
        return int(self._journal.get_meta("cursor") or "0")

    def set(self, value: int) -> None:
        self._journal.set_meta("cursor", str(value))


class Gateway:
    """One gateway (see the module docstring).

    Parameters
    ----------
    config
        The gateway's configuration.
    run_dir
        Its run folder: the journal (``journal.sqlite``) and, for FIX, QuickFIX's store.
    bootstrap
        Kafka's bootstrap servers.
    """

    def __init__(self, config: GatewayConfig, run_dir: Path, bootstrap: str) -> None:
        self.config = config
        self.name = config.name
        self.run_dir = run_dir
        self.bootstrap = bootstrap
        self.journal = Journal(run_dir / "journal.sqlite", config.name)
        self.connector: Connector = make_connector(config, run_dir / "fix", self,
                                                   _Cursor(self.journal))
        self.topic = kafka.gateway_topic(config.name).name
        self.state = SessionState.STARTING
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.orders_sent = 0
        self.reports_published = 0
        self.reconnects = 0
        self._logged_on_before = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: collections.deque[tuple[Any, tuple[Any, ...]]] = collections.deque()
        self._wake_pending = False
        self._ready = asyncio.Event()
        self._outbox: asyncio.Queue[Pending] = asyncio.Queue()
        self._alerts: asyncio.Queue[tuple[str, Alert]] = asyncio.Queue()
        self._status_now = asyncio.Event()
        self._throttle = Throttle(config.max_msgs_per_s)
        self._handled: dict[Any, int] = {}  # TopicPartition -> next offset, to commit
        self._commit_now = asyncio.Event()
        self._producer: Any = None
        self._consumer: Any = None

    # ------------------------------------------------------------------ Sink (any thread)

    def _call(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop, in the order of the calls.

        From another thread (QuickFIX's) the calls queue up and the loop is woken once for
        whatever queued meanwhile, not once a call: under load the reports come in runs.
        """
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
            return
        self._inbox.append((fn, args))
        if not self._wake_pending:
            self._wake_pending = True
            loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        # cleared before draining: a call queued after the last pop wakes the loop again
        self._wake_pending = False
        while self._inbox:
            fn, args = self._inbox.popleft()
            try:
                fn(*args)
            except Exception:  # one failing step must not hold back the others queued
                log.exception("%s: handling %s failed", self.name, getattr(fn, "__name__", fn))

    def report(self, report: BrokerReport) -> None:
        result = self.journal.ingest(report)  # persisted before the session moves on
        self._call(self._after_ingest, report, result)

    def request_refused(self, cl_ord_id: str, text: str, source: str) -> None:
        req = self.journal.request(cl_ord_id) if cl_ord_id else None
        if req is None:
            self._call(self._problem, f"{source} refused {cl_ord_id or 'a message'}: {text}",
                       None)
            return
        rec = self.journal.order(req.child_order_id)
        if req.kind == "new" and rec is not None and rec.is_open and not rec.ord_status:
            # the order itself never reached the book: MATS hears it as a rejected order
            out = self._own_report(rec, f"reject:{cl_ord_id}", ExecType.REJECTED,
                                   OrdStatus.REJECTED, f"{source}: {text}")
            if self.journal.record_report(out):
                self._call(self._outbox.put_nowait, Pending(
                    out.exec_id, out.order_id.encode(), out.model_dump_json().encode()))
        self._call(self._problem, f"{source} refused {req.kind} {cl_ord_id} of "
                                  f"{req.child_order_id}: {text}", rec)

    def session_state(self, state: SessionState, error: str | None = None) -> None:
        self._call(self._set_state, state, error)

    def problem(self, text: str) -> None:
        self._call(self._problem, text, None)

    # ------------------------------------------------------------------ loop side

    def _own_report(self, rec: OrderRecord, exec_id: str, kind: ExecType, status: OrdStatus,
                    text: str) -> ExecutionReport:
        now = datetime.now(UTC)
        return ExecutionReport(
            event_id=report_event_id(self.name, exec_id), journey_id=rec.journey_id,
            order_id=rec.order_id, child_order_id=rec.child_order_id, gateway=self.name,
            exec_id=exec_id, exec_type=kind, ord_status=status, symbol=rec.symbol,
            side=rec.side, order_qty=rec.quantity, cum_qty=rec.cum_qty,
            leaves_qty=0, text=text[:500], transact_time=now, received_at=now)

    def _set_state(self, state: SessionState, error: str | None) -> None:
        if state is SessionState.LOGGED_ON:
            if self._logged_on_before:
                self.reconnects += 1
            asyncio.get_running_loop().create_task(self._reconcile(self._logged_on_before))
            self._logged_on_before = True
            self._ready.set()
        else:
            self._ready.clear()
        if error:
            self._note_error(error)
            log.warning("%s: %s", self.name, error)
        if state is not self.state:
            log.info("%s: session %s", self.name, state)
        self.state = state
        self._status_now.set()

    def _note_error(self, text: str) -> None:
        self.last_error = text[:500]
        self.last_error_at = datetime.now(UTC)

    def _problem(self, text: str, rec: OrderRecord | None) -> None:
        log.warning("%s: %s", self.name, text)
        self._note_error(text)
        self._alert(text, rec, Severity.WARNING)
        self._status_now.set()

    def _alert(self, text: str, rec: OrderRecord | None, severity: Severity) -> None:
        now = datetime.now(UTC)
        oid = rec.order_id if rec else self.name
        alert = Alert(
            event_id=event_id(oid, "alert.gateway", f"{self.name}:{text}:{now.isoformat()}"),
            journey_id=rec.journey_id if rec else "", order_id=oid, severity=severity,
            scope="block", stage="gateway", strategy="",
            symbol=rec.symbol if rec else "", side=rec.side if rec else "",
            status=rec.ord_status or rec.state if rec else "",
            reasons=[Reason(code="GATEWAY", message=text[:500])],
            message=f"gateway {self.name}: {text[:500]}", decided_at=now)
        self._alerts.put_nowait((oid, alert))

    def _after_ingest(self, report: BrokerReport, result: Ingested) -> None:
        if result.outcome is Outcome.PUBLISH and result.pending is not None:
            self._outbox.put_nowait(result.pending)
            for text in result.alerts:
                self._problem(text, result.order)
        elif result.outcome is Outcome.DUPLICATE:
            log.debug("%s: %s", self.name, result.message)
        elif result.outcome is Outcome.STATUS:
            self._on_status(report, result)
        else:  # UNKNOWN, STALE, INVALID
            self._problem(result.message, result.order)
        if result.order is not None and result.order.state == "done":
            self._status_now.set()

    def _on_status(self, report: BrokerReport, result: Ingested) -> None:
        rec = result.order
        if rec is None or report.exec_type != "I":
            return
        if report.ord_status == "8" and rec.state == "pending":
            log.info("%s: broker does not know %s: sending it", self.name, rec.child_order_id)
            asyncio.get_running_loop().create_task(self._send_orders([rec]))
        elif report.cum_qty > rec.cum_qty:
            log.info("%s: broker has %d filled of %s, the gateway %d: the reports follow",
                     self.name, report.cum_qty, rec.child_order_id, rec.cum_qty)

    async def _reconcile(self, again: bool) -> None:
        """After a logon: ask about uncertain orders; cancel open ones if the policy says."""
        for rec in self.journal.open_orders():
            await self._throttle.take()
            if rec.state == "pending":
                await self.connector.request_status(rec)
            elif again and self.config.cancel_on_disconnect:
                req = self.journal.add_request(rec.child_order_id, "cancel",
                                               f"cancel-on-disconnect-{self.reconnects}")
                await self.connector.send_cancel(rec, req)
            elif again:
                await self.connector.request_status(rec)

    # ------------------------------------------------------------------ Kafka side

    async def _send_orders(self, recs: list[OrderRecord]) -> None:
        sent = []
        for rec in recs:
            await self._throttle.take()
            if await self.connector.send_new(rec):
                sent.append(rec.child_order_id)
                self.orders_sent += 1
        self.journal.mark_sent(sent)

    async def _dead_letter(self, msg: Any, err: SignalError) -> None:
        log.warning("%s: dead-lettered %s[%d]@%d: %s", self.name, msg.topic, msg.partition,
                    msg.offset, err.message)
        dl = dead_letter(msg.value, err, topic=msg.topic, partition=msg.partition,
                         offset=msg.offset, key=msg.key, timestamp=msg.timestamp / 1000.0,
                         stage="gateway")
        await self._producer.send_and_wait(DLQ_TOPIC, dl.model_dump_json().encode(),
                                           key=msg.topic.encode())

    async def _flush(self, new: dict[str, ChildOrder]) -> None:
        """Record the new orders gathered so far (one transaction) and send them."""
        if new:
            recs = self.journal.add_orders(new.values())
            new.clear()
            await self._send_orders(recs)

    async def _handle(self, msg: Any, new: dict[str, ChildOrder]) -> None:
        """Take one message; new orders gather in ``new`` until :meth:`_flush`."""
        try:
            item = parse_order_message(msg.value)
            if item.gateway != self.name:
                raise SignalError([_problem(WRONG_GATEWAY, f"for gateway {item.gateway!r}, "
                                            f"this is {self.name!r}", ("gateway",))],
                                  item.journey_id)
            if isinstance(item, ChildOrder):
                cid = item.child_order_id
                if self.journal.order(cid) is None and cid not in new:
                    new[cid] = item
                else:
                    log.info("%s: %s already sent: not again", self.name, cid)
                return
            await self._flush(new)  # a cancel or replace may be about one of them
            rec = self.journal.order(item.child_order_id)
            if rec is None:
                raise SignalError([_problem(UNKNOWN_CHILD_ORDER, f"no child order "
                                            f"{item.child_order_id!r} at this gateway",
                                            ("child_order_id",))], item.journey_id)
            if self.journal.has_request(rec.child_order_id, item.request_id):
                return
            if not rec.is_open:
                self._problem(f"{item.kind} {item.request_id} of {rec.child_order_id}: the "
                              f"order is already {rec.ord_status}", rec)
                return
            await self._throttle.take()
            if isinstance(item, CancelRequest):
                req = self.journal.add_request(rec.child_order_id, "cancel", item.request_id)
                await self.connector.send_cancel(rec, req)
            else:
                req = self.journal.add_request(rec.child_order_id, "replace", item.request_id)
                await self.connector.send_replace(rec, req, item.quantity, item.limit_price)
        except SignalError as e:
            await self._dead_letter(msg, e)

    async def _consume(self) -> None:
        from aiokafka import TopicPartition

        while True:
            await self._ready.wait()
            batch = await self._consumer.getmany(timeout_ms=100, max_records=500)
            for tp, msgs in batch.items():
                new: dict[str, ChildOrder] = {}
                for msg in msgs:
                    await self._handle(msg, new)
                await self._flush(new)
                # handled: the broker has it and the journal says so
                self._handled[TopicPartition(tp.topic, tp.partition)] = msgs[-1].offset + 1
                self._commit_now.set()

    async def _commit(self) -> None:
        """Commit the handled offsets, off the orders' path (at most one commit in flight).

        An offset handled but not yet committed when the process dies is read again after a
        restart, and the journal knows those orders: they are not sent again.
        """
        while True:
            await self._commit_now.wait()
            self._commit_now.clear()
            offsets, self._handled = self._handled, {}
            if offsets:
                await self._consumer.commit(offsets)

    async def _publish(self) -> None:
        for old in self.journal.pending():
            self._outbox.put_nowait(old)
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty() and len(batch) < 1000:
                batch.append(self._outbox.get_nowait())
            futures = [await self._producer.send(EXEC_REPORTS_TOPIC, r.payload, key=r.key)
                       for r in batch]
            await asyncio.gather(*futures)
            self.journal.mark_published(r.exec_id for r in batch)
            self.reports_published += len(batch)

    async def _publish_alerts(self) -> None:
        while True:
            key, alert = await self._alerts.get()
            await self._producer.send_and_wait(ALERTS_TOPIC, alert.model_dump_json().encode(),
                                               key=key.encode())

    def status(self) -> GatewayStatus:
        sender, target = self.connector.seqnums()
        return GatewayStatus(
            gateway=self.name, protocol=self.config.protocol, state=self.state,
            open_orders=self.journal.open_count(), orders_sent=self.orders_sent,
            reports_published=self.reports_published, last_error=self.last_error,
            last_error_at=self.last_error_at, next_sender_seq=sender, next_target_seq=target,
            reconnects=self.reconnects, pid=os.getpid(), at=datetime.now(UTC))

    async def _publish_status(self) -> None:
        while True:
            st = self.status()
            await self._producer.send_and_wait(STATUS_TOPIC, st.model_dump_json().encode(),
                                               key=self.name.encode())
            self._status_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_now.wait(), self.config.status_interval_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; a task that fails stops the gateway with its error."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        self._loop = asyncio.get_running_loop()
        # its own order topic, as the table has it, when no one made it yet
        await kafka.ensure_topics(self.bootstrap, [kafka.gateway_topic(self.name)])
        servers = self.bootstrap.split(",")
        self._producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all",
                                          enable_idempotence=True, linger_ms=0,
                                          client_id=f"mats-gateway-{self.name}")
        self._consumer = AIOKafkaConsumer(
            self.topic, bootstrap_servers=servers, group_id=f"mats-gateway-{self.name}",
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=10,
            client_id=f"mats-gateway-{self.name}")
        await self._producer.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._consumer.start()
            tasks = [asyncio.create_task(self._publish(), name="publish"),
                     asyncio.create_task(self._publish_alerts(), name="alerts"),
                     asyncio.create_task(self._publish_status(), name="status")]
            await self.connector.start()
            tasks.append(asyncio.create_task(self._consume(), name="consume"))
            tasks.append(asyncio.create_task(self._commit(), name="commit"))
            stopper = asyncio.create_task(stop.wait(), name="stop")
            done, _ = await asyncio.wait([*tasks, stopper],
                                         return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            await self.connector.stop()
            self.state = SessionState.STOPPED
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            # each step bounded: a stop must not hang on a Kafka that went away (what is not
            # committed or published here is done again from the journal after a restart)
            if self._handled:  # what was handled before the stop
                await _bounded(self._consumer.commit(self._handled))
            await _bounded(self._producer.send_and_wait(
                STATUS_TOPIC, self.status().model_dump_json().encode(), key=self.name.encode()))
            await _bounded(self._consumer.stop())
            await _bounded(self._producer.stop())
            self.journal.close()
