"""``mats gateway run NAME`` and ``mats broker-sim``: a gateway process, a broker simulator.

``main(argv)`` takes the words after ``mats`` (``["gateway", "run", "default"]``,
``["broker-sim", "--port", "9880"]``); ``python -m mats.gateway`` runs it too.

Exit status: 0 stopped by SIGTERM or SIGINT; 2 a bad option or configuration (one line on
stderr says which); 1 the gateway or simulator could not run (Kafka unreachable, port taken).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mats import kafka
from mats.errors import MatsError
from mats.gateway.models import default_config_path, load_config
from mats.gateway.venue import VenueConfig

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INPUT = 2

_CHECKOUT = Path(__file__).resolve().parents[3]


class _Usage(Exception):
    """A bad option, worded for the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mats", description="MATS broker gateways and the broker simulator.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gw = sub.add_parser("gateway", help="run a gateway process")
    gw_sub = gw.add_subparsers(dest="action", required=True, parser_class=_Parser)
    run = gw_sub.add_parser("run", help="run gateway NAME until SIGTERM or SIGINT")
    run.add_argument("name", help="the gateway's name (its entry in the config file)")
    run.add_argument("--config", type=Path, default=None,
                     help="gateways YAML file (default: $MATS_GATEWAYS_CONFIG, else "
                          "infra/fix/gateways.yaml)")
    run.add_argument("--run-dir", type=Path, default=None,
                     help="run folder: journal and FIX store (default run/gateways/NAME)")
    run.add_argument("--bootstrap", default=None,
                     help="Kafka bootstrap servers (default: $MATS_KAFKA_BOOTSTRAP or the "
                          "local broker)")
    run.add_argument("--port", type=int, default=None, help="the broker's port (overrides)")

    sim = sub.add_parser("broker-sim", help="run the broker simulator")
    sim.add_argument("--protocol", choices=["fix", "http"], default="fix")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, required=True)
    sim.add_argument("--run-dir", type=Path, default=None,
                     help="its orders, FIX store and outbox (default run/broker-sim-PORT)")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--latency-ms", type=float, default=0.0,
                     help="delay before the venue handles a request")
    sim.add_argument("--tick-ms", type=float, default=50.0,
                     help="how often prices move and marketable orders fill")
    sim.add_argument("--price", action="append", default=[], metavar="SYMBOL=PRICE",
                     help="start price of a symbol (repeatable)")
    sim.add_argument("--default-price", type=float, default=100.0)
    sim.add_argument("--volatility-bps", type=float, default=5.0)
    sim.add_argument("--reject-symbols", default="", help="comma-separated symbols to refuse")
    sim.add_argument("--instant-fill", action="store_true",
                     help="marketable orders fill whole at the next tick")
    sim.add_argument("--cancel-on-disconnect", action="store_true",
                     help="cancel a FIX session's open orders when it drops")
    sim.add_argument("--sender-comp-id", default="SIM")
    sim.add_argument("--target-comp-id", default="MATS")
    sim.add_argument("--fix-log", action="store_true", help="log every FIX message")
    return parser


def _install_stop(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _run_gateway(args: argparse.Namespace) -> None:
    from mats.gateway.runner import Gateway

    path = args.config or default_config_path()
    config = load_config(path, args.name)
    if args.port is not None:
        config = config.model_copy(update={"port": args.port})
    run_dir = args.run_dir or _CHECKOUT / "run" / "gateways" / args.name
    bootstrap = kafka.settings(bootstrap=args.bootstrap).bootstrap_servers
    gateway = Gateway(config, run_dir, bootstrap)
    stop = asyncio.Event()
    _install_stop(asyncio.get_running_loop(), stop)
    logging.getLogger("mats.gateway").info(
        "gateway %s (%s) to %s:%d, Kafka %s, run folder %s", config.name, config.protocol,
        config.host, config.port, bootstrap, run_dir)
    await gateway.run(stop)


def _venue_config(args: argparse.Namespace) -> VenueConfig:
    prices: dict[str, float] = {}
    for item in args.price:
        sym, sep, px = item.partition("=")
        try:
            value = float(px)
        except ValueError:
            value = -1.0
        if not sep or not sym or not value > 0:
            raise _Usage(f"mats broker-sim: --price {item!r}: expected SYMBOL=PRICE with a "
                         "positive price")
        prices[sym] = value
    if not args.default_price > 0:
        raise _Usage("mats broker-sim: --default-price must be positive")
    if not 0 < args.port < 65536:
        raise _Usage(f"mats broker-sim: --port {args.port}: not a port number")
    if args.tick_ms <= 0 or args.latency_ms < 0:
        raise _Usage("mats broker-sim: --tick-ms must be positive, --latency-ms not negative")
    rejects = frozenset(s.strip() for s in args.reject_symbols.split(",") if s.strip())
    return VenueConfig(seed=args.seed, prices=prices, default_price=args.default_price,
                       volatility_bps=args.volatility_bps, reject_symbols=rejects,
                       instant_fill=args.instant_fill)


async def _run_simulator(args: argparse.Namespace) -> None:
    from mats.gateway.simulator import FixSimulator, HttpSimulator, SimulatorConfig

    venue = _venue_config(args)
    run_dir = args.run_dir or _CHECKOUT / "run" / f"broker-sim-{args.port}"
    config = SimulatorConfig(protocol=args.protocol, port=args.port, host=args.host,
                             run_dir=run_dir, venue=venue, latency_ms=args.latency_ms,
                             tick_s=args.tick_ms / 1000.0,
                             cancel_on_disconnect=args.cancel_on_disconnect,
                             sender_comp_id=args.sender_comp_id,
                             target_comp_id=args.target_comp_id, fix_log=args.fix_log)
    stop = asyncio.Event()
    _install_stop(asyncio.get_running_loop(), stop)

    def ready() -> None:
        print(f"broker-sim ({args.protocol}) listening on {args.host}:{args.port}",
              flush=True)

    if args.protocol == "http":
        await HttpSimulator(config).serve(stop, ready)
        return
    sim = FixSimulator(config)
    try:
        sim.start()
    except Exception as e:  # QuickFIX's ConfigError / RuntimeError: port taken and the like
        sim.engine.stop()
        raise _Failure(f"mats broker-sim: cannot listen on {args.host}:{args.port}: "
                       f"{e}") from None
    ready()
    try:
        await stop.wait()
    finally:
        sim.stop()


class _Failure(Exception):
    """The process could not run; the message says why."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gateway run NAME`` or ``broker-sim``; returns the exit status."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except _Usage as e:
        print(str(e), file=sys.stderr)
        return EXIT_INPUT
    # QuickFIX's thread needs the GIL for every callback; with the default 5 ms switch
    # interval it queues behind the event loop's thread (a convoy), so hand over sooner
    sys.setswitchinterval(0.0005)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "gateway":
            asyncio.run(_run_gateway(args))
        else:
            asyncio.run(_run_simulator(args))
    except _Usage as e:
        print(str(e), file=sys.stderr)
        return EXIT_INPUT
    except MatsError as e:
        print(f"mats {args.command}: {e}", file=sys.stderr)
        return EXIT_INPUT
    except _Failure as e:
        print(str(e), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except (kafka.KafkaRunError, OSError) as e:
        print(f"mats {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as e:
        with contextlib.suppress(Exception):
            logging.getLogger("mats.gateway").exception("failed")
        print(f"mats {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
