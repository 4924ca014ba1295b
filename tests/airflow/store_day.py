"""A trading day in a SQL store, for the end-of-day tests: the sample book's block orders decided
by the desk (the Rust core, as the stream app runs it), each child order worked by a seeded
broker stand-in (an acknowledgement, one to three fills, a cancel when it is not all filled),
the fills booked by the desk, and every message the stream app's sink would record written to
the store as the sink writes it (:func:`mats.store.event_from_message`).

Plain Python over ``mats``: both virtualenvs import it (the Airflow one runs it as a script's
neighbour, the streams one by path).
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from mats import kafka
from mats.blocks import ChildOrder
from mats.config import load_book, load_day, load_orders
from mats.desk import Desk, SourceRef
from mats.executions import (
    EXEC_REPORTS_TOPIC,
    ExecType,
    ExecutionReport,
    OrdStatus,
    report_event_id,
)
from mats.store import Event, Store, event_from_message

BLOCKS_TOPIC = "mats.blocks"
# what the stream app's sink reads (mats.store.sink_topic_names), the gateways' topics aside
SINK_TOPICS = ("mats.blocks", "mats.allocations", "mats.exec-reports", "mats.account-fills",
               "mats.alerts", "mats.dlq")


def _sunk(topic: str) -> bool:
    return topic in SINK_TOPICS or topic.startswith(kafka.GATEWAY_TOPIC_PREFIX)


def _report(child: ChildOrder, n: int, exec_type: ExecType, status: OrdStatus, at: datetime,
            *, last_qty: int = 0, last_px: float | None = None, cum: int = 0
            ) -> ExecutionReport:
    exec_id = f"{child.child_order_id}/{n}"
    return ExecutionReport(
        event_id=report_event_id(child.gateway, exec_id), journey_id=child.journey_id,
        order_id=child.order_id, child_order_id=child.child_order_id, gateway=child.gateway,
        exec_id=exec_id, exec_type=exec_type, ord_status=status, symbol=child.symbol,
        side=child.side, order_qty=child.quantity, last_qty=last_qty, last_px=last_px,
        cum_qty=cum, leaves_qty=max(0, child.quantity - cum), transact_time=at)


def broker_reports(child: ChildOrder, rng: random.Random, start: datetime
                   ) -> list[ExecutionReport]:
    """What a broker sends for ``child``: ack, fills, and a cancel when not all filled."""
    share = 1.0 if rng.random() < 0.5 else rng.uniform(0.4, 0.9)
    total = max(1, int(child.quantity * share))
    out = [_report(child, 0, ExecType.NEW, OrdStatus.NEW, start + timedelta(seconds=1))]
    cum = 0
    parts = rng.randint(1, 3)
    for k in range(parts):
        q = total - cum if k == parts - 1 else rng.randint(1, max(1, (total - cum) // 2))
        if q <= 0:
            continue
        cum += q
        px = round(child.reference_price * (1 + rng.uniform(-0.002, 0.002)), 2)
        done = cum == child.quantity
        out.append(_report(child, k + 1, ExecType.FILL if done else ExecType.PARTIAL_FILL,
                           OrdStatus.FILLED if done else OrdStatus.PARTIALLY_FILLED,
                           start + timedelta(minutes=3 * (k + 1)), last_qty=q, last_px=px,
                           cum=cum))
    if cum < child.quantity:
        out.append(_report(child, parts + 1, ExecType.CANCELLED, OrdStatus.CANCELLED,
                           start + timedelta(minutes=3 * (parts + 1)), cum=cum))
    return out


def day_events(book_dir: str | Path, *, seed: int = 13) -> list[Event]:
    """The events the sink would have stored over the book's trading day (``day.yaml``)."""
    book_dir = Path(book_dir)
    book = load_book(book_dir)
    day = load_day(book_dir / "day.yaml")
    orders = load_orders(book_dir / day.orders)
    desk = Desk(book)
    rng = random.Random(seed)
    offsets: Counter[str] = Counter()
    events: list[Event] = []

    def keep(topic: str, key: str, value: str, when: datetime) -> SourceRef:
        ref = SourceRef(topic=topic, partition=0, offset=offsets[topic])
        offsets[topic] += 1
        if _sunk(topic):  # exposure snapshots, account states: not the sink's
            events.append(event_from_message(topic, 0, ref.offset, value, key=key,
                                             timestamp=when))
        return ref

    for i, order in enumerate(orders):
        when = day.as_of + timedelta(seconds=2 * i)
        source = keep(BLOCKS_TOPIC, order.order_id, order.model_dump_json(), when)
        entry = desk.block(order, source, when)
        children = []
        for m in entry.out:
            keep(m.topic, m.key, m.value, when)
            if '"kind":"child_order"' in m.value:
                children.append(ChildOrder.model_validate_json(m.value))
        for child in children:
            for report in broker_reports(child, rng, when):
                source = keep(EXEC_REPORTS_TOPIC, report.gateway, report.model_dump_json(),
                              report.transact_time)
                for m in desk.execution(report, source, report.transact_time).out:
                    keep(m.topic, m.key, m.value, report.transact_time)
    return events


def record_day(book_dir: str | Path, store_url: str, *, seed: int = 13) -> dict[str, int]:
    """Write the day's events into the store at ``store_url``; how many of each kind stored.

    The store keeps the first event of an id: the sample day repeats an order id (VAL-0002,
    which layer 1 refuses), and the refusal's events have the ids of the first block's."""
    first: dict[str, Event] = {}
    for e in day_events(book_dir, seed=seed):
        first.setdefault(e.event_id, e)  # as the store keeps them: the first one
    events = list(first.values())
    with Store(store_url) as store:
        store.record(events)
    return dict(Counter(e.kind for e in events))
