"""The broker simulator's market: a seeded liquidity model, and its record on disk.

:class:`Venue` is the matching logic both simulators (FIX and HTTP) share; it knows nothing of
either wire. Each symbol has a price path, a random walk from its start price driven by one
seeded generator (``seed``): the same seed and the same calls give the same reports. At each
:meth:`Venue.tick` the path moves one step and every *marketable* open order (a market order,
a buy limit at or above the price, a sell limit at or below it) fills a slice (``fill_fraction``
of its quantity, at least one share, at most what it has left) at a price around the path, never
through its limit. A limit order that is not marketable rests until the path reaches it. Symbols in
``reject_symbols`` are refused, as is a ClOrdID used before. Cancels and replaces are honoured
while the order is open (a replace may not go below what is already filled).

Every method returns what the broker says back, as ``(session, message)`` pairs:
:class:`mats.gateway.models.BrokerReport` (FIX ExecutionReport) or :class:`CancelReject`
(FIX OrderCancelReject).

:class:`VenueStore` keeps the venue's orders and every message it produced (an outbox with a
``sent`` flag) in SQLite, so that a simulator killed and started again on the same folder
knows its open orders and sends again what it had produced but not yet sent: no fill is lost.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from mats.gateway.models import BrokerReport

__all__ = ["CancelReject", "Venue", "VenueConfig", "VenueOrder", "VenueStore"]

# FIX OrdStatus codes of an order that is still working
_OPEN = frozenset({"0", "1"})


@dataclass(frozen=True)
class CancelReject:
    """A refused cancel or replace (FIX OrderCancelReject, 35=9)."""

    cl_ord_id: str
    orig_cl_ord_id: str
    broker_order_id: str
    ord_status: str
    response_to: str  # FIX 434: 1 cancel, 2 replace
    text: str


Message = BrokerReport | CancelReject


@dataclass(frozen=True)
class VenueConfig:
    """How the simulated market behaves.

    Parameters
    ----------
    seed
        Seed of the price paths and fill sizes.
    prices
        Start price per symbol; other symbols start at ``default_price``.
    volatility_bps
        Standard deviation of one step of the price path, in basis points.
    fill_fraction
        Each tick a marketable order fills between these fractions of its quantity.
    slippage_bps
        Fills are priced up to this far from the path, against the order (within its limit).
    reject_symbols
        Symbols the venue refuses.
    instant_fill
        Marketable orders fill whole at the first tick (for benchmarks).
    """

    seed: int = 7
    prices: Mapping[str, float] = field(default_factory=dict)
    default_price: float = 100.0
    volatility_bps: float = 5.0
    fill_fraction: tuple[float, float] = (0.2, 0.6)
    slippage_bps: float = 2.0
    reject_symbols: frozenset[str] = frozenset()
    instant_fill: bool = False


@dataclass
class VenueOrder:
    """One order at the venue."""

    broker_order_id: str
    session: str
    cl_ord_id: str
    symbol: str
    side: str
    quantity: int
    limit_price: float | None
    cum_qty: int = 0
    notional: float = 0.0
    ord_status: str = "0"

    @property
    def leaves(self) -> int:
        return self.quantity - self.cum_qty if self.ord_status in _OPEN else 0

    @property
    def avg_px(self) -> float | None:
        return round(self.notional / self.cum_qty, 6) if self.cum_qty else None


class Venue:
    """The simulated market (see the module docstring)."""

    def __init__(self, config: VenueConfig, *, token: str | None = None,
                 next_id: int = 1) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._px: dict[str, float] = {}
        self._orders: dict[str, VenueOrder] = {}  # by broker order id
        self._ids: dict[str, str] = {}  # every ClOrdID ever given -> broker order id
        self._open: dict[str, VenueOrder] = {}
        self._dirty: dict[str, VenueOrder] = {}
        self._new_ids: list[tuple[str, str]] = []  # ids given since the last save
        self._token = token or secrets.token_hex(3)
        self._next = next_id

    # --------------------------------------------------------------- state

    @property
    def token(self) -> str:
        return self._token

    @property
    def next_id(self) -> int:
        return self._next

    def restore(self, orders: Iterable[VenueOrder], ids: Mapping[str, str]) -> None:
        """Take back the orders and ids a :class:`VenueStore` kept."""
        for o in orders:
            self._orders[o.broker_order_id] = o
            if o.ord_status in _OPEN:
                self._open[o.broker_order_id] = o
        self._ids.update(ids)

    def take_dirty(self) -> list[VenueOrder]:
        """The orders changed since the last call (to save)."""
        out = list(self._dirty.values())
        self._dirty.clear()
        return out

    def take_new_ids(self) -> list[tuple[str, str]]:
        """The (ClOrdID, broker order id) pairs given since the last call (to save)."""
        out, self._new_ids = self._new_ids, []
        return out

    def _give(self, cl_ord_id: str, broker_order_id: str) -> None:
        self._ids[cl_ord_id] = broker_order_id
        self._new_ids.append((cl_ord_id, broker_order_id))

    def order_by_cl(self, cl_ord_id: str) -> VenueOrder | None:
        oid = self._ids.get(cl_ord_id)
        return self._orders.get(oid) if oid else None

    def knows(self, cl_ord_id: str) -> bool:
        return cl_ord_id in self._ids

    def open_orders(self) -> list[VenueOrder]:
        return list(self._open.values())

    def price(self, symbol: str) -> float:
        px = self._px.get(symbol)
        if px is None:
            px = float(self.config.prices.get(symbol, self.config.default_price))
            self._px[symbol] = px
        return px

    def _id(self, prefix: str) -> str:
        n = self._next
        self._next += 1
        return f"{prefix}{self._token}-{n}"

    def _touch(self, o: VenueOrder) -> None:
        self._dirty[o.broker_order_id] = o
        if o.ord_status in _OPEN:
            self._open[o.broker_order_id] = o
        else:
            self._open.pop(o.broker_order_id, None)

    def _report(self, o: VenueOrder, exec_type: str, *, cl_ord_id: str | None = None,
                orig: str | None = None, last_qty: int = 0, last_px: float | None = None,
                text: str = "", now: datetime | None = None) -> BrokerReport:
        return BrokerReport(
            exec_id=self._id("E"), cl_ord_id=cl_ord_id or o.cl_ord_id, orig_cl_ord_id=orig,
            exec_type=exec_type, ord_status=o.ord_status, symbol=o.symbol, side=o.side,
            order_qty=o.quantity, cum_qty=o.cum_qty, leaves_qty=o.leaves, avg_px=o.avg_px,
            last_qty=last_qty, last_px=last_px, broker_order_id=o.broker_order_id, text=text,
            transact_time=now or datetime.now(UTC))

    # --------------------------------------------------------------- requests

    def new_order(self, session: str, cl_ord_id: str, symbol: str, side: str, quantity: int,
                  limit_price: float | None) -> list[tuple[str, Message]]:
        """A NewOrderSingle: acknowledged (``0``) or rejected (``8``)."""
        o = VenueOrder(broker_order_id=self._id("O"), session=session, cl_ord_id=cl_ord_id,
                       symbol=symbol, side=side, quantity=quantity, limit_price=limit_price)
        reason = ""
        if cl_ord_id in self._ids:
            reason = f"duplicate ClOrdID {cl_ord_id}"
        elif symbol in self.config.reject_symbols:
            reason = f"symbol {symbol} is not traded here"
        elif quantity <= 0:
            reason = "quantity must be positive"
        elif limit_price is not None and not (math.isfinite(limit_price) and limit_price > 0):
            reason = "limit price must be positive"
        if reason:
            o.ord_status = "8"
            # a duplicate's reject must not take the original's id over
            if cl_ord_id not in self._ids:
                self._give(cl_ord_id, o.broker_order_id)
                self._orders[o.broker_order_id] = o
                self._touch(o)
            return [(session, self._report(o, "8", text=reason))]
        self._give(cl_ord_id, o.broker_order_id)
        self._orders[o.broker_order_id] = o
        self._touch(o)
        return [(session, self._report(o, "0"))]

    def _refuse(self, session: str, cl_ord_id: str, orig: str, response_to: str,
                text: str, o: VenueOrder | None) -> list[tuple[str, Message]]:
        return [(session, CancelReject(
            cl_ord_id=cl_ord_id, orig_cl_ord_id=orig,
            broker_order_id=o.broker_order_id if o else "NONE",
            ord_status=o.ord_status if o else "8", response_to=response_to, text=text))]

    def cancel(self, session: str, cl_ord_id: str, orig: str) -> list[tuple[str, Message]]:
        """An OrderCancelRequest: cancelled (``4``) or refused (OrderCancelReject)."""
        o = self.order_by_cl(orig)
        if cl_ord_id in self._ids:
            return self._refuse(session, cl_ord_id, orig, "1", "duplicate ClOrdID", o)
        if o is None:
            return self._refuse(session, cl_ord_id, orig, "1", "unknown order", None)
        if o.ord_status not in _OPEN:
            return self._refuse(session, cl_ord_id, orig, "1", "order is not open", o)
        self._give(cl_ord_id, o.broker_order_id)
        o.ord_status = "4"
        o.cl_ord_id = cl_ord_id
        self._touch(o)
        return [(o.session, self._report(o, "4", orig=orig))]

    def replace(self, session: str, cl_ord_id: str, orig: str, quantity: int,
                limit_price: float | None) -> list[tuple[str, Message]]:
        """An OrderCancelReplaceRequest: replaced (``5``) or refused."""
        o = self.order_by_cl(orig)
        if cl_ord_id in self._ids:
            return self._refuse(session, cl_ord_id, orig, "2", "duplicate ClOrdID", o)
        if o is None:
            return self._refuse(session, cl_ord_id, orig, "2", "unknown order", None)
        if o.ord_status not in _OPEN:
            return self._refuse(session, cl_ord_id, orig, "2", "order is not open", o)
        if quantity < o.cum_qty or quantity <= 0:
            return self._refuse(session, cl_ord_id, orig, "2",
                                f"quantity {quantity} is below the filled {o.cum_qty}", o)
        self._give(cl_ord_id, o.broker_order_id)
        o.quantity, o.cl_ord_id = quantity, cl_ord_id
        if limit_price is not None:
            o.limit_price = limit_price
        o.ord_status = "2" if o.cum_qty == quantity else ("1" if o.cum_qty else "0")
        self._touch(o)
        return [(o.session, self._report(o, "5", orig=orig))]

    def status(self, session: str, cl_ord_id: str, symbol: str,
               side: str) -> list[tuple[str, Message]]:
        """An OrderStatusRequest: an ``I`` report, OrdStatus ``8`` for an unknown order."""
        o = self.order_by_cl(cl_ord_id)
        if o is None:
            ghost = VenueOrder(broker_order_id="NONE", session=session, cl_ord_id=cl_ord_id,
                               symbol=symbol, side=side, quantity=0, limit_price=None,
                               ord_status="8")
            return [(session, self._report(ghost, "I", text="unknown order"))]
        return [(session, self._report(o, "I", cl_ord_id=cl_ord_id))]

    def cancel_all(self, session: str) -> list[tuple[str, Message]]:
        """Cancel every open order of a session (the broker's cancel-on-disconnect)."""
        out: list[tuple[str, Message]] = []
        for o in list(self._open.values()):
            if o.session == session:
                o.ord_status = "4"
                self._touch(o)
                out.append((session, self._report(o, "4", text="cancelled on disconnect")))
        return out

    # --------------------------------------------------------------- the market

    def _marketable(self, o: VenueOrder, px: float) -> bool:
        if o.limit_price is None:
            return True
        return o.limit_price >= px if o.side == "buy" else o.limit_price <= px

    def tick(self) -> list[tuple[str, Message]]:
        """Move every price path one step and fill the marketable orders a slice each."""
        cfg = self.config
        for sym in {o.symbol for o in self._open.values()}:
            step = self._rng.gauss(0.0, cfg.volatility_bps / 1e4)
            self._px[sym] = round(self.price(sym) * math.exp(step), 6)
        out: list[tuple[str, Message]] = []
        lo, hi = cfg.fill_fraction
        for o in list(self._open.values()):
            px = self.price(o.symbol)
            if not self._marketable(o, px):
                continue
            leaves = o.quantity - o.cum_qty
            qty = leaves if cfg.instant_fill else min(
                leaves, max(1, round(o.quantity * self._rng.uniform(lo, hi))))
            slip = abs(self._rng.gauss(0.0, cfg.slippage_bps / 1e4))
            fill_px = px * (1 + slip) if o.side == "buy" else px * (1 - slip)
            if o.limit_price is not None:
                fill_px = (min(fill_px, o.limit_price) if o.side == "buy"
                           else max(fill_px, o.limit_price))
            fill_px = round(fill_px, 4)
            o.cum_qty += qty
            o.notional += qty * fill_px
            o.ord_status = "2" if o.cum_qty == o.quantity else "1"
            self._touch(o)
            out.append((o.session, self._report(o, "F", last_qty=qty, last_px=fill_px)))
        return out


# ------------------------------------------------------------------------------ the record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (broker_order_id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ids (cl_ord_id TEXT PRIMARY KEY, broker_order_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL, body TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _encode(msg: Message) -> str:
    d = dict(msg.__dict__)  # flat dataclasses: no deep copy needed
    d["type"] = "report" if isinstance(msg, BrokerReport) else "cancel_reject"
    if isinstance(msg, BrokerReport) and msg.transact_time is not None:
        d["transact_time"] = msg.transact_time.isoformat()
    return json.dumps(d)


def _decode(text: str) -> Message:
    d = json.loads(text)
    kind = d.pop("type")
    if kind == "report":
        t = d.get("transact_time")
        d["transact_time"] = datetime.fromisoformat(t) if t else None
        return BrokerReport(**d)
    return CancelReject(**d)


class VenueStore:
    """The venue's SQLite record: orders, ids and an outbox of what it said (see module)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def open_venue(self, config: VenueConfig) -> Venue:
        """A venue with everything this record holds (a new one the first time)."""
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        token = meta.get("token") or secrets.token_hex(3)
        next_id = int(meta.get("next_id", "1"))
        restarts = int(meta.get("restarts", "-1")) + 1
        # a restarted venue draws other numbers than its first life did
        venue = Venue(replace(config, seed=config.seed + restarts), token=token,
                      next_id=next_id)
        orders = [VenueOrder(**json.loads(b))
                  for (b,) in self._db.execute("SELECT body FROM orders")]
        ids = dict(self._db.execute("SELECT cl_ord_id, broker_order_id FROM ids").fetchall())
        venue.restore(orders, ids)
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [("token", token), ("restarts", str(restarts))])
        return venue

    def save(self, venue: Venue, messages: list[tuple[str, Message]]) -> list[int]:
        """Save what changed and put ``messages`` in the outbox; returns their outbox ids."""
        dirty = venue.take_dirty()
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO orders VALUES (?, ?)",
                           [(o.broker_order_id, json.dumps(o.__dict__)) for o in dirty])
            db.executemany("INSERT OR IGNORE INTO ids VALUES (?, ?)", venue.take_new_ids())
            seqs = []
            for session, msg in messages:
                cur = db.execute("INSERT INTO outbox (session, body) VALUES (?, ?)",
                                 (session, _encode(msg)))
                seqs.append(int(cur.lastrowid or 0))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('next_id', ?)", (str(venue.next_id),))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return seqs

    def mark_sent(self, seqs: Iterable[int]) -> None:
        self._db.executemany("UPDATE outbox SET sent = 1 WHERE seq = ?", [(s,) for s in seqs])

    def unsent(self) -> list[tuple[int, str, Message]]:
        """What was produced but not handed to a session, oldest first."""
        return [(seq, session, _decode(body)) for seq, session, body in self._db.execute(
            "SELECT seq, session, body FROM outbox WHERE sent = 0 ORDER BY seq")]
