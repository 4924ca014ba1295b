"""The broker simulator: a FIX 4.4 acceptor on QuickFIX, or a JSON-over-HTTP prime-broker API.

Both sell the same simulated market (:class:`mats.gateway.venue.Venue`). One engine thread owns
the venue: requests from the wire are queued to it with their due time (now plus the
configured ``latency_ms``), and every ``tick_s`` it moves the price paths and fills the
marketable orders. What the venue answers is saved with its orders (:class:`VenueStore`) before
it is handed to the wire, and marked sent after; a simulator started again on the same run
folder keeps its orders and FIX sequence numbers and sends what it had not sent.

FIX side (:class:`FixSimulator`): NewOrderSingle, OrderCancelRequest,
OrderCancelReplaceRequest and OrderStatusRequest in; ExecutionReport and OrderCancelReject
out; other application messages get QuickFIX's BusinessMessageReject. A NewOrderSingle that
comes again with PossDupFlag (a resend) and a ClOrdID the venue knows is dropped, so a resend
never makes a second order. With ``cancel_on_disconnect`` a session's open orders are
cancelled when it drops (the cancels reach the gateway when it logs on again).

HTTP side (:class:`HttpSimulator`, aiohttp), a prime-broker-style REST API::

    POST /v1/orders                      {"client_order_id", "symbol", "side", "quantity",
                                          "limit_price"}   (idempotent by client_order_id)
    POST /v1/orders/{id}/cancel          {"request_id"}
    POST /v1/orders/{id}/replace         {"request_id", "quantity", "limit_price"}
    GET  /v1/orders/{id}                 the order's state
    GET  /v1/events?after=N&wait=S       events after cursor N (long poll up to S seconds)
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mats.gateway import fixwire
from mats.gateway.models import BrokerReport
from mats.gateway.venue import CancelReject, Message, Venue, VenueConfig, VenueStore

__all__ = ["Engine", "FixSimulator", "HttpSimulator", "SimulatorConfig"]

log = logging.getLogger("mats.gateway.simulator")


@dataclass(frozen=True)
class SimulatorConfig:
    """A simulator's wire, address and market."""

    protocol: str  # fix or http
    port: int
    run_dir: Path
    venue: VenueConfig
    host: str = "127.0.0.1"
    sender_comp_id: str = "SIM"  # the simulator's own CompID
    target_comp_id: str = "MATS"  # the gateway's
    latency_ms: float = 0.0
    tick_s: float = 0.05
    cancel_on_disconnect: bool = False
    fix_log: bool = False


# One queued request: (due time, arrival order, action on the venue)
_Item = tuple[float, int, Callable[[Venue], list[tuple[str, Message]]]]


class Engine:
    """The thread that owns the venue (see the module docstring).

    ``deliver(session, message)`` hands one message to the wire and says whether it could;
    what it could not deliver stays in the outbox for the next start.
    """

    def __init__(self, venue: Venue, store: VenueStore, *, latency_ms: float, tick_s: float,
                 deliver: Callable[[str, Message], bool]) -> None:
        self.venue = venue
        self._store = store
        self._latency = latency_ms / 1000.0
        self._tick = tick_s
        self._deliver = deliver
        self._queue: list[_Item] = []
        self._n = 0
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="sim-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)

    def submit(self, action: Callable[[Venue], list[tuple[str, Message]]],
               *, delay: bool = True) -> None:
        due = time.monotonic() + (self._latency if delay else 0.0)
        with self._cv:
            self._n += 1
            heapq.heappush(self._queue, (due, self._n, action))
            self._cv.notify()

    def resend_unsent(self) -> int:
        """Hand the wire what an earlier life produced but never handed over."""
        sent = []
        for seq, session, msg in self._store.unsent():
            if isinstance(msg, BrokerReport):
                msg = BrokerReport(**{**msg.__dict__, "poss_dup": True})
            if self._deliver(session, msg):
                sent.append(seq)
        self._store.mark_sent(sent)
        return len(sent)

    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick
        while True:
            with self._cv:
                while not self._stop:
                    now = time.monotonic()
                    if (self._queue and self._queue[0][0] <= now) or now >= next_tick:
                        break
                    wake = min(next_tick, self._queue[0][0]) if self._queue else next_tick
                    self._cv.wait(timeout=max(wake - now, 0.0))
                if self._stop:
                    return
                now = time.monotonic()
                due = []
                while self._queue and self._queue[0][0] <= now:
                    due.append(heapq.heappop(self._queue)[2])
            out: list[tuple[str, Message]] = []
            for action in due:
                try:
                    out.extend(action(self.venue))
                except Exception:  # one bad request must not stop the market
                    log.exception("simulator: a request failed")
            if now >= next_tick:
                out.extend(self.venue.tick())
                next_tick = now + self._tick
            if not out and not due:
                continue
            seqs = self._store.save(self.venue, out)
            sent = [seq for seq, (session, msg) in zip(seqs, out, strict=True)
                    if self._deliver(session, msg)]
            self._store.mark_sent(sent)


