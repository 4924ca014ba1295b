"""Start of day: custodian files in, every account's start-of-day state out.

:func:`run_sod` reads the day's inputs (CSV or Parquet, schemas below), validates each with Great
Expectations against the book (:func:`mats.config.load_book`) and yesterday's end-of-day state,
and computes every account's :class:`mats.models.Account` for the day: positions, cash and
settled cash (T+1), pending dividends and withdrawals, open orders and the cash they reserve,
net liquidation value, and (in :attr:`SodResult.table`) Reg T buying power.

A critical problem in any input quarantines that input (the file is copied beside a JSON of its
problems) and nothing is built: :attr:`SodResult.accounts` is empty, never half a state.
Warnings are reported and the state is built.

Settlement: a trade's cash settles one business day after its trade date (T+1, the US rule
since 28 May 2024, SEC Rule 15c6-1 as amended); other ledger entries settle on their date.
Cash counts as settled at the start of day D when it settled before D; a debit (a buy's cost, a
withdrawal) leaves settled cash at once. Holidays are not modelled (weekends are).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl
from pydantic import ValidationError

from mats.batch.book import accounts_frame, instruments_frame, positions_frame
from mats.batch.problems import BatchInputError, Problem, Severity, critical
from mats.batch.quality import Quality, Rule
from mats.batch.tables import ROW, Column, Kind, Loaded, Table, read_table
from mats.config import pydantic_problem, render_loc
from mats.models import MAX_QUANTITY, Account, AccountType, Book, Frozen, OpenOrders

__all__ = [
    "CASH",
    "DIVIDENDS",
    "OPEN_ORDERS",
    "POSITIONS",
    "PRICES",
    "REG_T_INITIAL_MARGIN",
    "SOD_REQUIRED",
    "SOD_TABLES",
    "TRANSFERS",
    "SodConfig",
    "SodInputs",
    "SodResult",
    "run_sod",
]

REG_T_INITIAL_MARGIN = 0.5
LEDGER_KINDS = ("opening", "trade", "dividend", "deposit", "withdrawal", "fee", "interest")
C, W = Severity.CRITICAL, Severity.WARNING

POSITIONS = Table("positions", (
    Column("account_id", Kind.STR, "the account (must be in the book)"),
    Column("symbol", Kind.STR, "the instrument (must be in the book)"),
    Column("quantity", Kind.INT, "shares held at yesterday's close; negative is short"),
), "Custodian positions at the previous close, one row per account and instrument.",
    key=("account_id", "symbol"))

CASH = Table("cash", (
    Column("entry_id", Kind.STR, "the custodian's id of the ledger entry (unique)"),
    Column("account_id", Kind.STR, "the account (must be in the book)"),
    Column("kind", Kind.STR, "one of " + ", ".join(LEDGER_KINDS)),
    Column("amount", Kind.FLOAT, "signed cash amount (a buy's cost is negative)"),
    Column("trade_date", Kind.DATE, "the date the entry was booked (before the SOD date)"),
), "Custodian cash ledger up to the previous close: the balance is the sum of amounts.",
    key=("entry_id",))

PRICES = Table("prices", (
    Column("symbol", Kind.STR, "the instrument"),
    Column("price", Kind.FLOAT, "the closing price (positive)"),
    Column("price_date", Kind.DATE, "the date of that close"),
), "Closing prices, one row per instrument.", key=("symbol",))

DIVIDENDS = Table("dividends", (
    Column("symbol", Kind.STR, "the instrument"),
    Column("ex_date", Kind.DATE, "ex-dividend date: holders at the close before it are paid"),
    Column("pay_date", Kind.DATE, "payment date (on or after ex_date)"),
    Column("amount", Kind.FLOAT, "cash per share (positive)"),
), "Corporate actions: cash dividends announced.", key=("symbol", "ex_date"))

TRANSFERS = Table("transfers", (
    Column("transfer_id", Kind.STR, "the instruction's id (unique)"),
    Column("account_id", Kind.STR, "the account (must be in the book)"),
    Column("kind", Kind.STR, "deposit or withdrawal"),
    Column("amount", Kind.FLOAT, "cash amount (positive)"),
    Column("value_date", Kind.DATE, "the day the money moves"),
), "Client deposits and withdrawals instructed; those not yet moved are pending.",
    key=("transfer_id",))

OPEN_ORDERS = Table("open_orders", (
    Column("order_id", Kind.STR, "the working order"),
    Column("account_id", Kind.STR, "the account (must be in the book)"),
    Column("symbol", Kind.STR, "the instrument (must be in the book)"),
    Column("side", Kind.STR, "buy or sell"),
    Column("quantity", Kind.INT, "working (unfilled) shares, in whole lots"),
    Column("limit_price", Kind.FLOAT, "limit price; empty for a market order", nullable=True),
), "Orders still working from earlier days (good-till-cancelled), per account.",
    key=("order_id", "account_id"))

SOD_TABLES = (POSITIONS, CASH, PRICES, DIVIDENDS, TRANSFERS, OPEN_ORDERS)
SOD_REQUIRED = ("positions", "cash", "prices")  # the others may be left out


class SodConfig(Frozen):
    """Settings of a start-of-day run.

    ``max_price_age_days``: a price older than this many business days is stale (warning).
    ``cash_tolerance``: the largest difference between custodian cash and yesterday's
    end-of-day cash that is not reported.
    """

    as_of: date
    max_price_age_days: int = 1
    cash_tolerance: float = 0.01
    settlement_days: int = 1


class SodInputs(Frozen):
    """The day's input files (CSV or Parquet); the optional ones may be left out."""

    positions: str
    cash: str
    prices: str
    dividends: str | None = None
    transfers: str | None = None
    open_orders: str | None = None


