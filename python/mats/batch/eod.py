"""End of day: reconcile, re-allocate shortfalls, attribute and measure costs and risk, report.

:func:`run_eod` reads the day's inputs (schemas in :mod:`mats.batch.eod_tables`), computes

* ``breaks`` - our executions against the broker's statement (:mod:`mats.batch.recon`);
* ``reallocation`` and ``topups`` - every lot's final split by fill policy and the next day's
  top-ups (:mod:`mats.batch.reallocation`);
* ``tca_lots`` and ``tca`` - implementation shortfall and slippage per lot, then per account,
  strategy, allocator, gateway and time-of-day bucket (:mod:`mats.batch.tca`);
* ``brinson`` and ``allocation_effect`` - sector attribution against the benchmark per account
  and for the firm, drift and cash drag (:mod:`mats.batch.attribution`);
* ``var`` and ``var_backtest`` - historical and delta-normal VaR, the backtest and its zone
  (:mod:`mats.batch.risk`),

writes each as Parquet into the output folder, validates the outputs with Great Expectations
(Data Docs in ``data_docs/``) and writes ``report.html``, a self-contained page that links to
the Data Docs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from mats.batch import report
from mats.batch.attribution import allocation_effect, brinson_fachler, sector_weights
from mats.batch.book import accounts_frame, instruments_frame
from mats.batch.eod_tables import EOD_TABLES
from mats.batch.problems import BatchInputError, Problem, Severity, critical
from mats.batch.quality import Quality, Rule
from mats.batch.reallocation import reallocate
from mats.batch.recon import BREAK_TYPES, reconcile
from mats.batch.risk import value_at_risk
from mats.batch.tables import ROW, read_table
from mats.batch.tca import tca
from mats.models import Book, Frozen

__all__ = ["EodConfig", "EodInputs", "EodResult", "compute_eod", "load_eod_inputs", "run_eod"]

C, W = Severity.CRITICAL, Severity.WARNING


class EodInputs(Frozen):
    """The day's end-of-day input files (CSV or Parquet)."""

    blocks: str
    lots: str
    executions: str
    fills: str
    statement: str
    market: str
    holdings: str
    benchmark: str
    targets: str
    history: str


class EodConfig(Frozen):
    """Settings of an end-of-day run.

    ``next_date``: the day top-ups are for (default: the next business day).
    ``price_tolerance``: the largest price or fee difference that is not a break.
    """

    trade_date: date
    next_date: date | None = None
    time_zone: str = "America/New_York"
    bucket_minutes: int = 30
    price_tolerance: float = 0.005
    cash_return: float = 0.0
    var_window: int = 250


@dataclass(frozen=True)
class EodResult:
    """The output tables, where they were written, the report and the output checks."""

    tables: dict[str, pl.DataFrame]
    paths: dict[str, Path]
    report: Path | None
    data_docs: Path | None
    problems: tuple[Problem, ...]


def _read(inputs: EodInputs) -> tuple[dict[str, pl.DataFrame], dict[str, str], list[Problem]]:
    frames: dict[str, pl.DataFrame] = {}
    files: dict[str, str] = {}
    problems: list[Problem] = []
    for table in EOD_TABLES:
        ld = read_table(getattr(inputs, table.name), table)
        problems += ld.problems
        files[table.name] = ld.file
        if ld.frame is not None:
            frames[table.name] = ld.frame
    return frames, files, problems


def load_eod_inputs(inputs: EodInputs) -> dict[str, pl.DataFrame]:
    """Every input read against its schema; :class:`BatchInputError` if one cannot be used.

    Only the structure is checked here (:func:`run_eod` also checks the content).
    """
    frames, _, problems = _read(inputs)
    if critical(problems):
        raise BatchInputError(problems)
    return {n: f.drop(ROW) for n, f in frames.items()}


