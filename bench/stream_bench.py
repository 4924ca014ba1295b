"""Benchmark of the intraday stream: signal on Kafka to child order on Kafka, through the worker.

Everything runs in one go against a private Kafka 4 broker started here (``mats kafka``
machinery, free loopback ports, a temporary run folder), in this order:

``worker``
    the real stream worker (``faust -A streams.app worker``, its own OS process: intake ->
    ``mats.blocks`` -> block processing -> ``mats.allocations`` and ``mats.orders.<broker>``),
    with the SQL sink (``faust -A streams.sink worker``, SQLite) running beside it on the same
    cores, as deployed. Block-order signals are produced to ``mats.signals`` keyed by
    strategy: the sample day's orders (``data/sample/orders.json``) cycled, each with a new
    ``order_id``/``journey_id``.

    * latency at fixed rates (``--rates``, default 100 and 1,000 a second): a producer paced by
      absolute due times sends ``--seconds`` of signals (after ``--warmup-s`` not counted);
      each child order read from a gateway topic (every broker of the sample book) is one
      sample: the time it was read here minus the time its signal was handed to the producer.
      Only accepted blocks make child orders, so only they are measured; ``decided`` gives the
      same for the allocation instruction every block makes. ``created_*`` uses the child
      order's Kafka CreateTime instead of the time it was read (the reading side's share).
    * the sustained block rate: a burst of ``--burst`` signals produced as fast as the client
      can; blocks a second from the CreateTime of the allocation instructions (one per block)
      between the 10th and the 90th percentile of the burst (the steady state), and over all.

``aiokafka_floor``
    the worker stopped, a plain aiokafka consume-and-produce loop (this file with
    ``--floor-loop``, its own process and consumer group, ``acks=all`` and idempotence as the
    app's producers) reads the same signal topic and writes each message as it is to
    ``bench.floor-out``; measured the same way (the p99 at 1,000 a second and a burst).

``faust_floor``
    the same for the least a Faust agent can do: a worker of ``bench/faust_floor.py`` (the
    stream app's own app class and settings, no tables and no desk) forwards each signal with
    the app's producer to ``bench.faust-out``. Between it and the aiokafka loop is Faust's own
    cost per message; between it and the worker, what MATS does per block. ``three_out`` runs
    it again sending three messages for each one in (the least a block makes: its allocation
    instruction, a child order, its journal entry on the table's changelog).

``kafka_e2e``
    Kafka's own ``org.apache.kafka.tools.EndToEndLatency`` (one record at a time, produced and
    consumed back; ``--e2e-records`` records of the signals' mean size, ``acks=all``). Its class
    is in the ``kafka-tools`` jar, which the broker's jars (``infra/kafka/lib``) do not hold:
    it is fetched once with Maven into ``run/bench/kafka-tools/`` (git-ignored).

The book is a copy of ``data/sample`` with the order-rate throttle removed and the reference-age
limit lifted (as ``tests/test_reliability.py`` does), and every account's cash, net liquidation
value and positions and the firm's USD exposure limits multiplied by ``--book-scale`` (1,000):
no fills come back in this benchmark, so with the sample's own sizes the accounts' cash and
positions are reserved after a few hundred blocks and every later block is refused at
allocation (no child orders to time). Scaled, about 83 % of the blocks stay accepted for the
whole run; percentages (mandates, sector limits) are unchanged.

Between phases the worker and the sink are left to go idle (each one's CPU use under 10 % for a
second, at most ``--settle-s`` together), so that one phase's backlog (mostly the sink's)
lands in the next as little as it can. The phases run 100/s, 1,000/s, then the burst
(``--burst-before`` moves it before a rate; when this worker cannot finish the burst, what it
leaves undone lands in any phase after).
Waits are bounded: blocks still undecided when a wait ends are counted (``complete: false``);
latency percentiles are then of the blocks decided (lower bounds), the burst's rate of the
blocks decided in ``--burst-wait-s``. ``core_only`` times the same blocks through
:class:`mats.desk.Desk` in this process without Kafka, as a reference taken on the same machine
at the same time.

Run it with ``make bench``, or directly::

    .venv/bin/python bench/stream_bench.py                     # writes bench/results/stream.json
    .venv/bin/python bench/stream_bench.py --seconds 5 --burst 5000 --no-write
    .venv/bin/python bench/stream_bench.py --profile run/bench/burst.svg   # py-spy on the burst

Goals (5,000 blocks a second on one worker; p99 under 25 ms at 1,000 a second; p99 within 5x the
plain aiokafka loop's) are reported, never asserted. The machine's load average is recorded at
the start and the end: other work shares its cores with every process here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from mats import kafka
from mats.blocks import brokers_of
from mats.config import load_book, load_orders

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "stream.json"
SAMPLE = REPO / "data" / "sample"
TOOLS_DIR = REPO / "run" / "bench" / "kafka-tools"
FAUST = Path(sys.executable).parent / "faust"
PYSPY = Path(sys.executable).parent / "py-spy"
SIGNALS = "mats.signals"
BLOCKS = "mats.blocks"
ALLOCATIONS = "mats.allocations"
FLOOR_OUT = "bench.floor-out"
FAUST_OUT = "bench.faust-out"
FAUST_EXTRA = "bench.faust-extra"
E2E_TOPIC = "bench.e2e"
START_WAIT_S = 120  # bounds on a broken run, not timing checks
DRAIN_WAIT_S = 60

GOAL_BLOCKS_PER_S = 5000
GOAL_P99_MS_AT_1000 = 25.0
GOAL_WITHIN_X_FLOOR = 5.0


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and why."""