@dataclass(frozen=True)
class SodResult:
    """What :func:`run_sod` found and built.

    ``accounts`` is the start-of-day state (empty when a critical problem was found);
    ``table`` the same per account with the derived figures (``None`` then as well).
    """

    as_of: date
    accounts: tuple[Account, ...]
    table: pl.DataFrame | None
    problems: tuple[Problem, ...]
    quarantined: tuple[Path, ...] = ()
    data_docs: Path | None = None

    @property
    def ok(self) -> bool:
        return not critical(self.problems)

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    def raise_for_problems(self) -> None:
        """Raise :class:`BatchInputError` when any problem is critical."""
        if not self.ok:
            raise BatchInputError(self.problems)

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write ``sod_problems.json`` always, and when ok ``sod_state.json`` (the accounts,
        ready to publish) and ``sod_accounts.parquet``. Returns the paths written.

        When not ok, a state an earlier run of the folder left is removed: the folder never
        shows a state beside problems that refused it."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"problems": out / "sod_problems.json"}
        paths["problems"].write_text(json.dumps(
            [p.model_dump(mode="json") for p in self.problems], indent=1) + "\n")
        if self.ok and self.table is not None:
            paths["state"] = out / "sod_state.json"
            paths["state"].write_text(json.dumps(
                [a.model_dump(mode="json") for a in self.accounts], indent=1) + "\n")
            paths["table"] = out / "sod_accounts.parquet"
            self.table.write_parquet(paths["table"])
        else:
            for name in ("sod_state.json", "sod_accounts.parquet"):
                (out / name).unlink(missing_ok=True)
        return paths


@dataclass
class _Ctx:
    book: Book
    config: SodConfig
    yesterday: Sequence[Account]
    accounts: pl.DataFrame = field(init=False)
    instruments: pl.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = accounts_frame(self.book)
        self.instruments = instruments_frame(self.book)

    @property
    def account_ids(self) -> list[str]:
        return self.accounts["account_id"].to_list()

    @property
    def symbols(self) -> list[str]:
        return self.instruments["symbol"].to_list()


def _rows_at_least_one(table: Table) -> Rule:
    return Rule("ExpectTableRowCountToBeBetween", {"min_value": 1},
                "the file has a header but no rows")


def _not_null(table: Table) -> list[Rule]:
    return [Rule("ExpectColumnValuesToNotBeNull", {"column": c.name},
                 f"empty {c.name} (every row needs one)") for c in table.columns if not c.nullable]


def _unique(table: Table, what: str) -> Rule:
    if len(table.key) == 1:
        return Rule("ExpectColumnValuesToBeUnique", {"column": table.key[0]},
                    f"duplicate rows: {what}")
    return Rule("ExpectCompoundColumnsToBeUnique", {"column_list": list(table.key)},
                f"duplicate rows: {what}")


