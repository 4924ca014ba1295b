"""The trading day end to end over real processes: Kafka, the stream worker, gateways, brokers.

``python -m mats.live [--book DIR] [--run-dir DIR] [--orders N]`` (``make demo``):

1. starts a private single-node Kafka 4 broker (``mats.kafka``) in a fresh run folder;
2. runs the start-of-day DAG ``mats_sod`` once on Airflow (``dag.test()`` in the Airflow
   virtualenv): the custodian files checked with Great Expectations, the accounts' state built
   and published to ``mats.sod-state`` and the SQL store; the stream app starts from it;
3. starts one broker simulator per broker of the book's accounts (the FIX 4.4 acceptor, or the
   JSON/HTTP prime-broker API, as ``infra/fix/gateways.yaml`` says) and one gateway process per
   broker (``mats gateway run NAME``), on free loopback ports;
4. starts the stream worker (``faust -A streams.app worker``) on that state, and the sink
   (``faust -A streams.sink worker``) that writes every event to the SQL store;
5. replays the sample day: live prices to ``mats.marketdata`` and the day's signals to
   ``mats.signals``, re-timed to now, showing progress (blocks decided, child orders, execution
   reports, account fills) and every alert as it comes;
6. at the close, cancels what is still working, waits for every child order to end, and prints
   each account's positions, cash and realised P&L, read back from the desk's journal as a
   recovering worker would read it;
7. runs the end-of-day DAG ``mats_eod`` over the day's events in the SQL store:
   reconciliation, shortfall re-allocation, attribution and costs, VaR, the HTML report and
   the Data Docs, whose paths it prints;
8. stops everything, and leaves the logs, the store and the reports under the run folder.

Every part is its own OS process, as in production; this module only starts them, feeds
them and reads their topics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from rich.console import Console
from rich.table import Table

from mats import kafka
from mats.config import format_error, load_book, load_orders
from mats.errors import MatsError
from mats.models import BlockOrder, Book

_PACKAGE_ROOT = Path(__file__).resolve().parent
_REPO = _PACKAGE_ROOT.parent.parent
GATEWAYS_CONFIG = _REPO / "infra" / "fix" / "gateways.yaml"
AIRFLOW_BIN = _REPO / ".venv-airflow" / "bin"
NEW_YORK = ZoneInfo("America/New_York")
JOURNAL_TOPIC = "mats-journal-changelog"
READY_S = 180.0  # a bound on a broken start, not a timing figure
WARNINGS_SHOWN = 5  # of each kind of alert; the rest are counted


class LiveError(MatsError):
    """The live day could not run: a process did not start or died."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Processes:
    """The processes the day runs, stopped together (SIGTERM, then SIGKILL after a wait)."""

    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str],
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("wb") as out:
            p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = p
        return p

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise LiveError(f"{name} stopped (exit {p.returncode}); its log ends:\n{tail}")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)


