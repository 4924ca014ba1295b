"""The stream app on a real broker when things go wrong: a worker killed mid-stream, two workers
sharing the partitions, the broker restarted, and a fuzzed stream of malformed messages.

Each run ends in a state that is compared with the same inputs applied, in the order the
sequenced topics hold them, to a :class:`mats.desk.Desk` in this process (the uninterrupted
run): the accounts' positions, cash and working orders, and the account fills published.
The stream's state is read back from the journal's changelog topic, as a worker recovering
would read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from execs import fills
from mats import kafka
from mats.blocks import ChildOrder, validate_tick
from mats.cli import main as mats_cli
from mats.config import load_book, load_orders
from mats.desk import Desk, JournalEntry, SourceRef, book_fingerprint
from mats.executions import ExecutionReport, OrdStatus
from mats.intake import DeadLetter, KnownIds, SignalError, validate_signal
from mats.models import BlockOrder, Book
from workers import WAIT_S, start_worker, stop_worker

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
JOURNAL_TOPIC = "mats-journal-changelog"
WORKER_ENV = {"MATS_SESSION_TIMEOUT_S": "6"}


@pytest.fixture
def book_dir(tmp_path: Path) -> Path:
    """The sample book with no order-rate throttle and no reference-age limit: decisions that
    do not depend on when the worker gets to a block, so runs can be compared."""
    folder = tmp_path / "book"
    folder.mkdir()
    for f in SAMPLE.iterdir():
        if f.is_file():
            (folder / f.name).write_bytes(f.read_bytes())
    risk = yaml.safe_load((folder / "risk.yaml").read_text())
    risk.pop("throttle", None)
    risk["max_reference_age_s"] = 1e9
    (folder / "risk.yaml").write_text(yaml.safe_dump(risk))
    return folder


def orders(n: int) -> list[BlockOrder]:
    return load_orders(SAMPLE / "orders.json")[:n]


# ------------------------------------------------------------------------------ broker helpers


class Topics:
    """Reads whole topics (every partition, from the start) on the test broker."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    async def read(self, topics: Iterable[str]) -> dict[str, list[tuple[Any, Any, int]]]:
        got = await kafka.read_topics(self.bootstrap, topics)
        return {t: [(r.key, r.value, r.offset) for r in records] for t, records in got.items()}

    async def journal(self) -> list[JournalEntry]:
        """The journal as its changelog holds it (newest value per key), in order."""
        raw = (await self.read([JOURNAL_TOPIC]))[JOURNAL_TOPIC]
        latest = {json.loads(k): v for k, v, _ in raw if v is not None}
        return [JournalEntry.model_validate_json(latest[k]) for k in sorted(latest)]


async def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def wait_for(what: str, done: Callable[[], bool], workers: list[subprocess.Popen[bytes]],
             logs: list[Path]) -> None:
    """Polls ``done`` until it holds; fails with the workers' logs if a worker died or the
    bound passed (a bound on a broken run, not a timing check)."""
    deadline = time.monotonic() + WAIT_S
    while not done():
        for w, log in zip(workers, logs, strict=True):
            # running, or stopped by the test (killed, or stopped cleanly)
            assert w.poll() is None or w.returncode in (0, -9), (
                f"a worker died ({w.returncode}) waiting for {what}:\n{log.read_text()[-4000:]}")
        assert time.monotonic() < deadline, (
            f"no {what} after {WAIT_S} s:\n" + "\n".join(log.read_text()[-3000:] for log in logs))
        time.sleep(0.5)


def journal_size(topics: Topics) -> int:
    return len(asyncio.run(topics.journal()))


def signals(items: list[BlockOrder]) -> list[tuple[bytes | None, bytes]]:
    return [(o.strategy.encode(), o.model_dump_json().encode()) for o in items]