def _known(column: str, values: list[str], what: str, severity: Severity = C) -> Rule:
    return Rule("ExpectColumnValuesToBeInSet", {"column": column, "value_set": values},
                f"{what} not in the book", severity)


def _between(column: str, message: str, lo: float | None = None, hi: float | None = None,
             severity: Severity = C, strict_min: bool = False) -> Rule:
    kw: dict[str, object] = {"column": column}
    if lo is not None:
        kw["min_value"] = lo
        if strict_min:
            kw["strict_min"] = True
    if hi is not None:
        kw["max_value"] = hi
    return Rule("ExpectColumnValuesToBeBetween", kw, message, severity)


def _days_before(col: str, as_of: date) -> pl.Expr:
    return (pl.lit(as_of) - pl.col(col)).dt.total_days().alias(f"{col}_days_before")


def _check_positions(q: Quality, ctx: _Ctx, ld: Loaded, frame: pl.DataFrame) -> list[Problem]:
    yesterday = positions_frame(ctx.yesterday).rename({"quantity": "yesterday"})
    known = pl.col("symbol").is_in(ctx.symbols)
    df = (frame.join(ctx.instruments, on="symbol", how="left", maintain_order="left")
          .join(ctx.accounts.select("account_id", "account_type"), on="account_id", how="left",
                maintain_order="left")
          .join(yesterday, on=["account_id", "symbol"], how="left", maintain_order="left")
          .with_columns(
              (known & pl.col("sector").fill_null("").str.strip_chars().eq(""))
              .alias("sector_missing"),
              (pl.col("quantity") % pl.col("lot_size")).alias("lot_remainder"),
              ((pl.col("account_type") == AccountType.CASH.value) & (pl.col("quantity") < 0))
              .fill_null(False).alias("short_in_cash_account"),
              (pl.col("quantity") - pl.col("yesterday").fill_null(0))
              .alias("change_since_yesterday"))
          .select(ROW, "account_id", "symbol", "quantity", "sector_missing", "lot_remainder",
                  "short_in_cash_account", "change_since_yesterday"))
    rules = [
        _rows_at_least_one(POSITIONS), *_not_null(POSITIONS),
        _unique(POSITIONS, "one account holds one instrument in one row"),
        _known("account_id", ctx.account_ids, "account"),
        _known("symbol", ctx.symbols, "instrument"),
        Rule("ExpectColumnValuesToBeInSet", {"column": "sector_missing", "value_set": [False]},
             "the instrument has no sector in the book"),
        _between("quantity", f"quantity beyond ±{MAX_QUANTITY:,}", -MAX_QUANTITY, MAX_QUANTITY),
        Rule("ExpectColumnValuesToBeInSet",
             {"column": "short_in_cash_account", "value_set": [False]},
             "a cash account cannot hold a short position"),
        _between("lot_remainder", "quantity is not a whole number of lots", 0, 0, W),
        _between("change_since_yesterday",
                 "position differs from yesterday's end-of-day state", 0, 0, W),
    ]
    problems = q.validate("sod_positions", ld.file, df, rules, "positions")
    # positions yesterday's state holds that the custodian no longer reports
    gone = (yesterday.join(frame.select("account_id", "symbol"), on=["account_id", "symbol"],
                           how="anti")
            .select(pl.format("{} {}: {}", "account_id", "symbol", "yesterday")
                    .alias("missing_position")))
    problems += q.validate("sod_positions_vs_yesterday", ld.file, gone, [
        Rule("ExpectColumnValuesToBeNull", {"column": "missing_position"},
             "yesterday's end-of-day state holds a position the custodian does not report", W)],
        "positions")
    return problems


