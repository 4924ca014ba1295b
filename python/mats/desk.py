"""The sequenced desk: every event that changes accounts, applied in one order, journaled.

Block orders, execution reports and live prices change the book: reservations, positions, cash,
realised P&L, marks. The stream app hands them to one :class:`Desk`, which applies each through
the Rust core and says what to publish. The desk is deterministic: the same entries in the same
order give the same state, decisions and messages. That is what makes it recoverable:

* every block order and execution report becomes one :class:`JournalEntry` (its position in
  the journal, where it was read, when, the marks that changed since the previous entry, the
  message itself, and everything it published, the *outbox*);
* the stream app keeps the journal in a Faust table backed by a Kafka changelog, one table
  write per event, so an event is in the journal whole or not at all;
* a worker that starts (or takes over after a rebalance) builds the desk from the book and
  replays the journal (:meth:`Desk.replay`): the state it reaches is the state the journal
  describes, with no fill counted twice and none lost;
* an input read again (its offset was not committed when the worker died) is found by where it
  was read (:meth:`Desk.applied`) and not applied again; its outbox is published again, so a
  message lost in the crash is sent, and consumers drop the repeats by event id.

Prices are applied to the engine as they come; their newest value per symbol is kept apart (a
table in the stream app) and the marks that changed since the last entry go into the next
entry, so a replayed block is decided at the marks it was decided at.

Exposure is computed here too, after every fill and every price (the accounts holding the
symbol, and the firm), with :class:`mats.exposure.LimitWatch` raising Warning and Critical alerts
as figures cross their thresholds.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel

from mats.blocks import ChildOrder, Outgoing, PriceTick, block_messages, brokers_of
from mats.engine import Engine, load_decision
from mats.errors import MatsError
from mats.executions import ExecType, ExecutionReport, OrdStatus
from mats.exposure import (
    DEFAULT_WARN_AT,
    ExposureSnapshot,
    LimitAlert,
    LimitWatch,
    account_exposure,
    firm_exposure,
)
from mats.ids import text_uuid5
from mats.models import BlockOrder, Book, Frozen

__all__ = [
    "ACCOUNT_FILLS_TOPIC",
    "EXPOSURE_TOPIC",
    "AccountFillEvent",
    "AccountState",
    "ChildClosed",
    "Desk",
    "ExecutionAlert",
    "JournalEntry",
    "JournalOfAnotherBook",
    "Ledger",
    "Mark",
    "SourceRef",
]

ACCOUNT_FILLS_TOPIC = "mats.account-fills"
ACCOUNT_STATE_TOPIC = "mats.account-state"
EXPOSURE_TOPIC = "mats.exposure"
ALERTS_TOPIC = "mats.alerts"

_NAMESPACE = uuid.UUID("c7e2a9b4-1d3f-4a6b-9c8e-7f5d3b1a2e40")


def _event_id(*parts: object) -> str:
    return text_uuid5(_NAMESPACE, *(str(p) for p in parts))


# ------------------------------------------------------------------------------ messages


class AccountFillEvent(Frozen):
    """One account's share of one execution (``mats.account-fills``, keyed by account id).

    ``quantity`` is what this execution adds (zero when only the account's cost is trued up to
    the child order's new average price); ``filled`` the account's total in the child order;
    ``avg_price`` the child order's average price, every account's; ``cash_delta`` the signed
    change of its cash; ``position``, ``cash`` and ``realized_pnl`` (in the symbol, for the
    day: :class:`Ledger`) its state after the fill.
    """

    kind: Literal["account_fill"] = "account_fill"
    event_id: str
    journey_id: str
    order_id: str
    child_order_id: str
    exec_id: str
    gateway: str
    account_id: str
    symbol: str
    side: str
    quantity: int
    filled: int
    avg_price: float
    cash_delta: float
    position: int
    cash: float
    realized_pnl: float
    booked_at: AwareDatetime


class AccountState(Frozen):
    """An account's live state after a fill or close (``mats.account-state``, compacted, keyed
    by account id): positions, cash, settled and reserved cash, working orders by symbol, and
    the day's realised P&L."""

    kind: Literal["account_state"] = "account_state"
    account_id: str
    journey_id: str  # of the fill or close that moved it
    cash: float
    settled_cash: float
    reserved_cash: float
    positions: dict[str, int]
    open_orders: dict[str, dict[str, float]]
    realized_pnl: float
    as_of: AwareDatetime


class ShortfallLine(Frozen):
    account_id: str
    allocated: int
    filled: int
    shortfall: int
    carried: bool


