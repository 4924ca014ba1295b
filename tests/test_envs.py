"""The two virtualenvs: the Airflow one runs the same `mats` as the streams one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mats

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_PY = ROOT / ".venv-airflow" / "bin" / "python"

PROBE = """
import json, airflow, mats, mats._core
from mats.engine import Engine
print(json.dumps({"airflow": airflow.__version__, "mats": mats.__file__,
                  "core": mats._core.__version__, "codes": len(mats._core.reason_codes())}))
"""


@pytest.mark.skipif(not AIRFLOW_PY.exists() and not os.environ.get("CI"),
                    reason="no .venv-airflow (run `make venv-airflow`)")
def test_airflow_venv_imports_the_same_mats() -> None:
    out = subprocess.run([str(AIRFLOW_PY), "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=120)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["airflow"].startswith("3.")
    assert Path(info["mats"]).resolve() == Path(mats.__file__).resolve()
    assert info["core"] == mats._core.__version__
    assert info["codes"] == len(mats._core.reason_codes())


def test_streams_venv_has_no_airflow() -> None:
    """Airflow and faust-streaming pin incompatible croniter versions: they stay apart."""
    out = subprocess.run([sys.executable, "-c", "import airflow"], capture_output=True)
    assert out.returncode != 0
