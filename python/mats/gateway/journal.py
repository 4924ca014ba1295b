"""The gateway's own record of its orders and of the broker's reports (SQLite, in its run folder).

It is what lets a gateway die at any moment and come back without sending an order twice or
losing a fill:

* every child order is written here (``pending``) before it goes to the broker and marked
  ``sent`` once the broker has it; only then is its Kafka offset committed. After a restart,
  an order read again from Kafka that is already here is not sent again, and a ``pending`` one
  (the gateway died while sending it) is asked about (FIX OrderStatusRequest) instead of being
  sent blind;
* every request id the gateway gave the broker (ClOrdID: the child order id for the order,
  ``<child order id>.<n>`` for its cancels and replaces) maps back to the child order and its
  journey;
* every broker report is written here, synchronously, as it arrives and before the gateway
  tells the broker's session it has it (so a report the session will not deliver again is
  never only in memory); it is published to Kafka from here (an outbox) and marked published
  after Kafka acknowledged it. Reports are known by exec id: one that comes again is dropped.

:meth:`Journal.ingest` decides what a report means for its order (:class:`Outcome`). The
journal is used from two threads (the event loop and the FIX engine's), so every method takes
its lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from mats.blocks import ChildOrder
from mats.executions import TERMINAL, ExecutionReport, OrdStatus, report_event_id
from mats.gateway.models import BrokerReport, exec_type_of, ord_status_of

__all__ = ["Ingested", "Journal", "OrderRecord", "Outcome", "Pending", "RequestRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    child_order_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    journey_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    limit_price REAL,
    cl_ord_id TEXT NOT NULL,
    state TEXT NOT NULL,
    cum_qty INTEGER NOT NULL DEFAULT 0,
    ord_status TEXT,
    requests INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS requests (
    cl_ord_id TEXT PRIMARY KEY,
    child_order_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    request_id TEXT,
    state TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS requests_by_id ON requests (child_order_id, request_id);
CREATE TABLE IF NOT EXISTS reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    exec_id TEXT NOT NULL UNIQUE,
    child_order_id TEXT,
    payload TEXT,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Outcome(StrEnum):
    """What a broker report turned out to be."""

    PUBLISH = "publish"  # a new report of a known order: to Kafka
    DUPLICATE = "duplicate"  # an exec id seen before (a resend): dropped
    UNKNOWN = "unknown"  # a ClOrdID the gateway never sent: dropped, alerted
    STALE = "stale"  # arrived after a later state of its order (out of order): dropped, alerted
    STATUS = "status"  # an order-status answer or a pending state: used, not published
    INVALID = "invalid"  # cannot be a MATS execution report (no price on a fill...): alerted


@dataclass
class OrderRecord:
    """One child order as the gateway knows it."""

    child_order_id: str
    order_id: str
    journey_id: str
    symbol: str
    side: str
    quantity: int
    limit_price: float | None
    cl_ord_id: str  # the id the broker knows the order by now (changes with each replace)
    state: str  # pending (maybe not at the broker), sent, done (terminal)
    cum_qty: int = 0
    ord_status: str | None = None
    requests: int = 0  # cancel and replace requests made so far

    @property
    def is_open(self) -> bool:
        return self.state != "done"


@dataclass(frozen=True)
class RequestRecord:
    """One id given to the broker: the order's own, or a cancel's or replace's."""

    cl_ord_id: str
    child_order_id: str
    kind: str  # new, cancel, replace
    request_id: str | None


class Pending(NamedTuple):
    """A report waiting in the outbox: its exec id, Kafka key (block id) and JSON."""

    exec_id: str
    key: bytes
    payload: bytes


@dataclass
class Ingested:
    """The result of :meth:`Journal.ingest`."""

    outcome: Outcome
    report: ExecutionReport | None = None  # for PUBLISH
    pending: Pending | None = None  # for PUBLISH: what goes to Kafka
    order: OrderRecord | None = None
    request: RequestRecord | None = None
    message: str = ""
    alerts: list[str] = field(default_factory=list)  # worth telling even when published


