//! Pro-rata split under per-account caps, then largest-remainder rounding to whole lots.

/// Result of one split, per account, in lots, with the working lists of the split (kept so that
/// the next split into the same value reuses their memory).
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// Whole lots per account.
    pub qty: Vec<i64>,
    /// Constrained ideal (after caps and redistribution, before rounding).
    pub ideal: Vec<f64>,
    /// The pro-rata share the account was offered when it was capped (its ideal otherwise).
    pub want: Vec<f64>,
    /// Whether the account's cap bound it.
    pub capped: Vec<bool>,
    live: Vec<usize>,
    active: Vec<usize>,
    capped_now: Vec<usize>,
    keyed: Vec<(f64, f64, usize)>,
}

/// Rounds of simultaneous capping before the remaining accounts are swept in sorted order.
pub const MAX_ROUNDS: usize = 8;

/// Splits `q_lots` over accounts in proportion to `weights`, never above `caps`
/// (see [`Split::fill`]).
pub fn waterfill(q_lots: i64, weights: &[f64], caps: &[i64], excluded: &[bool]) -> Split {
    let mut out = Split::default();
    out.fill(q_lots, weights, caps, excluded);
    out
}

fn reset<T: Copy>(v: &mut Vec<T>, n: usize, value: T) {
    v.clear();
    v.resize(n, value);
}

impl Split {
    /// Splits `q_lots` over accounts in proportion to `weights`, never above `caps`; accounts
    /// `excluded` get nothing.
    ///
    /// Water-filling: in rounds, every account whose pro-rata share of what is left reaches its
    /// cap is capped and leaves the pool, and what it could not take goes to the rest in
    /// proportion, until no share reaches a cap (after `MAX_ROUNDS` rounds, the rest are swept
    /// one at a time in order of cap/weight, so the cost stays N log N). Rounding floors every
    /// ideal and hands the lots left over one each to the largest remainders; ties go to the
    /// larger weight, then to the earlier account in book order.
    pub fn fill(&mut self, q_lots: i64, weights: &[f64], caps: &[i64], excluded: &[bool]) {
        let n = weights.len();
        reset(&mut self.qty, n, 0);
        reset(&mut self.ideal, n, 0.0);
        reset(&mut self.want, n, 0.0);
        reset(&mut self.capped, n, false);
        let Split { qty, ideal, want, capped, live, active, capped_now, keyed } = self;
        live.clear();
        let mut cap_total: i64 = 0;
        // The weight left in the pool is summed afresh, in book order, over the accounts still
        // in it (never kept by subtraction, which can leave zero or a negative number next to a
        // tiny weight): here for the first round, then alongside each round's pass.
        let mut rem_w = 0.0;
        for j in 0..n {
            if !excluded[j] && weights[j] > 0.0 {
                live.push(j);
                cap_total += caps[j];
                rem_w += weights[j];
            }
        }
        let target = if q_lots < cap_total { q_lots } else { cap_total };
        // Rounds: every account whose pro-rata share of what is left reaches its cap is capped
        // (all at once, at the same level), and what they could not take goes to the rest. The
        // level only rises, so capped accounts stay capped; a few rounds usually settle it. After
        // MAX_ROUNDS, the accounts still in play are swept one at a time in order of cap/weight,
        // which bounds the cost by N log N.
        let mut rem_q = q_lots as f64;
        active.clear();
        active.extend_from_slice(live);
        let mut rounds = 0;
        // Whether `want` holds the final share of every account still in the pool.
        let mut settled = false;
        let mut floored: i64 = 0;
        while rounds < MAX_ROUNDS {
            if active.is_empty() {
                settled = true;
                break;
            }
            // one pass: each share, the capped accounts out of the pool, the weight that stays
            let mut kept = 0;
            let mut next_w = 0.0;
            capped_now.clear();
            for a in 0..active.len() {
                let j = active[a];
                let share = rem_q * weights[j] / rem_w;
                want[j] = share;
                if share >= caps[j] as f64 {
                    ideal[j] = caps[j] as f64;
                    capped[j] = true;
                    capped_now.push(j);
                } else {
                    active[kept] = j;
                    kept += 1;
                    next_w += weights[j];
                }
            }
            if capped_now.is_empty() {
                settled = true;
                break;
            }
            for &j in capped_now.iter() {
                rem_q -= caps[j] as f64;
                floored += floor_ideal(ideal[j], caps[j], &mut qty[j]);
            }
            active.truncate(kept);
            rem_w = next_w;
            rounds += 1;
        }
        if !settled {
            keyed.clear();
            keyed.extend(active.iter().map(|&j| (caps[j] as f64 / weights[j], weights[j], j)));
            keyed.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)));
            active.clear();
            active.extend(keyed.iter().map(|k| k.2));
            // weight of the accounts from position m on, summed from the back
            let mut suffix = vec![0.0; active.len() + 1];
            for m in (0..active.len()).rev() {
                suffix[m] = weights[active[m]] + suffix[m + 1];
            }
            let mut k = 0;
            while k < active.len() {
                let j = active[k];
                let share = rem_q * weights[j] / suffix[k];
                if share < caps[j] as f64 {
                    break;
                }
                ideal[j] = caps[j] as f64;
                want[j] = share;
                capped[j] = true;
                floored += floor_ideal(ideal[j], caps[j], &mut qty[j]);
                rem_q -= caps[j] as f64;
                k += 1;
            }
            active.drain(..k);
            // the pool's weight, summed in sweep order
            rem_w = 0.0;
            for &j in active.iter() {
                rem_w += weights[j];
            }
            for &j in active.iter() {
                want[j] = rem_q * weights[j] / rem_w;
            }
        }
        for &j in active.iter() {
            let mut share = want[j];
            if share < 0.0 {
                share = 0.0; // rounding can leave a hair below zero to share
            }
            want[j] = share;
            ideal[j] = if share < caps[j] as f64 { share } else { caps[j] as f64 };
            floored += floor_ideal(ideal[j], caps[j], &mut qty[j]);
        }
        let mut left = target - floored;
        let frac = |ideal: &[f64], j: usize| ideal[j] - (ideal[j] as i64) as f64;
        if left > 0 {
            keyed.clear();
            keyed.extend(
                live.iter()
                    .copied()
                    .filter(|&j| qty[j] < caps[j])
                    .map(|j| (frac(ideal, j), weights[j], j)),
            );
            let by_rank = |a: &(f64, f64, usize), b: &(f64, f64, usize)| {
                b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2))
            };
            // Only the first `left` in rank order get a lot, one each (the usual case): select
            // them in linear time; their order does not matter. Otherwise every candidate gets
            // lots in rank order, round after round.
            if (left as usize) < keyed.len() {
                let cut = left as usize;
                keyed.select_nth_unstable_by(cut, by_rank);
                for &(_, _, j) in &keyed[..cut] {
                    qty[j] += 1;
                }
            } else {
                keyed.sort_unstable_by(by_rank);
                let cand = active;
                cand.clear();
                cand.extend(keyed.iter().map(|k| k.2));
                while left > 0 && !cand.is_empty() {
                    let mut kept = 0;
                    for a in 0..cand.len() {
                        if left == 0 {
                            break;
                        }
                        let j = cand[a];
                        qty[j] += 1;
                        left -= 1;
                        if qty[j] < caps[j] {
                            cand[kept] = j;
                            kept += 1;
                        }
                    }
                    cand.truncate(kept);
                }
            }
        } else if left < 0 {
            let cand = active;
            cand.clear();
            cand.extend(live.iter().copied().filter(|&j| qty[j] > 0));
            cand.sort_unstable_by(|&a, &b| {
                frac(ideal, a)
                    .total_cmp(&frac(ideal, b))
                    .then(weights[a].total_cmp(&weights[b]))
                    .then(b.cmp(&a))
            });
            // one lot each from the smallest remainders, round after round, until the total fits
            while left < 0 && !cand.is_empty() {
                for &j in cand.iter() {
                    if left == 0 {
                        break;
                    }
                    if qty[j] > 0 {
                        qty[j] -= 1;
                        left += 1;
                    }
                }
                cand.retain(|&j| qty[j] > 0);
            }
        }
    }
}

