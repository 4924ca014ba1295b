"""Kafka for MATS against a real broker: ``mats kafka up|down|status|topics`` and the topic table.

One single-node Kafka 4 broker (KRaft) is started for this module on free loopback ports in a
temporary run folder, exactly as ``mats kafka up`` starts it (the ``broker`` fixture of
``conftest.py``); the last test stops it and checks that nothing is left running. The clients
here are plain aiokafka, independent of the code under test.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from mats import kafka
from mats.cli import main

pytestmark = pytest.mark.slow

MATS = Path(sys.executable).parent / "mats"


def mats_cli(*args: str, run_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``mats`` command, as a user runs it (its own process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATS_KAFKA_")}
    if run_dir is not None:
        env["MATS_KAFKA_RUN_DIR"] = str(run_dir)
    return subprocess.run([str(MATS), *args], capture_output=True, text=True, env=env,
                          check=False, timeout=180)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


async def _topic_facts(bootstrap: str, names: list[str]) -> dict[str, dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        await admin.close()
    facts: dict[str, dict[str, Any]] = {
        t["topic"]: {"error_code": t["error_code"], "partitions": len(t["partitions"])}
        for t in described}
    for response in responses:
        for res in response.to_object()["resources"]:
            entries = {e["config_names"]: e["config_value"] for e in res["config_entries"]}
            facts[res["resource_name"]]["configs"] = entries
    return facts


# ------------------------------------------------------------------------------ topics


def test_topic_table_is_well_formed() -> None:
    specs = kafka.topic_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert {"mats.signals", "mats.dlq", "mats.sod-state", "mats.account-state"} <= set(names)
    # state keyed by what it is about: the newest message per key is the state
    assert {s.name for s in specs if s.cleanup_policy == "compact"} == {
        "mats.sod-state", "mats.account-state", "mats.exposure", "mats.gateway-status"}
    assert [s.name for s in kafka.topic_specs(["x", "x"]) if "orders" in s.name] == [
        "mats.orders.x"]


def test_docs_table_matches_the_code() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "streams.md").read_text("utf-8")
    rows = {cells[0].strip("`"): cells[1:3]
            for line in page.splitlines() if line.startswith("| `mats.")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    gateway = kafka.gateway_topic("gw")
    expected = {s.name: [str(s.partitions), s.cleanup_policy] for s in kafka.TOPICS}
    expected["mats.orders.<gateway>"] = [str(gateway.partitions), gateway.cleanup_policy]
    assert rows == expected


def test_topics_exist_with_partitions_and_cleanup_policy(broker: kafka.KafkaSettings) -> None:
    specs = broker.specs()
    facts = asyncio.run(_topic_facts(broker.bootstrap_servers, [s.name for s in specs]))
    for spec in specs:
        got = facts[spec.name]
        assert got["error_code"] == 0, spec.name
        assert got["partitions"] == spec.partitions, spec.name
        assert got["configs"]["cleanup.policy"] == spec.cleanup_policy, spec.name
        if spec.retention_ms is not None:
            assert got["configs"]["retention.ms"] == str(spec.retention_ms), spec.name
    assert facts["mats.sod-state"]["configs"]["cleanup.policy"] == "compact"
    assert facts["mats.account-state"]["configs"]["cleanup.policy"] == "compact"
    assert facts["mats.signals"]["configs"]["cleanup.policy"] == "delete"


def test_read_topics_gives_what_each_topic_holds_now(broker: kafka.KafkaSettings) -> None:
    spec = kafka.TopicSpec("test.read-topics", 3, "delete", "n", "read_topics test")

    async def scenario() -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        await kafka.ensure_topics(broker.bootstrap_servers, [spec])
        empty = await kafka.read_topics(broker.bootstrap_servers, [spec.name])
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for n in range(30):
                await producer.send_and_wait(spec.name, str(n).encode(), key=str(n % 7).encode())
        finally:
            await producer.stop()
        return empty, await kafka.read_topics(broker.bootstrap_servers,
                                              [spec.name, "mats.sod-state"])

    empty, got = asyncio.run(scenario())
    assert empty == {spec.name: []}
    records = got[spec.name]
    assert sorted(int(r.value) for r in records) == list(range(30))
    for p in range(3):  # each partition in offset order, every key in one partition
        part = [r for r in records if r.partition == p]
        assert [r.offset for r in part] == list(range(len(part)))
        assert [int(r.value) for r in part] == sorted(int(r.value) for r in part)
    assert len({(r.key, r.partition) for r in records}) == 7
    assert "mats.sod-state" in got


def test_a_new_day_empties_the_event_topics_and_keeps_the_state_topics(
        own_broker: kafka.KafkaSettings) -> None:
    bootstrap = own_broker.bootstrap_servers
    specs = own_broker.specs()

    async def scenario() -> tuple[kafka.NewDay, dict[str, list[Any]]]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait("mats.alerts", b"yesterday's alert", key=b"A1")
            await producer.send_and_wait("mats.sod-state", b"yesterday's state", key=b"A1")
        finally:
            await producer.stop()
        # no group has read anything: none is asked (readers empty), and nothing is refused
        day = await kafka.new_day(bootstrap, specs, {}, timeout=60)
        return day, await kafka.read_topics(bootstrap, ["mats.alerts", "mats.sod-state"])

    day, got = asyncio.run(scenario())
    events = [s for s in specs if s.cleanup_policy == "delete"]
    assert sorted(day.emptied) == sorted(s.name for s in events)
    assert day.changelogs == () and day.discarded == ()  # no worker ever ran here
    assert got["mats.alerts"] == []
    assert [r.value for r in got["mats.sod-state"]] == [b"yesterday's state"]
    states = {t.name: t for t in asyncio.run(kafka.describe_topics(bootstrap, specs))}
    for spec in specs:  # every topic there again, as the table has it
        assert (states[spec.name].partitions, states[spec.name].cleanup_policy) == (
            spec.partitions, spec.cleanup_policy), spec.name


def test_up_again_changes_nothing(broker: kafka.KafkaSettings) -> None:
    pid = kafka.broker_pid(broker)
    st = kafka.up(broker, timeout=60)
    assert (st.started, st.pid, st.created, st.problems()) == (False, pid, [], [])


# ------------------------------------------------------------------------------ messages


SIGNALS = [(f"strategy-{i % 3}".encode(), f'{{"signal": {i}}}'.encode()) for i in range(30)]
STATES = [(f"ACC-{i % 4:03d}".encode(), f'{{"version": {i}}}'.encode()) for i in range(12)]


async def _produce(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in SIGNALS:
            await producer.send("mats.signals", value, key=key)
        for key, value in STATES:
            await producer.send("mats.account-state", value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int, *, group: str | None = None,
                   commit: bool = False) -> list[tuple[bytes, bytes]]:
    """Every message of ``topic`` from the start (``count`` of them expected), in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    partitions = (await _topic_facts(bootstrap, [topic]))[topic]["partitions"]
    parts = [TopicPartition(topic, p) for p in range(partitions)]
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        got: dict[TopicPartition, list[tuple[int, bytes, bytes]]] = {}
        deadline = time.monotonic() + 30  # a bound on a broken broker, not a timing check
        while sum(map(len, got.values())) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                got.setdefault(tp, []).extend(
                    (r.offset, r.key or b"", r.value or b"") for r in records)
        if commit:
            await consumer.commit()
    finally:
        await consumer.stop()
    return [(k, v) for tp in sorted(got) for _, k, v in sorted(got[tp])]