# ------------------------------------------------------------------------------ small helpers


def _pct(samples: Sequence[float], q: float) -> float | None:
    if not samples:
        return None
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _stats(samples_ms: Sequence[float]) -> dict[str, Any]:
    return {"n": len(samples_ms), "p50_ms": _ms(_pct(samples_ms, 0.50)),
            "p99_ms": _ms(_pct(samples_ms, 0.99)), "max_ms": _ms(max(samples_ms, default=None))}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its waited-for children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, max_s: float, *, idle_share: float = 0.10) -> float:
    """Waits until ``pid`` uses under ``idle_share`` of a core for a second; the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        try:
            c0 = _cpu_s(pid)
            time.sleep(1.0)
            if _cpu_s(pid) - c0 < idle_share:
                break
        except OSError:  # gone: the caller notices
            break
    return round(time.monotonic() - t0, 1)


def settle_all(pids: list[int], max_s: float) -> float:
    """:func:`settle` for each process in turn (all within ``max_s`` together)."""
    waited = 0.0
    for pid in pids:
        waited += settle(pid, max(0.0, max_s - waited))
    return round(waited, 1)


def book_copy(folder: Path, scale: float) -> Path:
    """The sample book with no throttle, no reference-age limit, and ``scale`` times the money."""
    folder.mkdir(parents=True)
    for f in SAMPLE.iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    risk = yaml.safe_load((folder / "risk.yaml").read_text())
    risk.pop("throttle", None)
    risk["max_reference_age_s"] = 1e9
    for k in ("max_gross_exposure", "max_net_exposure", "max_beta_delta"):
        risk[k] *= scale
    (folder / "risk.yaml").write_text(yaml.safe_dump(risk))
    accounts = json.loads((folder / "accounts.json").read_text())
    for a in accounts:
        for k in ("net_liq", "cash", "settled_cash"):
            a[k] *= scale
        a["positions"] = {s: round(q * scale) for s, q in a["positions"].items()}
    (folder / "accounts.json").write_text(json.dumps(accounts, indent=1))
    return folder


class Signals:
    """The sample day's block orders cycled with new ids: ``(order_id, key, value)`` each."""

    def __init__(self) -> None:
        self.orders = load_orders(SAMPLE / "orders.json")
        self.n = 0

    def take(self, run: str, count: int) -> list[tuple[bytes, bytes, bytes]]:
        out = []
        for _ in range(count):
            o = self.orders[self.n % len(self.orders)]
            oid = f"{run}-{self.n}"
            o = o.model_copy(update={"order_id": oid, "journey_id": f"J{oid}"})
            out.append((oid.encode(), o.strategy.encode(), o.model_dump_json().encode()))
            self.n += 1
        return out


# ------------------------------------------------------------------------------ Kafka side


@dataclass
class Seen:
    """What the reader got: per topic, ``(key, value, create_ts_s, read_ts_s)`` in order."""

    records: dict[str, list[tuple[bytes, bytes, float, float]]] = field(default_factory=dict)


class Reader:
    """Reads topics from their end (no consumer group), stamping each record as it arrives."""

    def __init__(self, bootstrap: str, topics: Iterable[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.seen = Seen({t: [] for t in self.topics})
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                         enable_auto_commit=False, fetch_max_wait_ms=5)
        await self.consumer.start()
        # the partition counts of the topic table (the bench's own topics are made so)
        counts = {s.name: s.partitions for s in kafka.topic_specs()}
        counts[FLOOR_OUT] = counts[FAUST_OUT] = kafka.GATEWAY_PARTITIONS
        tps = [TopicPartition(t, p) for t in self.topics for p in range(counts[t])]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=50)
            now = time.time()
            for tp, msgs in batch.items():
                out = self.seen.records[tp.topic]
                for m in msgs:
                    out.append((m.key, m.value, m.timestamp / 1000, now))

    def count(self, topic: str) -> int:
        return len(self.seen.records[topic])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.consumer.stop()


async def _producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=0)
    await producer.start()
    return producer


async def send_paced(producer: Any, batch: Sequence[tuple[bytes, bytes, bytes]], rate: float,
                     sent: dict[bytes, float]) -> float:
    """Sends ``batch`` at ``rate`` a second, each at its due time from the start (no drift);
    records each signal's send time by order id; returns how late the last one went (s)."""
    t0 = time.monotonic()
    futures = []
    late = 0.0
    for i, (oid, key, value) in enumerate(batch):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        late = time.monotonic() - due
        sent[oid] = time.time()
        futures.append(await producer.send(SIGNALS, value, key=key))
        if len(futures) >= 1000:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    return late


