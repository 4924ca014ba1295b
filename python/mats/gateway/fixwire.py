"""FIX 4.4 on QuickFIX, behind a small typed face: session settings, messages in and out.

QuickFIX's Python bindings (the ``quickfix`` package, the ``gateways`` extra) have no type
information; this module is the one place that touches them field by field, so that the
gateway and the simulator deal in :class:`mats.gateway.models.BrokerReport` and plain values.

The FIX 4.4 data dictionary both ends validate against is QuickFIX's own ``FIX44.xml``. The
``quickfix`` package carries it in its source distribution but does not install it, so
:func:`dictionary_path` takes it from there once (``pip download`` of the installed version)
into ``infra/fix/spec/`` (git-ignored); ``MATS_FIX_DICTIONARY`` names another file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from mats.errors import ConfigError
from mats.gateway.models import BrokerReport
from mats.gateway.venue import CancelReject

try:
    import quickfix as fix  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - the message says what to install
    fix = None

__all__ = [
    "BEGIN_STRING",
    "FixUnavailable",
    "cancel_reject",
    "cancel_request",
    "dictionary_path",
    "execution_report",
    "msg_type",
    "new_order_single",
    "parse_cancel_reject",
    "parse_report",
    "patched_dictionary",
    "quickfix",
    "replace_request",
    "session_settings",
    "status_request",
]

BEGIN_STRING = "FIX.4.4"
_CHECKOUT = Path(__file__).resolve().parents[3]
_SPEC_DIR = _CHECKOUT / "infra" / "fix" / "spec"

# tags used here, by name
CL_ORD_ID, ORIG_CL_ORD_ID, ORDER_ID, EXEC_ID = 11, 41, 37, 17
EXEC_TYPE, ORD_STATUS, SYMBOL, SIDE = 150, 39, 55, 54
ORDER_QTY, PRICE, ORD_TYPE, TRANSACT_TIME = 38, 44, 40, 60
CUM_QTY, LEAVES_QTY, AVG_PX, LAST_QTY, LAST_PX = 14, 151, 6, 32, 31
TEXT, ACCOUNT, TIME_IN_FORCE, HANDL_INST = 58, 1, 59, 21
POSS_DUP, POSS_RESEND, MSG_TYPE, MSG_SEQ_NUM = 43, 97, 35, 34
CXL_REJ_RESPONSE_TO, ORD_REJ_REASON, CXL_REJ_REASON = 434, 103, 102
REF_SEQ_NUM, REF_MSG_TYPE, BUSINESS_REJECT_REF_ID = 45, 372, 379

_SIDES = {"buy": "1", "sell": "2"}
_SIDE_NAMES = {"1": "buy", "2": "sell"}


class FixUnavailable(ConfigError):
    """QuickFIX or its data dictionary is not there; the message says how to get it."""


def quickfix() -> Any:
    """The ``quickfix`` module, or :class:`FixUnavailable` naming the extra to install."""
    if fix is None:
        raise FixUnavailable("the FIX gateway needs QuickFIX: pip install 'mats[gateways]'")
    return fix


def dictionary_path() -> Path:
    """The FIX 4.4 data dictionary (``FIX44.xml``), taken from the quickfix sdist if needed.

    Raises
    ------
    FixUnavailable
        ``MATS_FIX_DICTIONARY`` names no file, or the dictionary could not be fetched.
    """
    env = os.environ.get("MATS_FIX_DICTIONARY")
    if env:
        p = Path(env)
        if not p.is_file():
            raise FixUnavailable(f"MATS_FIX_DICTIONARY={env}: no such file")
        return p
    target = _SPEC_DIR / "FIX44.xml"
    if target.is_file():
        return target
    try:
        ver = version("quickfix")
    except PackageNotFoundError:
        raise FixUnavailable("the FIX gateway needs QuickFIX: pip install "
                             "'mats[gateways]'") from None
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"quickfix=={ver}", "--no-deps",
             "--no-binary", ":all:", "-q", "-d", tmp],
            capture_output=True, text=True, check=False)
        archives = list(Path(tmp).glob("quickfix-*.tar.gz"))
        if done.returncode != 0 or not archives:
            last = (done.stderr.strip().splitlines() or ["no archive"])[-1]
            raise FixUnavailable(f"could not fetch the FIX 4.4 data dictionary from the "
                                 f"quickfix {ver} source distribution: {last}")
        with tarfile.open(archives[0]) as tar:
            member = next((m for m in tar.getmembers()
                           if m.name.endswith("/spec/FIX44.xml")), None)
            src = tar.extractfile(member) if member is not None else None
            if src is None:
                raise FixUnavailable(f"quickfix {ver}'s source has no spec/FIX44.xml")
            _SPEC_DIR.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".xml.part")
            partial.write_bytes(src.read())
            partial.replace(target)
    return target


def patched_dictionary(base: Path, accept: Mapping[int, Sequence[str]], out: Path) -> Path:
    """A copy of the data dictionary ``base`` whose fields also accept the ``accept`` values.

    For a counterparty that sends values its FIX version does not have: the deviation is
    accepted from that session only, and every other check stays.

    Raises
    ------
    FixUnavailable
        A tag of ``accept`` is not a field of the dictionary.
    """
    tree = ElementTree.parse(base)
    fields = {f.get("number"): f for f in tree.getroot().iter("field") if f.get("number")}
    for tag, values in accept.items():
        field = fields.get(str(tag))
        if field is None:
            raise FixUnavailable(f"accept_values: tag {tag} is not a field of {base.name}")
        have = {v.get("enum") for v in field.iter("value")}
        for value in values:
            if value not in have:
                ElementTree.SubElement(field, "value", enum=value,
                                       description=f"ACCEPTED_{value}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tree.write(out, encoding="utf-8", xml_declaration=True)
    return out


def session_settings(*, initiator: bool, sender: str, target: str, host: str, port: int,
                     store: Path, log: Path | None = None, heartbeat_s: int = 30,
                     reconnect_s: int = 1, dictionary: Path | None = None) -> str:
    """The text of a QuickFIX settings file for one FIX 4.4 session.

    Sequence numbers and sent messages persist in a FileStore under ``store``; the session is
    a 24-hour one (never reset by the clock) and both directions are validated against the
    data dictionary.
    """
    dd = dictionary or dictionary_path()
    lines = [
        "[DEFAULT]",
        f"ConnectionType={'initiator' if initiator else 'acceptor'}",
        f"FileStorePath={store}",
        "StartTime=00:00:00",
        "EndTime=00:00:00",
        "UseDataDictionary=Y",
        f"DataDictionary={dd}",
        "ValidateFieldsOutOfOrder=Y",
        "ValidateFieldsHaveValues=Y",
        "ValidateUserDefinedFields=Y",
        "PersistMessages=Y",
        "ResetOnLogon=N",
        "ResetOnLogout=N",
        "ResetOnDisconnect=N",
        "RefreshOnLogon=Y",
        "SocketNodelay=Y",
        "CheckLatency=N",
    ]
    if log is not None:
        lines.append(f"FileLogPath={log}")
    if initiator:
        lines += [f"SocketConnectHost={host}", f"SocketConnectPort={port}",
                  f"ReconnectInterval={reconnect_s}", f"HeartBtInt={heartbeat_s}"]
    else:
        lines += [f"SocketAcceptPort={port}", "SocketReuseAddress=Y"]
    lines += ["", "[SESSION]", f"BeginString={BEGIN_STRING}", f"SenderCompID={sender}",
              f"TargetCompID={target}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ building


def _utc(ts: datetime | None = None) -> str:
    t = (ts or datetime.now(UTC)).astimezone(UTC)
    return t.strftime("%Y%m%d-%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def _px(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _message(kind: str) -> Any:
    m = quickfix().Message()
    hdr = m.getHeader()
    hdr.setField(8, BEGIN_STRING)
    hdr.setField(MSG_TYPE, kind)
    return m


def new_order_single(cl_ord_id: str, symbol: str, side: str, quantity: int,
                     limit_price: float | None, account: str | None = None) -> Any:
    """A NewOrderSingle (35=D): market when ``limit_price`` is None, else limit; Day."""
    m = _message("D")
    if account:
        m.setField(ACCOUNT, account)
    m.setField(CL_ORD_ID, cl_ord_id)
    m.setField(HANDL_INST, "1")
    m.setField(SYMBOL, symbol)
    m.setField(SIDE, _SIDES[side])
    m.setField(TRANSACT_TIME, _utc())
    m.setField(ORDER_QTY, str(quantity))
    m.setField(ORD_TYPE, "1" if limit_price is None else "2")
    if limit_price is not None:
        m.setField(PRICE, _px(limit_price))
    m.setField(TIME_IN_FORCE, "0")
    return m


def cancel_request(cl_ord_id: str, orig_cl_ord_id: str, symbol: str, side: str,
                   quantity: int) -> Any:
    """An OrderCancelRequest (35=F)."""
    m = _message("F")
    m.setField(ORIG_CL_ORD_ID, orig_cl_ord_id)
    m.setField(CL_ORD_ID, cl_ord_id)
    m.setField(SYMBOL, symbol)
    m.setField(SIDE, _SIDES[side])
    m.setField(TRANSACT_TIME, _utc())
    m.setField(ORDER_QTY, str(quantity))
    return m


def replace_request(cl_ord_id: str, orig_cl_ord_id: str, symbol: str, side: str,
                    quantity: int, limit_price: float | None,
                    account: str | None = None) -> Any:
    """An OrderCancelReplaceRequest (35=G): the order's new total quantity and limit."""
    m = _message("G")
    if account:
        m.setField(ACCOUNT, account)
    m.setField(ORIG_CL_ORD_ID, orig_cl_ord_id)
    m.setField(CL_ORD_ID, cl_ord_id)
    m.setField(HANDL_INST, "1")
    m.setField(SYMBOL, symbol)
    m.setField(SIDE, _SIDES[side])
    m.setField(TRANSACT_TIME, _utc())
    m.setField(ORDER_QTY, str(quantity))
    m.setField(ORD_TYPE, "1" if limit_price is None else "2")
    if limit_price is not None:
        m.setField(PRICE, _px(limit_price))
    return m