def _check_cash(q: Quality, ctx: _Ctx, ld: Loaded, frame: pl.DataFrame) -> list[Problem]:
    as_of = ctx.config.as_of
    df = frame.with_columns(_days_before("trade_date", as_of))
    rules = [
        _rows_at_least_one(CASH), *_not_null(CASH),
        _unique(CASH, "an entry_id appears more than once"),
        _known("account_id", ctx.account_ids, "account"),
        Rule("ExpectColumnValuesToBeInSet", {"column": "kind", "value_set": list(LEDGER_KINDS)},
             f"unknown kind; the kinds are {', '.join(LEDGER_KINDS)}"),
        _between("amount", "amount beyond ±1e13", -1e13, 1e13),
        _between("trade_date_days_before",
                 f"entry dated on or after the start-of-day date {as_of}", lo=1),
    ]
    problems = q.validate("sod_cash", ld.file, df, rules, "cash")
    if frame.height == 0:
        return problems
    # Reconciliation with yesterday's end state: one row per book account.
    balances = frame.group_by("account_id").agg(pl.col("amount").sum().alias("custodian"))
    ours = pl.DataFrame({"account_id": [a.account_id for a in ctx.yesterday],
                         "ours": [a.cash for a in ctx.yesterday]},
                        schema={"account_id": pl.String, "ours": pl.Float64})
    tol = ctx.config.cash_tolerance
    recon = (ctx.accounts.select("account_id")
             .join(balances, on="account_id", how="left", maintain_order="left")
             .join(ours, on="account_id", how="left", maintain_order="left")
             .with_columns(
                 pl.when(pl.col("custodian").is_null()).then(pl.col("account_id"))
                 .alias("missing"),
                 pl.when((pl.col("custodian") - pl.col("ours")).abs() > tol)
                 .then(pl.format("{}: custodian {} vs ours {}", pl.col("account_id"),
                                 pl.col("custodian").round(2), pl.col("ours").round(2)))
                 .alias("cash_break"))
             .select("missing", "cash_break"))
    problems += q.validate("sod_cash_reconciliation", ld.file, recon, [
        Rule("ExpectColumnValuesToBeNull", {"column": "missing"},
             "book account has no rows in the cash file"),
        Rule("ExpectColumnValuesToBeNull", {"column": "cash_break"},
             f"custodian cash differs from yesterday's end-of-day cash by more than {tol:g}", W),
    ], "cash")
    return problems


def _check_prices(q: Quality, ctx: _Ctx, ld: Loaded, frame: pl.DataFrame,
                  held: pl.DataFrame | None) -> list[Problem]:
    as_of = ctx.config.as_of
    df = frame.with_columns(
        _days_before("price_date", as_of),
        pl.business_day_count(pl.col("price_date"), pl.lit(as_of)).alias("age_business_days")
    )
    rules = [
        _rows_at_least_one(PRICES), *_not_null(PRICES),
        _unique(PRICES, "one instrument has more than one price"),
        _between("price", "price must be positive", lo=0, strict_min=True),
        _known("symbol", ctx.symbols, "instrument (its price is ignored)", W),
        _between("price_date_days_before",
                 f"price dated on or after the start-of-day date {as_of}", lo=1),
        _between("age_business_days",
                 f"stale price: older than {ctx.config.max_price_age_days} business day(s)",
                 hi=ctx.config.max_price_age_days, severity=W),
    ]
    problems = q.validate("sod_prices", ld.file, df, rules, "prices")
    if held is not None:
        cover = (held.filter(pl.col("symbol").is_in(ctx.symbols))
                 .select("symbol").unique(maintain_order=True)
                 .join(frame.select("symbol", "price"), on="symbol", how="left")
                 .select(pl.when(pl.col("price").is_null()).then(pl.col("symbol"))
                         .alias("unpriced")))
        problems += q.validate("sod_price_coverage", ld.file, cover, [
            Rule("ExpectColumnValuesToBeNull", {"column": "unpriced"},
                 "an instrument held or with a working order has no price")], "prices")
    return problems


def _check_dividends(q: Quality, ctx: _Ctx, ld: Loaded, frame: pl.DataFrame) -> list[Problem]:
    df = frame.with_columns(
        (pl.col("pay_date") - pl.col("ex_date")).dt.total_days().alias("pay_after_ex_days")
    )
    rules = [
        *_not_null(DIVIDENDS), _unique(DIVIDENDS, "one instrument has two dividends with one "
                                                  "ex-date"),
        _between("amount", "dividend per share must be positive", lo=0, strict_min=True),
        _between("pay_after_ex_days", "pay_date before ex_date", lo=0),
        _known("symbol", ctx.symbols, "instrument (the dividend is ignored)", W),
    ]
    return q.validate("sod_dividends", ld.file, df, rules, "dividends")