def child_orders(topics: Topics, book: Book) -> list[ChildOrder]:
    names = sorted({kafka.gateway_topic(a.broker).name for a in book.accounts})
    got = asyncio.run(topics.read(names))
    seen: dict[str, ChildOrder] = {}
    for name in names:
        for _, v, _ in got[name]:
            c = ChildOrder.model_validate_json(v)
            seen.setdefault(c.child_order_id, c)  # an outbox published again: the same order
    return sorted(seen.values(), key=lambda c: c.child_order_id)


def broker_reports(children: list[ChildOrder], seed: int) -> list[ExecutionReport]:
    """What the brokers send back: seeded partial fills, some orders ended early, some reports
    sent twice."""
    rng = random.Random(seed)
    out: list[ExecutionReport] = []
    for c in children:
        share = rng.choice([1.0, 1.0, 0.7, 0.3])
        end = rng.choice([OrdStatus.CANCELLED, OrdStatus.EXPIRED])
        for r in fills(c, rng.randrange(1 << 30), share=share, parts=rng.randint(1, 4),
                       end=end):
            out.append(r)
            if rng.random() < 0.15:
                out.append(r)
    return out


def reports_feed(reports: list[ExecutionReport]) -> list[tuple[bytes | None, bytes]]:
    return [(r.order_id.encode(), r.model_dump_json().encode()) for r in reports]


def uninterrupted(book: Book, topics: Topics) -> tuple[Desk, list[JournalEntry]]:
    """The same inputs, in the order the sequenced topics hold them, through one desk."""
    got = asyncio.run(topics.read(["mats.blocks", "mats.exec-reports"]))
    desk = Desk(book)
    entries = []
    now = datetime.now(UTC)
    for _, value, offset in got["mats.blocks"]:
        order = BlockOrder.model_validate_json(value)
        if desk.repeat_of(order) is not None:
            continue  # intake published it again after a restart
        entries.append(desk.block(order, SourceRef(topic="mats.blocks", partition=0,
                                                   offset=offset), now))
    for _, value, offset in got["mats.exec-reports"]:
        try:
            report = ExecutionReport.model_validate_json(value)
        except ValueError:
            continue  # dead-lettered
        entries.append(desk.execution(report, SourceRef(topic="mats.exec-reports", partition=0,
                                                        offset=offset), now))
    return desk, entries


def rebuilt(book: Book, entries: list[JournalEntry]) -> Desk:
    desk = Desk(book)
    for e in entries:
        desk.replay(e)
    return desk


def account_fills(entries: Iterable[JournalEntry]) -> dict[str, dict[str, Any]]:
    """Every account fill published, by event id (its content without the booking time)."""
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        for o in e.out:
            m = json.loads(o.value)
            if m.get("kind") == "account_fill":
                m.pop("booked_at")
                out[m["event_id"]] = m
    return out


def published_fills(topics: Topics) -> dict[str, dict[str, Any]]:
    got = asyncio.run(topics.read(["mats.account-fills"]))["mats.account-fills"]
    out: dict[str, dict[str, Any]] = {}
    for _, v, _ in got:
        m = json.loads(v)
        if m.get("kind") == "account_fill":
            m.pop("booked_at")
            assert out.setdefault(m["event_id"], m) == m  # a repeat is the same fill
    return out


def assert_same_end_state(book: Book, topics: Topics, n_inputs: int) -> None:
    journal = asyncio.run(topics.journal())
    # every input applied once: each block once, each report (sent twice: twice) once
    assert [e.seq for e in journal] == list(range(n_inputs))
    sources = [(e.source.topic, e.source.offset) for e in journal]
    assert len(set(sources)) == len(sources)
    blocks = [BlockOrder.model_validate_json(e.payload).order_id for e in journal
              if e.kind == "block"]
    assert len(blocks) == len(set(blocks))
    stream = rebuilt(book, journal)
    baseline, base_entries = uninterrupted(book, topics)
    assert len(base_entries) == n_inputs
    assert stream.accounts() == baseline.accounts()
    want = account_fills(base_entries)
    assert account_fills(journal) == want
    assert published_fills(topics) == want  # no fill lost, none counted twice
    assert want  # the run did book fills


# ------------------------------------------------------------------------------ the tests


