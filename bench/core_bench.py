"""Benchmark of the core call: layer 1 -> allocation -> layer 2 for one block order.

For books of 10, 100, 1,000 and 10,000 accounts (synthetic, seeded, built here) it times
``mats.Engine.process`` (the Rust core through its Python face) and
``mats.reference.ReferenceEngine.process`` (the plain-Python twin) on the same block orders, checks
that both engines gave every account the same quantity, prints a table and writes
``bench/results/core.json``.

Every call runs with ``commit=False`` so that each one sees the same book; order and journey ids
differ per call so the duplicate checks do not fire, and the book has no throttle.

Run it with ``make bench``, or directly::

    .venv/bin/python bench/core_bench.py                  # all sizes, writes the JSON
    .venv/bin/python bench/core_bench.py --sizes 100 --no-write
    .venv/bin/python bench/core_bench.py --sizes 100 --profile   # cProfile of the reference

Throughput is ``1e9 / mean(ns per call)`` of a single-threaded loop; latency percentiles are
over the per-call ``time.perf_counter_ns`` samples after a warm-up, with the cyclic garbage
collector off while timing (as ``timeit`` does). The calls run in rounds that alternate the two
engines, so both see the same machine; each round's throughput is reported too, since a shared
VM makes the memory-bound 10,000-account case noisy. Goals are reported, never asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import json
import math
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mats import Engine, _core
from mats.models import (
    Account,
    AccountType,
    AllocationMethod,
    BlockOrder,
    Book,
    Instrument,
    InstrumentLimit,
    LotFailurePolicy,
    Mandate,
    OpenOrders,
    RiskConfig,
    Side,
)
from mats.reference import ReferenceEngine

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "core.json"

SIZES = (10, 100, 1_000, 10_000)
SEED = 20_240_601
N_INSTRUMENTS = 500
SECTORS = (
    "Information Technology", "Health Care", "Financials", "Consumer Discretionary",
    "Communication Services", "Industrials", "Consumer Staples", "Energy", "Utilities",
    "Real Estate", "Materials",
)
STRATEGY = "core"
AS_OF = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
REFERENCE_TIME = AS_OF - timedelta(seconds=1)
# Timed rounds per size, alternating the two engines.
ROUNDS = 5
# Distinct order shapes per size; each timed call is one of them with fresh ids.
N_TEMPLATES = 256
# Relative standard deviation of the reference price around the live mark (see build_orders).
REF_DRIFT = 0.0005
REF_DRIFT_FAST = 0.005
REF_FAST_SHARE = 0.2

# The goals, reported against (never asserted on).
GOAL_ACCOUNTS = 100
GOAL_SPEEDUP = 100.0
GOAL_P99_US = 50.0


# ------------------------------------------------------------------------------ synthetic book


def _weighted_sample(rng: random.Random, items: Sequence[int], weights: Sequence[float],
                     k: int) -> list[int]:
    """``k`` distinct items, drawn with probability proportional to weight (Efraimidis-Spirakis)."""
    keyed = sorted(items, key=lambda i: rng.random() ** (1.0 / weights[i]), reverse=True)
    return keyed[:k]


def _mandates(rng: random.Random, symbols: list[str], popular: list[str]) -> list[Mandate]:
    esg_restricted = rng.sample(popular[:120], 15)
    income_restricted = rng.sample(symbols, 5)
    return [
        Mandate(mandate_id="conservative", max_position_pct=5.0, default_sector_cap_pct=20.0,
                max_gross_leverage=1.0, cash_buffer_pct=2.0, min_trade_value=1_000.0),
        Mandate(mandate_id="balanced", max_position_pct=8.0, default_sector_cap_pct=25.0,
                sector_caps_pct={"Information Technology": 30.0}, min_trade_value=500.0),
        Mandate(mandate_id="growth", max_position_pct=10.0, default_sector_cap_pct=35.0),
        Mandate(mandate_id="esg", max_position_pct=6.0, default_sector_cap_pct=25.0,
                restricted_sectors=["Energy"], restricted_symbols=esg_restricted),
        Mandate(mandate_id="income", max_position_pct=5.0, default_sector_cap_pct=20.0,
                sector_caps_pct={"Utilities": 40.0, "Real Estate": 30.0}, cash_buffer_pct=5.0,
                restricted_symbols=income_restricted),
        Mandate(mandate_id="concentrated", max_position_pct=15.0, max_position_shares=5_000,
                default_sector_cap_pct=45.0),
        Mandate(mandate_id="margin_long", max_position_pct=10.0, default_sector_cap_pct=30.0,
                max_gross_leverage=1.5, cash_buffer_pct=1.0),
        Mandate(mandate_id="long_short", max_position_pct=8.0, default_sector_cap_pct=30.0,
                max_gross_leverage=2.0, allow_short=True),
    ]


CASH_MANDATES = ("conservative", "balanced", "growth", "esg", "income", "concentrated")
MARGIN_MANDATES = (*CASH_MANDATES, "margin_long", "long_short", "long_short")


def build_book(n_accounts: int, seed: int = SEED) -> Book:
    """A seeded book of ``n_accounts`` accounts that all follow strategy ``core``.

    500 instruments in 11 sectors with Zipf-like popularity (so the same names show up across
    accounts, as they do in a house model), 40 % cash accounts, 20-40 positions each sized under
    the mandate's position limit, some pending withdrawals, working buys and restricted lists.
    """
    rng = random.Random(seed)
    symbols = [f"SYM{k:03d}" for k in range(N_INSTRUMENTS)]
    instruments = []
    prices: dict[str, float] = {}
    for k, sym in enumerate(symbols):
        lot = 100 if rng.random() < 0.05 else 1
        instruments.append(Instrument(symbol=sym, sector=SECTORS[k % len(SECTORS)],
                                      lot_size=lot, beta=round(rng.uniform(0.5, 1.6), 2)))
        prices[sym] = round(math.exp(rng.gauss(math.log(80.0), 0.8)) + 1.0, 2)
    popularity = [1.0 / (k + 1) ** 0.8 for k in range(N_INSTRUMENTS)]
    popular = symbols[:]  # already in popularity order
    mandates = _mandates(rng, symbols, popular)
    by_id = {m.mandate_id: m for m in mandates}
    index = list(range(N_INSTRUMENTS))
    accounts = []
    for a in range(n_accounts):
        cash_account = rng.random() < 0.4
        mid = rng.choice(CASH_MANDATES if cash_account else MARGIN_MANDATES)
        m = by_id[mid]
        nav = min(max(math.exp(rng.gauss(math.log(500_000.0), 1.3)), 25_000.0), 50_000_000.0)
        nav = round(nav, 2)
        restricted = set(m.restricted_symbols)
        picks = [k for k in _weighted_sample(rng, index, popularity, 48)
                 if symbols[k] not in restricted and instruments[k].sector
                 not in m.restricted_sectors][: rng.randint(20, 40)]
        if mid == "long_short":
            invested = rng.uniform(0.9, 1.2)
        elif mid == "margin_long":
            invested = rng.uniform(0.85, 1.3)
        else:
            invested = rng.uniform(0.6, 0.95)
        raw = [rng.expovariate(1.0) for _ in picks]
        total = sum(raw)
        pos_cap = 0.9 * (m.max_position_pct or 100.0) / 100.0
        positions: dict[str, int] = {}
        shorts = set(rng.sample(picks, 4)) if mid == "long_short" else set()
        for k, r in zip(picks, raw, strict=True):
            sym = symbols[k]
            value = min(r / total * invested, pos_cap) * nav
            lot = instruments[k].lot_size
            q = int(value / prices[sym] / lot) * lot
            if m.max_position_shares is not None:
                q = min(q, m.max_position_shares // lot * lot)
            if q:
                positions[sym] = -q if k in shorts else q
        held = sum(q * prices[s] for s, q in positions.items())
        cash = round(nav - held, 2)
        if cash_account:
            settled = round(cash * rng.uniform(0.7, 1.0), 2) if cash > 0 else cash
        else:
            settled = cash
        open_orders: dict[str, OpenOrders] = {}
        reserved = 0.0
        if rng.random() < 0.1:
            k = rng.choice(picks)
            q = instruments[k].lot_size * rng.randint(1, 20)
            res = round(q * prices[symbols[k]], 2)
            open_orders[symbols[k]] = OpenOrders(buy=q, buy_reserved=res)
            reserved = res
        accounts.append(Account(
            account_id=f"ACC{a:05d}",
            account_type=AccountType.CASH if cash_account else AccountType.MARGIN,
            mandate_id=mid,
            net_liq=nav,
            cash=cash,
            settled_cash=settled,
            pending_withdrawals=round(nav * 0.02, 2) if rng.random() < 0.05 else 0.0,
            positions=positions,
            open_orders=open_orders,
            reserved_cash=reserved,
            strategies=[STRATEGY] + (["income"] if mid == "income" else []),
        ))
    risk = RiskConfig(
        default_instrument_limit=InstrumentLimit(max_quantity=10**12, max_notional=1e15),
        price_collar_pct=5.0,
        max_reference_age_s=5.0,
        restricted_symbols=["SYM499"],
        max_gross_exposure=1e15,
        max_net_exposure=1e15,
        max_sector_pct=95.0,
        max_beta_delta=1e15,
    )
    return Book(instruments=instruments, mandates=mandates, accounts=accounts, risk=risk,
                prices=prices)


def build_orders(book: Book, seed: int = SEED) -> list[BlockOrder]:
    """``N_TEMPLATES`` block orders on ``book``: mostly net-liq buys, some of every other kind."""
    rng = random.Random(seed + len(book.accounts))
    px = book.prices
    lots = {i.symbol: i.lot_size for i in book.instruments}
    symbols = [i.symbol for i in book.instruments if i.symbol != "SYM499"]
    popularity = [1.0 / (k + 1) ** 0.8 for k in range(len(symbols))]
    held: dict[str, int] = {}
    for a in book.accounts:
        for s, q in a.positions.items():
            if q > 0:
                held[s] = held.get(s, 0) + q
    total_nav = sum(a.net_liq for a in book.accounts)
    ids = [a.account_id for a in book.accounts]
    methods = [
        (AllocationMethod.NET_LIQ, 0.55), (AllocationMethod.AVAILABLE_EQUITY, 0.05),
        (AllocationMethod.EQUAL, 0.1), (AllocationMethod.RATIOS, 0.1),
        (AllocationMethod.PERCENT, 0.05), (AllocationMethod.TARGET_WEIGHT, 0.15),
    ]
    policies = [(LotFailurePolicy.REDUCE_LOTS, 0.8), (LotFailurePolicy.DROP_LOTS, 0.15),
                (LotFailurePolicy.REJECT_BLOCK, 0.05)]

    def pick(pairs: list[tuple[Any, float]]) -> Any:
        return rng.choices([p for p, _ in pairs], weights=[w for _, w in pairs])[0]

    out = []
    for t in range(N_TEMPLATES):
        method = pick(methods)
        side = Side.SELL if rng.random() < 0.3 else Side.BUY
        if side is Side.SELL:
            sym = rng.choice(sorted(held, key=lambda s: -held[s])[:40])
        else:
            sym = rng.choices(symbols, weights=popularity)[0]
        lot = lots[sym]
        # The reference price is a little off the live mark, as it is when the signal was priced
        # a moment before the order reaches the core: 0.05 % in a normal market, 0.5 % for one
        # order in five (a fast market or a stale quote), where some lots then fail layer 2.
        drift = REF_DRIFT_FAST if rng.random() < REF_FAST_SHARE else REF_DRIFT
        ref = round(px[sym] * (1.0 + rng.gauss(0.0, drift)), 2)
        kw: dict[str, Any] = {}
        if method is AllocationMethod.TARGET_WEIGHT:
            kw["target_weight_pct"] = round(rng.uniform(0.5, 1.5) if side is Side.SELL
                                            else rng.uniform(1.0, 4.0), 2)
        else:
            if side is Side.SELL:
                q = held[sym] * rng.uniform(0.05, 0.3)
            else:
                q = total_nav * rng.uniform(0.001, 0.01) / ref
            kw["quantity"] = max(lot, int(q / lot) * lot)
        if method is AllocationMethod.RATIOS:
            kw["ratios"] = {a: float(rng.choice((1, 2, 3, 4))) for a in ids if rng.random() < 0.8}
            if not kw["ratios"]:
                kw["ratios"] = {ids[0]: 1.0}
        elif method is AllocationMethod.PERCENT:
            chosen = ids if len(ids) <= 20 else rng.sample(ids, 20)
            kw["percents"] = {a: 100.0 / len(chosen) for a in chosen}
        if rng.random() < 0.5:
            kw["limit_price"] = round(ref * (1.0 + side.sign * rng.uniform(0.0, 0.005)), 2)
        out.append(BlockOrder(
            order_id=f"T{t}", journey_id=f"T{t}", strategy=STRATEGY, symbol=sym, side=side,
            reference_price=ref, reference_time=REFERENCE_TIME, method=method,
            on_lot_failure=pick(policies), **kw,
        ))
    return out


def call_orders(templates: list[BlockOrder], n: int, tag: str) -> list[BlockOrder]:
    """``n`` orders cycling over ``templates``, each with its own order and journey id.

    ``model_copy`` shares the templates' ratio maps, so 10,000-account ratios cost memory once.
    """
    return [templates[i % len(templates)].model_copy(
        update={"order_id": f"{tag}-{i:06d}", "journey_id": f"J{tag}-{i:06d}"})
        for i in range(n)]


# ------------------------------------------------------------------------------ timing


@dataclass
class Timing:
    samples_ns: list[int]

    @property
    def n(self) -> int:
        return len(self.samples_ns)

    def pct_us(self, q: float) -> float:
        """Percentile ``q`` (0-100) in microseconds, nearest-rank on the sorted samples."""
        s = sorted(self.samples_ns)
        rank = max(1, math.ceil(q / 100.0 * len(s)))
        return s[rank - 1] / 1_000.0

    @property
    def mean_ns(self) -> float:
        return statistics.fmean(self.samples_ns)

    def summary(self) -> dict[str, float]:
        return {
            "blocks_per_s": round(1e9 / self.mean_ns, 1),
            "p50_us": round(self.pct_us(50.0), 2),
            "p99_us": round(self.pct_us(99.0), 2),
        }


def _time_calls(call: Callable[[BlockOrder], Any], orders: list[BlockOrder],
                keep: int, extract: Callable[[Any], Any]) -> tuple[Timing, list[Any]]:
    """Times ``call`` on each order; ``extract`` runs on the first ``keep`` answers, untimed.

    The cyclic garbage collector is off during the loop, as ``timeit`` does, so that a
    collection triggered by one call is not charged to another; it runs between loops.
    """
    samples = [0] * len(orders)
    kept: list[Any] = []
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for i, o in enumerate(orders):
            t0 = clock()
            d = call(o)
            t1 = clock()
            samples[i] = t1 - t0
            if i < keep:
                kept.append(extract(d))
            del d
    finally:
        gc.enable()
    return Timing(samples), kept


def _iterations(per_call_ns: float, budget_s: float, lo: int, hi: int) -> int:
    return int(min(max(budget_s * 1e9 / max(per_call_ns, 1.0), lo), hi))


Outcome = tuple[str, int, int]


def _rust_quantities(d: Any) -> list[tuple[str, int]]:
    return sorted(d.quantities())


def _reference_quantities(d: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted((ln["account_id"], ln["quantity"]) for ln in d["lines"] if ln["quantity"] > 0)


def _rust_outcome(d: Any) -> Outcome:
    """Status, placed quantity and a digest of every account's quantity (kept small)."""
    return d.status, d.placed_quantity, hash(tuple(_rust_quantities(d)))


