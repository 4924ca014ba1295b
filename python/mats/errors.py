"""Exceptions raised by MATS for bad input. Each carries structured details.

The Rust core raises these same classes (it imports them from here), so a caller catches one
hierarchy whichever engine, reference or native, it uses.
"""

from __future__ import annotations

from typing import Any


class MatsError(ValueError):
    """Base of every MATS input error.

    Parameters
    ----------
    message
        What was wrong, in words a user can act on.
    loc
        Where: the path of the offending field (``("orders", 3, "quantity")``), if known.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc = tuple(loc)

    def errors(self) -> list[dict[str, Any]]:
        """The details as a list, in the shape of ``pydantic.ValidationError.errors()``."""
        return [{"loc": self.loc, "msg": self.message, "type": type(self).__name__}]

    def __str__(self) -> str:
        if not self.loc:
            return self.message
        path = ""
        for part in self.loc:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += f".{part}" if path else str(part)
        return f"{path}: {self.message}"


class BookError(MatsError):
    """The book (instruments, mandates, accounts, limits, prices) is inconsistent."""


class OrderError(MatsError):
    """A block order cannot be processed as given (unknown symbol, quantity not in lots, ...)."""


class ConfigError(MatsError):
    """A configuration or data file is missing, unreadable or malformed."""
