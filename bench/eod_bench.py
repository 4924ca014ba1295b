"""Benchmark of the end-of-day attribution: polars (mats.batch.tca) against plain pandas.

For 1M and 10M fills across 1,000 accounts (synthetic, seeded, built here with numpy) it times
the transaction cost analysis of :mod:`mats.batch.tca`: every fill joined to its execution
(price, fee per share), summed per lot (block x account), joined to the lots and blocks,
Perold's shortfall components and the slippage notionals per lot, then summed per account,
strategy, allocator, gateway and time-of-day bucket and for the firm. The pandas version below
does the same maths the straightforward way (merge, groupby-agg, vectorised columns). Both run
on the same frames in the same process, and their results are checked equal (every sum and
ratio to a relative 1e-9) before any time is reported.

Shape of the data: blocks of 100 accounts (of 1,000), each lot filled in 10 executions, so 10M
fills are 10,000 blocks, 1M lots and 100,000 executions; five gateways, three strategies, seven
allocators, buckets of 30 minutes in New York time.

The order of the fills' rows matters to both (the sums per lot land in a table of a million lots,
so rows of one lot together keep it in cache), so each size runs in two orders (``fill_order``):

* ``lot``: sorted by block, account and execution, the order in which
  :func:`mats.batch.events.store_frames` writes the fills file of the day. The goals are read
  from this row at 10M fills.
* ``execution``: the order the fills happened in, each execution's accounts together and the
  executions of all blocks interleaved in time: a fills file from elsewhere, not sorted.

Run it with::

    .venv/bin/python bench/eod_bench.py                    # 1M and 10M, writes the JSON
    .venv/bin/python bench/eod_bench.py --fills 100000 --no-write

The two run in alternating rounds (``--rounds``, default 5) so that both see the same machine;
``polars_s`` and ``pandas_s`` are each one's best round, ``median_round_speedup`` the median of
the per-round ratios, and every round's time is kept. A shared 2-core VM is noisy (other work
comes and goes), so the JSON records the load average when the run ended. Goals (10M fills under
60 s, at least 5x pandas) are reported, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from mats.batch.tca import DIMENSIONS, tca

RESULTS = Path(__file__).resolve().parent / "results" / "eod.json"
ACCOUNTS_PER_BLOCK = 100
EXECS_PER_BLOCK = 10
GATEWAYS = ("prime-a", "prime-b", "retail-a", "retail-b", "algo-x")
STRATEGIES = ("growth", "value", "income")
ALLOCATORS = ("net_liq", "available_equity", "equal", "ratios", "percent", "shares",
              "target_weight")
TZ = "America/New_York"
BUCKET_MINUTES = 30


FILL_ORDERS = ("lot", "execution")


def make_data(n_fills: int, n_accounts: int, seed: int = 20250613,
              fill_order: str = "lot") -> dict[str, pl.DataFrame]:
    """Blocks, lots, executions and fills (the tables of mats.batch.eod_tables), the fills in
    ``fill_order`` (see the module)."""
    rng = np.random.default_rng(seed)
    per_block = ACCOUNTS_PER_BLOCK * EXECS_PER_BLOCK
    n_blocks = max(1, n_fills // per_block)
    n_lots = n_blocks * ACCOUNTS_PER_BLOCK
    # accounts of a block: a stride through the 1,000 (7 is prime to 1,000: all distinct)
    start = rng.integers(0, n_accounts, n_blocks)
    acct = (start[:, None] + 7 * np.arange(ACCOUNTS_PER_BLOCK)[None, :]) % n_accounts
    lot_block = np.repeat(np.arange(n_blocks), ACCOUNTS_PER_BLOCK)
    lot_acct = acct.reshape(-1)
    allocated = rng.integers(1, 50, n_lots) * 100
    fill_frac = np.where(rng.random(n_blocks) < 0.4, 1.0, rng.uniform(0.3, 0.95, n_blocks))
    # each lot's filled shares over the block's executions (whole shares, at least 1 each)
    per_exec = np.maximum(1, (allocated * fill_frac[lot_block]) // EXECS_PER_BLOCK).astype(
        np.int64)
    decision = rng.uniform(10, 500, n_blocks)
    arrival = decision * (1 + rng.normal(0, 0.0008, n_blocks))
    side_buy = rng.random(n_blocks) < 0.6
    sign = np.where(side_buy, 1.0, -1.0)
    exec_block = np.repeat(np.arange(n_blocks), EXECS_PER_BLOCK)
    exec_price = np.round(arrival[exec_block] * (1 + sign[exec_block] * np.abs(
        rng.normal(0.0004, 0.0008, n_blocks * EXECS_PER_BLOCK))), 4)
    # fills: lot x execution of its block
    f_lot = np.repeat(np.arange(n_lots), EXECS_PER_BLOCK)
    f_exec = (lot_block[f_lot] * EXECS_PER_BLOCK
              + np.tile(np.arange(EXECS_PER_BLOCK), n_lots))
    f_qty = per_exec[f_lot]
    exec_qty = np.bincount(f_exec, weights=f_qty, minlength=n_blocks * EXECS_PER_BLOCK)
    open_utc = np.datetime64("2025-06-13T13:30:00", "us")
    arrival_time = open_utc + (rng.uniform(0, 390 * 60e6, n_blocks)).astype("timedelta64[us]")

    def ids(prefix: str, values: np.ndarray, width: int) -> pl.Series:
        return pl.select(pl.format(f"{prefix}{{}}", pl.Series(values).cast(pl.String)
                                   .str.zfill(width))).to_series()

    blocks = pl.DataFrame({
        "order_id": ids("B", np.arange(n_blocks), 7),
        "strategy": np.array(STRATEGIES)[rng.integers(0, len(STRATEGIES), n_blocks)],
        "allocator": np.array(ALLOCATORS)[rng.integers(0, len(ALLOCATORS), n_blocks)],
        "symbol": ids("S", rng.integers(0, 3000, n_blocks), 4),
        "side": np.where(side_buy, "buy", "sell"),
        "decision_price": decision, "arrival_price": arrival,
        "vwap": arrival * (1 + rng.normal(0, 0.0003, n_blocks)),
        "close_price": decision * (1 + rng.normal(0, 0.01, n_blocks)),
    }).with_columns(pl.Series("arrival_time", arrival_time).dt.replace_time_zone("UTC"),
                    pl.Series("decision_time", arrival_time).dt.replace_time_zone("UTC"))
    account_ids = ids("ACC-", np.arange(n_accounts), 4)
    gateway_of = np.array(GATEWAYS)[np.arange(n_accounts) % len(GATEWAYS)]
    lots = pl.DataFrame({
        "order_id": blocks["order_id"].gather(lot_block),
        "account_id": account_ids.gather(lot_acct),
        "gateway": gateway_of[lot_acct], "allocated": allocated})
    exec_ids = ids("E", np.arange(n_blocks * EXECS_PER_BLOCK), 8)
    # each execution within 30 minutes of its block's arrival
    exec_time = arrival_time[exec_block] + rng.uniform(
        0, 30 * 60e6, n_blocks * EXECS_PER_BLOCK).astype("timedelta64[us]")
    # each execution from one gateway; its fills carry that gateway (execution ids are the
    # gateway's: the fills match their execution on both)
    exec_gateway = np.array(GATEWAYS)[rng.integers(0, len(GATEWAYS), n_blocks * EXECS_PER_BLOCK)]
    executions = pl.DataFrame({
        "gateway": exec_gateway,
        "exec_id": exec_ids, "order_id": blocks["order_id"].gather(exec_block),
        "quantity": exec_qty.astype(np.int64), "price": exec_price,
        "fee": np.round(exec_qty * 0.0035, 2)})
    fills = pl.DataFrame({
        "gateway": exec_gateway[f_exec],
        "exec_id": exec_ids.gather(f_exec), "order_id": lots["order_id"].gather(f_lot),
        "account_id": lots["account_id"].gather(f_lot), "quantity": f_qty})
    if fill_order == "lot":
        fills = fills.sort("order_id", "account_id", "gateway", "exec_id")
    elif fill_order == "execution":
        fills = (fills.with_columns(pl.Series("_t", exec_time[f_exec]))
                 .sort("_t", "exec_id", "account_id").drop("_t"))
    else:
        raise ValueError(f"unknown fill order {fill_order!r}: one of {', '.join(FILL_ORDERS)}")
    return {"blocks": blocks, "lots": lots, "executions": executions, "fills": fills}


def run_polars(d: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return tca(d["blocks"], d["lots"], d["executions"], d["fills"], TZ, BUCKET_MINUTES)[1]


SUMS = ["allocated", "filled", "paper_notional", "filled_notional", "arrival_notional",
        "vwap_notional", "delay", "execution", "opportunity", "fees", "shortfall", "vwap_cost"]


def run_pandas(d: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The same maths as mats.batch.tca, written the straightforward pandas way."""
    ex = d["executions"][["gateway", "exec_id", "price"]].copy()
    ex["fee_per_share"] = d["executions"]["fee"] / d["executions"]["quantity"]
    f = d["fills"][["gateway", "exec_id", "order_id", "account_id", "quantity"]].merge(
        ex, on=["gateway", "exec_id"], how="left")
    f["notional"] = f["quantity"] * f["price"]
    f["fee"] = f["quantity"] * f["fee_per_share"]
    per_lot = f.groupby(["order_id", "account_id"], as_index=False).agg(
        filled=("quantity", "sum"), filled_notional=("notional", "sum"), fees=("fee", "sum"))
    b = d["blocks"][["order_id", "strategy", "allocator", "symbol", "decision_price",
                     "arrival_price", "vwap", "close_price"]].copy()
    b["sign"] = np.where(d["blocks"]["side"] == "buy", 1.0, -1.0)
    b["bucket"] = (d["blocks"]["arrival_time"].dt.tz_convert(TZ)
                   .dt.floor(f"{BUCKET_MINUTES}min").dt.strftime("%H:%M"))
    lots = d["lots"][["order_id", "account_id", "gateway", "allocated"]].merge(
        per_lot, on=["order_id", "account_id"], how="left")
    lots[["filled", "filled_notional", "fees"]] = lots[
        ["filled", "filled_notional", "fees"]].fillna(0)
    lots = lots.merge(b, on="order_id", how="left")
    s, q, x = lots["sign"], lots["allocated"], lots["filled"]
    lots["paper_notional"] = q * lots["decision_price"]
    lots["arrival_notional"] = x * lots["arrival_price"]
    lots["vwap_notional"] = x * lots["vwap"]
    lots["delay"] = s * x * (lots["arrival_price"] - lots["decision_price"])
    lots["execution"] = s * (lots["filled_notional"] - x * lots["arrival_price"])
    lots["opportunity"] = s * (q - x) * (lots["close_price"] - lots["decision_price"])
    lots["vwap_cost"] = s * (lots["filled_notional"] - x * lots["vwap"])
    lots["shortfall"] = lots["delay"] + lots["execution"] + lots["opportunity"] + lots["fees"]
    parts = []
    for dim in DIMENSIONS:
        g = lots.groupby(dim)[SUMS].sum()
        g.insert(0, "lots", lots.groupby(dim).size())
        g = g.reset_index().rename(columns={dim: "key"})
        g.insert(0, "dimension", dim)
        parts.append(g)
    firm = lots[SUMS].sum().to_frame().T
    firm.insert(0, "lots", len(lots))
    firm.insert(0, "key", "all")
    firm.insert(0, "dimension", "firm")
    out = pd.concat([*parts, firm], ignore_index=True)
    out["shortfall_bps"] = 1e4 * out["shortfall"] / out["paper_notional"]
    out["arrival_slippage_bps"] = 1e4 * out["execution"] / out["arrival_notional"]
    out["vwap_slippage_bps"] = 1e4 * out["vwap_cost"] / out["vwap_notional"]
    out["fill_rate"] = out["filled"] / out["allocated"]
    return out.sort_values(["dimension", "key"]).reset_index(drop=True)