def _reference_outcome(d: dict[str, Any]) -> Outcome:
    return d["status"], d["placed_quantity"], hash(tuple(_reference_quantities(d)))


def _mismatch(book: Book, order: BlockOrder, n_accounts: int) -> str:
    """Both engines again on one order, from a fresh book, with the accounts that differ."""
    a = Engine(book).process(order, as_of=AS_OF, commit=False)
    b = ReferenceEngine(book).process(order, AS_OF, False)
    diff = sorted(set(_rust_quantities(a)) ^ set(_reference_quantities(b)))[:10]
    return (f"MISMATCH at {n_accounts} accounts, order {order.order_id} ({order.method.value} "
            f"{order.side.value} {order.symbol}, {order.on_lot_failure.value}): rust "
            f"status={a.status} placed={a.placed_quantity}, reference status={b['status']} "
            f"placed={b['placed_quantity']}; differing (account, quantity): {diff}")


def bench_size(n_accounts: int, scale: float, log: Callable[[str], None]) -> dict[str, Any]:
    t_build = time.perf_counter()
    book = build_book(n_accounts)
    templates = build_orders(book)
    rust = Engine(book)
    ref = ReferenceEngine(book)
    log(f"  book of {n_accounts} accounts built in {time.perf_counter() - t_build:.1f}s")

    def rust_call(o: BlockOrder) -> Any:
        return rust.process(o, as_of=AS_OF, commit=False)

    def ref_call(o: BlockOrder) -> Any:
        return ref.process(o, AS_OF, False)

    # Warm-up (caches, branch predictors, lazy imports), then size the runs from its speed.
    warm_rust = call_orders(templates, 300 if n_accounts <= 1_000 else 60, f"WR{n_accounts}")
    t0 = time.perf_counter_ns()
    for o in warm_rust:
        rust_call(o)
    rust_est = (time.perf_counter_ns() - t0) / len(warm_rust)
    warm_ref = call_orders(templates, max(3, min(30, int(2e9 / (rust_est * 200)))),
                           f"WF{n_accounts}")
    t0 = time.perf_counter_ns()
    for o in warm_ref:
        ref_call(o)
    ref_est = (time.perf_counter_ns() - t0) / len(warm_ref)

    n_rust = _iterations(rust_est, 6.0 * scale, 2_000 if n_accounts <= 1_000 else 600, 20_000)
    n_ref = _iterations(ref_est, 20.0 * scale, 100, 2_000)
    n_ref = min(n_ref, n_rust)
    orders = call_orders(templates, n_rust, f"B{n_accounts}")
    log(f"  timing {n_rust} Rust calls and {n_ref} reference calls")

    # Rounds alternate the engines, so that both see the same machine (a shared 2-core VM is
    # noisy, mostly for the memory-bound 10,000-account case); the spread is reported.
    rust_samples: list[int] = []
    ref_samples: list[int] = []
    rust_out: list[Outcome] = []
    ref_out: list[Outcome] = []
    rounds: dict[str, list[float]] = {"rust_blocks_per_s": [], "reference_blocks_per_s": [],
                                      "speedup": []}
    for rnd in range(ROUNDS):
        a, b = n_rust * rnd // ROUNDS, n_rust * (rnd + 1) // ROUNDS
        rt, out = _time_calls(rust_call, orders[a:b], max(0, n_ref - a), _rust_outcome)
        rust_samples += rt.samples_ns
        rust_out += out
        a, b = n_ref * rnd // ROUNDS, n_ref * (rnd + 1) // ROUNDS
        ft, out = _time_calls(ref_call, orders[a:b], b - a, _reference_outcome)
        ref_samples += ft.samples_ns
        ref_out += out
        rounds["rust_blocks_per_s"].append(round(1e9 / rt.mean_ns, 1))
        rounds["reference_blocks_per_s"].append(round(1e9 / ft.mean_ns, 1))
        rounds["speedup"].append(round(ft.mean_ns / rt.mean_ns, 1))
    rust_t, ref_t = Timing(rust_samples), Timing(ref_samples)

    for i, (x, y) in enumerate(zip(rust_out, ref_out, strict=True)):
        if x != y:
            raise SystemExit(_mismatch(book, orders[i], n_accounts))

    statuses: dict[str, int] = {}
    for st, _, _ in rust_out:
        statuses[st] = statuses.get(st, 0) + 1
    r, f = rust_t.summary(), ref_t.summary()
    return {
        "accounts": n_accounts,
        "rust": r,
        "reference": f,
        "speedup": round(r["blocks_per_s"] / f["blocks_per_s"], 1),
        "calls": {"rust": rust_t.n, "reference": ref_t.n, "checked_equal": len(ref_out)},
        "mean_us": {"rust": round(rust_t.mean_ns / 1e3, 2),
                    "reference": round(ref_t.mean_ns / 1e3, 2)},
        "statuses_checked": statuses,
        "rounds": rounds,
    }


