"""Gateways as OS processes on a real Kafka broker, against the broker simulators.

Each test starts what it needs (``mats broker-sim``, ``mats gateway run``) with
``python -m mats.gateway`` on free loopback ports, feeds the order topics and reads what comes
back from ``mats.exec-reports``, ``mats.gateway-status``, ``mats.alerts`` and ``mats.dlq``.
Waits are bounded (:data:`WAIT_S`) and only ever wait for an event: no sleep is an assertion.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from mats import kafka
from mats.blocks import ChildOrder, Lot
from mats.executions import CancelRequest, ExecutionReport, ReplaceRequest, request_event_id
from mats.gateway.models import GatewayStatus

pytest.importorskip("quickfix")

WAIT_S = 90  # a bound on a broken run, not a timing check
REPO = Path(__file__).resolve().parent.parent
TOPICS = ("mats.exec-reports", "mats.gateway-status", "mats.alerts", "mats.dlq")

pytestmark = pytest.mark.slow


def free_port() -> int:
    return kafka.free_port("127.0.0.1")


def _env(broker: kafka.KafkaSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATS_")}
    env["MATS_KAFKA_BOOTSTRAP"] = broker.bootstrap_servers
    return env


class Procs:
    """The processes a test started, stopped at its end (SIGTERM, then SIGKILL)."""

    def __init__(self, tmp: Path, broker: kafka.KafkaSettings) -> None:
        self.tmp = tmp
        self.broker = broker
        self.all: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            p = subprocess.Popen([sys.executable, "-m", "mats.gateway", *args], cwd=self.tmp,
                                 env=_env(self.broker), stdout=out, stderr=subprocess.STDOUT)
        self.all.append((p, log))
        return p

    def sim(self, port: int, run: str, *extra: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{run}.log"
        start = log.stat().st_size if log.exists() else 0
        p = self.start(["broker-sim", "--port", str(port), "--run-dir", str(self.tmp / run),
                        "--tick-ms", "20", *extra], log)
        wait_for(lambda: "listening on" in log.read_bytes()[start:].decode(errors="replace"),
                 f"simulator {run} to listen", p, log)
        return p

    def gateway(self, name: str, config: Path) -> subprocess.Popen[bytes]:
        return self.start(["gateway", "run", name, "--config", str(config), "--run-dir",
                           str(self.tmp / f"gw-{name}")], self.tmp / f"gw-{name}.log")

    def stop_all(self) -> None:
        for p, _ in self.all:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in self.all:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def wait_for(cond: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None = None,
             log: Path | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process died waiting for {what}:\n"
                                 f"{log.read_text()[-3000:] if log else ''}")
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S}s"
        time.sleep(0.05)


@pytest.fixture
def procs(tmp_path: Path, broker: kafka.KafkaSettings) -> Iterator[Procs]:
    p = Procs(tmp_path, broker)
    try:
        yield p
    finally:
        p.stop_all()


def write_config(path: Path, gateways: dict[str, dict[str, Any]],
                 broker: kafka.KafkaSettings) -> Path:
    """A gateways file for the test, and the gateways' order topics."""
    asyncio.run(kafka.ensure_topics(broker.bootstrap_servers,
                                    [kafka.gateway_topic(g) for g in gateways]))
    lines = ["gateways:"]
    for name, cfg in gateways.items():
        base = {"reconnect_initial_s": 0.5, "reconnect_max_s": 2, "status_interval_s": 0.5,
                "heartbeat_s": 5, "fix_log": True}
        lines.append(f"  {name}: {json.dumps({**base, **cfg})}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def child(n: int, gateway: str, *, qty: int = 500, limit: float | None = None,
          symbol: str = "AAPL", tag: str = "") -> ChildOrder:
    oid = f"B{tag}{n}"
    return ChildOrder(event_id=f"e{tag}{n}", journey_id=f"j{tag}{n}", order_id=oid,
                      child_order_id=f"{oid}:{gateway}", gateway=gateway, symbol=symbol,
                      side="buy", quantity=qty, limit_price=limit, reference_price=100.0,
                      decided_at=datetime.now(UTC),
                      allocations=[Lot(account_id="A1", broker=gateway, allocated=qty,
                                       quantity=qty, status="ok")])


