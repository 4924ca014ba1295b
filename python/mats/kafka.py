"""Kafka for MATS: the topics it needs, and a single-node broker to run them on.

The topic table, :data:`TOPICS` plus one ``mats.orders.<gateway>`` topic per gateway, is what
the stream app, the gateways and the batch jobs agree on. :func:`ensure_topics` creates the
missing ones on any Kafka cluster.

For development, tests and the demo, :func:`up` runs a real Kafka 4 broker on this machine: a
single node in KRaft mode (broker and controller in one JVM), from the Maven Central jars that
``infra/kafka/pom.xml`` names, with its configuration, data, logs and pid file in a run folder
(``run/kafka/`` in the checkout by default). It formats the storage on first use, starts the
broker as a detached process, waits until it answers the admin protocol and creates the
topics. :func:`down` stops it (SIGTERM, then SIGKILL after a timeout); its data stays in the run
folder for the next :func:`up`.

With ``MATS_KAFKA_BOOTSTRAP`` set (or ``bootstrap=`` given), MATS uses that cluster instead:
:func:`up` only creates the topics there, and :func:`down` has nothing to stop.

Environment variables (options of ``mats kafka`` and arguments of :func:`settings` win):

``MATS_KAFKA_BOOTSTRAP``
    bootstrap servers of a Kafka cluster to use instead of the local broker
``MATS_KAFKA_RUN_DIR``
    the local broker's run folder (default ``run/kafka`` in the checkout)
``MATS_KAFKA_GATEWAYS``
    comma-separated gateway names, one ``mats.orders.<gateway>`` topic each
``MATS_KAFKA_LIB``
    a folder holding the broker's jars, when there is no checkout to fetch them into
``KAFKA_HEAP_OPTS``
    the broker JVM's heap options, as for Kafka's own scripts

The admin-protocol parts use aiokafka (the ``streams`` extra), imported only when needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mats.errors import MatsError

if TYPE_CHECKING:
    from aiokafka.admin import AIOKafkaAdminClient

__all__ = [
    "DEFAULT_GATEWAYS",
    "TOPICS",
    "KafkaOptionError",
    "KafkaRunError",
    "KafkaSettings",
    "KafkaStatus",
    "NewDay",
    "TopicSpec",
    "TopicState",
    "down",
    "ensure_topics",
    "fetch_jars",
    "gateway_topic",
    "new_day",
    "read_topics",
    "settings",
    "status",
    "topic_specs",
    "up",
]

# ------------------------------------------------------------------------------ topics

DAY_MS = 24 * 3600 * 1000

CleanupPolicy = Literal["delete", "compact"]


@dataclass(frozen=True)
class TopicSpec:
    """One MATS topic: how it is partitioned, how long it keeps data, what it carries.

    Parameters
    ----------
    name
        The topic's name.
    partitions
        Number of partitions. Messages are keyed by ``key``, so the partition count bounds
        how many consumers of one group work in parallel; raising it later moves keys to other
        partitions, so it is chosen with room to grow.
    cleanup_policy
        ``delete`` (an event stream, kept ``retention_ms``) or ``compact`` (a state topic: the
        latest message per key is kept for ever).
    key
        What the messages are keyed by.
    carries
        What the messages are.
    retention_ms
        How long a ``delete`` topic keeps its messages; ``None`` takes the cluster's default.
    """

    name: str
    partitions: int
    cleanup_policy: CleanupPolicy
    key: str
    carries: str
    retention_ms: int | None = None

    def configs(self) -> dict[str, str]:
        """The topic-level configuration to create the topic with."""
        out: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            out["retention.ms"] = str(self.retention_ms)
        return out


# The topics every MATS deployment has. Per-gateway order topics come from gateway_topic().
#
# The sequenced path (block orders, market data, execution reports, and the stream app's state
# changelogs) has one partition each: allocation and risk need one ordered view of every account
# and of the firm, so one worker applies those events in one order (the others stand by and take
# over on a rebalance). Intake, the event sink and the gateways scale across partitions.
SEQUENCED_PARTITIONS = 1

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("mats.signals", 6, "delete", "strategy id",
              "strategy signals (block intents) into intake", 7 * DAY_MS),
    TopicSpec("mats.blocks", SEQUENCED_PARTITIONS, "delete", "strategy id",
              "block orders that passed intake, to block processing (sequenced)", 7 * DAY_MS),
    TopicSpec("mats.marketdata", SEQUENCED_PARTITIONS, "delete", "symbol",
              "live prices for layer-2 risk and exposure (sequenced)", 1 * DAY_MS),
    TopicSpec("mats.allocations", 6, "delete", "block id",
              "allocation instructions: every lot of a block and the decision on it",
              30 * DAY_MS),
    TopicSpec("mats.exec-reports", SEQUENCED_PARTITIONS, "delete", "block id",
              "execution reports from the gateways (sequenced)", 30 * DAY_MS),
    TopicSpec("mats.account-fills", 6, "delete", "account id",
              "each account's share of every execution, and block closes with shortfalls",
              30 * DAY_MS),
    TopicSpec("mats.exposure", 6, "compact", "account id, or 'firm'",
              "live gross, net, sector and beta-weighted exposure per account and firm-wide"),
    TopicSpec("mats.alerts", 3, "delete", "account id or block id",
              "refused blocks and lots, limit warnings and breaches", 30 * DAY_MS),
    TopicSpec("mats.dlq", 3, "delete", "source topic",
              "input that could not be processed, with the reason", 30 * DAY_MS),
    TopicSpec("mats.gateway-status", 3, "compact", "gateway",
              "each gateway's heartbeat: session state, open orders, last error"),
    TopicSpec("mats.sod-state", 6, "compact", "account id",
              "start-of-day state per account, published by the mats_sod DAG"),
    TopicSpec("mats.account-state", 6, "compact", "account id",
              "live positions, cash and reservations per account"),
)

GATEWAY_TOPIC_PREFIX = "mats.orders."
GATEWAY_PARTITIONS = 3

# The brokers of the sample book's accounts, and the accounts' default broker.
DEFAULT_GATEWAYS: tuple[str, ...] = ("default", "prime-a", "prime-b", "retail-a", "retail-b")

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def gateway_topic(gateway: str) -> TopicSpec:
    """The topic of one gateway: its allocation instructions and child orders, by block id."""
    name = GATEWAY_TOPIC_PREFIX + gateway
    if not _TOPIC_NAME.match(name):
        raise KafkaOptionError(
            f"{gateway!r} cannot name a topic: use letters, digits, '.', '_' and '-'",
            ("gateway",))
    return TopicSpec(name, GATEWAY_PARTITIONS, "delete", "block id",
                     f"allocation instructions and child orders for gateway {gateway}",
                     30 * DAY_MS)


def topic_specs(gateways: Iterable[str] = DEFAULT_GATEWAYS) -> list[TopicSpec]:
    """Every topic MATS needs with these gateways: :data:`TOPICS`, then one per gateway."""
    return [*TOPICS, *(gateway_topic(g) for g in dict.fromkeys(gateways))]


@dataclass(frozen=True)
class TopicState:
    """What the cluster has for one topic, beside what MATS expects of it."""

    name: str
    partitions: int | None  # None: no such topic
    cleanup_policy: str | None
    spec: TopicSpec | None = None  # None: a mats.* topic that is not in the table

    @property
    def exists(self) -> bool:
        return self.partitions is not None

    def problems(self) -> list[str]:
        """How the topic differs from its spec, in words (empty when it matches)."""
        if self.spec is None:
            return []
        if not self.exists:
            return ["missing"]
        out = []
        if self.partitions != self.spec.partitions:
            out.append(f"{self.partitions} partitions, the table says {self.spec.partitions}")
        if self.cleanup_policy != self.spec.cleanup_policy:
            out.append(f"cleanup.policy={self.cleanup_policy}, "
                       f"the table says {self.spec.cleanup_policy}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "partitions": self.partitions,
            "cleanup_policy": self.cleanup_policy,
            "expected_partitions": self.spec.partitions if self.spec else None,
            "expected_cleanup_policy": self.spec.cleanup_policy if self.spec else None,
            "problems": self.problems(),
        }


# ------------------------------------------------------------------------------ errors


class KafkaOptionError(MatsError):
    """A Kafka setting given by the user (option or environment variable) is not usable."""


class KafkaRunError(RuntimeError):
    """Kafka could not be fetched, started, reached or stopped; the message says why."""


# ------------------------------------------------------------------------------ settings

# python/mats/kafka.py -> the checkout, when mats is installed editable from one
_CHECKOUT = Path(__file__).resolve().parents[2]
POM = _CHECKOUT / "infra" / "kafka" / "pom.xml"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_HEAP_OPTS = "-Xms256m -Xmx1g"
# As Kafka's own kafka-run-class.sh: low-pause G1 for a latency-sensitive broker.
JVM_OPTS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true")

_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])$")


@dataclass(frozen=True)
class KafkaSettings:
    """Where Kafka is: an external cluster (``bootstrap``), or the local broker's run folder.

    Build it with :func:`settings`, which applies the environment and the run folder's
    recorded ports.
    """

    run_dir: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    controller_port: int = DEFAULT_CONTROLLER_PORT
    lib_dir: Path = _CHECKOUT / "infra" / "kafka" / "lib"
    bootstrap: str | None = None
    gateways: tuple[str, ...] = DEFAULT_GATEWAYS

    @property
    def managed(self) -> bool:
        """True when MATS runs the broker itself (no external bootstrap servers)."""
        return self.bootstrap is None

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or f"{self.host}:{self.port}"

    @property
    def properties_file(self) -> Path:
        return self.run_dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.run_dir / "log4j2.properties"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kafka.pid"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def console_log(self) -> Path:
        return self.logs_dir / "console.log"

    def specs(self) -> list[TopicSpec]:
        return topic_specs(self.gateways)


def settings(*, run_dir: str | Path | None = None, host: str | None = None,
             port: int | None = None, controller_port: int | None = None,
             bootstrap: str | None = None, gateways: Sequence[str] | None = None,
             lib_dir: str | Path | None = None,
             env: dict[str, str] | None = None) -> KafkaSettings:
    """The Kafka settings from arguments, then the environment, then the run folder, then defaults.

    A run folder used before remembers its listeners, so ``status`` and ``down`` find a broker
    that ``up`` started on other ports. Port 0 stands for a free port, chosen by :func:`up`.

    Raises
    ------
    KafkaOptionError
        A port, host, gateway or bootstrap list that cannot be right.
    """
    env = dict(os.environ) if env is None else env
    if bootstrap is not None:
        bootstrap = _check_bootstrap(bootstrap, "--bootstrap")
    elif env.get("MATS_KAFKA_BOOTSTRAP"):
        bootstrap = _check_bootstrap(env["MATS_KAFKA_BOOTSTRAP"], "MATS_KAFKA_BOOTSTRAP")
    if run_dir is None:
        run_dir = env.get("MATS_KAFKA_RUN_DIR") or _default_run_dir()
    run = Path(run_dir).expanduser().resolve()
    if lib_dir is None:
        lib_dir = env.get("MATS_KAFKA_LIB") or _CHECKOUT / "infra" / "kafka" / "lib"
    source = "--gateway"
    if gateways is None:
        raw = env.get("MATS_KAFKA_GATEWAYS")
        gateways = [g.strip() for g in raw.split(",") if g.strip()] if raw else DEFAULT_GATEWAYS
        source = "MATS_KAFKA_GATEWAYS"
    gateways = tuple(dict.fromkeys(gateways))
    for g in gateways:
        try:
            gateway_topic(g)
        except KafkaOptionError as e:
            raise KafkaOptionError(e.message, (source,)) from None
    recorded = _recorded_listeners(run / "server.properties")
    host = host if host is not None else recorded.get("PLAINTEXT", (DEFAULT_HOST, 0))[0]
    if not _HOST.match(host):
        raise KafkaOptionError(f"{host!r} is not a host name or address", ("--host",))
    if port is None:
        port = recorded.get("PLAINTEXT", ("", DEFAULT_PORT))[1]
    if controller_port is None:
        controller_port = recorded.get("CONTROLLER", ("", DEFAULT_CONTROLLER_PORT))[1]
    _check_port(port, "--port")
    _check_port(controller_port, "--controller-port")
    if port and port == controller_port:
        raise KafkaOptionError(f"{port} is also the controller port: give them different ports",
                               ("--port",))
    return KafkaSettings(run_dir=run, host=host, port=port, controller_port=controller_port,
                         lib_dir=Path(lib_dir).expanduser().resolve(), bootstrap=bootstrap,
                         gateways=gateways)


def _default_run_dir() -> Path:
    root = _CHECKOUT if POM.exists() else Path.cwd()
    return root / "run" / "kafka"


def _check_port(port: int, option: str) -> None:
    if not 0 <= port <= 65535:
        raise KafkaOptionError(f"{port} is not a TCP port (1-65535, or 0 for a free one)",
                               (option,))


def _check_bootstrap(text: str, source: str) -> str:
    servers = [s.strip() for s in text.split(",") if s.strip()]
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise KafkaOptionError(
                f"{server!r} is not HOST:PORT (bootstrap servers are HOST:PORT[,HOST:PORT...])",
                (source,))
    if not servers:
        raise KafkaOptionError("no servers (give HOST:PORT[,HOST:PORT...])", (source,))
    return ",".join(servers)


def _recorded_listeners(properties: Path) -> dict[str, tuple[str, int]]:
    """``{"PLAINTEXT": (host, port), "CONTROLLER": (host, port)}`` of a written config."""
    try:
        text = properties.read_text(encoding="utf-8")
    except OSError:
        return {}
    m = re.search(r"^listeners=(.*)$", text, re.MULTILINE)
    out: dict[str, tuple[str, int]] = {}
    for item in (m.group(1).split(",") if m else []):
        lm = re.fullmatch(r"\s*(\w+)://(.+):(\d+)\s*", item)
        if lm:
            out[lm.group(1)] = (lm.group(2), int(lm.group(3)))
    return out


# ------------------------------------------------------------------------------ jars


def fetch_jars(cfg: KafkaSettings, *, announce: Callable[[str], None] | None = None) -> Path:
    """The folder of the broker's jars, fetched with Maven from ``infra/kafka/pom.xml`` if needed.

    The folder is up to date when it records the hash of the pom it was fetched for; otherwise
    Maven copies the jars into a fresh folder that then replaces the old one, so a version
    change leaves no stale jar on the class path. A folder given by ``MATS_KAFKA_LIB`` outside
    the checkout is used as it is.
    """
    lib = cfg.lib_dir
    marker = lib / ".pom.sha256"
    if not POM.exists():
        if any(lib.glob("kafka_2.13-*.jar")):
            return lib
        raise KafkaRunError(f"no Kafka jars in {lib} and no {POM.relative_to(_CHECKOUT)} to "
                            "fetch them with: set MATS_KAFKA_LIB to a folder of the broker's jars")
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if _read(marker).strip() == digest and any(lib.glob("kafka_2.13-*.jar")):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaRunError("mvn not found: install Maven 3 (Debian: apt-get install maven) to "
                            "fetch the Kafka jars, or set MATS_KAFKA_LIB to a folder of them")
    if announce:
        announce(f"fetching the Kafka jars with Maven into {lib}")
    staging = lib.with_name(f"{lib.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaRunError(f"Maven could not fetch the Kafka jars (exit {done.returncode}): "
                            f"{_last_line(done.stdout + done.stderr)}")
    (staging / ".pom.sha256").write_text(digest + "\n", encoding="utf-8")
    old = lib.with_name(f"{lib.name}.old-{os.getpid()}")
    if lib.exists():
        lib.rename(old)
    staging.rename(lib)
    shutil.rmtree(old, ignore_errors=True)
    return lib


def kafka_version(lib: Path) -> str | None:
    """The broker's version, from its jar's name (``kafka_2.13-4.4.0.jar`` -> ``4.4.0``)."""
    for jar in lib.glob("kafka_2.13-*.jar"):
        return jar.name.removeprefix("kafka_2.13-").removesuffix(".jar")
    return None


# ------------------------------------------------------------------------------ broker config


def _server_properties(cfg: KafkaSettings) -> str:
    broker = f"{cfg.host}:{cfg.port}"
    controller = f"{cfg.host}:{cfg.controller_port}"
    lines = [
        "# Written by `mats kafka up` on every start: edit mats/kafka.py, not this file.",
        "# One node in KRaft mode, broker and controller in one process.",
        "process.roles=broker,controller",
        "node.id=1",
        f"listeners=PLAINTEXT://{broker},CONTROLLER://{controller}",
        f"advertised.listeners=PLAINTEXT://{broker},CONTROLLER://{controller}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        f"controller.quorum.bootstrap.servers={controller}",
        f"log.dirs={cfg.data_dir}",
        # MATS creates its topics with their partitions and policies; a typo must not make one.
        "auto.create.topics.enable=false",
        "num.partitions=1",
        "default.replication.factor=1",
        # A single node cannot hold more replicas of the internal topics than one.
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        # Consumer groups start at once instead of waiting for more members (tests, demo).
        "group.initial.rebalance.delay.ms=0",
    ]
    return "\n".join(lines) + "\n"


def _log4j_properties(cfg: KafkaSettings) -> str:
    log = cfg.server_log
    return "\n".join([
        "# Written by `mats kafka up`: the broker's log, rolled at 50 MB, 5 files kept.",
        "status = warn",
        # The broker stops on SIGTERM; log4j's own hook would race its last lines.
        "shutdownHook = disable",
        "appender.file.type = RollingFile",
        "appender.file.name = file",
        f"appender.file.fileName = {log}",
        f"appender.file.filePattern = {log}.%i",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "appender.file.policies.type = Policies",
        "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
        "appender.file.policies.size.size = 50MB",
        "appender.file.strategy.type = DefaultRolloverStrategy",
        "appender.file.strategy.max = 5",
        "rootLogger.level = INFO",
        "rootLogger.appenderRef.file.ref = file",
        "logger.state.name = state.change.logger",
        "logger.state.level = WARN",
        "",
    ])


def _cluster_id() -> str:
    """A random cluster id as Kafka writes them (base64url of 16 bytes, not starting '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaRunError("java not found: Kafka 4 needs Java 17 or newer "
                            "(Debian: apt-get install openjdk-17-jre-headless)")
    return java


