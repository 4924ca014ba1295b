"""Brinson-Fachler on a textbook three-sector case, worked by hand; the allocation effect."""

from __future__ import annotations

import polars as pl
import pytest

from mats.batch.attribution import allocation_effect, brinson_fachler, sector_weights


def test_textbook_brinson_fachler() -> None:
    # Portfolio 50/30/20 earning 4 %, 2 %, -1 %; benchmark 40/40/20 earning 3 %, 1 %, 0 %.
    # Rp = 0.5*0.04 + 0.3*0.02 + 0.2*(-0.01) = 2.4 %;  Rb = 0.4*0.03 + 0.4*0.01 = 1.6 %.
    # allocation  (wp-wb)(rb-Rb): A 0.1*(0.03-0.016) = 0.14 %, B -0.1*(0.01-0.016) = 0.06 %, C 0
    # selection   wb(rp-rb):      A 0.4*0.01 = 0.4 %, B 0.4*0.01 = 0.4 %, C 0.2*(-0.01) = -0.2 %
    # interaction (wp-wb)(rp-rb): A 0.1*0.01 = 0.1 %, B -0.1*0.01 = -0.1 %, C 0
    # totals: allocation 0.2 % + selection 0.6 % + interaction 0 = 0.8 % = Rp - Rb
    df = pl.DataFrame({"account_id": ["P"] * 3, "sector": ["A", "B", "C"],
                       "wp": [0.5, 0.3, 0.2], "rp": [0.04, 0.02, -0.01],
                       "wb": [0.4, 0.4, 0.2], "rb": [0.03, 0.01, 0.0]})
    out = brinson_fachler(df).sort("sector")
    assert out["allocation"].to_list() == pytest.approx([0.0014, 0.0006, 0.0])
    assert out["selection"].to_list() == pytest.approx([0.004, 0.004, -0.002])
    assert out["interaction"].to_list() == pytest.approx([0.001, -0.001, 0.0])
    assert out["Rp"][0] == pytest.approx(0.024) and out["Rb"][0] == pytest.approx(0.016)
    assert out["allocation"].sum() == pytest.approx(0.002)
    assert out["selection"].sum() == pytest.approx(0.006)
    assert out["total"].sum() == pytest.approx(0.008)


def test_sector_weights_from_holdings() -> None:
    market = pl.DataFrame({"symbol": ["A1", "A2", "B1", "C1"],
                           "prev_close": [10.0, 20.0, 50.0, 5.0],
                           "close": [11.0, 19.0, 50.5, 5.0]})
    instruments = pl.DataFrame({"symbol": ["A1", "A2", "B1", "C1"],
                                "sector": ["Tech", "Tech", "Energy", "Other"]})
    holdings = pl.DataFrame({"account_id": ["X", "X"], "symbol": ["A1", "B1"],
                             "quantity": [300, 40]})  # 3,000 in Tech, 2,000 in Energy
    bench = pl.DataFrame({"symbol": ["A1", "A2", "C1"], "weight": [1.0, 1.0, 2.0]})
    sw = sector_weights(holdings, market, instruments, bench, firm=False)
    got = {r["sector"]: r for r in sw.iter_rows(named=True)}
    assert got["Tech"]["wp"] == pytest.approx(0.6) and got["Tech"]["rp"] == pytest.approx(0.1)
    assert got["Energy"]["wp"] == pytest.approx(0.4) and got["Energy"]["wb"] == 0.0
    assert got["Tech"]["wb"] == pytest.approx(0.5)
    assert got["Tech"]["rb"] == pytest.approx((0.1 - 0.05) / 2)
    assert got["Other"]["wp"] == 0.0 and got["Other"]["wb"] == pytest.approx(0.5)
    bf = brinson_fachler(sw)
    rp = 0.6 * 0.1 + 0.4 * 0.01
    rb = 0.5 * 0.025
    assert bf["total"].sum() == pytest.approx(rp - rb)
    # Energy is off-benchmark: all of its effect is allocation
    e = bf.filter(pl.col("sector") == "Energy").row(0, named=True)
    assert e["selection"] == 0.0 and e["interaction"] == 0.0
    assert e["allocation"] == pytest.approx(0.4 * (0.01 - rb))


def test_allocation_effect() -> None:
    market = pl.DataFrame({"symbol": ["A", "B"], "prev_close": [10.0, 10.0],
                           "close": [11.0, 9.0]})
    holdings = pl.DataFrame({"account_id": ["X", "X"], "symbol": ["A", "B"],
                             "quantity": [500, 300]})
    accounts = pl.DataFrame({"account_id": ["X"], "cash": [2_000.0], "net_liq": [10_000.0]})
    targets = pl.DataFrame({"account_id": ["X", "X"], "symbol": ["A", "B"],
                            "weight": [0.6, 0.4]})
    out = allocation_effect(holdings, accounts, market, targets, benchmark_return=0.01)
    r = out.row(0, named=True)
    # actual A 50 %, B 30 %, cash 20 %; target 60 / 40 / 0
    assert r["drift"] == pytest.approx(0.5 * (0.1 + 0.1 + 0.2))
    assert r["drift_effect"] == pytest.approx(-0.1 * 0.1 + -0.1 * -0.1 + 0.2 * 0.0)
    assert r["cash_weight"] == pytest.approx(0.2)
    assert r["cash_drag"] == pytest.approx(0.2 * (0.0 - 0.01))


def test_net_short_book_is_left_out() -> None:
    market = pl.DataFrame({"symbol": ["A"], "prev_close": [10.0], "close": [11.0]})
    instruments = pl.DataFrame({"symbol": ["A"], "sector": ["Tech"]})
    holdings = pl.DataFrame({"account_id": ["L", "S"], "symbol": ["A", "A"],
                             "quantity": [100, -100]})
    bench = pl.DataFrame({"symbol": ["A"], "weight": [1.0]})
    sw = sector_weights(holdings, market, instruments, bench)
    # S is net short and the firm net flat: neither has weights to attribute
    assert sorted(set(sw["account_id"])) == ["L"]
    assert sw.filter(pl.col("account_id") == "L")["wp"].to_list() == [1.0]


def test_an_account_without_targets_has_all_its_target_in_cash() -> None:
    """Cash's target is 1 - Σ targets: 1 for an account with no target rows, the same as an
    account whose targets are all zero."""
    market = pl.DataFrame({"symbol": ["A"], "prev_close": [100.0], "close": [110.0]})
    holdings = pl.DataFrame({"account_id": ["X", "Y"], "symbol": ["A", "A"],
                             "quantity": [20, 20]})
    accounts = pl.DataFrame({"account_id": ["X", "Y"], "cash": [8_000.0, 8_000.0],
                             "net_liq": [10_000.0, 10_000.0]})
    targets = pl.DataFrame({"account_id": ["X"], "symbol": ["A"], "weight": [0.0]})
    out = allocation_effect(holdings, accounts, market, targets, benchmark_return=0.0)
    # 20 % in A against 0, 80 % cash against 100 %: a fifth of the account is off target
    assert out["drift"].to_list() == pytest.approx([0.2, 0.2])
    assert out["drift_effect"].to_list() == pytest.approx([0.2 * 0.1, 0.2 * 0.1])