class Bus:
    """A producer onto the order topics and a reader of everything the gateways publish.

    The reader runs in its own thread with its own event loop, so the test can wait on it
    with plain calls while processes come and go.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.got: dict[str, list[tuple[bytes | None, dict[str, Any]]]] = {t: [] for t in TOPICS}
        self.loop = asyncio.new_event_loop()
        self._stop = False
        import threading

        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._run(self._start())
        self._reader = asyncio.run_coroutine_threadsafe(self._read(), self.loop)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=WAIT_S)

    async def _start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                         enable_idempotence=True)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                         enable_auto_commit=False)
        await self.consumer.start()
        parts = [TopicPartition(t, p) for t in TOPICS
                 for p in range(next(s.partitions for s in kafka.TOPICS if s.name == t))]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)

    async def _read(self) -> None:
        while not self._stop:
            for tp, msgs in (await self.consumer.getmany(timeout_ms=200)).items():
                self.got[tp.topic].extend((m.key, json.loads(m.value)) for m in msgs)

    def send(self, gateway: str, *items: ChildOrder | CancelRequest | ReplaceRequest | bytes,
             key: str = "k") -> None:
        async def go() -> None:
            for it in items:
                value = it if isinstance(it, bytes) else it.model_dump_json().encode()
                k = key if isinstance(it, bytes) else it.order_id
                await self.producer.send_and_wait(kafka.gateway_topic(gateway).name, value,
                                                  key=k.encode())
        self._run(go())

    def close(self) -> None:
        self._stop = True
        try:
            self._reader.result(timeout=10)
        finally:
            self._run(self.consumer.stop())
            self._run(self.producer.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    # -- views -------------------------------------------------------------------------

    def reports(self, gateway: str | None = None) -> list[ExecutionReport]:
        out = [ExecutionReport.model_validate(v) for _, v in list(self.got["mats.exec-reports"])]
        return [r for r in out if gateway is None or r.gateway == gateway]

    def filled(self, child_order_id: str) -> int:
        """Shares filled, counting each exec id once (as the stream app books them)."""
        seen: dict[str, int] = {}
        for r in self.reports():
            if r.child_order_id == child_order_id and r.is_fill:
                seen[r.exec_id] = r.last_qty
        return sum(seen.values())

    def status(self, gateway: str) -> list[GatewayStatus]:
        return [GatewayStatus.model_validate(v) for k, v in list(self.got["mats.gateway-status"])
                if k == gateway.encode()]

    def alerts(self) -> list[str]:
        return [str(v["message"]) for _, v in list(self.got["mats.alerts"])]

    def dlq(self) -> list[dict[str, Any]]:
        return [v for _, v in list(self.got["mats.dlq"])]

    def wait(self, cond: Callable[[], bool], what: str,
             watch: list[tuple[subprocess.Popen[bytes], Path]] | None = None) -> None:
        deadline = time.monotonic() + WAIT_S
        while not cond():
            for p, log in watch or []:
                if p.poll() is not None:
                    raise AssertionError(f"process died waiting for {what}:\n"
                                         f"{log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, f"no {what} within {WAIT_S}s"
            time.sleep(0.05)


@pytest.fixture
def bus(broker: kafka.KafkaSettings) -> Iterator[Bus]:
    b = Bus(broker.bootstrap_servers)
    try:
        yield b
    finally:
        b.close()


def sim_orders(run_dir: Path) -> list[str]:
    """The ClOrdIDs of the orders the simulator took (from its record)."""
    db = sqlite3.connect(run_dir / "venue.sqlite")
    try:
        return [json.loads(b)["cl_ord_id"] for (b,) in db.execute("SELECT body FROM orders")]
    finally:
        db.close()


def sim_open_orders(run_dir: Path) -> list[str]:
    """The ClOrdIDs of the orders the simulator's record has still working."""
    db = sqlite3.connect(run_dir / "venue.sqlite")
    try:
        return [o["cl_ord_id"] for o in (json.loads(b) for (b,) in
                                         db.execute("SELECT body FROM orders"))
                if o["ord_status"] in ("0", "1")]
    finally:
        db.close()