def _check_inputs(q: Quality, book: Book, f: dict[str, pl.DataFrame], files: dict[str, str],
                  config: EodConfig) -> list[Problem]:
    """Content checks of the end-of-day inputs: each one that fails is critical."""
    accounts = [a.account_id for a in book.accounts]
    symbols = [i.symbol for i in book.instruments]
    problems: list[Problem] = []
    for table in EOD_TABLES:
        frame = f[table.name]
        rules = [Rule("ExpectColumnValuesToNotBeNull", {"column": c.name},
                      f"empty {c.name} (every row needs one)")
                 for c in table.columns if not c.nullable]
        if table.name == "statement":
            pass  # a line the broker sent twice is a break of the reconciliation, not a stop
        elif len(table.key) == 1:
            rules.append(Rule("ExpectColumnValuesToBeUnique", {"column": table.key[0]},
                              f"duplicate rows: {table.key[0]} appears more than once"))
        else:
            rules.append(Rule("ExpectCompoundColumnsToBeUnique", {"column_list": list(table.key)},
                              f"duplicate rows: {', '.join(table.key)} appear more than once"))
        names = table.names
        if "account_id" in names:
            rules.append(Rule("ExpectColumnValuesToBeInSet",
                              {"column": "account_id", "value_set": accounts},
                              "account not in the book"))
        if "symbol" in names and table.name not in ("history", "benchmark", "market"):
            rules.append(Rule("ExpectColumnValuesToBeInSet",
                              {"column": "symbol", "value_set": symbols},
                              "instrument not in the book"))
        if "side" in names:
            rules.append(Rule("ExpectColumnValuesToBeInSet",
                              {"column": "side", "value_set": ["buy", "sell"]},
                              "side must be buy or sell"))
        for col, lo, what in (("quantity", 1, "quantity must be positive"),
                              ("allocated", 1, "allocated quantity must be positive"),
                              ("price", 0, "price must be positive"),
                              ("decision_price", 0, "price must be positive"),
                              ("arrival_price", 0, "price must be positive"),
                              ("vwap", 0, "price must be positive"),
                              ("close_price", 0, "price must be positive"),
                              ("prev_close", 0, "price must be positive"),
                              ("close", 0, "price must be positive")):
            if col in names and not (table.name == "holdings" and col == "quantity"):
                rules.append(Rule("ExpectColumnValuesToBeBetween",
                                  {"column": col, "min_value": lo, "strict_min": lo == 0},
                                  what))
        if "fee" in names:
            rules.append(Rule("ExpectColumnValuesToBeBetween", {"column": "fee", "min_value": 0},
                              "negative fee"))
        if table.name in ("benchmark", "targets"):
            rules.append(Rule("ExpectColumnValuesToBeBetween",
                              {"column": "weight", "min_value": 0, "max_value": 1
                               if table.name == "targets" else None},
                              "weight out of range"))
        problems += q.validate(f"eod_input_{table.name}", files[table.name], frame, rules,
                               table.name)
    # references between inputs, as derived columns (a value set of every execution id would
    # be as large as the day)
    def unknown(frame: pl.DataFrame, col: str, known: pl.DataFrame, alias: str,
                by: tuple[str, ...] = ()) -> pl.DataFrame:
        keys = list(by or (col,))
        ok = known.select(keys).unique().with_columns(pl.lit(True).alias("_known"))
        shown = pl.format("/".join("{}" for _ in keys), *keys) if len(keys) > 1 else pl.col(col)
        return frame.join(ok, on=keys, how="left", maintain_order="left").select(
            ROW, pl.when(pl.col("_known").is_null()).then(shown).alias(alias))

    fills_refs = unknown(f["fills"], "exec_id", f["executions"], "unknown_exec_id",
                         by=("gateway", "exec_id")).with_columns(
        unknown(f["fills"], "order_id", f["blocks"], "unknown_order_id")["unknown_order_id"])
    problems += q.validate("eod_input_fills_refs", files["fills"], fills_refs, [
        Rule("ExpectColumnValuesToBeNull", {"column": "unknown_exec_id"},
             "fill of an execution that is not in the executions file (gateway/exec_id)"),
        Rule("ExpectColumnValuesToBeNull", {"column": "unknown_order_id"},
             "fill of a block that is not in the blocks file")], "fills")
    problems += q.validate("eod_input_lots_refs", files["lots"],
                           unknown(f["lots"], "order_id", f["blocks"], "unknown_order_id"), [
        Rule("ExpectColumnValuesToBeNull", {"column": "unknown_order_id"},
             "lot of a block that is not in the blocks file")], "lots")
    needed = pl.concat([f["holdings"].select("symbol"), f["blocks"].select("symbol")]).unique()
    unpriced = needed.join(f["market"].select("symbol"), on="symbol", how="anti")
    problems += q.validate("eod_input_market_cover", files["market"], unpriced.select(
        pl.col("symbol").alias("unpriced")), [
        Rule("ExpectColumnValuesToBeNull", {"column": "unpriced"},
             "an instrument held or traded today has no closing price")], "market")
    # the benchmark's return and sector weights need every constituent's close and sector
    constituents = f["benchmark"].select("symbol").unique()
    problems += q.validate("eod_input_benchmark_cover", files["benchmark"], pl.concat([
        constituents.join(f["market"].select("symbol"), on="symbol", how="anti")
        .select(pl.col("symbol").alias("unpriced"), pl.lit(None, pl.String).alias("no_sector")),
        constituents.filter(~pl.col("symbol").is_in(symbols))
        .select(pl.lit(None, pl.String).alias("unpriced"), pl.col("symbol").alias("no_sector")),
    ]), [
        Rule("ExpectColumnValuesToBeNull", {"column": "unpriced"},
             "a benchmark constituent has no closing price in the market file"),
        Rule("ExpectColumnValuesToBeNull", {"column": "no_sector"},
             "a benchmark constituent is not in the book's instruments (no sector)")],
        "benchmark")
    no_history = needed.join(f["history"].select("symbol").unique(), on="symbol", how="anti")
    problems += q.validate("eod_input_history_cover", files["history"], no_history.select(
        pl.col("symbol").alias("no_returns")), [
        Rule("ExpectColumnValuesToBeNull", {"column": "no_returns"},
             "an instrument held or traded today has no return history")], "history")
    # a short history counts the missing days as no move: that instrument's risk is understated
    short = (needed.join(f["history"].group_by("symbol").agg(pl.len().alias("days")),
                         on="symbol", how="inner")
             .filter(pl.col("days") < config.var_window).sort("symbol"))
    problems += q.validate("eod_input_history_depth", files["history"], short.select(
        pl.format("{}: {} returns", "symbol", "days").alias("short_history")), [
        Rule("ExpectColumnValuesToBeNull", {"column": "short_history"},
             f"an instrument held or traded today has fewer than {config.var_window} days of "
             f"returns: VaR counts its missing days as no move", W)], "history")
    days = f["history"]["date"].n_unique()
    if days < config.var_window:
        problems.append(Problem(
            input="history", file=files["history"], severity=C, check="history_length",
            column="date", message=f"VaR needs {config.var_window} days of returns, the file "
                                   f"has {days}"))
    return problems


