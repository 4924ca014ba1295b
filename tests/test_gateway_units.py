"""Gateway parts without Kafka: the simulated market, the journal, order messages, the CLI."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mats.blocks import ChildOrder, Lot
from mats.executions import ExecType, OrdStatus
from mats.gateway.cli import main
from mats.gateway.journal import Journal, Outcome
from mats.gateway.models import BrokerReport, load_config
from mats.gateway.runner import UNKNOWN_KIND, parse_order_message
from mats.gateway.venue import CancelReject, Venue, VenueConfig, VenueStore
from mats.intake import INVALID_FIELD, MISSING_FIELD, NOT_AN_OBJECT, NOT_JSON, SignalError


def _child(n: int, qty: int = 1000, limit: float | None = None) -> ChildOrder:
    return ChildOrder(event_id=f"e{n}", journey_id=f"j{n}", order_id=f"B{n}",
                      child_order_id=f"B{n}:default", gateway="default", symbol="AAPL",
                      side="buy", quantity=qty, limit_price=limit, reference_price=100.0,
                      decided_at=datetime.now(UTC),
                      allocations=[Lot(account_id="A1", broker="default", allocated=qty,
                                       quantity=qty, status="ok")])


def _reports(out: list[tuple[str, object]]) -> list[BrokerReport]:
    return [m for _, m in out if isinstance(m, BrokerReport)]


def _run_until_done(v: Venue, ticks: int = 200) -> list[BrokerReport]:
    fills = []
    for _ in range(ticks):
        fills += _reports(v.tick())
        if not v.open_orders():
            break
    return fills


# ------------------------------------------------------------------------------ venue


def test_marketable_order_fills_in_partial_fills_that_add_up() -> None:
    v = Venue(VenueConfig(seed=3))
    ack = _reports(v.new_order("s", "C1", "AAPL", "buy", 1000, None))
    assert [(r.exec_type, r.ord_status) for r in ack] == [("0", "0")]
    fills = _run_until_done(v)
    assert len(fills) > 1
    assert sum(f.last_qty for f in fills) == 1000
    assert fills[-1].ord_status == "2" and fills[-1].leaves_qty == 0
    assert all(f.ord_status == "1" for f in fills[:-1])
    notional = sum(f.last_qty * (f.last_px or 0) for f in fills)
    assert fills[-1].avg_px == pytest.approx(notional / 1000, rel=1e-6)


def test_same_seed_same_market_other_seed_other_market() -> None:
    def run(seed: int) -> list[tuple[int, float | None]]:
        v = Venue(VenueConfig(seed=seed), token="t")
        v.new_order("s", "C1", "AAPL", "sell", 5000, None)
        return [(f.last_qty, f.last_px) for f in _run_until_done(v)]
    assert run(11) == run(11)
    assert run(11) != run(12)


def test_limit_order_rests_until_the_path_reaches_it_and_never_fills_through() -> None:
    v = Venue(VenueConfig(seed=5, volatility_bps=50.0, prices={"AAPL": 100.0}))
    v.new_order("s", "C1", "AAPL", "buy", 100, 99.0)
    fills: list[BrokerReport] = []
    rested = 0
    for _ in range(5000):
        px = v.price("AAPL")
        out = _reports(v.tick())
        if not out and px > 99.0:
            rested += 1
        fills += out
        if not v.open_orders():
            break
    assert rested > 0, "the order filled at once: it was not resting"
    assert sum(f.last_qty for f in fills) == 100
    assert all((f.last_px or 0) <= 99.0 for f in fills)


def test_rejected_symbol_duplicate_ids_cancel_and_replace() -> None:
    v = Venue(VenueConfig(reject_symbols=frozenset({"BAD"})))
    [rej] = _reports(v.new_order("s", "X1", "BAD", "buy", 10, None))
    assert (rej.exec_type, rej.ord_status) == ("8", "8") and "BAD" in rej.text
    v.new_order("s", "C1", "AAPL", "buy", 100, 1.0)  # rests far below the market
    [dup] = _reports(v.new_order("s", "C1", "AAPL", "buy", 100, 1.0))
    assert dup.exec_type == "8" and "duplicate" in dup.text
    assert v.order_by_cl("C1") is not None and v.order_by_cl("C1").ord_status == "0"  # type: ignore[union-attr]
    [rep] = _reports(v.replace("s", "C1.1", "C1", 150, 2.0))
    assert (rep.exec_type, rep.order_qty, rep.orig_cl_ord_id) == ("5", 150, "C1")
    [refused] = [m for _, m in v.replace("s", "C1.2", "C1", 0, 2.0)]
    assert isinstance(refused, CancelReject)
    [cxl] = _reports(v.cancel("s", "C1.3", "C1.1"))
    assert (cxl.exec_type, cxl.ord_status, cxl.leaves_qty) == ("4", "4", 0)
    [again] = [m for _, m in v.cancel("s", "C1.4", "C1.1")]
    assert isinstance(again, CancelReject) and again.text == "order is not open"
    [unknown] = _reports(v.status("s", "NOPE", "AAPL", "buy"))
    assert (unknown.exec_type, unknown.ord_status) == ("I", "8")


def test_store_keeps_orders_and_unsent_messages_across_a_restart(tmp_path: Path) -> None:
    store = VenueStore(tmp_path / "venue.sqlite")
    v = store.open_venue(VenueConfig(seed=1))
    out = v.new_order("s", "C1", "AAPL", "buy", 100, None)
    [seq] = store.save(v, out)
    out2 = v.tick()
    store.save(v, out2)
    store.mark_sent([seq])
    store.close()
    again = VenueStore(tmp_path / "venue.sqlite")
    v2 = again.open_venue(VenueConfig(seed=1))
    o = v2.order_by_cl("C1")
    assert o is not None and o.cum_qty == sum(r.last_qty for r in _reports(out2))
    unsent = again.unsent()
    assert [m for _, _, m in unsent] == [m for _, m in out2]
    # ids continue: nothing of the first life is reused
    [ack] = _reports(v2.new_order("s", "C2", "AAPL", "buy", 1, None))
    assert ack.exec_id not in {r.exec_id for r in _reports(out + out2)}


# ------------------------------------------------------------------------------ journal


def _report(exec_id: str, cl: str, exec_type: str, status: str, cum: int, last: int = 0,
            qty: int = 1000) -> BrokerReport:
    return BrokerReport(exec_id=exec_id, cl_ord_id=cl, exec_type=exec_type, ord_status=status,
                        symbol="AAPL", side="buy", order_qty=qty, cum_qty=cum,
                        leaves_qty=qty - cum if status in "01" else 0,
                        avg_px=100.0 if cum else None, last_qty=last,
                        last_px=100.0 if last else None)


def test_journal_maps_reports_to_child_orders_and_drops_repeats(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite", "default")
    [rec] = j.add_orders([_child(1)])
    assert rec.state == "pending"
    new = j.ingest(_report("E1", "B1:default", "0", "0", 0))
    assert new.outcome is Outcome.PUBLISH and new.report is not None
    assert (new.report.journey_id, new.report.exec_type) == ("j1", ExecType.NEW)
    assert j.order("B1:default").state == "sent"  # type: ignore[union-attr]
    part = j.ingest(_report("E2", "B1:default", "F", "1", 400, 400))
    assert part.report is not None and part.report.exec_type is ExecType.PARTIAL_FILL
    assert j.ingest(_report("E2", "B1:default", "F", "1", 400, 400)).outcome is Outcome.DUPLICATE
    # a "new" that arrives after a fill is stale: dropped, not published
    assert j.ingest(_report("E0", "B1:default", "0", "0", 0)).outcome is Outcome.STALE
    unknown = j.ingest(_report("E9", "NOPE", "0", "0", 0))
    assert unknown.outcome is Outcome.UNKNOWN and "NOPE" in unknown.message
    fill = j.ingest(_report("E3", "B1:default", "F", "2", 1000, 600))
    assert fill.report is not None and fill.report.ord_status is OrdStatus.FILLED
    assert j.open_count() == 0
    assert [r.exec_id for r in j.unpublished()] == ["E1", "E2", "E3"]
    j.mark_published(["E1", "E2"])
    j.close()
    # a restarted gateway knows its orders, ids and what is still to publish
    j2 = Journal(tmp_path / "j.sqlite", "default")
    assert j2.order("B1:default") is not None
    assert j2.ingest(_report("E3", "B1:default", "F", "2", 1000, 600)).outcome \
        is Outcome.DUPLICATE
    assert [r.exec_id for r in j2.unpublished()] == ["E3"]


def test_journal_replace_moves_the_order_to_its_new_id(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite", "default")
    j.add_orders([_child(2)])
    req = j.add_request("B2:default", "replace", "r1")
    assert req.cl_ord_id == "B2:default.1" and j.has_request("B2:default", "r1")
    rep = BrokerReport(exec_id="E1", cl_ord_id=req.cl_ord_id, orig_cl_ord_id="B2:default",
                       exec_type="5", ord_status="0", symbol="AAPL", side="buy",
                       order_qty=500, cum_qty=0, leaves_qty=500)
    got = j.ingest(rep)
    assert got.report is not None and got.report.exec_type is ExecType.REPLACED
    assert got.report.child_order_id == "B2:default"
    assert j.order("B2:default").cl_ord_id == req.cl_ord_id  # type: ignore[union-attr]


# ------------------------------------------------------------------------------ messages


@pytest.mark.parametrize(("value", "code"), [
    (b"", NOT_JSON), (b"{nope", NOT_JSON), (b"[1]", NOT_AN_OBJECT),
    (b'{"kind": "shout"}', UNKNOWN_KIND), (b'{"kind": "child_order"}', MISSING_FIELD),
])
def test_bad_order_messages_say_why(value: bytes, code: str) -> None:
    with pytest.raises(SignalError) as e:
        parse_order_message(value)
    assert e.value.code == code


def test_order_message_with_a_bad_field() -> None:
    data = json.loads(_child(1).model_dump_json())
    data["quantity"] = "many"
    with pytest.raises(SignalError) as e:
        parse_order_message(json.dumps(data).encode())
    assert (e.value.code, e.value.loc) == (INVALID_FIELD, ("quantity",))
    assert isinstance(parse_order_message(_child(1).model_dump_json().encode()), ChildOrder)


# ------------------------------------------------------------------------------ config, CLI


def test_config_errors_name_file_and_field(tmp_path: Path) -> None:
    from mats.errors import ConfigError

    cfg = tmp_path / "g.yaml"
    cfg.write_text("gateways:\n  a: {protocol: fix, port: 99999}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"gateways\.a\.port"):
        load_config(cfg, "a")
    with pytest.raises(ConfigError, match="no gateway 'b'"):
        load_config(cfg, "b")


@pytest.mark.parametrize("argv", [
    ["gateway", "run", "nope", "--config", "{missing}"],
    ["broker-sim", "--port", "0"],
    ["broker-sim", "--port", "9000", "--price", "AAPL"],
    ["broker-sim"],
])
def test_cli_refuses_bad_input_with_one_line(argv: list[str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("{missing}", str(tmp_path / "none.yaml")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err


def test_simulator_drops_a_resent_order_it_already_has(tmp_path: Path) -> None:
    """PossDup: a NewOrderSingle sent again by a FIX resend is not a second order."""
    pytest.importorskip("quickfix")
    from mats import kafka
    from mats.gateway import fixwire
    from mats.gateway.simulator import FixSimulator, SimulatorConfig

    sim = FixSimulator(SimulatorConfig(protocol="fix", port=kafka.free_port("127.0.0.1"),
                                       run_dir=tmp_path / "sim", venue=VenueConfig()))
    sim.engine.start()
    try:
        first = fixwire.new_order_single("C1", "AAPL", "buy", 100, 1.0)
        again = fixwire.new_order_single("C1", "AAPL", "buy", 100, 1.0)
        again.getHeader().setField(43, "Y")
        fresh = fixwire.new_order_single("C2", "AAPL", "buy", 100, 1.0)
        fresh.getHeader().setField(43, "Y")  # resent, but never arrived before: taken
        for m in (first, again, fresh):
            sim.on_request("D", m, "s")
        deadline = time.monotonic() + 30
        while len(sim.engine.venue.open_orders()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        sim.engine.submit(lambda v: [], delay=False)
        # a plain duplicate (no PossDup) is refused as such
        sim.on_request("D", fixwire.new_order_single("C1", "AAPL", "buy", 100, 1.0), "s")
        while len(sim._store.unsent()) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        sim.engine.stop()
    kinds = [(m.cl_ord_id, m.exec_type, m.text) for _, _, m in sim._store.unsent()
             if isinstance(m, BrokerReport)]
    assert kinds == [("C1", "0", ""), ("C2", "0", ""), ("C1", "8", "duplicate ClOrdID C1")]
    assert sorted(o.cl_ord_id for o in sim.engine.venue.open_orders()) == ["C1", "C2"]


def test_legacy_exec_types_read_by_what_they_carry() -> None:
    from mats.gateway.models import exec_type_of

    ack = _report("E1", "C", "2", "0", 0)  # a pre-4.4 "fill" with no shares: an ack
    fill = _report("E2", "C", "2", "2", 1000, 1000)
    part = _report("E3", "C", "F", "1", 400, 400)
    assert [exec_type_of(r) for r in (ack, fill, part)] == [
        ExecType.NEW, ExecType.FILL, ExecType.PARTIAL_FILL]
    assert exec_type_of(_report("E4", "C", "I", "0", 0)) is None


def test_patched_dictionary_accepts_only_the_named_values(tmp_path: Path) -> None:
    pytest.importorskip("quickfix")
    from xml.etree import ElementTree

    from mats.gateway import fixwire

    base = fixwire.dictionary_path()
    out = fixwire.patched_dictionary(base, {150: ["1", "2"]}, tmp_path / "FIX44.xml")
    field = next(f for f in ElementTree.parse(out).getroot().iter("field")
                 if f.get("number") == "150")
    enums = {v.get("enum") for v in field.iter("value")}
    assert {"1", "2", "F", "0"} <= enums
    original = next(f for f in ElementTree.parse(base).getroot().iter("field")
                    if f.get("number") == "150")
    assert "2" not in {v.get("enum") for v in original.iter("value")}
    with pytest.raises(fixwire.FixUnavailable, match="tag 99999"):
        fixwire.patched_dictionary(base, {99999: ["x"]}, tmp_path / "bad.xml")
