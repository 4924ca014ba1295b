"""The ``mats`` command: allocate block orders from a JSON request, print JSON schemas.

Exit status: 0 success; 2 malformed input (the one-line message on stderr names the file and
field); 1 the output could not be written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaMode
from pydantic_core import ErrorDetails

from mats.config import (
    format_error,
    load_book,
    load_orders,
    parse_json,
    pydantic_problem,
    read_text,
    render_loc,
)
from mats.engine import Engine, load_decision
from mats.errors import ConfigError, MatsError
from mats.models import AllocateRequest, BlockOrder, Book, Decision, Mandate
from mats.reference import ReferenceEngine

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INPUT = 2

SCHEMAS: dict[str, tuple[type[BaseModel], JsonSchemaMode]] = {
    "request": (AllocateRequest, "validation"),
    "decision": (Decision, "serialization"),
    "book": (Book, "validation"),
    "order": (BlockOrder, "validation"),
    "mandate": (Mandate, "validation"),
}

ALLOCATE_HELP = """\
The request is a JSON object (`mats schema --model request` prints its schema):

  book     a book object, or the path of a book folder (relative to the request file's
           folder; the folder layout is described in `python -m pydoc mats.config`)
  orders   block orders, decided one after the other against one engine
  as_of    decision time, ISO 8601 with a zone (default: now)
  prices   live marks applied before the first order, {"SYMBOL": price}

The output is {"decisions": [...]}: one Decision per order, in order. An order that risk
refuses (layer 1 or layer 2) is a decision with status "rejected", not an error.

exit status:
  0  decisions written
  2  the input is malformed: the request or the book folder (bad JSON, YAML or CSV, a missing
     file, a field of the wrong type, an unknown field), or an order the engine cannot take as
     given (unknown symbol or account, a quantity that is not a whole number of lots). The
     one-line message on stderr names the file and field, e.g. `orders[3].quantity`. Nothing is
     written: each decision depends on the orders before it, so the request is all or nothing.
  1  the output could not be written
"""


class _Refused(Exception):
    """A problem with the input, already worded for the user."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mats",
        description="MATS: allocation and two-layer pre-trade risk for block orders across "
                    "many accounts.",
        epilog="Run `mats COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    alloc = sub.add_parser(
        "allocate", help="decide block orders from a JSON request and print the decisions",
        description="Decide block orders: layer-1 risk, allocation across accounts and layer-2 "
                    "risk at the live price, by the Rust engine or its Python reference.",
        epilog=ALLOCATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    alloc.add_argument("--request", required=True, metavar="FILE.json",
                       help="the request (`-` reads standard input)")
    alloc.add_argument("--engine", choices=("rust", "reference"), default="rust",
                       help="rust (default) or the plain-Python reference engine")
    alloc.add_argument("--out", metavar="FILE", help="write the decisions here, not stdout")
    alloc.set_defaults(func=_cmd_allocate)

    schema = sub.add_parser(
        "schema", help="print JSON schemas of the input and output models",
        description="Print JSON schemas (draft 2020-12). Without --model, all of them in one "
                    "object keyed by name.")
    schema.add_argument("--model", choices=tuple(SCHEMAS), help="only this model's schema")
    schema.set_defaults(func=_cmd_schema)

    check = sub.add_parser(
        "check", help="load a book folder (and orders) and report what is wrong, if anything",
        description="Load a book folder and, optionally, an orders file; exit 0 and print a "
                    "summary if both are valid, else exit 2 naming the file, line and field.")
    check.add_argument("book", metavar="BOOK_DIR", help="the book folder")
    check.add_argument("--orders", metavar="FILE.json", help="a JSON list of block orders")
    check.set_defaults(func=_cmd_check)
    return parser


