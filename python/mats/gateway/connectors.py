"""The two wires a gateway speaks: FIX 4.4 (QuickFIX initiator) and the JSON-over-HTTP API.

A connector owns the session to the broker and nothing else: :class:`mats.gateway.runner.Gateway`
decides what to send and what the answers mean. Both connectors hand the gateway what the
broker says through the same calls of a :class:`Sink`, and take the same requests
(:class:`Connector`): the gateway contract is not FIX-shaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from mats.gateway import fixwire
from mats.gateway.journal import OrderRecord, RequestRecord
from mats.gateway.models import BrokerReport, GatewayConfig, SessionState

__all__ = ["Connector", "FixConnector", "HttpConnector", "Sink", "make_connector"]

log = logging.getLogger("mats.gateway")

REF_TAG_ID = 371


class Sink(Protocol):
    """What a connector tells its gateway. Every method may be called from any thread."""

    def report(self, report: BrokerReport) -> None:
        """One report of the broker; persisted by the gateway before it returns."""

    def request_refused(self, cl_ord_id: str, text: str, source: str) -> None:
        """The broker refused one of the gateway's requests (by its ClOrdID, if known)."""

    def session_state(self, state: SessionState, error: str | None = None) -> None:
        """The session went to ``state`` (with the reason, when it is a problem)."""

    def problem(self, text: str) -> None:
        """Something worth an alert that is about no one order (garbage, a session reject)."""


class Connector(Protocol):
    """A session to a broker: started, stopped, and the four requests."""

    state: SessionState

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_new(self, rec: OrderRecord) -> bool: ...

    async def send_cancel(self, rec: OrderRecord, req: RequestRecord) -> bool: ...

    async def send_replace(self, rec: OrderRecord, req: RequestRecord, quantity: int,
                           limit_price: float | None) -> bool: ...

    async def request_status(self, rec: OrderRecord) -> bool: ...

    def seqnums(self) -> tuple[int | None, int | None]: ...


# ------------------------------------------------------------------------------ FIX


