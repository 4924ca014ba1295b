"""The ``mats`` command: allocate block orders from a JSON request, print JSON schemas, run Kafka.

Exit status: 0 success; 2 malformed input (the one-line message on stderr names the file and
field); 1 the output could not be written, or Kafka could not be started, reached or stopped.
"""

from __future__ import annotations

import argparse
import asyncio
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

from mats import kafka
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

    _add_kafka_parser(sub)
    sub.add_parser("db", help="start, stop and inspect the local PostgreSQL of the SQL store "
                              "(`mats db up|down|status|url|deps`; see --help)", add_help=False)
    # listed here for --help; their own parser (mats.gateway.cli) reads their options
    for name, text in _DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


# Commands of the gateway side, run by mats.gateway.cli (QuickFIX and aiohttp: the `gateways`
# extra); imported only when asked for.
_DELEGATED = {
    "gateway": "run a broker gateway process (`mats gateway run NAME`; see --help)",
    "broker-sim": "run the broker simulator (FIX 4.4 acceptor or HTTP API; see --help)",
}


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
    if args_list[0] == "db":
        from mats import pg

        return pg.main(args_list[1:], prog="mats db")
    if args_list[0] in _DELEGATED:
        try:
            from mats.gateway import cli as gateway_cli
        except ImportError as e:
            _error(f"{args_list[0]} needs the gateway packages ({e.name} is missing): "
                   "pip install 'mats[gateways]'")
            return EXIT_INPUT
        return gateway_cli.main(args_list)
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


# ------------------------------------------------------------------------------ kafka

KAFKA_HELP = """\
The local broker is a single Kafka 4 node in KRaft mode, run from the jars that
infra/kafka/pom.xml names (fetched with Maven on first use), with its configuration, data, logs
(logs/server.log) and pid file in the run folder. Its data survives `down` and `up`.

With MATS_KAFKA_BOOTSTRAP (or --bootstrap) set, MATS uses that Kafka instead: `up` creates the
topics there and `down` has nothing to stop.

environment:
  MATS_KAFKA_BOOTSTRAP  bootstrap servers of a Kafka to use instead of the local broker
  MATS_KAFKA_RUN_DIR    the local broker's run folder (default: run/kafka in the checkout)
  MATS_KAFKA_GATEWAYS   comma-separated gateways, one mats.orders.<gateway> topic each
  MATS_KAFKA_LIB        a folder of the broker's jars, for an install outside a checkout
  KAFKA_HEAP_OPTS       the broker JVM's heap options (default: -Xms256m -Xmx1g)

exit status:
  0  done (`status`: Kafka answers)
  1  Kafka could not be fetched, started, reached or stopped (`status`: it is not running;
     `new-day`: refused, and why)
  2  an option or environment variable is wrong
"""