def next_business_day(d: date) -> date:
    """The first business day (Monday to Friday) after ``d``, which may itself be a weekend
    day: a day run on a Saturday or a Sunday tops up on the Monday."""
    # rolled back to a business day first: polars refuses to count from a weekend day
    out: date = pl.select(pl.lit(d).dt.add_business_days(1, roll="backward")).item()
    return out


def compute_eod(book: Book, f: dict[str, pl.DataFrame], config: EodConfig,
                accounts: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """Every output table from the input frames (keys as :class:`EodInputs`).

    ``accounts``: ``account_id, cash, net_liq`` at the start of the day (default: the book's
    accounts, which are the start-of-day state when the book was loaded from it).
    """
    if accounts is None:
        accounts = pl.DataFrame({"account_id": [a.account_id for a in book.accounts],
                                 "cash": [a.cash for a in book.accounts],
                                 "net_liq": [a.net_liq for a in book.accounts]})
    instruments = instruments_frame(book)
    out: dict[str, pl.DataFrame] = {}
    out["breaks"] = reconcile(f["executions"], f["statement"], f["fills"],
                              config.price_tolerance)
    out["reallocation"], out["topups"] = reallocate(
        f["lots"], f["fills"], f["blocks"], accounts_frame(book), instruments,
        config.next_date or next_business_day(config.trade_date))
    out["tca_lots"], out["tca"] = tca(f["blocks"], f["lots"], f["executions"], f["fills"],
                                      config.time_zone, config.bucket_minutes)
    sw = sector_weights(f["holdings"], f["market"], instruments, f["benchmark"])
    out["brinson"] = brinson_fachler(sw)
    firm = out["brinson"].filter(pl.col("account_id") == "FIRM")
    rb = float(firm["Rb"][0]) if firm.height else 0.0
    out["allocation_effect"] = allocation_effect(f["holdings"], accounts, f["market"],
                                                 f["targets"], rb, config.cash_return)
    traded = (f["fills"].join(f["blocks"].select("order_id", "symbol", "side"), on="order_id")
              .select("account_id", "symbol",
                      pl.when(pl.col("side") == "buy").then(pl.col("quantity"))
                      .otherwise(-pl.col("quantity")).alias("quantity")))
    eod_pos = (pl.concat([f["holdings"].select("account_id", "symbol", "quantity"), traded])
               .group_by("account_id", "symbol").agg(pl.col("quantity").sum()))
    exposures = eod_pos.join(f["market"].select("symbol", "close"), on="symbol").select(
        "account_id", "symbol", (pl.col("quantity") * pl.col("close")).alias("exposure"))
    var = value_at_risk(exposures, f["history"], config.var_window)
    out["var"], out["var_backtest"] = var.table, var.backtest
    return out


def _check_outputs(q: Quality, t: dict[str, pl.DataFrame]) -> list[Problem]:
    problems: list[Problem] = []
    lots = t["tca_lots"].select(
        "order_id", "account_id", "shortfall",
        (pl.col("shortfall") - pl.col("delay") - pl.col("execution") - pl.col("opportunity")
         - pl.col("fees")).alias("residual"), (pl.col("filled") > pl.col("allocated"))
        .alias("overfilled"))
    problems += q.validate("eod_tca_lots", "tca_lots.parquet", lots, [
        Rule("ExpectColumnValuesToNotBeNull", {"column": "shortfall"},
             "a lot's shortfall could not be computed (missing block or prices)"),
        Rule("ExpectColumnValuesToBeBetween",
             {"column": "residual", "min_value": -1e-6, "max_value": 1e-6},
             "delay + execution + opportunity + fees differs from the shortfall"),
        Rule("ExpectColumnValuesToBeInSet", {"column": "overfilled", "value_set": [False]},
             "a lot filled beyond its allocation"),
    ])
    problems += q.validate("eod_tca", "tca.parquet", t["tca"], [
        Rule("ExpectColumnValuesToBeInSet", {"column": "dimension", "value_set": [
            "account_id", "strategy", "allocator", "gateway", "bucket", "firm"]},
             "unknown dimension"),
        Rule("ExpectColumnValuesToBeBetween", {"column": "paper_notional", "min_value": 0},
             "negative paper notional"),
        Rule("ExpectColumnValuesToBeBetween",
             {"column": "fill_rate", "min_value": 0, "max_value": 1}, "fill rate beyond 0-1"),
    ])
    problems += q.validate("eod_breaks", "breaks.parquet", t["breaks"], [
        Rule("ExpectColumnValuesToBeInSet",
             {"column": "break_type", "value_set": list(BREAK_TYPES)}, "unknown break type"),
        Rule("ExpectTableRowCountToEqual", {"value": 0},
             "the broker's statement and our books differ: breaks to investigate", W),
    ])
    realloc = t["reallocation"].group_by("order_id").agg(
        (pl.col("target").sum() != pl.col("filled").sum()).alias("unbalanced"),
        ((pl.col("target") < 0) | (pl.col("target") > pl.col("allocated"))).any()
        .alias("target_out_of_range"))
    problems += q.validate("eod_reallocation", "reallocation.parquet", realloc, [
        Rule("ExpectColumnValuesToBeInSet", {"column": "unbalanced", "value_set": [False]},
             "a block's final split does not add up to its fills"),
        Rule("ExpectColumnValuesToBeInSet",
             {"column": "target_out_of_range", "value_set": [False]},
             "an account's final fill is negative or beyond its allocation"),
    ])
    bf = t["brinson"].group_by("account_id").agg(
        (pl.col("total").sum() - (pl.col("Rp").first() - pl.col("Rb").first())).alias("gap"),
        pl.col("wp").sum().alias("wp_sum"))
    problems += q.validate("eod_brinson", "brinson.parquet", bf, [
        Rule("ExpectColumnValuesToBeBetween",
             {"column": "gap", "min_value": -1e-9, "max_value": 1e-9},
             "the sector effects do not add up to Rp - Rb"),
        Rule("ExpectColumnValuesToBeBetween",
             {"column": "wp_sum", "min_value": 1 - 1e-9, "max_value": 1 + 1e-9},
             "portfolio weights do not sum to 1"),
    ])
    problems += q.validate("eod_var", "var.parquet", t["var"], [
        Rule("ExpectColumnValuesToNotBeNull", {"column": "var"}, "VaR could not be computed"),
        Rule("ExpectColumnValuesToBeBetween", {"column": "var", "min_value": 0},
             "negative VaR: the window holds no loss at that level", W),
        Rule("ExpectColumnValuesToBeInSet",
             {"column": "zone", "value_set": ["green", "yellow", "red"]}, "unknown zone"),
        Rule("ExpectColumnValuesToBeInSet", {"column": "zone", "value_set": ["green"]},
             "backtest outside the green zone", W),
    ])
    return problems


def _section_tca(t: pl.DataFrame) -> str:
    firm = t.filter(pl.col("dimension") == "firm").row(0, named=True)
    parts = [report.bar_chart(["delay", "execution", "opportunity", "fees"],
                              [firm["delay"], firm["execution"], firm["opportunity"],
                               firm["fees"]], "Firm implementation shortfall by component",
                              " $")]
    for dim, title in (("strategy", "strategy"), ("allocator", "allocator"),
                       ("gateway", "gateway"), ("bucket", "time of day (arrival)")):
        d = t.filter(pl.col("dimension") == dim, pl.col("shortfall_bps").is_not_null()).sort("key")
        parts.append(report.bar_chart(d["key"].to_list(), d["shortfall_bps"].to_list(),
                                      f"Shortfall by {title}, bps", " bps"))
    cols = ["dimension", "key", "lots", "paper_notional", "delay", "execution", "opportunity",
            "fees", "shortfall", "shortfall_bps", "arrival_slippage_bps", "vwap_slippage_bps",
            "fill_rate"]
    parts.append(report.html_table(t.filter(pl.col("dimension") != "account_id")
                                   .select(cols), max_rows=200))
    parts.append("<h3>Accounts with the largest shortfall (bps)</h3>")
    parts.append(report.html_table(t.filter(pl.col("dimension") == "account_id")
                                   .sort("shortfall_bps", descending=True).select(cols),
                                   max_rows=15))
    return "".join(parts)


def _section_brinson(b: pl.DataFrame) -> str:
    firm = b.filter(pl.col("account_id") == "FIRM").sort("sector")
    if firm.height == 0:
        return '<p class="note">No holdings.</p>'
    chart = report.grouped_bar_chart(
        firm["sector"].to_list(),
        {k: (firm[k] * 1e4).to_list() for k in ("allocation", "selection", "interaction")},
        "Firm sector effects against the benchmark, bps", " bps")
    head = firm.row(0, named=True)
    note = (f'<p>Firm return {head["Rp"] * 100:.3f} %, benchmark {head["Rb"] * 100:.3f} %, '
            f'active {(head["Rp"] - head["Rb"]) * 1e4:.2f} bps.</p>')
    return note + chart + report.html_table(
        firm.select("sector", "wp", "wb", "rp", "rb", "allocation", "selection",
                    "interaction", "total"), digits=5)


def _section_var(v: pl.DataFrame, bt: pl.DataFrame) -> str:
    firm = v.filter(pl.col("scope") == "firm").select(
        "method", "level", "var", "exposure", "backtest_days", "exceptions", "zone")
    parts = [report.html_table(firm)]
    if bt.height:
        marks = [i for i, (p, q) in enumerate(zip(bt["pnl"], bt["var99"], strict=True))
                 if p < -q]
        parts.append(report.line_chart(
            [str(d) for d in bt["date"].to_list()],
            {"firm P&L (today's positions)": bt["pnl"].to_list(),
             "-VaR 99 % (previous 250 days)": (-bt["var99"]).to_list()},
            "Backtest: hypothetical daily P&L against the 99 % historical VaR", marks))
    acct = (v.filter((pl.col("scope") == "account") & (pl.col("method") == "historical")
                     & (pl.col("level") == 0.99))
            .sort("var", descending=True)
            .select("account_id", "var", "exposure", "exceptions", "zone"))
    parts.append("<h3>Accounts by 99 % historical VaR</h3>")
    parts.append(report.html_table(acct, max_rows=15))
    return "".join(parts)


def _write_report(path: Path, config: EodConfig, t: dict[str, pl.DataFrame],
                  problems: list[Problem], docs: Path | None, counts: dict[str, int]) -> None:
    firm_tca = t["tca"].filter(pl.col("dimension") == "firm").row(0, named=True)
    fv = t["var"].filter((pl.col("scope") == "firm") & (pl.col("method") == "historical")
                         & (pl.col("level") == 0.99)).row(0, named=True)
    zone = fv["zone"] or "n/a"
    tiles = [("trade date", str(config.trade_date)), ("blocks", f"{counts['blocks']:,}"),
             ("fills", f"{counts['fills']:,}"), ("breaks", f"{t['breaks'].height:,}"),
             ("shortfall", "n/a" if firm_tca["shortfall_bps"] is None
              else f"{firm_tca['shortfall_bps']:.1f} bps"),
             ("firm VaR 99 %", f"{fv['var']:,.0f}"),
             ("backtest", f'<span class="{zone}">{zone}</span> ({fv["exceptions"]} exc.)'),
             ("top-ups", f"{t['topups'].height:,}")]
    adjust = t["reallocation"].filter(pl.col("adjustment") != 0)
    link = ""
    if docs is not None:
        rel = docs.relative_to(path.parent) if docs.is_relative_to(path.parent) else docs
        link = (f'<p>Every output was validated with Great Expectations: '
                f'<a href="{rel.as_posix()}">Data Docs</a> (its pages are Great Expectations\' '
                f'own).</p>')
    checks = "".join(f"<li class=\"{'fail' if p.severity is C else ''}\">{p.render()}</li>"
                     for p in problems) or "<li>All output checks passed.</li>"
    sections = [
        ("Reconciliation against the broker's statement", report.html_table(
            t["breaks"], max_rows=100)),
        ("Shortfall re-allocation", f"<p>{adjust.height} lot(s) whose final split differs "
         f"from what was booked; {t['topups'].height} top-up(s) for the next day.</p>"
         + report.html_table(adjust) + "<h3>Top-ups</h3>" + report.html_table(t["topups"])),
        ("Transaction costs (implementation shortfall, Perold 1988)",
         _section_tca(t["tca"])),
        ("Sector attribution (Brinson-Fachler 1985)", _section_brinson(t["brinson"])),
        ("Allocation effect: drift from targets and cash drag", report.html_table(
            t["allocation_effect"].sort("drift", descending=True), max_rows=15, digits=4)),
        ("Value at risk", _section_var(t["var"], t["var_backtest"])),
        ("Data quality", link + f"<ul>{checks}</ul>"),
    ]
    path.write_text(report.page(f"MATS end of day {config.trade_date}", sections, tiles),
                    encoding="utf-8")


def run_eod(book: Book, inputs: EodInputs, config: EodConfig, out_dir: str | Path, *,
            accounts: pl.DataFrame | None = None, data_docs: bool = True) -> EodResult:
    """The whole end of day: read and check the inputs, compute, write Parquet, check the
    outputs, report.

    Raises :class:`BatchInputError` when an input cannot be read as its schema says or fails a
    content check (nulls, duplicates, unknown accounts or instruments, non-positive quantities
    or prices, fills of unknown executions, unpriced instruments, too short a history); nothing
    is written then but the Data Docs of the input checks. Warnings and output check failures
    are returned in :attr:`EodResult.problems` (and shown in the report).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    quality = Quality(out / "data_docs" if data_docs else None)
    raw, files, read_problems = _read(inputs)
    if critical(read_problems):
        raise BatchInputError(read_problems)
    input_problems = _check_inputs(quality, book, raw, files, config)
    if critical(input_problems):
        quality.build_docs()
        raise BatchInputError([*read_problems, *input_problems])
    frames = {n: f.drop(ROW) for n, f in raw.items()}
    tables = compute_eod(book, frames, config, accounts)
    paths: dict[str, Path] = {}
    for name, df in tables.items():
        paths[name] = out / f"{name}.parquet"
        df.write_parquet(paths[name])
    problems = [*read_problems, *input_problems, *_check_outputs(quality, tables)]
    docs = quality.build_docs()
    counts = {"blocks": frames["blocks"].height, "fills": frames["fills"].height}
    (out / "eod_problems.json").write_text(json.dumps(
        [p.model_dump(mode="json") for p in problems], indent=1) + "\n")
    report_path = out / "report.html"
    _write_report(report_path, config, tables, problems, docs, counts)
    summary: dict[str, Any] = {"trade_date": str(config.trade_date), **counts,
                               "breaks": tables["breaks"].height,
                               "topups": tables["topups"].height}
    (out / "eod_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return EodResult(tables, paths, report_path, docs, tuple(problems))
