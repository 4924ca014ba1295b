"""The core end to end: the sample trading day through the Rust engine.

``python -m mats.demo [--book DIR] [--out DIR]`` (``make demo``) loads a book folder with its
``day.yaml`` and orders (by default the shipped ``data/sample/``), decides every block order with
:class:`mats.Engine` at the day's ``as_of``, and prints

- a summary per strategy: orders placed in full or in part, placed nothing, refused at layer 1
  or layer 2, shares requested and placed;
- the reason codes that came up, where (layer 1, an allocation cap, layer 2) and how often;
- the refused and cut orders with their reasons: the code, the limit and the value that broke it.

It writes ``decisions.jsonl`` (the core's decisions, one JSON object a line) and
``summary.csv`` / ``summary.parquet`` (one row per order) under ``run/demo/``. Without a
terminal (CI, a pipe) it prints plain tables and no progress bar.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mats import codes
from mats.config import format_error, load_book, load_day, load_orders
from mats.engine import Engine, load_decision
from mats.errors import MatsError
from mats.models import BlockOrder, Book, Check, Decision

_PACKAGE_ROOT = Path(__file__).resolve().parent
_REPO = _PACKAGE_ROOT.parent.parent

PLACED_IN_FULL = "placed in full"
PLACED_IN_PART = "placed in part"
NOTHING_PLACED = "nothing placed"
REJECTED_L1 = "rejected, layer 1"
REJECTED_L2 = "rejected, layer 2"
OUTCOMES = (PLACED_IN_FULL, PLACED_IN_PART, NOTHING_PLACED, REJECTED_L1, REJECTED_L2)

_PERCENT = {codes.MAX_POSITION_PCT, codes.SECTOR_CAP, codes.FIRM_SECTOR_CONCENTRATION,
            codes.PRICE_COLLAR}
_MONEY = {codes.SETTLED_CASH, codes.BUYING_POWER, codes.MIN_TRADE_SIZE, codes.MAX_ORDER_NOTIONAL,
          codes.FIRM_GROSS_EXPOSURE, codes.FIRM_NET_EXPOSURE, codes.FIRM_BETA_DELTA}


def default_book_dir() -> Path:
    """The shipped sample book, ``data/sample/`` of the source tree."""
    return _REPO / "data" / "sample"


def default_out_dir() -> Path:
    """``run/demo/`` of the source tree, or of the working folder when installed elsewhere."""
    root = _REPO if (_REPO / "pyproject.toml").is_file() else Path.cwd()
    return root / "run" / "demo"


@dataclass(frozen=True)
class DemoResult:
    book: Book
    orders: list[BlockOrder]
    decisions: list[Decision]
    files: list[Path]


def outcome(d: Decision) -> str:
    """The order's fate in a few words: one of :data:`OUTCOMES`."""
    if d.stage == "l1":
        return REJECTED_L1
    if d.stage == "l2":
        return REJECTED_L2
    if d.placed_quantity == 0:
        return NOTHING_PLACED
    if d.placed_quantity < d.requested_quantity:
        return PLACED_IN_PART
    return PLACED_IN_FULL