def test_a_worker_killed_mid_stream_restarts_to_the_same_state(
        own_broker: kafka.KafkaSettings, book_dir: Path, tmp_path: Path) -> None:
    broker = own_broker
    bootstrap = broker.bootstrap_servers
    topics = Topics(bootstrap)
    book = load_book(book_dir)
    blocks = orders(30)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log", tmp_path / "worker-3.log"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(produce(bootstrap, "mats.signals", signals(blocks)))
        workers.append(start_worker(broker, tmp_path, book_dir, logs[0], WORKER_ENV))
        # killed in the middle of the blocks
        wait_for("a third of the blocks", lambda: journal_size(topics) >= 10, workers, logs[:1])
        workers[0].kill()
        workers[0].wait()
        workers.append(start_worker(broker, tmp_path, book_dir, logs[1], WORKER_ENV))
        wait_for("every block", lambda: journal_size(topics) >= len(blocks), workers, logs[:2])
        children = child_orders(topics, book)
        reports = broker_reports(children, seed=11)
        asyncio.run(produce(bootstrap, "mats.exec-reports", reports_feed(reports)))
        # and in the middle of the fills
        half = len(blocks) + len(reports) // 2
        wait_for("half the reports", lambda: journal_size(topics) >= half, workers, logs[:2])
        workers[1].kill()
        workers[1].wait()
        workers.append(start_worker(broker, tmp_path, book_dir, logs[2], WORKER_ENV))
        total = len(blocks) + len(reports)
        wait_for("every report", lambda: journal_size(topics) >= total, workers, logs)
        # the second worker may have applied everything before it was killed: the third is
        # stopped once it is up (its clean stop is checked below), not while it starts
        wait_for("the third worker", lambda: "Worker ready" in logs[2].read_text(), workers,
                 logs)
    finally:
        codes = [stop_worker(w) for w in workers]
    assert codes[:2] == [-9, -9] and codes[2] == 0, logs[2].read_text()[-3000:]
    assert_same_end_state(book, topics, len(blocks) + len(reports))
    text = logs[2].read_text()
    assert "Traceback" not in text, text[-3000:]


def test_two_workers_share_the_partitions_and_hand_over_the_desk(
        own_broker: kafka.KafkaSettings, book_dir: Path, tmp_path: Path) -> None:
    broker = own_broker
    bootstrap = broker.bootstrap_servers
    topics = Topics(bootstrap)
    book = load_book(book_dir)
    blocks = orders(30)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        workers.append(start_worker(broker, tmp_path / "a", book_dir, logs[0], WORKER_ENV))
        asyncio.run(produce(bootstrap, "mats.signals", signals(blocks[:15])))
        wait_for("the first blocks", lambda: journal_size(topics) >= 15, workers, logs[:1])
        # a second worker joins: the partitions are shared out again
        workers.append(start_worker(broker, tmp_path / "b", book_dir, logs[1], WORKER_ENV))
        wait_for("the second worker to take partitions",
                 lambda: "Assigned" in logs[1].read_text() or "assigned" in logs[1].read_text(),
                 workers, logs)
        asyncio.run(produce(bootstrap, "mats.signals", signals(blocks[15:])))
        wait_for("every block", lambda: journal_size(topics) >= len(blocks), workers, logs)
        reports = broker_reports(child_orders(topics, book), seed=5)
        asyncio.run(produce(bootstrap, "mats.exec-reports", reports_feed(reports[:40])))
        wait_for("the first reports", lambda: journal_size(topics) >= len(blocks) + 40,
                 workers, logs)
        # the first worker stops: the other one takes everything, the desk included
        assert stop_worker(workers[0]) == 0
        asyncio.run(produce(bootstrap, "mats.exec-reports", reports_feed(reports[40:])))
        total = len(blocks) + len(reports)
        wait_for("every report", lambda: journal_size(topics) >= total, workers, logs)
    finally:
        codes = [stop_worker(w) for w in workers]
    assert codes == [0, 0]
    assert_same_end_state(book, topics, len(blocks) + len(reports))


