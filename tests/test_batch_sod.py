"""Start of day: generated custodian files build the state; every kind of bad input is refused
with a message naming the file, column and line, and nothing is built on it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from mats.batch import BatchInputError, Severity
from mats.batch.fixtures import write_sod_inputs
from mats.batch.sod import SodConfig, SodInputs, SodResult, run_sod
from mats.config import load_book
from mats.models import Book

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
AS_OF = date(2025, 6, 16)  # a Monday: yesterday's close is Friday 13 June


@pytest.fixture(scope="module")
def book() -> Book:
    return load_book(SAMPLE)


def _run(book: Book, inputs: SodInputs, tmp: Path) -> SodResult:
    return run_sod(book, inputs, SodConfig(as_of=AS_OF), quarantine_dir=tmp / "quarantine")


@pytest.fixture(scope="module", params=["csv", "parquet"])
def generated(book: Book, tmp_path_factory: pytest.TempPathFactory,
              request: pytest.FixtureRequest) -> tuple[str, SodInputs, SodResult, Path]:
    tmp = tmp_path_factory.mktemp(f"sod-{request.param}")
    inputs = write_sod_inputs(book, AS_OF, tmp / "in", fmt=request.param)
    return request.param, inputs, _run(book, inputs, tmp), tmp


def test_generated_inputs_build_the_state(
        book: Book, generated: tuple[str, SodInputs, SodResult, Path]) -> None:
    fmt, inputs, result, tmp_path = generated
    assert result.ok, result.problems
    assert [p for p in result.problems if p.severity is Severity.CRITICAL] == []
    by_id = {a.account_id: a for a in result.accounts}
    assert list(by_id) == [a.account_id for a in book.accounts]
    for ref in book.accounts:
        got = by_id[ref.account_id]
        # the ledger was written so that its balance and settled part are yesterday's
        assert got.cash == pytest.approx(ref.cash, abs=0.011)
        assert got.settled_cash == pytest.approx(ref.settled_cash, abs=0.011)
        assert got.positions == {s: q for s, q in ref.positions.items() if q != 0}
        assert got.reserved_cash == pytest.approx(ref.reserved_cash, abs=0.011)
        assert got.net_liq == pytest.approx(ref.net_liq, rel=1e-9)
    # pending withdrawals by hand from the transfers file
    transfers = (pl.read_csv(inputs.transfers, try_parse_dates=True) if fmt == "csv"
                 else pl.read_parquet(inputs.transfers))
    expect: dict[str, float] = {}
    for row in transfers.iter_rows(named=True):
        if row["kind"] == "withdrawal" and row["value_date"] >= AS_OF:
            expect[row["account_id"]] = expect.get(row["account_id"], 0.0) + row["amount"]
    assert expect, "the fixture has pending withdrawals"
    for acct, amount in expect.items():
        assert by_id[acct].pending_withdrawals == pytest.approx(amount)
    assert sum(a.pending_dividends for a in result.accounts) > 0
    paths = result.write(tmp_path / "out")
    state = json.loads(paths["state"].read_text())
    assert len(state) == len(book.accounts)


def test_buying_power_and_settlement_by_hand(
        book: Book, generated: tuple[str, SodInputs, SodResult, Path]) -> None:
    _, _, result, _ = generated
    assert result.table is not None
    mandates = {m.mandate_id: m for m in book.mandates}
    for ref in book.accounts[:10]:
        row = result.table.filter(pl.col("account_id") == ref.account_id).row(0, named=True)
        acct = next(a for a in result.accounts if a.account_id == ref.account_id)
        gross = sum(abs(q) * book.prices[s] for s, q in acct.positions.items())
        buffer = mandates[acct.mandate_id].cash_buffer_pct / 100 * row["net_liq"]
        if acct.account_type.value == "margin":
            bp = 2 * (row["net_liq"] - acct.pending_withdrawals - buffer - 0.5 * gross
                      - 0.5 * row["reserved_cash"])
        else:
            bp = acct.settled_cash - acct.pending_withdrawals - row["reserved_cash"] - buffer
        assert row["buying_power"] == pytest.approx(bp, abs=0.05)
        # yesterday's trades (T+1) are the unsettled part
        assert row["unsettled_cash"] == pytest.approx(ref.cash - ref.settled_cash, abs=0.011)


def _edit_csv(path: str, change: Callable[[list[str]], list[str]]) -> None:
    p = Path(path)
    p.write_text("\n".join(change(p.read_text().splitlines())) + "\n")


def _replace_line(n: int, make: Callable[[str], str]) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        lines[n - 1] = make(lines[n - 1])
        return lines
    return change


def _set_cell(n: int, col: int, value: str) -> Callable[[list[str]], list[str]]:
    def make(line: str) -> str:
        cells = line.split(",")
        cells[col] = value
        return ",".join(cells)
    return _replace_line(n, make)


BAD = [
    ("missing column", "positions", lambda ls: [",".join(c.split(",")[:2]) for c in ls],
     "missing_column", "quantity", None, "missing column quantity"),
    ("wrong type", "positions", _set_cell(4, 2, "ten"), "wrong_type", "quantity", [4],
     "1 value is not an integer: 'ten'"),
    ("unknown account", "positions", _set_cell(3, 0, "ACC-999"), "ExpectColumnValuesToBeInSet",
     "account_id", [3], "account not in the book (found 'ACC-999')"),
    ("unknown instrument", "positions", _set_cell(5, 1, "NOPE"), "ExpectColumnValuesToBeInSet",
     "symbol", [5], "instrument not in the book (found 'NOPE')"),
    ("duplicate rows", "positions", lambda ls: [*ls, ls[1]], "ExpectCompoundColumnsToBeUnique",
     "account_id, symbol", None, "duplicate rows: one account holds one instrument in one row"),
    ("empty file", "positions", lambda ls: [], "empty_file", None, None, "empty file"),
    ("header only", "cash", lambda ls: ls[:1], "ExpectTableRowCountToBeBetween", None, None,
     "the file has a header but no rows"),
    ("empty cell", "cash", _set_cell(2, 1, ""), "ExpectColumnValuesToNotBeNull", "account_id",
     [2], "empty account_id"),
    ("infinite price", "prices", _set_cell(3, 1, "inf"), "wrong_type", "price", [3],
     "1 value is not a number: 'inf'"),
    ("negative price", "prices", _set_cell(3, 1, "-5.0"), "ExpectColumnValuesToBeBetween",
     "price", [3], "price must be positive (found -5.0)"),
    ("future price", "prices", _set_cell(2, 2, "2025-06-16"), "ExpectColumnValuesToBeBetween",
     "price_date_days_before", [2],
     "price dated on or after the start-of-day date 2025-06-16"),
    ("bad date", "dividends", _set_cell(2, 1, "16/06/2025"), "wrong_type", "ex_date", [2],
     "is not a date (YYYY-MM-DD): '16/06/2025'"),
    ("pay before ex", "dividends", _set_cell(2, 2, "2000-01-03"),
     "ExpectColumnValuesToBeBetween", "pay_after_ex_days", [2], "pay_date before ex_date"),
    ("negative transfer", "transfers", _set_cell(2, 3, "-10"), "ExpectColumnValuesToBeBetween",
     "amount", [2], "amount must be positive"),
    ("odd lot order", "open_orders", _set_cell(2, 4, "7"), "ExpectColumnValuesToBeBetween",
     "lot_remainder", None, "quantity is not a whole number of lots"),
]


@pytest.mark.parametrize(("what", "name", "change", "check", "column", "rows", "message"), BAD,
                         ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_a_clear_message(
        book: Book, tmp_path: Path, what: str, name: str,
        change: Callable[[list[str]], list[str]], check: str, column: str | None,
        rows: list[int] | None, message: str) -> None:
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in")
    path = getattr(inputs, name)
    if what == "odd lot order":
        # the only lot-100 instrument gets an open order of 7 shares
        lines = Path(path).read_text().splitlines()
        lines.append("GTC-X,ACC-001,QVL,buy,100,30.0")
        Path(path).write_text("\n".join(lines) + "\n")
        change = _set_cell(len(lines), 4, "7")
    _edit_csv(path, change)
    result = _run(book, inputs, tmp_path)
    assert not result.ok
    assert result.accounts == () and result.table is None
    crit = [p for p in result.problems if p.severity is Severity.CRITICAL]
    assert len(crit) == 1, [p.render() for p in crit]
    (p,) = crit
    assert (p.input, p.file, p.check, p.column) == (name, path, check, column)
    assert message in p.message, p.message
    if rows is not None:
        assert p.rows == rows
    if what == "duplicate rows":  # both copies are named: the first data line and the last
        assert p.rows == [2, len(Path(path).read_text().splitlines())]
    # the input is quarantined beside its problems; the others are not
    qdir = tmp_path / "quarantine" / AS_OF.isoformat()
    assert sorted(f.name for f in qdir.iterdir()) == sorted(
        [Path(path).name, Path(path).name + ".problems.json"])
    assert result.write(tmp_path / "out").keys() == {"problems"}
    with pytest.raises(BatchInputError) as e:
        result.raise_for_problems()
    assert message in str(e.value) and Path(path).name in str(e.value)


def test_wrong_type_in_parquet(book: Book, tmp_path: Path) -> None:
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in", fmt="parquet")
    pl.read_parquet(inputs.prices).with_columns(pl.col("price").cast(pl.String)).write_parquet(
        inputs.prices)
    result = _run(book, inputs, tmp_path)
    (p,) = [p for p in result.problems if p.severity is Severity.CRITICAL]
    assert (p.check, p.column) == ("wrong_type", "price")
    assert p.message == "the column holds String, expected number"
    pl.read_parquet(inputs.prices).with_columns(pl.col("price").cast(pl.Float64)).with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(float("nan")).otherwise(pl.col("price"))
        .alias("price")).write_parquet(inputs.prices)
    result = _run(book, inputs, tmp_path)
    (p,) = [p for p in result.problems if p.severity is Severity.CRITICAL]
    assert (p.check, p.column, p.rows) == ("wrong_type", "price", [5])
    assert p.message == "1 value is not a finite number: nan"


def test_warnings_publish(book: Book, tmp_path: Path) -> None:
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in")
    # an odd lot of the lot-100 instrument, a stale price, a cash break
    lines = Path(inputs.positions).read_text().splitlines()
    n = next(i for i, ln in enumerate(lines) if ",QVL," in ln)
    acct, sym, qty = lines[n].split(",")
    lines[n] = f"{acct},{sym},{int(qty) + 1}"
    dropped = lines.pop(n + 1 if n + 1 < len(lines) else n - 1)
    Path(inputs.positions).write_text("\n".join(lines) + "\n")
    _edit_csv(inputs.prices, _set_cell(2, 2, "2025-06-10"))
    _edit_csv(inputs.cash, _set_cell(2, 3, "1.0"))
    result = _run(book, inputs, tmp_path)
    assert result.ok and len(result.accounts) == len(book.accounts)
    got = {(p.input, p.check, p.column) for p in result.warnings}
    assert got == {
        ("positions", "ExpectColumnValuesToBeBetween", "lot_remainder"),
        ("positions", "ExpectColumnValuesToBeBetween", "change_since_yesterday"),
        ("prices", "ExpectColumnValuesToBeBetween", "age_business_days"),
        ("cash", "ExpectColumnValuesToBeNull", "cash_break"),
        ("positions", "ExpectColumnValuesToBeNull", "missing_position"),
    }
    gone = next(p for p in result.warnings if p.column == "missing_position")
    d_acct, d_sym, d_qty = dropped.split(",")
    assert f"(found '{d_acct} {d_sym}: {d_qty}')" in gone.message
    brk = next(p for p in result.warnings if p.column == "cash_break")
    assert "ACC-001: custodian" in brk.message
    assert not (tmp_path / "quarantine").exists()


def test_missing_required_file(book: Book, tmp_path: Path) -> None:
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in")
    Path(inputs.prices).unlink()
    result = _run(book, inputs, tmp_path)
    (p,) = [p for p in result.problems if p.severity is Severity.CRITICAL]
    assert (p.input, p.check, p.message) == ("prices", "unreadable", "file not found")
    assert p.render() == f"critical: {inputs.prices}: file not found"


def test_a_buy_leaves_settled_cash_at_once_a_sale_waits(book: Book, tmp_path: Path) -> None:
    """Yesterday's buy was paid for out of settled cash; yesterday's sale settles today (T+1).
    So a cash account cannot spend the money of a buy twice after the overnight rebuild."""
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in")
    base = _run(book, inputs, tmp_path)
    acct = next(a for a in book.accounts if a.account_type.value == "cash").account_id
    with open(inputs.cash, "a", encoding="utf-8") as f:
        f.write(f"{acct}-BUY,{acct},trade,-50000.00,2025-06-13\n")   # Friday's buy
        f.write(f"{acct}-SALE,{acct},trade,20000.00,2025-06-13\n")   # Friday's sale
    got = _run(book, inputs, tmp_path)
    assert got.ok, got.problems
    old = next(a for a in base.accounts if a.account_id == acct)
    new = next(a for a in got.accounts if a.account_id == acct)
    assert new.cash == pytest.approx(old.cash - 30_000, abs=0.01)
    assert new.settled_cash == pytest.approx(old.settled_cash - 50_000, abs=0.01)
    assert new.settled_cash <= new.cash


def test_a_working_order_in_an_unpriced_instrument_is_refused(book: Book, tmp_path: Path) -> None:
    """A market buy reserves cash at the price: without one, a clear critical problem (the
    state is not built), not a crash while building it."""
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in")
    held = set(pl.read_csv(inputs.positions)["symbol"])
    sym = next(i.symbol for i in book.instruments if i.symbol not in held)
    pl.read_csv(inputs.prices).filter(pl.col("symbol") != sym).write_csv(inputs.prices)
    with open(inputs.open_orders, "a", encoding="utf-8") as f:
        f.write(f"GTC-X,ACC-001,{sym},buy,100,\n")
    got = _run(book, inputs, tmp_path)
    assert not got.ok and got.accounts == ()
    assert any(p.severity is Severity.CRITICAL and p.input == "prices"
               and f"found '{sym}'" in p.render() and "working order" in p.message
               for p in got.problems)


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_blank_lines_at_the_end_of_a_csv_are_no_rows(book: Book, tmp_path: Path,
                                                     eol: str) -> None:
    """An editor or a spreadsheet export may end the file with empty lines: they are not rows
    with every cell empty. A blank line between rows still is one, reported at its line."""
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in")
    path = Path(inputs.prices)
    lines = path.read_text().splitlines()
    path.write_bytes((eol.join(lines) + eol + eol + " , ," + eol + eol).encode())
    got = _run(book, inputs, tmp_path)
    assert got.ok, [p.render() for p in got.problems]
    path.write_bytes((eol.join([*lines[:3], ",,", *lines[3:]]) + eol).encode())
    bad = _run(book, inputs, tmp_path)
    assert not bad.ok
    assert any(p.input == "prices" and p.rows == [4] and "empty symbol" in p.message
               for p in bad.problems), [p.render() for p in bad.problems]


def test_a_refused_run_removes_the_state_an_earlier_run_left(book: Book, tmp_path: Path) -> None:
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in")
    out = tmp_path / "out"
    good = _run(book, inputs, tmp_path)
    assert set(good.write(out)) == {"problems", "state", "table"}
    _edit_csv(inputs.positions, _set_cell(3, 0, "ACC-999"))
    bad = _run(book, inputs, tmp_path)
    assert not bad.ok
    assert set(bad.write(out)) == {"problems"}
    assert sorted(p.name for p in out.iterdir()) == ["sod_problems.json"]


def test_parquet_column_with_no_value_is_read_as_empty_cells(book: Book, tmp_path: Path) -> None:
    """Market orders only: the limit price column holds no value at all, which Parquet writers
    store as a column of type null. It reads as the CSV with empty cells does."""
    csv = write_sod_inputs(book, AS_OF, tmp_path / "csv")
    orders = pl.read_csv(csv.open_orders).with_columns(pl.lit(None).alias("limit_price"))
    assert orders.height and orders.schema["limit_price"] == pl.Null
    orders.write_csv(csv.open_orders)
    pq = Path(csv.open_orders).with_suffix(".parquet")
    orders.write_parquet(pq)
    from_csv = _run(book, csv, tmp_path / "a")
    from_pq = _run(book, csv.model_copy(update={"open_orders": str(pq)}), tmp_path / "b")
    assert from_csv.ok and from_pq.ok, [p.render() for p in from_pq.problems]
    assert from_pq.table is not None and from_csv.table is not None
    assert from_pq.table.equals(from_csv.table)


def test_unsigned_parquet_integer_beyond_int64_is_a_problem_at_its_row(
        book: Book, tmp_path: Path) -> None:
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in", fmt="parquet")
    frame = pl.read_parquet(inputs.positions)
    frame.with_columns(pl.col("quantity").abs().cast(pl.UInt64)).write_parquet(inputs.positions)
    assert _run(book, inputs, tmp_path).ok  # unsigned values in range read as they are
    frame.with_columns(pl.col("quantity").abs().cast(pl.UInt64)).with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(pl.lit(2**63 + 5, pl.UInt64))
        .otherwise(pl.col("quantity")).alias("quantity")).write_parquet(inputs.positions)
    got = _run(book, inputs, tmp_path)
    (p,) = [p for p in got.problems if p.severity is Severity.CRITICAL]
    assert (p.check, p.column, p.rows) == ("wrong_type", "quantity", [3])
    assert p.render().endswith(
        f"column quantity, row 3: 1 value is not a 64-bit signed integer: {2**63 + 5}")


def test_csv_header_names_are_trimmed_and_upper_case_suffix_is_csv(
        book: Book, tmp_path: Path) -> None:
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in")
    path = Path(inputs.positions)
    lines = path.read_text().splitlines()
    lines[0] = ", ".join(lines[0].split(","))
    upper = path.with_suffix(".CSV")
    upper.write_text("\n".join(lines) + "\n")
    moved = inputs.model_copy(update={"positions": str(upper)})
    assert _run(book, moved, tmp_path).ok
    lines[2] = lines[2].replace(lines[2].split(",")[0], "ACC-999", 1)
    upper.write_text("\n".join(lines) + "\n")
    got = _run(book, moved, tmp_path)
    assert any(p.input == "positions" and "line 3" in p.render() and "ACC-999" in p.render()
               for p in got.problems), [p.render() for p in got.problems]


def test_a_weekend_date_is_a_warning(book: Book, tmp_path: Path) -> None:
    inputs = write_sod_inputs(book, AS_OF, tmp_path / "in")
    saturday = date(2025, 6, 14)
    got = run_sod(book, inputs, SodConfig(as_of=saturday))
    (w,) = [p for p in got.warnings if p.check == "not_business_day"]
    assert w.message == "2025-06-14 is a Saturday, not a business day"
    assert not [p for p in _run(book, inputs, tmp_path).warnings
                if p.check == "not_business_day"]
