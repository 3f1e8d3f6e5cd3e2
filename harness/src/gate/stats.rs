//! The statistics of the relative gate (GATING.md §1.3): a one-sided Mann–Whitney U test with
//! mid-ranks for ties and the exact null distribution for small samples, the Hodges–Lehmann
//! shift of the logs (a ratio) with its exact confidence interval, and Holm–Bonferroni.
//!
//! Ranks do not change under a monotone transform, so the U test on log times is the U test on
//! times; the Hodges–Lehmann ratio is the median of the pairwise log-differences, exponentiated.

/// Exact distributions are used while `n · m` is at most this (GATING.md §1.3); above it the
/// normal approximation with tie and continuity corrections.
pub const EXACT_MAX_PAIRS: usize = 400;

/// Median of a sample (the mean of the two middle values when `n` is even); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// How many of the `C(n+m, n)` orderings of two samples without ties give each value of U
/// (`U` = pairs where the first sample's value is the larger), for `u` in `0 ..= n·m`.
///
/// Dynamic programming over counts: the largest of the `n + m` values belongs either to the
/// first sample (it beats all `m` of the second) or to the second (it beats none of the first):
/// `f(n, m, u) = f(n-1, m, u-m) + f(n, m-1, u)`.
pub fn u_counts(n: usize, m: usize) -> Vec<u64> {
    // row[j] holds f(i, j, ·) for the current i.
    let mut row: Vec<Vec<u64>> = (0..=m).map(|_| vec![1]).collect();
    for i in 1..=n {
        let mut next: Vec<Vec<u64>> = Vec::with_capacity(m + 1);
        next.push(vec![1]); // f(i, 0, ·): U = 0 only
        for j in 1..=m {
            let mut f = vec![0u64; i * j + 1];
            // Largest in the first sample: U shifts by j.
            for (u, c) in row[j].iter().enumerate() {
                f[u + j] += c;
            }
            // Largest in the second sample.
            for (u, c) in next[j - 1].iter().enumerate() {
                f[u] += c;
            }
            next.push(f);
        }
        row = next;
    }
    row.pop().expect("m + 1 rows")
}

/// Result of a one-sided Mann–Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the candidate: pairs where it is larger, ties counting one half.
    pub u: f64,
    /// P(U ≥ ⌊u⌋) under the null hypothesis of one distribution (untied, exact when small).
    pub p: f64,
    /// Exact null distribution (no tie correction), or the normal approximation.
    pub exact: bool,
}

/// U of `x` against `y` from mid-ranks: `R_x − n(n+1)/2`.
fn u_statistic(x: &[f64], y: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = x.iter().map(|&v| (v, true)).collect();
    all.extend(y.iter().map(|&v| (v, false)));
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid_rank * all[i..=j].iter().filter(|e| e.1).count() as f64;
        i = j + 1;
    }
    let n = x.len() as f64;
    rank_sum - n * (n + 1.0) / 2.0
}

/// Sum over tie groups of `t³ − t`, for the variance's tie correction.
fn tie_term(x: &[f64], y: &[f64]) -> f64 {
    let mut all: Vec<f64> = x.iter().chain(y).copied().collect();
    all.sort_by(f64::total_cmp);
    let mut total = 0.0;
    let mut i = 0;
    while i < all.len() {
        let j = all[i..].iter().take_while(|&&v| v == all[i]).count();
        let t = j as f64;
        total += t * t * t - t;
        i += j;
    }
    total
}

/// One-sided test that `x` (the candidate) tends to be larger than `y` (the baseline).
/// `None` when a side is empty.
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    let (n, m) = (x.len(), y.len());
    if n == 0 || m == 0 {
        return None;
    }
    let u = u_statistic(x, y);
    if n * m <= EXACT_MAX_PAIRS {
        let counts = u_counts(n, m);
        let total: u64 = counts.iter().sum();
        // U takes integer values under the untied null; a mid-rank U of k + ½ is read as k,
        // the conservative side (ties never make a regression look stronger), as scipy does.
        let from = u.floor() as usize;
        let tail: u64 = counts.iter().skip(from).sum();
        return Some(MannWhitney {
            u,
            p: tail as f64 / total as f64,
            exact: true,
        });
    }
    let (nf, mf) = (n as f64, m as f64);
    let big_n = nf + mf;
    let var = nf * mf / 12.0 * ((big_n + 1.0) - tie_term(x, y) / (big_n * (big_n - 1.0)));
    let p = if var <= 0.0 {
        1.0
    } else {
        // Continuity correction of one half, as in the usual statement of the test.
        let z = (u - nf * mf / 2.0 - 0.5) / var.sqrt();
        normal_sf(z)
    };
    Some(MannWhitney { u, p, exact: false })
}

