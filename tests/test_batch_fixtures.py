"""The generated batch inputs are deterministic: one seed, the same bytes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from mats.batch.fixtures import business_days_before, write_eod_inputs, write_sod_inputs
from mats.config import load_book

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_sod_inputs_are_deterministic(tmp_path: Path) -> None:
    book = load_book(SAMPLE)
    write_sod_inputs(book, date(2025, 6, 16), tmp_path / "a")
    write_sod_inputs(book, date(2025, 6, 16), tmp_path / "b")
    write_sod_inputs(book, date(2025, 6, 16), tmp_path / "c", seed=1)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 6
    assert a["cash.csv"] != c["cash.csv"]


def test_eod_inputs_are_deterministic(tmp_path: Path) -> None:
    book = load_book(SAMPLE)
    for x in "ab":
        write_eod_inputs(book, date(2025, 6, 13), tmp_path / x, n_blocks=8, history_days=260)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 10
    for name in a:  # Parquet bytes may carry writer metadata: compare the tables
        assert pl.read_parquet(tmp_path / "a" / name).equals(
            pl.read_parquet(tmp_path / "b" / name)), name


def test_business_days_before() -> None:
    assert business_days_before(date(2025, 6, 16), 1) == date(2025, 6, 13)  # Monday -> Friday
    assert business_days_before(date(2025, 6, 13), 5) == date(2025, 6, 6)