def _add_kafka_parser(sub: Any) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--run-dir", metavar="DIR",
                       help="the local broker's run folder (default: $MATS_KAFKA_RUN_DIR, "
                            "else run/kafka in the checkout)")
    where.add_argument("--bootstrap", metavar="HOST:PORT[,...]",
                       help="use this Kafka, not the local broker (default: "
                            "$MATS_KAFKA_BOOTSTRAP)")
    gateways = argparse.ArgumentParser(add_help=False)
    gateways.add_argument("--gateway", action="append", metavar="NAME", dest="gateways",
                          help="a gateway, one mats.orders.NAME topic each; repeat for more "
                               "(default: $MATS_KAFKA_GATEWAYS, else "
                               f"{','.join(kafka.DEFAULT_GATEWAYS)})")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    group = sub.add_parser(
        "kafka", help="start, stop and inspect Kafka and the MATS topics",
        description="Run a single-node Kafka broker for MATS, or use any Kafka cluster, and "
                    "keep the MATS topics on it.",
        epilog=KAFKA_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    group.set_defaults(func=lambda _args: _usage(group))
    ksub = group.add_subparsers(dest="kafka_command", metavar="ACTION")

    up = ksub.add_parser(
        "up", parents=[where, gateways],
        help="start the local broker if needed, wait until it answers, create the topics",
        description="Fetch the jars if missing, write the configuration, format the storage "
                    "on first use, start the broker detached, wait until it answers and create "
                    "the missing topics. With external bootstrap servers, only create the "
                    "topics.")
    up.add_argument("--host", help=f"address the broker listens on (default: recorded in the "
                                   f"run folder, else {kafka.DEFAULT_HOST})")
    up.add_argument("--port", type=_int, help="client (PLAINTEXT) port; 0 picks a free one "
                                              f"(default: recorded, else {kafka.DEFAULT_PORT})")
    up.add_argument("--controller-port", type=_int,
                    help="KRaft controller port; 0 picks a free one (default: recorded, else "
                         f"{kafka.DEFAULT_CONTROLLER_PORT})")
    up.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                    help="how long to wait for the broker to answer (default: 60)")
    up.set_defaults(func=_cmd_kafka_up)

    down = ksub.add_parser(
        "down", parents=[where], help="stop the local broker (its data stays)",
        description="Stop the local broker: SIGTERM, then SIGKILL if it has not exited after "
                    "--timeout seconds. Its data stays in the run folder.")
    down.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                      help="how long to wait after SIGTERM (default: 30)")
    down.set_defaults(func=_cmd_kafka_down)

    st = ksub.add_parser(
        "status", parents=[where, gateways, as_json],
        help="is Kafka running, where, and its MATS topics against the table",
        description="Say whether Kafka runs and answers, its bootstrap servers, and every "
                    "mats.* topic with its partitions and cleanup policy beside the table's. "
                    "Exit 0 if Kafka answers, 1 if not.")
    st.set_defaults(func=_cmd_kafka_status)

    topics = ksub.add_parser(
        "topics", parents=[gateways, as_json], help="print the MATS topic table",
        description="Print the topics MATS uses: partitions, cleanup policy, retention, key "
                    "and what each carries. `status` compares a running Kafka with it.")
    topics.set_defaults(func=_cmd_kafka_topics)

    day = ksub.add_parser(
        "new-day", parents=[where, gateways],
        help="start a new trading day: empty the day's topics, drop the desk's journal",
        description="Empty every event topic of the table (signals, blocks, market data, "
                    "execution reports, child orders, allocations, fills, alerts, dead "
                    "letters) and delete the desk's journal and marks changelogs, so that the "
                    "next worker starts a new journal on the new day's start-of-day book. "
                    "State topics stay. Refused while a worker, the sink or a gateway runs, "
                    "and while any of them has messages it has not read (which would be lost), "
                    "unless --force.")
    day.add_argument("--force", action="store_true",
                     help="go ahead even though some messages were never read (they are "
                          "listed, then deleted)")
    day.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                     help="how long to wait for Kafka (default: 60)")
    day.set_defaults(func=_cmd_kafka_new_day)

    deps = ksub.add_parser(
        "deps", help="fetch the broker's jars with Maven (`up` does it when they are missing)",
        description="Copy the broker's jars named by infra/kafka/pom.xml into infra/kafka/lib, "
                    "unless they are there already for this pom.")
    deps.set_defaults(func=_cmd_kafka_deps)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_INPUT


def _kafka_settings(args: argparse.Namespace) -> kafka.KafkaSettings:
    try:
        return kafka.settings(run_dir=getattr(args, "run_dir", None),
                              bootstrap=getattr(args, "bootstrap", None),
                              gateways=getattr(args, "gateways", None),
                              host=getattr(args, "host", None), port=getattr(args, "port", None),
                              controller_port=getattr(args, "controller_port", None))
    except kafka.KafkaOptionError as e:
        raise _Refused(str(e)) from None  # "--port: 70000 is not a TCP port ..."


def _say(text: str) -> None:
    print(f"kafka: {text}", file=sys.stderr, flush=True)


def _kafka_failed(e: kafka.KafkaRunError) -> int:
    _error(str(e))
    return EXIT_FAILURE


def _cmd_kafka_up(args: argparse.Namespace) -> int:
    cfg = _kafka_settings(args)
    if args.timeout <= 0:
        raise _Refused(f"--timeout: {args.timeout} is not a positive number of seconds")
    kafka.quiet_client_logs()
    try:
        st = kafka.up(cfg, timeout=args.timeout, announce=_say)
    except kafka.KafkaRunError as e:
        return _kafka_failed(e)
    if st.managed:
        verb = "started" if st.started else "already running"
        head = f"{verb}, pid {st.pid}, bootstrap {st.bootstrap}, run dir {st.run_dir}"
    else:
        head = f"using {st.bootstrap}"
    lines = [f"kafka: {head}",
             f"topics: {len(st.created)} created, {len(st.topics) - len(st.created)} there "
             "already"]
    for problem in st.problems():
        _say(f"warning: {problem}")
    return _write(sys.stdout, "\n".join(lines) + "\n")