def status_request(cl_ord_id: str, symbol: str, side: str) -> Any:
    """An OrderStatusRequest (35=H)."""
    m = _message("H")
    m.setField(CL_ORD_ID, cl_ord_id)
    m.setField(SYMBOL, symbol)
    m.setField(SIDE, _SIDES[side])
    return m


def execution_report(r: BrokerReport) -> Any:
    """The ExecutionReport (35=8) of a broker report (the simulator's side)."""
    m = _message("8")
    m.setField(ORDER_ID, r.broker_order_id or "NONE")
    m.setField(CL_ORD_ID, r.cl_ord_id)
    if r.orig_cl_ord_id:
        m.setField(ORIG_CL_ORD_ID, r.orig_cl_ord_id)
    m.setField(EXEC_ID, r.exec_id)
    m.setField(EXEC_TYPE, r.exec_type)
    m.setField(ORD_STATUS, r.ord_status)
    if r.ord_status == "8" and r.exec_type in ("8", "I"):
        m.setField(ORD_REJ_REASON, "5" if r.exec_type == "I" else "0")
    m.setField(SYMBOL, r.symbol)
    m.setField(SIDE, _SIDES[r.side])
    m.setField(ORDER_QTY, str(r.order_qty))
    if r.last_qty:
        m.setField(LAST_QTY, str(r.last_qty))
        m.setField(LAST_PX, _px(r.last_px or 0.0))
    m.setField(LEAVES_QTY, str(r.leaves_qty))
    m.setField(CUM_QTY, str(r.cum_qty))
    m.setField(AVG_PX, _px(r.avg_px or 0.0))
    m.setField(TRANSACT_TIME, _utc(r.transact_time))
    if r.text:
        m.setField(TEXT, r.text)
    if r.poss_dup:
        m.getHeader().setField(POSS_RESEND, "Y")
    return m


