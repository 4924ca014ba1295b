"""End of day end to end on generated inputs: every output written, consistent with the inputs,
checked by Great Expectations, and the report self-contained."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from mats.batch import BatchInputError
from mats.batch.eod import EodConfig, EodInputs, EodResult, next_business_day, run_eod
from mats.batch.fixtures import write_eod_inputs
from mats.config import load_book
from mats.models import Book, FillPolicy

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
DAY = date(2025, 6, 13)


@pytest.fixture(scope="module")
def book() -> Book:
    b = load_book(SAMPLE)
    # one mandate carries its shortfalls to the next day, so that top-ups appear
    mandates = [m.model_copy(update={"fill_policy": FillPolicy.AS_ALLOCATED})
                if m.mandate_id == "growth_margin" else m for m in b.mandates]
    return Book.model_validate({**b.model_dump(), "mandates": [m.model_dump() for m in mandates]})


@pytest.fixture(scope="module")
def run(book: Book, tmp_path_factory: pytest.TempPathFactory) -> tuple[EodResult, Path, Path]:
    tmp = tmp_path_factory.mktemp("eod")
    inputs = write_eod_inputs(book, DAY, tmp / "in")
    result = run_eod(book, inputs, EodConfig(trade_date=DAY), tmp / "out")
    return result, tmp / "in", tmp / "out"


@pytest.mark.parametrize(("day", "next_day"), [
    (date(2026, 12, 4), date(2026, 12, 7)),  # Friday -> Monday
    (date(2026, 12, 5), date(2026, 12, 7)),  # a day run on a Saturday tops up on the Monday
    (date(2026, 12, 6), date(2026, 12, 7)),  # ... and on a Sunday
    (date(2026, 12, 7), date(2026, 12, 8)),  # Monday -> Tuesday
])
def test_top_ups_go_to_the_next_business_day(day: date, next_day: date) -> None:
    assert next_business_day(day) == next_day


def test_outputs_written(run: tuple[EodResult, Path, Path]) -> None:
    result, _, out = run
    for name in ("breaks", "reallocation", "topups", "tca_lots", "tca", "brinson",
                 "allocation_effect", "var", "var_backtest"):
        assert (out / f"{name}.parquet").is_file(), name
        assert pl.read_parquet(out / f"{name}.parquet").equals(result.tables[name])
    assert result.data_docs == out / "data_docs" / "index.html" and result.data_docs.is_file()
    assert list((out / "data_docs" / "validations").rglob("*.html"))


def test_planted_breaks_found(run: tuple[EodResult, Path, Path]) -> None:
    result, _, _ = run
    kinds = sorted(result.tables["breaks"]["break_type"].to_list())
    assert kinds == ["extra", "missing", "price_mismatch", "quantity_mismatch"]
    # the output checks pass but for the breaks (a warning), maybe the backtest zone
    assert all(p.severity.value == "warning" for p in result.problems), result.problems
    assert any("breaks to investigate" in p.message for p in result.problems)


def test_tca_agrees_with_inputs(run: tuple[EodResult, Path, Path]) -> None:
    result, inp, _ = run
    fills = pl.read_parquet(inp / "fills.parquet")
    executions = pl.read_parquet(inp / "executions.parquet")
    lots = pl.read_parquet(inp / "lots.parquet")
    tca = result.tables["tca"]
    firm = tca.filter(pl.col("dimension") == "firm").row(0, named=True)
    assert firm["filled"] == fills["quantity"].sum() == executions["quantity"].sum()
    assert firm["allocated"] == lots["allocated"].sum()
    assert firm["fees"] == pytest.approx(executions["fee"].sum())
    assert firm["filled_notional"] == pytest.approx(
        (executions["quantity"] * executions["price"]).sum())
    for dim in ("account_id", "strategy", "allocator", "gateway", "bucket"):
        assert tca.filter(pl.col("dimension") == dim)["shortfall"].sum() == pytest.approx(
            firm["shortfall"])


def test_reallocation_and_topups(book: Book, run: tuple[EodResult, Path, Path]) -> None:
    result, _, _ = run
    final, topups = result.tables["reallocation"], result.tables["topups"]
    carried = final.filter(pl.col("carried") & (pl.col("shortfall") > 0))
    assert carried.height > 0 and topups.height > 0
    policy = {a.account_id: a.mandate_id for a in book.accounts}
    assert {policy[a] for a in carried["account_id"]} == {"growth_margin"}
    assert set(topups["account_id"]) <= set(carried["account_id"])
    per_block = final.group_by("order_id").agg(pl.col("target").sum(), pl.col("filled").sum())
    assert (per_block["target"] == per_block["filled"]).all()
    # the fixture booked one share to the wrong account of one block; the rest is by policy
    moved = final.filter(pl.col("adjustment") != 0)
    assert moved.height == 2 and moved["order_id"].n_unique() == 1
    assert sorted(moved["adjustment"].to_list()) == [-1, 1]


def test_var_and_attribution(run: tuple[EodResult, Path, Path]) -> None:
    result, _, _ = run
    var = result.tables["var"]
    firm99 = var.filter((pl.col("account_id") == "FIRM") & (pl.col("level") == 0.99))
    assert firm99.height == 2 and (firm99["var"] > 0).all()
    hist = var.filter(pl.col("method") == "historical").pivot(
        on="level", index="account_id", values="var")
    assert (hist["0.99"] >= hist["0.95"]).all()
    bf = result.tables["brinson"]
    gap = bf.group_by("account_id").agg(
        (pl.col("total").sum() - pl.col("Rp").first() + pl.col("Rb").first()).abs())
    assert gap["total"].max() < 1e-12  # type: ignore[operator]


def test_report_is_self_contained(run: tuple[EodResult, Path, Path]) -> None:
    result, _, _ = run
    assert result.report is not None
    html = result.report.read_text(encoding="utf-8")
    assert html.count("<svg") >= 6
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<script" not in html
    assert 'href="data_docs/index.html"' in html
    assert "quantity_mismatch" in html and "Brinson-Fachler" in html


def test_unreadable_input_is_refused(book: Book, tmp_path: Path) -> None:
    inputs = write_eod_inputs(book, DAY, tmp_path / "in", n_blocks=5, history_days=260)
    pl.read_parquet(inputs.fills).drop("quantity").write_parquet(inputs.fills)
    with pytest.raises(BatchInputError,
                       match=r"fills\.parquet, column quantity: missing column quantity"):
        run_eod(book, inputs, EodConfig(trade_date=DAY), tmp_path / "out", data_docs=False)


@pytest.mark.parametrize(("name", "change", "message"), [
    ("holdings", lambda df: df.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("ACC-999"))
        .otherwise(pl.col("account_id")).alias("account_id")),
     r"holdings\.parquet, column account_id, row 1: account not in the book \(found 'ACC-999'\)"),
    ("fills", lambda df: df.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("E-UNKNOWN"))
        .otherwise(pl.col("exec_id")).alias("exec_id")),
     r"fills\.parquet, column unknown_exec_id, row 3: fill of an execution that is not in the "
     r"executions file \(gateway/exec_id\) \(found '[^/']+/E-UNKNOWN'\)"),
    ("history", lambda df: df.filter(pl.col("date") > date(2024, 12, 31)),
     r"history\.parquet, column date: VaR needs 250 days of returns, the file has \d+"),
    ("lots", lambda df: pl.concat([df, df.head(1)]),
     r"lots\.parquet, column order_id, account_id, rows 1, \d+: duplicate rows"),
    ("history", lambda df: df.filter(pl.col("symbol") != "DLY"),  # ACC-001 holds DLY
     r"history\.parquet, column no_returns: an instrument held or traded today has no return "
     r"history \(found 'DLY'\)"),
], ids=["unknown account", "unknown execution", "short history", "duplicate lot",
        "history gap"])
def test_bad_input_content_is_refused(book: Book, tmp_path: Path, name: str,
                                      change: object, message: str) -> None:
    inputs = write_eod_inputs(book, DAY, tmp_path / "in", n_blocks=5, history_days=260)
    path = getattr(inputs, name)
    change_fn = change  # a frame -> frame function
    assert callable(change_fn)
    change_fn(pl.read_parquet(path)).write_parquet(path)
    with pytest.raises(BatchInputError, match=message):
        run_eod(book, inputs, EodConfig(trade_date=DAY), tmp_path / "out", data_docs=False)
    assert not (tmp_path / "out" / "tca.parquet").exists()


def _inputs(book: Book, tmp_path: Path) -> EodInputs:
    return write_eod_inputs(book, DAY, tmp_path / "in", n_blocks=5, history_days=260)


def test_an_unpriced_benchmark_constituent_is_refused(book: Book, tmp_path: Path) -> None:
    """The benchmark's return would be taken over the priced constituents only, re-weighted."""
    inputs = _inputs(book, tmp_path)
    used = pl.concat([pl.read_parquet(inputs.holdings).select("symbol"),
                      pl.read_parquet(inputs.blocks).select("symbol")])
    bench = pl.read_parquet(inputs.benchmark)
    idle = bench.filter(~pl.col("symbol").is_in(used["symbol"].implode()))["symbol"].sort()[0]
    market = pl.read_parquet(inputs.market)
    market.filter(pl.col("symbol") != idle).write_parquet(inputs.market)
    with pytest.raises(BatchInputError, match=rf"benchmark\.parquet, column unpriced: a benchmark "
                                              rf"constituent has no closing price in the market "
                                              rf"file \(found '{idle}'\)"):
        run_eod(book, inputs, EodConfig(trade_date=DAY), tmp_path / "out",
                data_docs=False)