def cancel(o: ChildOrder, rid: str) -> CancelRequest:
    return CancelRequest(event_id=request_event_id(o.child_order_id, "cancel", rid),
                         journey_id=o.journey_id, order_id=o.order_id,
                         child_order_id=o.child_order_id, request_id=rid, gateway=o.gateway,
                         requested_at=datetime.now(UTC))


def replace(o: ChildOrder, rid: str, qty: int, limit: float | None) -> ReplaceRequest:
    return ReplaceRequest(event_id=request_event_id(o.child_order_id, "replace", rid),
                          journey_id=o.journey_id, order_id=o.order_id,
                          child_order_id=o.child_order_id, request_id=rid, gateway=o.gateway,
                          quantity=qty, limit_price=limit, requested_at=datetime.now(UTC))


# ------------------------------------------------------------------------------ the tests


def test_fix_gateway_trades_cancels_replaces_and_refuses(procs: Procs, bus: Bus,
                                                         tmp_path: Path) -> None:
    port = free_port()
    procs.sim(port, "sim", "--reject-symbols", "BAD")
    cfg = write_config(tmp_path / "g.yaml", {"fixa": {"protocol": "fix", "port": port}},
                       procs.broker)
    gw = procs.gateway("fixa", cfg)
    watch = [(gw, tmp_path / "gw-fixa.log")]
    market = [child(i, "fixa", tag="m") for i in range(3)]
    resting = child(10, "fixa", limit=1.0, tag="r")  # far below the market: rests
    moved = child(11, "fixa", limit=1.0, tag="r")
    bad = child(12, "fixa", symbol="BAD", tag="r")
    bus.send("fixa", *market, resting, moved, bad)
    bus.wait(lambda: {r.child_order_id for r in bus.reports("fixa")
                      if r.exec_type == "new"} >= {resting.child_order_id,
                                                   moved.child_order_id}, "acks", watch)
    bus.send("fixa", cancel(resting, "c1"), replace(moved, "r1", 400, 500.0),
             b"not json at all", cancel(child(99, "fixa"), "c9"))
    done = [o.child_order_id for o in [*market, moved]]
    bus.wait(lambda: all(bus.filled(c) == q for c, q in zip(done, [500, 500, 500, 400],
                                                             strict=True)), "fills", watch)
    bus.wait(lambda: any(r.child_order_id == resting.child_order_id and
                         r.exec_type == "cancelled" for r in bus.reports()), "cancel", watch)
    bus.wait(lambda: len(bus.dlq()) >= 2, "dead letters", watch)
    reps = bus.reports("fixa")
    assert [r.exec_type for r in reps if r.child_order_id == bad.child_order_id] == ["rejected"]
    assert any(r.exec_type == "replaced" and r.order_qty == 400 for r in reps
               if r.child_order_id == moved.child_order_id)
    assert {(d["stage"], d["code"]) for d in bus.dlq()} == {
        ("gateway", "NOT_JSON"), ("gateway", "UNKNOWN_CHILD_ORDER")}
    for r in reps:  # every report carries its journey and the block's id as key
        assert r.journey_id == "j" + r.order_id[1:]
    keys = {k for k, _ in bus.got["mats.exec-reports"]}
    assert keys == {r.order_id.encode() for r in reps}
    assert len({r.exec_id for r in reps}) == len(reps)
    bus.wait(lambda: any(s.state == "logged_on" and s.open_orders == 0
                         and s.next_sender_seq for s in bus.status("fixa")), "status", watch)
    # garbage on the simulator's FIX port: that connection is dropped, trading goes on
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x00\xffGARBAGE 8=FIX.4.4\x019=5\x0135=D\x0110=000\x01" * 20)
    later = child(20, "fixa", tag="g")
    bus.send("fixa", later)
    bus.wait(lambda: bus.filled(later.child_order_id) == 500, "fill after garbage", watch)