async def _committed(bootstrap: str, topic: str, group: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    partitions = (await _topic_facts(bootstrap, [topic]))[topic]["partitions"]
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


def test_messages_and_topics_survive_a_restart(broker: kafka.KafkaSettings) -> None:
    bootstrap = broker.bootstrap_servers
    asyncio.run(_produce(bootstrap))
    signals = asyncio.run(_consume(bootstrap, "mats.signals", len(SIGNALS), group="t-restart",
                                   commit=True))
    states = asyncio.run(_consume(bootstrap, "mats.account-state", len(STATES)))
    assert sorted(signals) == sorted(SIGNALS)
    assert sorted(states) == sorted(STATES)
    # one key, one partition: each strategy's signals in the order they were sent
    for key in {k for k, _ in SIGNALS}:
        assert [v for k, v in signals if k == key] == [v for k, v in SIGNALS if k == key]
    committed = asyncio.run(_committed(bootstrap, "mats.signals", "t-restart"))
    assert sum(o or 0 for o in committed.values()) == len(SIGNALS)
    before = kafka.status(broker)

    stopped = mats_cli("kafka", "down", run_dir=broker.run_dir)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped (pid {before.pid})" in stopped.stdout
    assert kafka.broker_pid(broker) is None
    started = mats_cli("kafka", "up", run_dir=broker.run_dir)
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout
    assert f"0 created, {len(broker.specs())} there already" in started.stdout

    after = kafka.status(broker)
    assert after.reachable and after.pid not in (None, before.pid)
    assert after.bootstrap == bootstrap  # the run folder kept its ports
    assert after.cluster_id == before.cluster_id  # same storage, not formatted anew
    assert [t.as_dict() for t in after.topics] == [t.as_dict() for t in before.topics]
    assert after.problems() == []
    assert asyncio.run(_consume(bootstrap, "mats.signals", len(SIGNALS))) == signals
    assert asyncio.run(_consume(bootstrap, "mats.account-state", len(STATES))) == states
    # the group coordinator reloads committed offsets after a restart: read until it has
    # (bounded), then they must be exactly the ones committed before
    deadline = time.monotonic() + 60
    again = asyncio.run(_committed(bootstrap, "mats.signals", "t-restart"))
    while again != committed and time.monotonic() < deadline:
        time.sleep(0.5)
        again = asyncio.run(_committed(bootstrap, "mats.signals", "t-restart"))
    assert again == committed


# ------------------------------------------------------------------------------ any other Kafka


def test_up_with_bootstrap_servers_only_creates_topics(broker: kafka.KafkaSettings,
                                                       tmp_path: Path) -> None:
    unused = tmp_path / "unused"
    cfg = kafka.settings(run_dir=unused, env={"MATS_KAFKA_BOOTSTRAP": broker.bootstrap_servers,
                                              "MATS_KAFKA_GATEWAYS": "prime-a,extra-gw"})
    assert not cfg.managed
    st = kafka.up(cfg, timeout=60)
    assert st.created == ["mats.orders.extra-gw"]
    assert st.pid is None and not st.started
    assert not unused.exists()  # no broker, no run folder
    assert {t.name for t in kafka.status(cfg).topics} >= {"mats.orders.extra-gw",
                                                          "mats.orders.retail-b"}
    down = mats_cli("kafka", "down", "--bootstrap", broker.bootstrap_servers)
    assert down.returncode == 0, down.stderr
    assert "nothing to stop" in down.stdout
    assert kafka.broker_pid(broker) is not None


# ------------------------------------------------------------------------------ the command


def test_status_command(broker: kafka.KafkaSettings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["kafka", "status", "--run-dir", str(broker.run_dir)], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("kafka      running, pid ")
    assert f"bootstrap  {broker.bootstrap_servers}" in lines
    assert any(line.split()[:3] == ["mats.sod-state", "6", "compact"] for line in lines)
    assert any(line.split()[:3] == ["mats.dlq", "3", "delete"] for line in lines)

    code, out, _ = run(["kafka", "status", "--json", "--run-dir", str(broker.run_dir)], capsys)
    doc = json.loads(out)
    assert code == 0
    assert (doc["running"], doc["reachable"], doc["bootstrap"]) == (
        True, True, broker.bootstrap_servers)
    assert doc["pid"] == kafka.broker_pid(broker)
    by_name = {t["name"]: t for t in doc["topics"]}
    assert by_name["mats.account-state"]["cleanup_policy"] == "compact"
    assert by_name["mats.signals"]["partitions"] == 6


def test_topics_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["kafka", "topics", "--gateway", "gw-1"], capsys)
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["topic", "partitions", "cleanup"]
    assert "mats.orders.gw-1" in out and "mats.orders.prime-a" not in out
    code, out, _ = run(["kafka", "topics", "--json"], capsys)
    doc = json.loads(out)
    assert {t["name"]: t["configs"]["cleanup.policy"] for t in doc}["mats.sod-state"] == "compact"


@pytest.mark.parametrize(("argv", "env", "needle"), [
    (["kafka", "up", "--port", "70000"], {}, "--port: 70000 is not a TCP port"),
    (["kafka", "up", "--port", "0", "--controller-port", "-1"], {}, "--controller-port"),
    (["kafka", "up", "--port", "9000", "--controller-port", "9000"], {}, "different ports"),
    (["kafka", "up", "--gateway", "prime/a"], {}, "--gateway: 'prime/a' cannot name a topic"),
    (["kafka", "up", "--host", "a b"], {}, "--host"),
    (["kafka", "up", "--timeout", "0"], {}, "--timeout"),
    (["kafka", "status"], {"MATS_KAFKA_BOOTSTRAP": "localhost"}, "MATS_KAFKA_BOOTSTRAP"),
    (["kafka", "topics"], {"MATS_KAFKA_GATEWAYS": "ok,not ok"}, "MATS_KAFKA_GATEWAYS"),
])
def test_bad_options_are_one_line_errors(argv: list[str], env: dict[str, str], needle: str,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MATS_KAFKA_RUN_DIR", str(tmp_path / "run"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("mats: error: ") and err.count("\n") == 1, err
    assert needle in err
    assert not (tmp_path / "run").exists()


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["kafka", "up", "--port", "many"], capsys)
    assert code == 2
    assert "argument --port: 'many' is not a whole number" in err
    code, _, err = run(["kafka"], capsys)
    assert code == 2
    assert "usage: mats kafka" in err
    code, _, err = run(["kafka", "sideways"], capsys)
    assert code == 2


def test_bad_option_from_the_installed_command(tmp_path: Path) -> None:
    done = mats_cli("kafka", "up", "--port", "123456", run_dir=tmp_path / "run")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == ("mats: error: --port: 123456 is not a TCP port "
                           "(1-65535, or 0 for a free one)\n")


def test_status_of_a_stopped_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["kafka", "status", "--run-dir", str(tmp_path)], capsys)
    assert code == 1
    assert out.splitlines()[0].startswith("kafka      stopped")
    code, out, _ = run(["kafka", "down", "--run-dir", str(tmp_path)], capsys)
    assert code == 0
    assert "not running" in out