/// Whole lots of an ideal (non-negative, so truncation is the floor), never above the cap;
/// stored in `qty` and returned.
fn floor_ideal(ideal: f64, cap: i64, qty: &mut i64) -> i64 {
    let mut f = ideal as i64;
    if f > cap {
        f = cap;
    }
    *qty = f;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(q: i64, w: &[f64], c: &[i64]) -> Vec<i64> {
        waterfill(q, w, c, &vec![false; w.len()]).qty
    }

    #[test]
    fn net_liq_example() {
        assert_eq!(
            split(700, &[25_000.0, 50_000.0, 100_000.0], &[i64::MAX / 8; 3]),
            [100, 200, 400]
        );
    }

    #[test]
    fn ratios_example() {
        assert_eq!(split(1000, &[4.0, 2.0, 1.0, 1.0], &[10_000; 4]), [500, 250, 125, 125]);
    }

    #[test]
    fn equal_example_ties_go_to_book_order() {
        assert_eq!(split(400, &[1.0; 6], &[1000; 6]), [67, 67, 67, 67, 66, 66]);
    }

    #[test]
    fn capped_account_spills_to_others_in_proportion() {
        // 1:1:2 of 100 would be 25/25/50; the first is capped at 10, so 90 goes 1:2 -> 30/60.
        assert_eq!(split(100, &[1.0, 1.0, 2.0], &[10, 1000, 1000]), [10, 30, 60]);
    }

    #[test]
    fn everyone_capped_leaves_the_rest_unplaced() {
        let s = split(100, &[1.0, 1.0], &[10, 20]);
        assert_eq!(s, [10, 20]);
    }

    #[test]
    fn excluded_and_zero_weight_accounts_get_nothing() {
        let s = waterfill(10, &[1.0, 0.0, 1.0], &[100; 3], &[true, false, false]).qty;
        assert_eq!(s, [0, 0, 10]);
    }
}