def test_the_app_recovers_from_a_broker_restart_without_losing_acknowledged_events(
        own_broker: kafka.KafkaSettings, book_dir: Path, tmp_path: Path) -> None:
    broker = own_broker
    bootstrap = broker.bootstrap_servers
    topics = Topics(bootstrap)
    book = load_book(book_dir)
    blocks = orders(24)
    log = tmp_path / "worker.log"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(start_worker(broker, tmp_path, book_dir, log, WORKER_ENV))
        asyncio.run(produce(bootstrap, "mats.signals", signals(blocks[:12])))
        wait_for("the first blocks", lambda: journal_size(topics) >= 12, workers, [log])
        # the broker goes down and comes back on the same ports and data
        pid, _ = kafka.down(broker, timeout=60)
        assert pid is not None and not kafka.status(broker).reachable
        st = kafka.up(broker, timeout=90)
        assert st.reachable
        asyncio.run(produce(bootstrap, "mats.signals", signals(blocks[12:])))
        wait_for("every block", lambda: journal_size(topics) >= len(blocks), workers, [log])
        reports = broker_reports(child_orders(topics, book), seed=3)
        asyncio.run(produce(bootstrap, "mats.exec-reports", reports_feed(reports)))
        total = len(blocks) + len(reports)
        wait_for("every report", lambda: journal_size(topics) >= total, workers, [log])
    finally:
        codes = [stop_worker(w) for w in workers]
    assert codes == [0], log.read_text()[-3000:]
    assert_same_end_state(book, topics, len(blocks) + len(reports))


def garbage(rng: random.Random, valid: dict[str, Any], is_valid: Callable[[bytes], bool],
            ) -> bytes:
    """One malformed message of a kind drawn at random (drawn again while it is valid)."""
    while True:
        value = _mangle(rng, valid)
        if not is_valid(value):
            return value


def _mangle(rng: random.Random, valid: dict[str, Any]) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if kind == 1:
        return json.dumps(valid)[: rng.randint(1, 40)].encode()  # cut short
    if kind == 2:
        return json.dumps([valid]).encode()
    if kind == 3:
        broken = dict(valid)
        broken.pop(rng.choice(sorted(broken)))
        return json.dumps(broken).encode()
    if kind == 4:
        return json.dumps({**valid, rng.choice(sorted(valid)): rng.choice(
            [None, "", -1, [], {}, "x" * 300])}).encode()
    if kind == 5:
        return json.dumps({**valid, "surprise": 1}).encode()
    if kind == 6:
        return b""
    number = rng.choice([k for k, v in valid.items() if isinstance(v, int | float)])
    return json.dumps({**valid, number: float("nan")}).encode()  # JSON's NaN, not a number


def _valid(check: Callable[[bytes], object]) -> Callable[[bytes], bool]:
    def is_valid(value: bytes) -> bool:
        try:
            check(value)
        except (SignalError, ValueError):
            return False
        return True
    return is_valid