def _java_cmd(cfg: KafkaSettings, lib: Path, main: str, *args: str) -> list[str]:
    heap = shlex.split(os.environ.get("KAFKA_HEAP_OPTS") or DEFAULT_HEAP_OPTS)
    return [_java(), *heap, *JVM_OPTS, f"-Dlog4j2.configurationFile={cfg.log4j_file}",
            f"-Dkafka.logs.dir={cfg.logs_dir}", "-cp", f"{lib}/*", main, *args]


def _format_storage(cfg: KafkaSettings, lib: Path) -> None:
    if (cfg.data_dir / "meta.properties").exists():
        return
    cmd = _java_cmd(cfg, lib, "kafka.tools.StorageTool", "format", "--cluster-id",
                    _cluster_id(), "--config", str(cfg.properties_file), "--standalone")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cfg.run_dir)
    if done.returncode != 0:
        raise KafkaRunError(f"formatting {cfg.data_dir} failed (exit {done.returncode}): "
                            f"{_last_line(done.stdout + done.stderr)}")


# ------------------------------------------------------------------------------ the process


def _proc_state(pid: int) -> str | None:
    """The process's state letter from /proc (``R``, ``S``, ``Z`` ...), None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    rest = text.rpartition(")")[2].split()
    return rest[0] if rest else None


def _alive(pid: int) -> bool:
    if Path("/proc/self/stat").exists():
        # A zombie is dead: its parent (init, once `up` has exited) may not have reaped it yet.
        return _proc_state(pid) not in (None, "Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_broker_of(pid: int, cfg: KafkaSettings) -> bool:
    """True if ``pid`` is a live Kafka broker started on this run folder's configuration."""
    if not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return not Path("/proc/self/cmdline").exists()  # no /proc: trust the pid file
    return b"kafka.Kafka" in argv and str(cfg.properties_file).encode() in argv


