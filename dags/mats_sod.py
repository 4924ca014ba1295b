"""
### mats_sod: start of day

Weekday mornings (06:00 New York): the custodian's files are validated with Great Expectations
and every account's start-of-day state is built (settled cash, pending dividends and
withdrawals, Reg T buying power, open reservations), then published to the SQL store and to the
compacted Kafka topic `mats.sod-state` that the stream app reads. A critical problem in any
input fails `build_state`, quarantines the file, and nothing is published.

The work is `mats.batch.jobs` (see `docs/batch.md`); this file only wires it.

Params: `book_dir`, `run_dir`; empty ones take their default: `as_of` (the run's date in New
York), `inputs_dir` (the sample's custodian files, generated), `db_url` (`MATS_DB_URL`, else
`<run_dir>/mats.db`), `kafka_bootstrap` (`MATS_KAFKA_BOOTSTRAP`, else Kafka is skipped).

Assets: `mats_sod_state` (the state in the SQL store) and `mats_sod_state_topic` (on Kafka).
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import Asset, CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

REPO = Path(__file__).resolve().parents[1]
TZ = "America/New_York"

SOD_STATE = Asset(name="mats_sod_state", uri="mats://store/sod_state", group="mats")
SOD_STATE_TOPIC = Asset(name="mats_sod_state_topic", uri="kafka://mats/mats.sod-state",
                        group="mats")


def _job():  # the job of this run, from its params and date (no heavy import at parse time)
    from mats.batch.jobs import sod_job

    ctx = get_current_context()
    return sod_job(ctx["params"], ctx.get("logical_date") or ctx["dag_run"].run_after)


@dag(
    dag_id="mats_sod",
    schedule=CronTriggerTimetable("0 6 * * 1-5", timezone=TZ),
    start_date=pendulum.datetime(2025, 1, 1, tz=TZ),
    catchup=False,
    max_active_runs=1,
    tags=["mats", "batch"],
    doc_md=__doc__,
    params={
        "book_dir": Param(str(REPO / "data" / "sample"), type="string",
                          description="the book folder (yesterday's end state)"),
        "run_dir": Param(str(REPO / "run" / "airflow"), type="string",
                         description="where the run's files go (sod/<as_of>/)"),
        "as_of": Param("", type="string", description="YYYY-MM-DD; empty: the run's date"),
        "inputs_dir": Param("", type="string",
                            description="the custodian's files; empty: the sample's"),
        "db_url": Param("", type="string", description="SQL store URL; empty: the default"),
        "kafka_bootstrap": Param("", type="string",
                                 description="HOST:PORT; empty: MATS_KAFKA_BOOTSTRAP or none"),
    },
)
def mats_sod():
    @task
    def build_state() -> dict[str, str]:
        """Validate the custodian files and build the state (the paths written)."""
        from mats.batch.jobs import sod_build
        from mats.batch.problems import BatchInputError

        try:
            return sod_build(_job())
        except BatchInputError as e:  # bad input: retrying will not help
            raise AirflowFailException(str(e)) from None

    @task(outlets=[SOD_STATE])
    def publish_store(paths: dict[str, str], *, outlet_events=None) -> int:
        from mats.batch.jobs import sod_publish_store

        job = _job()
        rows = sod_publish_store(job, paths["state"])
        outlet_events[SOD_STATE].extra = {"as_of": job.as_of.isoformat(), "accounts": rows}
        return rows

    @task(outlets=[SOD_STATE_TOPIC])
    def publish_kafka(paths: dict[str, str], *, outlet_events=None) -> int:
        from mats.batch.jobs import sod_publish_kafka

        job = _job()
        sent = sod_publish_kafka(job, paths["state"])
        if sent is None:
            raise AirflowSkipException("no Kafka configured (param kafka_bootstrap or "
                                       "MATS_KAFKA_BOOTSTRAP): the state is in the store only")
        outlet_events[SOD_STATE_TOPIC].extra = {"as_of": job.as_of.isoformat(),
                                                "accounts": sent}
        return sent

    paths = build_state()
    publish_store(paths)
    publish_kafka(paths)


mats_sod()
