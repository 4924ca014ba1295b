"""Input and output table schemas, and reading an input file (CSV or Parquet) against one.

A :class:`Table` names its columns, their kinds and whether a cell may be empty. Reading checks
the file's structure (present, not empty, every column there, every cell of the column's kind)
and returns a typed polars DataFrame with one more column, ``_row``: the CSV line number (the
header is line 1) or the 1-based Parquet row number, so that a later check can say where a bad
value is. Content checks (nulls, ranges, known ids, duplicates) are Great Expectations' job
(:mod:`mats.batch.quality`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import polars as pl

from mats.batch.problems import Problem, Severity
from mats.errors import MatsError

__all__ = ["ROW", "Column", "Kind", "Loaded", "Table", "find_input", "input_file", "read_table"]

ROW = "_row"


class Kind(StrEnum):
    STR = "text"
    INT = "integer"
    FLOAT = "number"
    DATE = "date (YYYY-MM-DD)"
    DATETIME = "date-time with a UTC offset (ISO 8601)"


_DTYPES: dict[Kind, pl.DataType] = {
    Kind.STR: pl.String(),
    Kind.INT: pl.Int64(),
    Kind.FLOAT: pl.Float64(),
    Kind.DATE: pl.Date(),
    Kind.DATETIME: pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    doc: str
    nullable: bool = False

    @property
    def dtype(self) -> pl.DataType:
        return _DTYPES[self.kind]


@dataclass(frozen=True)
class Table:
    """A table's schema: its columns, the columns that identify a row, and what it holds."""

    name: str
    columns: tuple[Column, ...]
    doc: str
    key: tuple[str, ...] = ()

    @property
    def schema(self) -> dict[str, pl.DataType]:
        return {c.name: c.dtype for c in self.columns}

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def empty(self) -> pl.DataFrame:
        """No rows, the table's columns and ``_row``."""
        return pl.DataFrame(schema={**self.schema, ROW: pl.Int64()})

    def markdown(self) -> str:
        """The schema as a Markdown table (for ``docs/batch.md``)."""
        lines = ["| column | type | meaning |", "|---|---|---|"]
        for c in self.columns:
            kind = c.kind.value + (", may be empty" if c.nullable else "")
            lines.append(f"| `{c.name}` | {kind} | {c.doc} |")
        return "\n".join(lines)


@dataclass(frozen=True)
class Loaded:
    """A read input: the typed frame (``None`` when the file could not be used) and problems."""

    table: Table
    file: str
    frame: pl.DataFrame | None
    problems: tuple[Problem, ...]


def _problem(table: Table, file: str, check: str, message: str, column: str | None = None,
             rows: list[int] | None = None, count: int = 0,
             severity: Severity = Severity.CRITICAL) -> Problem:
    return Problem(input=table.name, file=file, severity=severity, check=check, column=column,
                   rows=rows or [], row_count=count, message=message)


def _parse(col: Column, raw: pl.Expr) -> pl.Expr:
    s = raw.str.strip_chars()
    s = pl.when(s == "").then(None).otherwise(s)
    match col.kind:
        case Kind.STR:
            return s
        case Kind.INT:
            return s.cast(pl.Int64, strict=False)
        case Kind.FLOAT:
            f = s.cast(pl.Float64, strict=False)
            return pl.when(f.is_finite()).then(f)  # NaN and infinity are not numbers here
        case Kind.DATE:
            return s.str.to_date("%Y-%m-%d", strict=False)
        case Kind.DATETIME:
            return s.str.to_datetime(strict=False, time_unit="us", time_zone="UTC")


def _compatible(col: Column, dtype: pl.DataType) -> bool:
    if dtype == pl.Null:  # a column with no value at all (every cell empty)
        return True
    if col.kind is Kind.STR:
        return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
    if col.kind is Kind.INT:
        return dtype.is_integer()
    if col.kind is Kind.FLOAT:
        return dtype.is_float() or dtype.is_integer()
    if col.kind is Kind.DATE:
        return dtype == pl.Date
    return isinstance(dtype, pl.Datetime) and dtype.time_zone is not None


def find_input(folder: Path, name: str) -> Path | None:
    """``<name>.parquet`` or ``<name>.csv`` in ``folder``, or ``None`` when neither is there.

    Both there is an error (:class:`~mats.errors.MatsError`): which one holds the day's data
    is not for the reader to guess.
    """
    found = [p for p in (folder / f"{name}.parquet", folder / f"{name}.csv") if p.is_file()]
    if len(found) > 1:
        raise MatsError(f"both {found[0].name} and {found[1].name} are in {folder}: "
                        f"remove the one that is not today's {name}")
    return found[0] if found else None


def input_file(folder: Path, name: str, required: bool) -> str | None:
    """The path to read ``name`` from in ``folder`` (see :func:`find_input`). When neither file
    is there: ``<name>.csv`` for a required input, which reading reports as "file not found",
    ``None`` for an optional one (left out)."""
    found = find_input(folder, name)
    if found is not None:
        return str(found)
    return str(folder / f"{name}.csv") if required else None


