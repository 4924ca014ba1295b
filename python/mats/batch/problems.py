"""What a batch check found: one :class:`Problem` per failed check, critical or warning."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from pydantic import Field

from mats.errors import MatsError
from mats.models import Frozen

__all__ = ["BatchInputError", "Problem", "Severity", "critical", "render_problems"]

# How many offending rows a message lists before it says "and N more".
SHOWN_ROWS = 5


class Severity(StrEnum):
    """A critical problem stops everything built on its input; a warning is published."""

    CRITICAL = "critical"
    WARNING = "warning"


class Problem(Frozen):
    """One failed check of one input.

    Attributes
    ----------
    input
        The input's name (``positions``, ``cash``, ``prices`` ...).
    file
        The file it was read from ("" for a table handed over in memory).
    severity
        ``critical`` (the input is quarantined, nothing is built on it) or ``warning``.
    check
        The check's name: a Great Expectations expectation type, or a loader check
        (``missing_column``, ``wrong_type``, ``empty_file``, ``unreadable``).
    column
        The offending column, if one.
    rows
        Where: CSV line numbers (the header is line 1) or 1-based Parquet row numbers, the first
        few only; ``row_count`` says how many there are in all.
    message
        What was wrong, in words a user can act on.
    """

    input: str
    file: str = ""
    severity: Severity
    check: str
    column: str | None = None
    rows: list[int] = Field(default_factory=list)
    row_count: int = 0
    message: str

    def render(self) -> str:
        """``positions.csv: column quantity, lines 4, 9: 2 values are not whole lots``."""
        where = [self.file or self.input]
        if self.column:
            where.append(f"column {self.column}")
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:SHOWN_ROWS])
            more = self.row_count - min(len(self.rows), SHOWN_ROWS)
            # CSV lines (the header is line 1); Parquet rows, and rows of in-memory tables
            parquet = self.file.lower().endswith((".parquet", ".pq"))
            label = "row" if parquet or not self.file else "line"
            where.append(f"{label}{'s' if self.row_count > 1 else ''} {shown}"
                         + (f" and {more} more" if more > 0 else ""))
        return f"{self.severity.value}: {', '.join(where)}: {self.message}"


def critical(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is Severity.CRITICAL]


def render_problems(problems: Sequence[Problem]) -> str:
    return "\n".join(p.render() for p in problems)


class BatchInputError(MatsError):
    """A batch input failed a critical check: nothing built on it is published.

    ``problems`` holds every problem found (the warnings too), each with file, column and rows.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        crit = critical(problems)
        head = (f"{len(crit)} critical problem{'s' if len(crit) != 1 else ''} in the inputs; "
                "nothing was built on them:\n")
        super().__init__(head + render_problems(crit), ())
        self.problems = list(problems)
