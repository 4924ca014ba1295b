"""docs/batch.md shows every input schema exactly as the code defines it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mats.batch.eod_tables import EOD_TABLES
from mats.batch.sod import SOD_TABLES
from mats.batch.tables import Table

DOC = Path(__file__).resolve().parent.parent / "docs" / "batch.md"


@pytest.mark.parametrize("table", [*SOD_TABLES, *EOD_TABLES], ids=lambda t: t.name)
def test_schema_documented(table: Table) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"#### `{table.name}`" in text
    assert table.markdown() in text, f"docs/batch.md: the {table.name} table is out of date"
