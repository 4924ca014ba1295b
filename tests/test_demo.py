"""The demo on the shipped sample: it runs, writes its outputs, and tells the sample's stories."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from mats import codes
from mats.demo import DemoResult, main, outcome, run_demo
from mats.models import Decision

CONCENTRATION = {codes.MAX_POSITION_PCT, codes.SECTOR_CAP}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, str, Path]:
    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    result = run_demo(None, out, console=Console(file=buf, width=140))
    return result, buf.getvalue(), out


def test_every_order_decided(demo: tuple[DemoResult, str, Path]) -> None:
    result, _, _ = demo
    assert len(result.decisions) == len(result.orders)
    assert [d.order_id for d in result.decisions] == [o.order_id for o in result.orders]
    for d in result.decisions:
        assert sum(line.quantity for line in d.lines) == d.placed_quantity
        assert d.placed_quantity <= d.requested_quantity


def test_outputs_written(demo: tuple[DemoResult, str, Path]) -> None:
    result, _, out = demo
    assert {p.name for p in result.files} == {"decisions.jsonl", "summary.csv",
                                              "summary.parquet"}
    lines = (out / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [Decision.model_validate(json.loads(s)) for s in lines] == result.decisions
    for frame in (pl.read_csv(out / "summary.csv"), pl.read_parquet(out / "summary.parquet")):
        assert frame.height == len(result.orders)
        assert frame["order_id"].to_list() == [d.order_id for d in result.decisions]
        assert frame["placed_quantity"].sum() == sum(d.placed_quantity for d in result.decisions)


def test_layer1_refusals(demo: tuple[DemoResult, str, Path]) -> None:
    result, _, _ = demo
    l1 = [d for d in result.decisions if d.stage == "l1"]
    assert l1
    for d in l1:
        assert d.status == "rejected"
        assert d.placed_quantity == 0
        assert d.l1_breaches
    seen = {c.code for d in l1 for c in d.l1_breaches}
    # the cases the sample day was written to contain
    assert {codes.STALE_REFERENCE_PRICE, codes.PRICE_COLLAR, codes.FIRM_RESTRICTED,
            codes.DUPLICATE_ORDER_ID, codes.MAX_ORDER_QUANTITY} <= seen


def test_stale_price_breaks_concentration_at_layer2(demo: tuple[DemoResult, str, Path]) -> None:
    result, _, _ = demo
    story = [d for d in result.decisions if d.stage == "l2"
             and d.live_price is not None and d.live_price > d.reference_price * 1.05
             and any(c.code in CONCENTRATION for line in d.lines for c in line.l2_breaches)]
    assert story, "no order refused at layer 2 for concentration at the live price"
    for d in story:
        assert not d.l1_breaches  # layer 1 let it through: fresh reference, limit in the collar
        assert d.placed_quantity == 0
        for line in d.lines:
            for c in line.l2_breaches:
                if c.code in CONCENTRATION:
                    assert c.value is not None and c.limit is not None
                    assert c.value > c.limit


def test_sell_nobody_holds_places_nothing(demo: tuple[DemoResult, str, Path]) -> None:
    result, _, _ = demo
    assert any(d.side == "sell" and d.status == "rejected" and d.stage == "allocation"
               and any(line.binding is not None
                       and line.binding.code == codes.SHORT_SALE_NOT_ALLOWED
                       for line in d.lines)
               for d in result.decisions)


def test_printed_tables(demo: tuple[DemoResult, str, Path]) -> None:
    result, text, _ = demo
    for title in ("Orders by strategy", "Reason codes", "Orders not placed in full"):
        assert title in text
    assert "\x1b" not in text
    refused = [d for d in result.decisions if outcome(d) != "placed in full"]
    for d in refused:
        assert d.order_id in text


def test_demo_without_a_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    proc = subprocess.run([sys.executable, "-m", "mats.demo", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "Orders by strategy" in proc.stdout
    assert "\x1b" not in proc.stdout
    assert "\r" not in proc.stdout  # no progress bar redraws
    assert (tmp_path / "summary.parquet").exists()


def test_demo_bad_book(book_copy: Path, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    (book_copy / "day.yaml").write_text("as_of: yesterday\n", encoding="utf-8")
    assert main(["--book", str(book_copy), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{book_copy / 'day.yaml'}:1: as_of:" in err
    assert "Traceback" not in err