def test_simulator_killed_mid_session_no_duplicate_no_lost_fill(procs: Procs, bus: Bus,
                                                                 tmp_path: Path) -> None:
    port = free_port()
    sim = procs.sim(port, "sim", "--tick-ms", "150")  # orders take a few ticks to fill
    cfg = write_config(tmp_path / "g.yaml", {"fixk": {"protocol": "fix", "port": port}},
                       procs.broker)
    gw = procs.gateway("fixk", cfg)
    watch = [(gw, tmp_path / "gw-fixk.log")]
    first = [child(i, "fixk", qty=2000, tag="k") for i in range(10)]
    bus.send("fixk", *first)
    bus.wait(lambda: any(r.is_fill for r in bus.reports("fixk")), "a first fill", watch)
    sim.send_signal(signal.SIGKILL)
    sim.wait(timeout=30)
    assert sim_open_orders(tmp_path / "sim"), "the simulator died with nothing open"
    second = [child(i, "fixk", qty=2000, tag="k") for i in range(10, 20)]
    bus.send("fixk", *second)  # while the broker is away: they wait
    bus.wait(lambda: any(s.state == "reconnecting" for s in bus.status("fixk")),
             "reconnecting status", watch)
    procs.sim(port, "sim")  # the same run folder: same orders, same sequence numbers
    everything = [o.child_order_id for o in first + second]
    bus.wait(lambda: all(bus.filled(c) == 2000 for c in everything), "every fill", watch)
    assert sorted(sim_orders(tmp_path / "sim")) == sorted(everything)
    by_child: dict[str, int] = {}
    for r in bus.reports("fixk"):
        if r.exec_type == "new":
            by_child[r.child_order_id] = by_child.get(r.child_order_id, 0) + 1
    assert set(by_child) == set(everything)
    assert any(s.reconnects >= 1 for s in bus.status("fixk"))


def test_sigkilled_gateway_resumes_without_resending_while_others_trade(
        procs: Procs, bus: Bus, tmp_path: Path) -> None:
    fport, hport = free_port(), free_port()
    procs.sim(fport, "fsim")
    procs.sim(hport, "hsim", "--protocol", "http")
    cfg = write_config(tmp_path / "g.yaml", {"fixs": {"protocol": "fix", "port": fport},
                                              "https": {"protocol": "http", "port": hport}},
                       procs.broker)
    fgw = procs.gateway("fixs", cfg)
    hgw = procs.gateway("https", cfg)
    hwatch = [(hgw, tmp_path / "gw-https.log")]
    first = [child(i, "fixs", tag="s") for i in range(5)]
    bus.send("fixs", *first)
    bus.wait(lambda: all(bus.filled(o.child_order_id) == 500 for o in first), "first fills",
             [(fgw, tmp_path / "gw-fixs.log")])
    fgw.send_signal(signal.SIGKILL)
    fgw.wait(timeout=30)
    # the other gateway keeps trading meanwhile
    others = [child(i, "https", tag="h") for i in range(5)]
    bus.send("https", *others)
    bus.wait(lambda: all(bus.filled(o.child_order_id) == 500 for o in others),
             "http gateway fills", hwatch)
    waiting = [child(i, "fixs", tag="s") for i in range(5, 10)]
    bus.send("fixs", *waiting)
    fgw2 = procs.gateway("fixs", cfg)
    everything = [o.child_order_id for o in first + waiting]
    bus.wait(lambda: all(bus.filled(c) == 500 for c in everything), "fills after restart",
             [(fgw2, tmp_path / "gw-fixs.log")])
    assert sorted(sim_orders(tmp_path / "fsim")) == sorted(everything)
    assert sorted(sim_orders(tmp_path / "hsim")) == sorted(o.child_order_id for o in others)


# ------------------------------------------------------------------------------ a rogue broker


