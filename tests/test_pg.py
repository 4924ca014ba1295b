"""The private PostgreSQL server (:mod:`mats.pg`) and the stream app's sink writing to it.

Real servers throughout: Debian's PostgreSQL, each test's own cluster in a run folder of its
own (``mats.pg.up`` as a developer would run it), and, at the end, a Kafka broker and a stream
worker whose ``MATS_DB_URL`` is a PostgreSQL database. Installing the package is checked with a
stand-in ``apt-get`` and a stand-in ``/usr/lib/postgresql``: the machine's packages are left
alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from conftest import SAMPLE_DIR
from mats import Engine, kafka, pg
from mats.blocks import Alert, ChildOrder, block_messages, brokers_of
from mats.config import load_book, load_orders
from mats.models import BlockOrder, Side
from mats.store import Store, event_from_message, sink_topic_names
from workers import WAIT_S, start_sink, start_worker, stop_worker


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A run folder of the test's own, not yet made, which the server's user can reach.

    Under a fresh temporary folder (not pytest's, which ``postgres`` cannot enter when the
    tests run as root); whatever server the test left running there is stopped.
    """
    base = Path(tempfile.mkdtemp(prefix="mats-pgtest-"))
    os.chmod(base, 0o755)
    run = base / "pg"
    try:
        yield run
    finally:
        try:
            pg.down(run, timeout=30)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def _query(url: str, sql: str) -> object:
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            result = c.execute(text(sql))
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------ up, down, status


