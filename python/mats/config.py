"""Loading a book, block orders and a trading day from files.

A *book folder* holds five files:

``instruments.csv``
    One row per instrument, header ``symbol,sector,lot_size,tick_size,currency,beta``. ``symbol``
    and ``sector`` are required; the other columns may be left out, and an empty cell takes the
    default of :class:`mats.models.Instrument` (lot 1, tick 0.01, USD, beta 1.0).
``prices.csv``
    Header ``symbol,price``: the live mark of each instrument. Every symbol an account holds
    needs one.
``mandates.yaml``
    A top-level ``mandates:`` mapping of mandate id to the fields of
    :class:`mats.models.Mandate`; the id is taken from the key::

        mandates:
          esg_cash:
            max_position_pct: 6
            restricted_sectors: [Energy]

``accounts.json``
    A JSON list of :class:`mats.models.Account` objects. Each ``mandate_id`` must be defined in
    ``mandates.yaml`` and each symbol in ``positions`` and ``open_orders`` in ``instruments.csv``.
``risk.yaml``
    The fields of :class:`mats.models.RiskConfig` (firm limits checked by layer 1).

Block orders are a JSON list of :class:`mats.models.BlockOrder` (:func:`load_orders`). A trading
day, ``day.yaml``, names the decision time ``as_of`` and the orders file (:func:`load_day`).

Every problem raises :class:`mats.errors.ConfigError`. Its ``loc`` starts with the file, written
``path:line`` when the line is known, followed by the path of the offending field::

    ("book/mandates.yaml:14", "mandates", "esg_cash", "max_position_pct")
    ("book/accounts.json", 3, "mandate_id")

:func:`format_error` renders any :class:`mats.errors.MatsError` as one line for a user.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import AwareDatetime, BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mats.errors import ConfigError, MatsError
from mats.models import (
    Account,
    BlockOrder,
    Book,
    Frozen,
    Identifier,
    Instrument,
    Mandate,
    Price,
    RiskConfig,
)

INSTRUMENTS = "instruments.csv"
PRICES = "prices.csv"
MANDATES = "mandates.yaml"
ACCOUNTS = "accounts.json"
RISK = "risk.yaml"
BOOK_FILES = (INSTRUMENTS, PRICES, MANDATES, ACCOUNTS, RISK)

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class TradingDay(Frozen):
    """Contents of ``day.yaml``: when the day's orders are decided, and where they are."""

    as_of: AwareDatetime
    orders: str = "orders.json"
    description: str = ""


class _PriceRow(Frozen):
    symbol: Identifier
    price: Price