def _check_transfers(q: Quality, ctx: _Ctx, ld: Loaded, frame: pl.DataFrame) -> list[Problem]:
    df = frame
    rules = [
        *_not_null(TRANSFERS), _unique(TRANSFERS, "a transfer_id appears more than once"),
        _known("account_id", ctx.account_ids, "account"),
        Rule("ExpectColumnValuesToBeInSet",
             {"column": "kind", "value_set": ["deposit", "withdrawal"]},
             "kind must be deposit or withdrawal"),
        _between("amount", "amount must be positive", lo=0, strict_min=True),
    ]
    return q.validate("sod_transfers", ld.file, df, rules, "transfers")


def _check_open_orders(q: Quality, ctx: _Ctx, ld: Loaded, frame: pl.DataFrame) -> list[Problem]:
    df = frame.join(ctx.instruments.select("symbol", "lot_size"), on="symbol", how="left",
                    maintain_order="left").with_columns(
        (pl.col("quantity") % pl.col("lot_size")).alias("lot_remainder")).drop("lot_size")
    rules = [
        *_not_null(OPEN_ORDERS), _unique(OPEN_ORDERS, "one order appears twice for an account"),
        _known("account_id", ctx.account_ids, "account"),
        _known("symbol", ctx.symbols, "instrument"),
        Rule("ExpectColumnValuesToBeInSet", {"column": "side", "value_set": ["buy", "sell"]},
             "side must be buy or sell"),
        _between("quantity", "working quantity must be positive", lo=1, hi=MAX_QUANTITY),
        _between("lot_remainder", "quantity is not a whole number of lots", 0, 0),
        _between("limit_price", "limit price must be positive", lo=0, strict_min=True),
    ]
    return q.validate("sod_open_orders", ld.file, df, rules, "open_orders")


def _quarantine(folder: Path, as_of: date, loaded: Loaded, problems: list[Problem]) -> Path:
    dest = folder / as_of.isoformat()
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(loaded.file)
    target = dest / src.name
    if src.is_file():
        shutil.copy2(src, target)
    (dest / f"{src.name}.problems.json").write_text(json.dumps(
        [p.model_dump(mode="json") for p in problems], indent=1) + "\n")
    return target


