//! Replays a dumped book and block orders through `Engine::process` (no Python) and prints the
//! per-call latency: a profiling aid for the benchmark's workload.
//!
//! Input: a JSON file `{"book": <Book>, "orders": [<BlockOrder with reference_ts>], "as_of": t}`.
//! `cargo run --release --example replay -- FILE.json [CALLS] [digest]`; with `digest` it also
//! prints a hash of every decision's JSON (untimed), to check that a change keeps every result.

use std::fmt::Write;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

use mats_core::domain::{AllocationMethod, BlockOrder, BookIn, LotFailurePolicy, Side};
use mats_core::engine::Engine;
use serde_json::Value;

fn order(v: &Value) -> BlockOrder {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let method = AllocationMethod::parse(v["method"].as_str().unwrap()).unwrap();
    let key = match method {
        AllocationMethod::Ratios => Some("ratios"),
        AllocationMethod::Percent => Some("percents"),
        AllocationMethod::Shares => Some("shares"),
        _ => None,
    };
    BlockOrder {
        order_id: s("order_id"),
        journey_id: s("journey_id"),
        strategy: s("strategy"),
        symbol: s("symbol"),
        side: Side::parse(v["side"].as_str().unwrap()).unwrap(),
        quantity: v["quantity"].as_i64(),
        target_weight_pct: v["target_weight_pct"].as_f64(),
        limit_price: v["limit_price"].as_f64(),
        reference_price: v["reference_price"].as_f64().unwrap(),
        reference_ts: v["reference_ts"].as_f64().unwrap(),
        method,
        params: key.map(|k| {
            v[k].as_object()
                .unwrap()
                .iter()
                .map(|(a, x)| (a.clone(), x.as_f64().unwrap()))
                .collect()
        }),
        accounts: v["accounts"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect()),
        on_lot_failure: LotFailurePolicy::parse(v["on_lot_failure"].as_str().unwrap()).unwrap(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("a dump file");
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let digest = args.next().as_deref() == Some("digest");
    let mut hasher = DefaultHasher::new();
    let text = std::fs::read_to_string(path).expect("readable dump");
    let dump: Value = serde_json::from_str(&text).expect("JSON dump");
    let book: BookIn = serde_json::from_value(dump["book"].clone()).expect("book");
    let as_of = dump["as_of"].as_f64().unwrap();
    let templates = dump["orders"].as_array().expect("orders");
    let mut orders: Vec<BlockOrder> = templates.iter().map(order).collect();
    let mut engine = Engine::new(book).expect("book loads");
    let mut times = Vec::with_capacity(calls);
    for n in 0..calls {
        // fresh ids per call (the duplicate checks stay quiet), written in place: no allocation
        let o = &mut orders[n % templates.len()];
        for id in [&mut o.order_id, &mut o.journey_id] {
            let keep = id.find('-').unwrap_or(id.len());
            id.truncate(keep);
            write!(id, "-{n}").expect("writing to a String");
        }
        let o = &*o;
        let t = Instant::now();
        let d = engine.process(o, as_of, false).expect("process");
        times.push(t.elapsed().as_nanos() as f64 / 1000.0);
        if digest {
            // untimed: every detail of every decision, to compare builds bit for bit
            d.to_json().hash(&mut hasher);
        }
        std::hint::black_box(d);
    }
    if digest {
        println!("digest={:016x}", hasher.finish());
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    println!(
        "calls={calls} mean={mean:.2}us p50={:.2}us p99={:.2}us",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}