def cancel_reject(r: CancelReject) -> Any:
    """The OrderCancelReject (35=9) of a refused cancel or replace."""
    m = _message("9")
    m.setField(ORDER_ID, r.broker_order_id)
    m.setField(CL_ORD_ID, r.cl_ord_id)
    m.setField(ORIG_CL_ORD_ID, r.orig_cl_ord_id)
    m.setField(ORD_STATUS, r.ord_status)
    m.setField(CXL_REJ_RESPONSE_TO, r.response_to)
    m.setField(CXL_REJ_REASON, "1" if r.text == "unknown order" else "99")
    if r.text:
        m.setField(TEXT, r.text)
    return m


# ------------------------------------------------------------------------------ reading


def get(m: Any, tag: int, default: str = "") -> str:
    """A body field's text, or ``default`` when absent."""
    return str(m.getField(tag)) if m.isSetField(tag) else default


def header(m: Any, tag: int, default: str = "") -> str:
    h = m.getHeader()
    return str(h.getField(tag)) if h.isSetField(tag) else default


def msg_type(m: Any) -> str:
    return header(m, MSG_TYPE)


def poss_dup(m: Any) -> bool:
    return header(m, POSS_DUP) == "Y" or header(m, POSS_RESEND) == "Y"


def side_of(m: Any) -> str:
    """``buy`` or ``sell``; ValueError for a side MATS does not trade (short sell...)."""
    code = get(m, SIDE)
    if code not in _SIDE_NAMES:
        raise ValueError(f"side {code!r} is not buy (1) or sell (2)")
    return _SIDE_NAMES[code]


