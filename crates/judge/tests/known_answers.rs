//! Known answers of the statistics against scipy 1.17 (the scipy call that produced each
//! number is in the comment above it; the tests never call Python).

use std::collections::BTreeMap;

use modelwatch_judge::stats::{
    benjamini_hochberg, chi_square_gof, fisher_exact, mann_whitney_hist, two_proportion,
};

fn close(actual: f64, expected: f64) {
    let tol = 1e-9 * expected.abs().max(1e-300);
    assert!(
        (actual - expected).abs() <= tol || actual == expected,
        "actual {actual:e}, expected {expected:e}"
    );
}

/// `scipy.stats.mannwhitneyu(expand(x), expand(y), alternative=..., method="asymptotic",
/// use_continuity=True)`, where `expand` repeats each value by its count.
#[test]
fn mann_whitney_matches_scipy_with_ties() {
    let r = mann_whitney_hist(&[(1, 2), (3, 4)], &[(1, 3), (2, 3)]).expect("data");
    close(r.u, 27.0);
    close(r.p_two_sided, 0.14705724728090883);
    close(r.p_greater, 0.07352862364045441);
    close(r.p_less, 0.9474475585050104);

    let x = [(100, 5), (200, 7), (300, 3), (450, 2)];
    let y = [(100, 9), (200, 4), (250, 6), (300, 1)];
    let r = mann_whitney_hist(&x, &y).expect("data");
    close(r.u, 198.0);
    close(r.p_two_sided, 0.38082357234226427);
    close(r.p_greater, 0.19041178617113214);
    close(r.p_less, 0.8181264486356673);

    // x: (1000 + 37 i, (7 i) % 13 + 1); y: (1000 + 37 i + (37 when i % 3 == 0, else 0),
    // (5 i) % 11 + 2) with equal values merged; i in 0..60.
    let x: Vec<(u32, u64)> =
        (0..60u32).map(|i| (1000 + 37 * i, u64::from((i * 7) % 13 + 1))).collect();
    let mut ym = BTreeMap::new();
    for i in 0..60u32 {
        let v = 1000 + 37 * i + if i % 3 == 0 { 37 } else { 0 };
        *ym.entry(v).or_insert(0u64) += u64::from((i * 5) % 11 + 2);
    }
    let y: Vec<(u32, u64)> = ym.into_iter().collect();
    let r = mann_whitney_hist(&x, &y).expect("data");
    close(r.u, 86798.5);
    close(r.p_two_sided, 0.9224768780075931);
    close(r.p_greater, 0.5388755398079287);
    close(r.p_less, 0.4612384390037966);

    // Two large tie groups and a tiny p-value: x = 100 x5000, 200 x3000; y = 100 x3000,
    // 200 x5000.
    let r =
        mann_whitney_hist(&[(100, 5000), (200, 3000)], &[(100, 3000), (200, 5000)]).expect("data");
    close(r.u, 24_000_000.0);
    close(r.p_two_sided, 1.85301234335857e-219);
    close(r.p_less, 9.26506171679285e-220);
    close(r.p_greater, 1.0);

    assert!(mann_whitney_hist(&[], &[(1, 1)]).is_none());
    assert!(mann_whitney_hist(&[(5, 3)], &[(5, 4)]).is_none(), "all tied: no variance");
}