def broker_pid(cfg: KafkaSettings) -> int | None:
    """The pid of the local broker of this run folder, if it is running.

    The pid file is checked against the process's command line, so a stale file whose pid now
    belongs to another program is not mistaken for the broker. Without a pid file, the
    running processes are searched for one started on this run folder's configuration.
    """
    text = _read(cfg.pid_file).strip()
    if text.isdigit() and _is_broker_of(int(text), cfg):
        return int(text)
    for pid in _pids():
        if _is_broker_of(pid, cfg):
            return pid
    return None


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                yield int(entry.name)


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # as the broker binds: a port in TIME_WAIT from its previous run is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that nothing listens on now (the kernel's pick)."""
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host.strip("[]"), 0))
        port: int = s.getsockname()[1]
        return port


def _launch(cmd: list[str], cfg: KafkaSettings) -> int:
    """Start ``cmd`` detached from this process and return its pid.

    A shell starts it in the background in a new session and exits, so the broker is not our
    child: it outlives the ``mats`` command, gets no terminal signals, and leaves no child
    process for this interpreter to reap.
    """
    script = 'exec "$@" </dev/null >>"$MATS_KAFKA_CONSOLE" 2>&1 &\necho $!'
    env = {**os.environ, "MATS_KAFKA_CONSOLE": str(cfg.console_log)}
    done = subprocess.run(["/bin/sh", "-c", script, "mats-kafka", *cmd], env=env,
                          cwd=cfg.run_dir, capture_output=True, text=True, check=False,
                          start_new_session=True)
    pid_text = done.stdout.strip()
    if done.returncode != 0 or not pid_text.isdigit():
        raise KafkaRunError(f"could not start the broker: {_last_line(done.stderr)}")
    return int(pid_text)


