"""Execution reports as a broker would send them for a child order, for tests of fill booking."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from mats.blocks import ChildOrder
from mats.executions import ExecType, ExecutionReport, OrdStatus, report_event_id


def report(child: ChildOrder, n: int, exec_type: ExecType, ord_status: OrdStatus, *,
           last_qty: int = 0, last_px: float | None = None, cum_qty: int = 0,
           at: datetime | None = None) -> ExecutionReport:
    """One report of the broker about ``child``; its exec id is ``<child id>/<n>``."""
    exec_id = f"{child.child_order_id}/{n}"
    return ExecutionReport(
        event_id=report_event_id(child.gateway, exec_id), journey_id=child.journey_id,
        order_id=child.order_id, child_order_id=child.child_order_id, gateway=child.gateway,
        exec_id=exec_id, exec_type=exec_type, ord_status=ord_status, symbol=child.symbol,
        side=child.side, order_qty=child.quantity, last_qty=last_qty, last_px=last_px,
        cum_qty=cum_qty, leaves_qty=max(0, child.quantity - cum_qty),
        transact_time=at or datetime.now(UTC))


def fills(child: ChildOrder, seed: int, *, share: float = 1.0, parts: int = 3,
          end: OrdStatus | None = None) -> list[ExecutionReport]:
    """The reports of a child order worked in ``parts`` fills for ``share`` of its quantity,
    at prices around its reference price (seeded): new, the fills, and, when it is not all
    filled, a last report ending it with ``end`` (default: cancelled)."""
    rng = random.Random(seed)
    total = max(1, int(child.quantity * share)) if share > 0 else 0
    out = [report(child, 0, ExecType.NEW, OrdStatus.NEW)]
    cum = 0
    for k in range(parts):
        q = total - cum if k == parts - 1 else rng.randint(0, total - cum)
        if q <= 0:
            continue
        cum += q
        px = round(child.reference_price * (1 + rng.uniform(-0.002, 0.002)), 2)
        done = cum == child.quantity
        out.append(report(child, k + 1, ExecType.FILL if done else ExecType.PARTIAL_FILL,
                          OrdStatus.FILLED if done else OrdStatus.PARTIALLY_FILLED,
                          last_qty=q, last_px=px, cum_qty=cum))
    if cum < child.quantity:
        status = end or OrdStatus.CANCELLED
        kind = {OrdStatus.CANCELLED: ExecType.CANCELLED, OrdStatus.EXPIRED: ExecType.EXPIRED,
                OrdStatus.DONE_FOR_DAY: ExecType.DONE_FOR_DAY}.get(status, ExecType.CANCELLED)
        out.append(report(child, parts + 1, kind, status, cum_qty=cum))
    return out