# ------------------------------------------------------------------------------ scaling


def _growth(pts: list[tuple[int, float]]) -> dict[str, Any]:
    xs = [math.log(n) for n, _ in pts]
    ys = [math.log(c) for _, c in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
             / sum((x - mx) ** 2 for x in xs))
    steps = []
    for (n1, c1), (n2, c2) in itertools.pairwise(pts):
        allowed = (n2 * math.log(n2)) / (n1 * math.log(n1))
        steps.append({
            "from": n1, "to": n2,
            "cost_ratio": round(c2 / c1, 2),
            "n_log_n_ratio": round(allowed, 2),
            "exponent": round(math.log(c2 / c1) / math.log(n2 / n1), 3),
            "within_n_log_n": c2 / c1 <= allowed,
        })
    return {"exponent": round(slope, 3), "steps": steps,
            "grows_no_worse_than_n_log_n": all(s["within_n_log_n"] for s in steps)}


def scaling(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth of Rust cost per call with accounts, against N log N.

    ``exponent`` is the least-squares slope of log(cost) on log(N) over every size; the pairwise
    slopes show where fixed per-call cost stops dominating. N log N between N1 and N2 allows a
    cost ratio of (N2 log N2) / (N1 log N1); ``within_n_log_n`` compares each step with that.
    Measured twice: on the mean over all rounds, and on each size's fastest round (the one the
    rest of the machine disturbed least).
    """
    if len(results) < 2:
        return {}
    pooled = _growth([(r["accounts"], r["mean_us"]["rust"]) for r in results])
    best = _growth([(r["accounts"], 1e6 / max(r["rounds"]["rust_blocks_per_s"]))
                    for r in results])
    return {
        "measure": "Rust microseconds per call (1 / blocks_per_s) vs accounts",
        **pooled,
        "fastest_round": best,
    }


# ------------------------------------------------------------------------------ profiling


def profile(n_accounts: int, calls: int) -> None:
    """cProfile of the reference, and how the Rust call's time splits at the Python boundary."""
    book = build_book(n_accounts)
    templates = build_orders(book)
    ref = ReferenceEngine(book)
    orders = call_orders(templates, calls, f"P{n_accounts}")
    prof = cProfile.Profile()
    prof.enable()
    for o in orders:
        ref.process(o, AS_OF, False)
    prof.disable()
    print(f"\n== cProfile: ReferenceEngine.process, {n_accounts} accounts, {calls} calls")
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)

    rust = Engine(book)
    native = _core.Engine(book.model_dump_json())
    ts = AS_OF.timestamp()

    def med(fn: Callable[[BlockOrder], Any], tag: str) -> float:
        os_ = call_orders(templates, 4_000, tag)
        t, _ = _time_calls(fn, os_, 0, lambda d: d)
        return t.pct_us(50.0)

    wrapped = med(lambda o: rust.process(o, as_of=AS_OF, commit=False), "W")
    direct = med(lambda o: native.process(o, ts, False), "N")
    to_json = med(lambda o: native.process(o, ts, False).to_json(), "J")
    print(f"\n== Rust call at {n_accounts} accounts, median µs: Engine.process {wrapped:.2f}, "
          f"_core.Engine.process {direct:.2f} (wrapper {wrapped - direct:.2f}), "
          f"with to_json() {to_json:.2f}")


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=",".join(map(str, SIZES)),
                   help="comma-separated account counts (default: %(default)s)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the time budget per measurement (default 1: a few minutes)")
    p.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS}")
    p.add_argument("--profile", action="store_true",
                   help="profile instead of benchmarking (cProfile of the reference)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.profile:
        for n in sizes:
            profile(n, max(5, min(500, 200_000 // n)))
        return 0

    started = time.perf_counter()
    load_before = _loadavg()
    results = []
    for n in sizes:
        log(f"{n} accounts")
        results.append(bench_size(n, args.scale, log))
    scale_info = scaling(results)
    goal = next((r for r in results if r["accounts"] == GOAL_ACCOUNTS), None)
    goals: dict[str, Any] = {}
    if goal is not None:
        goals = {
            "accounts": GOAL_ACCOUNTS,
            "speedup_min": GOAL_SPEEDUP, "speedup": goal["speedup"],
            "speedup_met": goal["speedup"] >= GOAL_SPEEDUP,
            "p99_us_max": GOAL_P99_US, "p99_us": goal["rust"]["p99_us"],
            "p99_met": goal["rust"]["p99_us"] < GOAL_P99_US,
        }
    if scale_info:
        goals["grows_no_worse_than_n_log_n"] = scale_info["grows_no_worse_than_n_log_n"]
        goals["grows_no_worse_than_n_log_n_fastest_round"] = (
            scale_info["fastest_round"]["grows_no_worse_than_n_log_n"])

    print(f"\n{'accounts':>8} | {'rust blk/s':>11} {'p50 µs':>9} {'p99 µs':>9} | "
          f"{'ref blk/s':>10} {'p50 µs':>11} {'p99 µs':>11} | {'speedup':>7} {'(rounds)':>13}")
    print("-" * 105)
    for r in results:
        ru, rf = r["rust"], r["reference"]
        print(f"{r['accounts']:>8} | {ru['blocks_per_s']:>11,.0f} {ru['p50_us']:>9,.1f} "
              f"{ru['p99_us']:>9,.1f} | {rf['blocks_per_s']:>10,.1f} {rf['p50_us']:>11,.1f} "
              f"{rf['p99_us']:>11,.1f} | {r['speedup']:>6,.1f}x "
              f"{min(r['rounds']['speedup']):>6,.1f}-{max(r['rounds']['speedup']):<6,.1f}")
    print()
    fastest = scale_info.get("fastest_round")
    for label, g in (("all rounds", scale_info), ("fastest round", fastest)):
        if g:
            print(f"Rust cost vs accounts ({label}): fitted exponent {g['exponent']}; steps "
                  + ", ".join(f"{s['from']}->{s['to']}: x{s['cost_ratio']} "
                              f"(N log N allows x{s['n_log_n_ratio']})" for s in g["steps"]))
    print()
    if goals.get("accounts"):
        print(f"goal at {GOAL_ACCOUNTS} accounts: speedup {goals['speedup']}x "
              f"(>= {GOAL_SPEEDUP:g}x: {'met' if goals['speedup_met'] else 'MISSED'}), "
              f"p99 {goals['p99_us']} µs (< {GOAL_P99_US:g}: "
              f"{'met' if goals['p99_met'] else 'MISSED'})")
    log(f"total {time.perf_counter() - started:.0f}s")

    if not args.no_write:
        doc = {
            "results": results,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(),
                "processor": _cpu_name(),
                "cpus": os.cpu_count(),
                # other work on the machine during the run shows here (1-minute averages)
                "load_average_before_after": [load_before, _loadavg()],
            },
            "python": platform.python_version(),
            "mats_core": _core.__version__,
            "build": _build_info(),
            "method": {
                "call": "Engine.process(order, as_of=..., commit=False) vs "
                        "ReferenceEngine.process(order, as_of, False), same orders",
                "blocks_per_s": "1e9 / mean ns per call, single thread",
                "latency": "time.perf_counter_ns around each call, after warm-up, cyclic GC "
                           "off during timed loops (as timeit does); nearest-rank percentiles "
                           "over all rounds",
                "rounds": f"{ROUNDS} rounds per size alternating Rust and reference; "
                          "results[].rounds gives each round's throughput and speedup",
                "check": "every account's quantity, the status and the placed quantity agree "
                         "between the engines on every order the reference ran",
                "book": f"seeded synthetic book (seed {SEED}), {N_INSTRUMENTS} instruments, "
                        f"{len(SECTORS)} sectors, 20-40 positions per account, 8 mandates",
                "orders": f"{N_TEMPLATES} order shapes per size: net_liq 55%, target_weight "
                          "15%, equal 10%, ratios 10%, available_equity 5%, percent 5%; "
                          "buys 70%, sells 30%; reference price off the live mark by "
                          f"N(0, {REF_DRIFT:.2%}), N(0, {REF_DRIFT_FAST:.1%}) for "
                          f"{REF_FAST_SHARE:.0%} of orders",
            },
            "scaling": scale_info,
            "goals": goals,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {RESULTS.relative_to(ROOT.parent)}")
    return 0


def _build_info() -> dict[str, Any]:
    """Which core was measured: the extension file, and the git state of its sources."""
    info: dict[str, Any] = {"extension": Path(_core.__file__ or "").name}
    try:
        so = Path(_core.__file__ or "")
        info["extension_built"] = datetime.fromtimestamp(so.stat().st_mtime, UTC).isoformat(
            timespec="seconds")
        git = ["git", "-C", str(ROOT.parent)]
        info["commit"] = subprocess.run([*git, "rev-parse", "--short", "HEAD"], check=True,
                                        capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "core_rs"], check=True,
                               capture_output=True, text=True).stdout.strip()
        info["core_rs_uncommitted_changes"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
