"""Schemas of the end-of-day inputs (the day's events from the SQL store, the broker's file,
market data and the reference tables the attribution needs)."""

from __future__ import annotations

from mats.batch.tables import Column, Kind, Table

__all__ = [
    "BENCHMARK",
    "BLOCKS",
    "EOD_TABLES",
    "EXECUTIONS",
    "FILLS",
    "HISTORY",
    "HOLDINGS",
    "LOTS",
    "MARKET",
    "STATEMENT",
    "TARGETS",
]

BLOCKS = Table("blocks", (
    Column("order_id", Kind.STR, "the block order"),
    Column("strategy", Kind.STR, "the strategy that asked for it"),
    Column("allocator", Kind.STR, "the allocation method that split it (`net_liq`, ...)"),
    Column("symbol", Kind.STR, "the instrument"),
    Column("side", Kind.STR, "buy or sell"),
    Column("decision_time", Kind.DATETIME, "when the strategy decided (the paper trade)"),
    Column("decision_price", Kind.FLOAT, "the price at decision: the paper portfolio's price"),
    Column("arrival_time", Kind.DATETIME, "when the order reached the market"),
    Column("arrival_price", Kind.FLOAT, "the mid price at arrival"),
    Column("vwap", Kind.FLOAT, "the market's volume-weighted average price over the order's "
           "life"),
    Column("close_price", Kind.FLOAT, "the day's close (prices the unfilled shares)"),
), "One row per block order traded today.", key=("order_id",))

LOTS = Table("lots", (
    Column("order_id", Kind.STR, "the block order"),
    Column("account_id", Kind.STR, "the account"),
    Column("gateway", Kind.STR, "the broker gateway that worked the account's shares"),
    Column("allocated", Kind.INT, "shares allocated to the account (its paper quantity)"),
), "One row per account in each block: what allocation gave it.",
    key=("order_id", "account_id"))

EXECUTIONS = Table("executions", (
    Column("exec_id", Kind.STR, "the broker's execution id"),
    Column("order_id", Kind.STR, "the block order"),
    Column("gateway", Kind.STR, "the gateway that reported it"),
    Column("symbol", Kind.STR, "the instrument"),
    Column("side", Kind.STR, "buy or sell"),
    Column("quantity", Kind.INT, "shares executed"),
    Column("price", Kind.FLOAT, "execution price"),
    Column("fee", Kind.FLOAT, "commission and fees of the execution"),
    Column("exec_time", Kind.DATETIME, "when it executed"),
), "Our record of the execution reports (from the SQL store).", key=("gateway", "exec_id"))

FILLS = Table("fills", (
    Column("gateway", Kind.STR, "the gateway that reported the execution"),
    Column("exec_id", Kind.STR, "the execution this share of it comes from (with `gateway`: "
           "two brokers may use the same id)"),
    Column("order_id", Kind.STR, "the block order"),
    Column("account_id", Kind.STR, "the account"),
    Column("quantity", Kind.INT, "the account's shares of the execution"),
), "Each execution handed to the block's accounts (the fill allocator's output). The store's "
   "writer sorts it by block, account and execution: the end-of-day sums per lot take a third "
   "less time on a day's fills in that order than in the order they happened "
   "(`bench/eod_bench.py`).", key=("gateway", "exec_id", "account_id"))

STATEMENT = Table("statement", (
    Column("exec_id", Kind.STR, "the broker's execution id"),
    Column("order_id", Kind.STR, "the block order (the broker's copy of our id)"),
    Column("gateway", Kind.STR, "which broker sent the file"),
    Column("symbol", Kind.STR, "the instrument"),
    Column("side", Kind.STR, "buy or sell"),
    Column("quantity", Kind.INT, "shares executed"),
    Column("price", Kind.FLOAT, "execution price"),
    Column("fee", Kind.FLOAT, "commission and fees"),
), "The broker's statement or drop-copy file of the day's executions.",
    key=("gateway", "exec_id"))

MARKET = Table("market", (
    Column("symbol", Kind.STR, "the instrument"),
    Column("prev_close", Kind.FLOAT, "yesterday's close"),
    Column("close", Kind.FLOAT, "today's close"),
), "Closing prices: the day's return of each instrument is close / prev_close - 1.",
    key=("symbol",))

HOLDINGS = Table("holdings", (
    Column("account_id", Kind.STR, "the account"),
    Column("symbol", Kind.STR, "the instrument"),
    Column("quantity", Kind.INT, "shares held at the start of the day"),
), "Start-of-day positions (from the SOD state).", key=("account_id", "symbol"))

BENCHMARK = Table("benchmark", (
    Column("symbol", Kind.STR, "a benchmark constituent"),
    Column("weight", Kind.FLOAT, "its weight (weights are normalised to sum to 1)"),
), "The benchmark the sector attribution measures against.", key=("symbol",))

TARGETS = Table("targets", (
    Column("account_id", Kind.STR, "the account"),
    Column("symbol", Kind.STR, "the instrument"),
    Column("weight", Kind.FLOAT, "target weight, a fraction of net liquidation value"),
), "The strategies' target weights per account; cash's target is 1 - the sum.",
    key=("account_id", "symbol"))

HISTORY = Table("history", (
    Column("date", Kind.DATE, "the day"),
    Column("symbol", Kind.STR, "the instrument"),
    Column("ret", Kind.FLOAT, "the day's simple return"),
), "Daily returns: at least 250 days for VaR, 500 for its 250-day backtest.",
    key=("date", "symbol"))

EOD_TABLES = (BLOCKS, LOTS, EXECUTIONS, FILLS, STATEMENT, MARKET, HOLDINGS, BENCHMARK, TARGETS,
              HISTORY)
