"""The batch's wiring, without Airflow: the DAG steps (mats.batch.jobs), publishing the
start-of-day state (SQL store, Kafka) and reading the day's events from the store."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import create_engine, inspect

from mats import kafka
from mats.batch.eod import EodConfig, run_eod
from mats.batch.events import (
    StoreEventsError,
    day_events,
    store_frames,
    write_store_eod_inputs,
)
from mats.batch.jobs import eod_job, sod_build, sod_job, sod_publish_kafka, sod_publish_store
from mats.batch.problems import BatchInputError
from mats.batch.publish import (
    PublishError,
    load_state,
    publish_to_kafka,
    publish_to_store,
    read_from_kafka,
    read_from_store,
)
from mats.config import load_book
from mats.errors import MatsError
from mats.store import Store, migrate

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
DAY = date(2025, 6, 13)
MORNING = datetime(2025, 6, 13, 10, 0, tzinfo=UTC)


def _store_day() -> Any:
    path = Path(__file__).parent / "airflow" / "store_day.py"
    spec = importlib.util.spec_from_file_location("store_day", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def day_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store holding the sample day's events (the desk's, filled by a broker stand-in)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mats.db'}"
    _store_day().record_day(SAMPLE, url)
    return url


def _job(tmp_path: Path, **params: Any) -> Any:
    return sod_job({"book_dir": str(SAMPLE), "run_dir": str(tmp_path / "run"), **params},
                   MORNING)


# ------------------------------------------------------------------------------ params


def test_empty_params_take_the_runs_date_in_new_york_and_the_run_folders_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MATS_DB_URL", raising=False)
    monkeypatch.delenv("MATS_KAFKA_BOOTSTRAP", raising=False)
    job = sod_job({"book_dir": "b", "run_dir": str(tmp_path), "as_of": "", "db_url": "",
                   "kafka_bootstrap": "", "inputs_dir": ""},
                  datetime(2025, 6, 17, 2, 0, tzinfo=UTC))  # 22:00 on the 16th in New York
    assert job.as_of == date(2025, 6, 16)
    assert job.db_url == f"sqlite:///{tmp_path.resolve() / 'mats.db'}"
    assert job.kafka_bootstrap is None and job.inputs_dir is None
    assert job.folder == tmp_path / "sod" / "2025-06-16"
    monkeypatch.setenv("MATS_KAFKA_BOOTSTRAP", "h:9092")
    monkeypatch.setenv("MATS_DB_URL", "sqlite:///x.db")
    job = sod_job({"book_dir": "b", "run_dir": "r", "as_of": "2025-06-13"}, MORNING)
    assert (job.as_of, job.kafka_bootstrap, job.db_url) == (DAY, "h:9092", "sqlite:///x.db")
    eod = eod_job({"book_dir": "b", "run_dir": "r", "statement": " ", "fee_per_share": 0.01},
                  MORNING)
    assert (eod.trade_date, eod.statement, eod.fee_per_share) == (DAY, None, 0.01)


@pytest.mark.parametrize(("params", "message"), [
    ({"book_dir": "b", "run_dir": "r", "as_of": "13/06/2025"},
     "param as_of: not a date (YYYY-MM-DD): '13/06/2025'"),
    ({"book_dir": "b", "run_dir": ""}, "param run_dir is required"),
    ({"book_dir": "b", "run_dir": "r", "db_url": "not a url"},
     "param db_url: not a database URL (such as sqlite:///path/mats.db or "
     "postgresql+psycopg://user@host/db): 'not a url'"),
    ({"book_dir": "b", "run_dir": "r", "fee_per_share": "0.005 USD"},
     "param fee_per_share: not a number: '0.005 USD'"),
    ({"book_dir": "b", "run_dir": "r", "fee_per_share": "-1"},
     "param fee_per_share: must be a number of 0 or more: '-1'"),
])
def test_bad_params_are_one_clear_line(params: dict[str, str], message: str) -> None:
    job = eod_job if "fee_per_share" in params else sod_job
    with pytest.raises(MatsError) as err:
        job(params, MORNING)
    assert str(err.value) == message


# ------------------------------------------------------------------------------ SQL store


def test_the_migration_adds_the_sod_state_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = create_engine(url)
    try:
        schema = inspect(engine)
        assert "sod_state" in schema.get_table_names()
        assert [c["name"] for c in schema.get_columns("sod_state")] == [
            "as_of", "account_id", "published_at", "payload"]
        assert schema.get_pk_constraint("sod_state")["constrained_columns"] == [
            "as_of", "account_id"]
    finally:
        engine.dispose()


def test_publishing_a_day_again_replaces_it_and_leaves_other_days(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    accounts = load_book(SAMPLE).accounts
    assert publish_to_store(url, DAY, accounts) == len(accounts)
    assert publish_to_store(url, date(2025, 6, 16), accounts[:3]) == 3
    assert publish_to_store(url, DAY, accounts[5:7]) == 2
    assert read_from_store(url, DAY) == accounts[5:7]
    assert [a.account_id for a in read_from_store(url, date(2025, 6, 16))] == [
        a.account_id for a in accounts[:3]]
    assert read_from_store(url, date(2025, 6, 17)) == []


def test_an_empty_state_is_never_published(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    publish_to_store(url, DAY, load_book(SAMPLE).accounts[:1])
    for publish in (lambda: publish_to_store(url, DAY, []),
                    lambda: publish_to_kafka("127.0.0.1:1", DAY, [])):
        with pytest.raises(PublishError, match="the start-of-day state is empty"):
            publish()
    assert len(read_from_store(url, DAY)) == 1


def test_a_state_file_that_is_missing_or_wrong_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(PublishError) as err:
        load_state(tmp_path / "nope.json")
    assert str(err.value) == (f"cannot read the start-of-day state {tmp_path / 'nope.json'}: "
                              "No such file or directory")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"account_id": "A"}]))
    with pytest.raises(PublishError, match=r"bad.json is not a start-of-day state: 0\."):
        load_state(bad)


# ------------------------------------------------------------------------------ the SOD steps


def test_sod_steps_build_then_publish_to_store_and_kafka(
        tmp_path: Path, broker: kafka.KafkaSettings) -> None:
    job = _job(tmp_path, db_url=f"sqlite:///{tmp_path / 'mats.db'}",
               kafka_bootstrap=broker.bootstrap_servers)
    paths = sod_build(job)
    state = load_state(paths["state"])
    assert len(state) == len(load_book(SAMPLE).accounts)
    assert Path(paths["data_docs"]).is_file()
    assert sod_publish_store(job, paths["state"]) == len(state)
    assert sod_publish_kafka(job, paths["state"]) == len(state)
    assert read_from_store(job.db_url, DAY) == sorted(state, key=lambda a: a.account_id)
    assert read_from_kafka(broker.bootstrap_servers) == {
        a.account_id: ("2025-06-13", a) for a in state}
    assert sod_publish_kafka(job.model_copy(update={"kafka_bootstrap": None}),
                             paths["state"]) is None


def test_kafka_that_does_not_answer_is_one_clear_line() -> None:
    accounts = load_book(SAMPLE).accounts[:1]
    with pytest.raises(PublishError) as err:
        publish_to_kafka(f"127.0.0.1:{kafka.free_port()}", DAY, accounts, timeout=2)
    assert str(err.value).startswith("cannot publish the start-of-day state to Kafka at "
                                     "127.0.0.1:") or "did not take" in str(err.value)
    assert "\n" not in str(err.value)


def _unknown_account(job: Any, inputs: Path) -> Path:
    """A copy of the day's custodian files (written by a first run) where a position names an
    account the book does not have."""
    inputs.mkdir()
    for f in (job.folder / "in").iterdir():
        text = f.read_text()
        if f.name == "positions.csv":
            text = text.replace("ACC-001,", "ACC-999,", 1)
        (inputs / f.name).write_text(text)
    return inputs


def test_a_critical_input_problem_builds_nothing_to_publish(tmp_path: Path) -> None:
    job = _job(tmp_path)
    good = sod_build(job)  # an earlier good run of the same day left its state
    inputs = _unknown_account(job, tmp_path / "in")
    with pytest.raises(BatchInputError) as err:
        sod_build(job.model_copy(update={"inputs_dir": str(inputs)}))
    assert "account not in the book (found 'ACC-999')" in str(err.value)
    assert not Path(good["state"]).exists()
    assert (job.folder / "quarantine" / "2025-06-13" / "positions.csv").is_file()
    with pytest.raises(MatsError, match="does not exist"):
        sod_build(job.model_copy(update={"inputs_dir": str(tmp_path / "none")}))


def test_a_critical_input_raises_a_critical_alert_for_the_desk(
        tmp_path: Path, broker: kafka.KafkaSettings) -> None:

    from mats.batch.alerts import BatchAlert
    from mats.store import event_from_message

    job = _job(tmp_path, kafka_bootstrap=broker.bootstrap_servers)
    sod_build(job)  # writes the day's custodian files; a clean day raises no critical alert
    inputs = _unknown_account(job, tmp_path / "in")
    with pytest.raises(BatchInputError):
        sod_build(job.model_copy(update={"inputs_dir": str(inputs)}))

    async def alerts() -> list[bytes]:
        got = await kafka.read_topics(broker.bootstrap_servers, ["mats.alerts"])
        return [r.value for r in got["mats.alerts"]]

    got = [BatchAlert.model_validate_json(v) for v in asyncio.run(alerts())]
    critical = [a for a in got if a.severity == "critical"]
    assert [(a.job, a.input, str(a.as_of)) for a in critical] == [
        ("mats_sod", "positions", "2025-06-13")]
    assert "ACC-999" in critical[0].message and "quarantined" in critical[0].message
    # the same day again names the same events: the store keeps each once
    row = event_from_message("mats.alerts", 0, 0, critical[0].model_dump_json())
    assert (row.kind, row.event_id) == ("batch_alert", critical[0].event_id)


# ------------------------------------------------------------------------------ EOD from the store


def test_the_days_events_become_the_eod_inputs(day_store: str) -> None:
    with Store(day_store) as store:
        events = day_events(store, DAY)
        assert day_events(store, date(2025, 6, 12)) == []
    frames = store_frames(events, {"UFY": 100.0})
    blocks, lots, execs, fills = (frames[n] for n in ("blocks", "lots", "executions", "fills"))
    assert blocks.height > 0 and blocks["order_id"].is_unique().all()
    # every fill of a known execution, and each execution handed out in full to its accounts
    per_exec = fills.group_by("exec_id").agg(pl.col("quantity").sum().alias("booked"))
    joined = execs.join(per_exec, on="exec_id", how="full", coalesce=True)
    assert joined.filter(pl.col("quantity") != pl.col("booked")).height == 0
    assert joined["quantity"].null_count() == 0
    # lots of placed blocks only; each account's fills within its lot
    got = fills.group_by("order_id", "account_id").agg(pl.col("quantity").sum())
    over = got.join(lots, on=["order_id", "account_id"]).filter(
        pl.col("quantity") > pl.col("allocated"))
    assert over.height == 0 and set(lots["order_id"]) == set(blocks["order_id"])
    # the fills come lot by lot (the order the end-of-day sums per lot read fastest)
    assert fills.height > 1 and fills.equals(fills.sort("order_id", "account_id", "exec_id"))
    assert not fills.equals(fills.sort("exec_id", "account_id"))  # not as they happened
    # arrival is the broker's first report, after the decision
    assert (blocks["arrival_time"] >= blocks["decision_time"]).all()
    ufy = blocks.filter(pl.col("symbol") == "UFY")
    assert ufy.height == 0 or (ufy["close_price"] == 100.0).all()


def test_eod_from_the_store_reports_breaks_planted_in_the_statement(
        day_store: str, tmp_path: Path) -> None:
    book = load_book(SAMPLE)
    clean = write_store_eod_inputs(book, day_store, DAY, tmp_path / "clean")
    ours = pl.read_parquet(clean.executions)
    statement = pl.read_parquet(clean.statement)
    assert statement.equals(ours.drop("exec_time"))
    planted = statement.with_columns(
        pl.when(pl.col("exec_id") == ours["exec_id"][0]).then(pl.col("price") + 0.5)
        .otherwise(pl.col("price")).alias("price")).slice(0, statement.height - 1)
    planted.write_csv(tmp_path / "statement.csv")
    inputs = write_store_eod_inputs(book, day_store, DAY, tmp_path / "in",
                                    statement=tmp_path / "statement.csv")
    result = run_eod(book, inputs, EodConfig(trade_date=DAY), tmp_path / "out")
    assert sorted(zip(result.tables["breaks"]["break_type"],
                      result.tables["breaks"]["exec_id"], strict=True)) == sorted([
        ("price_mismatch", ours["exec_id"][0]), ("extra", ours["exec_id"][-1])])
    assert result.report is not None and result.report.is_file()


def test_eod_inputs_that_are_not_there_are_one_clear_line(day_store: str,
                                                         tmp_path: Path) -> None:
    book = load_book(SAMPLE)
    cases = [
        (dict(trade_date=date(2025, 6, 12)), "holds no event of 2025-06-12"),
        (dict(statement=tmp_path / "nope.csv"), "the broker statement"),
        (dict(market_dir=tmp_path / "nope"), "the market data folder"),
    ]
    for kwargs, message in cases:
        args: dict[str, Any] = {"trade_date": DAY, **kwargs}
        with pytest.raises(StoreEventsError, match=message):
            write_store_eod_inputs(book, day_store, args.pop("trade_date"), tmp_path / "x",
                                   **args)
