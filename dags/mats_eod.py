"""
### mats_eod: end of day

Weekdays after the close (17:30 New York): the day's events are read from the SQL store and
reconciled against the broker's statement or drop copy; partly filled blocks are re-allocated
by each account's fill policy and the next day's top-ups written; transaction costs,
attribution and VaR are computed; Parquet tables, a self-contained HTML report and Great
Expectations Data Docs are written under `<run_dir>/eod/<trade_date>/out/`.

The work is `mats.batch.jobs` (see `docs/batch.md`); this file only wires it.

Params: `book_dir`, `run_dir`; empty ones take their default: `trade_date` (the run's date in
New York), `db_url` (`MATS_DB_URL`, else `<run_dir>/mats.db`), `statement` (the broker's file;
empty: a clean copy of our own executions), `market_dir` (closes, benchmark, targets, return
history; empty: the sample's, generated), `fee_per_share`.

Assets: `mats_eod_report` (report, tables, Data Docs) and `mats_eod_topups` (next day's
top-ups).
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import Asset, CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

REPO = Path(__file__).resolve().parents[1]
TZ = "America/New_York"

EOD_REPORT = Asset(name="mats_eod_report", uri="mats://eod/report", group="mats")
EOD_TOPUPS = Asset(name="mats_eod_topups", uri="mats://eod/topups", group="mats")


def _job():  # the job of this run, from its params and date (no heavy import at parse time)
    from mats.batch.jobs import eod_job

    ctx = get_current_context()
    return eod_job(ctx["params"], ctx.get("logical_date") or ctx["dag_run"].run_after)


@dag(
    dag_id="mats_eod",
    schedule=CronTriggerTimetable("30 17 * * 1-5", timezone=TZ),
    start_date=pendulum.datetime(2025, 1, 1, tz=TZ),
    catchup=False,
    max_active_runs=1,
    tags=["mats", "batch"],
    doc_md=__doc__,
    params={
        "book_dir": Param(str(REPO / "data" / "sample"), type="string",
                          description="the book folder"),
        "run_dir": Param(str(REPO / "run" / "airflow"), type="string",
                         description="where the run's files go (eod/<trade_date>/)"),
        "trade_date": Param("", type="string",
                            description="YYYY-MM-DD; empty: the run's date"),
        "db_url": Param("", type="string", description="SQL store URL; empty: the default"),
        "statement": Param("", type="string",
                           description="broker statement / drop copy (CSV or Parquet)"),
        "market_dir": Param("", type="string",
                            description="market, benchmark, targets, history files"),
        "fee_per_share": Param(0.0, type="number", minimum=0,
                               description="commission per share of our executions"),
    },
)
def mats_eod():
    @task
    def gather_inputs() -> dict[str, str]:
        """The day's events from the store, the statement, market data: the input paths."""
        from mats.batch.events import StoreEventsError
        from mats.batch.jobs import eod_gather

        try:
            return eod_gather(_job()).model_dump()
        except StoreEventsError as e:
            raise AirflowFailException(str(e)) from None

    @task(outlets=[EOD_REPORT, EOD_TOPUPS])
    def end_of_day(inputs: dict[str, str], *, outlet_events=None) -> dict[str, str]:
        """Reconcile, re-allocate, attribute, report (the paths written)."""
        from mats.batch.eod import EodInputs
        from mats.batch.jobs import eod_run
        from mats.batch.problems import BatchInputError

        job = _job()
        try:
            paths = eod_run(job, EodInputs(**inputs))
        except BatchInputError as e:  # bad input: retrying will not help
            raise AirflowFailException(str(e)) from None
        day = job.trade_date.isoformat()
        outlet_events[EOD_REPORT].extra = {"trade_date": day, "report": paths["report"]}
        outlet_events[EOD_TOPUPS].extra = {"trade_date": day, "topups": paths["topups"]}
        return paths

    end_of_day(gather_inputs())


mats_eod()
