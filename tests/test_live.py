"""``make demo``'s trading day (mats.live) end to end, on a few orders of the sample day:
Kafka, the SOD DAG on Airflow, broker simulators and gateways, the stream worker, the EOD DAG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mats.config import load_book

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (ROOT / ".venv-airflow" / "bin" / "python").exists()
                       and not os.environ.get("CI"), reason="no .venv-airflow (make venv-airflow)"),
]


def test_the_day_runs_from_start_of_day_to_the_end_of_day_report(tmp_path: Path) -> None:
    run = tmp_path / "live"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATS_")}
    out = subprocess.run([sys.executable, "-m", "mats.live", "--run-dir", str(run),
                          "--orders", "12"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1200)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    # the stream app started from the state the SOD DAG built and published
    book = load_book(run / "book")
    sod = json.loads((run / "book" / "accounts.json").read_text())
    assert {a["account_id"] for a in sod} == {a.account_id for a in book.accounts}
    # every account at the close, read back from the journal; some traded
    accounts = json.loads((run / "accounts.json").read_text())
    assert {a["account_id"] for a in accounts} == {a.account_id for a in book.accounts}
    start = {a.account_id: a for a in book.accounts}
    assert any(a["positions"] != start[a["account_id"]].positions for a in accounts)
    # every child order ended: what is working at the close is what was working at the start
    def working(orders: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        return {s: q for s, q in orders.items() if q != (0, 0)}

    for a in accounts:
        before = {s: (o.buy, o.sell) for s, o in start[a["account_id"]].open_orders.items()}
        after = {s: (o["buy"], o["sell"]) for s, o in a["open_orders"].items()}
        assert working(after) == working(before), a["account_id"]
    # the EOD DAG's report and Data Docs, where the run says they are
    report = next(line.split("report:", 1)[1].strip() for line in text.splitlines()
                  if "report:" in line)
    assert Path(report).is_file() and Path(report).stat().st_size > 1000, text[-2000:]
    assert Path(report).is_relative_to(run / "batch" / "eod")
    assert (run / "logs" / "worker.log").is_file()
