"""The steps of the ``mats_sod`` and ``mats_eod`` DAGs, as plain functions of their settings.

Each Airflow task in ``dags/`` makes a job from its run's params and date (:func:`sod_job`,
:func:`eod_job`), calls one step here and passes on paths (JSON-able dicts), so the DAG files
hold no logic and every step is tested without Airflow. A run's files live under
``<run_dir>/sod/<as_of>/`` and ``<run_dir>/eod/<trade_date>/``; running a step again for the
same day writes the same files again (the steps are idempotent per day).

Start of day: :func:`sod_build` (the custodian files, or the sample's generated for the book;
:func:`mats.batch.sod.run_sod`; a critical problem raises :class:`BatchInputError` and nothing
is written to publish), then :func:`sod_publish_store` and :func:`sod_publish_kafka`.
End of day: :func:`eod_gather` (the day's events from the SQL store, the broker's statement,
market data, the start-of-day holdings the store has for the day) and :func:`eod_run`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mats.batch.alerts import batch_alerts
from mats.batch.eod import EodConfig, EodInputs, run_eod
from mats.batch.events import write_store_eod_inputs
from mats.batch.fixtures import write_sod_inputs
from mats.batch.publish import (
    load_state,
    publish_alerts,
    publish_to_kafka,
    publish_to_store,
    read_from_store,
)
from mats.batch.sod import SOD_REQUIRED, SOD_TABLES, SodConfig, SodInputs, run_sod
from mats.batch.tables import input_file
from mats.config import load_book
from mats.errors import MatsError
from mats.models import Frozen

__all__ = [
    "TIME_ZONE",
    "EodJob",
    "SodJob",
    "eod_gather",
    "eod_job",
    "eod_run",
    "sod_build",
    "sod_job",
    "sod_publish_kafka",
    "sod_publish_store",
]

TIME_ZONE = "America/New_York"


class SodJob(Frozen):
    """One start of day: the book, the day, where its files go, where it is published."""

    book_dir: str
    run_dir: str
    as_of: date
    inputs_dir: str | None = None  # None: the sample's custodian files, generated
    db_url: str
    kafka_bootstrap: str | None = None  # None: not published to Kafka

    @property
    def folder(self) -> Path:
        return Path(self.run_dir) / "sod" / self.as_of.isoformat()


class EodJob(Frozen):
    """One end of day: the book, the trade date, the store, the broker's file, market data."""

    book_dir: str
    run_dir: str
    trade_date: date
    db_url: str
    statement: str | None = None  # None: a clean copy of our own executions
    market_dir: str | None = None  # None: the sample's market data, generated
    fee_per_share: float = 0.0

    @property
    def folder(self) -> Path:
        return Path(self.run_dir) / "eod" / self.trade_date.isoformat()


