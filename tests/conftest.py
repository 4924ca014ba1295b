"""Shared fixtures: the repository and its sample book, scratch copies, a real Kafka broker."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from mats import kafka

# CI explores the same examples on every run (a failure there can be replayed); a developer's
# runs keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The shipped sample book folder, ``data/sample/`` (read only: copy it to change it)."""
    return SAMPLE_DIR


@pytest.fixture
def book_copy(tmp_path: Path) -> Path:
    """A fresh copy of the sample book folder (with its day and orders) to break at will."""
    return Path(shutil.copytree(SAMPLE_DIR, tmp_path / "book"))


def _broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka.KafkaSettings]:
    run_dir = tmp_path_factory.mktemp("kafka") / "run"
    # env={}: a developer's MATS_KAFKA_BOOTSTRAP must not send the tests to another Kafka
    cfg = kafka.settings(run_dir=run_dir, port=0, controller_port=0, env={})
    st = kafka.up(cfg, timeout=90)
    assert st.started and st.pid is not None
    started = kafka.settings(run_dir=run_dir, env={})
    yield started
    kafka.down(started, timeout=30)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka.KafkaSettings]:
    """A running local Kafka broker with the MATS topics; its settings (ports as recorded).

    One per test module, on free loopback ports in its own run folder, so that one module's
    messages, consumer groups and broker restarts never reach another's. Stopped after the
    module (if a test has not stopped it already).
    """
    yield from _broker(tmp_path_factory)


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka.KafkaSettings]:
    """A broker of the test's own (as :func:`broker`), for tests that compare whole topics."""
    yield from _broker(tmp_path_factory)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A running PostgreSQL server (Debian's, run by :mod:`mats.pg`); its ``mats`` database's URL.

    One per test session, on a free loopback port, stopped afterwards. Its run folder is not
    under pytest's base folder: run as root, the server runs as ``postgres``, which cannot enter
    ``/tmp/pytest-of-root`` (mode 700); ``mats.pg.up`` gives it a folder of its own.
    """
    import tempfile

    from mats import pg

    if pg.find_server() is None:
        pytest.fail("PostgreSQL's server is not installed: run `make pg-deps` (as root)")
    run_dir = Path(tempfile.mkdtemp(prefix="mats-pg-"))
    try:
        yield pg.up(run_dir, port=0, timeout=120)
    finally:
        try:
            pg.down(run_dir, timeout=30)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def pg_url(postgres: str) -> str:
    """The URL of a new, empty database of the session's PostgreSQL, for this test alone."""
    import uuid

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(postgres, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.exec_driver_sql(f"CREATE DATABASE {name}")
    finally:
        engine.dispose()
    return make_url(postgres).set(database=name).render_as_string(hide_password=False)