# ------------------------------------------------------------------------------ FIX


def _fix_application(sim: FixSimulator) -> Any:
    fix = fixwire.quickfix()

    base: Any = fix.Application

    class _App(base):  # type: ignore[misc]
        def onCreate(self, sid: Any) -> None:
            sim.sessions[sid.toString()] = sid

        def onLogon(self, sid: Any) -> None:
            log.info("simulator: %s logged on", sid.toString())

        def onLogout(self, sid: Any) -> None:
            log.info("simulator: %s logged out", sid.toString())
            if sim.config.cancel_on_disconnect:
                key = sid.toString()
                sim.engine.submit(lambda v: v.cancel_all(key), delay=False)

        def toAdmin(self, message: Any, sid: Any) -> None:
            pass

        def fromAdmin(self, message: Any, sid: Any) -> None:
            pass

        def toApp(self, message: Any, sid: Any) -> None:
            pass

        def fromApp(self, message: Any, sid: Any) -> None:
            kind = fixwire.msg_type(message)
            if kind not in ("D", "F", "G", "H"):
                raise fix.UnsupportedMessageType()
            try:
                sim.on_request(kind, message, sid.toString())
            except ValueError as e:
                log.warning("simulator: refused %s: %s", kind, e)

    return _App()


class FixSimulator:
    """The FIX 4.4 acceptor (see the module docstring)."""

    def __init__(self, config: SimulatorConfig) -> None:
        fix = fixwire.quickfix()
        self.config = config
        self.sessions: dict[str, Any] = {}
        run = config.run_dir
        run.mkdir(parents=True, exist_ok=True)
        self._store = VenueStore(run / "venue.sqlite")
        venue = self._store.open_venue(config.venue)
        self.engine = Engine(venue, self._store, latency_ms=config.latency_ms,
                             tick_s=config.tick_s, deliver=self._deliver)
        text = fixwire.session_settings(
            initiator=False, sender=config.sender_comp_id, target=config.target_comp_id,
            host=config.host, port=config.port, store=run / "store",
            log=run / "log" if config.fix_log else None)
        cfg_file = run / "acceptor.cfg"
        cfg_file.write_text(text, encoding="utf-8")
        settings = fix.SessionSettings(str(cfg_file))
        self._app = _fix_application(self)
        store_factory = fix.FileStoreFactory(settings)
        if config.fix_log:
            self._acceptor = fix.SocketAcceptor(self._app, store_factory, settings,
                                                fix.FileLogFactory(settings))
        else:
            self._acceptor = fix.SocketAcceptor(self._app, store_factory, settings)

    def start(self) -> None:
        self.engine.start()
        self._acceptor.start()
        self.engine.submit(lambda v: [], delay=False)
        resent = self.engine.resend_unsent()
        if resent:
            log.info("simulator: handed over %d messages of an earlier run", resent)

    def stop(self) -> None:
        self._acceptor.stop()
        self.engine.stop()
        self._store.close()

    def on_request(self, kind: str, m: Any, session: str) -> None:
        """Queue one application message for the engine (called on QuickFIX's thread)."""
        f = fixwire.fields_of(m)
        # a resend (PossDup) of a request the venue already has is dropped: never a second
        # order, cancel or replace
        dup = f.get(fixwire.POSS_DUP) == "Y" or f.get(fixwire.POSS_RESEND) == "Y"
        cl = f.get(fixwire.CL_ORD_ID, "")
        if kind == "D":
            _, symbol, side, qty, limit = fixwire.order_fields_of(f)

            def new(v: Venue) -> list[tuple[str, Message]]:
                if dup and v.knows(cl):
                    log.info("simulator: resent order %s already here: dropped", cl)
                    return []
                return v.new_order(session, cl, symbol, side, qty, limit)
            self.engine.submit(new)
        elif kind == "F":
            orig = f.get(fixwire.ORIG_CL_ORD_ID, "")
            self.engine.submit(lambda v: [] if dup and v.knows(cl)
                               else v.cancel(session, cl, orig))
        elif kind == "G":
            _, _symbol, _side, qty, limit = fixwire.order_fields_of(f)
            orig = f.get(fixwire.ORIG_CL_ORD_ID, "")
            self.engine.submit(lambda v: [] if dup and v.knows(cl)
                               else v.replace(session, cl, orig, qty, limit))
        else:
            symbol, side = f.get(fixwire.SYMBOL, ""), fixwire.side_of(m)
            self.engine.submit(lambda v: v.status(session, cl, symbol, side))

    def _deliver(self, session: str, msg: Message) -> bool:
        fix = fixwire.quickfix()
        sid = self.sessions.get(session)
        if sid is None:
            return False
        out = (fixwire.execution_report(msg) if isinstance(msg, BrokerReport)
               else fixwire.cancel_reject(msg))
        try:
            # stored in the session's FileStore even while the gateway is away: it asks
            # for the gap when it logs on again
            return bool(fix.Session.sendToTarget(out, sid))
        except Exception as e:  # SessionNotFound and the like: kept in the outbox
            log.warning("simulator: could not send to %s: %s", session, e)
            return False