def _text(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    return str(value).strip() or None if value is not None else None


def _day(params: Mapping[str, Any], name: str, when: datetime | None) -> date:
    text = _text(params, name)
    if text is None:
        if when is None:
            raise MatsError(f"param {name} is required (no run date to take it from)")
        # the run's own date, on the exchange's calendar (a 06:00 New York run is that day)
        return when.astimezone(ZoneInfo(TIME_ZONE)).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise MatsError(f"param {name}: not a date (YYYY-MM-DD): {text!r}") from None


def _db_url(params: Mapping[str, Any], run_dir: str) -> str:
    url = (_text(params, "db_url") or os.environ.get("MATS_DB_URL")
           or f"sqlite:///{Path(run_dir).resolve() / 'mats.db'}")
    try:
        make_url(url)
    except ArgumentError:
        raise MatsError(f"param db_url: not a database URL (such as sqlite:///path/mats.db or "
                        f"postgresql+psycopg://user@host/db): {url!r}") from None
    return url


def _amount(params: Mapping[str, Any], name: str) -> float:
    text = _text(params, name)
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise MatsError(f"param {name}: not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise MatsError(f"param {name}: must be a number of 0 or more: {text!r}")
    return value


def _required(params: Mapping[str, Any], name: str) -> str:
    text = _text(params, name)
    if text is None:
        raise MatsError(f"param {name} is required")
    return text


def sod_job(params: Mapping[str, Any], when: datetime | None) -> SodJob:
    """The job of a run: its params, empty ones defaulted; ``when`` is the run's date.

    Params: ``book_dir``, ``run_dir`` (required); ``as_of`` (default the run's date in New
    York), ``inputs_dir`` (default: generate the sample's files), ``db_url`` (default
    ``MATS_DB_URL``, else ``<run_dir>/mats.db``), ``kafka_bootstrap`` (default
    ``MATS_KAFKA_BOOTSTRAP``, else not published to Kafka).
    """
    run_dir = _required(params, "run_dir")
    return SodJob(book_dir=_required(params, "book_dir"), run_dir=run_dir,
                  as_of=_day(params, "as_of", when), inputs_dir=_text(params, "inputs_dir"),
                  db_url=_db_url(params, run_dir),
                  kafka_bootstrap=(_text(params, "kafka_bootstrap")
                                   or os.environ.get("MATS_KAFKA_BOOTSTRAP") or None))


def eod_job(params: Mapping[str, Any], when: datetime | None) -> EodJob:
    """The job of a run (see :func:`sod_job`). Params: ``book_dir``, ``run_dir``,
    ``trade_date``, ``db_url``, ``statement``, ``market_dir``, ``fee_per_share``."""
    run_dir = _required(params, "run_dir")
    return EodJob(book_dir=_required(params, "book_dir"), run_dir=run_dir,
                  trade_date=_day(params, "trade_date", when), db_url=_db_url(params, run_dir),
                  statement=_text(params, "statement"), market_dir=_text(params, "market_dir"),
                  fee_per_share=_amount(params, "fee_per_share"))


# ------------------------------------------------------------------------------ start of day


def _sod_inputs(job: SodJob) -> SodInputs:
    if job.inputs_dir is None:
        return write_sod_inputs(load_book(job.book_dir), job.as_of, job.folder / "in")
    folder = Path(job.inputs_dir)
    if not folder.is_dir():
        raise MatsError(f"the custodian files folder {folder} does not exist")
    return SodInputs.model_validate(
        {t.name: input_file(folder, t.name, t.name in SOD_REQUIRED) for t in SOD_TABLES})


def sod_build(job: SodJob) -> dict[str, str]:
    """Validate the day's custodian files and build the state; the paths written.

    Writes ``sod_problems.json`` always, ``sod_state.json`` and ``sod_accounts.parquet`` when
    no input had a critical problem, Data Docs of the checks in ``data_docs/``; a bad input
    is copied to ``quarantine/``.

    Raises
    ------
    BatchInputError
        An input had a critical problem: no state was written, nothing can be published.
    """
    book = load_book(job.book_dir)
    folder = job.folder
    # a state left by an earlier run of the day must not be published on a failed one
    (folder / "sod_state.json").unlink(missing_ok=True)
    result = run_sod(book, _sod_inputs(job), SodConfig(as_of=job.as_of),
                     quarantine_dir=folder / "quarantine", docs_dir=folder / "data_docs")
    paths = result.write(folder)
    if job.kafka_bootstrap is not None:
        # the desk hears of every problem: critical (nothing published) and warnings
        publish_alerts(job.kafka_bootstrap, batch_alerts("mats_sod", job.as_of,
                                                         result.problems))
    result.raise_for_problems()
    out = {name: str(path) for name, path in paths.items()}
    if result.data_docs is not None:
        out["data_docs"] = str(result.data_docs)
    return out


def sod_publish_store(job: SodJob, state: str) -> int:
    """The state at ``state`` (``sod_state.json``) into the SQL store; rows written."""
    return publish_to_store(job.db_url, job.as_of, load_state(state))


def sod_publish_kafka(job: SodJob, state: str) -> int | None:
    """The state onto ``mats.sod-state``; messages sent, or None with no Kafka configured."""
    if job.kafka_bootstrap is None:
        return None
    return publish_to_kafka(job.kafka_bootstrap, job.as_of, load_state(state))


# ------------------------------------------------------------------------------ end of day


def eod_gather(job: EodJob) -> EodInputs:
    """The end-of-day inputs of the day, written under ``<folder>/in``.

    The start-of-day holdings are the state published to the store for the day, else the
    book's positions.
    """
    book = load_book(job.book_dir)
    sod = read_from_store(job.db_url, job.trade_date)
    return write_store_eod_inputs(book, job.db_url, job.trade_date, job.folder / "in",
                                  statement=job.statement, market_dir=job.market_dir,
                                  holdings=sod or None, time_zone=TIME_ZONE,
                                  fee_per_share=job.fee_per_share)


def eod_run(job: EodJob, inputs: EodInputs) -> dict[str, str]:
    """The end of day over ``inputs``; the paths of the report, Data Docs and tables.

    Raises
    ------
    BatchInputError
        An input failed its checks (nothing built but the Data Docs of those checks).
    """
    book = load_book(job.book_dir)
    out = job.folder / "out"
    result = run_eod(book, inputs, EodConfig(trade_date=job.trade_date), out)
    paths = {name: str(path) for name, path in result.paths.items()}
    paths["folder"] = str(out)
    if result.report is not None:
        paths["report"] = str(result.report)
    if result.data_docs is not None:
        paths["data_docs"] = str(result.data_docs)
    return paths