# ------------------------------------------------------------------------------ up, down, status


@dataclass
class KafkaStatus:
    """What ``mats kafka status`` reports."""

    managed: bool
    bootstrap: str
    reachable: bool
    pid: int | None = None
    run_dir: Path | None = None
    version: str | None = None
    cluster_id: str | None = None
    topics: list[TopicState] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # by this call (up)
    started: bool = False  # by this call (up)

    @property
    def running(self) -> bool:
        """The local broker's process is alive (managed), or the cluster answers (external)."""
        return self.pid is not None if self.managed else self.reachable

    def problems(self) -> list[str]:
        return [f"{t.name}: {p}" for t in self.topics for p in t.problems()]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir) if self.run_dir else None
        out["running"] = self.running
        out["topics"] = [t.as_dict() for t in self.topics]
        out["problems"] = self.problems()
        return out


def up(cfg: KafkaSettings, *, timeout: float = 60.0,
       announce: Callable[[str], None] | None = None) -> KafkaStatus:
    """Start the local broker if it is not running, wait until it answers, create the topics.

    With external bootstrap servers (``cfg.bootstrap``) only the topics are created there.

    Raises
    ------
    KafkaRunError
        The jars could not be fetched, the port is taken, the broker died or did not answer
        within ``timeout`` seconds (the message quotes its log), or a topic could not be made.
    """
    deadline = time.monotonic() + timeout
    if not cfg.managed:
        return asyncio.run(_prepare(cfg, deadline, pid=None, started=False))
    lib = fetch_jars(cfg, announce=announce)
    pid = broker_pid(cfg)
    started = False
    if pid is None:
        cfg = _bind_ports(cfg)
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.logs_dir.mkdir(exist_ok=True)
        cfg.properties_file.write_text(_server_properties(cfg), encoding="utf-8")
        cfg.log4j_file.write_text(_log4j_properties(cfg), encoding="utf-8")
        _format_storage(cfg, lib)
        if announce:
            announce(f"starting Kafka {kafka_version(lib)} on {cfg.bootstrap_servers}")
        pid = _launch(_java_cmd(cfg, lib, "kafka.Kafka", str(cfg.properties_file)), cfg)
        cfg.pid_file.write_text(f"{pid}\n", encoding="utf-8")
        started = True
    else:
        # already running: its listeners are the ones it was started with
        cfg = settings(run_dir=cfg.run_dir, gateways=cfg.gateways, lib_dir=cfg.lib_dir, env={})
    try:
        return asyncio.run(_prepare(cfg, deadline, pid=pid, started=started))
    except KafkaRunError:
        if started:  # a broker that never became usable is not left behind
            down(cfg, timeout=10.0)
        raise