# ------------------------------------------------------------------------------ HTTP

_EVENT_NAMES = {"0": "accepted", "F": "trade", "4": "canceled", "5": "replaced",
                "8": "rejected", "C": "expired", "I": "status"}
_STATUS_NAMES = {"0": "open", "1": "partially_filled", "2": "filled", "4": "canceled",
                 "8": "rejected", "C": "expired"}


def http_event(msg: Message) -> dict[str, Any]:
    """How the HTTP API words a venue message (its own vocabulary, not FIX's)."""
    if isinstance(msg, CancelReject):
        return {"event": "cancel_rejected" if msg.response_to == "1" else "replace_rejected",
                "request_client_order_id": msg.cl_ord_id,
                "client_order_id": msg.orig_cl_ord_id, "order_id": msg.broker_order_id,
                "reason": msg.text}
    return {"event": _EVENT_NAMES.get(msg.exec_type, msg.exec_type),
            "execution_id": msg.exec_id, "request_client_order_id": msg.cl_ord_id,
            "client_order_id": msg.orig_cl_ord_id or msg.cl_ord_id,
            "order_id": msg.broker_order_id, "status": _STATUS_NAMES.get(msg.ord_status,
                                                                         msg.ord_status),
            "symbol": msg.symbol, "side": msg.side, "quantity": msg.order_qty,
            "filled": msg.cum_qty, "remaining": msg.leaves_qty, "average_price": msg.avg_px,
            "fill_quantity": msg.last_qty, "fill_price": msg.last_px, "reason": msg.text,
            "at": msg.transact_time.isoformat() if msg.transact_time else None}


