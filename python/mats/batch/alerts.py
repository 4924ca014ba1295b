"""Alerts of the batch jobs, for the desk: what ``mats_sod`` (and later jobs) found.

A critical problem quarantines its input and nothing built on it is published; a warning is
published with the state. Either way the desk hears of it on ``mats.alerts``, where the stream
app's alerts are (:func:`mats.batch.publish.publish_alerts`), and the event store records it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import AwareDatetime

from mats.batch.problems import Problem
from mats.models import Frozen

__all__ = ["ALERTS_TOPIC", "BatchAlert", "batch_alerts"]

ALERTS_TOPIC = "mats.alerts"

_ALERT_NAMESPACE = uuid.UUID("6f2d8c1a-94b3-4e57-a0c8-3b1e7d5f9a24")


class BatchAlert(Frozen):
    """A batch job's finding for the desk (``mats.alerts``, keyed by the job): ``critical`` for
    an input quarantined (nothing built on it is published), ``warning`` for one published with
    a problem to look at. One alert per input and severity, with every problem found."""

    kind: Literal["batch_alert"] = "batch_alert"
    event_id: str
    journey_id: str = ""  # a batch alert belongs to no order's journey
    job: str
    as_of: date
    severity: Literal["critical", "warning"]
    input: str
    file: str
    problems: list[Problem]
    message: str
    raised_at: AwareDatetime


def batch_alerts(job: str, as_of: date, problems: Sequence[Problem],
                 at: datetime | None = None) -> list[BatchAlert]:
    """The alerts for a job's problems: one per input and severity, critical ones first. The
    event ids depend on the job, day, input and severity only, so a re-run does not repeat
    them."""
    at = at or datetime.now(UTC)
    grouped: dict[tuple[str, str], list[Problem]] = {}
    for p in problems:
        grouped.setdefault((p.severity.value, p.input), []).append(p)
    out = []
    for (severity, name), found in sorted(grouped.items()):
        what = "quarantined, nothing built on it is published" if severity == "critical" else (
            "published, with problems to look at")
        first = found[0].render()
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        out.append(BatchAlert(
            event_id=str(uuid.uuid5(_ALERT_NAMESPACE, json.dumps(
                [job, as_of.isoformat(), name, severity]))),
            job=job, as_of=as_of, severity="critical" if severity == "critical" else "warning",
            input=name, file=found[0].file, problems=found,
            message=f"{job} {as_of}: {name} {what}: {first}{more}", raised_at=at))
    return out
