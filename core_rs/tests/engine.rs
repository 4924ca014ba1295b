//! The engine end to end in Rust: examples from docs/allocation.md and the layer-2 story.

use mats_core::codes::Code;
use mats_core::decision::{Decision, LineStatus, Stage, Status};
use mats_core::domain::{AllocationMethod, BlockOrder, BookIn, LotFailurePolicy, Side};
use mats_core::engine::Engine;

const T0: f64 = 1_795_000_000.0;

fn book(navs: &[f64], mandate: &str, positions: &str, msft_px: f64) -> Engine {
    let accounts: Vec<String> = navs
        .iter()
        .enumerate()
        .map(|(i, nav)| {
            format!(
                r#"{{"account_id":"A{i}","account_type":"margin","mandate_id":"m","net_liq":{nav},
                "cash":{nav},"settled_cash":{nav},"strategies":["growth"],"positions":{positions}}}"#
            )
        })
        .collect();
    let json = format!(
        r#"{{"instruments":[{{"symbol":"MSFT","sector":"Tech"}},{{"symbol":"XOM","sector":"Energy"}}],
        "mandates":[{{"mandate_id":"m","max_gross_leverage":2.0{mandate}}}],
        "accounts":[{}],
        "risk":{{"default_instrument_limit":{{"max_quantity":1000000,"max_notional":1e10}}}},
        "prices":{{"MSFT":{msft_px},"XOM":10.0}}}}"#,
        accounts.join(",")
    );
    Engine::new(BookIn::from_json(&json).expect("book parses")).expect("book loads")
}

fn order(id: &str, qty: i64, method: AllocationMethod, px: f64) -> BlockOrder {
    BlockOrder {
        order_id: id.into(),
        journey_id: format!("j-{id}"),
        strategy: "growth".into(),
        symbol: "MSFT".into(),
        side: Side::Buy,
        quantity: Some(qty),
        target_weight_pct: None,
        limit_price: None,
        reference_price: px,
        reference_ts: T0,
        method,
        params: None,
        accounts: None,
        on_lot_failure: LotFailurePolicy::RejectBlock,
    }
}

fn quantities(d: &Decision) -> Vec<i64> {
    d.lines.quantity.clone()
}

#[test]
fn net_liq_700_over_25k_50k_100k() {
    let mut e = book(&[25_000.0, 50_000.0, 100_000.0], "", "{}", 10.0);
    let d = e.process(&order("o1", 700, AllocationMethod::NetLiq, 10.0), T0, true).unwrap();
    assert_eq!(d.status, Status::Accepted);
    assert_eq!(quantities(&d), [100, 200, 400]);
}

#[test]
fn equal_400_over_6() {
    let mut e = book(&[1e6; 6], "", "{}", 10.0);
    let d = e.process(&order("o1", 400, AllocationMethod::Equal, 10.0), T0, true).unwrap();
    assert_eq!(quantities(&d), [67, 67, 67, 67, 66, 66]);
}

#[test]
fn ratios_4_2_1_1_of_1000() {
    let mut e = book(&[1e6; 4], "", "{}", 10.0);
    let mut o = order("o1", 1000, AllocationMethod::Ratios, 10.0);
    o.params =
        Some(vec![("A0".into(), 4.0), ("A1".into(), 2.0), ("A2".into(), 1.0), ("A3".into(), 1.0)]);
    let d = e.process(&o, T0, true).unwrap();
    assert_eq!(quantities(&d), [500, 250, 125, 125]);
}

#[test]
fn stale_reference_price_lets_layer2_catch_concentration() {
    // 10% position limit, 90 shares held, reference 100 but live 104.
    let mut e = book(&[100_000.0, 100_000.0], r#","max_position_pct":10"#, r#"{"MSFT":90}"#, 104.0);
    let d = e.process(&order("o1", 20, AllocationMethod::Equal, 100.0), T0, true).unwrap();
    assert!(d.l1_breaches.is_empty());
    assert_eq!(d.stage, Some(Stage::L2));
    assert_eq!(d.placed_quantity, 0);
    for line in d.lines.iter() {
        assert_eq!(line.allocated, 10);
        assert_eq!(line.status, LineStatus::Blocked);
        assert_eq!(line.l2_breaches[0].code, Code::MaxPositionPct);
    }
}

#[test]
fn duplicate_order_id_is_refused() {
    let mut e = book(&[1e6], "", "{}", 10.0);
    let o = order("o1", 10, AllocationMethod::NetLiq, 10.0);
    assert_eq!(e.process(&o, T0, true).unwrap().status, Status::Accepted);
    let again = e.process(&o, T0, true).unwrap();
    let codes: Vec<Code> = again.l1_breaches.iter().map(|c| c.code).collect();
    assert_eq!(codes, [Code::DuplicateOrderId, Code::DuplicateJourneyId]);
}

#[test]
fn bad_orders_are_errors_not_panics() {
    let mut e = book(&[1e6], "", "{}", 10.0);
    let mut o = order("o1", 10, AllocationMethod::NetLiq, f64::NAN);
    let err = e.process(&o, T0, true).unwrap_err();
    assert_eq!(err.loc, ["reference_price"]);
    o.reference_price = 10.0;
    o.symbol = "NOPE".into();
    assert_eq!(e.process(&o, T0, true).unwrap_err().loc, ["symbol"]);
    assert!(BookIn::from_json("{").is_err());
}

#[test]
fn no_lot_fails_layer2_when_the_live_price_is_at_or_below_the_blocks() {
    // Holders near their limits (long near the 10% position cap, or short), buys and sells,
    // live prices from the block's own down to a twentieth of it: every rule's room only grows
    // as the price falls, so layer 2 passes every lot (debug builds also check it inside).
    let holders = [
        (r#","max_position_pct":10,"sector_caps_pct":{"Tech":12}"#, r#"{"MSFT":900}"#),
        (r#","max_position_pct":10,"allow_short":true"#, r#"{"MSFT":-500,"XOM":300}"#),
    ];
    for (mandate, positions) in holders {
        for live in [10.0, 9.99, 8.0, 2.0, 0.5] {
            for side in [Side::Buy, Side::Sell] {
                for policy in [LotFailurePolicy::RejectBlock, LotFailurePolicy::ReduceLots] {
                    let mut e = book(&[100_000.0, 250_000.0, 60_000.0], mandate, positions, live);
                    let mut o = order("o1", 600, AllocationMethod::NetLiq, 10.0);
                    o.side = side;
                    o.on_lot_failure = policy;
                    let d = e.process(&o, T0, true).unwrap();
                    let case = format!("{mandate} {positions} live {live} {side:?} {policy:?}");
                    assert_eq!(d.status, Status::Accepted, "{case}");
                    assert!(d.placed_quantity > 0, "{case}");
                    assert_ne!(d.stage, Some(Stage::L2), "{case}");
                    for line in d.lines.iter() {
                        assert!(line.l2_breaches.is_empty(), "{case}");
                        assert!(
                            !matches!(line.status, LineStatus::Reduced | LineStatus::Dropped),
                            "{case}"
                        );
                    }
                }
            }
        }
    }
    // the same long holders at a live price above the block's: layer 2 bites
    let mut e = book(&[100_000.0], holders[0].0, holders[0].1, 10.4);
    let d = e.process(&order("o1", 90, AllocationMethod::NetLiq, 10.0), T0, true).unwrap();
    assert_eq!(d.stage, Some(Stage::L2));
}
