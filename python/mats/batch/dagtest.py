"""Runs a MATS DAG once with Airflow's ``dag.test()``, in the Airflow virtualenv (Airflow 3 is
not in the streams one): used by ``make demo`` (``mats.live``) and ``tests/test_dags.py``.

    .venv-airflow/bin/python -m mats.batch.dagtest dagbag
    .venv-airflow/bin/python -m mats.batch.dagtest run DAG_ID LOGICAL_DATE CONF_JSON

The caller sets AIRFLOW_HOME, the dags folder (``dags/``) and a metadata database that
``airflow db migrate`` has made. ``dagbag`` prints what the DagBag parsed; ``run`` runs the DAG
once with ``dag.test()`` (which logs a failed task rather than raising) and prints the run's
state and each task's. Output: one JSON object on the last line of stdout.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

# Airflow is imported inside the functions: it is installed in .venv-airflow only.


def _dagbag() -> dict[str, Any]:
    from airflow.configuration import conf  # type: ignore[import-not-found,unused-ignore]
    from airflow.dag_processing.dagbag import DagBag  # type: ignore[import-not-found,unused-ignore]

    bag = DagBag(dag_folder=conf.get("core", "dags_folder"))
    dags = {}
    for dag_id, dag in bag.dags.items():
        tt = dag.timetable
        dags[dag_id] = {
            "cron": getattr(tt, "expression", None),
            "timezone": str(getattr(tt, "timezone", "")),
            "catchup": dag.catchup, "tags": sorted(dag.tags),
            "params": {k: dag.params[k] for k in dag.params},
            "tasks": {t.task_id: {"outlets": [{"name": o.name, "uri": o.uri}
                                              for o in t.outlets],
                                  "upstream": sorted(t.upstream_task_ids)}
                      for t in dag.tasks},
        }
    return {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags}


def _run(dag_id: str, logical_date: str, conf: dict[str, Any]) -> dict[str, Any]:
    from airflow.configuration import conf as airflow_conf  # type: ignore[import-not-found,unused-ignore]
    from airflow.dag_processing.dagbag import DagBag  # type: ignore[import-not-found,unused-ignore]
    from airflow.models.asset import AssetEvent, AssetModel  # type: ignore[import-not-found,unused-ignore]
    from airflow.utils.session import create_session  # type: ignore[import-not-found,unused-ignore]

    bag = DagBag(dag_folder=airflow_conf.get("core", "dags_folder"))
    if dag_id not in bag.dags:
        return {"error": f"{dag_id} not parsed", "import_errors": {
            k: str(v) for k, v in bag.import_errors.items()}}
    dag = bag.dags[dag_id]
    run = dag.test(logical_date=datetime.fromisoformat(logical_date), run_conf=conf)
    with create_session() as session:
        tis = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
        events = [{"asset": name, "extra": extra} for name, extra in session.query(
            AssetModel.name, AssetEvent.extra).join(
            AssetEvent, AssetEvent.asset_id == AssetModel.id).filter(
            AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run.run_id)]
        xcoms = {}
        from airflow.models.xcom import XComModel  # type: ignore[import-not-found,unused-ignore]

        for row in session.query(XComModel).filter(XComModel.dag_id == dag_id,
                                                   XComModel.run_id == run.run_id,
                                                   XComModel.key == "return_value"):
            xcoms[row.task_id] = row.value
    return {"state": str(run.state), "tasks": tis, "asset_events": events, "xcom": xcoms}


def main(argv: list[str]) -> int:
    if argv[:1] == ["dagbag"]:
        out = _dagbag()
    elif argv[:1] == ["run"] and len(argv) == 4:
        out = _run(argv[1], argv[2], json.loads(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