def _cmd_kafka_down(args: argparse.Namespace) -> int:
    cfg = _kafka_settings(args)
    if not cfg.managed:
        return _write(sys.stdout, f"kafka: {cfg.bootstrap} is not run by mats: nothing to "
                                  "stop\n")
    try:
        pid, killed = kafka.down(cfg, timeout=args.timeout)
    except kafka.KafkaRunError as e:
        return _kafka_failed(e)
    if pid is None:
        text = f"not running (run dir {cfg.run_dir})"
    elif killed:
        text = f"pid {pid} did not stop within {args.timeout:g}s after SIGTERM: killed"
    else:
        text = f"stopped (pid {pid})"
    return _write(sys.stdout, f"kafka: {text}\n")


def _cmd_kafka_status(args: argparse.Namespace) -> int:
    cfg = _kafka_settings(args)
    kafka.quiet_client_logs()
    try:
        st = kafka.status(cfg)
    except kafka.KafkaRunError as e:
        return _kafka_failed(e)
    code = EXIT_OK if st.reachable else EXIT_FAILURE
    if args.json:
        _write(sys.stdout, json.dumps(st.as_dict(), indent=2) + "\n")
        return code
    if st.managed:
        state = (f"running, pid {st.pid}" if st.reachable else
                 f"not answering, pid {st.pid}" if st.pid else "stopped")
        version = f" (Kafka {st.version})" if st.version else ""
        lines = [f"kafka      {state}{version}", f"run dir    {st.run_dir}"]
    else:
        lines = [f"kafka      external, {'answering' if st.reachable else 'not answering'}"]
    lines.append(f"bootstrap  {st.bootstrap}")
    if st.reachable:
        problems = st.problems()
        lines.append(f"topics     {sum(t.exists for t in st.topics)} "
                     + (f"({len(problems)} differ from the table)" if problems
                        else "(as in the table)"))
        for t in st.topics:
            shape = (f"{t.partitions:>3}  {t.cleanup_policy}" if t.exists else "  -  -")
            notes = "; ".join(t.problems()) or ("" if t.spec else "not in the table")
            lines.append(f"  {t.name:<28}{shape:<14}{notes}".rstrip())
    _write(sys.stdout, "\n".join(lines) + "\n")
    return code


def _cmd_kafka_topics(args: argparse.Namespace) -> int:
    specs = _kafka_settings(args).specs()
    text = kafka.specs_as_json(specs) if args.json else kafka.topics_table(specs)
    return _write(sys.stdout, text)


def _cmd_kafka_new_day(args: argparse.Namespace) -> int:
    from mats.store import sink_topic_names

    cfg = _kafka_settings(args)
    kafka.quiet_client_logs()
    readers = {kafka.DESK_GROUP: list(kafka.DESK_INPUTS),
               kafka.SINK_GROUP: sink_topic_names(cfg.gateways),
               **{f"{kafka.GATEWAY_GROUP_PREFIX}{g}": [kafka.gateway_topic(g).name]
                  for g in cfg.gateways}}
    try:
        day = asyncio.run(kafka.new_day(cfg.bootstrap_servers, cfg.specs(), readers,
                                        force=args.force,
                                        timeout=args.timeout))
    except kafka.KafkaRunError as e:
        return _kafka_failed(e)
    for line in day.discarded:
        _say(f"discarded unread: {line}")
    lines = [f"kafka: new day on {cfg.bootstrap_servers}",
             f"emptied: {len(day.emptied)} topics ({', '.join(day.emptied) or 'none'})",
             "journal: " + (f"deleted ({', '.join(day.changelogs)})" if day.changelogs
                            else "none"),
             "next: publish the new day's start-of-day state and start the workers on its "
             "book"]
    return _write(sys.stdout, "\n".join(lines) + "\n")


def _cmd_kafka_deps(args: argparse.Namespace) -> int:
    try:
        lib = kafka.fetch_jars(_kafka_settings(args), announce=_say)
    except kafka.KafkaRunError as e:
        return _kafka_failed(e)
    return _write(sys.stdout, f"kafka: Kafka {kafka.kafka_version(lib)} jars in {lib}\n")

if __name__ == "__main__":
    sys.exit(main())