/// `scipy.stats.fisher_exact([[a, b], [c, d]], alternative=...)`: (odds ratio, two-sided,
/// greater, less).
#[test]
fn fisher_exact_matches_scipy() {
    type Case = ((u64, u64, u64, u64), f64, f64, f64, f64);
    let cases: [Case; 8] = [
        ((3, 1, 1, 3), 9.0, 0.48571428571428565, 0.24285714285714283, 0.9857142857142858),
        ((8, 2, 1, 5), 20.0, 0.034965034965034975, 0.024475524475524483, 0.9991258741258742),
        ((0, 10, 5, 5), 0.0, 0.032507739938080496, 1.0, 0.016253869969040248),
        (
            (12, 988, 30, 970),
            0.39271255060728744,
            0.007287953507168595,
            0.9986954758654031,
            0.0036439767535842976,
        ),
        (
            (2, 7, 8, 2),
            0.07142857142857142,
            0.02301413756522116,
            0.9990149169715733,
            0.01852172595206651,
        ),
        (
            (40, 1960, 20, 1980),
            2.020408163265306,
            0.01280639590912986,
            0.00640319795456493,
            0.9970789481588098,
        ),
        ((1, 0, 0, 1), f64::INFINITY, 1.0, 0.5, 1.0),
        (
            (3, 1997, 25, 1975),
            3.0 * 1975.0 / (1997.0 * 25.0),
            2.587419221918128e-05,
            f64::NAN,
            1.293709610959064e-05,
        ),
    ];
    for ((a, b, c, d), or, two, greater, less) in cases {
        let r = fisher_exact(a, b, c, d);
        close(r.odds_ratio, or);
        close(r.p_two_sided, two);
        if !greater.is_nan() {
            close(r.p_greater, greater);
        }
        close(r.p_less, less);
    }
    let empty = fisher_exact(0, 0, 3, 4);
    assert!(empty.odds_ratio.is_nan());
    assert_eq!(empty.p_two_sided, 1.0);
}

/// Pooled z by hand with `scipy.stats.norm.sf`; the two-sided p-value equals
/// `scipy.stats.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False).pvalue`
/// (0.001401301580960214 and 1.5458318745180586e-06).
#[test]
fn two_proportion_matches_scipy() {
    let r = two_proportion(30, 1000, 10, 1000).expect("defined");
    close(r.z, 3.1943828249996993);
    close(r.p_two_sided, 0.0014013015809602137);
    close(r.p_greater, 0.0007006507904801069);
    close(r.p_less, 0.9992993492095199);
    let r = two_proportion(45, 1500, 120, 9000).expect("defined");
    close(r.z, 4.805217729691347);
    close(r.p_two_sided, 1.545831874518051e-06);
    close(r.p_greater, 7.729159372590255e-07);
    assert!(two_proportion(0, 10, 0, 10).is_none());
}

/// `scipy.stats.chisquare(observed, f_exp=np.array(probs) * sum(observed))`.
#[test]
fn chi_square_gof_matches_scipy() {
    let r = chi_square_gof(&[850, 150], &[0.9, 0.1]).expect("valid");
    close(r.stat, 27.77777777777778);
    close(r.p, 1.3608022911357298e-07);
    let r = chi_square_gof(&[8960, 1040], &[0.9, 0.1]).expect("valid");
    close(r.stat, 1.777777777777778);
    close(r.p, 0.18242243945173192);
    let r = chi_square_gof(&[30, 50, 20], &[0.3, 0.5, 0.2]).expect("valid");
    assert!(r.stat.abs() < 1e-12);
    close(r.p, 1.0);
    let r = chi_square_gof(&[12, 30, 58], &[0.2, 0.3, 0.5]).expect("valid");
    close(r.stat, 4.48);
    close(r.p, 0.10645850437925283);
    assert_eq!(r.dof, 2);
}

/// `scipy.stats.false_discovery_control(ps)` (method "bh").
#[test]
fn benjamini_hochberg_matches_scipy() {
    let ps = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216];
    let expected = [0.01, 0.04, 0.084, 0.084, 0.084, 0.1, 0.1057142857142857, 0.216, 0.216, 0.216];
    for (a, e) in benjamini_hochberg(&ps).into_iter().zip(expected) {
        close(a, e);
    }
    let ps = [0.5, 0.01, 0.03, 0.2, 0.0001, 0.04];
    let expected = [0.5, 0.03, 0.06, 0.24, 0.0006000000000000001, 0.06];
    for (a, e) in benjamini_hochberg(&ps).into_iter().zip(expected) {
        close(a, e);
    }
    assert!(benjamini_hochberg(&[]).is_empty());
}