def _bind_ports(cfg: KafkaSettings) -> KafkaSettings:
    """``cfg`` with port 0 replaced by free ports; refuses ports something else holds."""
    port = cfg.port or free_port(cfg.host)
    controller = cfg.controller_port
    while not controller or controller == port:
        controller = free_port(cfg.host)
    for option, p in (("--port", port), ("--controller-port", controller)):
        if not _port_free(cfg.host, p):
            raise KafkaRunError(f"{cfg.host}:{p} is in use by another program: choose another "
                                f"{option} (0 picks a free one) or stop what holds it")
    return replace(cfg, port=port, controller_port=controller)


async def _prepare(cfg: KafkaSettings, deadline: float, *, pid: int | None,
                   started: bool) -> KafkaStatus:
    alive = (lambda: _alive(pid)) if pid is not None else None
    cluster = await _wait_ready(cfg, deadline, alive)
    created = await ensure_topics(cfg.bootstrap_servers, cfg.specs(),
                                  timeout=max(deadline - time.monotonic(), 5.0))
    topics = await describe_topics(cfg.bootstrap_servers, cfg.specs())
    return KafkaStatus(managed=cfg.managed, bootstrap=cfg.bootstrap_servers, reachable=True,
                       pid=pid, run_dir=cfg.run_dir if cfg.managed else None,
                       version=kafka_version(cfg.lib_dir) if cfg.managed else None,
                       cluster_id=cluster.get("cluster_id"), topics=topics, created=created,
                       started=started)


async def _wait_ready(cfg: KafkaSettings, deadline: float,
                      alive: Callable[[], bool] | None) -> dict[str, Any]:
    last = "no answer"
    while True:
        if alive is not None and not alive():
            raise KafkaRunError(f"the broker stopped while starting: {_log_problem(cfg)} "
                                f"(see {cfg.server_log})")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            where = f" (see {cfg.server_log})" if cfg.managed else ""
            raise KafkaRunError(f"Kafka at {cfg.bootstrap_servers} did not answer in time: "
                                f"{last}{where}")
        try:
            async with _admin(cfg.bootstrap_servers, min(remaining, 5.0)) as admin:
                cluster: dict[str, Any] = await admin.describe_cluster()
                if cluster.get("brokers") and cluster.get("controller_id", -1) >= 0:
                    return cluster
                last = "no broker registered yet"
        except KafkaRunError:
            raise
        except Exception as e:  # aiokafka raises several kinds while a broker is starting
            last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        await asyncio.sleep(0.2)


def down(cfg: KafkaSettings, *, timeout: float = 30.0) -> tuple[int | None, bool]:
    """Stop the local broker: SIGTERM, then SIGKILL if it has not exited after ``timeout`` s.

    Returns ``(pid, killed)``: the pid that was stopped (None if none was running) and whether
    it had to be killed. The data stays in the run folder for the next :func:`up`.
    """
    pid = broker_pid(cfg)
    killed = False
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, 10.0):
                raise KafkaRunError(f"the broker (pid {pid}) did not die on SIGKILL")
    cfg.pid_file.unlink(missing_ok=True)
    return pid, killed


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def status(cfg: KafkaSettings, *, timeout: float = 5.0) -> KafkaStatus:
    """Whether Kafka runs and answers, where, and its MATS topics against the table."""
    pid = broker_pid(cfg) if cfg.managed else None
    st = KafkaStatus(managed=cfg.managed, bootstrap=cfg.bootstrap_servers, reachable=False,
                     pid=pid, run_dir=cfg.run_dir if cfg.managed else None,
                     version=kafka_version(cfg.lib_dir) if cfg.managed else None)
    if cfg.managed and pid is None:
        return st
    try:
        asyncio.run(_status_of(cfg, st, timeout))
    except KafkaRunError:
        raise
    except Exception:  # unreachable or not answering: reported as such
        st.reachable = False
    return st