# ------------------------------------------------------------------------------ rendering

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def render_loc(loc: Iterable[str | int]) -> str:
    """A field path as a user writes it: ``orders[3].quantity``, ``caps['Real Estate']``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def format_error(err: MatsError) -> str:
    """One line naming where the problem is and what it is.

    A :class:`ConfigError` names its file first (``book/risk.yaml:7: throttle.max_orders: ...``);
    other errors give their field path (``orders[3].quantity: ...``).
    """
    loc = list(err.loc)
    parts: list[str] = []
    if isinstance(err, ConfigError) and loc and isinstance(loc[0], str):
        parts.append(str(loc.pop(0)))
    if loc:
        parts.append(render_loc(loc))
    parts.append(err.message)
    return ": ".join(parts)


def pydantic_problem(exc: ValidationError | Sequence[ErrorDetails],
                     model: type[BaseModel] | None = None) -> tuple[Loc, str]:
    """The first problem of a validation error, as (field path, readable message)."""
    errors = exc.errors(include_url=False) if isinstance(exc, ValidationError) else exc
    first = errors[0]
    loc: Loc = tuple(first["loc"])
    kind = first["type"]
    msg = str(first["msg"]).removeprefix("Value error, ")
    value = first.get("input")
    if kind == "extra_forbidden":
        msg = "unknown field"
        if model is not None and len(loc) == 1:
            msg += f"; the fields of {model.__name__} are {', '.join(model.model_fields)}"
    elif kind != "missing" and isinstance(value, str | int | float):
        shown = repr(value)
        msg += f", got {shown if len(shown) <= 40 else shown[:37] + '...'}"
    if len(errors) > 1:
        more = len(errors) - 1
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return loc, msg


# ------------------------------------------------------------------------------- reading


def _where(path: Path, line: int | None = None) -> str:
    return str(path) if line is None else f"{path}:{line}"


def _kind(value: object) -> str:
    if value is None:
        return "nothing (empty)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} ({value!r:.40})"


def read_text(path: Path) -> str:
    """A UTF-8 text file's contents (a byte-order mark is dropped); ConfigError if unreadable."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError("file not found", (str(path),)) from None
    except IsADirectoryError:
        raise ConfigError("is a folder, expected a file", (str(path),)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (bad byte at offset {e.start})", (str(path),)) from None
    except OSError as e:
        raise ConfigError(f"cannot read the file: {e.strerror}", (str(path),)) from None


def _load_json(path: Path) -> Any:
    return parse_json(read_text(path), str(path))


def parse_json(text: str, where: str) -> Any:
    """JSON text read from ``where`` (a file name, for messages); duplicate keys are an error."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ConfigError(f"duplicate key {k!r} in a JSON object", (where,))
            out[k] = v
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise ConfigError(f"invalid JSON at column {e.colno}: {e.msg}",
                          (f"{where}:{e.lineno}",)) from None


# YAML: the node tree is kept beside the data so that a field path maps back to a line.


def _load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    text = read_text(path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_duplicate_keys(path, node, ())
        return loader.construct_document(node), node
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = e.problem or e.context or "cannot parse"
        if mark is None:
            raise ConfigError(f"YAML syntax error: {what}", (str(path),)) from None
        raise ConfigError(f"YAML syntax error at column {mark.column + 1}: {what}",
                          (_where(path, mark.line + 1),)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML error: {e}", (str(path),)) from None
    finally:
        loader.dispose()


def _check_duplicate_keys(path: Path, node: yaml.Node, loc: Loc) -> None:
    # PyYAML keeps the last of two equal keys without a word; a mandate defined twice is a mistake.
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                line = k.start_mark.line + 1
                if k.value in seen:
                    raise ConfigError(f"duplicate key {k.value!r} (first on line {seen[k.value]})",
                                      (_where(path, line), *loc, k.value))
                seen[k.value] = line
                _check_duplicate_keys(path, v, (*loc, k.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(path, item, (*loc, i))


def _line_of(node: yaml.Node | None, loc: Iterable[str | int]) -> int | None:
    """Line of the deepest node along ``loc`` (a key's own line for mapping entries)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    line = k.start_mark.line + 1
                    node = v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _validate_yaml(model: type[M], data: Any, path: Path, root: yaml.Node | None,
                   prefix: Loc = ()) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        loc, msg = pydantic_problem(e, model)
        full = (*prefix, *loc)
        raise ConfigError(msg, (_where(path, _line_of(root, full)), *full)) from None


def _read_csv(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()
              ) -> list[tuple[int, dict[str, str]]]:
    """Rows as (line number, {column: stripped non-empty cell}), header checked."""
    text = read_text(path)
    reader = csv.reader(io.StringIO(text), strict=True)
    expected = ",".join(required + optional)
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise ConfigError(f"empty file: expected a header line {expected}",
                              (_where(path, 1),))
        for col in header:
            if header.count(col) > 1:
                raise ConfigError(f"column {col!r} appears twice in the header",
                                  (_where(path, 1),))
            if col not in required and col not in optional:
                raise ConfigError(f"unknown column {col!r}; the columns are {expected}",
                                  (_where(path, 1),))
        missing = [c for c in required if c not in header]
        if missing:
            raise ConfigError(f"missing column{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(missing)} in the header; the columns are {expected}",
                              (_where(path, 1),))
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                raise ConfigError(f"expected {len(header)} fields ({','.join(header)}), "
                                  f"found {len(record)}", (_where(path, reader.line_num),))
            cells = {h: c.strip() for h, c in zip(header, record, strict=True) if c.strip()}
            rows.append((reader.line_num, cells))
    except csv.Error as e:
        raise ConfigError(f"CSV syntax error: {e}", (_where(path, reader.line_num),)) from None
    return rows


def _validate_row(model: type[M], row: dict[str, str], path: Path, line: int) -> M:
    try:
        return model.model_validate(row)
    except ValidationError as e:
        loc, msg = pydantic_problem(e, model)
        raise ConfigError(msg, (_where(path, line), *loc)) from None


# ------------------------------------------------------------------------------- loaders


def _instruments(path: Path) -> tuple[list[Instrument], dict[str, int]]:
    out: list[Instrument] = []
    lines: dict[str, int] = {}
    for line, row in _read_csv(path, ("symbol", "sector"),
                               ("lot_size", "tick_size", "currency", "beta")):
        ins = _validate_row(Instrument, row, path, line)
        if ins.symbol in lines:
            raise ConfigError(f"duplicate symbol {ins.symbol!r} (first on line "
                              f"{lines[ins.symbol]})", (_where(path, line), "symbol"))
        lines[ins.symbol] = line
        out.append(ins)
    if not out:
        raise ConfigError("no instruments: the file has a header but no rows", (str(path),))
    return out, lines


def load_instruments(path: str | Path) -> list[Instrument]:
    """Instruments from ``instruments.csv``, in file order."""
    return _instruments(Path(path))[0]


def _prices(path: Path) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    for line, row in _read_csv(path, ("symbol", "price")):
        p = _validate_row(_PriceRow, row, path, line)
        if p.symbol in out:
            raise ConfigError(f"duplicate symbol {p.symbol!r} (first on line "
                              f"{out[p.symbol][1]})", (_where(path, line), "symbol"))
        out[p.symbol] = (p.price, line)
    return out


def load_prices(path: str | Path) -> dict[str, float]:
    """Live marks from ``prices.csv``."""
    return {s: px for s, (px, _) in _prices(Path(path)).items()}


def _mapping_root(path: Path, data: Any, what: str) -> dict[Any, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"expected {what} at the top level, found {_kind(data)}",
                          (_where(path, 1),))
    return data


def load_mandates(path: str | Path) -> list[Mandate]:
    """Mandates from ``mandates.yaml`` (``mandates:`` mapping id -> fields), in file order."""
    path = Path(path)
    data, root = _load_yaml(path)
    top = _mapping_root(path, data, "a mapping with a 'mandates:' key")
    for key in top:
        if key != "mandates":
            raise ConfigError(f"unknown top-level key {key!r}; expected only 'mandates'",
                              (_where(path, _line_of(root, [str(key)])), str(key)))
    if "mandates" not in top:
        raise ConfigError("missing the top-level 'mandates:' key", (_where(path, 1),))
    block = top["mandates"]
    if not isinstance(block, dict):
        raise ConfigError(f"'mandates' must map each mandate id to its fields, found "
                          f"{_kind(block)}", (_where(path, _line_of(root, ["mandates"])),
                                              "mandates"))
    out: list[Mandate] = []
    for key, fields in block.items():
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise ConfigError(f"a mandate id must be a name, found {key!r}",
                              (_where(path, _line_of(root, ["mandates"])), "mandates"))
        mid = str(key)
        here = ("mandates", mid)
        if fields is None:
            fields = {}
        if not isinstance(fields, dict):
            raise ConfigError(f"expected the mandate's fields as a mapping, found {_kind(fields)}",
                              (_where(path, _line_of(root, here)), *here))
        if "mandate_id" in fields and str(fields["mandate_id"]) != mid:
            raise ConfigError(f"mandate_id {fields['mandate_id']!r} differs from its key {mid!r}"
                              " (the id is taken from the key; leave mandate_id out)",
                              (_where(path, _line_of(root, (*here, "mandate_id"))), *here,
                               "mandate_id"))
        out.append(_validate_yaml(Mandate, {**fields, "mandate_id": mid}, path, root, here))
    return out


def _risk(path: Path) -> tuple[RiskConfig, yaml.Node | None]:
    data, root = _load_yaml(path)
    top = _mapping_root(path, data, "a mapping of risk settings")
    return _validate_yaml(RiskConfig, top, path, root), root


def load_risk(path: str | Path) -> RiskConfig:
    """Firm limits from ``risk.yaml``."""
    return _risk(Path(path))[0]


def _json_list(path: Path, what: str) -> list[Any]:
    data = _load_json(path)
    if not isinstance(data, list):
        raise ConfigError(f"expected a JSON list of {what}, found {_kind(data)}", (str(path),))
    return data


def _validate_items(model: type[M], items: list[Any], path: Path, id_field: str) -> list[M]:
    out: list[M] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"expected an object, found {_kind(item)}", (str(path), i))
        try:
            out.append(model.model_validate(item))
        except ValidationError as e:
            loc, msg = pydantic_problem(e, model)
            ident = item.get(id_field)
            if isinstance(ident, str) and loc != (id_field,):
                msg += f" ({id_field} {ident})"
            raise ConfigError(msg, (str(path), i, *loc)) from None
    return out


def load_accounts(path: str | Path) -> list[Account]:
    """Accounts from ``accounts.json`` (a JSON list of Account objects)."""
    path = Path(path)
    accounts = _validate_items(Account, _json_list(path, "accounts"), path, "account_id")
    first: dict[str, int] = {}
    for i, acct in enumerate(accounts):
        if acct.account_id in first:
            raise ConfigError(f"duplicate account_id {acct.account_id!r} (first at index "
                              f"{first[acct.account_id]})", (str(path), i, "account_id"))
        first[acct.account_id] = i
    return accounts


def load_orders(path: str | Path) -> list[BlockOrder]:
    """Block orders from a JSON list, in file order.

    Two orders with the same id are not an error here: refusing the second is layer 1's job.
    """
    path = Path(path)
    return _validate_items(BlockOrder, _json_list(path, "block orders"), path, "order_id")


def load_day(path: str | Path) -> TradingDay:
    """A trading day from ``day.yaml``: ``as_of`` and the orders file (relative to it)."""
    path = Path(path)
    data, root = _load_yaml(path)
    top = _mapping_root(path, data, "a mapping with as_of and orders")
    return _validate_yaml(TradingDay, top, path, root)


def load_book(folder: str | Path) -> Book:
    """The book in ``folder`` (see the module docstring for the files), checked across files."""
    folder = Path(folder)
    if not folder.exists():
        raise ConfigError("book folder not found", (str(folder),))
    if not folder.is_dir():
        raise ConfigError(f"not a folder; a book is a folder holding {', '.join(BOOK_FILES)}",
                          (str(folder),))
    instruments, _ = _instruments(folder / INSTRUMENTS)
    symbols = {i.symbol for i in instruments}
    prices_path = folder / PRICES
    prices = _prices(prices_path)
    for sym, (_, line) in prices.items():
        if sym not in symbols:
            raise ConfigError(f"unknown symbol {sym!r}: not in {INSTRUMENTS}",
                              (_where(prices_path, line), "symbol"))
    mandates = load_mandates(folder / MANDATES)
    risk_path = folder / RISK
    risk, risk_root = _risk(risk_path)
    for sym in risk.instrument_limits:
        if sym not in symbols:
            where = ("instrument_limits", sym)
            raise ConfigError(f"unknown symbol {sym!r}: not in {INSTRUMENTS}",
                              (_where(risk_path, _line_of(risk_root, where)), *where))
    accounts_path = folder / ACCOUNTS
    accounts = load_accounts(accounts_path)
    mandate_ids = [m.mandate_id for m in mandates]
    for i, acct in enumerate(accounts):
        at = (str(accounts_path), i)
        if acct.mandate_id not in mandate_ids:
            raise ConfigError(f"mandate {acct.mandate_id!r} of account {acct.account_id} is not "
                              f"defined in {MANDATES} (defined: {', '.join(mandate_ids)})",
                              (*at, "mandate_id"))
        for field, syms in (("positions", acct.positions), ("open_orders", acct.open_orders)):
            for sym in syms:
                if sym not in symbols:
                    raise ConfigError(f"unknown symbol {sym!r} in account {acct.account_id}: "
                                      f"not in {INSTRUMENTS}", (*at, field, sym))
        for sym, qty in acct.positions.items():
            if qty != 0 and sym not in prices:
                raise ConfigError(f"account {acct.account_id} holds {sym} but {PRICES} has no "
                                  "price for it", (*at, "positions", sym))
    try:
        return Book(instruments=instruments, mandates=mandates, accounts=accounts, risk=risk,
                    prices={s: px for s, (px, _) in prices.items()})
    except ValidationError as e:
        # The checks above should leave nothing for the model; this keeps any rule added to
        # Book later a ConfigError naming the folder.
        loc, msg = pydantic_problem(e, Book)
        raise ConfigError(msg, (str(folder), *loc)) from None