def _env(bootstrap: str, book_dir: Path, run: Path, gateways: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATS_", "F_", "FAUST_"))}
    env.update(MATS_KAFKA_BOOTSTRAP=bootstrap, MATS_BOOK_DIR=str(book_dir),
               MATS_DB_URL=f"sqlite:///{run / 'mats.db'}", APP_DATADIR=str(run / "faust"),
               MATS_KAFKA_GATEWAYS=",".join(gateways),
               PYTHONPATH=os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH")) if p))
    return env


class StoreWatch:
    """What the stream app's sink has written to the SQL store, read as it comes.

    Progress is read from the store rather than from the topics: the sink records every message
    the app publishes (signals, instructions, child orders, reports, fills, alerts), once each.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = 0

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        if not self.path.exists():
            return []
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5) as db:
            try:
                rows = db.execute("SELECT rowid, kind, payload FROM events WHERE rowid > ? "
                                  "ORDER BY rowid", (self.last,)).fetchall()
            except sqlite3.OperationalError:  # not migrated yet, or busy: next time
                return []
        if rows:
            self.last = rows[-1][0]
        return [(kind, json.loads(payload)) for _, kind, payload in rows]


@dataclass
class Day:
    book: Book
    orders: list[BlockOrder]
    gateways: list[str]
    console: Console
    seed: int = 7
    counts: Counter[str] = field(default_factory=Counter)
    children: dict[str, dict[str, Any]] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    shown: Counter[tuple[str, str]] = field(default_factory=Counter)

    def take(self, new: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, v in new:
            self.counts[kind] += 1
            if kind == "child_order":
                self.children[v["child_order_id"]] = v
            elif kind == "child_closed":
                self.ended.add(v["child_order_id"])
            elif kind in ("alert", "limit_alert", "execution_alert"):
                self.alerts.append(v)
                self._print_alert(v)

    def trading(self) -> int:
        """How many execution reports and account fills have come (not heartbeats)."""
        return self.counts["execution_report"] + self.counts["account_fill"]

    def _print_alert(self, a: dict[str, Any]) -> None:
        # every critical alert; the first warnings of each kind, then only their count (the
        # sample book sits close to its limits, so warnings come by the hundred)
        severity = a.get("severity", "")
        kind = a.get("kind", "")
        self.shown[(kind, severity)] += 1
        scope = a.get("scope")
        shown = self.shown[(kind, severity)]
        if severity == "cleared" or (severity == "warning" and shown > WARNINGS_SHOWN) or (
                severity == "critical" and scope == "lot" and shown > WARNINGS_SHOWN):
            return
        colour = {"critical": "red", "warning": "yellow"}.get(severity, "green")
        self.console.print(f"  [{colour}]{severity.upper():8}[/{colour}] "
                           f"{a.get('message', '')}", highlight=False, soft_wrap=True)


def _signals(orders: list[BlockOrder], now: datetime) -> list[tuple[bytes, bytes]]:
    out = []
    for o in orders:
        timed = o.model_copy(update={"reference_time": now})
        out.append((o.strategy.encode(), timed.model_dump_json().encode()))
    return out


async def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]],
                   per_s: float = 0.0) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        start = time.monotonic()
        for n, (key, value) in enumerate(items):
            if per_s:
                await asyncio.sleep(max(0.0, start + n / per_s - time.monotonic()))
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def _ticks(book: Book, symbols: list[str], rng: random.Random) -> list[tuple[bytes, bytes]]:
    now = datetime.now(UTC).isoformat()
    out = []
    for s in symbols:
        px = round(book.prices[s] * (1 + rng.uniform(-0.002, 0.002)), 2)
        out.append((s.encode(), json.dumps({"symbol": s, "price": px, "ts": now}).encode()))
    return out


async def _wait(what: str, done: Any, procs: Processes, watch: StoreWatch, day: Day,
                bound_s: float = READY_S) -> None:
    """Takes what the store records until ``done()``; fails if a process dies or the bound
    passes (a bound on a broken run, not a timing figure)."""
    deadline = time.monotonic() + bound_s
    while not done():
        procs.check()
        if time.monotonic() > deadline:
            raise LiveError(f"no {what} after {bound_s:.0f} s; logs in {procs.logs}")
        day.take(watch.poll())
        await asyncio.sleep(0.3)


async def _logged_on(bootstrap: str) -> dict[str, str]:
    """Each gateway's newest state on ``mats.gateway-status``."""
    states: dict[str, str] = {}
    for value in [r.value for r in (await kafka.read_topics(
            bootstrap, ["mats.gateway-status"]))["mats.gateway-status"]]:
        if value:
            status = json.loads(value)
            states[status["gateway"]] = status["state"]
    return states


def _gateway_config() -> dict[str, dict[str, Any]]:
    raw = yaml.safe_load(GATEWAYS_CONFIG.read_text())
    gateways: dict[str, dict[str, Any]] = raw["gateways"]
    return gateways


def run_day(book_dir: Path, run: Path, n_orders: int | None, console: Console) -> Day:
    """Runs the day (see the module docstring); returns what it saw."""
    book = load_book(book_dir)
    orders = load_orders(book_dir / "orders.json")[:n_orders]
    brokers = sorted({a.broker for a in book.accounts})
    config = _gateway_config()
    missing = [b for b in brokers if b not in config]
    if missing:
        raise LiveError(f"no gateway configured in {GATEWAYS_CONFIG} for broker(s) "
                        f"{', '.join(missing)} of the book's accounts")
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    procs = Processes(run / "logs")
    day = Day(book=book, orders=orders, gateways=brokers, console=console)
    cfg = kafka.settings(run_dir=run / "kafka", port=0, controller_port=0, env={},
                         gateways=brokers)
    console.print(f"[bold]1. Kafka[/bold] (single node, KRaft) in {run / 'kafka'}")
    kafka.up(cfg, timeout=120)
    bootstrap = kafka.settings(run_dir=run / "kafka", env={}).bootstrap_servers
    today = datetime.now(NEW_YORK).date().isoformat()
    db_url = f"sqlite:///{run / 'mats.db'}"
    try:
        airflow = Airflow(run / "airflow", console)
        console.print("[bold]2. Start of day[/bold]: the mats_sod DAG (Airflow, dag.test) checks "
                      "the custodian files and publishes the accounts' state")
        sod = airflow.run("mats_sod", today, {
            "book_dir": str(book_dir), "run_dir": str(run / "batch"), "as_of": today,
            "db_url": db_url, "kafka_bootstrap": bootstrap})
        day_book = _book_from_sod(book_dir, run, sod)
        day.book = load_book(day_book)
        console.print(f"   state of {len(day.book.accounts)} accounts published to "
                      f"mats.sod-state and the store; the stream app starts from {day_book}")
        asyncio.run(_trade(day, day_book, run, bootstrap, procs, config))
        procs.stop()
        console.print("[bold]7. End of day[/bold]: the mats_eod DAG reconciles, re-allocates "
                      "shortfalls, attributes costs and risk")
        eod = airflow.run("mats_eod", today, {
            "book_dir": str(day_book), "run_dir": str(run / "batch"), "trade_date": today,
            "db_url": db_url})
        for name in ("report", "data_docs"):
            found = _found(eod, name)
            if found:
                console.print(f"   {name.replace('_', ' ')}: {found}", soft_wrap=True)
    finally:
        procs.stop()
        kafka.down(kafka.settings(run_dir=run / "kafka", env={}), timeout=60)
    return day


class Airflow:
    """Runs MATS DAGs once each with ``dag.test()`` in the Airflow virtualenv, on a metadata
    database of their own (SQLite under the run folder, made by ``airflow db migrate``)."""

    def __init__(self, home: Path, console: Console) -> None:
        if not (AIRFLOW_BIN / "python").exists():
            raise LiveError(f"no Airflow virtualenv at {AIRFLOW_BIN.parent}: make venv-airflow")
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.env = {**os.environ, "AIRFLOW_HOME": str(home),
                    "AIRFLOW__CORE__DAGS_FOLDER": str(_REPO / "dags"),
                    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}"}
        self.env.pop("VIRTUAL_ENV", None)
        out = subprocess.run([str(AIRFLOW_BIN / "airflow"), "db", "migrate"], env=self.env,
                             capture_output=True, text=True, timeout=600)
        (home / "migrate.log").write_text(out.stdout + out.stderr)
        if out.returncode != 0:
            raise LiveError(f"airflow db migrate failed; see {home / 'migrate.log'}")

    def run(self, dag_id: str, day: str, conf: dict[str, Any]) -> dict[str, Any]:
        log = self.home / f"{dag_id}.log"
        out = subprocess.run([str(AIRFLOW_BIN / "python"), "-m", "mats.batch.dagtest", "run",
                              dag_id, f"{day}T12:00:00+00:00", json.dumps(conf)],
                             env=self.env, capture_output=True, text=True, timeout=900)
        log.write_text(out.stdout + out.stderr)
        lines = out.stdout.strip().splitlines()
        try:
            result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        except ValueError:
            result = {}
        if out.returncode != 0 or result.get("state") != "success":
            raise LiveError(f"{dag_id} did not succeed ({result.get('tasks', 'no run')}); "
                            f"see {log}")
        return result


def _found(result: dict[str, Any], name: str) -> str | None:
    """A path a DAG's tasks returned under ``name``."""
    for value in (result.get("xcom") or {}).values():
        if isinstance(value, dict) and isinstance(value.get(name), str):
            return str(value[name])
    return None


def _book_from_sod(book_dir: Path, run: Path, sod: dict[str, Any]) -> Path:
    """A copy of the book folder whose accounts are the start-of-day state the DAG built."""
    state = _found(sod, "state")
    if state is None:
        raise LiveError("mats_sod returned no state file")
    book = run / "book"
    shutil.copytree(book_dir, book)
    (book / "accounts.json").write_text(Path(state).read_text())
    return book


async def _trade(day: Day, book_dir: Path, run: Path, bootstrap: str, procs: Processes,
                 config: dict[str, dict[str, Any]]) -> None:
    book, orders, brokers, console = day.book, day.orders, day.gateways, day.console
    env = _env(bootstrap, book_dir, run, brokers)
    py = sys.executable
    console.print(f"[bold]3. Brokers and gateways[/bold]: {', '.join(brokers)}")
    traded = {o.symbol for o in orders}
    prices = [f"--price={s}={p}" for s, p in sorted(book.prices.items()) if s in traded]
    for b in brokers:
        port = _free_port()
        protocol = config[b]["protocol"]
        procs.start(f"broker-{b}", [py, "-m", "mats.gateway", "broker-sim", "--protocol",
                                    protocol, "--port", str(port), "--run-dir",
                                    str(run / "brokers" / b), "--seed",
                                    str(day.seed + len(procs.procs)), *prices], env)
        procs.start(f"gateway-{b}", [py, "-m", "mats.gateway", "gateway", "run", b,
                                     "--port", str(port), "--run-dir",
                                     str(run / "gateways" / b), "--bootstrap", bootstrap],
                    env)
    console.print(f"[bold]4. Stream worker[/bold] on the book in {book_dir}")
    (run / "worker").mkdir()
    faust = str(Path(py).parent / "faust")
    procs.start("worker", [faust, "-A", "streams.app", "worker", "--without-web",
                           "--loglevel", "info"], env, cwd=run / "worker")
    # the event store's writer, in its own process: the store never holds the desk back
    (run / "sink").mkdir()
    procs.start("sink", [faust, "-A", "streams.sink", "worker", "--without-web",
                         "--loglevel", "info"], env, cwd=run / "sink")
    watch = StoreWatch(run / "mats.db")
    deadline = time.monotonic() + READY_S
    while True:  # every gateway logged on to its broker, and the worker ready
        procs.check()
        states = await _logged_on(bootstrap)
        ready = all("Worker ready" in (procs.logs / f"{p}.log").read_text(errors="replace")
                    for p in ("worker", "sink"))
        if ready and all(states.get(b) == "logged_on" for b in brokers):
            break
        if time.monotonic() > deadline:
            raise LiveError(f"gateways {states}, worker and sink not ready after {READY_S:.0f} s; "
                            f"logs in {procs.logs}")
        await asyncio.sleep(1.0)
    console.print(f"[bold]5. The day[/bold]: {len(orders)} signals and live prices "
                  "(alerts as they come)")
    rng = random.Random(day.seed)
    await _produce(bootstrap, "mats.marketdata", _ticks(book, sorted(traded), rng))
    await _produce(bootstrap, "mats.signals", _signals(orders, datetime.now(UTC)), per_s=40.0)
    # one instruction per order id (the store keeps one event per id: an id used twice, as the
    # sample day does, is one instruction there, its second use refused at layer 1)
    blocks = len({o.order_id for o in orders})
    await _wait("decision for every block",
                lambda: day.counts["allocation_instruction"] >= blocks, procs, watch, day)
    quiet_since = time.monotonic()
    seen = day.trading()
    # let the brokers work the orders until no report has come for a while
    while len(day.ended) < len(day.children) and time.monotonic() - quiet_since < 8:
        day.take(watch.poll())
        procs.check()
        if day.trading() != seen:
            seen, quiet_since = day.trading(), time.monotonic()
        await asyncio.sleep(0.5)
    open_children = [c for c in day.children.values() if c["child_order_id"] not in day.ended]
    console.print(f"[bold]6. The close[/bold]: {len(day.ended)} child orders done, "
                  f"{len(open_children)} still working: cancelled")
    await _cancel(bootstrap, open_children)
    await _wait("end of every child order", lambda: len(day.ended) >= len(day.children),
                procs, watch, day)
    _summary(day, await _journal(bootstrap), console, run)


async def _cancel(bootstrap: str, children: list[dict[str, Any]]) -> None:
    from mats.executions import CancelRequest, request_event_id

    now = datetime.now(UTC)
    by_topic: dict[str, list[tuple[bytes, bytes]]] = {}
    for c in children:
        req = CancelRequest(
            event_id=request_event_id(c["child_order_id"], "cancel_request", "close"),
            journey_id=c["journey_id"], order_id=c["order_id"],
            child_order_id=c["child_order_id"], request_id=f"{c['child_order_id']}.close",
            gateway=c["gateway"], requested_at=now, reason="market close")
        by_topic.setdefault(kafka.gateway_topic(c["gateway"]).name, []).append(
            (c["order_id"].encode(), req.model_dump_json().encode()))
    for topic, items in by_topic.items():
        await _produce(bootstrap, topic, items)


async def _journal(bootstrap: str) -> list[Any]:
    """The desk's journal as its changelog holds it (the newest value per key), in order."""
    from mats.desk import JournalEntry

    latest = {json.loads(r.key): r.value
              for r in (await kafka.read_topics(bootstrap, [JOURNAL_TOPIC]))[JOURNAL_TOPIC]}
    return [JournalEntry.model_validate_json(latest[k]) for k in sorted(latest)
            if latest[k] is not None]


def _summary(day: Day, journal: list[Any], console: Console, run: Path) -> None:
    from mats.desk import Desk

    desk = Desk(day.book)
    for entry in journal:
        desk.replay(entry)
    c = day.counts
    console.print(f"   {c['allocation_instruction']} blocks decided, "
                  f"{c['child_order']} child orders, {c['execution_report']} execution "
                  f"reports, {c['account_fill']} account fills; journal of {len(journal)} "
                  "entries")
    alerts = Table(title="Alerts of the day")
    for col in ("kind", "critical", "warning", "cleared"):
        alerts.add_column(col, justify="left" if col == "kind" else "right")
    for kind in sorted({k for k, _ in day.shown}):
        alerts.add_row(kind, *(str(day.shown[(kind, s)]) for s in ("critical", "warning",
                                                                     "cleared")))
    console.print(alerts)
    table = Table(title="Accounts at the close (from the desk's journal)")
    for col in ("account", "traded today (largest)", "cash", "reserved", "realised P&L"):
        table.add_column(col, justify="right" if col in ("cash", "reserved", "realised P&L")
                         else "left")
    rows = desk.accounts()
    start = {a.account_id: a for a in day.book.accounts}
    for r in rows:
        before = start[r["account_id"]].positions
        moved = {s: q - before.get(s, 0) for s in {*r["positions"], *before}
                 if (q := r["positions"].get(s, 0)) != before.get(s, 0)}
        if not moved and r["cash"] == start[r["account_id"]].cash:
            continue
        shown = [f"{s} {q:+,}" for s, q in sorted(moved.items(), key=lambda m: -abs(m[1]))]
        more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
        table.add_row(r["account_id"], ", ".join(shown[:3]) + more,
                      f"{r['cash']:,.2f}", f"{r['reserved_cash']:,.2f}",
                      f"{r['realized_pnl']:,.2f}")
    console.print(table)
    (run / "accounts.json").write_text(json.dumps(rows, indent=1))
    console.print(f"Accounts: {run / 'accounts.json'}; events: {run / 'mats.db'}; "
                  f"logs: {run / 'logs'}", soft_wrap=True)


@contextmanager
def _interrupts() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mats.live", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--book", type=Path, default=_REPO / "data" / "sample",
                        help="the book folder with its orders.json (default: data/sample)")
    parser.add_argument("--run-dir", type=Path, default=_REPO / "run" / "live",
                        help="where Kafka, the logs and the store go (emptied first)")
    parser.add_argument("--orders", type=int, default=None,
                        help="only the first N orders of the day")
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    try:
        with _interrupts():
            run_day(args.book, args.run_dir, args.orders, console)
    except MatsError as e:
        print(f"mats.live: error: {format_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mats.live: stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
