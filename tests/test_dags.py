"""The Airflow DAGs in dags/, parsed and run end to end by Airflow 3 in .venv-airflow.

Airflow is not in this virtualenv (its croniter pin and faust-streaming's disagree): each check
runs ``tests/airflow/run_dags.py`` with .venv-airflow's python, on a metadata database of the
module's own (SQLite in a temporary AIRFLOW_HOME, made by ``airflow db migrate``), and reads
its JSON answer. The outputs (files, the SQL store, the Kafka topic) are checked from here.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mats import kafka
from mats.batch.publish import load_state, read_from_kafka, read_from_store
from mats.store import Store

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
HELPERS = ROOT / "tests" / "airflow"
SOD_DAY = date(2025, 6, 13)  # the sample book's trading day (data/sample/day.yaml)

pytestmark = pytest.mark.skipif(not AIRFLOW_BIN.exists() and not os.environ.get("CI"),
                                reason="no .venv-airflow (run `make venv-airflow`)")


def _store_day() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("store_day", HELPERS / "store_day.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Airflow:
    """Runs commands of .venv-airflow against one AIRFLOW_HOME."""

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "AIRFLOW_HOME": str(home),
                    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}"}
        for name in ("MATS_DB_URL", "MATS_KAFKA_BOOTSTRAP"):  # the params say where, not these
            self.env.pop(name, None)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, env=self.env,
                              timeout=timeout, cwd=ROOT)

    def script(self, *args: str) -> dict[str, Any]:
        out = self.run(str(AIRFLOW_BIN / "python"), "-m", "mats.batch.dagtest", *args)
        lines = out.stdout.strip().splitlines()
        if out.returncode != 0 or not lines or not lines[-1].startswith("{"):
            pytest.fail(f"mats.batch.dagtest {args[0]} exited {out.returncode}:\n"
                        f"{_tail(out.stderr + out.stdout)}")
        answer: dict[str, Any] = json.loads(lines[-1])
        answer["log"] = out.stdout + out.stderr
        return answer

    def dag_test(self, dag_id: str, logical_date: str, conf: dict[str, Any]) -> dict[str, Any]:
        return self.script("run", dag_id, logical_date, json.dumps(conf))


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _why(run: dict[str, Any]) -> str:
    """What went wrong in a run, for an assertion's message: its tasks and the log's errors."""
    errors = [ln for ln in run.get("log", "").splitlines()
              if any(w in ln.lower() for w in ("error", "exception", "critical:"))]
    return f"tasks: {run.get('tasks')}\n" + "\n".join(errors[-25:])


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Airflow:
    af = Airflow(tmp_path_factory.mktemp("airflow_home"))
    out = af.run(str(AIRFLOW_BIN / "airflow"), "db", "migrate", timeout=180)
    if out.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{_tail(out.stderr + out.stdout)}")
    return af


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mats_run")


@pytest.fixture(scope="module")
def sod_run(airflow: Airflow, run_dir: Path, broker: kafka.KafkaSettings) -> dict[str, Any]:
    """mats_sod run once for the sample day, publishing to the store and to Kafka."""
    return airflow.dag_test("mats_sod", f"{SOD_DAY}T10:00:00+00:00", {
        "run_dir": str(run_dir), "db_url": f"sqlite:///{run_dir / 'mats.db'}",
        "kafka_bootstrap": broker.bootstrap_servers})


def test_dagbag_imports_both_dags_with_their_schedules_and_assets(airflow: Airflow) -> None:
    bag = airflow.script("dagbag")
    assert bag["import_errors"] == {}
    assert set(bag["dags"]) == {"mats_sod", "mats_eod"}
    sod, eod = bag["dags"]["mats_sod"], bag["dags"]["mats_eod"]
    assert (sod["cron"], sod["timezone"]) == ("0 6 * * 1-5", "America/New_York")
    assert (eod["cron"], eod["timezone"]) == ("30 17 * * 1-5", "America/New_York")
    assert sod["catchup"] is False and eod["catchup"] is False
    assert sod["params"]["book_dir"] == str(ROOT / "data" / "sample")
    assert sod["params"]["run_dir"] == str(ROOT / "run" / "airflow")
    assert sod["tasks"] == {
        "build_state": {"outlets": [], "upstream": []},
        "publish_store": {"outlets": [{"name": "mats_sod_state",
                                       "uri": "mats://store/sod_state"}],
                          "upstream": ["build_state"]},
        "publish_kafka": {"outlets": [{"name": "mats_sod_state_topic",
                                       "uri": "kafka://mats/mats.sod-state"}],
                          "upstream": ["build_state"]}}
    assert eod["tasks"] == {
        "gather_inputs": {"outlets": [], "upstream": []},
        "end_of_day": {"outlets": [{"name": "mats_eod_report", "uri": "mats://eod/report"},
                                   {"name": "mats_eod_topups", "uri": "mats://eod/topups"}],
                       "upstream": ["gather_inputs"]}}


def test_sod_dag_publishes_the_state_to_the_store_and_kafka(
        sod_run: dict[str, Any], run_dir: Path, broker: kafka.KafkaSettings) -> None:
    assert sod_run["state"] == "success", _why(sod_run)
    assert sod_run["tasks"] == {"build_state": "success", "publish_store": "success",
                                "publish_kafka": "success"}
    folder = run_dir / "sod" / SOD_DAY.isoformat()
    paths = sod_run["xcom"]["build_state"]
    assert paths["state"] == str(folder / "sod_state.json")
    for name in ("state", "table", "problems", "data_docs"):
        assert Path(paths[name]).is_file(), name
    state = load_state(paths["state"])
    assert len(state) == 50 and sod_run["xcom"]["publish_store"] == 50
    assert read_from_store(f"sqlite:///{run_dir / 'mats.db'}", SOD_DAY) == sorted(
        state, key=lambda a: a.account_id)
    on_topic = read_from_kafka(broker.bootstrap_servers)
    assert on_topic == {
        a.account_id: (SOD_DAY.isoformat(), a) for a in state}
    events = {e["asset"]: e["extra"] for e in sod_run["asset_events"]}
    assert events == {"mats_sod_state": {"as_of": "2025-06-13", "accounts": 50},
                      "mats_sod_state_topic": {"as_of": "2025-06-13", "accounts": 50}}


def test_sod_dag_with_a_bad_file_fails_and_publishes_nothing(
        sod_run: dict[str, Any], airflow: Airflow, run_dir: Path, tmp_path: Path,
        broker: kafka.KafkaSettings) -> None:
    day = date(2025, 6, 16)
    good = run_dir / "sod" / SOD_DAY.isoformat() / "in"
    bad = tmp_path / "in"
    bad.mkdir()
    for f in good.iterdir():
        text = f.read_text()
        if f.name == "positions.csv":  # an account the book does not have
            text = text.replace("ACC-001,", "ACC-999,", 1)
        (bad / f.name).write_text(text)
    run = airflow.dag_test("mats_sod", f"{day}T10:00:00+00:00", {
        "run_dir": str(run_dir), "db_url": f"sqlite:///{run_dir / 'mats.db'}",
        "inputs_dir": str(bad), "kafka_bootstrap": broker.bootstrap_servers})
    assert run["state"] == "failed", _why(run)
    assert run["tasks"] == {"build_state": "failed", "publish_store": "upstream_failed",
                            "publish_kafka": "upstream_failed"}
    assert "account not in the book (found 'ACC-999')" in run["log"]
    folder = run_dir / "sod" / day.isoformat()
    assert (folder / "quarantine" / day.isoformat() / "positions.csv.problems.json").is_file()
    assert not (folder / "sod_state.json").exists()
    assert run["asset_events"] == []
    assert read_from_store(f"sqlite:///{run_dir / 'mats.db'}", day) == []
    assert {as_of for as_of, _ in read_from_kafka(broker.bootstrap_servers).values()} == {
        SOD_DAY.isoformat()}


def test_eod_dag_reads_the_store_and_reports_the_planted_breaks(
        sod_run: dict[str, Any], airflow: Airflow, run_dir: Path, tmp_path: Path) -> None:
    assert sod_run["state"] == "success", _why(sod_run)
    db_url = f"sqlite:///{run_dir / 'mats.db'}"
    counts = _store_day().record_day(ROOT / "data" / "sample", db_url)
    assert counts["execution_report"] > 0 and counts["account_fill"] > 0
    with Store(db_url) as store:
        assert store.count() == sum(counts.values())
    # the broker's statement: our fills as the store has them, four lines changed
    from mats.batch.events import day_events, store_frames

    with Store(db_url) as store:
        ours = store_frames(day_events(store, SOD_DAY), {})["executions"]
    statement = ours.drop("exec_time").with_row_index("i").with_columns(
        pl.when(pl.col("i") == 1).then(pl.col("quantity") - 1).otherwise(pl.col("quantity"))
        .alias("quantity"),
        pl.when(pl.col("i") == 2).then(pl.col("price") + 0.25).otherwise(pl.col("price"))
        .alias("price"))
    extra = statement.slice(3, 1).with_columns(pl.lit("NOT-OURS-1").alias("exec_id"))
    statement = pl.concat([statement.slice(1), extra]).drop("i")  # line 0 lost by us
    statement.write_csv(tmp_path / "statement.csv")

    run = airflow.dag_test("mats_eod", f"{SOD_DAY}T21:30:00+00:00", {
        "run_dir": str(run_dir), "db_url": db_url,
        "statement": str(tmp_path / "statement.csv")})
    assert run["state"] == "success", _why(run)
    assert run["tasks"] == {"gather_inputs": "success", "end_of_day": "success"}
    out = run_dir / "eod" / SOD_DAY.isoformat() / "out"
    paths = run["xcom"]["end_of_day"]
    assert paths["report"] == str(out / "report.html")
    assert paths["data_docs"] == str(out / "data_docs" / "index.html")
    for name in ("report", "data_docs", "breaks", "reallocation", "topups", "tca", "brinson",
                 "var"):
        assert Path(paths[name]).is_file(), name
    breaks = pl.read_parquet(paths["breaks"])
    first, second, third = (str(x) for x in ours["exec_id"][:3])
    assert sorted(zip(breaks["break_type"], breaks["exec_id"], strict=True)) == sorted([
        ("extra", first), ("missing", "NOT-OURS-1"), ("quantity_mismatch", second),
        ("price_mismatch", third)])
    # what the day did comes from the store: every execution, fill and placed lot
    inputs = run["xcom"]["gather_inputs"]
    assert pl.read_parquet(inputs["executions"]).height == ours.height
    assert pl.read_parquet(inputs["fills"])["quantity"].sum() == ours["quantity"].sum()
    # the holdings are the state the start of day published for the day
    holdings = pl.read_parquet(inputs["holdings"])
    state = load_state(sod_run["xcom"]["build_state"]["state"])
    assert holdings.height == sum(1 for a in state for q in a.positions.values() if q)
    events = {e["asset"]: e["extra"] for e in run["asset_events"]}
    assert events == {
        "mats_eod_report": {"trade_date": "2025-06-13", "report": paths["report"]},
        "mats_eod_topups": {"trade_date": "2025-06-13", "topups": paths["topups"]}}