async def send_burst(producer: Any, batch: Sequence[tuple[bytes, bytes, bytes]],
                     sent: dict[bytes, float]) -> float:
    """Sends ``batch`` as fast as the client goes; the seconds it took until all were acked."""
    t0 = time.monotonic()
    futures = []
    for oid, key, value in batch:
        sent[oid] = time.time()
        futures.append(await producer.send(SIGNALS, value, key=key))
        if len(futures) >= 2000:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    return time.monotonic() - t0


async def wait_for(cond: Any, what: str, timeout: float, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def steady_rate(create_ts: Sequence[float]) -> dict[str, Any]:
    """Records a second: between the 10th and 90th percentile of the CreateTimes, and overall."""
    ts = sorted(create_ts)
    n = len(ts)
    if n < 10:
        return {"n": n, "steady_per_s": None, "overall_per_s": None}
    lo, hi = round(0.1 * (n - 1)), round(0.9 * (n - 1))
    span = ts[hi] - ts[lo]
    whole = ts[-1] - ts[0]
    return {"n": n,
            "steady_per_s": round((hi - lo) / span, 1) if span > 0 else None,
            "overall_per_s": round((n - 1) / whole, 1) if whole > 0 else None,
            "window_s": round(span, 3), "overall_s": round(whole, 3)}


# ------------------------------------------------------------------------------ the worker


def start_worker(bootstrap: str, tmp: Path, book: Path, log: Path,
                 module: str = "streams.app",
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``faust -A <module> worker`` on the bench broker, as ``tests/workers.py`` runs it: the
    desk's worker (``streams.app``) or the sink's (``streams.sink``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATS_", "F_", "FAUST_"))}
    env.update(MATS_KAFKA_BOOTSTRAP=bootstrap, MATS_BOOK_DIR=str(book),
               MATS_DB_URL=f"sqlite:///{tmp / 'mats.db'}", APP_DATADIR=str(tmp / "faust-data"),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
               **(extra_env or {}))
    with log.open("wb") as out:
        return subprocess.Popen([str(FAUST), "-A", module, "worker", "--without-web",
                                 "--loglevel", "warn"], cwd=tmp, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(p: subprocess.Popen[bytes] | None, timeout: float = 30) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; never raises (it runs in ``finally``)."""
    if p is None:
        return None
    try:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                return p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                return p.wait(timeout=30)
        return p.returncode
    except Exception as e:  # reported, not raised, so the first error wins
        print(f"could not stop pid {p.pid}: {e}", file=sys.stderr)
        return None


def _alive(p: subprocess.Popen[bytes], name: str, log: Path) -> Any:
    def check() -> None:
        if p.poll() is not None:
            raise BenchError(f"{name} exited with {p.returncode}; its log ends:\n{_tail(log)}")
    return check


def _child_latencies(seen: Seen, topics: Sequence[str], sent: dict[bytes, float],
                     counted: set[bytes]) -> tuple[list[float], list[float], set[bytes]]:
    """(read - sent, created - sent) in ms for each child order of a counted block."""
    read_ms, created_ms, blocks = [], [], set()
    for t in topics:
        for key, _value, created, read in seen.records[t]:
            if key in counted:
                read_ms.append((read - sent[key]) * 1000)
                created_ms.append((created - sent[key]) * 1000)
                blocks.add(key)
    return read_ms, created_ms, blocks


def _stages(seen: Seen, sent: dict[bytes, float], counted: set[bytes]) -> dict[str, Any]:
    """Where a block's time goes, from CreateTimes: intake (signal handed to the producer ->
    block order written to ``mats.blocks``) and block processing (-> allocation instruction
    written, including the wait in the worker's queues)."""
    blocks: dict[bytes, float] = {}
    for _key, value, created, _read in seen.records[BLOCKS]:
        oid = json.loads(value)["order_id"].encode()
        if oid in counted:
            blocks[oid] = created
    intake, processing = [], []
    for key, _value, created, _read in seen.records[ALLOCATIONS]:
        if key in blocks:
            intake.append((blocks[key] - sent[key]) * 1000)
            processing.append((created - blocks[key]) * 1000)
    return {"intake": _stats(intake), "block_processing": _stats(processing),
            "note": "CreateTimes have millisecond resolution"}


async def bench_worker(bootstrap: str, tmp: Path, args: argparse.Namespace,
                       gateway_topics: list[str], signals: Signals) -> dict[str, Any]:
    book = book_copy(tmp / "book", args.book_scale)
    log = tmp / "worker.log"
    worker = start_worker(bootstrap, tmp, book, log)
    # the sink writes the SQL store beside it, as in a deployment: same machine, its own process
    sink = start_worker(bootstrap, tmp, book, tmp / "sink.log", module="streams.sink")
    alive = _alive(worker, "the stream worker", log)
    reader = Reader(bootstrap, [BLOCKS, ALLOCATIONS, *gateway_topics])
    producer = None
    result: dict[str, Any] = {"latency": [], "settle_s": {}}
    try:
        await reader.start()
        producer = await _producer(bootstrap)
        # ready when a block comes out the other end (group joined, partitions assigned)
        sent: dict[bytes, float] = {}
        t0 = time.monotonic()
        await send_paced(producer, signals.take("READY", 20), 20, sent)
        await wait_for(lambda: reader.count(ALLOCATIONS) >= 20, "the worker's first blocks",
                       START_WAIT_S, alive)
        result["worker_ready_s"] = round(time.monotonic() - t0, 1)
        print(f"worker ready after {result['worker_ready_s']} s", flush=True)
        result["settle_s"]["start"] = settle_all([worker.pid, sink.pid], args.settle_s)

        async def paced(rate: float) -> None:
            run = f"R{rate:g}"
            warm = signals.take(run + "W", round(rate * args.warmup_s))
            batch = signals.take(run, round(rate * args.seconds))
            before = reader.count(ALLOCATIONS)
            load = _load()
            cpu0 = _cpu_s(worker.pid)
            late = await send_paced(producer, [*warm, *batch], rate, sent)
            total = len(warm) + len(batch)
            try:
                await wait_for(lambda b=before, n=total: reader.count(ALLOCATIONS) >= b + n,
                               f"the blocks at {rate:g}/s", DRAIN_WAIT_S, alive)
            except BenchError as e:
                print(f"  {e}", flush=True)
            await asyncio.sleep(0.5)  # child orders follow their block's instruction
            cpu = _cpu_s(worker.pid) - cpu0  # the desk's worker only: the sink is its own process
            counted = {oid for oid, _k, _v in batch}
            decided = [(read - sent[k]) * 1000 for k, _v, _c, read
                       in reader.seen.records[ALLOCATIONS] if k in counted]
            read_ms, created_ms, accepted = _child_latencies(reader.seen, gateway_topics,
                                                             sent, counted)
            stages = _stages(reader.seen, sent, counted)
            row = {"rate_per_s": rate, **{k: v for k, v in _stats(read_ms).items()
                                          if k in ("p50_ms", "p99_ms")},
                   # False: blocks still undecided after the drain wait; the percentiles are
                   # of those decided, so lower bounds
                   "complete": len(decided) == len(batch),
                   "child_orders": len(read_ms), "signals": len(batch),
                   "blocks_decided": len(decided), "blocks_accepted": len(accepted),
                   "max_ms": _stats(read_ms)["max_ms"],
                   "created_p50_ms": _stats(created_ms)["p50_ms"],
                   "created_p99_ms": _stats(created_ms)["p99_ms"],
                   "decided": _stats(decided), "stages": stages,
                   # past 0, the worker did not keep up with the rate: latency is queueing
                   "last_block_after_last_signal_s": round(max(
                       (c for k, _v, c, _r in reader.seen.records[ALLOCATIONS] if k in counted),
                       default=0) - max(sent[k] for k in counted), 3),
                   "worker_cpu_ms_per_block": round(cpu * 1000 / max(1, total), 3),
                   "producer_last_late_ms": round(late * 1000, 2),
                   "load_avg": load}
            result["latency"].append(row)
            print(f"  {rate:>6g}/s  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
                  f"({len(accepted)} accepted of {len(decided)}/{len(batch)} blocks)",
                  flush=True)
            result["settle_s"][run] = settle_all([worker.pid, sink.pid], args.settle_s)

        async def burst() -> None:
            """Blocks a second, from the CreateTime of the burst's allocation instructions."""
            batch = signals.take("BURST", args.burst)
            counted = {oid for oid, _k, _v in batch}
            before = reader.count(ALLOCATIONS)
            load = _load()
            profiler = None
            if args.profile:
                profiler = subprocess.Popen([str(PYSPY), "record", "--pid", str(worker.pid),
                                             "--output", str(args.profile), "--rate", "97",
                                             "--nonblocking", "--subprocesses", "--format",
                                             "raw" if args.profile.suffix == ".txt"
                                             else "flamegraph"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            cpu0 = _cpu_s(worker.pid)
            try:
                produce_s = await send_burst(producer, batch, sent)
                try:
                    await wait_for(lambda: reader.count(ALLOCATIONS) >= before + len(batch),
                                   "the burst's blocks", args.burst_wait_s, alive)
                except BenchError as e:
                    print(f"  {e}", flush=True)
            finally:
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        profiler.wait(timeout=60)
                    stop_process(profiler)
            cpu = _cpu_s(worker.pid) - cpu0
            created = [c for k, _v, c, _r in reader.seen.records[ALLOCATIONS] if k in counted]
            rate = steady_rate(created)
            wall = max(created, default=0) - min((sent[k] for k in counted), default=0)
            result["burst"] = {"signals": len(batch), "blocks_decided": len(created),
                               # False: the rate is over the blocks decided within --burst-wait-s
                               "complete": len(created) == len(batch),
                               "producer_s": round(produce_s, 3),
                               "producer_msgs_per_s": round(len(batch) / produce_s, 1),
                               **rate, "worker_cpu_ms_per_block": round(
                                   cpu * 1000 / max(1, len(created)), 3),
                               "worker_cpu_share_of_a_core": round(cpu / wall, 2) if wall > 0
                               else None, "load_avg": load}
            result["max_blocks_per_s"] = rate["steady_per_s"]
            print(f"  burst    {rate['steady_per_s']} blocks/s steady "
                  f"({len(created)}/{len(batch)} blocks; producer took {produce_s:.2f} s)",
                  flush=True)

        # each phase leaves a backlog (mostly the sink's) that the next one inherits
        done_burst = False
        for rate in args.rates:
            if not done_burst and rate >= args.burst_before:
                await burst()
                done_burst = True
                result["settle_s"]["BURST"] = settle_all([worker.pid, sink.pid], args.settle_s)
            await paced(rate)
        if not done_burst:
            await burst()
        return result
    finally:
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
        with contextlib.suppress(Exception):
            await reader.stop()
        result["worker_exit"] = stop_process(worker, timeout=60)
        result["sink_exit"] = stop_process(sink, timeout=60)


# ------------------------------------------------------------------------------ aiokafka floor


async def floor_loop(bootstrap: str, group: str) -> None:
    """The floor: consume ``mats.signals`` (group ``group``), produce each value as it is."""
    from aiokafka import AIOKafkaConsumer

    kafka.quiet_client_logs()
    consumer = AIOKafkaConsumer(SIGNALS, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="latest", enable_auto_commit=True)
    producer = await _producer(bootstrap)
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for msgs in batch.values():
                for m in msgs:
                    await producer.send(FLOOR_OUT, m.value, key=m.key)
    finally:
        await consumer.stop()
        await producer.stop()


def start_aiokafka_loop(bootstrap: str, tmp: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, __file__, "--floor-loop", bootstrap],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def start_faust_loop(bootstrap: str, tmp: Path, log: Path, outs: int = 1
                     ) -> subprocess.Popen[bytes]:
    return start_worker(bootstrap, tmp, SAMPLE, log, module="bench.faust_floor",
                        extra_env={"MATS_BENCH_FLOOR_OUTS": str(outs)})


def start_faust_loop_3(bootstrap: str, tmp: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_faust_loop(bootstrap, tmp, log, outs=3)


async def bench_floor(bootstrap: str, tmp: Path, args: argparse.Namespace, signals: Signals,
                      *, name: str = "aiokafka", out_topic: str = FLOOR_OUT,
                      start: Any = start_aiokafka_loop) -> dict[str, Any]:
    """A loop that forwards each signal (``start(bootstrap, tmp, log)`` runs it, writing to
    ``out_topic``), timed as the worker is: the p99 at 1,000 a second and a burst."""
    await kafka.ensure_topics(bootstrap, [kafka.TopicSpec(
        t, kafka.GATEWAY_PARTITIONS, "delete", "strategy id", "bench floor output")
        for t in (out_topic, FAUST_EXTRA)])
    log = tmp / f"{name}-floor.log"
    loop = start(bootstrap, tmp, log)
    alive = _alive(loop, f"the {name} loop", log)
    reader = Reader(bootstrap, [out_topic])
    producer = None
    result: dict[str, Any] = {}
    try:
        await reader.start()
        producer = await _producer(bootstrap)
        sent: dict[bytes, float] = {}
        # the loop's group starts at the end of the topic: probe until its output flows
        t0 = time.monotonic()
        while reader.count(out_topic) == 0:
            alive()
            if time.monotonic() - t0 > START_WAIT_S:
                raise BenchError(f"the {name} loop passed nothing on in {START_WAIT_S} s")
            await send_paced(producer, signals.take(f"{name[0].upper()}READY", 5), 50, sent)
            await asyncio.sleep(0.5)
        result["ready_s"] = round(time.monotonic() - t0, 1)
        settle(loop.pid, args.settle_s)

        def by_value(batch: Sequence[tuple[bytes, bytes, bytes]]) -> dict[bytes, bytes]:
            return {value: oid for oid, _k, value in batch}

        # p99 at 1,000 a second (the same warm-up and length as the worker's phases)
        rate = 1000.0
        warm = signals.take(f"{name[0].upper()}FW", round(rate * args.warmup_s))
        batch = signals.take(f"{name[0].upper()}F", round(rate * args.seconds))
        ids = by_value(batch)
        before = reader.count(out_topic)
        load = _load()
        await send_paced(producer, [*warm, *batch], rate, sent)
        try:
            await wait_for(lambda: reader.count(out_topic) >= before + len(warm) + len(batch),
                           "the loop's output at 1,000/s", DRAIN_WAIT_S, alive)
        except BenchError as e:
            print(f"  {e}", flush=True)
        read_ms = [(read - sent[ids[v]]) * 1000 for _k, v, _c, read
                   in reader.seen.records[out_topic][before:] if v in ids]
        lat = _stats(read_ms)
        result["at_1000"] = {**lat, "signals": len(batch), "load_avg": load}
        settle(loop.pid, args.settle_s)

        batch = signals.take(f"{name[0].upper()}FB", args.burst)
        ids = by_value(batch)
        before = reader.count(out_topic)
        load = _load()
        produce_s = await send_burst(producer, batch, sent)
        try:
            await wait_for(lambda: reader.count(out_topic) >= before + len(batch),
                           "the loop's burst output", DRAIN_WAIT_S, alive)
        except BenchError as e:
            print(f"  {e}", flush=True)
        created = [c for _k, v, c, _r in reader.seen.records[out_topic][before:] if v in ids]
        rate_s = steady_rate(created)
        result["burst"] = {"signals": len(batch), "producer_s": round(produce_s, 3),
                           "producer_msgs_per_s": round(len(batch) / produce_s, 1), **rate_s,
                           "load_avg": load}
        result["max_msgs_per_s"] = rate_s["steady_per_s"]
        result["p99_ms_at_1000"] = lat["p99_ms"]
        print(f"  {name} floor    p99 {lat['p99_ms']} ms at 1000/s; "
              f"{rate_s['steady_per_s']} msgs/s steady on the burst", flush=True)
        return result
    finally:
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
        with contextlib.suppress(Exception):
            await reader.stop()
        stop_process(loop)


# ------------------------------------------------------------------------------ EndToEndLatency


def tools_jar(version: str) -> Path:
    """The ``kafka-tools`` jar of the broker's version, fetched with Maven the first time."""
    jar = TOOLS_DIR / f"kafka-tools-{version}.jar"
    if jar.exists():
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BenchError("mvn not found: it fetches the kafka-tools jar (EndToEndLatency)")
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [mvn, "-q", "-B", "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
         f"-Dartifact=org.apache.kafka:kafka-tools:{version}", f"-DoutputDirectory={TOOLS_DIR}"],
        capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 or not jar.exists():
        raise BenchError(f"Maven could not fetch kafka-tools {version} (exit "
                         f"{done.returncode}): {(done.stdout + done.stderr).strip()[-500:]}")
    return jar


def bench_e2e(cfg: kafka.KafkaSettings, args: argparse.Namespace,
              record_size: int) -> dict[str, Any]:
    version = kafka.kafka_version(cfg.lib_dir)
    if version is None:
        raise BenchError(f"no kafka_2.13-*.jar in {cfg.lib_dir}")
    jar = tools_jar(version)
    asyncio.run(kafka.ensure_topics(cfg.bootstrap_servers, [kafka.TopicSpec(
        E2E_TOPIC, 1, "delete", "none", "EndToEndLatency's records")]))
    cls = "org.apache.kafka.tools.EndToEndLatency"
    cmd = ["java", "-Xmx256m", "-cp", f"{cfg.lib_dir}/*:{jar}", cls, cfg.bootstrap_servers,
           E2E_TOPIC, str(args.e2e_records), "all", str(record_size)]
    load = _load()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    text = done.stdout + done.stderr
    m = re.search(r"Percentiles: 50th = ([\d.]+), 99th = ([\d.]+), 99\.9th = ([\d.]+)", text)
    avg = re.search(r"Avg latency: ([\d.]+)", text)
    if done.returncode != 0 or m is None:
        raise BenchError(f"EndToEndLatency failed (exit {done.returncode}): {text[-800:]}")
    return {"p50_ms": float(m.group(1)), "p99_ms": float(m.group(2)),
            "p999_ms": float(m.group(3)), "avg_ms": float(avg.group(1)) if avg else None,
            "records": args.e2e_records, "record_size": record_size, "acks": "all",
            "tool": f"{cls} (kafka-tools {version})", "resolution": "whole milliseconds",
            "load_avg": load}


# ------------------------------------------------------------------------------ main


def _table(result: dict[str, Any]) -> str:
    rows = [("what", "figure", "goal", "met")]
    g = result["goals"]
    rows.append(("worker max blocks/s (steady)", str(result["max_blocks_per_s"]),
                 f">= {GOAL_BLOCKS_PER_S}", str(g["max_blocks_per_s_met"])))
    for row in result["latency"]:
        at_least = "" if row["complete"] else ">= "  # blocks left undecided: lower bounds
        rows.append((f"worker signal->child order @{row['rate_per_s']:g}/s",
                     f"p50 {at_least}{row['p50_ms']} / p99 {at_least}{row['p99_ms']} ms",
                     f"p99 < {GOAL_P99_MS_AT_1000:g} ms" if row["rate_per_s"] == 1000 else "",
                     str(g["p99_at_1000_met"]) if row["rate_per_s"] == 1000 else ""))
    f = result["aiokafka_floor"]
    rows.append(("core only, in process, blocks/s", str(result["core_only"]["blocks_per_s"]),
                 "", ""))
    rows.append(("aiokafka loop max msgs/s", str(f.get("max_msgs_per_s")), "", ""))
    rows.append(("aiokafka loop p99 @1000/s", f"{f.get('p99_ms_at_1000')} ms",
                 f"ours within {GOAL_WITHIN_X_FLOOR:g}x",
                 f"{g['p99_within_5x_floor_met']} ({g['p99_ratio_to_floor']}x)"))
    ff = result["faust_floor"]
    rows.append(("Faust forwarding agent max msgs/s", str(ff.get("max_msgs_per_s")), "", ""))
    rows.append(("Faust forwarding agent p99 @1000/s", f"{ff.get('p99_ms_at_1000')} ms", "",
                 ""))
    three = ff.get("three_out") or {}
    rows.append(("Faust agent, 1 in 3 out, max msgs in/s", str(three.get("max_msgs_per_s")),
                 "", ""))
    e = result["kafka_e2e"]
    rows.append(("Kafka EndToEndLatency", f"p50 {e.get('p50_ms')} / p99 {e.get('p99_ms')} ms",
                 "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


async def _bench_kafka_side(bootstrap: str, tmp: Path, args: argparse.Namespace,
                            gateway_topics: list[str]
                            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    signals = Signals()
    print("stream worker:", flush=True)
    worker = await bench_worker(bootstrap, tmp, args, gateway_topics, signals)
    print("aiokafka consume-and-produce loop:", flush=True)
    floor = await bench_floor(bootstrap, tmp, args, signals)
    print("Faust forwarding agent:", flush=True)
    faust_floor = await bench_floor(bootstrap, tmp, args, signals, name="faust",
                                    out_topic=FAUST_OUT, start=start_faust_loop)
    print("Faust agent sending three messages for each one in:", flush=True)
    faust_floor["three_out"] = await bench_floor(bootstrap, tmp, args, signals, name="faust3",
                                                 out_topic=FAUST_OUT, start=start_faust_loop_3)
    return worker, floor, faust_floor


def core_only(book: Path, n: int) -> dict[str, Any]:
    """The same blocks through :class:`mats.desk.Desk` in this process, no Kafka: how fast the
    core and the desk go on this machine now (a reference for the worker's rate)."""
    from mats.desk import Desk, SourceRef
    from mats.models import BlockOrder

    desk = Desk(load_book(book))
    batch = Signals().take("CORE", n)
    t0 = time.perf_counter()
    for i, (_oid, _key, value) in enumerate(batch):
        source = SourceRef(topic=BLOCKS, partition=0, offset=i)
        desk.block(BlockOrder.model_validate_json(value), source, datetime.now(UTC))
    took = time.perf_counter() - t0
    return {"blocks": n, "blocks_per_s": round(n / took, 1), "load_avg": _load(),
            "what": "BlockOrder from JSON + Desk.block (layer 1, allocation, layer 2, "
                    "messages) in one process, no Kafka"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = _load()
    started_at = time.monotonic()
    gateways = sorted(set(brokers_of(load_book(SAMPLE)).values()))
    gateway_topics = [kafka.gateway_topic(g).name for g in gateways]
    sizes = [len(v) for _o, _k, v in Signals().take("SIZE", 121)]
    record_size = round(sum(sizes) / len(sizes))
    errors: dict[str, str] = {}
    kafka.quiet_client_logs()
    with tempfile.TemporaryDirectory(prefix="mats-stream-bench-") as tmp_name:
        tmp = Path(tmp_name)
        reference = core_only(book_copy(tmp / "core-book", args.book_scale), 3000)
        print(f"core only (in process): {reference['blocks_per_s']} blocks/s", flush=True)
        cfg = kafka.settings(run_dir=tmp / "kafka", port=0, controller_port=0, env={})
        started = None
        try:
            kafka.up(cfg, timeout=90)
            started = kafka.settings(run_dir=tmp / "kafka", env={})
            print(f"broker on {started.bootstrap_servers}", flush=True)
            worker, floor, faust_floor = asyncio.run(_bench_kafka_side(
                started.bootstrap_servers, tmp, args, gateway_topics))
            print("Kafka EndToEndLatency:", flush=True)
            try:
                e2e = bench_e2e(started, args, record_size)
                print(f"  p50 {e2e['p50_ms']} ms  p99 {e2e['p99_ms']} ms", flush=True)
            except (BenchError, subprocess.TimeoutExpired) as e:
                errors["kafka_e2e"] = str(e)
                print(f"  failed: {e}", flush=True)
                e2e = {"p50_ms": None, "p99_ms": None}
        except BenchError as e:
            raise SystemExit(f"stream bench failed: {e}") from None
        except kafka.KafkaRunError as e:
            raise SystemExit(f"stream bench: the Kafka broker failed: {e}") from None
        finally:
            if started is not None:
                try:
                    kafka.down(started, timeout=30)
                except Exception as e:  # the first error is the one to see
                    print(f"could not stop the bench broker: {e}", file=sys.stderr)
    ours_1000 = next((r for r in worker["latency"] if r["rate_per_s"] == 1000), None)
    ours_p99 = ours_1000["p99_ms"] if ours_1000 else None
    floor_p99 = floor.get("p99_ms_at_1000")
    ratio = round(ours_p99 / floor_p99, 2) if ours_p99 and floor_p99 else None
    max_blocks = worker.get("max_blocks_per_s")
    result: dict[str, Any] = {
        "max_blocks_per_s": max_blocks,
        "latency": worker["latency"],
        "aiokafka_floor": {"max_msgs_per_s": floor.get("max_msgs_per_s"),
                           "p99_ms_at_1000": floor_p99,
                           "at_1000": floor.get("at_1000"), "burst": floor.get("burst")},
        "faust_floor": {"max_msgs_per_s": faust_floor.get("max_msgs_per_s"),
                        "p99_ms_at_1000": faust_floor.get("p99_ms_at_1000"),
                        "ready_s": faust_floor.get("ready_s"),
                        "at_1000": faust_floor.get("at_1000"),
                        "burst": faust_floor.get("burst"),
                        "three_out": faust_floor.get("three_out")},
        "kafka_e2e": e2e,
        "burst": worker.get("burst"),
        "core_only": reference,
        "goals": {
            "max_blocks_per_s_at_least": GOAL_BLOCKS_PER_S,
            "p99_ms_at_1000_under": GOAL_P99_MS_AT_1000,
            "p99_within_x_floor": GOAL_WITHIN_X_FLOOR,
            "max_blocks_per_s_met": bool(max_blocks and max_blocks >= GOAL_BLOCKS_PER_S),
            "max_blocks_share_of_goal": round(max_blocks / GOAL_BLOCKS_PER_S, 3)
            if max_blocks else None,
            "p99_at_1000_met": bool(ours_p99 is not None and ours_p99 < GOAL_P99_MS_AT_1000),
            "p99_ratio_to_floor": ratio,
            "p99_within_5x_floor_met": bool(ratio is not None and ratio <= GOAL_WITHIN_X_FLOOR),
        },
        "method": {
            "signals": "data/sample/orders.json cycled with new order_id/journey_id, keyed by "
                       "strategy, to mats.signals (6 partitions)",
            "book": f"data/sample, no throttle, max_reference_age_s 1e9, cash/net_liq/"
                    f"positions and USD firm limits x{args.book_scale:g}",
            "latency": f"{args.seconds:g} s paced by absolute due times after "
                       f"{args.warmup_s:g} s not counted; one sample per child order of an "
                       f"accepted block: read from mats.orders.* here minus handed to the "
                       f"producer (created_*: the child order's CreateTime instead)",
            "max_blocks_per_s": f"burst of {args.burst} signals; allocation instructions' "
                                f"CreateTime, 10th to 90th percentile of the burst",
            "aiokafka_floor": "own process and group, mats.signals -> bench.floor-out "
                              "(3 partitions), acks=all + idempotence, value forwarded as is",
            "faust_floor": "bench/faust_floor.py: a Faust worker of the stream app's class and "
                           "settings, one agent forwarding mats.signals -> bench.faust-out "
                           "(3 partitions), measured as the aiokafka loop; three_out: each "
                           "message also sent twice to bench.faust-extra first",
            "kafka_e2e": "EndToEndLatency, one record in flight at a time",
            "worker_settle": "between phases until the worker uses < 10 % of a core",
        },
        "worker": {k: worker.get(k) for k in ("worker_ready_s", "settle_s", "worker_exit")},
        "errors": errors,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    # other work on the machine shares its cores with every process here
                    "load_avg_start": load_start, "load_avg_end": _load()},
        "duration_s": round(time.monotonic() - started_at, 1),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                        default=[100.0, 1000.0], help="paced rates, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds a rate")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="paced seconds not counted")
    parser.add_argument("--burst", type=int, default=20_000, help="signals in the burst")
    parser.add_argument("--e2e-records", type=int, default=10_000)
    parser.add_argument("--book-scale", type=float, default=1000.0)
    parser.add_argument("--burst-before", type=float, default=float("inf"),
                        help="run the burst before the first paced rate of at least this "
                        "(default: after them all)")
    parser.add_argument("--burst-wait-s", type=float, default=100.0,
                        help="longest wait for the burst's blocks (the rate is over those)")
    parser.add_argument("--settle-s", type=float, default=20.0,
                        help="longest wait for the worker to go idle between phases")
    parser.add_argument("--profile", type=Path,
                        help="py-spy flame graph (.svg) or collapsed stacks (.txt) of the "
                        "worker during the burst")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--floor-loop", metavar="BOOTSTRAP", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_loop:
        asyncio.run(floor_loop(args.floor_loop, "bench-floor"))
        return 0
    result = run(args)
    print(json.dumps(result, indent=2))
    print()
    print(_table(result))
    if not args.no_write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