class HttpSimulator:
    """The prime-broker HTTP API (see the module docstring); call :meth:`serve` in a loop."""

    SESSION = "http"

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        config.run_dir.mkdir(parents=True, exist_ok=True)
        self._store = VenueStore(config.run_dir / "venue.sqlite")
        venue = self._store.open_venue(config.venue)
        self._events_path = config.run_dir / "events.jsonl"
        self._events: list[dict[str, Any]] = []
        if self._events_path.exists():
            for line in self._events_path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    self._events.append(json.loads(line))
        self._events_file = self._events_path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new = asyncio.Event()
        self.engine = Engine(venue, self._store, latency_ms=config.latency_ms,
                             tick_s=config.tick_s, deliver=self._deliver)

    def _deliver(self, session: str, msg: Message) -> bool:
        with self._lock:
            event = {"seq": len(self._events) + 1, **http_event(msg)}
            self._events.append(event)
            self._events_file.write(json.dumps(event) + "\n")
            self._events_file.flush()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._new.set)
        return True

    async def _call(self, action: Callable[[Venue], list[tuple[str, Message]]]) -> None:
        self.engine.submit(action)

    async def serve(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        """Serve until ``stop`` is set."""
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self.engine.start()
        self.engine.resend_unsent()
        app = web.Application()
        app.add_routes([web.post("/v1/orders", self._post_order),
                        web.post("/v1/orders/{id}/cancel", self._cancel),
                        web.post("/v1/orders/{id}/replace", self._replace),
                        web.get("/v1/orders/{id}", self._get_order),
                        web.get("/v1/events", self._get_events)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        if ready:
            ready()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            self.engine.stop()
            self._store.close()
            self._events_file.close()

    @staticmethod
    async def _body(request: Any) -> dict[str, Any]:
        from aiohttp import web

        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text=json.dumps({"error": "body is not JSON"}),
                                     content_type="application/json") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "body is not an object"}),
                                     content_type="application/json")
        return body

    @staticmethod
    def _bad(message: str) -> Any:
        from aiohttp import web

        return web.json_response({"error": message}, status=400)

    async def _post_order(self, request: Any) -> Any:
        from aiohttp import web

        b = await self._body(request)
        cl, symbol, side = b.get("client_order_id"), b.get("symbol"), b.get("side")
        qty, limit = b.get("quantity"), b.get("limit_price")
        if not (isinstance(cl, str) and cl and isinstance(symbol, str) and symbol):
            return self._bad("client_order_id and symbol are required strings")
        if side not in ("buy", "sell") or not isinstance(qty, int) or isinstance(qty, bool):
            return self._bad("side must be buy or sell and quantity an integer")
        if limit is not None and not isinstance(limit, int | float):
            return self._bad("limit_price must be a number or null")
        lim = float(limit) if limit is not None else None
        # idempotent: an order sent again (a gateway retry) is not a second order
        self.engine.submit(lambda v: [] if v.knows(cl)
                           else v.new_order(self.SESSION, cl, symbol, side, qty, lim))
        return web.json_response({"client_order_id": cl, "received": True}, status=202)

    async def _cancel(self, request: Any) -> Any:
        from aiohttp import web

        b = await self._body(request)
        orig, rid = request.match_info["id"], b.get("request_id")
        if not isinstance(rid, str) or not rid:
            return self._bad("request_id is required")
        self.engine.submit(lambda v: [] if v.knows(rid) else v.cancel(self.SESSION, rid, orig))
        return web.json_response({"request_id": rid, "received": True}, status=202)

    async def _replace(self, request: Any) -> Any:
        from aiohttp import web

        b = await self._body(request)
        orig, rid, qty, limit = (request.match_info["id"], b.get("request_id"),
                                 b.get("quantity"), b.get("limit_price"))
        if not isinstance(rid, str) or not rid or not isinstance(qty, int):
            return self._bad("request_id (string) and quantity (integer) are required")
        lim = float(limit) if isinstance(limit, int | float) else None
        self.engine.submit(lambda v: [] if v.knows(rid)
                           else v.replace(self.SESSION, rid, orig, qty, lim))
        return web.json_response({"request_id": rid, "received": True}, status=202)

    async def _get_order(self, request: Any) -> Any:
        from aiohttp import web

        o = self.engine.venue.order_by_cl(request.match_info["id"])
        if o is None:
            return web.json_response({"error": "unknown order"}, status=404)
        return web.json_response({"client_order_id": request.match_info["id"],
                                  "order_id": o.broker_order_id,
                                  "status": _STATUS_NAMES.get(o.ord_status, o.ord_status),
                                  "quantity": o.quantity, "filled": o.cum_qty,
                                  "average_price": o.avg_px})

    async def _get_events(self, request: Any) -> Any:
        from aiohttp import web

        try:
            after = int(request.query.get("after", "0"))
            wait = min(float(request.query.get("wait", "0")), 30.0)
        except ValueError:
            return self._bad("after must be an integer and wait a number")
        deadline = time.monotonic() + wait
        while True:
            self._new.clear()
            with self._lock:
                events = self._events[after:after + 1000]
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return web.json_response({"events": events, "next": after + len(events)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)