def test_a_fuzzed_stream_dead_letters_every_malformed_message_and_processes_the_rest(
        own_broker: kafka.KafkaSettings, book_dir: Path, tmp_path: Path) -> None:
    broker = own_broker
    bootstrap = broker.bootstrap_servers
    topics = Topics(bootstrap)
    book = load_book(book_dir)
    rng = random.Random(2026)
    good_blocks = orders(10)
    log = tmp_path / "worker.log"
    workers: list[subprocess.Popen[bytes]] = []
    bad_counts: dict[str, int] = {}
    try:
        workers.append(start_worker(broker, tmp_path, book_dir, log, WORKER_ENV))
        known = KnownIds.of(book)
        feed: list[tuple[bytes | None, bytes]] = []
        template = json.loads(good_blocks[0].model_dump_json())
        for o in good_blocks:
            feed.append((o.strategy.encode(), o.model_dump_json().encode()))
            for _ in range(3):
                feed.append((b"fuzz", garbage(rng, template, _valid(
                    lambda v: validate_signal(v, known)))))
        bad_counts["mats.signals"] = len(feed) - len(good_blocks)
        tick = {"symbol": good_blocks[0].symbol, "price": 100.0, "ts": "2026-11-25T14:30:00Z"}
        ticks = [(b"fuzz", garbage(rng, tick, _valid(lambda v: validate_tick(v, known))))
                 for _ in range(10)]
        bad_counts["mats.marketdata"] = len(ticks)
        asyncio.run(produce(bootstrap, "mats.signals", feed))
        asyncio.run(produce(bootstrap, "mats.marketdata", ticks))
        wait_for("the good blocks", lambda: journal_size(topics) >= len(good_blocks),
                 workers, [log])
        reports = broker_reports(child_orders(topics, book), seed=1)
        template = json.loads(reports[1].model_dump_json())
        mixed = reports_feed(reports)
        bad_reports = [(b"fuzz", garbage(rng, template, _valid(
            ExecutionReport.model_validate_json))) for _ in range(15)]
        for bad in bad_reports:  # among the good ones, which keep their order
            mixed.insert(rng.randrange(len(mixed) + 1), bad)
        bad_counts["mats.exec-reports"] = len(bad_reports)
        asyncio.run(produce(bootstrap, "mats.exec-reports", mixed))
        total = len(good_blocks) + len(reports)

        def all_dead_lettered() -> bool:
            letters = asyncio.run(topics.read(["mats.dlq"]))["mats.dlq"]
            return len(letters) >= sum(bad_counts.values()) and journal_size(topics) >= total

        wait_for("every dead letter", all_dead_lettered, workers, [log])
    finally:
        codes = [stop_worker(w) for w in workers]
    assert codes == [0], log.read_text()[-3000:]
    letters = [DeadLetter.model_validate_json(v)
               for _, v, _ in asyncio.run(topics.read(["mats.dlq"]))["mats.dlq"]]
    by_source: dict[str, int] = {}
    for letter in letters:
        by_source[letter.source.topic] = by_source.get(letter.source.topic, 0) + 1
        assert letter.code and letter.message  # every one with its reason
    assert by_source == bad_counts
    assert_same_end_state(book, topics, len(good_blocks) + len(reports))
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]


def book_with_other_money(book_dir: Path, folder: Path) -> Path:
    """A copy of the book in ``folder`` whose first account has 1,000 more cash: another
    start-of-day book (another fingerprint), on which the journal's decisions do not hold."""
    shutil.copytree(book_dir, folder)
    accounts = json.loads((folder / "accounts.json").read_text())
    accounts[0]["cash"] = accounts[0]["cash"] + 1_000.0
    (folder / "accounts.json").write_text(json.dumps(accounts))
    return folder


@contextlib.contextmanager
def first_day(broker: kafka.KafkaSettings, book: Path, tmp_path: Path,
              blocks: list[BlockOrder]) -> Iterator[subprocess.Popen[bytes]]:
    """A worker on ``book`` (its folder ``tmp_path/a``, its log ``tmp_path/first.log``) that
    has journaled the first three of ``blocks``; stopped, exit status 0, when the block ends."""
    bootstrap = broker.bootstrap_servers
    log = tmp_path / "first.log"
    (tmp_path / "a").mkdir()
    worker = start_worker(broker, tmp_path / "a", book, log, WORKER_ENV)
    try:
        asyncio.run(produce(bootstrap, "mats.signals", signals(blocks[:3])))
        wait_for("the first blocks", lambda: journal_size(Topics(bootstrap)) >= 3, [worker],
                 [log])
        yield worker
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-3000:]


