"""Block processing's output: what one decided block puts on Kafka, as plain functions.

The stream app's ``blocks`` agent runs each block through the core once
(:meth:`mats.Engine.process`) and hands the decision to :func:`block_messages`, which says what to
publish:

* one :class:`AllocationInstruction` on ``mats.allocations``, keyed by block id: every lot of
  the block (account, allocated and placed quantity, line status) and the decision's status, for
  every block, accepted or not;
* for an accepted block only, one :class:`ChildOrder` per broker of the accounts that got shares,
  on that broker's gateway topic ``mats.orders.<broker>``, keyed by block id: the block itself
  (the total placed for those accounts), not one order per account;
* :class:`Alert` messages on ``mats.alerts``: a ``critical`` one keyed by block id for a refused
  block (stage ``l1``, ``allocation`` or ``l2``), and one per lot that layer 2 blocked
  (``critical``), reduced or dropped (``warning``), keyed by account id; each with the reason
  codes, limits and values.

Every message carries the block's journey id and an event id that depends only on the block's id
and the kind of event (:func:`event_id`), so a block processed again yields the same ids and
a consumer can drop the repeats.

Market data (``mats.marketdata``) is checked here too: :func:`validate_tick` turns one message
into a :class:`PriceTick` or raises :class:`mats.intake.SignalError`, so that a bad tick is
dead-lettered with a reason as a bad signal is.

Nothing here knows about Faust or Kafka clients.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, ValidationError

from mats import kafka
from mats.config import pydantic_problem, render_loc
from mats.ids import text_uuid5
from mats.intake import (
    INVALID_FIELD,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    NOT_JSON,
    UNKNOWN_SYMBOL,
    KnownIds,
    Problem,
    SignalError,
)
from mats.models import AllocationLine, BlockOrder, Book, Check, Decision, Frozen, Identifier, Price

__all__ = [
    "ALERTS_TOPIC",
    "ALLOCATIONS_TOPIC",
    "Alert",
    "AllocationInstruction",
    "ChildOrder",
    "Lot",
    "Outgoing",
    "PriceTick",
    "Reason",
    "Severity",
    "block_messages",
    "brokers_of",
    "event_id",
    "validate_tick",
]

ALLOCATIONS_TOPIC = "mats.allocations"
ALERTS_TOPIC = "mats.alerts"

# Line statuses that layer 2 gave a lot, and how loud each one's alert is.
_L2_LOT_STATUSES = ("blocked", "reduced", "dropped")

# Fixed namespace for event ids: uuid5 of (order id, kind, part) is the same in every process.
_EVENT_NAMESPACE = uuid.UUID("5d0c7a8e-2f4b-4f6e-9a51-3c1b8e7d9f20")


def event_id(order_id: str, kind: str, part: str = "") -> str:
    """The id of one event of a block: the same for the same order id, kind and part, always.

    ``part`` tells apart events of one kind for one block (the broker of a child order, the
    account of a lot alert).
    """
    return text_uuid5(_EVENT_NAMESPACE, order_id, kind, part)


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"


class Lot(Frozen):
    """One account's lot in a block: what allocation gave it and what is placed for it."""

    account_id: str
    broker: str
    allocated: int
    quantity: int  # placed, after layer 2
    status: str  # the line's status: ok, capped, reduced, dropped, blocked


class AllocationInstruction(Frozen):
    """Every lot of one block and the decision on it (``mats.allocations``, keyed by block id)."""

    kind: Literal["allocation_instruction"] = "allocation_instruction"
    event_id: str
    journey_id: str
    order_id: str
    strategy: str
    symbol: str
    side: str
    status: str  # the decision's: accepted or rejected
    stage: str | None  # where a rejected block stopped: l1, allocation or l2
    requested_quantity: int
    placed_quantity: int
    reference_price: float
    live_price: float | None
    limit_price: float | None
    decided_at: AwareDatetime
    lots: list[Lot]


class ChildOrder(Frozen):
    """The block as sent to one broker: its accounts' placed total (``mats.orders.<broker>``).

    ``allocations`` lists the accounts it is for, so the gateway can give the broker the
    allocation with the order; the order itself is one order for ``quantity``.
    """

    kind: Literal["child_order"] = "child_order"
    event_id: str
    journey_id: str
    order_id: str  # the block's
    child_order_id: str
    gateway: str
    symbol: str
    side: str
    quantity: int
    limit_price: float | None
    reference_price: float
    decided_at: AwareDatetime
    allocations: list[Lot]