class ChildClosed(Frozen):
    """A child order ended (filled, cancelled, rejected, expired), with every account's
    shortfall (``mats.account-fills``, keyed by block id)."""

    kind: Literal["child_closed"] = "child_closed"
    event_id: str
    journey_id: str
    order_id: str
    child_order_id: str
    gateway: str
    symbol: str
    side: str
    reason: Literal["done", "cancelled", "expired"]
    ord_status: str
    filled: int
    shortfalls: list[ShortfallLine]
    closed_at: AwareDatetime


class ExecutionAlert(Frozen):
    """An execution report that could not be booked as it came (``mats.alerts``, critical)."""

    kind: Literal["execution_alert"] = "execution_alert"
    event_id: str
    journey_id: str
    order_id: str
    child_order_id: str
    exec_id: str
    gateway: str
    severity: Literal["critical", "warning"]
    code: str
    message: str
    raised_at: AwareDatetime


class SourceRef(Frozen):
    """Where an input was read."""

    topic: str
    partition: int
    offset: int


class Mark(Frozen):
    price: float
    ts: AwareDatetime


class OutMessage(Frozen):
    topic: str
    key: str
    value: str  # the message's JSON


class JournalEntry(Frozen):
    """One applied input: enough to apply it again, and what it published."""

    seq: int
    kind: Literal["block", "execution"]
    book: str  # the fingerprint of the start-of-day book the desk started from
    source: SourceRef
    at: AwareDatetime
    marks: dict[str, Mark]
    payload: str
    out: list[OutMessage]

    def key(self) -> str:
        return journal_key(self.seq)


class JournalOfAnotherBook(MatsError):
    """The journal was begun from another start-of-day book than the desk's: applying its
    entries, or anything after them, to this book would decide otherwise. The desk stops."""


def book_fingerprint(book: Book) -> str:
    """A short hash of a book's content: the journal records which book its desk started from."""
    return hashlib.sha256(book.model_dump_json().encode()).hexdigest()[:16]


def journal_key(seq: int) -> str:
    """The journal table's key of entry ``seq``: fixed width, so keys sort in journal order."""
    return f"{seq:012d}"


# ------------------------------------------------------------------------------ realised P&L


@dataclass
class _Holding:
    qty: int = 0
    basis: float = 0.0  # cost of the open position: positive long, negative (proceeds) short
    realized: float = 0.0


