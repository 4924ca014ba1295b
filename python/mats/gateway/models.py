"""What the gateways share: their configuration, their status message, a broker's report.

A gateway's configuration names its protocol (``fix`` or ``http``), where the broker is and how
the session behaves (throttle, reconnect back-off, cancel-on-disconnect). It comes from a YAML
file (:func:`load_config`)::

    gateways:
      default:
        protocol: fix
        port: 9880
        sender_comp_id: MATS
        target_comp_id: SIM
      prime-b:
        protocol: http
        port: 9890

:class:`GatewayStatus` is the heartbeat each gateway publishes on ``mats.gateway-status``
(compacted, keyed by gateway name) every few seconds and on every change of its session state.

:class:`BrokerReport` is what a broker said about an order, whatever the wire: the FIX gateway
reads it out of an ExecutionReport (35=8), the HTTP gateway out of a JSON event, and the
simulator's liquidity model produces it. Its ``exec_type`` and ``ord_status`` are FIX 4.4's
one-character codes (tags 150 and 39), the most precise common language of the two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AwareDatetime, Field, ValidationError

from mats.config import pydantic_problem, render_loc
from mats.errors import ConfigError
from mats.executions import ExecType, OrdStatus
from mats.models import Frozen, Identifier

__all__ = [
    "STATUS_TOPIC",
    "BrokerReport",
    "GatewayConfig",
    "GatewayStatus",
    "SessionState",
    "default_config_path",
    "exec_type_of",
    "load_config",
    "ord_status_of",
]

STATUS_TOPIC = "mats.gateway-status"

# python/mats/gateway/models.py -> the checkout
_CHECKOUT = Path(__file__).resolve().parents[3]


class SessionState(StrEnum):
    """Where a gateway's session to its broker stands."""

    STARTING = "starting"
    LOGGED_ON = "logged_on"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


Port = Annotated[int, Field(ge=1, le=65535)]


class GatewayConfig(Frozen):
    """One gateway: its protocol, its broker's address and its session's behaviour.

    ``max_msgs_per_s`` throttles the messages the gateway sends to the broker (orders, cancels,
    replaces, status requests). ``cancel_on_disconnect``: after a lost session comes back, the
    gateway cancels every order it still has open (the broker's own cancel-on-disconnect, where
    it has one, is a setting of the broker: ``mats broker-sim --cancel-on-disconnect``).
    Reconnection waits ``reconnect_initial_s``, doubling after every failed attempt up to
    ``reconnect_max_s``.
    """

    name: Identifier
    protocol: Literal["fix", "http"]
    host: str = "127.0.0.1"
    port: Port
    sender_comp_id: Identifier = "MATS"
    target_comp_id: Identifier = "SIM"
    heartbeat_s: Annotated[int, Field(ge=1, le=3600)] = 30
    reconnect_initial_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_msgs_per_s: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    cancel_on_disconnect: bool = False
    status_interval_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    account: Identifier | None = None  # FIX Account (1), when the broker wants one
    fix_log: bool = False  # every FIX message in the run folder's log (slow at high rates)
    # values the broker sends that FIX 4.4 does not have, accepted from this broker only (its
    # own copy of the data dictionary): {150: ["1", "2"]} for one that still sends the
    # pre-4.4 ExecType partial fill / fill
    accept_values: dict[int, list[Annotated[str, Field(min_length=1, max_length=8)]]] = \
        Field(default_factory=dict)


class GatewayStatus(Frozen):
    """A gateway's heartbeat on ``mats.gateway-status`` (keyed by gateway name)."""

    kind: Literal["gateway_status"] = "gateway_status"
    gateway: Identifier
    protocol: Literal["fix", "http"]
    state: SessionState
    open_orders: Annotated[int, Field(ge=0)]
    orders_sent: Annotated[int, Field(ge=0)] = 0
    reports_published: Annotated[int, Field(ge=0)] = 0
    last_error: str | None = None
    last_error_at: AwareDatetime | None = None
    next_sender_seq: int | None = None  # FIX only
    next_target_seq: int | None = None  # FIX only
    reconnects: Annotated[int, Field(ge=0)] = 0
    pid: int
    at: AwareDatetime