async def _status_of(cfg: KafkaSettings, st: KafkaStatus, timeout: float) -> None:
    async with _admin(cfg.bootstrap_servers, timeout) as admin:
        cluster = await admin.describe_cluster()
        st.cluster_id = cluster.get("cluster_id")
        st.reachable = True
        st.topics = await _describe(admin, cfg.specs())


# ------------------------------------------------------------------------------ admin protocol


@contextlib.asynccontextmanager
async def _admin(bootstrap: str, timeout: float) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started aiokafka admin client, always closed (an unclosed one leaks its sockets)."""
    try:
        from aiokafka.admin import AIOKafkaAdminClient
    except ImportError:
        raise KafkaRunError("aiokafka is not installed: pip install 'mats[streams]'") from None
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","),
                                 request_timeout_ms=max(int(timeout * 1000), 1000),
                                 client_id="mats-kafka-admin")
    try:
        await client.start()
        yield client
    finally:
        await client.close()


# Kafka protocol error codes ensure_topics handles by name
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
_RETRIABLE = {5, 6, 7, 15, 41}  # leader/coordinator not available, timeout, not controller


async def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec], *,
                        timeout: float = 30.0) -> list[str]:
    """Create the topics of ``specs`` that the cluster lacks; return the names created.

    Existing topics are left as they are, even where they differ from the table (more
    partitions than the table is how a cluster scales out); :func:`describe_topics` reports
    the differences. The replication factor is the number of brokers, up to three.
    """
    deadline = time.monotonic() + timeout
    async with _admin(bootstrap, timeout) as admin:
        existing = set(await admin.list_topics())
        return await _create_topics(admin, [s for s in specs if s.name not in existing],
                                    deadline)


async def _create_topics(admin: AIOKafkaAdminClient, wanted: Sequence[TopicSpec],
                         deadline: float, *, after_delete: bool = False) -> list[str]:
    """Create ``wanted`` (the replication factor is the number of brokers, up to three); the
    names created. One that exists already is left as it is, unless ``after_delete``: then one
    still on its way out is asked for again until the cluster makes it (or ``deadline``)."""
    from aiokafka.admin import NewTopic

    cluster = await admin.describe_cluster()
    replicas = max(1, min(3, len(cluster.get("brokers", []))))
    created: list[str] = []
    while wanted:
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, replicas, topic_configs=s.configs())
             for s in wanted],
            timeout_ms=max(int((deadline - time.monotonic()) * 1000), 1000))
        retry = []
        for name, code, message in _topic_errors(response):
            spec = next(s for s in wanted if s.name == name)
            leaving = after_delete and "deletion" in (message or "")
            if code == 0:
                created.append(name)
            elif code == _TOPIC_ALREADY_EXISTS and not leaving:
                pass  # made meanwhile by someone else
            elif (code in _RETRIABLE or leaving) and time.monotonic() < deadline:
                retry.append(spec)
            else:
                raise KafkaRunError(f"cannot create topic {name}: "
                                    f"{message or f'Kafka error code {code}'}")
        wanted = retry
        if wanted:
            await asyncio.sleep(0.2)
    return created


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    obj = response.to_object()
    return [(t["topic"], t["error_code"], t.get("error_message")) for t in obj["topic_errors"]]


async def describe_topics(bootstrap: str, specs: Sequence[TopicSpec],
                          *, timeout: float = 10.0) -> list[TopicState]:
    """The cluster's ``mats.*`` topics and the table's topics, each against its spec, by name."""
    async with _admin(bootstrap, timeout) as admin:
        return await _describe(admin, specs)


async def _describe(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> list[TopicState]:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    by_name = {s.name: s for s in specs}
    on_cluster = [t for t in await admin.list_topics() if t.startswith("mats.")]
    names = sorted(set(on_cluster) | set(by_name))
    partitions: dict[str, int] = {}
    if on_cluster:
        for t in await admin.describe_topics(on_cluster):
            if t["error_code"] != _UNKNOWN_TOPIC:
                partitions[t["topic"]] = len(t["partitions"])
    policies: dict[str, str] = {}
    if partitions:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in partitions])
        for response in responses:
            for resource in response.to_object()["resources"]:
                for entry in resource["config_entries"]:
                    if entry["config_names"] == "cleanup.policy":
                        policies[resource["resource_name"]] = entry["config_value"]
    return [TopicState(name=n, partitions=partitions.get(n), cleanup_policy=policies.get(n),
                       spec=by_name.get(n)) for n in names]


async def read_topics(bootstrap: str, topics: Iterable[str]) -> dict[str, list[Any]]:
    """Every message each topic holds now, read once by a consumer of no group.

    All partitions, each from its first offset to the end it had when the read began; the
    records (aiokafka's ``ConsumerRecord``: ``key``, ``value``, ``partition``, ``offset``,
    ``timestamp``) in offset order within a partition. A topic that does not exist gives none.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    names = list(dict.fromkeys(topics))
    out: dict[str, list[Any]] = {t: [] for t in names}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts: list[Any] = []
        for t in names:
            known = consumer.partitions_for_topic(t)
            if not known:  # made since the consumer started: ask the cluster again
                await consumer._client.force_metadata_update()
                known = consumer.partitions_for_topic(t) or set()
            parts.extend(TopicPartition(t, p) for p in sorted(known))
        if not parts:
            return out
        consumer.assign(parts)
        begin = await consumer.beginning_offsets(parts)
        end = await consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, begin[tp])
        left = {tp for tp in parts if end[tp] > begin[tp]}
        while left:
            for tp, records in (await consumer.getmany(*left, timeout_ms=500)).items():
                out[tp.topic].extend(r for r in records if r.offset < end[tp])
                if await consumer.position(tp) >= end[tp]:
                    left.discard(tp)
        return out
    finally:
        await consumer.stop()


