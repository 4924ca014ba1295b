"""Intake: one strategy signal (a Kafka message's bytes) checked into a :class:`BlockOrder`.

A signal is a JSON object with the fields of :class:`mats.models.BlockOrder`. It is accepted
when it is UTF-8 JSON text, an object, a valid block order (every field of the model, with its
rules: positive quantity, finite positive prices, a zone on the reference time, ...), and every
symbol and account it names is in the book. Otherwise :func:`validate_signal` raises
:class:`SignalError` with a fixed code, the field path and a message for each problem, and
:func:`dead_letter` turns that into the message the dead-letter topic carries.

Nothing here knows about Faust or Kafka clients: the stream app (``streams/app.py``) reads the
messages and writes the results; this module decides.

Codes
-----
``NOT_JSON``
    empty, not UTF-8, or not JSON text
``NOT_AN_OBJECT``
    JSON, but not an object
``MISSING_FIELD``
    a required field of the block order is absent
``INVALID_FIELD``
    a field has the wrong type or value (quantity not positive, price NaN or not positive,
    unknown field, a key given twice, inconsistent method and quantities, ...)
``UNKNOWN_SYMBOL``
    the symbol is not an instrument of the book
``UNKNOWN_ACCOUNT``
    an account named in ``accounts``, ``ratios``, ``percents`` or ``shares`` is not in the book
``INTAKE_FAILED``
    checking the signal failed unexpectedly; the signal is dead-lettered, not lost
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, ValidationError

from mats.config import pydantic_problem, render_loc
from mats.errors import MatsError
from mats.models import BlockOrder, Book, Frozen

__all__ = [
    "INTAKE_FAILED",
    "INVALID_FIELD",
    "MISSING_FIELD",
    "NOT_AN_OBJECT",
    "NOT_JSON",
    "UNKNOWN_ACCOUNT",
    "UNKNOWN_SYMBOL",
    "DeadLetter",
    "KnownIds",
    "Problem",
    "SignalError",
    "Source",
    "dead_letter",
    "validate_signal",
]

NOT_JSON = "NOT_JSON"
NOT_AN_OBJECT = "NOT_AN_OBJECT"
MISSING_FIELD = "MISSING_FIELD"
INVALID_FIELD = "INVALID_FIELD"
UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
INTAKE_FAILED = "INTAKE_FAILED"

Loc = tuple[str | int, ...]

# Fields of a block order keyed by account id.
_ACCOUNT_MAPS = ("ratios", "percents", "shares")


class Problem(Frozen):
    """One thing wrong with a signal: a fixed code, where (field path), and what."""

    code: str
    loc: list[str | int]
    field: str  # ``loc`` as a user writes it (``accounts[1]``); empty for the whole message
    message: str


class SignalError(MatsError):
    """A signal that cannot become a block order; ``problems`` lists every reason found.

    ``code``, ``loc`` and ``message`` are those of the first problem. ``journey_id`` is the
    signal's journey id when it had a readable one, so a rejection can still be traced.
    """

    def __init__(self, problems: list[Problem], journey_id: str | None = None) -> None:
        first = problems[0]
        super().__init__(first.message, tuple(first.loc))
        self.code = first.code
        self.problems = problems
        self.journey_id = journey_id

    def errors(self) -> list[dict[str, Any]]:
        return [{"loc": tuple(p.loc), "msg": p.message, "type": p.code} for p in self.problems]


def _problem(code: str, message: str, loc: Loc = ()) -> Problem:
    return Problem(code=code, loc=list(loc), field=render_loc(loc), message=message)


def _fail(code: str, message: str, loc: Loc = ()) -> SignalError:
    return SignalError([_problem(code, message, loc)])


@dataclass(frozen=True)
class KnownIds:
    """The symbols and account ids of a book: what a signal may name."""

    symbols: frozenset[str]
    accounts: frozenset[str]

    @classmethod
    def of(cls, book: Book) -> KnownIds:
        return cls(symbols=frozenset(i.symbol for i in book.instruments),
                   accounts=frozenset(a.account_id for a in book.accounts))


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _parse(value: bytes | str | None) -> Any:
    if value is None or (isinstance(value, bytes | str) and not value.strip()):
        raise _fail(NOT_JSON, "empty message")
    if not isinstance(value, bytes | str):
        raise _fail(NOT_JSON, f"expected the message's bytes, got {_kind(value)}")
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _fail(NOT_JSON, f"not UTF-8 text (bad byte at offset {e.start})") from None
    else:
        text = value
    try:
        # NaN and Infinity tokens are read as floats on purpose: the model then names the field
        # that holds one, which says more than "invalid JSON".
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise _fail(NOT_JSON, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}",
                    ) from None
    except _DuplicateKey as e:
        raise _fail(INVALID_FIELD, f"key {e.key!r} given twice in one JSON object") from None
    except RecursionError:
        raise _fail(NOT_JSON, "JSON nested too deeply") from None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _model_problems(e: ValidationError) -> list[Problem]:
    out = []
    for err in e.errors(include_url=False):
        loc, message = pydantic_problem([err], BlockOrder)
        code = MISSING_FIELD if err["type"] == "missing" else INVALID_FIELD
        out.append(_problem(code, message, loc))
    return out


def _reference_problems(order: BlockOrder, known: KnownIds) -> list[Problem]:
    out = []
    if order.symbol not in known.symbols:
        out.append(_problem(UNKNOWN_SYMBOL, f"unknown symbol {order.symbol!r}: not an "
                            "instrument of the book", ("symbol",)))
    for i, account in enumerate(order.accounts or ()):
        if account not in known.accounts:
            out.append(_problem(UNKNOWN_ACCOUNT, f"unknown account {account!r}: not in the book",
                                ("accounts", i)))
    for name in _ACCOUNT_MAPS:
        mapping: dict[str, Any] | None = getattr(order, name)
        for account in mapping or ():
            if account not in known.accounts:
                out.append(_problem(UNKNOWN_ACCOUNT,
                                    f"unknown account {account!r}: not in the book",
                                    (name, account)))
    return out


def validate_signal(value: bytes | str | None, known: KnownIds) -> BlockOrder:
    """The block order a signal carries, checked against the book's symbols and accounts.

    Parameters
    ----------
    value
        The message value as received: UTF-8 JSON text of one :class:`BlockOrder` object.
    known
        The symbols and accounts signals may name (:meth:`KnownIds.of` a book).

    Raises
    ------
    SignalError
        Whatever is wrong with it, with a code and a field path per problem. Never anything
        else: an unexpected failure is reported as ``INTAKE_FAILED``, so that bad input never
        stops the caller.
    """
    try:
        data = _parse(value)
        if not isinstance(data, dict):
            raise _fail(NOT_AN_OBJECT, f"expected a JSON object (a block order), found "
                        f"{_kind(data)}")
        journey = data.get("journey_id")
        journey_id = journey if isinstance(journey, str) and journey else None
        try:
            order = BlockOrder.model_validate(data)
        except ValidationError as e:
            raise SignalError(_model_problems(e), journey_id) from None
        problems = _reference_problems(order, known)
        if problems:
            raise SignalError(problems, journey_id)
        return order
    except SignalError:
        raise
    except Exception as e:  # a bug here must not stop the stream: the signal is kept, with why
        raise _fail(INTAKE_FAILED, f"{type(e).__name__}: {e}") from e


# ------------------------------------------------------------------------------ dead letters


class Source(Frozen):
    """Where a dead-lettered message was read: topic, partition, offset, key and timestamp."""

    topic: str
    partition: int
    offset: int
    key: str | None = None  # UTF-8 text, else base64 (see ``key_encoding``)
    key_encoding: Literal["utf-8", "base64"] = "utf-8"
    timestamp: AwareDatetime | None = None  # the message's Kafka timestamp


class DeadLetter(Frozen):
    """What the dead-letter topic carries for one rejected message.

    ``code``, ``field`` and ``message`` are the first reason; ``problems`` has them all.
    ``payload`` is the message value as received: text when it is UTF-8, else base64
    (``payload_encoding`` says which). ``rejected_at`` is when the stage refused it.
    """

    stage: str
    code: str
    field: str
    message: str
    problems: list[Problem]
    journey_id: str | None = None
    source: Source
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    rejected_at: AwareDatetime


def _as_text(value: object) -> tuple[str, Literal["utf-8", "base64"]]:
    if value is None:
        return "", "utf-8"
    if isinstance(value, str):
        return value, "utf-8"
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii"), "base64"
    # not what a Kafka consumer hands over, but a dead letter must not fail to be written
    return repr(value), "utf-8"


def _utc(timestamp: float | datetime | None) -> datetime | None:
    if timestamp is None:
        return None
    if isinstance(timestamp, datetime):
        return timestamp
    if not math.isfinite(timestamp):
        return None
    return datetime.fromtimestamp(timestamp, UTC)


def dead_letter(value: object, error: SignalError, *, topic: str, partition: int,
                offset: int, key: object = None,
                timestamp: float | datetime | None = None, stage: str = "intake",
                now: datetime | None = None) -> DeadLetter:
    """The dead-letter message for a rejected signal read at ``topic``/``partition``/``offset``.

    ``timestamp`` is the message's own (seconds since the epoch, or a datetime); ``now`` the
    rejection time (default: the current time, UTC).
    """
    key_text, key_encoding = _as_text(key)
    payload, encoding = _as_text(value)
    return DeadLetter(
        stage=stage, code=error.code, field=render_loc(error.loc), message=error.message,
        problems=error.problems, journey_id=error.journey_id,
        source=Source(topic=topic, partition=partition, offset=offset,
                      key=key_text if key is not None else None, key_encoding=key_encoding,
                      timestamp=_utc(timestamp)),
        payload=payload, payload_encoding=encoding,
        rejected_at=now if now is not None else datetime.now(UTC))