@dataclass(frozen=True)
class BrokerReport:
    """One report of a broker about one order, in FIX 4.4's terms (see the module docstring).

    ``cl_ord_id`` is the id of the request it answers (the order's, a cancel's or a
    replace's); ``orig_cl_ord_id`` the order's id before that request, when there is one.
    ``poss_dup`` says the broker may have sent it before (FIX PossDupFlag or PossResend).
    """

    exec_id: str
    cl_ord_id: str
    exec_type: str  # FIX 150
    ord_status: str  # FIX 39
    symbol: str
    side: str  # "buy" or "sell"
    order_qty: int
    cum_qty: int
    leaves_qty: int
    avg_px: float | None = None
    last_qty: int = 0
    last_px: float | None = None
    orig_cl_ord_id: str | None = None
    broker_order_id: str | None = None
    text: str = ""
    transact_time: datetime | None = None
    poss_dup: bool = False


# FIX 4.4 ExecType (150) and OrdStatus (39) codes as MATS names them. The pending and
# order-status codes (A, 6, E, I) have no MATS event: the gateway uses them and publishes none.
_EXEC_TYPES: dict[str, ExecType] = {
    "0": ExecType.NEW, "4": ExecType.CANCELLED, "5": ExecType.REPLACED,
    "8": ExecType.REJECTED, "C": ExecType.EXPIRED, "3": ExecType.DONE_FOR_DAY,
}
_ORD_STATUSES: dict[str, OrdStatus] = {
    "0": OrdStatus.NEW, "A": OrdStatus.NEW, "1": OrdStatus.PARTIALLY_FILLED,
    "2": OrdStatus.FILLED, "4": OrdStatus.CANCELLED, "5": OrdStatus.REPLACED,
    "8": OrdStatus.REJECTED, "C": OrdStatus.EXPIRED, "3": OrdStatus.DONE_FOR_DAY,
    "6": OrdStatus.PENDING_CANCEL, "E": OrdStatus.PENDING_REPLACE,
}


def ord_status_of(code: str) -> OrdStatus | None:
    """The MATS order status of a FIX OrdStatus code (None for one MATS does not know)."""
    return _ORD_STATUSES.get(code)


def exec_type_of(report: BrokerReport) -> ExecType | None:
    """What MATS calls the event of a report; None for one it does not publish.

    A FIX 4.4 Trade (``F``) is a fill when it leaves nothing open, else a partial fill. The
    pre-4.4 codes ``1`` and ``2`` are read the same way; sent with no shares (as some brokers
    acknowledge an order) they mean what the order status says: ``new`` for a new order.
    """
    if report.exec_type in ("F", "1", "2"):
        if report.last_qty <= 0:
            return ExecType.NEW if report.ord_status == "0" else None
        return ExecType.FILL if report.leaves_qty == 0 else ExecType.PARTIAL_FILL
    return _EXEC_TYPES.get(report.exec_type)


# ------------------------------------------------------------------------------ config file


def default_config_path() -> Path:
    """``MATS_GATEWAYS_CONFIG``, else ``infra/fix/gateways.yaml`` in the checkout."""
    env = os.environ.get("MATS_GATEWAYS_CONFIG")
    return Path(env) if env else _CHECKOUT / "infra" / "fix" / "gateways.yaml"


def load_config(path: Path, name: str) -> GatewayConfig:
    """The configuration of gateway ``name`` in the YAML file ``path``.

    Raises
    ------
    ConfigError
        The file is missing or unreadable, not YAML, has no ``gateways`` mapping, does not
        name the gateway, or its entry is not a valid :class:`GatewayConfig` (the message names
        the file and field).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not YAML: {str(e).splitlines()[0]}") from None
    gateways = data.get("gateways") if isinstance(data, dict) else None
    if not isinstance(gateways, dict):
        raise ConfigError(f"{path}: expected a mapping 'gateways: {{NAME: {{...}}}}'")
    entry = gateways.get(name)
    if entry is None:
        known = ", ".join(sorted(str(k) for k in gateways)) or "none"
        raise ConfigError(f"{path}: no gateway {name!r} (configured: {known})")
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: gateways.{name}: expected a mapping")
    try:
        return GatewayConfig.model_validate({"name": name, **entry})
    except ValidationError as e:
        loc, message = pydantic_problem(e.errors(include_url=False), GatewayConfig)
        raise ConfigError(f"{path}: gateways.{name}.{render_loc(loc)}: {message}") from None
