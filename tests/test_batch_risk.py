"""VaR against a direct numpy calculation, the backtest's exception count and Basel zones."""

from __future__ import annotations

from datetime import date, timedelta
from statistics import NormalDist

import numpy as np
import polars as pl
import pytest

from mats.batch.risk import traffic_light, value_at_risk


def _history(days: int, symbols: list[str], seed: int = 7) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, size=(days, len(symbols))) * 0.01
    d0 = date(2024, 1, 1)
    rows = [{"date": d0 + timedelta(days=t), "symbol": s, "ret": float(r[t, j])}
            for t in range(days) for j, s in enumerate(symbols)]
    return pl.DataFrame(rows), r


def test_var_matches_numpy() -> None:
    symbols = ["A", "B", "C", "D"]
    hist, r = _history(520, symbols)
    exp = {"X": [1e6, -2e5, 0.0, 3e5], "Y": [0.0, 5e5, 5e5, 0.0]}
    exposures = pl.DataFrame([{"account_id": a, "symbol": s, "exposure": v}
                              for a, vs in exp.items() for s, v in zip(symbols, vs,
                                                                       strict=True)])
    res = value_at_risk(exposures, hist)
    t = {(r_["account_id"], r_["method"], r_["level"]): r_ for r_ in res.table.iter_rows(
        named=True)}
    window = r[-250:]
    for acct, vec in [*exp.items(), ("FIRM", list(np.add(exp["X"], exp["Y"])))]:
        e = np.array(vec)
        pnl = window @ e
        cov = np.cov(window, rowvar=False, ddof=1)
        for level in (0.95, 0.99):
            assert t[(acct, "historical", level)]["var"] == pytest.approx(
                -np.quantile(pnl, 1 - level))
            assert t[(acct, "delta_normal", level)]["var"] == pytest.approx(
                NormalDist().inv_cdf(level) * np.sqrt(e @ cov @ e))
        # backtest by a plain loop: day t against the 99 % VaR of the 250 days before it
        full = r @ e
        n = len(full)
        exceptions = sum(1 for k in range(n - 250, n)
                         if full[k] < np.quantile(full[k - 250:k], 0.01))
        row = t[(acct, "historical", 0.99)]
        assert row["exceptions"] == exceptions and row["backtest_days"] == 250
        assert row["zone"] == traffic_light(exceptions)
    assert res.backtest.height == 250


def test_traffic_light_zones() -> None:
    assert [traffic_light(n) for n in (0, 4, 5, 9, 10, 30)] == [
        "green", "green", "yellow", "yellow", "red", "red"]


def test_short_history_has_no_zone() -> None:
    hist, _ = _history(300, ["A"])
    exposures = pl.DataFrame({"account_id": ["X"], "symbol": ["A"], "exposure": [1e6]})
    res = value_at_risk(exposures, hist)
    row = res.table.filter((pl.col("method") == "historical") & (pl.col("level") == 0.99)
                           & (pl.col("account_id") == "X")).row(0, named=True)
    assert row["backtest_days"] == 50 and row["zone"] is None
    with pytest.raises(ValueError, match="needs 250 days"):
        value_at_risk(exposures, hist.filter(pl.col("date") < date(2024, 3, 1)))