def test_a_benchmark_constituent_outside_the_book_is_refused(book: Book, tmp_path: Path) -> None:
    """Its sector is unknown: the benchmark's sector weights would silently leave it out."""
    inputs = _inputs(book, tmp_path)
    bench = pl.read_parquet(inputs.benchmark)
    pl.concat([bench, bench.head(1).with_columns(pl.lit("NOTINBOOK").alias("symbol"))]
              ).write_parquet(inputs.benchmark)
    market = pl.read_parquet(inputs.market)
    pl.concat([market, market.head(1).with_columns(pl.lit("NOTINBOOK").alias("symbol"))]
              ).write_parquet(inputs.market)
    with pytest.raises(BatchInputError, match=r"column no_sector: a benchmark constituent is not "
                                              r"in the book's instruments \(no sector\) "
                                              r"\(found 'NOTINBOOK'\)"):
        run_eod(book, inputs, EodConfig(trade_date=DAY), tmp_path / "out",
                data_docs=False)


def test_a_short_history_is_a_warning_that_names_the_instrument(book: Book,
                                                                tmp_path: Path) -> None:
    """VaR counts the missing days as no move: published, with a warning naming it."""
    inputs = _inputs(book, tmp_path)
    history = pl.read_parquet(inputs.history)
    last = history["date"].max()
    history.filter((pl.col("symbol") != "DLY") | (pl.col("date") == last)).write_parquet(
        inputs.history)
    result = run_eod(book, inputs, EodConfig(trade_date=DAY),
                     tmp_path / "out", data_docs=False)
    warned = [p for p in result.problems if p.check.endswith("short_history") or
              "fewer than 250 days" in p.message]
    assert len(warned) == 1 and warned[0].severity == "warning"
    assert "DLY: 1 returns" in warned[0].render()
    assert (tmp_path / "out" / "var.parquet").is_file()


def test_a_statement_line_sent_twice_is_a_break_not_a_stop(book: Book, tmp_path: Path) -> None:
    inputs = _inputs(book, tmp_path)
    statement = pl.read_parquet(inputs.statement)
    pl.concat([statement, statement.head(1)]).write_parquet(
        inputs.statement)
    result = run_eod(book, inputs, EodConfig(trade_date=DAY),
                     tmp_path / "out", data_docs=False)
    dup = result.tables["breaks"].filter(pl.col("break_type") == "duplicate")
    assert dup.select("source", "exec_id").rows() == [("theirs", statement["exec_id"][0])]
