"""Loading book folders, orders and days: the shipped sample, and every kind of broken file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mats import sample
from mats.config import (
    BOOK_FILES,
    format_error,
    load_book,
    load_day,
    load_instruments,
    load_mandates,
    load_orders,
    load_prices,
    load_risk,
    render_loc,
)
from mats.engine import Engine
from mats.errors import ConfigError, OrderError

# ------------------------------------------------------------------------------ helpers


def edit(path: Path, old: str, new: str) -> str:
    """Replaces the first ``old`` in the file with ``new``; returns the new text."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    return text


def line_of(text: str, needle: str, start: int = 0) -> int:
    return text.count("\n", 0, text.index(needle, start)) + 1


def edit_accounts(book: Path, change: Any) -> None:
    path = book / "accounts.json"
    accounts = json.loads(path.read_text(encoding="utf-8"))
    change(accounts)
    path.write_text(json.dumps(accounts, indent=2), encoding="utf-8")


def config_error(fn: Any, *args: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return info.value


# ------------------------------------------------------------------------------ happy path


def test_sample_book_loads(sample_dir: Path) -> None:
    book = load_book(sample_dir)
    assert len(book.instruments) == sum(n for n, *_ in sample.SECTORS.values())
    assert len(book.accounts) == sample.N_ACCOUNTS
    assert {a.account_type for a in book.accounts} == {"cash", "margin"}
    assert set(book.prices) == {i.symbol for i in book.instruments}
    mandates = {m.mandate_id for m in book.mandates}
    assert {a.mandate_id for a in book.accounts} <= mandates
    assert {s for a in book.accounts for s in a.strategies} == set(sample.STRATEGIES)
    assert book.risk.default_instrument_limit is not None
    assert book.risk.restricted_symbols
    Engine(book)  # the core accepts it too


def test_sample_orders_and_day_load(sample_dir: Path) -> None:
    day = load_day(sample_dir / "day.yaml")
    assert day.as_of == sample.AS_OF
    orders = load_orders(sample_dir / day.orders)
    assert len(orders) >= 100
    assert {o.method.value for o in orders} == {
        "net_liq", "available_equity", "equal", "ratios", "percent", "shares", "target_weight"}
    assert {o.side.value for o in orders} == {"buy", "sell"}
    assert {o.strategy for o in orders} == set(sample.STRATEGIES)


def test_mandate_id_comes_from_the_key(sample_dir: Path) -> None:
    mandates = load_mandates(sample_dir / "mandates.yaml")
    esg = next(m for m in mandates if m.mandate_id == "esg_cash")
    assert "Energy" in esg.restricted_sectors
    assert esg.restricted_symbols


def test_sample_is_reproducible(tmp_path: Path, sample_dir: Path) -> None:
    written = sample.write_sample(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in sample_dir.iterdir())
    for p in written:
        assert p.read_bytes() == (sample_dir / p.name).read_bytes(), p.name
    assert sum(p.stat().st_size for p in written) < 300_000


def test_sample_main_writes_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sample.main([str(tmp_path / "out")]) == 0
    assert set(BOOK_FILES) <= {p.name for p in (tmp_path / "out").iterdir()}
    assert "wrote" in capsys.readouterr().out


def test_optional_instrument_columns_take_defaults(tmp_path: Path) -> None:
    p = tmp_path / "instruments.csv"
    p.write_text("symbol,sector\nAAA,Energy\n\nBBB,Utilities\n", encoding="utf-8")
    ins = load_instruments(p)
    assert [(i.symbol, i.lot_size, i.tick_size, i.currency) for i in ins] == [
        ("AAA", 1, 0.01, "USD"), ("BBB", 1, 0.01, "USD")]


# ------------------------------------------------------------------------------ missing things


def test_missing_folder(tmp_path: Path) -> None:
    err = config_error(load_book, tmp_path / "nope")
    assert err.loc == (str(tmp_path / "nope"),)
    assert "not found" in err.message


def test_folder_is_a_file(book_copy: Path) -> None:
    err = config_error(load_book, book_copy / "risk.yaml")
    assert "not a folder" in err.message


@pytest.mark.parametrize("name", BOOK_FILES)
def test_missing_file(book_copy: Path, name: str) -> None:
    (book_copy / name).unlink()
    err = config_error(load_book, book_copy)
    assert err.loc == (str(book_copy / name),)
    assert err.message == "file not found"


def test_not_utf8(book_copy: Path) -> None:
    (book_copy / "risk.yaml").write_bytes(b"price_collar_pct: 5\n# \xff\xfe\n")
    err = config_error(load_book, book_copy)
    assert err.loc == (str(book_copy / "risk.yaml"),)
    assert "UTF-8" in err.message


# ------------------------------------------------------------------------------ YAML


def test_yaml_syntax_error_names_the_line(book_copy: Path) -> None:
    p = book_copy / "mandates.yaml"
    text = edit(p, "  esg_cash:\n", "  esg_cash:\n    restricted_sectors: [Energy\n")
    err = config_error(load_book, book_copy)
    where = str(err.loc[0])
    assert where.startswith(f"{p}:")
    line = int(where.rsplit(":", 1)[1])
    # the parser notices the unclosed bracket at or after the line that opens it
    assert line >= line_of(text, "restricted_sectors: [Energy\n")
    assert "YAML syntax error" in err.message


def test_yaml_top_level_not_a_mapping(book_copy: Path) -> None:
    p = book_copy / "mandates.yaml"
    p.write_text("- growth_cash\n- value_cash\n", encoding="utf-8")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:1",)
    assert "found a list" in err.message


def test_yaml_empty_file(book_copy: Path) -> None:
    p = book_copy / "risk.yaml"
    p.write_text("# nothing here\n", encoding="utf-8")
    err = config_error(load_risk, p)
    assert err.loc == (f"{p}:1",)
    assert "empty" in err.message


def test_mandates_key_missing_or_unknown(tmp_path: Path) -> None:
    p = tmp_path / "mandates.yaml"
    p.write_text("mandate:\n  a: {}\n", encoding="utf-8")
    err = config_error(load_mandates, p)
    assert err.loc == (f"{p}:1", "mandate")
    assert "unknown top-level key" in err.message
    p.write_text("{}\n", encoding="utf-8")
    assert "missing the top-level 'mandates:'" in config_error(load_mandates, p).message
    p.write_text("mandates: [a, b]\n", encoding="utf-8")
    err = config_error(load_mandates, p)
    assert err.loc == (f"{p}:1", "mandates")


def test_unknown_mandate_field(book_copy: Path) -> None:
    p = book_copy / "mandates.yaml"
    text = edit(p, "  esg_cash:\n", "  esg_cash:\n    max_positon_pct: 6.0\n")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:{line_of(text, 'max_positon_pct')}", "mandates", "esg_cash",
                       "max_positon_pct")
    assert "unknown field" in err.message
    assert "max_position_pct" in err.message  # the fields it could have meant