def test_a_worker_on_another_book_than_the_journal_stops_and_takes_nothing(
        own_broker: kafka.KafkaSettings, book_dir: Path, tmp_path: Path) -> None:
    """A journal begun from one start-of-day book, and a worker started on another: it stops
    with the reason (not refusing each input one by one), and the inputs wait in Kafka."""
    bootstrap = own_broker.bootstrap_servers
    topics = Topics(bootstrap)
    blocks = orders(6)
    second = tmp_path / "second.log"
    with first_day(own_broker, book_dir, tmp_path, blocks):
        pass
    # the next start is on a book with other money: the journal's decisions do not hold on it
    other = book_with_other_money(book_dir, tmp_path / "other-book")
    asyncio.run(produce(bootstrap, "mats.signals", signals(blocks[3:])))
    (tmp_path / "b").mkdir()
    worker = start_worker(own_broker, tmp_path / "b", other, second, WORKER_ENV)
    try:
        worker.wait(timeout=WAIT_S)
    finally:
        code = stop_worker(worker)
    text = second.read_text()
    assert code == 78, text[-3000:]  # EX_CONFIG
    assert "was made from book" in text and "the worker stops" in text, text[-3000:]
    assert journal_size(topics) == 3  # nothing applied on the other book
    letters = asyncio.run(topics.read(["mats.dlq"]))["mats.dlq"]
    assert letters == [], letters  # nothing refused either: the blocks wait for a right worker


def test_a_new_day_empties_the_day_and_the_next_worker_begins_a_journal_on_its_book(
        own_broker: kafka.KafkaSettings, book_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``mats kafka new-day``: refused while a worker runs or while inputs wait unread (unless
    forced, and then they are listed); afterwards the day's topics are empty, the journal is
    gone, and a worker on the next day's book begins a new journal from it."""
    bootstrap = own_broker.bootstrap_servers
    topics = Topics(bootstrap)
    blocks = orders(6)
    new_day = ["kafka", "new-day", "--bootstrap", bootstrap, "--timeout", "60"]
    second = tmp_path / "second.log"
    with first_day(own_broker, book_dir, tmp_path, blocks):
        capsys.readouterr()
        assert mats_cli(new_day) == 1
        err = capsys.readouterr().err
        assert "the day is in use" in err and "mats (1 running)" in err, err
        assert journal_size(topics) == 3  # nothing changed
    # a signal that came after the worker stopped: nobody read it
    asyncio.run(produce(bootstrap, "mats.signals", signals(blocks[3:4])))
    assert mats_cli(new_day) == 1
    err = capsys.readouterr().err
    assert "not yet read would be lost" in err and "mats: mats.signals[" in err, err
    assert journal_size(topics) == 3
    assert mats_cli([*new_day, "--force"]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"^kafka: discarded unread: mats: mats\.signals\[\d\] 1$", err, re.M), err
    # no sink ran here: what it would have stored is listed too, as never read
    assert "discarded unread: mats-sink: mats.blocks[0] 3 (that group never read here)" in err
    assert "journal: deleted (mats-journal-changelog, mats-marks-changelog)" in out, out
    day = asyncio.run(topics.read(["mats.signals", "mats.blocks", "mats.allocations",
                                   "mats.alerts", JOURNAL_TOPIC]))
    assert all(v == [] for v in day.values()), {k: len(v) for k, v in day.items()}
    states = {t.name: t for t in asyncio.run(kafka.describe_topics(bootstrap, kafka.TOPICS))}
    assert all(states[s.name].partitions == s.partitions for s in kafka.TOPICS), states
    # the next day's book has other money: on the old journal its worker would stop (exit 78)
    other = book_with_other_money(book_dir, tmp_path / "next-book")
    (tmp_path / "b").mkdir()
    worker = start_worker(own_broker, tmp_path / "b", other, second, WORKER_ENV)
    try:
        asyncio.run(produce(bootstrap, "mats.signals", signals(blocks[4:])))
        wait_for("the new day's blocks", lambda: journal_size(topics) >= 2, [worker], [second])
    finally:
        code = stop_worker(worker)
    assert code == 0, second.read_text()[-3000:]
    entries = asyncio.run(topics.journal())
    assert [e.seq for e in entries] == [0, 1]
    assert {e.book for e in entries} == {book_fingerprint(load_book(other))}
    assert [e.source.offset for e in entries] == [0, 1]  # of the new day's mats.blocks