class Reason(Frozen):
    """One reason of an alert: the check's code, limit and value (and the account it is about)."""

    code: str
    limit: float | None = None
    value: float | None = None
    cap: float | None = None
    account_id: str | None = None
    message: str = ""


class Alert(Frozen):
    """A refused block (``scope`` block) or a lot layer 2 blocked, cut or dropped (``lot``)."""

    kind: Literal["alert"] = "alert"
    event_id: str
    journey_id: str
    order_id: str
    severity: Severity
    scope: Literal["block", "lot"]
    stage: str | None
    account_id: str | None = None
    strategy: str
    symbol: str
    side: str
    status: str  # the block's (scope block) or the lot's (scope lot) status
    allocated: int | None = None
    quantity: int | None = None
    reasons: list[Reason]
    message: str
    decided_at: AwareDatetime


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: topic, key and the message."""

    topic: str
    key: str
    message: Frozen  # AllocationInstruction, ChildOrder, Alert, or a later stage's message

    def value(self) -> bytes:
        return self.message.model_dump_json().encode()


def brokers_of(book: Book) -> dict[str, str]:
    """Each account's broker (its ``broker`` field): the gateway its share of a block goes to."""
    return {a.account_id: a.broker for a in book.accounts}


def _reason(check: Check, account_id: str | None = None) -> Reason:
    return Reason(code=check.code, limit=check.limit, value=check.value, cap=check.cap,
                  account_id=account_id, message=check.message)


def _lot_reasons(line: AllocationLine) -> list[Reason]:
    if line.l2_breaches:
        return [_reason(c, line.account_id) for c in line.l2_breaches]
    if line.binding is not None:
        return [_reason(line.binding, line.account_id)]
    return []


def _lots(decision: Decision, brokers: Mapping[str, str]) -> list[Lot]:
    return [Lot(account_id=ln.account_id, broker=brokers[ln.account_id], allocated=ln.allocated,
                quantity=ln.quantity, status=ln.status)
            for ln in decision.lines if ln.allocated > 0 or ln.quantity > 0]


def _block_reasons(decision: Decision) -> list[Reason]:
    if decision.stage == "l1":
        return [_reason(c) for c in decision.l1_breaches]
    if decision.stage == "allocation":
        return [_reason(c) for c in decision.allocation_breaches]
    return [_reason(c, ln.account_id) for ln in decision.lines for c in ln.l2_breaches]


def _describe(reasons: list[Reason]) -> str:
    parts = []
    for r in reasons:
        text = r.code
        if r.account_id:
            text = f"{r.account_id} {text}"
        if r.value is not None and r.limit is not None:
            text += f" ({r.value:g} > {r.limit:g})"
        parts.append(text)
    return ", ".join(parts) if parts else "no reason given"


