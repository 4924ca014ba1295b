"""The ``mats`` command end to end: exit codes, JSON on stdout, one-line errors on stderr."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mats.cli import SCHEMAS, main
from mats.config import load_book
from mats.models import Decision

MATS = Path(sys.executable).parent / "mats"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def request_of(sample_dir: Path) -> dict[str, Any]:
    req: dict[str, Any] = json.loads((sample_dir / "request.json").read_text(encoding="utf-8"))
    req["book"] = str(sample_dir)
    return req


def write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def assert_refused(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2
    assert out == ""
    assert err.startswith("mats: error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


# ------------------------------------------------------------------------------ allocate


def test_allocate_sample_request(sample_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["allocate", "--request", str(sample_dir / "request.json")], capsys)
    assert (code, err) == (0, "")
    decisions = [Decision.model_validate(d) for d in json.loads(out)["decisions"]]
    request = json.loads((sample_dir / "request.json").read_text(encoding="utf-8"))
    assert [d.order_id for d in decisions] == [o["order_id"] for o in request["orders"]]
    assert {d.status for d in decisions} == {"accepted", "rejected"}
    for d in decisions:
        assert sum(line.quantity for line in d.lines) == d.placed_quantity


def test_reference_engine_agrees(sample_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req = str(sample_dir / "request.json")
    _, rust, _ = run(["allocate", "--request", req], capsys)
    code, ref, err = run(["allocate", "--request", req, "--engine", "reference"], capsys)
    assert (code, err) == (0, "")

    def key(doc: str) -> list[Any]:
        return [(d["status"], d["stage"], d["placed_quantity"],
                 [(line["account_id"], line["quantity"]) for line in d["lines"]])
                for d in json.loads(doc)["decisions"]]

    assert key(rust) == key(ref)


def test_allocate_out_file_and_relative_book(tmp_path: Path, sample_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    req = request_of(sample_dir)
    (tmp_path / "requests").mkdir()
    req["book"] = "../book"  # relative to the request file's folder, not the working folder
    shutil.copytree(sample_dir, tmp_path / "book")
    path = write(tmp_path / "requests" / "r.json", req)
    out_file = tmp_path / "decisions.json"
    code, out, err = run(["allocate", "--request", str(path), "--out", str(out_file)], capsys)
    assert (code, out, err) == (0, "", "")
    assert len(json.loads(out_file.read_text(encoding="utf-8"))["decisions"]) == len(req["orders"])


def test_allocate_inline_book_and_prices(tmp_path: Path, sample_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    req = request_of(sample_dir)
    req["book"] = load_book(sample_dir).model_dump(mode="json")
    req["orders"] = req["orders"][:1]
    sym = req["orders"][0]["symbol"]
    req["prices"] = {sym: 123.45}
    code, out, err = run(["allocate", "--request", str(write(tmp_path / "r.json", req))], capsys)
    assert (code, err) == (0, "")
    assert json.loads(out)["decisions"][0]["live_price"] == 123.45


def test_allocate_stdin(sample_dir: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request_of(sample_dir))))
    code, out, _ = run(["allocate", "--request", "-"], capsys)
    assert code == 0
    assert json.loads(out)["decisions"]


def _bad_json(req: dict[str, Any]) -> str:
    return json.dumps(req, indent=2).replace('"orders": [', '"orders": [,', 1)


def _lot_order(req: dict[str, Any], sample_dir: Path) -> dict[str, Any]:
    book = load_book(sample_dir)
    ins = next(i for i in book.instruments if i.lot_size > 1)
    order = dict(req["orders"][0], symbol=ins.symbol, quantity=ins.lot_size + ins.lot_size // 2,
                 reference_price=book.prices[ins.symbol])
    order.pop("limit_price", None)
    return dict(req, orders=[order])


CASES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "bad JSON": (_bad_json, ("r.json:4:", "invalid JSON")),
    "not an object": (lambda req: "[1, 2]", ("r.json", "expected a JSON object")),
    "zero quantity": (
        lambda req: dict(req, orders=[*req["orders"][:1], dict(req["orders"][0], quantity=0)]),
        ("r.json: orders[1].quantity: Input should be greater than 0",)),
    "unknown order field": (
        lambda req: dict(req, orders=[dict(req["orders"][0], colour="red")]),
        ("orders[0].colour: unknown field",)),
    "as_of without zone": (lambda req: dict(req, as_of="2025-06-13T14:30:00"),
                           ("as_of:", "timezone")),
    "book of the wrong type": (lambda req: dict(req, book=7), ("book:", "book folder")),
    "inline book invalid": (lambda req: dict(req, book={"instruments": [], "mandates": [],
                                                        "accounts": 3}),
                            ("r.json: book.accounts: Input should be a valid list",)),
    "book folder missing": (lambda req: dict(req, book="nowhere"),
                            ("nowhere: book folder not found",)),
    "unknown symbol in prices": (lambda req: dict(req, prices={"NOSUCH": 1.0}),
                                 ("prices.NOSUCH", "unknown symbol")),
    "unknown symbol in an order": (
        lambda req: dict(req, orders=[*req["orders"][:2],
                                      dict(req["orders"][0], symbol="NOSUCH")]),
        ("r.json: orders[2].symbol", "NOSUCH")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_allocate_refuses_malformed_input(case: str, tmp_path: Path, sample_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    make, needles = CASES[case]
    doc = make(request_of(sample_dir))
    path = tmp_path / "r.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2), encoding="utf-8")
    assert_refused(*run(["allocate", "--request", str(path)], capsys), *needles)


def test_allocate_refuses_order_not_in_lots(tmp_path: Path, sample_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "r.json", _lot_order(request_of(sample_dir), sample_dir))
    for engine in ("rust", "reference"):
        code, out, err = run(["allocate", "--request", str(path), "--engine", engine], capsys)
        assert_refused(code, out, err, "orders[0]", "lots")


def test_allocate_broken_book_folder_names_the_file(book_copy: Path, tmp_path: Path,
                                                    sample_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (book_copy / "risk.yaml").write_text("throttle: {max_orders: 0, window_s: 1}\n",
                                         encoding="utf-8")
    req = dict(request_of(sample_dir), book=str(book_copy))
    code, out, err = run(["allocate", "--request", str(write(tmp_path / "r.json", req))], capsys)
    assert_refused(code, out, err, f"{book_copy / 'risk.yaml'}:1: throttle.max_orders:")


def test_allocate_missing_request_file(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["allocate", "--request", str(tmp_path / "none.json")], capsys)
    assert_refused(code, out, err, "none.json: file not found")


def test_allocate_unwritable_out(tmp_path: Path, sample_dir: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["allocate", "--request", str(sample_dir / "request.json"),
                        "--out", str(tmp_path / "no" / "such" / "dir.json")], capsys)
    assert code == 1
    assert "cannot write" in err


# ------------------------------------------------------------------------------ the rest


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([], capsys)
    assert code == 2
    assert "usage: mats" in err
    assert "allocate" in err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert "schema" in out
    code, out, _ = run(["allocate", "--help"], capsys)
    assert code == 0
    assert "exit status" in out
    assert "all or nothing" in out


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["allocate"], capsys)
    assert code == 2
    assert "--request" in err
    code, _, err = run(["frobnicate"], capsys)
    assert code == 2


def test_schema_all(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["schema"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == set(SCHEMAS)
    assert "orders" in doc["request"]["properties"]
    assert "placed_quantity" in doc["decision"]["properties"]


@pytest.mark.parametrize("model", list(SCHEMAS))
def test_schema_one(model: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["schema", "--model", model], capsys)
    assert code == 0
    assert json.loads(out)["type"] == "object"


def test_check(sample_dir: Path, book_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", str(sample_dir), "--orders", str(sample_dir / "orders.json")],
                       capsys)
    assert code == 0
    assert "50 accounts" in out
    (book_copy / "instruments.csv").write_text("symbol,sector\nAAA,\n", encoding="utf-8")
    code, out, err = run(["check", str(book_copy)], capsys)
    assert_refused(code, out, err, "instruments.csv:2: sector")


# ------------------------------------------------------------------------------ the real command


def test_installed_command(tmp_path: Path, sample_dir: Path) -> None:
    assert MATS.exists(), "run `make venv`: the mats entry point is missing"
    good = subprocess.run([str(MATS), "allocate", "--request", str(sample_dir / "request.json")],
                          capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["decisions"]

    req = request_of(sample_dir)
    req["orders"][1]["quantity"] = -5
    req["orders"][1].pop("target_weight_pct", None)
    req["orders"][1]["method"] = "net_liq"
    bad = subprocess.run([str(MATS), "allocate", "--request",
                          str(write(tmp_path / "r.json", req))],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "orders[1].quantity" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_db_and_gateway_commands_are_handed_to_their_modules(tmp_path: Path,
                                                             capsys: Any) -> None:
    from mats import cli

    # no cluster in an empty run folder: status says so and exits 1
    assert cli.main(["db", "status", "--run-dir", str(tmp_path / "pg")]) == 1
    assert "no cluster" in capsys.readouterr().out
    # the gateway side's own parser answers for `mats gateway`
    assert cli.main(["gateway", "run"]) == 2
    assert "NAME" in capsys.readouterr().err.upper()
