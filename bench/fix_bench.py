"""Benchmark of the FIX gateway: child order on Kafka to execution report on Kafka.

Two pipelines run in the same process tree, on loopback, one after the other:

``gateway``
    a child order produced to ``mats.orders.bench`` -> the gateway process (``mats gateway run
    bench``: Kafka consumer, journal, QuickFIX initiator) -> the broker simulator process
    (``mats broker-sim``: QuickFIX acceptor, venue, its own record) -> the ExecutionReport back
    -> the gateway's journal -> ``mats.exec-reports`` -> read here. The round trip of one order
    is from just before it is produced to when its ``new`` report is read from Kafka.
``bare_quickfix``
    the floor: a QuickFIX initiator here sends the same NewOrderSingles (same builder, same
    data dictionary validation on both ends, same FileStore persistence) to a bare QuickFIX
    acceptor process that answers each with an ExecutionReport ``new``; the round trip is from
    just before ``sendToTarget`` to when the report reaches the initiator's ``fromApp``.

``kafka_relay_floor``
    the floor of the Kafka part of the gateway's path: the gateway and the simulator replaced by
    a plain aiokafka relay process (this file with ``--relay``) that consumes each child order
    from ``mats.orders.bench`` and at once produces a ``new`` and a ``fill`` report for it to
    ``mats.exec-reports`` (consumer and producer set as the gateway's: ``acks=all``,
    idempotence, no linger). Measured exactly as the gateway path: no FIX, no journal, only the
    two Kafka hops and a Python client on each side.

Each pipeline is measured twice: a burst of ``--orders`` orders sent as fast as possible gives
``orders_per_s`` (orders over the time from the first send to the last ``new``), and a paced
run of ``--paced`` orders at ``--rate`` a second gives ``p50_ms`` and ``p99_ms`` (latency at a
steady load, not queueing behind a burst). Goals (2,000 orders/s; round trip within 3x the
bare pair) are reported, never asserted.

Run it with ``make bench``, or directly::

    .venv/bin/python bench/fix_bench.py                 # writes bench/results/fix.json
    .venv/bin/python bench/fix_bench.py --orders 2000 --paced 500 --no-write

A Kafka 4 broker of its own is started in a temporary folder (``mats kafka`` machinery) and
stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mats import kafka
from mats.blocks import ChildOrder, Lot
from mats.gateway import fixwire

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "fix.json"
GATEWAY = "bench"
EXEC_REPORTS = "mats.exec-reports"
WAIT_S = 300


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _summary(burst_n: int, burst_s: float, lat_ms: list[float]) -> dict[str, float]:
    return {"orders_per_s": round(burst_n / burst_s, 1),
            "p50_ms": round(statistics.median(lat_ms), 3),
            "p99_ms": round(_pct(lat_ms, 0.99), 3)}


def _wait_line(log: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_S
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            raise SystemExit(f"process died: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no {text!r} in {log}")
        time.sleep(0.05)


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ------------------------------------------------------------------------------ gateway path


def _order(run: str, n: int) -> ChildOrder:
    oid = f"{run}-{n}"
    return ChildOrder(event_id=oid, journey_id=f"j{oid}", order_id=oid,
                      child_order_id=f"{oid}:{GATEWAY}", gateway=GATEWAY, symbol="AAPL",
                      side="buy" if n % 2 else "sell", quantity=100, limit_price=None,
                      reference_price=100.0, decided_at=datetime.now(UTC),
                      allocations=[Lot(account_id="A1", broker=GATEWAY, allocated=100,
                                       quantity=100, status="ok")])


async def _gateway_run(bootstrap: str, run: str, n: int, rate: float | None) -> tuple[
        float, list[float], list[float]]:
    """Send ``n`` orders (paced at ``rate``/s, or a burst): seconds to the last ack, each
    order's round trip (ms), and each one's time to its report's Kafka CreateTime (ms: the
    part up to the gateway's producing it, at the broker clock's millisecond resolution)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=5)
    await producer.start()
    await consumer.start()
    tp = TopicPartition(EXEC_REPORTS, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    await consumer.position(tp)
    orders = [(o.child_order_id, o.order_id.encode(), o.model_dump_json().encode())
              for o in (_order(run, i) for i in range(n))]
    sent: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    acked: dict[str, float] = {}
    created: dict[str, float] = {}  # the 'new' report's Kafka CreateTime (epoch seconds)
    filled: set[str] = set()
    topic = kafka.gateway_topic(GATEWAY).name

    async def read() -> None:
        # until every order is acknowledged and filled, so that the next run does not
        # queue behind this one's fills
        deadline = time.monotonic() + WAIT_S
        while len(acked) < n or len(filled) < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"gateway: {len(acked)}/{n} acks, {len(filled)}/{n} fills "
                                 f"in {WAIT_S}s")
            for msgs in (await consumer.getmany(timeout_ms=100)).values():
                now = time.perf_counter()
                for m in msgs:
                    d = json.loads(m.value)
                    cid = d["child_order_id"]
                    if not cid.startswith(run + "-"):
                        continue
                    if d["exec_type"] == "new":
                        acked.setdefault(cid, now)
                        created.setdefault(cid, m.timestamp / 1000)
                    elif d["exec_type"] == "fill":
                        filled.add(cid)

    reader = asyncio.create_task(read())
    t0 = time.perf_counter()
    futures = []
    for i, (cid, key, value) in enumerate(orders):
        if rate:
            due = t0 + i / rate
            while (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
        sent[cid] = time.perf_counter()
        sent_wall[cid] = time.time()
        futures.append(await producer.send(topic, value, key=key))
        if rate is None and len(futures) >= 500:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    await reader
    await producer.stop()
    await consumer.stop()
    last = max(acked.values())
    first = min(sent.values())
    return (last - first, [(acked[c] - sent[c]) * 1000 for c in sent],
            [(created[c] - sent_wall[c]) * 1000 for c in sent])


async def _relay(bootstrap: str, ready: Path) -> None:
    """The Kafka floor: each child order straight back as a 'new' and a 'fill' report."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=0)
    consumer = AIOKafkaConsumer(kafka.gateway_topic(GATEWAY).name, bootstrap_servers=bootstrap,
                                group_id="bench-relay", enable_auto_commit=False,
                                auto_offset_reset="latest", fetch_max_wait_ms=10)
    await producer.start()
    await consumer.start()
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    for tp in consumer.assignment():
        await consumer.position(tp)
    ready.write_text("ready", encoding="utf-8")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=100, max_records=500)
        for msgs in batch.values():
            for m in msgs:
                cid = json.loads(m.value)["child_order_id"]
                for kind in ("new", "fill"):
                    await producer.send(EXEC_REPORTS, json.dumps(
                        {"child_order_id": cid, "exec_type": kind}).encode(), key=m.key)
    await consumer.stop()
    await producer.stop()


def bench_relay(tmp: Path, bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    ready = tmp / "relay.ready"
    log = tmp / "relay.log"
    with log.open("wb") as out:
        relay = subprocess.Popen([sys.executable, __file__, "--relay", bootstrap, str(ready)],
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_S
        while not ready.exists():
            if relay.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"relay did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        asyncio.run(_gateway_run(bootstrap, "rwarm", args.warmup, None))
        burst_s, _, _ = asyncio.run(_gateway_run(bootstrap, "rburst", args.orders, None))
        _, lat, _ = asyncio.run(_gateway_run(bootstrap, "rpaced", args.paced, args.rate))
    finally:
        _stop(relay)
    return _summary(args.orders, burst_s, lat)


def bench_gateway(tmp: Path, bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATS_")}
    env["MATS_KAFKA_BOOTSTRAP"] = bootstrap
    port = kafka.free_port()
    cfg = tmp / "gateways.yaml"
    cfg.write_text(f"gateways:\n  {GATEWAY}: {{protocol: fix, port: {port}, "
                   "max_msgs_per_s: 1000000, status_interval_s: 2}\n", encoding="utf-8")
    sim_log, gw_log = tmp / "sim.log", tmp / "gateway.log"
    py = [sys.executable, "-m", "mats.gateway", "--log-level", "WARNING"]
    with sim_log.open("wb") as out:
        sim = subprocess.Popen([*py, "broker-sim", "--port", str(port), "--run-dir",
                                str(tmp / "sim"), "--instant-fill", "--tick-ms", "20"],
                               env=env, stdout=out, stderr=subprocess.STDOUT)
    gw = None
    try:
        _wait_line(sim_log, "listening on", sim)
        asyncio.run(kafka.ensure_topics(bootstrap, [kafka.gateway_topic(GATEWAY)]))
        with gw_log.open("wb") as out:
            gw = subprocess.Popen([*py, "gateway", "run", GATEWAY, "--config", str(cfg),
                                   "--run-dir", str(tmp / "gw")], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
        asyncio.run(_gateway_run(bootstrap, "warm", args.warmup, None))
        burst_s, _, _ = asyncio.run(_gateway_run(bootstrap, "burst", args.orders, None))
        _, lat, to_created = asyncio.run(_gateway_run(bootstrap, "paced", args.paced,
                                                      args.rate))
    finally:
        if gw is not None:
            _stop(gw)
        _stop(sim)
    return {**_summary(args.orders, burst_s, lat),
            "to_report_created_p50_ms": round(statistics.median(to_created), 3),
            "to_report_created_p99_ms": round(_pct(to_created, 0.99), 3)}


# ------------------------------------------------------------------------------ bare pair


def run_bare_acceptor(port: int, run: Path) -> None:
    """The bare acceptor: every NewOrderSingle answered at once with an ExecutionReport new."""
    from mats.gateway.models import BrokerReport

    fix = fixwire.quickfix()
    base: Any = fix.Application
    counter = iter(range(1, 1 << 62))

    class Bare(base):  # type: ignore[misc]
        def onCreate(self, sid: Any) -> None: ...
        def onLogon(self, sid: Any) -> None: ...
        def onLogout(self, sid: Any) -> None: ...
        def toAdmin(self, m: Any, sid: Any) -> None: ...
        def fromAdmin(self, m: Any, sid: Any) -> None: ...
        def toApp(self, m: Any, sid: Any) -> None: ...

        def fromApp(self, m: Any, sid: Any) -> None:
            cl, sym, side, qty, _ = fixwire.order_fields(m)
            n = next(counter)
            fix.Session.sendToTarget(fixwire.execution_report(BrokerReport(
                exec_id=f"E{n}", cl_ord_id=cl, exec_type="0", ord_status="0", symbol=sym,
                side=side, order_qty=qty, cum_qty=0, leaves_qty=qty,
                broker_order_id=f"O{n}")), sid)

    run.mkdir(parents=True, exist_ok=True)
    (run / "acceptor.cfg").write_text(fixwire.session_settings(
        initiator=False, sender="SIM", target="MATS", host="127.0.0.1", port=port,
        store=run / "store"), encoding="utf-8")
    settings = fix.SessionSettings(str(run / "acceptor.cfg"))
    app = Bare()
    acceptor = fix.SocketAcceptor(app, fix.FileStoreFactory(settings), settings)
    acceptor.start()
    print("listening", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    acceptor.stop()


class _Initiator:
    def __init__(self, port: int, run: Path) -> None:
        fix = fixwire.quickfix()
        self.fix = fix
        self.acked: dict[str, float] = {}
        self.cv = threading.Condition()
        self.logged_on = threading.Event()
        outer = self
        base: Any = fix.Application

        class App(base):  # type: ignore[misc]
            def onCreate(self, sid: Any) -> None: ...
            def onLogon(self, sid: Any) -> None:
                outer.logged_on.set()
            def onLogout(self, sid: Any) -> None: ...
            def toAdmin(self, m: Any, sid: Any) -> None: ...
            def fromAdmin(self, m: Any, sid: Any) -> None: ...
            def toApp(self, m: Any, sid: Any) -> None: ...

            def fromApp(self, m: Any, sid: Any) -> None:
                now = time.perf_counter()
                cl = fixwire.get(m, fixwire.CL_ORD_ID)
                with outer.cv:
                    outer.acked[cl] = now
                    outer.cv.notify_all()

        run.mkdir(parents=True, exist_ok=True)
        (run / "initiator.cfg").write_text(fixwire.session_settings(
            initiator=True, sender="MATS", target="SIM", host="127.0.0.1", port=port,
            store=run / "store"), encoding="utf-8")
        settings = fix.SessionSettings(str(run / "initiator.cfg"))
        self.app = App()
        self.initiator = fix.SocketInitiator(self.app, fix.FileStoreFactory(settings),
                                             settings)
        self.sid = fix.SessionID(fixwire.BEGIN_STRING, "MATS", "SIM")
        self.initiator.start()
        if not self.logged_on.wait(WAIT_S):
            raise SystemExit("bare initiator: no logon")

    def run(self, tag: str, n: int, rate: float | None) -> tuple[float, list[float]]:
        sent: dict[str, float] = {}
        t0 = time.perf_counter()
        for i in range(n):
            cl = f"{tag}-{i}"
            if rate:
                due = t0 + i / rate
                while (delay := due - time.perf_counter()) > 0:
                    time.sleep(min(delay, 0.001))
            m = fixwire.new_order_single(cl, "AAPL", "buy" if i % 2 else "sell", 100, None)
            sent[cl] = time.perf_counter()
            self.fix.Session.sendToTarget(m, self.sid)
        with self.cv:
            ok = self.cv.wait_for(lambda: all(c in self.acked for c in sent), WAIT_S)
        if not ok:
            raise SystemExit("bare pair: acks missing")
        return (max(self.acked[c] for c in sent) - min(sent.values()),
                [(self.acked[c] - sent[c]) * 1000 for c in sent])

    def stop(self) -> None:
        self.initiator.stop()


def bench_bare(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = kafka.free_port()
    log = tmp / "bare.log"
    with log.open("wb") as out:
        acc = subprocess.Popen([sys.executable, __file__, "--bare-acceptor", str(port),
                                str(tmp / "bare-acceptor")], stdout=out,
                               stderr=subprocess.STDOUT)
    try:
        _wait_line(log, "listening", acc)
        ini = _Initiator(port, tmp / "bare-initiator")
        try:
            ini.run("warm", args.warmup, None)
            burst_s, _ = ini.run("burst", args.orders, None)
            _, lat = ini.run("paced", args.paced, args.rate)
        finally:
            ini.stop()
    finally:
        _stop(acc)
    return _summary(args.orders, burst_s, lat)


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000, help="orders in the burst")
    parser.add_argument("--paced", type=int, default=2_000, help="orders in the paced run")
    parser.add_argument("--rate", type=float, default=500.0, help="paced orders a second")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--bare-acceptor", nargs=2, metavar=("PORT", "DIR"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--relay", nargs=2, metavar=("BOOTSTRAP", "READY_FILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_acceptor:
        run_bare_acceptor(int(args.bare_acceptor[0]), Path(args.bare_acceptor[1]))
        return 0
    if args.relay:
        asyncio.run(_relay(args.relay[0], Path(args.relay[1])))
        return 0
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mats-fix-bench-") as tmp_name:
        tmp = Path(tmp_name)
        cfg = kafka.settings(run_dir=tmp / "kafka", port=0, controller_port=0, env={},
                             gateways=[GATEWAY])
        kafka.up(cfg, timeout=120)
        started = kafka.settings(run_dir=tmp / "kafka", env={}, gateways=[GATEWAY])
        try:
            bare = bench_bare(tmp, args)
            print(f"bare_quickfix: {bare}", flush=True)
            gateway = bench_gateway(tmp, started.bootstrap_servers, args)
            print(f"gateway:       {gateway}", flush=True)
            relay = bench_relay(tmp, started.bootstrap_servers, args)
            print(f"kafka relay:   {relay}", flush=True)
        finally:
            kafka.down(started, timeout=30)
    result = {
        "gateway": gateway,
        "bare_quickfix": bare,
        "kafka_relay_floor": relay,
        "goals": {
            "orders_per_s_at_least": 2000,
            "round_trip_within_x_bare": 3,
            "orders_per_s_met": gateway["orders_per_s"] >= 2000,
            "p50_ratio_to_bare": round(gateway["p50_ms"] / bare["p50_ms"], 2),
            "p99_ratio_to_bare": round(gateway["p99_ms"] / bare["p99_ms"], 2),
            # the two Kafka hops alone (no FIX, no gateway) against the bare pair: what any
            # gateway on this path has at least
            "relay_floor_p50_ratio_to_bare": round(relay["p50_ms"] / bare["p50_ms"], 2),
            "relay_floor_p99_ratio_to_bare": round(relay["p99_ms"] / bare["p99_ms"], 2),
            "p50_ratio_to_relay_floor": round(gateway["p50_ms"] / relay["p50_ms"], 2),
            "p99_ratio_to_relay_floor": round(gateway["p99_ms"] / relay["p99_ms"], 2),
        },
        "method": {
            "orders_per_s": f"burst of {args.orders} orders, first send to last 'new' report",
            "latency": f"{args.paced} orders paced at {args.rate:g}/s, send to 'new' report",
            "gateway_round_trip": "produced to mats.orders.bench -> read from mats.exec-reports",
            "bare_round_trip": "sendToTarget -> fromApp of the ExecutionReport",
            "relay_round_trip": "as the gateway's, through a plain aiokafka relay instead",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    # other work on the machine shares its cores with every process here
                    "load_avg_1m_before": round(load_before[0], 2),
                    "load_avg_1m_after": round(os.getloadavg()[0], 2)},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(result, indent=2))
    if not args.no_write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
