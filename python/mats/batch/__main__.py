"""``python -m mats.batch``: run the start or end of day from a folder of input files.

::

    python -m mats.batch sod BOOK_DIR IN_DIR --as-of 2025-06-16 --out OUT [--generate]
    python -m mats.batch eod BOOK_DIR IN_DIR --date 2025-06-13 --out OUT [--generate]

``IN_DIR`` holds one file per input, named after it (``positions.csv`` or
``positions.parquet``, ...; see ``docs/batch.md``). ``--generate`` first writes the
deterministic sample inputs for the book into ``IN_DIR``. The start of day writes
``sod_state.json``, ``sod_accounts.parquet`` and ``sod_problems.json`` into ``OUT`` (a bad input
is quarantined in ``OUT/quarantine``); the end of day its Parquet tables, ``report.html`` and
``data_docs/``.

Exit status: 0 done (warnings are printed); 1 a critical problem in the inputs (each printed
with file, column and rows; nothing was built on it); 2 bad arguments or an unusable book.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from mats.batch.eod import EodConfig, EodInputs, run_eod
from mats.batch.eod_tables import EOD_TABLES
from mats.batch.fixtures import write_eod_inputs, write_sod_inputs
from mats.batch.problems import BatchInputError, Problem, render_problems
from mats.batch.sod import SOD_REQUIRED, SOD_TABLES, SodConfig, SodInputs, run_sod
from mats.batch.tables import input_file
from mats.config import format_error, load_book
from mats.errors import MatsError

EXIT_OK, EXIT_CRITICAL, EXIT_USAGE = 0, 1, 2


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mats.batch", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sod", help="start of day: validate custodian files, build the state")
    s.add_argument("book", type=Path, help="the book folder (yesterday's end state)")
    s.add_argument("inputs", type=Path, help="folder of the day's input files")
    s.add_argument("--as-of", type=_date, required=True, help="the start-of-day date")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--generate", action="store_true", help="write sample inputs first")
    e = sub.add_parser("eod", help="end of day: reconcile, re-allocate, attribute, report")
    e.add_argument("book", type=Path, help="the book folder (the start-of-day state)")
    e.add_argument("inputs", type=Path, help="folder of the day's input files")
    e.add_argument("--date", type=_date, required=True, help="the trade date")
    e.add_argument("--out", type=Path, required=True, help="output folder")
    e.add_argument("--generate", action="store_true", help="write sample inputs first")
    return p


def _print_warnings(problems: Sequence[Problem]) -> None:
    warnings = [p for p in problems if p.severity.value == "warning"]
    if warnings:
        print(render_problems(warnings), file=sys.stderr)


def _sod(args: argparse.Namespace) -> int:
    book = load_book(args.book)
    if args.generate:
        write_sod_inputs(book, args.as_of, args.inputs)
    inputs = SodInputs(**{t.name: input_file(args.inputs, t.name, t.name in SOD_REQUIRED)
                          for t in SOD_TABLES})
    result = run_sod(book, inputs, SodConfig(as_of=args.as_of),
                     quarantine_dir=args.out / "quarantine", docs_dir=args.out / "data_docs")
    paths = result.write(args.out)
    _print_warnings(result.problems)
    if not result.ok:
        print(str(BatchInputError(result.problems)), file=sys.stderr)
        for q in result.quarantined:
            print(f"quarantined: {q}", file=sys.stderr)
        return EXIT_CRITICAL
    print(f"start of day {args.as_of}: {len(result.accounts)} accounts -> {paths['state']}")
    return EXIT_OK


def _eod(args: argparse.Namespace) -> int:
    book = load_book(args.book)
    if args.generate:
        write_eod_inputs(book, args.date, args.inputs)
    inputs = EodInputs(**{t.name: input_file(args.inputs, t.name, True) for t in EOD_TABLES})
    try:
        result = run_eod(book, inputs, EodConfig(trade_date=args.date), args.out)
    except BatchInputError as err:
        print(str(err), file=sys.stderr)
        return EXIT_CRITICAL
    _print_warnings(result.problems)
    print(f"end of day {args.date}: report {result.report}; data docs {result.data_docs}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has reported
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        code: int = _sod(args) if args.command == "sod" else _eod(args)
        return code
    except MatsError as e:
        print(f"mats.batch: error: {format_error(e)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