def block_messages(decision: Decision, brokers: Mapping[str, str], *,
                   order: BlockOrder | None = None,
                   decided_at: datetime) -> list[Outgoing]:
    """What to publish for one decided block: instruction, child orders, alerts.

    Parameters
    ----------
    decision
        The core's decision on the block (``Engine.decide``, or ``load_decision`` of
        ``Engine.process``).
    brokers
        Each account's broker (:func:`brokers_of` the book); the gateway name is the broker id.
    order
        The block order itself, for what the decision does not repeat (the limit price).
    decided_at
        When the block was decided; carried by every message, not part of any event id.

    Returns
    -------
    list[Outgoing]
        The allocation instruction, then the child orders (brokers in name order; none unless
        the block was accepted), then the alerts.
    """
    oid = decision.order_id
    limit_price = order.limit_price if order is not None else None
    lots = _lots(decision, brokers)
    out = [Outgoing(ALLOCATIONS_TOPIC, oid, AllocationInstruction(
        event_id=event_id(oid, "allocation_instruction"), journey_id=decision.journey_id,
        order_id=oid, strategy=decision.strategy, symbol=decision.symbol,
        side=str(decision.side), status=decision.status, stage=decision.stage,
        requested_quantity=decision.requested_quantity,
        placed_quantity=decision.placed_quantity, reference_price=decision.reference_price,
        live_price=decision.live_price, limit_price=limit_price, decided_at=decided_at,
        lots=lots))]

    # Both risk layers passed only when the core accepted the block: nothing else is ever
    # routed to a gateway, whatever quantities the lines show.
    if decision.status == "accepted" and decision.stage is None:
        by_broker: dict[str, list[Lot]] = {}
        for lot in lots:
            if lot.quantity > 0:
                by_broker.setdefault(lot.broker, []).append(lot)
        for broker in sorted(by_broker):
            placed = by_broker[broker]
            out.append(Outgoing(kafka.gateway_topic(broker).name, oid, ChildOrder(
                event_id=event_id(oid, "child_order", broker), journey_id=decision.journey_id,
                order_id=oid, child_order_id=f"{oid}:{broker}", gateway=broker,
                symbol=decision.symbol, side=str(decision.side),
                quantity=sum(lot.quantity for lot in placed), limit_price=limit_price,
                reference_price=decision.reference_price, decided_at=decided_at,
                allocations=placed)))

    common: dict[str, Any] = dict(journey_id=decision.journey_id, order_id=oid,
                                  stage=decision.stage, strategy=decision.strategy,
                                  symbol=decision.symbol, side=str(decision.side),
                                  decided_at=decided_at)
    if decision.status != "accepted":
        reasons = _block_reasons(decision)
        out.append(Outgoing(ALERTS_TOPIC, oid, Alert(
            event_id=event_id(oid, "alert.block"), severity=Severity.CRITICAL, scope="block",
            status=decision.status, reasons=reasons,
            message=f"block {oid} refused at {decision.stage}: {_describe(reasons)}",
            **common)))
    for line in decision.lines:
        if line.status not in _L2_LOT_STATUSES:
            continue
        reasons = _lot_reasons(line)
        if line.status == "blocked" and not line.l2_breaches:
            continue  # blocked only because another lot failed: the block alert says why
        severity = Severity.CRITICAL if line.status == "blocked" else Severity.WARNING
        out.append(Outgoing(ALERTS_TOPIC, line.account_id, Alert(
            event_id=event_id(oid, "alert.lot", line.account_id), severity=severity,
            scope="lot", account_id=line.account_id, status=line.status,
            allocated=line.allocated, quantity=line.quantity, reasons=reasons,
            message=(f"lot of {line.account_id} in block {oid} {line.status} at layer 2: "
                     f"{line.allocated} -> {line.quantity} ({_describe(reasons)})"),
            **common)))
    return out


# ------------------------------------------------------------------------------ market data


class PriceTick(Frozen):
    """One live price on ``mats.marketdata``: ``{"symbol": ..., "price": ..., "ts": ...}``."""

    symbol: Identifier
    price: Price
    ts: AwareDatetime


def _problem(code: str, message: str, loc: tuple[str | int, ...] = ()) -> Problem:
    return Problem(code=code, loc=list(loc), field=render_loc(loc), message=message)


def validate_tick(value: bytes | str | None, known: KnownIds) -> PriceTick:
    """The price a market-data message carries, for a symbol of the book.

    Raises
    ------
    SignalError
        With the codes of :mod:`mats.intake` (``NOT_JSON``, ``NOT_AN_OBJECT``,
        ``MISSING_FIELD``, ``INVALID_FIELD``, ``UNKNOWN_SYMBOL``), one problem per reason.
    """
    if value is None or not value.strip():
        raise SignalError([_problem(NOT_JSON, "empty message")])
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise SignalError([_problem(NOT_JSON, f"not JSON text: {e}")]) from None
    if not isinstance(data, dict):
        raise SignalError([_problem(NOT_AN_OBJECT, "expected a JSON object with symbol, price "
                                    f"and ts, found {type(data).__name__}")])
    try:
        tick = PriceTick.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            loc, message = pydantic_problem([err], PriceTick)
            code = MISSING_FIELD if err["type"] == "missing" else INVALID_FIELD
            problems.append(_problem(code, message, loc))
        raise SignalError(problems) from None
    if tick.symbol not in known.symbols:
        raise SignalError([_problem(UNKNOWN_SYMBOL, f"unknown symbol {tick.symbol!r}: not an "
                                    "instrument of the book", ("symbol",))])
    return tick