def run_rogue_acceptor(port: int, run: Path) -> None:
    """A QuickFIX acceptor that answers every order with an unknown id and out of order.

    It runs as its own process (``python tests/test_gateway_e2e.py PORT DIR``), as a broker
    does, until SIGTERM.
    """
    import threading

    from mats.gateway import fixwire
    from mats.gateway.models import BrokerReport

    fix = fixwire.quickfix()
    base: Any = fix.Application

    class Rogue(base):  # type: ignore[misc]
        n = 0

        def onCreate(self, sid: Any) -> None: ...
        def onLogon(self, sid: Any) -> None: ...
        def onLogout(self, sid: Any) -> None: ...
        def toAdmin(self, m: Any, sid: Any) -> None: ...
        def fromAdmin(self, m: Any, sid: Any) -> None: ...
        def toApp(self, m: Any, sid: Any) -> None: ...

        def fromApp(self, m: Any, sid: Any) -> None:
            cl, sym, side, qty, _ = fixwire.order_fields(m)

            def rep(cl_id: str, et: str, st: str, cum: int, last: int) -> None:
                Rogue.n += 1
                r = BrokerReport(exec_id=f"R{Rogue.n}", cl_ord_id=cl_id, exec_type=et,
                                 ord_status=st, symbol=sym, side=side, order_qty=qty,
                                 cum_qty=cum, leaves_qty=qty - cum if st in "01" else 0,
                                 avg_px=10.0 if cum else None, last_qty=last,
                                 last_px=10.0 if last else None, broker_order_id="X")
                fix.Session.sendToTarget(fixwire.execution_report(r), sid)

            rep("GHOST-" + cl, "0", "0", 0, 0)  # unknown ClOrdID
            rep(cl, "F", "2", qty, qty)  # the fill before the ack
            rep(cl, "0", "0", 0, 0)  # the ack, late: stale

    run.mkdir(parents=True, exist_ok=True)
    (run / "rogue.cfg").write_text(fixwire.session_settings(
        initiator=False, sender="SIM", target="MATS", host="127.0.0.1", port=port,
        store=run / "store"), encoding="utf-8")
    settings = fix.SessionSettings(str(run / "rogue.cfg"))
    app = Rogue()
    acceptor = fix.SocketAcceptor(app, fix.MemoryStoreFactory(), settings)
    acceptor.start()
    print("listening on", port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    os._exit(0)  # the broker goes away as a broker does: no goodbye


def test_unknown_ids_and_out_of_order_reports_are_alerted_not_fatal(
        procs: Procs, bus: Bus, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "rogue.log"
    with log.open("wb") as out:
        rogue = subprocess.Popen([sys.executable, __file__, str(port), str(tmp_path / "rogue")],
                                 stdout=out, stderr=subprocess.STDOUT, env=_env(procs.broker))
    procs.all.append((rogue, log))
    wait_for(lambda: "listening on" in log.read_text(), "the rogue broker", rogue, log)
    cfg = write_config(tmp_path / "g.yaml", {"fixr": {"protocol": "fix", "port": port}},
                       procs.broker)
    gw = procs.gateway("fixr", cfg)
    watch = [(gw, tmp_path / "gw-fixr.log")]
    o = child(1, "fixr", tag="x")
    bus.send("fixr", o)
    bus.wait(lambda: bus.filled(o.child_order_id) == 500, "the fill", watch)
    bus.wait(lambda: sum("GHOST" in a or "arrived after" in a for a in bus.alerts()) >= 2,
             "alerts", watch)
    assert [r.exec_type for r in bus.reports("fixr")] == ["fill"]
    assert gw.poll() is None
    bus.wait(lambda: any(s.last_error for s in bus.status("fixr")), "error status", watch)


def test_garbage_from_the_broker_side_then_a_real_broker(procs: Procs, bus: Bus,
                                                        tmp_path: Path) -> None:
    """A "broker" that answers the logon with garbage: the gateway reconnects, never dies."""
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    cfg = write_config(tmp_path / "g.yaml", {"fixg": {"protocol": "fix", "port": port}},
                       procs.broker)
    gw = procs.gateway("fixg", cfg)
    watch = [(gw, tmp_path / "gw-fixg.log")]
    server.settimeout(WAIT_S)
    try:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(WAIT_S)
            assert b"35=A" in conn.recv(4096)  # its logon
            conn.sendall(b"\x00\xff\xfegarbage8=FIX.4.4\x019=12\x0135=Z\x0110=000\x01"
                         b"8=FIX.4.4\x019=999\x0135=8\x01" + b"\x07" * 200)
    finally:
        server.close()
    bus.wait(lambda: any(s.state == "reconnecting" and s.last_error
                         for s in bus.status("fixg")), "the reconnecting status", watch)
    procs.sim(port, "sim")
    o = child(1, "fixg", tag="gg")
    bus.send("fixg", o)
    bus.wait(lambda: bus.filled(o.child_order_id) == 500, "a fill from the real broker", watch)
    assert gw.poll() is None


def test_restart_reconciles_orders_it_may_not_have_sent(procs: Procs, bus: Bus,
                                                        tmp_path: Path) -> None:
    """A gateway that died between recording an order and sending it asks before sending."""
    from mats.gateway.journal import Journal

    port = free_port()
    procs.sim(port, "sim")
    cfg = write_config(tmp_path / "g.yaml", {"fixp": {"protocol": "fix", "port": port}},
                       procs.broker)
    gw = procs.gateway("fixp", cfg)
    sent = child(1, "fixp", tag="p")
    bus.send("fixp", sent)
    bus.wait(lambda: bus.filled(sent.child_order_id) == 500, "the first fill",
             [(gw, tmp_path / "gw-fixp.log")])
    seq_before = max(s.next_sender_seq or 0 for s in bus.status("fixp"))
    gw.send_signal(signal.SIGKILL)
    gw.wait(timeout=30)
    # as if it had died mid-send: the sent order is "pending" again, and one more is
    # recorded but never reached the broker
    journal = Journal(tmp_path / "gw-fixp" / "journal.sqlite", "fixp")
    never = child(2, "fixp", tag="p")
    journal.add_orders([never])
    journal.close()
    db = sqlite3.connect(tmp_path / "gw-fixp" / "journal.sqlite")
    with db:
        db.execute("UPDATE orders SET state = 'pending' WHERE child_order_id = ?",
                   (sent.child_order_id,))
    db.close()
    gw2 = procs.gateway("fixp", cfg)
    bus.wait(lambda: bus.filled(never.child_order_id) == 500, "the unsent order's fill",
             [(gw2, tmp_path / "gw-fixp.log")])
    assert sorted(sim_orders(tmp_path / "sim")) == sorted([sent.child_order_id,
                                                           never.child_order_id])
    assert not any(r.exec_type == "rejected" for r in bus.reports("fixp"))
    # sequence numbers went on from where they were: the FileStore survived the SIGKILL
    after = [s.next_sender_seq or 0 for s in bus.status("fixp") if s.pid == gw2.pid]
    assert after and min(a for a in after if a) >= seq_before


def test_cancel_on_disconnect_policy(procs: Procs, bus: Bus, tmp_path: Path) -> None:
    port = free_port()
    sim = procs.sim(port, "sim")
    cfg = write_config(tmp_path / "g.yaml", {"fixc": {"protocol": "fix", "port": port,
                                                      "cancel_on_disconnect": True}},
                       procs.broker)
    gw = procs.gateway("fixc", cfg)
    watch = [(gw, tmp_path / "gw-fixc.log")]
    resting = child(1, "fixc", limit=1.0, tag="c")
    bus.send("fixc", resting)
    bus.wait(lambda: any(r.exec_type == "new" for r in bus.reports("fixc")), "the ack", watch)
    sim.send_signal(signal.SIGKILL)
    sim.wait(timeout=30)
    procs.sim(port, "sim")
    bus.wait(lambda: any(r.exec_type == "cancelled" and r.child_order_id ==
                         resting.child_order_id for r in bus.reports("fixc")),
             "the cancel after reconnecting", watch)
    bus.wait(lambda: any(s.open_orders == 0 and s.reconnects >= 1 for s in bus.status("fixc")),
             "no open order left", watch)


def test_broker_cancel_on_disconnect_reaches_the_gateway_on_logon(procs: Procs, bus: Bus,
                                                                  tmp_path: Path) -> None:
    port = free_port()
    procs.sim(port, "sim", "--cancel-on-disconnect")
    cfg = write_config(tmp_path / "g.yaml", {"fixb": {"protocol": "fix", "port": port}},
                       procs.broker)
    gw = procs.gateway("fixb", cfg)
    resting = child(1, "fixb", limit=1.0, tag="b")
    bus.send("fixb", resting)
    bus.wait(lambda: any(r.exec_type == "new" for r in bus.reports("fixb")), "the ack",
             [(gw, tmp_path / "gw-fixb.log")])
    gw.send_signal(signal.SIGKILL)
    gw.wait(timeout=30)
    gw2 = procs.gateway("fixb", cfg)
    bus.wait(lambda: any(r.exec_type == "cancelled" for r in bus.reports("fixb")),
             "the broker's cancel", [(gw2, tmp_path / "gw-fixb.log")])


def test_http_gateway_cancels_and_replaces(procs: Procs, bus: Bus, tmp_path: Path) -> None:
    port = free_port()
    procs.sim(port, "hsim", "--protocol", "http", "--reject-symbols", "BAD")
    cfg = write_config(tmp_path / "g.yaml", {"httpc": {"protocol": "http", "port": port}},
                       procs.broker)
    gw = procs.gateway("httpc", cfg)
    watch = [(gw, tmp_path / "gw-httpc.log")]
    a, b = child(1, "httpc", limit=1.0, tag="hc"), child(2, "httpc", limit=1.0, tag="hc")
    bad = child(3, "httpc", symbol="BAD", tag="hc")
    bus.send("httpc", a, b, bad)
    bus.wait(lambda: len([r for r in bus.reports("httpc") if r.exec_type in
                          ("new", "rejected")]) == 3, "acks", watch)
    bus.send("httpc", cancel(a, "x1"), replace(b, "y1", 300, 1000.0))
    bus.wait(lambda: bus.filled(b.child_order_id) == 300, "the replaced order's fills", watch)
    bus.wait(lambda: any(r.exec_type == "cancelled" for r in bus.reports("httpc")), "cancel",
             watch)
    kinds = {(r.child_order_id, r.exec_type) for r in bus.reports("httpc")}
    assert (bad.child_order_id, "rejected") in kinds
    assert (b.child_order_id, "replaced") in kinds
    bus.wait(lambda: any(s.protocol == "http" and s.state == "logged_on"
                         for s in bus.status("httpc")), "status", watch)


# ------------------------------------------------------------------------------ QuickFIX/J


def _executor_jars() -> Path:
    """QuickFIX/J's Executor example and its dependencies (infra/fix/pom.xml), via Maven."""
    import shutil

    lib = REPO / "infra" / "fix" / "lib"
    if not any(lib.glob("quickfixj-examples-executor-*.jar")):
        if shutil.which("mvn") is None or shutil.which("java") is None:
            pytest.skip("the QuickFIX/J Executor needs Java and Maven")
        done = subprocess.run(["mvn", "-q", "-B", "-f", str(REPO / "infra" / "fix" / "pom.xml"),
                               "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
                              capture_output=True, text=True, check=False, timeout=600)
        assert done.returncode == 0, f"mvn failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return lib


def test_interoperates_with_quickfixj_executor(procs: Procs, bus: Bus, tmp_path: Path) -> None:
    """QuickFIX/J's Executor example, a FIX 4.4 acceptor MATS did not write.

    It acknowledges and fills with ExecType 2, which FIX 4.4 does not have (it has F): a
    gateway that validates strictly refuses those reports (session reject, alerted) and one
    told to accept that value from this broker books them. It knows no OrderCancelRequest:
    the cancel comes back as a business reject.
    """
    lib = _executor_jars()
    port = free_port()
    cfg_text = "\n".join([
        "[default]", f"FileStorePath={tmp_path / 'qfj-store'}", "ConnectionType=acceptor",
        "StartTime=00:00:00", "EndTime=00:00:00", "HeartBtInt=30", "ValidOrderTypes=1,2",
        "SenderCompID=EXEC", "UseDataDictionary=Y", "DefaultMarketPrice=12.30",
        "SocketAcceptAddress=127.0.0.1", f"SocketAcceptPort={port}", "",
        "[session]", "BeginString=FIX.4.4", "TargetCompID=STRICT", "",
        "[session]", "BeginString=FIX.4.4", "TargetCompID=LENIENT", ""])
    (tmp_path / "executor.cfg").write_text(cfg_text, encoding="utf-8")
    log = tmp_path / "executor.log"
    with log.open("wb") as out:
        executor = subprocess.Popen(  # it runs until its standard input says enter
            ["java", "-cp", f"{lib}/*", "quickfix.examples.executor.Executor",
             str(tmp_path / "executor.cfg")], stdin=subprocess.PIPE, stdout=out,
            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for(lambda: "Listening for connections" in log.read_text(errors="replace"),
                 "the Executor to listen", executor, log)
        cfg = write_config(tmp_path / "g.yaml", {
            "qfjs": {"protocol": "fix", "port": port, "sender_comp_id": "STRICT",
                     "target_comp_id": "EXEC"},
            "qfjl": {"protocol": "fix", "port": port, "sender_comp_id": "LENIENT",
                     "target_comp_id": "EXEC", "accept_values": {"150": ["1", "2"]}}},
            procs.broker)
        strict = procs.gateway("qfjs", cfg)
        lenient = procs.gateway("qfjl", cfg)
        watch = [(strict, tmp_path / "gw-qfjs.log"), (lenient, tmp_path / "gw-qfjl.log"),
                 (executor, log)]
        bus.send("qfjs", child(1, "qfjs", qty=100, symbol="IBM", tag="q"))
        bus.wait(lambda: any("tag 150" in a for a in bus.alerts()), "the strict refusal", watch)
        market = child(2, "qfjl", qty=100, symbol="IBM", tag="q")
        limit = child(3, "qfjl", qty=100, symbol="IBM", limit=12.5, tag="q")
        bus.send("qfjl", market, limit)
        bus.wait(lambda: bus.filled(market.child_order_id) == 100
                 and bus.filled(limit.child_order_id) == 100, "the Executor's fills", watch)
        fills = [r for r in bus.reports("qfjl") if r.is_fill]
        assert {r.last_px for r in fills} == {12.3}
        assert {r.exec_type for r in bus.reports("qfjl")} == {"new", "fill"}
        assert not bus.reports("qfjs")
        resting = child(4, "qfjl", qty=100, symbol="IBM", limit=10.0, tag="q")
        bus.send("qfjl", resting)
        bus.wait(lambda: any(r.child_order_id == resting.child_order_id
                             for r in bus.reports("qfjl")), "the ack", watch)
        bus.send("qfjl", cancel(resting, "c1"))
        bus.wait(lambda: any("business reject" in a for a in bus.alerts()),
                 "the business reject", watch)
    finally:
        executor.kill()
        executor.wait(timeout=30)
        if executor.stdin is not None:
            executor.stdin.close()



def test_gateway_stops_on_sigterm_even_when_kafka_is_gone(procs: Procs, tmp_path: Path) -> None:
    """The last test of the module: it stops the module's Kafka broker."""
    port = free_port()
    procs.sim(port, "sim")
    cfg = write_config(tmp_path / "g.yaml", {"fixt": {"protocol": "fix", "port": port}},
                       procs.broker)
    gw = procs.gateway("fixt", cfg)
    log = tmp_path / "gw-fixt.log"
    wait_for(lambda: "session logged_on" in log.read_text(), "the logon", gw, log)
    kafka.down(procs.broker, timeout=30)
    gw.send_signal(signal.SIGTERM)
    assert gw.wait(timeout=WAIT_S) == 0, log.read_text()[-3000:]


if __name__ == "__main__":
    run_rogue_acceptor(int(sys.argv[1]), Path(sys.argv[2]))
