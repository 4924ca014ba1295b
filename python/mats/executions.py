"""The gateway contract: what goes to a gateway and what comes back from the broker.

A gateway (one process per broker, ``mats gateway run NAME``) reads its order topic,
``mats.orders.<gateway>``, keyed by block id. On it are:

* :class:`mats.blocks.ChildOrder`: a new order (the block, or its share for this broker's
  accounts);
* :class:`CancelRequest`: cancel what is still open of a child order;
* :class:`ReplaceRequest`: change an open child order's quantity or limit price.

It writes what the broker says back to ``mats.exec-reports``, keyed by block id, as
:class:`ExecutionReport` messages, one per report the broker sent (new, partial fill, fill,
cancelled, replaced, rejected, expired). The stream app's ``executions`` agent books the fills
to the block's accounts at the block's average price and closes the child order when it is done.

Execution ids are the broker's (FIX ExecID, tag 17), unique per gateway: the stream app books
each ``(child_order_id, exec_id)`` once, so a report sent again (a FIX resend, a gateway restart)
is harmless. The event id of a report depends only on its gateway and exec id
(:func:`report_event_id`).

Nothing here knows about Faust, Kafka clients or FIX.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, model_validator

from mats.ids import text_uuid5
from mats.models import Frozen, Identifier, Price

__all__ = [
    "EXEC_REPORTS_TOPIC",
    "TERMINAL",
    "CancelRequest",
    "ExecType",
    "ExecutionReport",
    "OrdStatus",
    "ReplaceRequest",
    "report_event_id",
    "request_event_id",
]

EXEC_REPORTS_TOPIC = "mats.exec-reports"

_NAMESPACE = uuid.UUID("0b6f3f5e-7c1d-4b8a-a0e4-52d9c1e7a316")

Quantity = Annotated[int, Field(ge=0, le=10**12)]


def report_event_id(gateway: str, exec_id: str) -> str:
    """The event id of an execution report: the same for the same gateway and exec id."""
    return text_uuid5(_NAMESPACE, "exec", gateway, exec_id)


def request_event_id(child_order_id: str, kind: str, request_id: str) -> str:
    """The event id of a cancel or replace request of a child order."""
    return text_uuid5(_NAMESPACE, kind, child_order_id, request_id)


class ExecType(StrEnum):
    """What happened (FIX ExecType, tag 150)."""

    NEW = "new"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    CANCELLED = "cancelled"
    REPLACED = "replaced"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DONE_FOR_DAY = "done_for_day"


class OrdStatus(StrEnum):
    """Where the order stands after the report (FIX OrdStatus, tag 39)."""

    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REPLACED = "replaced"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DONE_FOR_DAY = "done_for_day"
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"


# Statuses after which the order will not fill any more.
TERMINAL: frozenset[OrdStatus] = frozenset({
    OrdStatus.FILLED, OrdStatus.CANCELLED, OrdStatus.REJECTED, OrdStatus.EXPIRED,
    OrdStatus.DONE_FOR_DAY})


class ExecutionReport(Frozen):
    """One report of the broker about a child order (``mats.exec-reports``, keyed by block id).

    ``last_qty``/``last_px`` are the shares and price of this execution (zero and None for a
    report that is not a fill); ``cum_qty``, ``leaves_qty`` and ``avg_px`` are the order's
    totals after it, as the broker keeps them.
    """

    kind: Literal["execution_report"] = "execution_report"
    event_id: str
    journey_id: Identifier
    order_id: Identifier  # the block's
    child_order_id: Identifier
    gateway: Identifier
    exec_id: Annotated[str, Field(min_length=1, max_length=128)]
    exec_type: ExecType
    ord_status: OrdStatus
    symbol: Identifier
    side: Literal["buy", "sell"]
    order_qty: Quantity
    last_qty: Quantity = 0
    last_px: Price | None = None
    cum_qty: Quantity = 0
    leaves_qty: Quantity = 0
    avg_px: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    text: str = ""
    broker_order_id: str | None = None
    transact_time: AwareDatetime
    received_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _fill_has_price(self) -> ExecutionReport:
        is_fill = self.exec_type in (ExecType.PARTIAL_FILL, ExecType.FILL)
        if is_fill and (self.last_qty <= 0 or self.last_px is None):
            raise ValueError(f"a {self.exec_type} report needs last_qty > 0 and last_px")
        if not is_fill and self.last_qty:
            raise ValueError(f"a {self.exec_type} report carries no last_qty")
        return self

    @property
    def is_fill(self) -> bool:
        return self.exec_type in (ExecType.PARTIAL_FILL, ExecType.FILL)

    @property
    def is_terminal(self) -> bool:
        return self.ord_status in TERMINAL


class CancelRequest(Frozen):
    """Cancel what is still open of a child order (on ``mats.orders.<gateway>``)."""

    kind: Literal["cancel_request"] = "cancel_request"
    event_id: str
    journey_id: Identifier
    order_id: Identifier
    child_order_id: Identifier
    request_id: Identifier
    gateway: Identifier
    requested_at: AwareDatetime
    reason: str = ""


class ReplaceRequest(Frozen):
    """Change an open child order's total quantity and/or limit price."""

    kind: Literal["replace_request"] = "replace_request"
    event_id: str
    journey_id: Identifier
    order_id: Identifier
    child_order_id: Identifier
    request_id: Identifier
    gateway: Identifier
    quantity: Annotated[int, Field(gt=0, le=10**12)]
    limit_price: Price | None = None
    requested_at: AwareDatetime
    reason: str = ""