def run_sod(book: Book, inputs: SodInputs, config: SodConfig, *,
            yesterday: Sequence[Account] | None = None, quarantine_dir: str | Path | None = None,
            docs_dir: str | Path | None = None) -> SodResult:
    """Validate the day's inputs and build every account's start-of-day state.

    Parameters
    ----------
    book
        Reference data: instruments (sectors, lots), mandates, accounts (type, mandate, broker,
        strategies). Its accounts are also yesterday's end state unless ``yesterday`` is given.
    inputs
        The files (schemas: ``POSITIONS``, ``CASH``, ``PRICES``, ``DIVIDENDS``, ``TRANSFERS``,
        ``OPEN_ORDERS``).
    config
        The start-of-day date and tolerances.
    yesterday
        Yesterday's end-of-day accounts, which custodian cash and positions are reconciled with.
    quarantine_dir
        Where an input with a critical problem is copied, beside ``<file>.problems.json``.
    docs_dir
        Where to build Great Expectations Data Docs of the checks (none when ``None``).

    Returns
    -------
    SodResult
        The state, or no state and the problems; this function does not raise for bad input.
    """
    ctx = _Ctx(book, config, book.accounts if yesterday is None else yesterday)
    quality = Quality(Path(docs_dir) if docs_dir is not None else None)
    paths = {t.name: getattr(inputs, t.name) for t in SOD_TABLES}
    loaded = {t.name: (read_table(paths[t.name], t) if paths[t.name] is not None
                       else Loaded(t, "", t.empty(), ())) for t in SOD_TABLES}
    found: dict[str, list[Problem]] = {n: list(ld.problems) for n, ld in loaded.items()}
    frames = {n: ld.frame for n, ld in loaded.items()}
    checks = {"positions": _check_positions, "cash": _check_cash,
              "dividends": _check_dividends, "transfers": _check_transfers,
              "open_orders": _check_open_orders}
    for name, check in checks.items():
        frame = frames[name]
        if frame is not None and (paths[name] is not None or name in SOD_REQUIRED):
            found[name] += check(quality, ctx, loaded[name], frame)
    if frames["prices"] is not None:
        # every instrument held or with a working order needs a price: the state marks the
        # positions and reserves the cash of the buys (a market buy at the price)
        used = [f.filter(pl.col("quantity") != 0).select(pl.col("symbol").cast(pl.String))
                for f in (frames["positions"], frames["open_orders"]) if f is not None]
        held = pl.concat(used) if used else None
        found["prices"] += _check_prices(quality, ctx, loaded["prices"], frames["prices"], held)
    docs = quality.build_docs()
    problems = [p for n in found for p in found[n]]
    if config.as_of.weekday() >= 5:
        # allowed (a weekend run to check files), but the settlement and price ages count
        # business days from it, so say so
        problems.append(Problem(
            input="run", severity=W, check="not_business_day",
            message=f"{config.as_of} is a {config.as_of.strftime('%A')}, not a business day"))
    bad = [n for n in found if critical(found[n])]
    if bad:
        quarantined: list[Path] = []
        if quarantine_dir is not None:
            quarantined = [_quarantine(Path(quarantine_dir), config.as_of, loaded[n], found[n])
                           for n in bad if loaded[n].file]
        return SodResult(config.as_of, (), None, tuple(problems), tuple(quarantined), docs)
    typed = {n: f for n, f in frames.items() if f is not None}
    table = _state_table(ctx, typed)
    accounts, state_problems = _accounts(ctx, table, typed)
    problems += state_problems
    if state_problems:
        return SodResult(config.as_of, (), None, tuple(problems), (), docs)
    return SodResult(config.as_of, tuple(accounts), table, tuple(problems), (), docs)