def test_up_status_down_and_up_again_keeps_the_data(run_dir: Path) -> None:
    st = pg.status(run_dir)
    assert (st.initialized, st.running, st.answering, st.url) == (False, False, False, None)

    url = pg.up(run_dir, port=0)
    st = pg.status(run_dir)
    assert st.initialized and st.running and st.answering and st.version
    assert url == st.url == f"postgresql+psycopg://mats@127.0.0.1:{st.port}/mats"
    assert json.loads((run_dir / "pg.json").read_text())["port"] == st.port
    # loopback only, no Unix socket
    conf = (run_dir / "data" / "mats.conf").read_text()
    assert "listen_addresses = '127.0.0.1'" in conf and "unix_socket_directories = ''" in conf
    assert pg.up(run_dir) == url and pg.status(run_dir).pid == st.pid  # running: left alone

    _query(url, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
    engine = create_engine(url)
    open_session = engine.connect()
    try:  # a session still open does not hold `down` up: the server ends it
        assert open_session.execute(text("SELECT n FROM kept")).scalar() == 42
        assert pg.down(run_dir, timeout=60) == st.pid
        with pytest.raises(OperationalError, match="terminating connection"):
            open_session.execute(text("SELECT 1"))
    finally:
        open_session.invalidate()
        open_session.close()
        engine.dispose()
    st = pg.status(run_dir)
    assert (st.initialized, st.running, st.answering, st.pid) == (True, False, False, None)
    assert st.url == url  # the recorded port
    assert pg.down(run_dir) is None  # nothing to stop

    assert pg.up(run_dir) == url  # the recorded port again, the same cluster
    assert _query(url, "SELECT n FROM kept") == 42
    assert pg.down(run_dir) is not None
    assert not (run_dir / "data" / "postmaster.pid").exists()


def test_a_port_in_use_is_refused_before_anything_is_made(run_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind((pg.HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(pg.PgError, match=f"127.0.0.1:{port} is in use by another program"):
            pg.up(run_dir, port=port)
    assert not (run_dir / "data").exists()
    with pytest.raises(pg.PgError, match="not a TCP port"):
        pg.up(run_dir, port=70_000)


def test_a_server_that_cannot_start_is_reported_from_its_log(run_dir: Path) -> None:
    pg.up(run_dir, port=0)
    pg.down(run_dir)
    with (run_dir / "data" / "postgresql.conf").open("a") as conf:
        conf.write("shared_buffers = 'plenty'\n")
    with pytest.raises(pg.PgError) as caught:
        pg.up(run_dir, timeout=60)
    message = str(caught.value)
    assert message.startswith("PostgreSQL did not start: ") and "\n" not in message
    assert "contains errors" in message and str(run_dir / "server.log") in message
    assert not pg.status(run_dir).running


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the run folder to postgres")
def test_as_root_a_run_folder_the_server_user_cannot_reach_is_refused() -> None:
    closed = Path(tempfile.mkdtemp(prefix="mats-pgclosed-"))  # mode 700, root's
    try:
        with pytest.raises(pg.PgError, match=f"cannot enter {closed} \\(mode 700, owner root\\)"):
            pg.up(closed / "pg", port=0)
        assert not (closed / "pg" / "data").exists()
    finally:
        shutil.rmtree(closed)


def test_the_server_user_must_exist_and_not_be_root(run_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "_euid", lambda: 0)  # as root, whoever runs the tests
    with pytest.raises(pg.PgError, match="no user 'no-such-user-mats'"):
        pg.up(run_dir, env={"MATS_PG_USER": "no-such-user-mats"})
    with pytest.raises(pg.PgError, match="MATS_PG_USER=root is root"):
        pg.up(run_dir, env={"MATS_PG_USER": "root"})


def test_a_missing_server_is_one_line_on_the_command_line(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MATS_PG_BIN", str(tmp_path))
    assert pg.main(["up", "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err == (f"pg: error: MATS_PG_BIN={tmp_path} does not hold PostgreSQL's initdb, "
                   "pg_ctl, postgres, psql\n")


def test_the_command_line(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--run-dir", str(run_dir)]
    assert pg.main(["status", *where]) == 1
    assert capsys.readouterr().out.startswith("postgresql no cluster\n")
    assert pg.main(["url", *where]) == 1
    assert "no port recorded" in capsys.readouterr().err
    assert pg.main(["down", *where]) == 0
    assert "nothing to stop" in capsys.readouterr().err
    assert pg.main(["up", *where, "--port", "70000"]) == 2
    assert "70000 is not a TCP port" in capsys.readouterr().err
    assert pg.main([]) == 2
    capsys.readouterr()

    assert pg.main(["up", *where, "--port", "0"]) == 0
    url = capsys.readouterr().out.strip()  # the URL alone on stdout, for MATS_DB_URL=$(...)
    assert url.startswith("postgresql+psycopg://mats@127.0.0.1:")
    assert pg.main(["url", *where]) == 0 and capsys.readouterr().out.strip() == url
    # as its own program, JSON
    done = subprocess.run([sys.executable, "-m", "mats.pg", "status", "--json", *where],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    assert (st["running"], st["answering"], st["url"]) == (True, True, url)
    assert pg.main(["down", *where]) == 0
    assert "stopped (pid" in capsys.readouterr().err
    assert pg.main(["status", *where]) == 1
    assert capsys.readouterr().out.startswith("postgresql stopped")


# ------------------------------------------------------------------------------ installing


def _tools(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres", "psql"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)


# A stand-in apt-get: logs its arguments; `install` fails until `update` has run, then puts a
# server's programs into $FAKE_ROOT/15/bin (as Debian's postgresql-15 would).
FAKE_APT = """#!/bin/sh
echo "$DEBIAN_FRONTEND $*" >> "$FAKE_ROOT/apt.log"
case "$*" in
  *update*) touch "$FAKE_ROOT/updated"; exit 0 ;;
esac
if [ "$FAKE_APT_FAILS" = always ] || [ ! -e "$FAKE_ROOT/updated" ]; then
  echo "E: Unable to locate package postgresql" >&2; exit 100
fi
mkdir -p "$FAKE_ROOT/15/bin"
for t in initdb pg_ctl postgres psql; do printf '#!/bin/sh\\n' > "$FAKE_ROOT/15/bin/$t"; done
chmod 755 "$FAKE_ROOT/15/bin/"*
"""


@pytest.fixture
def fake_apt(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has only the stand-in apt-get; its root is ``FAKE_ROOT``."""
    bin_dir = tmp_path / "apt-bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(FAKE_APT)
    (bin_dir / "apt-get").chmod(0o755)
    root = tmp_path / "lib-postgresql"
    root.mkdir()
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_ROOT": str(root)}


def test_the_newest_installed_server_is_used(tmp_path: Path) -> None:
    _tools(tmp_path / "13" / "bin")
    _tools(tmp_path / "15" / "bin")
    (tmp_path / "16" / "bin").mkdir(parents=True)  # a client-only version: no server
    found = pg.find_server(root=tmp_path, env={})
    assert found == pg.PgServer("15", tmp_path / "15" / "bin")
    assert pg.find_server("13", root=tmp_path, env={}) == pg.PgServer("13", tmp_path / "13/bin")
    assert pg.find_server("16", root=tmp_path, env={}) is None
    # installed already: apt-get is not asked
    assert pg.ensure_installed(root=tmp_path, env={"PATH": ""}) == found


def test_installing_runs_apt_get_and_updates_the_lists_when_it_must(
        fake_apt: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "_euid", lambda: 0)
    root = Path(fake_apt["FAKE_ROOT"])
    said: list[str] = []
    found = pg.ensure_installed(root=root, env=fake_apt, announce=said.append)
    assert found == pg.PgServer("15", root / "15" / "bin")
    calls = (root / "apt.log").read_text().splitlines()
    install = ("noninteractive -q -y -o DPkg::Lock::Timeout=300 install "
               "--no-install-recommends postgresql")
    assert calls == [install, "noninteractive -q -o DPkg::Lock::Timeout=300 update", install]
    assert len(said) == 2 and "apt-get" in said[0]


def test_installing_fails_with_one_line_saying_why(
        fake_apt: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(fake_apt["FAKE_ROOT"])
    monkeypatch.setattr(pg, "_euid", lambda: 1000)
    with pytest.raises(pg.PgError, match="needs root: sudo apt-get install postgresql"):
        pg.ensure_installed(root=root, env=fake_apt)
    assert not (root / "apt.log").exists()
    monkeypatch.setattr(pg, "_euid", lambda: 0)
    with pytest.raises(pg.PgError, match="there is no apt-get to install it"):
        pg.ensure_installed(root=root, env={"PATH": str(root)})
    with pytest.raises(pg.PgError) as caught:
        pg.ensure_installed(root=root, env={**fake_apt, "FAKE_APT_FAILS": "always"})
    assert str(caught.value) == ("apt-get install postgresql failed: "
                                 "E: Unable to locate package postgresql")
    assert len((root / "apt.log").read_text().splitlines()) == 3  # install, update, install


# ------------------------------------------------------------------------------ the sink


@pytest.mark.slow
def test_the_worker_sink_writes_journeys_to_postgresql(
        broker: kafka.KafkaSettings, pg_url: str, book_copy: Path, tmp_path: Path) -> None:
    # room on the reference price's age: how long the worker takes to start must not matter
    risk = yaml.safe_load((book_copy / "risk.yaml").read_text())
    (book_copy / "risk.yaml").write_text(yaml.safe_dump({**risk, "max_reference_age_s": 3600}))
    book = load_book(book_copy)
    base = load_orders(SAMPLE_DIR / "orders.json")[0]
    now = datetime.now(UTC)
    good = base.model_copy(update={"order_id": "PG-1", "journey_id": "J-PG-1",
                                   "side": Side.BUY, "quantity": 1_000,
                                   "reference_price": book.prices[base.symbol],
                                   "reference_time": now, "limit_price": None})
    refused = good.model_copy(update={"order_id": "PG-2", "journey_id": "J-PG-2",
                                      "quantity": 200_000})  # above the firm's 150,000
    expected = block_messages(Engine(book).decide(good, as_of=now), brokers_of(book),
                              order=good, decided_at=now)
    children = sum(isinstance(m.message, ChildOrder) for m in expected)
    alerts = sum(isinstance(m.message, Alert) for m in expected)
    want = {"J-PG-1": ["signal", "allocation_instruction", *["child_order"] * children,
                       *["alert"] * alerts],
            "J-PG-2": ["signal", "allocation_instruction", "alert"]}
    assert children >= 2
    log, sink_log = tmp_path / "worker.log", tmp_path / "sink.log"

    async def scenario(sink: subprocess.Popen[bytes]) -> dict[str, list[str]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for o in (good, refused):
                await producer.send_and_wait("mats.signals", o.model_dump_json().encode(),
                                             key=o.strategy.encode())
        finally:
            await producer.stop()
        deadline = time.monotonic() + WAIT_S
        with Store(pg_url) as store:
            while True:
                got = {j: [e.kind for e in store.journey(j)] for j in want}
                if got == want or time.monotonic() > deadline or sink.poll() is not None:
                    return got
                await asyncio.sleep(0.3)

    worker = start_worker(broker, tmp_path, book_copy, log)
    sink = start_sink(broker, tmp_path, book_copy, sink_log, extra_env={"MATS_DB_URL": pg_url})
    try:
        got = asyncio.run(scenario(sink))
    finally:
        codes = [stop_worker(worker), stop_worker(sink)]
    assert got == want, log.read_text()[-3000:] + sink_log.read_text()[-3000:]
    assert codes == [0, 0], log.read_text()[-3000:] + sink_log.read_text()[-3000:]
    # written by the sink into PostgreSQL itself: its schema, by its migrations, and the rows
    assert _query(pg_url, "SELECT version_num FROM alembic_version") == "0002"
    assert _query(pg_url, "SELECT count(*) FROM events") == sum(map(len, want.values()))
    assert _query(pg_url, "SELECT count(DISTINCT event_id) FROM events "
                          "WHERE journey_id = 'J-PG-1' AND order_id = 'PG-1'") == len(
        want["J-PG-1"])
    with Store(pg_url) as store:
        signal, instruction = store.journey("J-PG-1")[:2]
        assert signal.data()["quantity"] == 1_000 and signal.topic == "mats.blocks"
        assert instruction.data()["status"] == "accepted"
        assert store.journey("J-PG-2")[1].data()["status"] == "rejected"
        assert signal.occurred_at.tzinfo is not None
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_trading_goes_on_while_the_database_is_down_and_the_sink_catches_up(
        own_broker: kafka.KafkaSettings, run_dir: Path, book_copy: Path, tmp_path: Path) -> None:
    """The store's database stops in the middle of the day: the desk keeps deciding blocks and
    sending child orders, the sink waits, and when the database is back every event published
    is in it, once."""
    url = pg.up(run_dir, port=0)
    risk = yaml.safe_load((book_copy / "risk.yaml").read_text())
    risk.pop("throttle", None)
    (book_copy / "risk.yaml").write_text(yaml.safe_dump({**risk, "max_reference_age_s": 1e9}))
    book = load_book(book_copy)
    base = load_orders(SAMPLE_DIR / "orders.json")[0]
    now = datetime.now(UTC)
    orders = [base.model_copy(update={"order_id": f"OUT-{i}", "journey_id": f"J-OUT-{i}",
                                      "side": Side.BUY, "quantity": 500,
                                      "reference_price": book.prices[base.symbol],
                                      "reference_time": now, "limit_price": None})
              for i in range(6)]
    journeys = {o.journey_id for o in orders}
    log, sink_log = tmp_path / "worker.log", tmp_path / "sink.log"

    def logs() -> str:
        return f"worker:\n{log.read_text()[-3000:]}\nsink:\n{sink_log.read_text()[-3000:]}"

    async def send(items: list[BlockOrder]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=own_broker.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for o in items:
                await producer.send_and_wait("mats.signals", o.model_dump_json().encode(),
                                             key=o.strategy.encode())
        finally:
            await producer.stop()

    async def read_published() -> dict[str, tuple[str, str]]:
        """Event id -> (journey, kind) of every message of the sink's topics on our journeys."""
        out: dict[str, tuple[str, str]] = {}
        for records in (await kafka.read_topics(own_broker.bootstrap_servers,
                                                sink_topic_names())).values():
            for r in records:
                e = event_from_message(r.topic, r.partition, r.offset, r.value, key=r.key,
                                       timestamp=r.timestamp / 1000)
                if e.journey_id in journeys:
                    out[e.event_id] = (e.journey_id, e.kind)
        return out

    def published() -> dict[str, str]:
        return {i: kind for i, (_, kind) in asyncio.run(read_published()).items()}

    def decided(n: int) -> dict[str, str]:
        """Waits until ``n`` blocks have both their allocation instruction and a child order
        published (the desk's producer sends to each topic on its own, so one can be seen on
        Kafka before the other)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            events = asyncio.run(read_published())
            kinds: dict[str, set[str]] = {}
            for journey, kind in events.values():
                kinds.setdefault(journey, set()).add(kind)
            if sum({"allocation_instruction", "child_order"} <= k for k in kinds.values()) >= n:
                return {i: kind for i, (_, kind) in events.items()}
            assert time.monotonic() < deadline, logs()
            time.sleep(0.5)

    def stored() -> dict[str, str]:
        with Store(url) as store:
            return {e.event_id: e.kind for j in sorted(journeys) for e in store.journey(j)}

    def caught_up() -> dict[str, str]:
        """Waits until the store holds every event published on our journeys, and no other;
        what was published is read again each time, as the desk may still be sending."""
        deadline = time.monotonic() + WAIT_S
        while (events := published()) != (kept := stored()):
            missing = sorted(events[i] for i in events.keys() - kept.keys())
            extra = sorted(kept[i] for i in kept.keys() - events.keys())
            assert time.monotonic() < deadline, f"not stored: {missing}, extra: {extra}\n{logs()}"
            time.sleep(0.3)
        return events

    worker = start_worker(own_broker, tmp_path, book_copy, log)
    sink = start_sink(own_broker, tmp_path, book_copy, sink_log, extra_env={"MATS_DB_URL": url})
    try:
        asyncio.run(send(orders[:3]))
        decided(3)
        before = caught_up()  # the sink has written the first half
        pg.down(run_dir, timeout=30)
        # the database is down: the desk still decides the next blocks and routes their orders
        asyncio.run(send(orders[3:]))
        during = decided(6)
        assert sum(k == "child_order" for k in during.values()) > sum(
            k == "child_order" for k in before.values())
        deadline = time.monotonic() + WAIT_S
        while "the SQL store failed" not in sink_log.read_text():
            assert time.monotonic() < deadline, logs()
            time.sleep(0.3)
        assert worker.poll() is None and sink.poll() is None, logs()
        assert pg.up(run_dir) == url  # the same server and port, its data kept
        after = caught_up()  # every event published, and no other
    finally:
        codes = [stop_worker(worker), stop_worker(sink)]
    assert codes == [0, 0], logs()
    assert set(during) <= set(after)
    assert sorted(set(after.values())) == ["allocation_instruction", "child_order", "signal"]
    assert _query(url, "SELECT count(*) FROM events") == len(after)