class FixConnector:
    """A FIX 4.4 initiator session on QuickFIX (FileStore under the gateway's run folder).

    QuickFIX reconnects on its own every second while the session is enabled; the back-off is
    made by disabling the session after a lost connection and enabling it for one attempt
    after each wait (``reconnect_initial_s``, doubling up to ``reconnect_max_s``; a new loss
    starts again from the first wait).
    """

    def __init__(self, config: GatewayConfig, run_dir: Path, sink: Sink) -> None:
        self.config = config
        self.state = SessionState.STARTING
        self._sink = sink
        self._run = run_dir
        self._sid: Any = None
        self._initiator: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.Task[None] | None = None
        self._logged_on = False
        self.reconnect_attempts = 0
        self._seq_to_cl: dict[int, str] = {}
        self.logons = 0

    # -- QuickFIX's callbacks (its thread) ----------------------------------------------

    def _on_logon(self) -> None:
        self.logons += 1
        self._logged_on = True
        self._sink.session_state(SessionState.LOGGED_ON)

    def _on_logout(self) -> None:
        self._logged_on = False
        if self.state is SessionState.STOPPED:
            return
        self._sink.session_state(SessionState.RECONNECTING,
                                 f"session to {self.config.host}:{self.config.port} lost")
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_backoff)

    def _stopped(self) -> bool:
        return self.state is SessionState.STOPPED

    def _start_backoff(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Wait, enable the session for one connection attempt, and double the wait."""
        fix = fixwire.quickfix()
        wait = self.config.reconnect_initial_s
        while not self._stopped() and not self._logged_on:
            session = fix.Session.lookupSession(self._sid)
            if session is None:
                return
            session.logout()  # disabled: QuickFIX's own one-second retry stops
            await asyncio.sleep(wait)
            if self._stopped() or self._logged_on:
                return
            session.logon()  # enabled: QuickFIX connects at its next check (~1 s)
            for _ in range(30):  # up to 3 s for the connection and the logon
                await asyncio.sleep(0.1)
                if self._logged_on:
                    return
            wait = min(wait * 2, self.config.reconnect_max_s)
            self.reconnect_attempts += 1

    def _from_app(self, m: Any) -> None:
        kind = fixwire.msg_type(m)
        if kind == "8":
            try:
                report = fixwire.parse_report(m)
            except ValueError as e:
                self._sink.problem(f"unreadable ExecutionReport ({e}): {_flat(m)}")
                return
            self._sink.report(report)
        elif kind == "9":
            r = fixwire.parse_cancel_reject(m)
            what = "cancel" if r.response_to == "1" else "replace"
            self._sink.request_refused(r.cl_ord_id, f"{what} refused: {r.text}", "broker")
        elif kind == "j":
            ref = fixwire.get(m, fixwire.BUSINESS_REJECT_REF_ID)
            ref_seq = fixwire.get(m, fixwire.REF_SEQ_NUM)
            cl = ref or self._seq_to_cl.get(int(ref_seq) if ref_seq.isdigit() else -1, "")
            self._sink.request_refused(cl, f"business reject: {fixwire.get(m, fixwire.TEXT)} "
                                           f"(ref msg type {fixwire.get(m, fixwire.REF_MSG_TYPE)}"
                                           f")", "business")
        else:
            self._sink.problem(f"unexpected application message {kind}: {_flat(m)}")

    def _from_admin(self, m: Any) -> None:
        if fixwire.msg_type(m) == "3":  # session-level reject of one of our messages
            ref = fixwire.get(m, fixwire.REF_SEQ_NUM)
            cl = self._seq_to_cl.get(int(ref) if ref.isdigit() else -1, "")
            text = f"session reject: {fixwire.get(m, fixwire.TEXT)} (ref seq {ref})"
            if cl:
                self._sink.request_refused(cl, text, "session")
            else:
                self._sink.problem(text)

    def _to_admin(self, m: Any) -> None:
        if fixwire.msg_type(m) == "3":  # we refuse one of the broker's messages
            self._sink.problem(
                f"refused the broker's message {fixwire.get(m, fixwire.REF_SEQ_NUM)} "
                f"(type {fixwire.get(m, fixwire.REF_MSG_TYPE)}, tag "
                f"{fixwire.get(m, REF_TAG_ID)}): {fixwire.get(m, fixwire.TEXT)}")

    def _to_app(self, m: Any) -> None:
        cl = fixwire.get(m, fixwire.CL_ORD_ID)
        seq = fixwire.header(m, fixwire.MSG_SEQ_NUM)
        if cl and seq.isdigit():
            self._seq_to_cl[int(seq)] = cl
            if len(self._seq_to_cl) > 200_000:  # refs to old messages: only recent matter
                for k in list(self._seq_to_cl)[:100_000]:
                    del self._seq_to_cl[k]

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        fix = fixwire.quickfix()
        self._loop = asyncio.get_running_loop()
        c = self.config
        self._run.mkdir(parents=True, exist_ok=True)
        dictionary = None
        if c.accept_values:
            dictionary = fixwire.patched_dictionary(fixwire.dictionary_path(), c.accept_values,
                                                    self._run / "FIX44.xml")
        text = fixwire.session_settings(
            initiator=True, sender=c.sender_comp_id, target=c.target_comp_id, host=c.host,
            port=c.port, store=self._run / "store",
            log=self._run / "fixlog" if c.fix_log else None, heartbeat_s=c.heartbeat_s,
            dictionary=dictionary)
        cfg_file = self._run / "initiator.cfg"
        cfg_file.write_text(text, encoding="utf-8")
        settings = fix.SessionSettings(str(cfg_file))
        app = _initiator_app(self)
        store = fix.FileStoreFactory(settings)
        if c.fix_log:
            self._initiator = fix.SocketInitiator(app, store, settings,
                                                  fix.FileLogFactory(settings))
        else:
            self._initiator = fix.SocketInitiator(app, store, settings)
        self._app = app  # QuickFIX holds no Python reference to it
        self._sid = fix.SessionID(fixwire.BEGIN_STRING, c.sender_comp_id, c.target_comp_id)
        self.state = SessionState.RECONNECTING
        await asyncio.to_thread(self._initiator.start)

    async def stop(self) -> None:
        self.state = SessionState.STOPPED
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._initiator is not None:
            await asyncio.to_thread(self._initiator.stop)

    # -- requests -----------------------------------------------------------------------

    def _send(self, m: Any) -> bool:
        fix = fixwire.quickfix()
        try:
            return bool(fix.Session.sendToTarget(m, self._sid))
        except Exception as e:  # SessionNotFound: nothing went out
            log.warning("%s: send failed: %s", self.config.name, e)
            return False

    async def send_new(self, rec: OrderRecord) -> bool:
        return self._send(fixwire.new_order_single(
            rec.child_order_id, rec.symbol, rec.side, rec.quantity, rec.limit_price,
            self.config.account))

    async def send_cancel(self, rec: OrderRecord, req: RequestRecord) -> bool:
        return self._send(fixwire.cancel_request(req.cl_ord_id, rec.cl_ord_id, rec.symbol,
                                                 rec.side, rec.quantity))

    async def send_replace(self, rec: OrderRecord, req: RequestRecord, quantity: int,
                           limit_price: float | None) -> bool:
        return self._send(fixwire.replace_request(req.cl_ord_id, rec.cl_ord_id, rec.symbol,
                                                  rec.side, quantity, limit_price,
                                                  self.config.account))

    async def request_status(self, rec: OrderRecord) -> bool:
        return self._send(fixwire.status_request(rec.cl_ord_id, rec.symbol, rec.side))

    def seqnums(self) -> tuple[int | None, int | None]:
        if self._sid is None:
            return None, None
        session = fixwire.quickfix().Session.lookupSession(self._sid)
        if session is None:
            return None, None
        return int(session.getExpectedSenderNum()), int(session.getExpectedTargetNum())


def _flat(m: Any) -> str:
    return str(m.toString()).replace("\x01", "|")[:300]


def _initiator_app(conn: FixConnector) -> Any:
    fix = fixwire.quickfix()

    base: Any = fix.Application

    class _App(base):  # type: ignore[misc]
        # Every callback catches its own errors: an exception escaping into QuickFIX's
        # thread would end the process, and one bad message must not.
        def onCreate(self, sid: Any) -> None:
            pass

        def onLogon(self, sid: Any) -> None:
            _guard(conn, conn._on_logon)

        def onLogout(self, sid: Any) -> None:
            _guard(conn, conn._on_logout)

        def toAdmin(self, message: Any, sid: Any) -> None:
            _guard(conn, conn._to_admin, message)

        def fromAdmin(self, message: Any, sid: Any) -> None:
            _guard(conn, conn._from_admin, message)

        def toApp(self, message: Any, sid: Any) -> None:
            _guard(conn, conn._to_app, message)

        def fromApp(self, message: Any, sid: Any) -> None:
            _guard(conn, conn._from_app, message)

    return _App()


def _guard(conn: FixConnector, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as e:
        log.exception("%s: a FIX callback failed", conn.config.name)
        with contextlib.suppress(Exception):
            conn._sink.problem(f"FIX callback failed: {type(e).__name__}: {e}")


# ------------------------------------------------------------------------------ HTTP

_HTTP_EXEC = {"accepted": "0", "trade": "F", "canceled": "4", "replaced": "5",
              "rejected": "8", "expired": "C", "status": "I"}
_HTTP_STATUS = {"open": "0", "partially_filled": "1", "filled": "2", "canceled": "4",
                "rejected": "8", "expired": "C"}


def report_of_event(e: dict[str, Any]) -> BrokerReport:
    """The broker report of one HTTP API event (ValueError for one that cannot be)."""
    at = e.get("at")
    req = str(e["request_client_order_id"])
    orig = str(e["client_order_id"])
    return BrokerReport(
        exec_id=str(e["execution_id"]), cl_ord_id=req,
        orig_cl_ord_id=orig if orig != req else None,
        exec_type=_HTTP_EXEC[str(e["event"])], ord_status=_HTTP_STATUS[str(e["status"])],
        symbol=str(e["symbol"]), side=str(e["side"]), order_qty=int(e["quantity"]),
        cum_qty=int(e["filled"]), leaves_qty=int(e["remaining"]),
        avg_px=float(e["average_price"]) if e.get("average_price") is not None else None,
        last_qty=int(e.get("fill_quantity") or 0),
        last_px=float(e["fill_price"]) if e.get("fill_price") is not None else None,
        broker_order_id=str(e.get("order_id") or "") or None, text=str(e.get("reason") or ""),
        transact_time=datetime.fromisoformat(at) if isinstance(at, str) else None)


class HttpConnector:
    """The prime-broker JSON API: requests by POST, reports from a long-polled event feed.

    The feed's cursor is kept in the gateway's journal (``cursor``): a restarted gateway asks
    for the events after the last one it took. POSTs are idempotent at the broker (by client
    order id and request id), so a request retried after a lost answer is not a second one.
    """

    def __init__(self, config: GatewayConfig, sink: Sink, cursor: Any) -> None:
        self.config = config
        self.state = SessionState.STARTING
        self._sink = sink
        self._cursor = cursor  # get() -> int, set(int)
        self._base = f"http://{config.host}:{config.port}/v1"
        self._session: Any = None
        self._feed: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=35))
        self.state = SessionState.RECONNECTING
        self._feed = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        self.state = SessionState.STOPPED
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed
        if self._session is not None:
            await self._session.close()

    async def _poll(self) -> None:
        backoff = self.config.reconnect_initial_s
        while True:
            try:
                after = int(self._cursor.get())
                async with self._session.get(f"{self._base}/events",
                                             params={"after": after, "wait": "5"}) as resp:
                    resp.raise_for_status()
                    body = await resp.json()
                if self.state is not SessionState.LOGGED_ON:
                    self._sink.session_state(SessionState.LOGGED_ON)
                backoff = self.config.reconnect_initial_s
                for e in body.get("events", []):
                    self._event(e)
                self._cursor.set(int(body.get("next", after)))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self.state is SessionState.LOGGED_ON or self.state is SessionState.STARTING:
                    self._sink.session_state(SessionState.RECONNECTING,
                                             f"event feed: {type(e).__name__}: {e}")
                self.state = SessionState.RECONNECTING
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)

    def _event(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        if kind in ("cancel_rejected", "replace_rejected"):
            self._sink.request_refused(str(e.get("request_client_order_id", "")),
                                       f"{kind}: {e.get('reason', '')}", "broker")
            return
        try:
            report = report_of_event(e)
        except (KeyError, ValueError, TypeError) as err:
            self._sink.problem(f"unreadable event ({type(err).__name__}: {err}): "
                               f"{json.dumps(e)[:300]}")
            return
        self._sink.report(report)

    async def _post(self, path: str, body: dict[str, Any], cl_ord_id: str) -> bool:
        """POST until the broker answers (True), retrying with back-off for a while."""
        if self._session is None:
            return False
        backoff = self.config.reconnect_initial_s
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self._session.post(f"{self._base}{path}", json=body) as resp:
                    if resp.status >= 500:
                        raise RuntimeError(f"HTTP {resp.status}")
                    if resp.status >= 400:
                        text = await resp.text()
                        self._sink.request_refused(cl_ord_id, f"HTTP {resp.status}: {text}",
                                                   "broker")
                    return True
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if time.monotonic() > deadline:
                    self._sink.problem(f"gave up sending {cl_ord_id}: {e}")
                    return False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)

    async def send_new(self, rec: OrderRecord) -> bool:
        return await self._post("/orders", {"client_order_id": rec.child_order_id,
                                      "symbol": rec.symbol, "side": rec.side,
                                      "quantity": rec.quantity,
                                      "limit_price": rec.limit_price}, rec.child_order_id)

    async def send_cancel(self, rec: OrderRecord, req: RequestRecord) -> bool:
        return await self._post(f"/orders/{rec.cl_ord_id}/cancel", {"request_id": req.cl_ord_id},
                          req.cl_ord_id)

    async def send_replace(self, rec: OrderRecord, req: RequestRecord, quantity: int,
                           limit_price: float | None) -> bool:
        return await self._post(f"/orders/{rec.cl_ord_id}/replace",
                          {"request_id": req.cl_ord_id, "quantity": quantity,
                           "limit_price": limit_price}, req.cl_ord_id)

    async def request_status(self, rec: OrderRecord) -> bool:
        # the event feed replays everything after the cursor: an order the broker has will
        # show in it; one it never got is sent again (idempotent at the broker)
        if rec.state == "pending":
            return await self.send_new(rec)
        return True

    def seqnums(self) -> tuple[int | None, int | None]:
        return None, None


def make_connector(config: GatewayConfig, run_dir: Path, sink: Sink,
                   cursor: Any) -> Connector:
    """The connector of a gateway's protocol."""
    if config.protocol == "fix":
        return FixConnector(config, run_dir, sink)
    return HttpConnector(config, sink, cursor)