# ------------------------------------------------------------------------------ a new trading day

# The consumer groups of MATS: the desk's workers (the Faust app id), the SQL sink, and one
# per gateway (``mats-gateway-<name>``).
DESK_GROUP = "mats"
SINK_GROUP = "mats-sink"
GATEWAY_GROUP_PREFIX = "mats-gateway-"
# what the desk's workers read: intake's signals and the sequenced topics
DESK_INPUTS = ("mats.signals", "mats.blocks", "mats.marketdata", "mats.exec-reports")
# the desk's Faust tables (streams/app.py), each kept in a changelog topic of Faust's naming
DESK_TABLES = ("journal", "marks")

_GROUP_RETRIABLE = {14, 15, 16}  # coordinator loading, not available, not the coordinator
_DELETED_ALREADY = 3  # unknown topic


def desk_changelogs() -> tuple[str, ...]:
    """The changelog topics of the desk's tables: its journal and marks."""
    return tuple(f"{DESK_GROUP}-{t}-changelog" for t in DESK_TABLES)


@dataclass(frozen=True)
class NewDay:
    """What :func:`new_day` did: the topics it emptied (deleted, then made again from the table)
    and the desk's changelogs it deleted (the next worker makes them afresh), by name; and
    what it found unread and let go, as ``group: topic[partition] count`` lines."""

    emptied: tuple[str, ...]
    changelogs: tuple[str, ...]
    discarded: tuple[str, ...] = ()


async def new_day(bootstrap: str, specs: Sequence[TopicSpec],
                  readers: Mapping[str, Sequence[str]], *, force: bool = False,
                  timeout: float = 60.0) -> NewDay:
    """Start a new trading day on a running cluster: the day's topics empty, no journal.

    The desk's journal holds one day (the start-of-day book it began from and every input
    since), tied to the offsets of the sequenced topics. A new day therefore empties every
    event topic of the table (cleanup policy ``delete``: signals, blocks, market data,
    execution reports, child orders, allocations, fills, alerts, dead letters), deletes the
    desk's table changelogs (:func:`desk_changelogs`) and makes the event topics again as the
    table has them. State topics (``compact``: start-of-day state, account state, exposure,
    gateway status) are kept: the next start of day replaces them. Committed offsets of
    deleted topics go with them.

    Nothing read is lost silently. It refuses (:class:`KafkaRunError`, nothing changed) while
    any MATS consumer group (:data:`DESK_GROUP`, :data:`SINK_GROUP`, ``mats-gateway-*``) has a
    member, that is while a worker, the sink or a gateway runs; and while a group of
    ``readers`` (group id -> the topics it must have read to the end: the desk's inputs, the
    sink's topics, each gateway's orders) has messages it did not read, unless ``force``. A
    group that never read on this cluster (no sink in this deployment, a gateway never
    started) is not waited for, except the desk's: what it left is deleted and listed in
    :attr:`NewDay.discarded`, as what ``force`` lets go is. Producers have no group: what a
    feed sends while this runs can be deleted unlisted, so feeds stop first too.

    Once deleting has begun, the event topics are made again whatever happens (a topic the
    cluster would not delete is named in the error).
    """
    deadline = time.monotonic() + timeout
    async with _admin(bootstrap, timeout) as admin:
        groups = [g[0] for g in await admin.list_consumer_groups()]
        running = await _running_groups(admin, [
            g for g in groups if g in (DESK_GROUP, SINK_GROUP)
            or g.startswith(GATEWAY_GROUP_PREFIX)], deadline)
        if running:
            raise KafkaRunError("the day is in use: consumer group "
                                f"{', '.join(sorted(running))}; stop the workers, the sink "
                                "and the gateways first")
        on_cluster = set(await admin.list_topics())
        unread, unheard = await _unread(admin, bootstrap, readers, groups, on_cluster)
        if unread and not force:
            raise KafkaRunError("messages not yet read would be lost: "
                                + "; ".join(unread)
                                + " (start what reads them and let it finish, or force)")
        events = [s for s in specs if s.cleanup_policy == "delete" and s.name in on_cluster]
        changelogs = sorted(set(desk_changelogs()) & on_cluster)
        doomed = [s.name for s in events] + changelogs
        if doomed:
            try:
                await _delete_topics(admin, doomed, timeout, deadline)
            except BaseException as e:
                # what was deleted is made again, even when deleting failed half way; if that
                # fails too, both are told
                try:
                    await _create_topics(admin, events, deadline, after_delete=True)
                except Exception as again:
                    told = f"making the event topics again failed: {again}"
                    if isinstance(e, Exception):
                        raise KafkaRunError(f"{e}; and {told}") from again
                    e.add_note(told)  # interrupted: the interruption goes on, with this told
                raise
            await _create_topics(admin, events, deadline, after_delete=True)
            await _wait_listed(admin, [s.name for s in events], deadline)
    return NewDay(emptied=tuple(s.name for s in events), changelogs=tuple(changelogs),
                  discarded=tuple(unread + [f"{u} (that group never read here)"
                                            for u in unheard]))


