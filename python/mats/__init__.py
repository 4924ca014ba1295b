"""MATS: a multi-account trading system.

The core (allocation, two-layer pre-trade risk) is written in Rust and loaded as ``mats._core``;
``mats.Engine`` is its Python face and ``mats.reference.ReferenceEngine`` a plain-Python twin used
as the test oracle and benchmark baseline.
"""

from mats.engine import Engine, load_decision
from mats.errors import BookError, ConfigError, MatsError, OrderError
from mats.models import (
    Account,
    AllocationMethod,
    BlockOrder,
    Book,
    Decision,
    Instrument,
    Mandate,
    RiskConfig,
    Side,
)

__all__ = [
    "Account",
    "AllocationMethod",
    "BlockOrder",
    "Book",
    "BookError",
    "ConfigError",
    "Decision",
    "Engine",
    "Instrument",
    "Mandate",
    "MatsError",
    "OrderError",
    "RiskConfig",
    "Side",
    "load_decision",
]