def _version() -> str:
    try:
        return version("mats")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mats`` command; returns the exit status."""
    parser = build_parser()
    args_list = sys.argv[1:] if argv is None else list(argv)
    if not args_list:
        parser.print_help(sys.stderr)
        return EXIT_INPUT
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # --help, --version, or a usage error already reported by argparse
        return e.code if isinstance(e.code, int) else EXIT_INPUT
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_INPUT
    try:
        code: int = args.func(args)
        return code
    except _Refused as e:
        _error(str(e))
        return EXIT_INPUT
    except MatsError as e:
        _error(format_error(e))
        return EXIT_INPUT


def _error(message: str) -> None:
    print(f"mats: error: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------ allocate


def _cmd_allocate(args: argparse.Namespace) -> int:
    if args.request == "-":
        where, base, text = "<stdin>", Path.cwd(), sys.stdin.read()
    else:
        path = Path(args.request)
        where, base, text = str(path), path.parent, read_text(path)
    request = _parse_request(text, where)
    book = _book_of(request, base, where)
    try:
        decisions = allocate(request, book, engine=args.engine, where=where)
    except ConfigError:
        raise
    except MatsError as e:
        raise _Refused(f"{where}: {format_error(e)}") from None
    out = json.dumps({"decisions": [d.model_dump(mode="json") for d in decisions]}, indent=2)
    if args.out is None:
        return _write(sys.stdout, out + "\n")
    try:
        Path(args.out).write_text(out + "\n", encoding="utf-8")
    except OSError as e:
        _error(f"{args.out}: cannot write: {e.strerror}")
        return EXIT_FAILURE
    return EXIT_OK


def _parse_request(text: str, where: str) -> AllocateRequest:
    raw = parse_json(text, where)
    if not isinstance(raw, dict):
        raise _Refused(f"{where}: expected a JSON object with book and orders, "
                    f"found a {type(raw).__name__}")
    try:
        return AllocateRequest.model_validate(raw)
    except ValidationError as e:
        errors = _untag_book(e.errors(include_url=False), raw.get("book"))
        if not errors:
            raise _Refused(f"{where}: book: expected a book object or the path of a book "
                        f"folder, found {raw.get('book')!r:.40}") from None
        loc, msg = pydantic_problem(errors, AllocateRequest)
        raise _Refused(f"{where}: {render_loc(loc)}: {msg}") from None


def _untag_book(errors: list[ErrorDetails], book: Any) -> list[ErrorDetails]:
    """Errors of ``book: Book | str`` as the user meant it: of the branch the input can be.

    pydantic reports a failed union under both branches, tagged in the path
    (``book.function-after[...Book].accounts``, ``book.str``).
    """
    out: list[ErrorDetails] = []
    for err in errors:
        loc = err["loc"]
        if len(loc) >= 2 and loc[0] == "book" and isinstance(loc[1], str):
            if not isinstance(book, dict) or loc[1] == "str":
                continue
            out.append({**err, "loc": ("book", *loc[2:])})
        else:
            out.append(err)
    return out


def _book_of(request: AllocateRequest, base: Path, where: str) -> Book:
    if isinstance(request.book, Book):
        return request.book
    folder = Path(request.book)
    return load_book(folder if folder.is_absolute() else base / folder)


def allocate(request: AllocateRequest, book: Book, *, engine: str = "rust",
             where: str = "request") -> list[Decision]:
    """Every order of ``request`` decided against ``book``, in order.

    Raises :class:`mats.errors.MatsError` subclasses, their ``loc`` starting ``("orders", i)``
    for an order the engine cannot take as given.
    """
    symbols = {i.symbol for i in book.instruments}
    for sym in request.prices:
        if sym not in symbols:
            raise ConfigError(f"unknown symbol {sym!r}: the book has no such instrument",
                              (where, "prices", sym))
    decide: Any
    if engine == "rust":
        rust = Engine(book)
        rust.update_prices(request.prices)

        def decide(order: BlockOrder) -> Decision:
            return load_decision(rust.process(order, request.as_of))
    elif engine == "reference":
        ref = ReferenceEngine(book)
        ref.update_prices(dict(request.prices))

        def decide(order: BlockOrder) -> Decision:
            return Decision.model_validate(ref.process(order, request.as_of))
    else:
        raise ValueError(f"unknown engine {engine!r}")
    decisions = []
    for i, order in enumerate(request.orders):
        try:
            decisions.append(decide(order))
        except MatsError as e:
            raise type(e)(f"{e.message} (order {order.order_id})", ("orders", i, *e.loc)) from None
    return decisions


def _write(stream: TextIO, text: str) -> int:
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        # The reader went away (`mats schema | head`): not an error of ours. Point stdout at
        # devnull so that the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    return EXIT_OK


# ------------------------------------------------------------------------------ schema, check


def _cmd_schema(args: argparse.Namespace) -> int:
    def one(name: str) -> dict[str, Any]:
        model, mode = SCHEMAS[name]
        return model.model_json_schema(mode=mode)

    doc = one(args.model) if args.model else {name: one(name) for name in SCHEMAS}
    return _write(sys.stdout, json.dumps(doc, indent=2) + "\n")


def _cmd_check(args: argparse.Namespace) -> int:
    book = load_book(args.book)
    Engine(book)  # the core re-validates what it receives
    text = (f"{args.book}: {len(book.instruments)} instruments, {len(book.prices)} prices, "
            f"{len(book.mandates)} mandates, {len(book.accounts)} accounts")
    if args.orders:
        orders = load_orders(args.orders)
        text += f"; {args.orders}: {len(orders)} block orders"
    return _write(sys.stdout, text + "\n")


if __name__ == "__main__":
    sys.exit(main())