def test_wrong_type_in_mandate(book_copy: Path) -> None:
    p = book_copy / "mandates.yaml"
    start = p.read_text(encoding="utf-8").index("  value_cash:")
    text = p.read_text(encoding="utf-8")
    old = text[start:].split("max_position_pct: ", 1)[1].split("\n", 1)[0]
    text = text[:start] + text[start:].replace(f"max_position_pct: {old}",
                                               "max_position_pct: ten", 1)
    p.write_text(text, encoding="utf-8")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:{line_of(text, 'max_position_pct: ten')}", "mandates",
                       "value_cash", "max_position_pct")
    assert "valid number" in err.message
    assert "'ten'" in err.message


def test_nested_field_line(book_copy: Path) -> None:
    p = book_copy / "mandates.yaml"
    text = edit(p, "    sector_caps_pct: {Financials: 35.0}",
                "    sector_caps_pct:\n      Financials: 135.0")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:{line_of(text, 'Financials: 135.0')}", "mandates", "value_cash",
                       "sector_caps_pct", "Financials")
    assert "less than or equal to 100" in err.message


def test_duplicate_mandate_id(book_copy: Path) -> None:
    p = book_copy / "mandates.yaml"
    text = p.read_text(encoding="utf-8")
    first = line_of(text, "  growth_cash:")
    text = edit(p, "  value_cash:\n", "  growth_cash:\n    max_position_pct: 3\n  value_cash:\n")
    second = line_of(text, "  growth_cash:", text.index("  growth_cash:") + 1)
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:{second}", "mandates", "growth_cash")
    assert f"first on line {first}" in err.message


def test_mandate_id_field_must_match_key(book_copy: Path) -> None:
    p = book_copy / "mandates.yaml"
    text = edit(p, "  esg_cash:\n", "  esg_cash:\n    mandate_id: other\n")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:{line_of(text, 'mandate_id: other')}", "mandates", "esg_cash",
                       "mandate_id")