class Ledger:
    """Average-cost positions and realised P&L per account and symbol, from account fills.

    Start-of-day positions are carried at the start-of-day mark, so realised P&L is the day's.
    A fill's signed value is minus its cash change (a buy's cost, a sell's proceeds negated). A
    fill that adds to a position (or opens one) adds its value to the basis; one that reduces it
    realises ``proceeds - average cost x shares`` for the shares it closes, and opens the rest
    the other way. A true-up (no shares, a cost change as the child order's average moves)
    changes the basis if the position is on the child order's side, else the realised P&L.
    """

    def __init__(self, book: Book) -> None:
        self._h: dict[tuple[str, str], _Holding] = {}
        for acct in book.accounts:
            for sym, qty in acct.positions.items():
                mark = book.prices.get(sym, 0.0)
                self._h[(acct.account_id, sym)] = _Holding(qty, qty * mark)

    def book(self, account_id: str, symbol: str, side: str, quantity: int,
             cash_delta: float) -> float:
        """Books one account fill; returns the account's realised P&L in the symbol after it."""
        h = self._h.setdefault((account_id, symbol), _Holding())
        sign = 1 if side == "buy" else -1
        value = -cash_delta
        dq = sign * quantity
        if dq == 0:
            if h.qty != 0 and (h.qty > 0) == (sign > 0):
                h.basis += value
            else:
                h.realized -= value
            return h.realized
        if h.qty == 0 or (h.qty > 0) == (dq > 0):
            h.qty += dq
            h.basis += value
            return h.realized
        closing = min(abs(dq), abs(h.qty)) * (1 if dq > 0 else -1)
        avg = h.basis / h.qty
        v_close = value * abs(closing) / abs(dq)
        h.realized += -v_close + avg * closing
        h.basis += avg * closing
        h.qty += closing
        rest = dq - closing
        if rest:
            h.qty += rest
            h.basis += value - v_close
        if h.qty == 0:
            h.basis = 0.0
        return h.realized

    def realized(self, account_id: str) -> float:
        """The account's realised P&L over all symbols."""
        return sum(h.realized for (a, _), h in self._h.items() if a == account_id)

    def realized_by_symbol(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for (a, s), h in sorted(self._h.items()):
            if h.realized:
                out.setdefault(a, {})[s] = h.realized
        return out


# ------------------------------------------------------------------------------ the desk


@dataclass
class _Child:
    order_id: str
    journey_id: str
    gateway: str
    symbol: str
    side: str
    quantity: int
    status: str = "sent"
    cum_qty: int = 0
    closed: bool = False


_CLOSE_REASON: dict[OrdStatus, Literal["done", "cancelled", "expired"]] = {
    OrdStatus.FILLED: "done",
    OrdStatus.CANCELLED: "cancelled",
    OrdStatus.REJECTED: "cancelled",
    OrdStatus.EXPIRED: "expired",
    OrdStatus.DONE_FOR_DAY: "expired",
}


@dataclass
class Desk:
    """The sequenced state: the engine over the book, child orders, the P&L ledger, the limit
    watch, and the journal position. Build one from a book; feed it blocks, execution reports
    and ticks, or replay journal entries into it.
    """

    book: Book
    warn_at: float = DEFAULT_WARN_AT
    book_id: str = field(init=False)
    engine: Engine = field(init=False)
    brokers: dict[str, str] = field(init=False)
    ledger: Ledger = field(init=False)
    watch: LimitWatch = field(init=False)
    children: dict[str, _Child] = field(default_factory=dict, init=False)
    seq: int = field(default=0, init=False)
    marks: dict[str, Mark] = field(default_factory=dict, init=False)
    pending: dict[str, Mark] = field(default_factory=dict, init=False)
    sources: dict[tuple[str, int, int], int] = field(default_factory=dict, init=False)
    orders: dict[str, tuple[int, str]] = field(default_factory=dict, init=False)
    # the next offset to take of each sequenced topic partition: one past the last handled
    positions: dict[tuple[str, int], int] = field(default_factory=dict, init=False)
    duplicates: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.book_id = book_fingerprint(self.book)
        self.engine = Engine(self.book)
        self.brokers = brokers_of(self.book)
        self.ledger = Ledger(self.book)
        self.watch = LimitWatch(self.warn_at)

    # -------------------------------------------------------------------- journal

    def applied(self, source: SourceRef) -> int | None:
        """The journal position of the entry that applied the input read at ``source``."""
        return self.sources.get((source.topic, source.partition, source.offset))

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The offset of the next input to take from a sequenced topic partition (one past the
        last one applied or otherwise handled), or None before the first one."""
        return self.positions.get((topic, partition))

    def handled(self, source: SourceRef) -> None:
        """Notes an input taken without a journal entry (a dead letter, a repeated block)."""
        key = (source.topic, source.partition)
        self.positions[key] = max(self.positions.get(key, 0), source.offset + 1)

    def replay(self, entry: JournalEntry) -> None:
        """Applies a journaled entry again (recovery); it must be the next one."""
        if entry.seq != self.seq:
            raise MatsError(f"journal entry {entry.seq} replayed at position {self.seq}",
                            ("seq",))
        if entry.book != self.book_id:
            # applied to another start of day, the same inputs would decide otherwise
            raise JournalOfAnotherBook(
                f"journal entry {entry.seq} was made from book {entry.book}; this desk starts "
                f"from book {self.book_id}: start it from the book the journal began with, or "
                "start a new journal", ("book",))
        self._apply_marks(entry.marks)
        if entry.kind == "block":
            order = BlockOrder.model_validate_json(entry.payload)
            self._block(order, entry.at, live=False)
            self._done(entry, order)
        else:
            self._execution(ExecutionReport.model_validate_json(entry.payload), entry.at,
                            cause=entry.key(), live=False)
            self._done(entry)

    def settle_watch(self) -> None:
        """Sets every figure's level from the current exposure without alerting (after a
        replay), so that live alerts continue from where the journal left the book."""
        when = datetime.fromtimestamp(0).astimezone()
        for acct in self.book.accounts:
            self.watch.observe(account_exposure(self.engine.exposure(acct.account_id)),
                               journey_id="", cause="replay", at=when)
        self.watch.observe(firm_exposure(self.engine.firm_exposure()), journey_id="",
                           cause="replay", at=when)

    def repeat_of(self, order: BlockOrder) -> int | None:
        """The journal position of the block this order repeats, if it is the same order
        again (intake published a signal twice, after a restart): the same id and content.
        An order that reuses an id with other content is not a repeat: layer 1 refuses it."""
        seen = self.orders.get(order.order_id)
        if seen is not None and seen[1] == order.model_dump_json():
            return seen[0]
        return None

    def _done(self, entry: JournalEntry, order: BlockOrder | None = None) -> None:
        s = entry.source
        self.sources[(s.topic, s.partition, s.offset)] = entry.seq
        self.handled(s)
        if order is not None:
            self.orders.setdefault(order.order_id, (entry.seq, entry.payload))
        self.seq = entry.seq + 1
        self.pending = {}

    def _entry(self, kind: Literal["block", "execution"], source: SourceRef, at: datetime,
               payload: BaseModel) -> JournalEntry:
        return JournalEntry(seq=self.seq, kind=kind, book=self.book_id, source=source, at=at,
                            marks=dict(self.pending), payload=payload.model_dump_json(), out=[])

    # -------------------------------------------------------------------- live inputs

    def block(self, order: BlockOrder, source: SourceRef, at: datetime) -> JournalEntry:
        """Decides one block (one core call), commits it if accepted; the journal entry with
        the instruction, child orders and alerts to publish."""
        entry = self._entry("block", source, at, order)
        out = self._block(order, at, live=True)
        entry = entry.model_copy(update={"out": _outbox(out)})
        self._done(entry, order)
        return entry

    def execution(self, report: ExecutionReport, source: SourceRef,
                  at: datetime) -> JournalEntry:
        """Books one execution report; the journal entry with the account fills, the child
        order's close, exposure and alerts to publish."""
        entry = self._entry("execution", source, at, report)
        out = self._execution(report, at, cause=entry.key(), live=True)
        entry = entry.model_copy(update={"out": _outbox(out)})
        self._done(entry)
        return entry

    def tick(self, tick: PriceTick) -> list[Outgoing] | None:
        """Applies a live price; None if a newer one for the symbol came first, else the
        exposure of the accounts holding the symbol and of the firm, and any limit alerts."""
        seen = self.marks.get(tick.symbol)
        if seen is not None and tick.ts < seen.ts:
            return None
        mark = Mark(price=tick.price, ts=tick.ts)
        self._apply_marks({tick.symbol: mark})
        self.pending[tick.symbol] = mark
        holders = self.engine.holders(tick.symbol)
        cause = f"tick:{tick.symbol}:{tick.ts.isoformat()}"
        return self._exposure(holders, journey_id="", cause=cause, at=tick.ts)

    def restore_marks(self, marks: Mapping[str, Mark]) -> None:
        """Applies the newest marks kept beside the journal (after a replay): those newer than
        the journal's become pending for the next entry."""
        for sym, mark in marks.items():
            seen = self.marks.get(sym)
            if seen is None or mark.ts > seen.ts:
                self._apply_marks({sym: mark})
                self.pending[sym] = mark

    def _apply_marks(self, marks: Mapping[str, Mark]) -> None:
        if marks:
            self.engine.update_prices({s: m.price for s, m in marks.items()})
            self.marks.update(marks)

    # -------------------------------------------------------------------- the work

    def _block(self, order: BlockOrder, at: datetime, *, live: bool) -> list[Outgoing]:
        decision = load_decision(self.engine.process(order, as_of=at, commit=True))
        out = block_messages(decision, self.brokers, order=order, decided_at=at)
        for o in out:
            if isinstance(o.message, ChildOrder):
                c = o.message
                self.children[c.child_order_id] = _Child(
                    order_id=c.order_id, journey_id=c.journey_id, gateway=c.gateway,
                    symbol=c.symbol, side=c.side, quantity=c.quantity)
        return out

    def _alert(self, report: ExecutionReport, code: str, message: str,
               at: datetime) -> Outgoing:
        return Outgoing(ALERTS_TOPIC, report.order_id, ExecutionAlert(
            event_id=_event_id("execution_alert", report.gateway, report.exec_id, code),
            journey_id=report.journey_id, order_id=report.order_id,
            child_order_id=report.child_order_id, exec_id=report.exec_id,
            gateway=report.gateway, severity="critical", code=code, message=message,
            raised_at=at))

    def _execution(self, report: ExecutionReport, at: datetime, *, cause: str,
                   live: bool) -> list[Outgoing]:
        child = self.children.get(report.child_order_id)
        if child is None:
            return [self._alert(report, "UNKNOWN_CHILD_ORDER",
                                f"execution report {report.exec_id} from {report.gateway} for "
                                f"unknown child order {report.child_order_id}", at)]
        out: list[Outgoing] = []
        touched: list[str] = []
        if report.is_fill:
            assert report.last_px is not None  # the model checks it for fills
            try:
                fills = self.engine.execution(report.child_order_id, report.exec_id,
                                              report.last_qty, report.last_px)
            except MatsError as e:
                return [self._alert(report, "FILL_NOT_BOOKED",
                                    f"fill {report.exec_id} of {report.child_order_id} "
                                    f"({report.last_qty} @ {report.last_px}) not booked: {e}",
                                    at)]
            if fills is None:
                self.duplicates += 1
                return []
            child.cum_qty += report.last_qty
            for f in fills:
                realized = self.ledger.book(f.account_id, child.symbol, child.side,
                                            f.quantity, f.cash_delta)
                touched.append(f.account_id)
                if not live:
                    continue
                cash = self.engine.cash(f.account_id)[0]
                out.append(Outgoing(ACCOUNT_FILLS_TOPIC, f.account_id, AccountFillEvent(
                    event_id=_event_id("account_fill", report.child_order_id,
                                       report.exec_id, f.account_id),
                    journey_id=child.journey_id, order_id=child.order_id,
                    child_order_id=report.child_order_id, exec_id=report.exec_id,
                    gateway=child.gateway, account_id=f.account_id, symbol=child.symbol,
                    side=child.side, quantity=f.quantity, filled=f.filled,
                    avg_price=f.avg_price, cash_delta=f.cash_delta,
                    position=self.engine.position(f.account_id, child.symbol), cash=cash,
                    realized_pnl=realized, booked_at=at)))
        child.status = report.ord_status.value
        if report.exec_type is ExecType.REJECTED and not report.is_terminal:
            child.status = OrdStatus.REJECTED.value
        terminal = report.is_terminal or report.exec_type is ExecType.REJECTED
        if terminal and not child.closed:
            reason = _CLOSE_REASON.get(report.ord_status, "cancelled")
            shortfalls = self.engine.close_block(report.child_order_id, reason)
            child.closed = True
            touched.extend(s.account_id for s in shortfalls if s.shortfall)
            if live:
                out.append(Outgoing(ACCOUNT_FILLS_TOPIC, child.order_id, ChildClosed(
                    event_id=_event_id("child_closed", report.child_order_id),
                    journey_id=child.journey_id, order_id=child.order_id,
                    child_order_id=report.child_order_id, gateway=child.gateway,
                    symbol=child.symbol, side=child.side, reason=reason,
                    ord_status=report.ord_status.value, filled=child.cum_qty,
                    shortfalls=[ShortfallLine(**s.model_dump()) for s in shortfalls],
                    closed_at=at)))
        if live and touched:
            accounts = list(dict.fromkeys(touched))
            out.extend(self._states(accounts, journey_id=child.journey_id, at=at))
            out.extend(self._exposure(accounts, journey_id=child.journey_id, cause=cause, at=at))
        return out

    def _states(self, accounts: list[str], *, journey_id: str, at: datetime) -> list[Outgoing]:
        rows = json.loads(self.engine.accounts_json(accounts))
        return [Outgoing(ACCOUNT_STATE_TOPIC, r["account_id"], AccountState(
            journey_id=journey_id, realized_pnl=self.ledger.realized(r["account_id"]), as_of=at,
            **r)) for r in rows]

    def _exposure(self, accounts: list[str], *, journey_id: str, cause: str,
                  at: datetime) -> list[Outgoing]:
        out: list[Outgoing] = []
        alerts: list[LimitAlert] = []
        for a in accounts:
            e = account_exposure(self.engine.exposure(a))
            out.append(Outgoing(EXPOSURE_TOPIC, a, ExposureSnapshot(
                scope="account", account_id=a, journey_id=journey_id, as_of=at, exposure=e)))
            alerts.extend(self.watch.observe(e, journey_id=journey_id, cause=cause, at=at))
        firm = firm_exposure(self.engine.firm_exposure())
        out.append(Outgoing(EXPOSURE_TOPIC, "firm", ExposureSnapshot(
            scope="firm", journey_id=journey_id, as_of=at, exposure=firm)))
        alerts.extend(self.watch.observe(firm, journey_id=journey_id, cause=cause, at=at))
        out.extend(Outgoing(ALERTS_TOPIC, a.account_id or "firm", a) for a in alerts)
        return out

    # -------------------------------------------------------------------- reading

    def accounts(self) -> list[dict[str, Any]]:
        """Every account's live state (cash, positions, working orders) and realised P&L."""
        rows: list[dict[str, Any]] = json.loads(self.engine.accounts_json())
        for row in rows:
            row["realized_pnl"] = self.ledger.realized(row["account_id"])
        return rows


def _outbox(out: list[Outgoing]) -> list[OutMessage]:
    return [OutMessage(topic=o.topic, key=o.key, value=o.message.model_dump_json())
            for o in out]

