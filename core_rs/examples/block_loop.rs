//! Times `Engine::process` alone (no Python) on a synthetic book: a profiling aid.
//!
//! `cargo run --release --example block_loop -- 100 20000` (accounts, iterations).

use std::time::Instant;

use mats_core::domain::{AllocationMethod, BlockOrder, BookIn, LotFailurePolicy, Side};
use mats_core::engine::Engine;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let iters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let sectors = ["Tech", "Energy", "Health", "Financials", "Utilities"];
    let instruments: Vec<String> = (0..200)
        .map(|k| format!(r#"{{"symbol":"S{k}","sector":"{}"}}"#, sectors[k % sectors.len()]))
        .collect();
    let prices: Vec<String> = (0..200).map(|k| format!(r#""S{k}":{}"#, 10.0 + k as f64)).collect();
    let accounts: Vec<String> = (0..n)
        .map(|i| {
            let pos: Vec<String> =
                (0..30).map(|p| format!(r#""S{}":{}"#, (i * 7 + p * 13) % 200, 10 + p)).collect();
            let nav = 100_000.0 + (i as f64) * 12_345.0;
            format!(
                r#"{{"account_id":"A{i}","account_type":"margin","mandate_id":"m","net_liq":{nav},
                "cash":{nav},"settled_cash":{nav},"strategies":["g"],"positions":{{{}}}}}"#,
                pos.join(",")
            )
        })
        .collect();
    let json = format!(
        r#"{{"instruments":[{}],"mandates":[{{"mandate_id":"m","max_position_pct":5,
        "sector_caps_pct":{{"Tech":30}},"max_gross_leverage":2}}],"accounts":[{}],
        "risk":{{"default_instrument_limit":{{"max_quantity":10000000,"max_notional":1e12}}}},
        "prices":{{{}}}}}"#,
        instruments.join(","),
        accounts.join(","),
        prices.join(",")
    );
    let mut engine = Engine::new(BookIn::from_json(&json).expect("book")).expect("load");
    let mut times = Vec::with_capacity(iters);
    for it in 0..iters {
        let order = BlockOrder {
            order_id: format!("o{it}"),
            journey_id: format!("j{it}"),
            strategy: "g".into(),
            symbol: format!("S{}", it % 200),
            side: Side::Buy,
            quantity: Some(1000 * (1 + (it % 50) as i64)),
            target_weight_pct: None,
            limit_price: None,
            reference_price: 10.0 + (it % 200) as f64,
            reference_ts: 0.0,
            method: AllocationMethod::NetLiq,
            params: None,
            accounts: None,
            on_lot_failure: LotFailurePolicy::ReduceLots,
        };
        let t = Instant::now();
        let d = engine.process(&order, 1.0, false).expect("process");
        times.push(t.elapsed().as_nanos() as f64 / 1000.0);
        std::hint::black_box(d);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "accounts={n} p50={:.2}us p99={:.2}us",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}