/// The Hodges–Lehmann estimate of `x / y` with its confidence interval, all as ratios.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HodgesLehmann {
    pub ratio: f64,
    /// `None` when the samples are too small for an interval at the asked level.
    pub interval: Option<(f64, f64)>,
    /// The interval's actual coverage (the exact distribution is discrete).
    pub coverage: f64,
}

/// The rank `k` (1-based) such that `[D(k), D(nm+1−k)]` of the sorted pairwise differences is a
/// `confidence` interval: `k − 1` is the largest `u` with `P(U ≤ u) ≤ (1 − confidence) / 2`.
/// Returns `(k, coverage)`; `k = 0` means no such interval exists.
pub fn interval_rank(n: usize, m: usize, confidence: f64) -> (usize, f64) {
    let half = (1.0 - confidence) / 2.0;
    if n * m <= EXACT_MAX_PAIRS {
        let counts = u_counts(n, m);
        let total: u64 = counts.iter().sum();
        let mut below = 0u64; // P(U ≤ k − 1) · total
        let mut k = 0;
        for (u, c) in counts.iter().enumerate() {
            if (below + c) as f64 / total as f64 > half {
                break;
            }
            below += c;
            k = u + 1;
        }
        return (k, 1.0 - 2.0 * below as f64 / total as f64);
    }
    let (nf, mf) = (n as f64, m as f64);
    let sd = (nf * mf * (nf + mf + 1.0) / 12.0).sqrt();
    let z = normal_quantile(1.0 - half);
    let k = (nf * mf / 2.0 - z * sd).floor().max(0.0) as usize;
    (k, confidence)
}

/// Hodges–Lehmann ratio of `x` (candidate) over `y` (baseline), both positive: the exponential
/// of the median of the `n·m` differences `ln xᵢ − ln yⱼ`, and of their order statistics for the
/// interval. `None` when a side is empty or holds a value ≤ 0.
pub fn hodges_lehmann(x: &[f64], y: &[f64], confidence: f64) -> Option<HodgesLehmann> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|&v| v.is_nan() || v <= 0.0) {
        return None;
    }
    let mut d: Vec<f64> = x
        .iter()
        .flat_map(|&a| y.iter().map(move |&b| a.ln() - b.ln()))
        .collect();
    d.sort_by(f64::total_cmp);
    let ratio = median(&d)?.exp();
    let (k, coverage) = interval_rank(x.len(), y.len(), confidence);
    let interval = (k >= 1).then(|| (d[k - 1].exp(), d[d.len() - k].exp()));
    Some(HodgesLehmann {
        ratio,
        interval,
        coverage: if interval.is_some() { coverage } else { 0.0 },
    })
}

/// Holm–Bonferroni adjusted p-values, in the order given: the i-th smallest p is multiplied by
/// `k − i + 1`, made monotone, capped at 1. Rejecting where the adjusted p < α is Holm's
/// step-down procedure at family-wise level α.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let k = p.len();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; k];
    let mut running: f64 = 0.0;
    for (i, &idx) in order.iter().enumerate() {
        running = running.max(((k - i) as f64 * p[idx]).min(1.0));
        adjusted[idx] = running;
    }
    adjusted
}

/// Upper tail of the standard normal, `P(Z > z)`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function, by the continued fraction for large arguments and the
/// Maclaurin series of erf for small ones; relative error well below 1e-12 on the range used.
fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf(x) = 2/√π Σ (−1)ⁿ x^(2n+1) / (n! (2n+1))
        let mut term = x;
        let mut sum = x;
        let x2 = x * x;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        return 1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum;
    }
    // erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))), evaluated
    // from the tail.
    let mut frac = 0.0;
    for n in (1..=60).rev() {
        frac = (n as f64 / 2.0) / (x + frac);
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / (x + frac)
}