class Journal:
    """The gateway's SQLite record (see the module docstring).

    Parameters
    ----------
    path
        The database file (created with its folder when missing).
    gateway
        The gateway's name: part of every report's event id.
    """

    def __init__(self, path: Path, gateway: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.gateway = gateway
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # WAL without fsync on every commit: a commit survives the process dying (the OS has
        # it), which is the failure the gateway is built for; a power cut is the broker's
        # store's and Kafka's business.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        self._orders: dict[str, OrderRecord] = {}
        self._requests: dict[str, RequestRecord] = {}
        self._exec_ids: set[str] = set()
        self._open: set[str] = set()  # child order ids not done
        self._load()

    def _load(self) -> None:
        for row in self._db.execute(
                "SELECT child_order_id, order_id, journey_id, symbol, side, quantity, "
                "limit_price, cl_ord_id, state, cum_qty, ord_status, requests FROM orders"):
            rec = OrderRecord(*row)
            self._orders[rec.child_order_id] = rec
            if rec.is_open:
                self._open.add(rec.child_order_id)
        for cl, child, kind, request_id in self._db.execute(
                "SELECT cl_ord_id, child_order_id, kind, request_id FROM requests"):
            self._requests[cl] = RequestRecord(cl, child, kind, request_id)
        self._exec_ids = {r[0] for r in self._db.execute("SELECT exec_id FROM reports")}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ orders and requests

    def order(self, child_order_id: str) -> OrderRecord | None:
        with self._lock:
            return self._orders.get(child_order_id)

    def request(self, cl_ord_id: str) -> RequestRecord | None:
        with self._lock:
            return self._requests.get(cl_ord_id)

    def open_orders(self) -> list[OrderRecord]:
        with self._lock:
            return [self._orders[c] for c in self._open]

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def add_orders(self, orders: Iterable[ChildOrder]) -> list[OrderRecord]:
        """Record new child orders as ``pending`` (their ClOrdID is the child order id)."""
        recs = [OrderRecord(child_order_id=o.child_order_id, order_id=o.order_id,
                            journey_id=o.journey_id, symbol=o.symbol, side=o.side,
                            quantity=o.quantity, limit_price=o.limit_price,
                            cl_ord_id=o.child_order_id, state="pending") for o in orders]
        with self._tx() as db:
            db.executemany(
                "INSERT INTO orders (child_order_id, order_id, journey_id, symbol, side, "
                "quantity, limit_price, cl_ord_id, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.child_order_id, r.order_id, r.journey_id, r.symbol, r.side, r.quantity,
                  r.limit_price, r.cl_ord_id, r.state) for r in recs])
            db.executemany(
                "INSERT INTO requests (cl_ord_id, child_order_id, kind, request_id, state) "
                "VALUES (?, ?, 'new', NULL, 'pending')",
                [(r.cl_ord_id, r.child_order_id) for r in recs])
            for r in recs:
                self._orders[r.child_order_id] = r
                self._open.add(r.child_order_id)
                self._requests[r.cl_ord_id] = RequestRecord(r.cl_ord_id, r.child_order_id,
                                                            "new", None)
        return recs

    def mark_sent(self, child_order_ids: Iterable[str]) -> None:
        """The broker has these orders (sent through its session, or acknowledged)."""
        with self._tx() as db:
            ids = [c for c in child_order_ids
                   if c in self._orders and self._orders[c].state == "pending"]
            db.executemany("UPDATE orders SET state = 'sent' WHERE child_order_id = ? "
                           "AND state = 'pending'", [(c,) for c in ids])
            for c in ids:
                self._orders[c].state = "sent"

    def has_request(self, child_order_id: str, request_id: str) -> bool:
        with self._lock:
            return self._db.execute(
                "SELECT 1 FROM requests WHERE child_order_id = ? AND request_id = ?",
                (child_order_id, request_id)).fetchone() is not None

    def add_request(self, child_order_id: str, kind: str, request_id: str) -> RequestRecord:
        """A new id for a cancel or replace of an order: ``<child order id>.<n>``."""
        with self._tx() as db:
            rec = self._orders[child_order_id]
            rec.requests += 1
            cl = f"{child_order_id}.{rec.requests}"
            db.execute("UPDATE orders SET requests = ? WHERE child_order_id = ?",
                       (rec.requests, child_order_id))
            db.execute("INSERT INTO requests (cl_ord_id, child_order_id, kind, request_id, "
                       "state) VALUES (?, ?, ?, ?, 'sent')", (cl, child_order_id, kind,
                                                            request_id))
            req = RequestRecord(cl, child_order_id, kind, request_id)
            self._requests[cl] = req
            return req

    def _save_order(self, db: sqlite3.Connection, rec: OrderRecord) -> None:
        if not rec.is_open:
            self._open.discard(rec.child_order_id)
        db.execute("UPDATE orders SET cl_ord_id = ?, state = ?, cum_qty = ?, ord_status = ?, "
                   "quantity = ?, limit_price = ? WHERE child_order_id = ?",
                   (rec.cl_ord_id, rec.state, rec.cum_qty, rec.ord_status, rec.quantity,
                    rec.limit_price, rec.child_order_id))

    def close_order(self, child_order_id: str, status: OrdStatus) -> None:
        """Mark an order done without a report (the gateway rejected it itself)."""
        with self._tx() as db:
            rec = self._orders[child_order_id]
            rec.state, rec.ord_status = "done", str(status)
            self._save_order(db, rec)

    # ------------------------------------------------------------------ reports

    def ingest(self, report: BrokerReport, *, now: datetime | None = None) -> Ingested:
        """Take one broker report: what it means, and the MATS report to publish if any.

        A report to publish is in the outbox when this returns (:meth:`unpublished`).
        """
        now = now or datetime.now(UTC)
        with self._lock:
            if report.exec_id in self._exec_ids:
                return Ingested(Outcome.DUPLICATE, message=f"exec id {report.exec_id} again")
            req = self._requests.get(report.cl_ord_id)
            if req is None and report.orig_cl_ord_id:
                req = self._requests.get(report.orig_cl_ord_id)
            if req is None:
                return Ingested(Outcome.UNKNOWN, message=(
                    f"report {report.exec_id} for unknown ClOrdID {report.cl_ord_id!r}"))
            rec = self._orders[req.child_order_id]
            with self._tx() as db:
                return self._apply(db, report, req, rec, now)

    def _remember(self, db: sqlite3.Connection, exec_id: str, child: str | None,
                  payload: str | None) -> None:
        db.execute("INSERT INTO reports (exec_id, child_order_id, payload, published) "
                   "VALUES (?, ?, ?, ?)", (exec_id, child, payload, 0 if payload else 1))
        self._exec_ids.add(exec_id)

    def _apply(self, db: sqlite3.Connection, report: BrokerReport, req: RequestRecord,
               rec: OrderRecord, now: datetime) -> Ingested:
        unknown_to_broker = report.exec_type == "I" and report.ord_status == "8"
        if rec.state == "pending" and not unknown_to_broker:  # the broker has it
            rec.state = "sent"
        kind = exec_type_of(report)
        status = ord_status_of(report.ord_status)
        fill = report.exec_type in ("F", "1", "2") and report.last_qty > 0
        if kind is None or status is None:
            self._save_order(db, rec)
            self._remember(db, report.exec_id, rec.child_order_id, None)
            return Ingested(Outcome.STATUS, order=rec, request=req)
        was_done = rec.state == "done"
        stale = report.cum_qty < rec.cum_qty or (was_done and not fill)
        alerts: list[str] = []
        if fill:
            if stale:
                # a fill is money whatever order it came in: published, state not moved back
                alerts.append(f"fill {report.exec_id} of {rec.child_order_id} arrived out of "
                              f"order (cum {report.cum_qty} after {rec.cum_qty})")
            rec.cum_qty = max(rec.cum_qty, report.cum_qty)
        elif stale:
            self._remember(db, report.exec_id, rec.child_order_id, None)
            self._save_order(db, rec)
            return Ingested(Outcome.STALE, order=rec, request=req, message=(
                f"report {report.exec_id} ({report.exec_type}/{report.ord_status}) of "
                f"{rec.child_order_id} arrived after its order was "
                f"{rec.ord_status or 'further on'} (cum {rec.cum_qty}): dropped"))
        if not stale:
            if report.exec_type == "5":  # replaced: the broker knows the order by its new id
                rec.cl_ord_id = report.cl_ord_id
                rec.quantity = report.order_qty
            rec.ord_status = str(status)
            if status in TERMINAL or (status is OrdStatus.REPLACED and report.leaves_qty == 0
                                      and report.cum_qty >= report.order_qty):
                rec.state = "done"
        try:
            out = ExecutionReport(
                event_id=report_event_id(self.gateway, report.exec_id),
                journey_id=rec.journey_id, order_id=rec.order_id,
                child_order_id=rec.child_order_id, gateway=self.gateway,
                exec_id=report.exec_id, exec_type=kind, ord_status=status, symbol=rec.symbol,
                side=rec.side, order_qty=report.order_qty,
                last_qty=report.last_qty if fill else 0,
                last_px=report.last_px if fill else None, cum_qty=report.cum_qty,
                leaves_qty=report.leaves_qty,
                avg_px=report.avg_px if report.avg_px else None, text=report.text,
                broker_order_id=report.broker_order_id,
                transact_time=report.transact_time or now, received_at=now)
        except ValidationError as e:
            self._remember(db, report.exec_id, rec.child_order_id, None)
            self._save_order(db, rec)
            first = e.errors(include_url=False)[0]
            return Ingested(Outcome.INVALID, order=rec, request=req, message=(
                f"report {report.exec_id} of {rec.child_order_id} is not a valid execution "
                f"report: {'.'.join(map(str, first['loc']))}: {first['msg']}"))
        payload = out.model_dump_json()
        self._remember(db, report.exec_id, rec.child_order_id, payload)
        self._save_order(db, rec)
        return Ingested(Outcome.PUBLISH, report=out, order=rec, request=req, alerts=alerts,
                        pending=Pending(out.exec_id, out.order_id.encode(), payload.encode()))

    def record_report(self, out: ExecutionReport) -> bool:
        """Put a report the gateway made itself (a reject of its own) in the outbox.

        Returns False when its exec id is already there.
        """
        with self._tx() as db:
            if out.exec_id in self._exec_ids:
                return False
            self._remember(db, out.exec_id, out.child_order_id, out.model_dump_json())
            rec = self._orders.get(out.child_order_id)
            if rec is not None and out.is_terminal:
                rec.state, rec.ord_status = "done", str(out.ord_status)
                self._save_order(db, rec)
            return True

    def unpublished(self) -> list[ExecutionReport]:
        """Reports in the outbox that Kafka has not acknowledged yet, oldest first."""
        return [ExecutionReport.model_validate_json(p.payload) for p in self.pending()]

    def pending(self) -> list[Pending]:
        """The outbox as it goes to Kafka, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT exec_id, payload FROM reports WHERE published = 0 "
                                    "ORDER BY seq").fetchall()
        out = []
        for exec_id, payload in rows:
            key = json.loads(payload)["order_id"]
            out.append(Pending(exec_id, str(key).encode(), str(payload).encode()))
        return out

    def mark_published(self, exec_ids: Iterable[str]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE reports SET published = 1 WHERE exec_id = ?",
                           [(e,) for e in exec_ids])

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                       "DO UPDATE SET value = excluded.value", (key, value))
