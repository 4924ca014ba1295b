"""``python -m mats.batch``: exit codes and messages, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mats.batch.__main__ import main

SAMPLE = str(Path(__file__).resolve().parent.parent / "data" / "sample")


def test_sod_builds_then_refuses_a_bad_file(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sod", SAMPLE, str(tmp_path / "in"), "--as-of", "2025-06-16"]
    assert main([*args, "--out", str(tmp_path / "out"), "--generate"]) == 0
    out = capsys.readouterr().out
    assert "start of day 2025-06-16: 50 accounts" in out
    assert len(json.loads((tmp_path / "out" / "sod_state.json").read_text())) == 50
    assert (tmp_path / "out" / "data_docs" / "index.html").is_file()
    prices = tmp_path / "in" / "prices.csv"
    lines = prices.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",abc," + lines[3].split(",")[2]
    prices.write_text("\n".join(lines) + "\n")
    assert main([*args, "--out", str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err
    assert f"critical: {prices}, column price, line 4: 1 value is not a number: 'abc'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out2" / "sod_state.json").exists()
    assert (tmp_path / "out2" / "quarantine" / "2025-06-16" / "prices.csv").is_file()


@pytest.mark.parametrize(("argv", "message"), [
    (["sod", "/nonexistent-book", "in", "--as-of", "2025-06-16", "--out", "o"],
     "mats.batch: error: /nonexistent-book: book folder not found"),
    (["eod", SAMPLE, "in", "--date", "13/06/2025", "--out", "o"],
     "argument --date: not a date (YYYY-MM-DD): '13/06/2025'"),
])
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_eod_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    assert main(["eod", SAMPLE, str(tmp_path / "in"), "--date", "2025-06-13",
                 "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"critical: {tmp_path / 'in' / 'blocks.csv'}: file not found" in err


def test_both_parquet_and_csv_of_one_input_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sod", SAMPLE, str(tmp_path / "in"), "--as-of", "2025-06-16"]
    assert main([*args, "--out", str(tmp_path / "out"), "--generate"]) == 0
    (tmp_path / "in" / "prices.parquet").write_bytes(b"PAR1")
    assert main([*args, "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert (f"both prices.parquet and prices.csv are in {tmp_path / 'in'}: remove the one "
            "that is not today's prices") in err
    assert "Traceback" not in err and not (tmp_path / "out2" / "sod_state.json").exists()