def test_risk_unknown_field_and_nested_type(book_copy: Path) -> None:
    p = book_copy / "risk.yaml"
    text = edit(p, "price_collar_pct:", "price_coll_pct: 4\nprice_collar_pct:")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:{line_of(text, 'price_coll_pct')}", "price_coll_pct")
    assert "unknown field" in err.message

    text = edit(p, "price_coll_pct: 4\n", "")
    old = text.split("throttle: ", 1)[1].split("\n", 1)[0]
    text = edit(p, f"throttle: {old}", "throttle:\n  max_orders: -1\n  window_s: 1.0")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:{line_of(text, 'max_orders: -1')}", "throttle", "max_orders")
    assert "greater than 0" in err.message


def test_risk_limit_for_unknown_symbol(book_copy: Path) -> None:
    p = book_copy / "risk.yaml"
    text = edit(p, "instrument_limits:\n",
                "instrument_limits:\n  NOSUCH: {max_quantity: 10, max_notional: 100.0}\n")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:{line_of(text, 'NOSUCH')}", "instrument_limits", "NOSUCH")
    assert "unknown symbol" in err.message


def test_day_needs_a_zone(tmp_path: Path) -> None:
    p = tmp_path / "day.yaml"
    p.write_text("description: x\nas_of: '2025-06-13T14:30:00'\n", encoding="utf-8")
    err = config_error(load_day, p)
    assert err.loc == (f"{p}:2", "as_of")
    assert "timezone" in err.message


# ------------------------------------------------------------------------------ CSV


def test_instrument_bad_integer(book_copy: Path) -> None:
    p = book_copy / "instruments.csv"
    lines = p.read_text(encoding="utf-8").splitlines()
    cells = lines[7].split(",")
    cells[2] = "1.5"
    lines[7] = ",".join(cells)
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:8", "lot_size")
    assert "valid integer" in err.message


def test_instrument_header_problems(tmp_path: Path) -> None:
    p = tmp_path / "instruments.csv"
    p.write_text("symbol,sector,colour\nAAA,Energy,red\n", encoding="utf-8")
    err = config_error(load_instruments, p)
    assert err.loc == (f"{p}:1",)
    assert "unknown column 'colour'" in err.message
    p.write_text("symbol,lot_size\nAAA,1\n", encoding="utf-8")
    assert "missing column sector" in config_error(load_instruments, p).message
    p.write_text("", encoding="utf-8")
    assert "empty file" in config_error(load_instruments, p).message
    p.write_text("symbol,sector\n", encoding="utf-8")
    assert "no instruments" in config_error(load_instruments, p).message


def test_instrument_row_problems(tmp_path: Path) -> None:
    p = tmp_path / "instruments.csv"
    p.write_text("symbol,sector,beta\nAAA,Energy,1.1\nBBB,Energy\n", encoding="utf-8")
    err = config_error(load_instruments, p)
    assert err.loc == (f"{p}:3",)
    assert "expected 3 fields" in err.message
    p.write_text("symbol,sector\nAAA,Energy\nBBB,Energy\nAAA,Utilities\n", encoding="utf-8")
    err = config_error(load_instruments, p)
    assert err.loc == (f"{p}:4", "symbol")
    assert "first on line 2" in err.message
    p.write_text('symbol,sector\nAAA,"Energy\n', encoding="utf-8")
    assert "CSV syntax error" in config_error(load_instruments, p).message


def test_price_problems(book_copy: Path) -> None:
    p = book_copy / "prices.csv"
    text = p.read_text(encoding="utf-8")
    p.write_text(text + "NOSUCH,10.00\n", encoding="utf-8")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:{text.count(chr(10)) + 1}", "symbol")
    assert "unknown symbol 'NOSUCH'" in err.message

    first = text.splitlines()[1].split(",")[0]
    p.write_text(text.replace(f"\n{first},", f"\n{first},-3.5x", 1), encoding="utf-8")
    err = config_error(load_prices, p)
    assert err.loc == (f"{p}:2", "price")

    p.write_text(text + f"{first},1.00\n", encoding="utf-8")
    err = config_error(load_prices, p)
    assert "duplicate symbol" in err.message


# ------------------------------------------------------------------------------ JSON


def test_accounts_invalid_json(book_copy: Path) -> None:
    p = book_copy / "accounts.json"
    text = p.read_text(encoding="utf-8")
    p.write_text(text.replace('"broker"', "broker", 1), encoding="utf-8")
    err = config_error(load_book, book_copy)
    assert err.loc == (f"{p}:{line_of(text, chr(34) + 'broker')}",)
    assert "invalid JSON" in err.message