def test_port_in_use_is_refused_before_starting(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, out, err = run(["kafka", "up", "--run-dir", str(tmp_path / "run"),
                              "--port", str(port), "--controller-port", "0"], capsys)
    assert code == 1
    assert out == ""
    assert f"127.0.0.1:{port} is in use" in err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ last: down


def _processes_on(run_dir: Path) -> list[int]:
    """Live processes whose command line names a file in ``run_dir``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if str(run_dir).encode() in argv and state != "Z":
            out.append(int(entry.name))
    return out


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def test_down_leaves_no_process_behind(broker: kafka.KafkaSettings,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    pid = kafka.broker_pid(broker)
    assert pid is not None and _processes_on(broker.run_dir) == [pid]
    code, out, _ = run(["kafka", "down", "--run-dir", str(broker.run_dir)], capsys)
    assert code == 0
    assert out == f"kafka: stopped (pid {pid})\n"
    assert _processes_on(broker.run_dir) == []
    assert not broker.pid_file.exists()
    assert _bindable(broker.host, broker.port)
    assert _bindable(broker.host, broker.controller_port)
    code, out, _ = run(["kafka", "status", "--run-dir", str(broker.run_dir)], capsys)
    assert code == 1
    assert "stopped" in out


@pytest.mark.parametrize(("interrupted", "remake_fails"),
                         [(False, False), (False, True), (True, True)])
def test_a_new_day_whose_delete_fails_remakes_the_topics_and_tells_every_failure(
        monkeypatch: pytest.MonkeyPatch, interrupted: bool, remake_fails: bool) -> None:
    """Deleting fails half way (or is interrupted): the event topics are made again, and the
    error names what failed; when making them again fails too, the error names both failures,
    not the last (an interruption goes on as itself, with a note of the second)."""
    import contextlib

    specs = kafka.topic_specs()
    remade: list[list[str]] = []

    class Admin:
        async def list_consumer_groups(self) -> list[tuple[str, str]]:
            return []

        async def list_topics(self) -> list[str]:
            return [s.name for s in specs]

    @contextlib.asynccontextmanager
    async def admin(bootstrap: str, timeout: float) -> Any:
        yield Admin()

    async def delete(*args: Any) -> None:
        if interrupted:
            raise asyncio.CancelledError()
        raise kafka.KafkaRunError("Kafka did not delete mats.blocks (Kafka error code 41)")

    async def create(admin: Any, wanted: Any, deadline: float, **kw: Any) -> list[str]:
        remade.append([s.name for s in wanted])
        if remake_fails:
            raise kafka.KafkaRunError("cannot create topic mats.blocks: the disk is full")
        return []

    async def nothing_unread(*args: Any) -> tuple[list[str], list[str]]:
        return [], []

    monkeypatch.setattr(kafka, "_admin", admin)
    monkeypatch.setattr(kafka, "_delete_topics", delete)
    monkeypatch.setattr(kafka, "_create_topics", create)
    monkeypatch.setattr(kafka, "_unread", nothing_unread)
    with pytest.raises(asyncio.CancelledError if interrupted else kafka.KafkaRunError) as failed:
        asyncio.run(kafka.new_day("localhost:1", specs, {}, timeout=5))
    events = [s.name for s in specs if s.cleanup_policy == "delete"]
    assert remade == [events]
    told = " ".join([str(failed.value), *getattr(failed.value, "__notes__", [])])
    assert ("Kafka did not delete mats.blocks" in told) != interrupted
    assert ("the disk is full" in told) == remake_fails