def run_demo(book_dir: str | Path | None = None, out_dir: str | Path | None = None,
             console: Console | None = None) -> DemoResult:
    """Decides the day's orders over the book, prints the tables, writes the outputs.

    Raises :class:`mats.errors.MatsError` for a malformed book, day or orders file, or an order
    the engine cannot take as given.
    """
    book_dir = Path(book_dir) if book_dir is not None else default_book_dir()
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    console = console or _console()
    book = load_book(book_dir)
    day = load_day(book_dir / "day.yaml")
    orders = load_orders(book_dir / day.orders)
    console.print(f"[bold]MATS demo[/bold]: book {_short(book_dir)} ({len(book.instruments)} "
                  f"instruments, {len(book.mandates)} mandates, {len(book.accounts)} accounts); "
                  f"{len(orders)} block orders decided at {day.as_of.isoformat()}")
    if day.description:
        console.print(day.description)

    engine = Engine(book)
    decisions: list[Decision] = []
    raw: list[str] = []
    progress = Progress(TextColumn("deciding"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True,
                        disable=not console.is_terminal)
    with progress:
        task = progress.add_task("orders", total=len(orders))
        for i, order in enumerate(orders):
            try:
                native = engine.process(order, day.as_of)
            except MatsError as e:
                raise type(e)(f"{e.message} (order {order.order_id})",
                              (str(book_dir / day.orders), i, *e.loc)) from None
            raw.append(native.to_json())
            decisions.append(load_decision(native))
            progress.advance(task)

    console.print(_strategy_table(decisions))
    console.print(_codes_table(decisions))
    console.print(_refused_table(decisions))
    files = _write_outputs(out, orders, decisions, raw)
    console.print(f"wrote {', '.join(_short(p) for p in files)}")
    return DemoResult(book, orders, decisions, files)


def _console() -> Console:
    # Without a terminal rich falls back to 80 columns, which wraps the tables; COLUMNS wins.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 132
    return Console(width=width, highlight=False)


# -------------------------------------------------------------------------------- tables


def _strategy_table(decisions: list[Decision]) -> Table:
    t = Table(title="Orders by strategy", title_justify="left")
    t.add_column("strategy")
    t.add_column("orders", justify="right")
    for name in OUTCOMES:
        t.add_column(name, justify="right")
    t.add_column("shares requested", justify="right")
    t.add_column("shares placed", justify="right")
    t.add_column("placed", justify="right")
    t.add_column("notional placed", justify="right")

    def row(label: str, ds: list[Decision], *, end_section: bool = False) -> None:
        fates = Counter(outcome(d) for d in ds)
        requested = sum(d.requested_quantity for d in ds)
        placed = sum(d.placed_quantity for d in ds)
        notional = sum(d.placed_quantity * (d.live_price or d.reference_price) for d in ds)
        t.add_row(label, str(len(ds)), *(str(fates[o]) for o in OUTCOMES),
                  f"{requested:,}", f"{placed:,}",
                  f"{placed / requested:.0%}" if requested else "-", f"{notional:,.0f}",
                  end_section=end_section)

    strategies = sorted({d.strategy for d in decisions})
    for i, s in enumerate(strategies):
        row(s, [d for d in decisions if d.strategy == s], end_section=i == len(strategies) - 1)
    row("all", decisions)
    return t


def _code_uses(d: Decision) -> Iterable[tuple[str, str]]:
    """(where, code) of every check in a decision: layer 1, a binding cap, a layer-2 breach."""
    for c in d.l1_breaches:
        yield "layer 1", c.code
    for line in d.lines:
        if line.binding is not None:
            yield "allocation cap", line.binding.code
        for c in line.l2_breaches:
            yield "layer 2", c.code


def _codes_table(decisions: list[Decision], top: int = 15) -> Table:
    orders: Counter[tuple[str, str]] = Counter()
    uses: Counter[tuple[str, str]] = Counter()
    for d in decisions:
        seen = list(_code_uses(d))
        uses.update(seen)
        orders.update(set(seen))
    t = Table(title="Reason codes", title_justify="left")
    t.add_column("code")
    t.add_column("where")
    t.add_column("orders", justify="right")
    t.add_column("times (account lines)", justify="right")
    ranked = sorted(orders, key=lambda k: (-orders[k], k))
    for where_code in ranked[:top]:
        where, code = where_code
        t.add_row(code, where, str(orders[where_code]), str(uses[where_code]))
    if len(ranked) > top:
        t.caption = f"and {len(ranked) - top} more"
    return t


def _num(code: str, v: float | None) -> str:
    if v is None:
        return "-"
    if code in _PERCENT:
        return f"{v:.2f}%"
    if code in _MONEY:
        return f"{v:,.0f}"
    if code == codes.STALE_REFERENCE_PRICE:
        return f"{v:.1f}s"
    if code == codes.GROSS_LEVERAGE:
        return f"{v:.2f}x"
    return f"{v:,.2f}".removesuffix(".00")


def _check_text(c: Check) -> str:
    if c.limit is None or c.value is None:
        return c.code
    if c.code == codes.PRICE_NOT_ON_TICK:
        return f"{c.code} {_num(c.code, c.value)} (tick {_num(c.code, c.limit)})"
    if c.code == codes.KILL_SWITCH_REDUCING:
        return f"{c.code} (firm position {c.limit:,.0f} -> {c.value:,.0f})"
    return f"{c.code} {_num(c.code, c.value)} > {_num(c.code, c.limit)}"


def _grouped(checks: list[Check]) -> list[str]:
    """Per code: on how many account lines, the limit if all share one, the worst value."""
    out = []
    for code in dict.fromkeys(c.code for c in checks):
        same = [c for c in checks if c.code == code]
        limits = {c.limit for c in same if c.limit is not None}
        values = [c.value for c in same if c.value is not None]
        detail = []
        if len(limits) == 1:
            detail.append(f"limit {_num(code, next(iter(limits)))}")
        if values and code in _PERCENT:
            detail.append(f"worst {_num(code, max(values))}")
        out.append(f"{code} x{len(same)}" + (f" ({', '.join(detail)})" if detail else ""))
    return out


def _reasons(d: Decision) -> list[str]:
    if d.stage == "l1":
        return [_check_text(c) for c in d.l1_breaches]
    breaches = [c for line in d.lines for c in line.l2_breaches]
    if breaches:
        return [f"L2 {r}" for r in _grouped(breaches)]
    return _grouped([line.binding for line in d.lines if line.binding is not None])


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _refused_table(decisions: list[Decision]) -> Table:
    t = Table(title="Orders not placed in full", title_justify="left")
    t.add_column("order")
    t.add_column("strategy")
    t.add_column("trade")
    t.add_column("placed/asked", justify="right")
    t.add_column("outcome")
    t.add_column("reference / live", justify="right")
    t.add_column("reasons: code value > limit; code x account lines (L2: at the live price)")
    for d in decisions:
        fate = outcome(d)
        if fate == PLACED_IN_FULL:
            continue
        px = f"{d.reference_price:,.2f}"
        if d.live_price is not None:
            move = (d.live_price / d.reference_price - 1.0) * 100.0
            move = 0.0 if abs(move) < 0.05 else move  # no "-0.0%"
            px += f" / {d.live_price:,.2f} {move:+.1f}%"
        t.add_row(d.order_id, d.strategy, f"{d.side.value} {d.symbol}",
                  f"{d.placed_quantity:,}/{d.requested_quantity:,}", fate, px,
                  "\n".join(_reasons(d)) or "-")
    return t


# ------------------------------------------------------------------------------- outputs


def summary_frame(orders: list[BlockOrder], decisions: list[Decision]) -> pl.DataFrame:
    """One row per order: what was asked, what was decided, and the codes involved."""

    def joined(items: Iterable[str]) -> str:
        return ";".join(dict.fromkeys(items))

    rows = []
    for o, d in zip(orders, decisions, strict=True):
        rows.append({
            "order_id": d.order_id,
            "journey_id": d.journey_id,
            "strategy": d.strategy,
            "symbol": d.symbol,
            "side": d.side.value,
            "method": o.method.value,
            "status": d.status,
            "stage": d.stage,
            "outcome": outcome(d),
            "requested_quantity": d.requested_quantity,
            "placed_quantity": d.placed_quantity,
            "unplaced_quantity": d.unplaced_quantity,
            "reference_price": d.reference_price,
            "live_price": d.live_price,
            "accounts": sum(1 for line in d.lines if line.quantity > 0),
            "l1_codes": joined(c.code for c in d.l1_breaches),
            "binding_codes": joined(line.binding.code for line in d.lines
                                    if line.binding is not None),
            "l2_codes": joined(c.code for line in d.lines for c in line.l2_breaches),
        })
    schema = {"stage": pl.String, "live_price": pl.Float64}
    return pl.DataFrame(rows, schema_overrides=schema)


def _write_outputs(out: Path, orders: list[BlockOrder], decisions: list[Decision],
                   raw: list[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "decisions.jsonl"
    # the core's own JSON, re-encoded compactly so that each decision is one line
    jsonl.write_text("".join(json.dumps(json.loads(r)) + "\n" for r in raw), encoding="utf-8")
    frame = summary_frame(orders, decisions)
    csv_path = out / "summary.csv"
    parquet_path = out / "summary.parquet"
    frame.write_csv(csv_path)
    frame.write_parquet(parquet_path)
    return [jsonl, csv_path, parquet_path]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mats.demo",
        description="Decide the sample trading day's block orders with the Rust engine and "
                    "show what was placed, refused and why.")
    parser.add_argument("--book", metavar="DIR",
                        help=f"book folder with day.yaml and orders (default {default_book_dir()})")
    parser.add_argument("--out", metavar="DIR",
                        help=f"where to write the results (default {default_out_dir()})")
    args = parser.parse_args(argv)
    try:
        run_demo(args.book, args.out)
    except MatsError as e:
        print(f"mats.demo: error: {format_error(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"mats.demo: error: cannot write the results: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