def _state_table(ctx: _Ctx, f: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Per account: the cash, exposure and buying-power figures of the start-of-day state."""
    as_of = ctx.config.as_of
    prices = f["prices"].filter(pl.col("symbol").is_in(ctx.symbols)).select("symbol", "price")
    ledger = f["cash"].with_columns(
        pl.when(pl.col("kind") == "trade")
        .then(pl.col("trade_date").dt.add_business_days(ctx.config.settlement_days,
                                                        roll="forward"))
        .otherwise(pl.col("trade_date")).alias("settle_date"))
    cash = ledger.group_by("account_id").agg(
        pl.col("amount").sum().alias("cash"),
        # money in waits for settlement, money out leaves at once: a buy's cost is gone from
        # settled cash on its trade date, as the core's cash account takes it
        pl.col("amount").filter((pl.col("settle_date") < as_of) | (pl.col("amount") < 0))
        .sum().alias("settled_cash"))
    pos = f["positions"].filter(pl.col("quantity") != 0).join(prices, on="symbol", how="left")
    exposure = pos.group_by("account_id").agg(
        (pl.col("quantity") * pl.col("price")).sum().alias("market_value"),
        (pl.col("quantity").abs() * pl.col("price")).sum().alias("gross_exposure"))
    divs = (pos.filter(pl.col("quantity") > 0)
            .join(f["dividends"].filter((pl.col("ex_date") <= as_of)
                                        & (pl.col("pay_date") >= as_of)), on="symbol")
            .group_by("account_id")
            .agg((pl.col("quantity") * pl.col("amount")).sum().alias("pending_dividends")))
    pending = f["transfers"].filter(pl.col("value_date") >= as_of).group_by("account_id").agg(
        pl.col("amount").filter(pl.col("kind") == "withdrawal").sum()
        .alias("pending_withdrawals"),
        pl.col("amount").filter(pl.col("kind") == "deposit").sum().alias("pending_deposits"))
    reserved = (f["open_orders"].filter(pl.col("side") == "buy")
                .join(prices, on="symbol", how="left")
                .group_by("account_id")
                .agg((pl.col("quantity") * pl.coalesce("limit_price", "price")).sum()
                     .alias("reserved_cash")))
    zero = ["cash", "settled_cash", "market_value", "gross_exposure", "pending_dividends",
            "pending_withdrawals", "pending_deposits", "reserved_cash"]
    m = REG_T_INITIAL_MARGIN
    t = (ctx.accounts.select("account_id", "account_type", "cash_buffer_pct")
         .join(cash, on="account_id", how="left", maintain_order="left")
         .join(exposure, on="account_id", how="left", maintain_order="left")
         .join(divs, on="account_id", how="left", maintain_order="left")
         .join(pending, on="account_id", how="left", maintain_order="left")
         .join(reserved, on="account_id", how="left", maintain_order="left")
         .with_columns(pl.col(zero).fill_null(0.0))
         .with_columns(
             (pl.col("cash") - pl.col("settled_cash")).alias("unsettled_cash"),
             (pl.col("cash") + pl.col("market_value")).alias("net_liq"))
         .with_columns((pl.col("cash_buffer_pct") / 100 * pl.col("net_liq")).alias("cash_buffer"))
         .with_columns(
             pl.when(pl.col("account_type") == AccountType.MARGIN.value)
             .then(pl.col("net_liq") - pl.col("pending_withdrawals") - pl.col("cash_buffer")
                   - m * pl.col("gross_exposure") - m * pl.col("reserved_cash"))
             .otherwise(pl.col("settled_cash") - pl.col("pending_withdrawals")
                        - pl.col("reserved_cash") - pl.col("cash_buffer"))
             .alias("available_equity"))
         .with_columns(
             pl.when(pl.col("account_type") == AccountType.MARGIN.value)
             .then(pl.col("available_equity") / m).otherwise(pl.col("available_equity"))
             .alias("buying_power"),
             pl.lit(as_of).alias("as_of")))
    return t.select("as_of", "account_id", "account_type", "cash", "settled_cash",
                    "unsettled_cash", "market_value", "gross_exposure", "net_liq",
                    "pending_dividends", "pending_withdrawals", "pending_deposits",
                    "reserved_cash", "cash_buffer", "available_equity", "buying_power")


def _accounts(ctx: _Ctx, table: pl.DataFrame, f: dict[str, pl.DataFrame]
              ) -> tuple[list[Account], list[Problem]]:
    positions: dict[str, dict[str, int]] = {}
    for a, s, q in f["positions"].filter(pl.col("quantity") != 0).select(
            "account_id", "symbol", "quantity").iter_rows():
        positions.setdefault(a, {})[s] = q
    prices = dict(f["prices"].select("symbol", "price").iter_rows())
    open_orders: dict[str, dict[str, dict[str, float]]] = {}
    for a, s, side, q, limit in f["open_orders"].select(
            "account_id", "symbol", "side", "quantity", "limit_price").iter_rows():
        oo = open_orders.setdefault(a, {}).setdefault(s, {"buy": 0, "sell": 0,
                                                           "buy_reserved": 0.0})
        oo[side] += q
        if side == "buy":
            oo["buy_reserved"] += q * (limit if limit is not None else prices[s])
    by_id = {a.account_id: a for a in ctx.book.accounts}
    out: list[Account] = []
    problems: list[Problem] = []
    for row in table.iter_rows(named=True):
        ref = by_id[row["account_id"]]
        try:
            out.append(Account(
                account_id=ref.account_id, account_type=ref.account_type,
                mandate_id=ref.mandate_id, broker=ref.broker, strategies=ref.strategies,
                net_liq=round(row["net_liq"], 2), cash=round(row["cash"], 2),
                settled_cash=round(row["settled_cash"], 2),
                pending_dividends=round(row["pending_dividends"], 2),
                pending_withdrawals=round(row["pending_withdrawals"], 2),
                positions=positions.get(ref.account_id, {}),
                open_orders={s: OpenOrders(buy=int(o["buy"]), sell=int(o["sell"]),
                                           buy_reserved=round(o["buy_reserved"], 2))
                             for s, o in open_orders.get(ref.account_id, {}).items()},
                reserved_cash=round(row["reserved_cash"], 2)))
        except ValidationError as e:
            loc, msg = pydantic_problem(e, Account)
            problems.append(Problem(
                input="state", severity=C, check="account_model", column=render_loc(loc),
                message=f"account {ref.account_id}: {msg}"))
    return out, problems