def check_equal(p: pl.DataFrame, q: pd.DataFrame) -> None:
    """Same rows, keys and numbers (relative 1e-9); raises AssertionError otherwise."""
    assert p.height == len(q), (p.height, len(q))
    assert p["dimension"].to_list() == q["dimension"].tolist()
    assert p["key"].to_list() == [str(k) for k in q["key"].tolist()]
    for col in [*SUMS, "lots", "shortfall_bps", "arrival_slippage_bps", "vwap_slippage_bps",
                "fill_rate"]:
        a = p[col].to_numpy().astype(float)
        b = q[col].to_numpy().astype(float)
        if not np.allclose(a, b, rtol=1e-9, atol=1e-6):
            worst = int(np.argmax(np.abs(a - b)))
            raise AssertionError(f"{col} differs: polars {a[worst]!r}, pandas {b[worst]!r} "
                                 f"at {p['dimension'][worst]}/{p['key'][worst]}")


def alternate(fns: dict[str, Callable[[], Any]], rounds: int
              ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run each function once per round, alternating, so both see the same machine."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, Any] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            t = time.perf_counter()
            outs[name] = fn()
            times[name].append(round(time.perf_counter() - t, 4))
    return times, outs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fills", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--accounts", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--orders", nargs="+", choices=FILL_ORDERS, default=list(FILL_ORDERS),
                    help="orders of the fills' rows to run (default: both)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    results = []
    for n, order in ((n, o) for n in args.fills for o in args.orders):
        data = make_data(n, args.accounts, fill_order=order)
        pdata = {k: v.to_pandas() for k, v in data.items()}
        times, outs = alternate({"polars": lambda d=data: run_polars(d),
                                 "pandas": lambda d=pdata: run_pandas(d)}, args.rounds)
        check_equal(outs["polars"], outs["pandas"])
        polars_s, pandas_s = min(times["polars"]), min(times["pandas"])
        ratios = sorted(q / p for p, q in zip(times["polars"], times["pandas"], strict=True))
        row = {"fills": data["fills"].height, "accounts": args.accounts, "fill_order": order,
               "lots": data["lots"].height, "executions": data["executions"].height,
               "polars_s": round(polars_s, 3), "pandas_s": round(pandas_s, 3),
               "speedup": round(pandas_s / polars_s, 2),
               "median_round_speedup": round(ratios[len(ratios) // 2], 2),
               "rounds": times}
        results.append(row)
        print(f"{row['fills']:>11,} fills {args.accounts:,} accounts, {order:>9} order: "
              f"polars {polars_s:7.2f} s"
              f"  pandas {pandas_s:7.2f} s  speedup {row['speedup']:.1f}x (median round "
              f"{row['median_round_speedup']:.1f}x)  results equal",
              flush=True)
        del data, pdata, outs
    # the goals: the largest run in the order the store writes the fills (else the largest)
    top = max(results, key=lambda r: (r["fills"], r["fill_order"] == "lot"))
    print(f"goals ({top['fill_order']} order): {top['fills']:,} fills in "
          f"{top['polars_s']:.1f} s (< 60 s: {'met' if top['polars_s'] < 60 else 'missed'}), "
          f"speedup {top['speedup']:.1f}x (>= 5x: {'met' if top['speedup'] >= 5 else 'missed'})")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({
            "results": results,
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                        "platform": platform.platform(), "polars": pl.__version__,
                        "pandas": pd.__version__, "numpy": np.__version__},
        }, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
