"""The engine's Python face: takes and gives the pydantic models, keeps the native book."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from mats import _core
from mats.models import (
    Account,
    AccountFill,
    BlockOrder,
    Book,
    Decision,
    KillSwitch,
    Shortfall,
    Side,
)


def load_decision(native: _core.Decision) -> Decision:
    """Every detail of a native decision as the pydantic model."""
    return Decision.model_validate_json(native.to_json())


class Engine:
    """Allocation and two-layer pre-trade risk over a book held in Rust between calls.

    Parameters
    ----------
    book
        Instruments, mandates, accounts, firm limits and marks at start of day.

    Examples
    --------
    >>> engine = Engine(book)                         # doctest: +SKIP
    >>> d = engine.process(order)                     # doctest: +SKIP
    >>> d.status, d.placed_quantity, d.quantities()   # doctest: +SKIP
    """

    def __init__(self, book: Book) -> None:
        self._native = _core.Engine(book.model_dump_json())

    def process(self, order: BlockOrder, as_of: datetime | None = None,
                commit: bool = True) -> _core.Decision:
        """Layer 1, allocation and layer 2 for one block; one crossing into Rust.

        Returns the native decision (summary fields as attributes); ``load_decision`` or
        ``decide`` give the full pydantic ``Decision``. With ``commit`` an accepted block
        reserves its lots' working quantity and cash.
        """
        ts = None if as_of is None else as_of.timestamp()
        return self._native.process(order, ts, commit)

    def decide(self, order: BlockOrder, as_of: datetime | None = None,
               commit: bool = True) -> Decision:
        """``process`` returning the full pydantic ``Decision``."""
        return load_decision(self.process(order, as_of, commit))

    def upsert_account(self, account: Account) -> None:
        self._native.upsert_account(account.model_dump_json())

    def update_prices(self, prices: Mapping[str, float]) -> None:
        self._native.update_prices(dict(prices))

    def apply_fill(self, account_id: str, symbol: str, side: Side | str, quantity: int,
                   price: float) -> None:
        self._native.apply_fill(account_id, symbol, str(side), quantity, price)

    def release(self, account_id: str, symbol: str, side: Side | str, quantity: int) -> None:
        self._native.release(account_id, symbol, str(side), quantity)

    def execution(self, order_id: str, exec_id: str, quantity: int,
                  price: float) -> list[AccountFill] | None:
        """Hands an execution of an accepted block to its accounts at the block's average price.

        Books each account's share (position, cash, working quantity). Returns the accounts'
        fills, or None when ``exec_id`` was booked before (a redelivered execution report).
        """
        out = self._native.execution(order_id, exec_id, quantity, price)
        if out is None:
            return None
        return [AccountFill(account_id=a, quantity=q, filled=f, avg_price=p, cash_delta=c)
                for a, q, f, p, c in out]

    def close_block(self, order_id: str, reason: str = "done") -> list[Shortfall]:
        """Ends a block (``done``, ``cancelled``, ``expired``); returns every shortfall."""
        return [Shortfall(account_id=a, allocated=al, filled=f, shortfall=s, carried=c)
                for a, al, f, s, c in self._native.close_block(order_id, reason)]

    def set_kill_switch(self, mode: KillSwitch | str) -> None:
        self._native.set_kill_switch(str(mode))

    @property
    def kill_switch(self) -> KillSwitch:
        return KillSwitch(self._native.kill_switch)

    def position(self, account_id: str, symbol: str) -> int:
        return self._native.position(account_id, symbol)

    def cash(self, account_id: str) -> tuple[float, float, float]:
        """(cash, settled cash, reserved cash) of an account."""
        return self._native.cash(account_id)

    def open_orders(self, account_id: str, symbol: str) -> tuple[int, int]:
        """Working (buy, sell) quantity of an account in a symbol."""
        return self._native.open_orders(account_id, symbol)

    def exposure(self, account_id: str) -> str:
        """One account's exposure at marks beside its mandate's limits, as JSON
        (:func:`mats.exposure.account_exposure` reads it)."""
        return self._native.exposure(account_id)

    def firm_exposure(self) -> str:
        """The firm's exposure at marks beside the firm limits, as JSON
        (:func:`mats.exposure.firm_exposure` reads it)."""
        return self._native.firm_exposure()

    def holders(self, symbol: str) -> list[str]:
        """The accounts holding a position in ``symbol``, in book order."""
        return self._native.holders(symbol)

    def accounts_json(self, ids: Sequence[str] | None = None) -> str:
        """The live state (cash, settled and reserved cash, positions and working orders by
        symbol) of the accounts ``ids`` in that order, or of every account in book order, as
        JSON. An unknown id raises :class:`mats.errors.OrderError` naming it."""
        return self._native.accounts_json(None if ids is None else list(ids))

    def child_orders(self, order_id: str) -> list[str]:
        """The child order ids of a committed block: one per broker of its accounts."""
        return self._native.child_orders(order_id)
