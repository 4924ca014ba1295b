//! Pro-rata split under per-account caps, then largest-remainder rounding to whole lots.

/// Result of one split, per account, in lots.
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
}

/// Rounds of simultaneous capping before the remaining accounts are swept in sorted order.
pub const MAX_ROUNDS: usize = 8;

/// Splits `q_lots` over accounts in proportion to `weights`, never above `caps`.
///
/// Water-filling: in rounds, every account whose pro-rata share of what is left reaches its cap
/// is capped and leaves the pool, and what it could not take goes to the rest in proportion,
/// until no share reaches a cap (after `MAX_ROUNDS` rounds, the rest are swept one at a time in
/// order of cap/weight, so the cost stays N log N). Rounding floors every ideal and hands the
/// lots left over one each to the largest remainders; ties go to the larger weight, then to the
/// earlier account in book order.
pub fn waterfill(q_lots: i64, weights: &[f64], caps: &[i64], excluded: &[bool]) -> Split {
    let n = weights.len();
    let mut out =
        Split { qty: vec![0; n], ideal: vec![0.0; n], want: vec![0.0; n], capped: vec![false; n] };
    let live: Vec<usize> = (0..n).filter(|&j| !excluded[j] && weights[j] > 0.0).collect();
    let mut cap_total: i64 = 0;
    for &j in &live {
        cap_total += caps[j];
    }
    let target = if q_lots < cap_total { q_lots } else { cap_total };
    // The weight left in the pool is summed afresh over the accounts still in it (never kept
    // by subtraction, which can leave zero or a negative number next to a tiny weight).
    let pool_weight = |pool: &[usize]| {
        let mut w = 0.0;
        for &j in pool {
            w += weights[j];
        }
        w
    };
    // Rounds: every account whose pro-rata share of what is left reaches its cap is capped
    // (all at once, at the same level), and what they could not take goes to the rest. The
    // level only rises, so capped accounts stay capped; a few rounds usually settle it. After
    // MAX_ROUNDS, the accounts still in play are swept one at a time in order of cap/weight,
    // which bounds the cost by N log N.
    let mut rem_q = q_lots as f64;
    let mut active = live.clone();
    let mut rounds = 0;
    let mut settled = false;
    while rounds < MAX_ROUNDS {
        if active.is_empty() {
            settled = true;
            break;
        }
        let rem_w = pool_weight(&active);
        let mut any = false;
        for &j in &active {
            let share = rem_q * weights[j] / rem_w;
            if share >= caps[j] as f64 {
                out.ideal[j] = caps[j] as f64;
                out.want[j] = share;
                out.capped[j] = true;
                any = true;
            }
        }
        if !any {
            settled = true;
            break;
        }
        for &j in &active {
            if out.capped[j] {
                rem_q -= caps[j] as f64;
            }
        }
        active.retain(|&j| !out.capped[j]);
        rounds += 1;
    }
    if !settled {
        let mut keyed: Vec<(f64, usize)> =
            active.iter().map(|&j| (caps[j] as f64 / weights[j], j)).collect();
        keyed.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        active = keyed.into_iter().map(|(_, j)| j).collect();
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
            out.ideal[j] = caps[j] as f64;
            out.want[j] = share;
            out.capped[j] = true;
            rem_q -= caps[j] as f64;
            k += 1;
        }
        active.drain(..k);
    }
    let rem_w = pool_weight(&active);
    for &j in &active {
        let mut share = rem_q * weights[j] / rem_w;
        if share < 0.0 {
            share = 0.0; // rounding can leave a hair below zero to share
        }
        out.want[j] = share;
        out.ideal[j] = if share < caps[j] as f64 { share } else { caps[j] as f64 };
    }
    let mut floored: i64 = 0;
    for &j in &live {
        // ideals are non-negative, so truncation is the floor
        let mut f = out.ideal[j] as i64;
        if f > caps[j] {
            f = caps[j];
        }
        out.qty[j] = f;
        floored += f;
    }
    let mut left = target - floored;
    let frac = |ideal: &[f64], j: usize| ideal[j] - (ideal[j] as i64) as f64;
    if left > 0 {
        let mut keyed: Vec<(f64, f64, usize)> = live
            .iter()
            .copied()
            .filter(|&j| out.qty[j] < caps[j])
            .map(|j| (frac(&out.ideal, j), weights[j], j))
            .collect();
        let by_rank = |a: &(f64, f64, usize), b: &(f64, f64, usize)| {
            b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2))
        };
        // Only the first `left` in rank order get a lot, one each (the usual case): select them
        // in linear time; their order does not matter. Otherwise every candidate gets lots in
        // rank order, round after round.
        if (left as usize) < keyed.len() {
            let cut = left as usize;
            keyed.select_nth_unstable_by(cut, by_rank);
            keyed.truncate(cut);
        } else {
            keyed.sort_unstable_by(by_rank);
        }
        let mut cand: Vec<usize> = keyed.into_iter().map(|k| k.2).collect();
        while left > 0 && !cand.is_empty() {
            let mut next = Vec::with_capacity(cand.len());
            for &j in &cand {
                if left == 0 {
                    break;
                }
                out.qty[j] += 1;
                left -= 1;
                if out.qty[j] < caps[j] {
                    next.push(j);
                }
            }
            cand = next;
        }
    } else if left < 0 {
        let mut cand: Vec<usize> = live.iter().copied().filter(|&j| out.qty[j] > 0).collect();
        cand.sort_unstable_by(|&a, &b| {
            frac(&out.ideal, a)
                .total_cmp(&frac(&out.ideal, b))
                .then(weights[a].total_cmp(&weights[b]))
                .then(b.cmp(&a))
        });
        // one lot each from the smallest remainders, round after round, until the total fits
        while left < 0 && !cand.is_empty() {
            for &j in &cand {
                if left == 0 {
                    break;
                }
                if out.qty[j] > 0 {
                    out.qty[j] -= 1;
                    left += 1;
                }
            }
            cand.retain(|&j| out.qty[j] > 0);
        }
    }
    out
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
