"""Live exposure and limit alerts: the figures, and when they become Warning or Critical.

The core computes exposure at the live marks (:meth:`mats.Engine.exposure`,
:meth:`mats.Engine.firm_exposure`): per account long, short, gross, net and beta-weighted net
delta, gross leverage and gross per sector, each figure that has a limit beside it as a
:class:`Usage` (``value / limit``); firm-wide the same over the firm's net position per
instrument, held to the risk config's firm limits.

:class:`LimitWatch` turns usage into alerts. A figure is at level ``ok`` below the warning
threshold (90 % of its limit unless configured), ``warning`` from there up to the limit and
``critical`` above it. An alert is raised when a figure's level changes (up, or back down to
``ok``, which clears it), not on every update, so a position that sits near its limit raises
one Warning, not one per tick.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from mats.models import Frozen

__all__ = [
    "DEFAULT_WARN_AT",
    "AccountExposure",
    "ExposureSnapshot",
    "FirmExposure",
    "Level",
    "LimitAlert",
    "LimitWatch",
    "Usage",
]

DEFAULT_WARN_AT = 0.9

_NAMESPACE = uuid.UUID("a4f1c2d3-6b7e-4c5d-8e9f-0a1b2c3d4e5f")


class Usage(Frozen):
    """One figure beside its limit: ``utilization = value / limit``."""

    metric: str
    subject: str | None = None
    value: float
    limit: float
    utilization: float


class _Exposure(Frozen):
    nav: float
    long: float
    short: float
    gross: float
    net: float
    beta_delta: float
    sectors: dict[str, float] = Field(default_factory=dict)
    usage: list[Usage] = Field(default_factory=list)
    unpriced: list[str] = Field(default_factory=list)


class AccountExposure(_Exposure):
    """One account's exposure at marks (positions, not working orders), as a share of its NAV."""

    account_id: str
    gross_leverage: float


class FirmExposure(_Exposure):
    """The firm's exposure at marks, on its net position per instrument."""


def _sectors(raw: dict[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    pairs: list[tuple[str, float]] = out.get("sectors") or []
    out["sectors"] = dict(pairs)  # the core gives (name, gross) pairs
    return out


def account_exposure(text: str) -> AccountExposure:
    """The model of :meth:`mats.Engine.exposure`'s JSON."""
    return AccountExposure.model_validate(_sectors(json.loads(text)))


def firm_exposure(text: str) -> FirmExposure:
    """The model of :meth:`mats.Engine.firm_exposure`'s JSON."""
    return FirmExposure.model_validate(_sectors(json.loads(text)))


class ExposureSnapshot(Frozen):
    """What ``mats.exposure`` carries (compacted, keyed by account id or ``firm``)."""

    kind: Literal["exposure"] = "exposure"
    scope: Literal["account", "firm"]
    account_id: str | None = None
    journey_id: str  # of the event that moved it (a fill's block), or "" for a price tick
    as_of: AwareDatetime
    exposure: AccountExposure | FirmExposure


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


def level_of(utilization: float, warn_at: float = DEFAULT_WARN_AT) -> Level:
    """``critical`` above the limit, ``warning`` from ``warn_at`` of it, else ``ok``."""
    if utilization > 1.0:
        return Level.CRITICAL
    if utilization >= warn_at:
        return Level.WARNING
    return Level.OK


class LimitAlert(Frozen):
    """A figure that crossed into (or back out of) Warning or Critical (``mats.alerts``)."""

    kind: Literal["limit_alert"] = "limit_alert"
    event_id: str
    journey_id: str
    severity: Literal["warning", "critical", "cleared"]
    level: Level
    previous: Level
    scope: Literal["account", "firm"]
    account_id: str | None = None
    metric: str
    subject: str | None = None
    value: float
    limit: float
    utilization: float
    message: str
    raised_at: AwareDatetime


_Key = tuple[str, str, str]  # (account id or "firm", metric, subject)


class LimitWatch:
    """The level of every watched figure, and the alerts when a level changes.

    Parameters
    ----------
    warn_at
        The share of a limit from which a figure is at ``warning`` (default 0.9).
    """

    def __init__(self, warn_at: float = DEFAULT_WARN_AT) -> None:
        if not 0.0 < warn_at <= 1.0:
            raise ValueError(f"warn_at must be in (0, 1], got {warn_at}")
        self.warn_at = warn_at
        self.levels: dict[_Key, Level] = {}

    def observe(self, exposure: AccountExposure | FirmExposure, *, journey_id: str,
                cause: str, at: datetime) -> list[LimitAlert]:
        """The alerts for one fresh exposure; ``cause`` makes their event ids (the event that
        moved it: a journal position), so the same update always yields the same ids."""
        if isinstance(exposure, AccountExposure):
            scope: Literal["account", "firm"] = "account"
            owner = exposure.account_id
        else:
            scope, owner = "firm", "firm"
        seen: set[_Key] = set()
        out: list[LimitAlert] = []
        for u in exposure.usage:
            key = (owner, u.metric, u.subject or "")
            seen.add(key)
            out.extend(self._update(key, u, scope, journey_id, cause, at))
        # a figure no longer reported (the position was closed) is back to ok
        for key in [k for k in self.levels if k[0] == owner and k not in seen]:
            gone = Usage(metric=key[1], subject=key[2] or None, value=0.0, limit=0.0,
                         utilization=0.0)
            out.extend(self._update(key, gone, scope, journey_id, cause, at))
        return out

    def _update(self, key: _Key, u: Usage, scope: Literal["account", "firm"],
                journey_id: str, cause: str, at: datetime) -> Iterable[LimitAlert]:
        new = level_of(u.utilization, self.warn_at)
        old = self.levels.get(key, Level.OK)
        if new is Level.OK:
            self.levels.pop(key, None)
        else:
            self.levels[key] = new
        if new is old:
            return []
        owner, metric, subject = key
        who = "firm" if scope == "firm" else f"account {owner}"
        what = f"{metric} {subject}".rstrip()
        if new is Level.OK:
            message = f"{who}: {what} back under {self.warn_at:.0%} of its limit"
        else:
            message = (f"{who}: {what} at {u.utilization:.1%} of its limit "
                       f"({u.value:,.4g} of {u.limit:,.4g})")
        event_id = str(uuid.uuid5(_NAMESPACE, json.dumps([cause, *key, new.value])))
        return [LimitAlert(
            event_id=event_id, journey_id=journey_id,
            severity="cleared" if new is Level.OK else new.value, level=new, previous=old,
            scope=scope, account_id=owner if scope == "account" else None, metric=metric,
            subject=subject or None, value=u.value, limit=u.limit, utilization=u.utilization,
            message=message, raised_at=at)]