/// The standard normal quantile, by bisection on [`normal_sf`] (used once per large sample).
pub fn normal_quantile(q: f64) -> f64 {
    let (mut lo, mut hi) = (-40.0_f64, 40.0_f64);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if 1.0 - normal_sf(mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const X5: [f64; 5] = [1.2, 1.5, 1.7, 2.0, 2.2];
    const Y5: [f64; 5] = [1.0, 1.1, 1.3, 1.4, 1.6];
    const X10: [f64; 10] = [1.31, 1.12, 1.45, 1.60, 1.22, 1.38, 1.51, 1.19, 1.70, 1.41];
    const Y10: [f64; 10] = [1.02, 1.15, 0.98, 1.20, 1.07, 1.11, 1.25, 0.95, 1.30, 1.09];

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn u_counts_are_the_orderings_of_two_samples() {
        let c = u_counts(5, 5);
        assert_eq!(c.len(), 26);
        assert_eq!(c.iter().sum::<u64>(), 252); // C(10, 5)
        assert_eq!(&c[..4], &[1, 1, 2, 3]); // by enumeration: U = 0, 1, 2, 3
        assert!(c.iter().eq(c.iter().rev()), "symmetric about n·m/2");
        assert_eq!(u_counts(20, 20).iter().sum::<u64>(), 137_846_528_820); // C(40, 20)
        assert_eq!(u_counts(3, 0), vec![1]);
    }

    #[test]
    fn exact_p_matches_scipy() {
        // Each value from scipy 1.17.1:
        // scipy.stats.mannwhitneyu(x, y, alternative='greater', method='exact')
        // x=[1.2,1.5,1.7,2.0,2.2], y=[1.0,1.1,1.3,1.4,1.6] → U=21.0, p=0.047619047619047616
        let r = mann_whitney_greater(&X5, &Y5).unwrap();
        assert!(r.exact);
        assert_eq!(r.u, 21.0);
        assert!(close(r.p, 0.047619047619047616, 1e-12), "{r:?}");
        // x=[6,7,8,9,10], y=[1,2,3,4,5] → U=25.0, p=0.003968253968253968 (= 1/252)
        let r = mann_whitney_greater(&[6., 7., 8., 9., 10.], &[1., 2., 3., 4., 5.]).unwrap();
        assert_eq!(r.u, 25.0);
        assert!(close(r.p, 0.003968253968253968, 1e-12), "{r:?}");
        // x=X10, y=Y10 → U=91.0, p=0.000525016778886748; and reversed → U=9.0, p=0.9996373595444803
        let r = mann_whitney_greater(&X10, &Y10).unwrap();
        assert_eq!(r.u, 91.0);
        assert!(close(r.p, 0.000525016778886748, 1e-10), "{r:?}");
        let r = mann_whitney_greater(&Y10, &X10).unwrap();
        assert_eq!(r.u, 9.0);
        assert!(close(r.p, 0.9996373595444803, 1e-12), "{r:?}");
    }

    #[test]
    fn ties_take_mid_ranks_and_round_u_down() {
        // scipy: mannwhitneyu([1,2,2,3,4], [0.5,1,2,3,3], alternative='greater', method='exact')
        // → U=15.5, p=0.34523809523809523 (= P(U ≥ 15) of the untied distribution, 87/252;
        // the conditional permutation p with these ties is 78/252 = 0.3095, P(U ≥ 16) = 69/252)
        let r = mann_whitney_greater(&[1., 2., 2., 3., 4.], &[0.5, 1., 2., 3., 3.]).unwrap();
        assert_eq!(r.u, 15.5);
        assert!(close(r.p, 0.34523809523809523, 1e-12), "{r:?}");
    }

    #[test]
    fn large_samples_use_the_normal_approximation() {
        // scipy: x=[1.0+0.037*((i*7)%25) for i in range(25)], y=[0.9+0.04*((i*3)%20) for i in
        // range(20)]; mannwhitneyu(x, y, alternative='greater', method='asymptotic')
        // → U=336.0, p=0.025412308386885043
        let x: Vec<f64> = (0..25)
            .map(|i| 1.0 + 0.037 * ((i * 7) % 25) as f64)
            .collect();
        let y: Vec<f64> = (0..20)
            .map(|i| 0.9 + 0.04 * ((i * 3) % 20) as f64)
            .collect();
        let r = mann_whitney_greater(&x, &y).unwrap();
        assert!(!r.exact);
        assert_eq!(r.u, 336.0);
        assert!(close(r.p, 0.025412308386885043, 1e-9), "{r:?}");
        assert_eq!(mann_whitney_greater(&[], &y), None);
    }

    #[test]
    fn normal_tail_matches_scipy() {
        // scipy.stats.norm.sf(z) for each z; norm.ppf(0.975) = 1.959963984540054
        for (z, want) in [
            (1.96, 0.024997895148220435),
            (3.0, 0.0013498980316300933),
            (-1.0, 0.8413447460685429),
            (5.0, 2.866515718791933e-07),
            (0.3, 0.3820885778110474),
            (1.99, 0.02329546775021182),
            (2.01, 0.022215594429431475),
        ] {
            assert!(close(normal_sf(z), want, 1e-11), "{z}: {}", normal_sf(z));
        }
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-12);
    }

    #[test]
    fn interval_ranks_match_the_published_table() {
        // GATING.md §1.3's table of k for the exact 95 % interval [D(k), D(nm+1−k)], which is
        // the standard two-sided 0.05 critical value of U plus one.
        for (n, k) in [
            (5, 3),
            (6, 6),
            (8, 14),
            (10, 24),
            (12, 38),
            (15, 65),
            (20, 128),
        ] {
            assert_eq!(interval_rank(n, n, 0.95).0, k, "{n}×{n}");
        }
        // 5×5: P(U ≤ 2) = 4/252, so the coverage is 1 − 8/252.
        assert!(close(interval_rank(5, 5, 0.95).1, 1.0 - 8.0 / 252.0, 1e-12));
        // 2×2: even D(1)..D(4) covers only 1 − 2/6: no 95 % interval.
        assert_eq!(interval_rank(2, 2, 0.95).0, 0);
    }

    #[test]
    fn hodges_lehmann_matches_numpy() {
        // numpy: d = np.sort((np.log(x)[:,None] - np.log(y)[None,:]).ravel());
        // np.exp(np.median(d)), np.exp(d[k-1]), np.exp(d[n*m-k]) with k = 3 for 5×5:
        // → 1.3636363636363635, 0.923076923076923, 2.0
        let hl = hodges_lehmann(&X5, &Y5, 0.95).unwrap();
        assert!(close(hl.ratio, 1.3636363636363635, 1e-12), "{hl:?}");
        let (lo, hi) = hl.interval.unwrap();
        assert!(
            close(lo, 0.923076923076923, 1e-12) && close(hi, 2.0, 1e-12),
            "{hl:?}"
        );
        // Same one-liner for X10/Y10 with k = 24: → 1.2487587822476371, 1.099099099099099,
        // 1.411214953271028
        let hl = hodges_lehmann(&X10, &Y10, 0.95).unwrap();
        assert!(close(hl.ratio, 1.2487587822476371, 1e-12), "{hl:?}");
        let (lo, hi) = hl.interval.unwrap();
        assert!(close(lo, 1.099099099099099, 1e-12), "{hl:?}");
        assert!(close(hi, 1.411214953271028, 1e-12), "{hl:?}");
        assert_eq!(hodges_lehmann(&[1.0, 0.0], &Y5, 0.95), None);
        assert_eq!(hodges_lehmann(&[2.0], &[1.0], 0.95).unwrap().interval, None);
    }

    #[test]
    fn holm_adjusts_step_down() {
        // By hand (Holm 1979): sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06,
        // 0.04·1 = 0.04 → raised to 0.06 (monotone).
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        let want = [0.03, 0.06, 0.06, 0.02];
        for (a, w) in adj.iter().zip(want) {
            assert!(close(*a, w, 1e-12), "{adj:?}");
        }
        assert_eq!(holm(&[0.6, 0.9]), vec![1.0, 1.0]);
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn unequal_sizes_as_in_ci_five_against_thirty() {
        // y = [1000+7*((i*11)%30) for i in range(30)], x = [1100,1180,1010,1250,1205].
        // scipy: mannwhitneyu(x, y, alternative='greater', method='exact')
        // → U=103.0, p=0.10079104955765296
        let y: Vec<f64> = (0..30)
            .map(|i| 1000.0 + 7.0 * ((i * 11) % 30) as f64)
            .collect();
        let x = [1100.0, 1180.0, 1010.0, 1250.0, 1205.0];
        let r = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(r.u, 103.0);
        assert!(close(r.p, 0.10079104955765296, 1e-12), "{r:?}");
        // scipy.stats._mannwhitneyu._MWU(5, 30).cdf(u): 0.02408 at u = 33, 0.02718 at 34,
        // so k = 34, and the coverage is 1 − 2 · 0.024076492767194858.
        let (k, coverage) = interval_rank(5, 30, 0.95);
        assert_eq!(k, 34);
        assert!(close(coverage, 1.0 - 2.0 * 0.024076492767194858, 1e-12));
        // numpy as in hodges_lehmann_matches_numpy with k = 34:
        // → 1.0495917610765233, 0.9692898272552778, 1.1261682242990656
        let hl = hodges_lehmann(&x, &y, 0.95).unwrap();
        assert!(close(hl.ratio, 1.0495917610765233, 1e-12), "{hl:?}");
        let (lo, hi) = hl.interval.unwrap();
        assert!(close(lo, 0.9692898272552778, 1e-12), "{hl:?}");
        assert!(close(hi, 1.1261682242990656, 1e-12), "{hl:?}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
