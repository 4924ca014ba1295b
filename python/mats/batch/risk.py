"""Value at risk per account and firm-wide, and its backtest with the Basel traffic light.

P&L scenarios are today's exposures (market value per instrument) times each past day's
returns: ``pnl_t = Σ_i e_i r_{i,t}``. Over the last ``window`` (250) days:

historical VaR
    ``-Q_{1-a}(pnl)``, the empirical quantile with linear interpolation between order
    statistics (Hyndman and Fan's definition 7, numpy's default) [1].
delta-normal VaR
    ``z_a · sqrt(e' Σ e)``, ``Σ`` the sample covariance (n - 1) of the returns, ``z_a`` the
    standard normal quantile, zero mean [2]. ``e' Σ e`` is the sample variance of the P&L
    scenarios, which is how it is computed.

Backtest: for each of the last 250 days, the 99 % historical VaR from the 250 days before it
is compared with that day's P&L (today's positions held: the hypothetical P&L); a loss beyond
it is an exception. The Basel zones for 250 days at 99 %: green 0-4, yellow 5-9, red 10 or
more exceptions [3]. With fewer than ``2 x window`` days of history the backtest covers what
there is and the zone is left empty.

[1] R. J. Hyndman and Y. Fan, "Sample quantiles in statistical packages", *The American
    Statistician* 50(4), 361-365, 1996.
[2] J.P. Morgan/Reuters, *RiskMetrics - Technical Document*, 4th ed., 1996.
[3] Basel Committee on Banking Supervision, *Supervisory framework for the use of
    "backtesting" in conjunction with the internal models approach to market risk capital
    requirements*, January 1996.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["VarResult", "traffic_light", "value_at_risk"]

FIRM = "FIRM"
LEVELS = (0.95, 0.99)


def traffic_light(exceptions: int) -> str:
    """The Basel zone of an exception count over 250 days at 99 %."""
    return "green" if exceptions <= 4 else "yellow" if exceptions <= 9 else "red"


@dataclass(frozen=True)
class VarResult:
    """``table``: one row per scope (account or ``FIRM``), method and level; ``backtest``:
    the firm's daily P&L against its 99 % VaR forecast over the backtest days."""

    table: pl.DataFrame
    backtest: pl.DataFrame


def value_at_risk(exposures: pl.DataFrame, history: pl.DataFrame, window: int = 250,
                  levels: tuple[float, ...] = LEVELS) -> VarResult:
    """VaR of every account in ``exposures`` (``account_id, symbol, exposure``) and the firm.

    ``history``: ``date, symbol, ret``; a missing return counts as 0.
    """
    wide = (history.pivot(on="symbol", index="date", values="ret").sort("date")
            .fill_null(0.0))
    dates = wide["date"].to_list()
    symbols = [c for c in wide.columns if c != "date"]
    if len(dates) < window:
        raise ValueError(f"VaR needs {window} days of returns, the history has {len(dates)}")
    r: npt.NDArray[np.float64] = wide.select(symbols).to_numpy().astype(np.float64)
    e_wide = (exposures.filter(pl.col("symbol").is_in(symbols))
              .pivot(on="symbol", index="account_id", values="exposure",
                     aggregate_function="sum").sort("account_id").fill_null(0.0))
    accounts = e_wide["account_id"].to_list()
    e = np.zeros((len(accounts) + 1, len(symbols)))
    for j, s in enumerate(symbols):
        if s in e_wide.columns:
            e[: len(accounts), j] = e_wide[s].to_numpy()
    e[-1] = e[:-1].sum(axis=0)
    scopes = [*accounts, FIRM]
    pnl = e @ r.T  # scopes x days
    last = pnl[:, -window:]
    rows = []
    n_bt = min(window, len(dates) - window)
    exc = np.zeros(len(scopes), dtype=np.int64)
    forecast = np.zeros((len(scopes), 0))
    if n_bt > 0:
        views = np.lib.stride_tricks.sliding_window_view(pnl[:, :-1], window, axis=1)
        forecast = -np.quantile(views[:, -n_bt:, :], 1 - 0.99, axis=2)
        exc = (pnl[:, -n_bt:] < -forecast).sum(axis=1)
    sd = last.std(axis=1, ddof=1)
    for level in levels:
        hist = -np.quantile(last, 1 - level, axis=1)
        dn = NormalDist().inv_cdf(level) * sd
        for k, scope in enumerate(scopes):
            for method, v in (("historical", hist[k]), ("delta_normal", dn[k])):
                bt = method == "historical" and level == 0.99
                rows.append({
                    "scope": "firm" if scope == FIRM else "account", "account_id": scope,
                    "method": method, "level": level, "var": float(v),
                    "exposure": float(np.abs(e[k]).sum()),
                    "backtest_days": n_bt if bt else None,
                    "exceptions": int(exc[k]) if bt and n_bt else None,
                    "zone": traffic_light(int(exc[k])) if bt and n_bt == 250 else None})
    table = pl.DataFrame(rows, schema={
        "scope": pl.String, "account_id": pl.String, "method": pl.String, "level": pl.Float64,
        "var": pl.Float64, "exposure": pl.Float64, "backtest_days": pl.Int64,
        "exceptions": pl.Int64, "zone": pl.String})
    backtest = pl.DataFrame({
        "date": dates[len(dates) - n_bt:] if n_bt else [],
        "pnl": pnl[-1, -n_bt:] if n_bt else [],
        "var99": forecast[-1] if n_bt else []},
        schema={"date": pl.Date, "pnl": pl.Float64, "var99": pl.Float64})
    return VarResult(table, backtest)
