"""Native core of MATS (Rust, PyO3). Use ``mats.Engine`` rather than this module directly."""

from typing import Any

__all__ = ["Decision", "Engine", "reason_codes"]
__version__: str

def reason_codes() -> list[str]:
    """Every reason code the core can give."""

class Engine:
    """The allocation and risk engine. Holds the book between calls."""

    def __new__(cls, book_json: str) -> Engine: ...
    def process(self, order: Any, as_of: float | None = None, commit: bool = True) -> Decision:
        """Layer 1, allocation and layer 2 for one block order."""
    def upsert_account(self, account_json: str) -> None:
        """Adds or replaces an account (JSON of ``mats.models.Account``)."""
    def update_prices(self, prices: dict[str, float]) -> None:
        """Sets live marks."""
    def apply_fill(
        self, account_id: str, symbol: str, side: str, quantity: int, price: float
    ) -> None:
        """Books an execution for one account."""
    def release(self, account_id: str, symbol: str, side: str, quantity: int) -> None:
        """Releases working quantity that will not fill (cancelled or expired)."""
    def execution(
        self, order_id: str, exec_id: str, quantity: int, price: float
    ) -> list[tuple[str, int, int, float, float]] | None:
        """Hands an execution of an accepted block to its accounts and books their shares."""
    def close_block(self, order_id: str, reason: str) -> list[tuple[str, int, int, int, bool]]:
        """Ends a block: (account_id, allocated, filled, shortfall, carried) per account."""
    def set_kill_switch(self, mode: str) -> None: ...
    @property
    def kill_switch(self) -> str: ...
    def position(self, account_id: str, symbol: str) -> int:
        """Current position of an account in a symbol."""
    def cash(self, account_id: str) -> tuple[float, float, float]:
        """Cash, settled cash and reserved cash of an account."""
    def open_orders(self, account_id: str, symbol: str) -> tuple[int, int]:
        """Working (buy, sell) quantity of an account in a symbol."""
    @property
    def account_count(self) -> int: ...
    def exposure(self, account_id: str) -> str:
        """Exposure of one account at marks and its use of its mandate's limits, as JSON."""
    def firm_exposure(self) -> str:
        """The firm's exposure at marks and its use of the firm-wide limits, as JSON."""
    def holders(self, symbol: str) -> list[str]:
        """The accounts holding a position in a symbol, in book order."""
    def accounts_json(self, ids: list[str] | None = None) -> str:
        """The live state of the accounts ``ids`` in that order, or of every account in book
        order, as JSON."""
    def child_orders(self, order_id: str) -> list[str]:
        """The child order ids of a committed block (one per broker of its accounts)."""

class Decision:
    """The core's answer for one block. ``to_json()`` gives every detail."""

    @property
    def order_id(self) -> str: ...
    @property
    def journey_id(self) -> str: ...
    @property
    def accepted(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def stage(self) -> str | None: ...
    @property
    def requested_quantity(self) -> int: ...
    @property
    def placed_quantity(self) -> int: ...
    @property
    def unplaced_quantity(self) -> int: ...
    @property
    def l1_codes(self) -> list[str]:
        """Reason codes of layer 1."""
    def quantities(self) -> list[tuple[str, int]]:
        """Shares per account, for the accounts that get some."""
    def to_json(self) -> str: ...
