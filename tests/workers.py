"""Running the stream app as its own OS process against a test broker, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from mats import kafka

REPO = Path(__file__).resolve().parent.parent
FAUST = Path(sys.executable).parent / "faust"
WAIT_S = 120  # a bound on a broken run, not a timing check


def _env(broker: kafka.KafkaSettings, tmp_path: Path, book_dir: Path,
         extra_env: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATS_", "F_", "FAUST_"))}
    env.update(MATS_KAFKA_BOOTSTRAP=broker.bootstrap_servers, MATS_BOOK_DIR=str(book_dir),
               MATS_DB_URL=f"sqlite:///{tmp_path / 'mats.db'}",
               APP_DATADIR=str(tmp_path / "faust-data"),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p))
    env.update(extra_env or {})
    return env


def _faust(module: str, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([str(FAUST), "-A", module, "worker", "--without-web",
                                 "--loglevel", "info"], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def start_worker(broker: kafka.KafkaSettings, tmp_path: Path, book_dir: Path, log: Path,
                 extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``faust -A streams.app worker`` (the desk) on the test broker, logging to ``log``."""
    return _faust("streams.app", _env(broker, tmp_path, book_dir, extra_env), tmp_path, log)


def start_sink(broker: kafka.KafkaSettings, tmp_path: Path, book_dir: Path, log: Path,
               extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``faust -A streams.sink worker`` (the event store's writer) on the test broker.

    Its SQL store is ``tmp_path / "mats.db"`` unless ``extra_env`` (set last) names another
    (``MATS_DB_URL``): a test sink never writes to the checkout's ``run/mats.db``.
    """
    return _faust("streams.sink", _env(broker, tmp_path, book_dir, extra_env), tmp_path, log)


def stop_worker(worker: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait (bounded); a worker that does not stop is killed.

    Returns the exit code (negative for a signal: -9 when it had to be killed). It never
    raises, so that called from a ``finally`` it cannot hide the error that got there.
    """
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            return worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            return worker.wait(timeout=30)
    return worker.returncode


def partitions(topic: str) -> int:
    """Partition count of a MATS topic, from the topic table."""
    return next(s.partitions for s in kafka.topic_specs() if s.name == topic)