def test_accounts_not_a_list(book_copy: Path) -> None:
    p = book_copy / "accounts.json"
    p.write_text('{"accounts": []}', encoding="utf-8")
    err = config_error(load_book, book_copy)
    assert err.loc == (str(p),)
    assert "expected a JSON list of accounts" in err.message


def test_account_undefined_mandate(book_copy: Path) -> None:
    def change(accounts: list[dict[str, Any]]) -> None:
        accounts[4]["mandate_id"] = "aggressive"

    edit_accounts(book_copy, change)
    err = config_error(load_book, book_copy)
    assert err.loc == (str(book_copy / "accounts.json"), 4, "mandate_id")
    assert "'aggressive'" in err.message
    assert "mandates.yaml" in err.message


def test_account_wrong_type(book_copy: Path) -> None:
    def change(accounts: list[dict[str, Any]]) -> None:
        accounts[2]["net_liq"] = "lots"

    edit_accounts(book_copy, change)
    err = config_error(load_book, book_copy)
    assert err.loc == (str(book_copy / "accounts.json"), 2, "net_liq")
    assert "valid number" in err.message
    assert "ACC-003" in err.message  # which account, not only its index


def test_account_unknown_field(book_copy: Path) -> None:
    def change(accounts: list[dict[str, Any]]) -> None:
        accounts[0]["nav"] = 1.0

    edit_accounts(book_copy, change)
    err = config_error(load_book, book_copy)
    assert err.loc == (str(book_copy / "accounts.json"), 0, "nav")
    assert "unknown field" in err.message


def test_duplicate_account_id(book_copy: Path) -> None:
    def change(accounts: list[dict[str, Any]]) -> None:
        accounts[9]["account_id"] = accounts[3]["account_id"]

    edit_accounts(book_copy, change)
    err = config_error(load_book, book_copy)
    assert err.loc == (str(book_copy / "accounts.json"), 9, "account_id")
    assert "first at index 3" in err.message


def test_duplicate_json_key(book_copy: Path) -> None:
    p = book_copy / "accounts.json"
    edit(p, '"broker":', '"cash": 1.0, "broker":')
    err = config_error(load_book, book_copy)
    assert "duplicate key 'cash'" in err.message


def test_position_in_unknown_symbol(book_copy: Path) -> None:
    def change(accounts: list[dict[str, Any]]) -> None:
        accounts[1]["positions"]["NOSUCH"] = 10

    edit_accounts(book_copy, change)
    err = config_error(load_book, book_copy)
    assert err.loc == (str(book_copy / "accounts.json"), 1, "positions", "NOSUCH")


def test_holding_without_price(book_copy: Path) -> None:
    accounts = json.loads((book_copy / "accounts.json").read_text(encoding="utf-8"))
    sym = next(iter(accounts[0]["positions"]))
    p = book_copy / "prices.csv"
    p.write_text("".join(line for line in p.read_text(encoding="utf-8").splitlines(True)
                         if not line.startswith(f"{sym},")), encoding="utf-8")
    err = config_error(load_book, book_copy)
    assert err.loc == (str(book_copy / "accounts.json"), 0, "positions", sym)
    assert "no price" in err.message


def test_bad_order_in_orders_file(book_copy: Path) -> None:
    p = book_copy / "orders.json"
    orders = json.loads(p.read_text(encoding="utf-8"))
    i = next(k for k, o in enumerate(orders) if "quantity" in o and k > 2)
    orders[i]["quantity"] = 0
    p.write_text(json.dumps(orders), encoding="utf-8")
    err = config_error(load_orders, p)
    assert err.loc == (str(p), i, "quantity")
    assert "greater than 0" in err.message
    assert orders[i]["order_id"] in err.message


# ------------------------------------------------------------------------------ rendering


def test_render_loc() -> None:
    assert render_loc(("orders", 3, "quantity")) == "orders[3].quantity"
    assert render_loc(("sector_caps_pct", "Real Estate")) == "sector_caps_pct['Real Estate']"
    assert render_loc((0, "positions", "BRK.B")) == "[0].positions['BRK.B']"


def test_format_error() -> None:
    err = ConfigError("Input should be a valid number", ("book/m.yaml:4", "mandates", "x", "y"))
    assert format_error(err) == "book/m.yaml:4: mandates.x.y: Input should be a valid number"
    assert format_error(ConfigError("file not found", ("a/b.csv",))) == "a/b.csv: file not found"
    assert format_error(OrderError("bad", ("orders", 2, "symbol"))) == "orders[2].symbol: bad"