def _int(fields: dict[int, str], tag: int) -> int:
    text = fields.get(tag, "0")
    value = float(text)
    if value != int(value):
        raise ValueError(f"tag {tag}: fractional quantity {text}")
    return int(value)


def _qty(m: Any, tag: int) -> int:
    return _int({tag: get(m, tag, "0")}, tag)


def _utc_time(text: str) -> datetime | None:
    """A FIX UTCTimestamp (``YYYYMMDD-HH:MM:SS[.fff...]``), None when it is not one."""
    try:
        frac = text[18:].ljust(6, "0")[:6] if len(text) > 18 else "0"
        return datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]),
                        int(text[12:14]), int(text[15:17]), int(frac), tzinfo=UTC)
    except ValueError:
        return None


def fields_of(m: Any) -> dict[int, str]:
    """Every field of a message (header, body, trailer) by tag, from its wire form.

    One call into QuickFIX instead of two per field; a repeated tag (a repeating group, which
    the messages read here do not have) keeps its first value.
    """
    out: dict[int, str] = {}
    for part in str(m.toString()).split("\x01"):
        tag, sep, value = part.partition("=")
        if sep and tag.isdigit():
            out.setdefault(int(tag), value)
    return out


def parse_report(m: Any) -> BrokerReport:
    """The broker report an ExecutionReport (35=8) carries.

    Raises
    ------
    ValueError
        A field MATS needs is missing or not a number.
    """
    f = fields_of(m)
    side = f.get(SIDE, "")
    if side not in _SIDE_NAMES:
        raise ValueError(f"side {side!r} is not buy (1) or sell (2)")
    last_px = f.get(LAST_PX)
    avg = f.get(AVG_PX)
    return BrokerReport(
        exec_id=f.get(EXEC_ID, ""), cl_ord_id=f.get(CL_ORD_ID, ""),
        orig_cl_ord_id=f.get(ORIG_CL_ORD_ID) or None, exec_type=f.get(EXEC_TYPE, ""),
        ord_status=f.get(ORD_STATUS, ""), symbol=f.get(SYMBOL, ""), side=_SIDE_NAMES[side],
        order_qty=_int(f, ORDER_QTY), cum_qty=_int(f, CUM_QTY), leaves_qty=_int(f, LEAVES_QTY),
        avg_px=float(avg) if avg else None, last_qty=_int(f, LAST_QTY),
        last_px=float(last_px) if last_px else None,
        broker_order_id=f.get(ORDER_ID) or None, text=f.get(TEXT, ""),
        transact_time=_utc_time(f[TRANSACT_TIME]) if TRANSACT_TIME in f else None,
        poss_dup=f.get(POSS_DUP) == "Y" or f.get(POSS_RESEND) == "Y")


def parse_cancel_reject(m: Any) -> CancelReject:
    """The refusal an OrderCancelReject (35=9) carries."""
    return CancelReject(cl_ord_id=get(m, CL_ORD_ID), orig_cl_ord_id=get(m, ORIG_CL_ORD_ID),
                        broker_order_id=get(m, ORDER_ID), ord_status=get(m, ORD_STATUS),
                        response_to=get(m, CXL_REJ_RESPONSE_TO), text=get(m, TEXT))


def order_fields(m: Any) -> tuple[str, str, str, int, float | None]:
    """(ClOrdID, symbol, side, quantity, limit price) of a D or G message."""
    return order_fields_of(fields_of(m))


def order_fields_of(f: dict[int, str]) -> tuple[str, str, str, int, float | None]:
    """:func:`order_fields` from the fields of :func:`fields_of`."""
    side = f.get(SIDE, "")
    if side not in _SIDE_NAMES:
        raise ValueError(f"side {side!r} is not buy (1) or sell (2)")
    price = f.get(PRICE)
    limit = float(price) if f.get(ORD_TYPE) == "2" and price else None
    return f.get(CL_ORD_ID, ""), f.get(SYMBOL, ""), _SIDE_NAMES[side], _int(f, ORDER_QTY), limit