async def _delete_topics(admin: AIOKafkaAdminClient, names: list[str], timeout: float,
                         deadline: float) -> None:
    """Deletes ``names`` and waits until the cluster no longer lists them."""
    response = await admin.delete_topics(names, timeout_ms=max(int(timeout * 1000), 1000))
    refused = [f"{name} (Kafka error code {code})" for name, code in response.topic_error_codes
               if code not in (0, _DELETED_ALREADY)]
    if refused:
        raise KafkaRunError(f"Kafka did not delete {', '.join(refused)}")
    while left := sorted(set(names) & set(await admin.list_topics())):
        if time.monotonic() > deadline:
            raise KafkaRunError(f"topics still not deleted after {timeout:g}s: {', '.join(left)}")
        await asyncio.sleep(0.2)


async def _wait_listed(admin: AIOKafkaAdminClient, names: list[str], deadline: float) -> None:
    """Until the cluster's metadata lists every topic of ``names`` with its partitions (a topic
    just made reaches the brokers' metadata a moment after the controller said yes)."""
    while names:
        described = await admin.describe_topics(names)
        if all(t["error_code"] == 0 and t["partitions"] for t in described):
            return
        if time.monotonic() > deadline:
            raise KafkaRunError(f"topics made again but not listed in time: {', '.join(names)}")
        await asyncio.sleep(0.2)


async def _running_groups(admin: AIOKafkaAdminClient, group_ids: list[str],
                          deadline: float) -> list[str]:
    """``group (n running)`` for each of ``group_ids`` with members; asks again while the
    group coordinator is loading or moving."""
    while group_ids:
        running: list[str] = []
        failed: list[str] = []
        again = False
        for response in await admin.describe_consumer_groups(group_ids):
            for group in response.to_object()["groups"]:
                code = group["error_code"]
                if code in _GROUP_RETRIABLE:
                    again = True
                elif code:
                    failed.append(f"{group['group']} (Kafka error code {code})")
                elif group["members"]:
                    running.append(f"{group['group']} ({len(group['members'])} running)")
        if failed:
            raise KafkaRunError(f"cannot tell whether consumer group {', '.join(failed)} "
                                "is running")
        if not again:
            return running
        if time.monotonic() > deadline:
            raise KafkaRunError("the group coordinator did not answer in time")
        await asyncio.sleep(0.5)
    return []


async def _unread(admin: AIOKafkaAdminClient, bootstrap: str,
                  readers: Mapping[str, Sequence[str]], groups: list[str],
                  on_cluster: set[str]) -> tuple[list[str], list[str]]:
    """What each group of ``readers`` has not read: (of groups that read here, of the others),
    as ``group: topic[partition] count`` lines. Committed offsets are the next to read."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    read = sorted({t for topics in readers.values() for t in topics} & on_cluster)
    described = await admin.describe_topics(read) if read else []
    bad = [f"{t['topic']} (Kafka error code {t['error_code']})" for t in described
           if t["error_code"]]
    if bad:
        raise KafkaRunError(f"cannot tell what was read of {', '.join(bad)}")
    n_parts = {t["topic"]: len(t["partitions"]) for t in described if t["partitions"]}
    unread: list[str] = []
    unheard: list[str] = []
    if not n_parts:  # nothing to have read (and a consumer never assigned cannot stop cleanly)
        return unread, unheard
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(t, p) for t, n in n_parts.items() for p in range(n)])
        for group, topics in readers.items():
            parts = [TopicPartition(t, p) for t in topics for p in range(n_parts.get(t, 0))]
            if not parts:
                continue
            committed = (await admin.list_consumer_group_offsets(group, partitions=parts)
                         if group in groups else {})
            begin = await consumer.beginning_offsets(parts)
            end = await consumer.end_offsets(parts)
            for tp in parts:
                meta = committed.get(tp)
                # below the log's start, what was not read is gone already
                done = max(meta.offset if meta is not None else -1, begin[tp])
                if end[tp] > done:
                    line = f"{group}: {tp.topic}[{tp.partition}] {end[tp] - done}"
                    (unread if group in groups or group == DESK_GROUP else unheard).append(line)
    finally:
        await consumer.stop()
    return unread, unheard


def quiet_client_logs() -> None:
    """Keep aiokafka's connection errors (expected while a broker starts) off the console.

    Without a handler of its own, the logging module would print them through its last-resort
    handler; with one, they still reach the handlers an application configures.
    """
    log = logging.getLogger("aiokafka")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())


# ------------------------------------------------------------------------------ helpers


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _log_problem(cfg: KafkaSettings) -> str:
    """The most telling line of the broker's logs: its last ERROR, else the console's last line."""
    errors = [line for line in _read(cfg.server_log).splitlines()
              if "ERROR" in line or "FATAL" in line]
    if errors:
        return errors[-1].strip()
    return _last_line(_read(cfg.console_log))


def topics_table(specs: Sequence[TopicSpec]) -> str:
    """The topic table as aligned text (``mats kafka topics``)."""
    rows = [("topic", "partitions", "cleanup", "retention", "key", "carries")]
    for s in specs:
        retention = "-" if s.retention_ms is None else f"{s.retention_ms // DAY_MS}d"
        rows.append((s.name, str(s.partitions), s.cleanup_policy, retention, s.key, s.carries))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]])
                     for r in rows) + "\n"


def specs_as_json(specs: Sequence[TopicSpec]) -> str:
    return json.dumps([{**asdict(s), "configs": s.configs()} for s in specs], indent=2) + "\n"
