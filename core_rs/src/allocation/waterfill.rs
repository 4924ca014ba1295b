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
    /// (remainder, index) of the accounts that can take another lot, the remainder as an
    /// order key (see [`order_key`]); weights are looked at only between equal remainders.
    keyed: Vec<(u64, usize)>,
}

/// An unsigned key that orders floats as `f64::total_cmp` does: computed once per account, so
/// that ranking the remainders compares integers.
#[inline]
fn order_key(x: f64) -> u64 {
    let bits = x.to_bits();
    // negative numbers: flip every bit (larger magnitude sorts first); others: set the sign bit
    bits ^ ((((bits as i64) >> 63) as u64) | (1 << 63))
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
        keyed.clear();
        while rounds < MAX_ROUNDS {
            if active.is_empty() {
                settled = true;
                break;
            }
            let (kept, n_capped) =
                round(active, capped_now, rem_q, rem_w, weights, caps, want, ideal, capped);
            if n_capped == 0 {
                settled = true;
                break;
            }
            capped_now.truncate(n_capped);
            for &j in capped_now.iter() {
                rem_q -= caps[j] as f64;
                floored += settle(j, caps[j] as f64, caps, ideal, qty, keyed);
            }
            active.truncate(kept);
            // the weight that stays, summed in book order
            rem_w = 0.0;
            for &j in active.iter() {
                rem_w += weights[j];
            }
            rounds += 1;
        }
        if !settled {
            let ratio = |j: usize| caps[j] as f64 / weights[j];
            active.sort_unstable_by(|&a, &b| ratio(a).total_cmp(&ratio(b)).then_with(|| a.cmp(&b)));
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
                want[j] = share;
                capped[j] = true;
                floored += settle(j, caps[j] as f64, caps, ideal, qty, keyed);
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
            let v = if share < caps[j] as f64 { share } else { caps[j] as f64 };
            floored += settle(j, v, caps, ideal, qty, keyed);
        }
        let mut left = target - floored;
        let frac = |ideal: &[f64], j: usize| ideal[j] - (ideal[j] as i64) as f64;
        if left > 0 {
            // larger remainder, then larger weight, then earlier account
            let by_rank = |a: &(u64, usize), b: &(u64, usize)| {
                b.0.cmp(&a.0).then_with(|| {
                    let (wa, wb) = (order_key(weights[a.1]), order_key(weights[b.1]));
                    wb.cmp(&wa).then(a.1.cmp(&b.1))
                })
            };
            // Only the first `left` in rank order get a lot, one each (the usual case): select
            // them in linear time; their order does not matter. Otherwise every candidate gets
            // lots in rank order, round after round.
            if (left as usize) < keyed.len() {
                let cut = left as usize;
                keyed.select_nth_unstable_by(cut, by_rank);
                for &(_, j) in &keyed[..cut] {
                    qty[j] += 1;
                }
            } else {
                keyed.sort_unstable_by(by_rank);
                let cand = active;
                cand.clear();
                cand.extend(keyed.iter().map(|k| k.1));
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
                    .then_with(|| weights[a].total_cmp(&weights[b]))
                    .then_with(|| b.cmp(&a))
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

/// One round of water-filling over the pool `active` (book order): each account's share of
/// `rem_q`, in `want`; the accounts whose share reaches their cap are capped at it and listed in
/// `capped_now` (book order), the others kept at the front of `active`. Returns how many stay
/// and how many were capped.
///
/// Branch-free: whether a share reaches its cap is as good as random, and a mispredicted branch
/// costs more than the stores done either way.
#[allow(clippy::too_many_arguments)]
fn round(
    active: &mut [usize],
    capped_now: &mut Vec<usize>,
    rem_q: f64,
    rem_w: f64,
    weights: &[f64],
    caps: &[i64],
    want: &mut [f64],
    ideal: &mut [f64],
    capped: &mut [bool],
) -> (usize, usize) {
    capped_now.clear();
    capped_now.resize(active.len(), 0);
    let (mut kept, mut n_capped) = (0, 0);
    for a in 0..active.len() {
        let j = active[a];
        let w = weights[j];
        let cap = caps[j] as f64;
        let share = rem_q * w / rem_w;
        want[j] = share;
        let c = share >= cap;
        capped[j] = c;
        // an account in the pool has no ideal yet
        ideal[j] = if c { cap } else { 0.0 };
        capped_now[n_capped] = j;
        n_capped += usize::from(c);
        active[kept] = j;
        kept += usize::from(!c);
    }
    (kept, n_capped)
}

/// Settles account `j` at `value`: its ideal, its whole lots (the ideal is non-negative, so
/// truncation is the floor; never above the cap), and, when it can take another lot, its
/// (remainder, index) in `keyed` for the lots left over. Returns its whole lots.
fn settle(
    j: usize,
    value: f64,
    caps: &[i64],
    ideal: &mut [f64],
    qty: &mut [i64],
    keyed: &mut Vec<(u64, usize)>,
) -> i64 {
    ideal[j] = value;
    let whole = value as i64;
    let f = if whole > caps[j] { caps[j] } else { whole };
    qty[j] = f;
    if f < caps[j] {
        keyed.push((order_key(value - whole as f64), j));
    }
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

    #[test]
    fn order_key_orders_as_total_cmp() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -1e-320,
            -0.0,
            0.0,
            1e-320,
            0.25,
            0.5,
            1.0,
            7.0,
            1e300,
            f64::INFINITY,
        ];
        for a in xs {
            for b in xs {
                assert_eq!(order_key(a).cmp(&order_key(b)), a.total_cmp(&b), "{a} vs {b}");
            }
        }
    }
}