def read_table(path: str | Path, table: Table) -> Loaded:
    """Read ``path`` (``.csv`` or ``.parquet``) as ``table``; structure problems are critical.

    Checks, in order: the file exists and is readable, it is not empty, every column of the
    table is there (extra columns are a warning and are dropped), and every non-empty cell is of
    its column's kind. Empty cells become nulls; whether a null is allowed is checked later.
    """
    p = Path(path)
    file = str(p)
    if not p.is_file():
        what = "is a folder, expected a file" if p.is_dir() else "file not found"
        return Loaded(table, file, None, (_problem(table, file, "unreadable", what),))
    if p.stat().st_size < 4096 and not p.read_bytes().strip():
        return Loaded(table, file, None, (_problem(
            table, file, "empty_file",
            f"empty file: expected a header line {','.join(table.names)} and rows"),))
    parquet = p.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            raw = pl.read_parquet(p)
        else:
            raw = pl.read_csv(p, infer_schema=False, encoding="utf8")
            # blank lines at the end of the file (an editor's or a spreadsheet's) are no rows;
            # one in the middle still is, and is reported at its line
            blank = raw.select(pl.all_horizontal(
                pl.all().str.strip_chars().replace("", None).is_null())).to_series()
            filled = (~blank).arg_true()
            raw = raw.head(int(filled[-1]) + 1 if filled.len() else 0)
    except Exception as e:  # polars raises several classes for a file it cannot parse
        kind = "Parquet" if parquet else "CSV"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Loaded(table, file, None, (_problem(
            table, file, "unreadable", f"cannot read the file as {kind}: {first}"),))
    problems: list[Problem] = []
    # a header written "symbol, quantity" names the column "quantity"
    stripped = [c.strip() for c in raw.columns]
    if stripped != raw.columns and len(set(stripped)) == len(stripped):
        raw = raw.rename(dict(zip(raw.columns, stripped, strict=True)))
    missing = [n for n in table.names if n not in raw.columns]
    if missing:
        s = "s" if len(missing) > 1 else ""
        problems.append(_problem(
            table, file, "missing_column",
            f"missing column{s} {', '.join(missing)}; the columns are {', '.join(table.names)}",
            column=missing[0]))
        return Loaded(table, file, None, tuple(problems))
    extra = [c for c in raw.columns if c not in table.names]
    if extra:
        problems.append(_problem(
            table, file, "unknown_column",
            f"unknown column{'s' if len(extra) > 1 else ''} {', '.join(extra)} ignored; "
            f"the columns are {', '.join(table.names)}", column=extra[0],
            severity=Severity.WARNING))
    first_row = 1 if parquet else 2
    raw = raw.select(table.names).with_row_index(ROW, offset=first_row).with_columns(
        pl.col(ROW).cast(pl.Int64))
    if parquet:
        for col in table.columns:
            dtype = raw.schema[col.name]
            if not _compatible(col, dtype):
                problems.append(_problem(
                    table, file, "wrong_type",
                    f"the column holds {dtype}, expected {col.kind.value}", column=col.name))
        if any(p.check == "wrong_type" for p in problems):
            return Loaded(table, file, None, tuple(problems))
        # not strict: an unsigned value beyond the signed 64-bit range becomes null and is
        # reported below with its row
        typed = raw.with_columns([
            (pl.col(c.name).cast(pl.String) if c.kind is Kind.STR
             else pl.col(c.name).cast(c.dtype, strict=False)) for c in table.columns])
        for col in table.columns:
            if col.kind is Kind.FLOAT:
                bad = typed.filter(pl.col(col.name).is_not_null()
                                   & ~pl.col(col.name).is_finite())
                what = "a finite number"
            elif col.kind is Kind.INT:
                bad = raw.filter(raw[col.name].is_not_null() & typed[col.name].is_null())
                what = "a 64-bit signed integer"
            else:
                continue
            if bad.height:
                problems.append(_problem(
                    table, file, "wrong_type",
                    f"{bad.height} value{'s are' if bad.height > 1 else ' is'} not {what}: "
                    f"{', '.join(repr(v) for v in bad[col.name].head(3).to_list())}",
                    column=col.name, rows=bad[ROW].head(5).to_list(), count=bad.height))
        if any(p.check == "wrong_type" for p in problems):
            return Loaded(table, file, None, tuple(problems))
        return Loaded(table, file, typed, tuple(problems))
    typed = raw.with_columns([_parse(c, pl.col(c.name)).alias(c.name) for c in table.columns])
    for col in table.columns:
        if col.kind is Kind.STR:
            continue
        bad = raw.filter(
            pl.col(col.name).str.strip_chars().fill_null("").ne("")
            & _parse(col, pl.col(col.name)).is_null())
        if bad.height:
            values = ", ".join(repr(v) for v in bad[col.name].head(3).to_list())
            problems.append(_problem(
                table, file, "wrong_type",
                f"{bad.height} value{'s are' if bad.height > 1 else ' is'} not "
                f"{'an ' if col.kind is Kind.INT else 'a '}{col.kind.value}: {values}",
                column=col.name, rows=bad[ROW].head(5).to_list(), count=bad.height))
    if any(p.check == "wrong_type" for p in problems):
        return Loaded(table, file, None, tuple(problems))
    return Loaded(table, file, typed, tuple(problems))
