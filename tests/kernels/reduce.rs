use crate::common::*;
use wgtrain::ops::reduce::{colsum, reduce, reduce_all, reduce_backward, Reduction};
use wgtrain::rng::Rng;

#[test]
fn sums_sums_of_squares_and_l1_norms_match_reference() {
    let mut rng = Rng::new(60);
    // sizes divisible by 4 take the vec4 kernel: one and several workgroups, a short last chunk
    for n in [1, 7, 256, 1000, 1025, 300_000, 300_001, (1 << 20) + 4] {
        let x = rand_vec(&mut rng, n);
        let tx = upload("x", &[n], &x);
        let out = zeros("out", &[4]);
        reduce(gpu(), &tx, Reduction::Sum, &out, 0, false).unwrap();
        reduce(gpu(), &tx, Reduction::SumOfSquares, &out, 1, false).unwrap();
        // accumulate: a global norm over two tensors
        reduce(gpu(), &tx, Reduction::SumOfSquares, &out, 2, false).unwrap();
        reduce(gpu(), &tx, Reduction::SumOfSquares, &out, 2, true).unwrap();
        reduce(gpu(), &tx, Reduction::AbsSum, &out, 3, false).unwrap();
        let s: f64 = x.iter().map(|&v| v as f64).sum();
        let l1: f64 = x.iter().map(|&v| (v as f64).abs()).sum();
        let q: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        // a tree of f32 additions: error about log2(n)·ε·Σ|x|
        let tol = 1e-6 * (n as f64).sqrt().max(1.0);
        assert_close(
            &format!("n {n}"),
            &read(&out),
            &[s, q, 2.0 * q, l1],
            tol,
            1e-6,
        );
    }
}

#[test]
fn one_finishing_pass_over_many_tensors_gives_reduce_in_turns_bits() {
    let mut rng = Rng::new(61);
    // scalar and vec4 first passes, one partial or several per tensor (300_000: five, the last
    // short; 2^20 + 4: seventeen), as a global gradient norm meets them
    let sizes = [7, 256, 300_000, 1, 1025, (1 << 20) + 4, 12];
    let xs: Vec<Vec<f32>> = sizes.iter().map(|&n| rand_vec(&mut rng, n)).collect();
    let ts: Vec<_> = xs
        .iter()
        .zip(sizes)
        .map(|(x, n)| upload("x", &[n], x))
        .collect();
    let refs: Vec<_> = ts.iter().collect();
    for mode in [Reduction::Sum, Reduction::SumOfSquares, Reduction::AbsSum] {
        for accumulate in [false, true] {
            // out[1] holds 0.5 so that accumulating adds to something
            let turns = upload("turns", &[3], &[0.0, 0.5, 0.0]);
            let all = upload("all", &[3], &[0.0, 0.5, 0.0]);
            for (i, t) in ts.iter().enumerate() {
                reduce(gpu(), t, mode, &turns, 1, accumulate || i > 0).unwrap();
            }
            reduce_all(gpu(), &refs, mode, &all, 1, accumulate).unwrap();
            let (a, b) = (read(&turns), read(&all));
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{mode:?}, accumulate {accumulate}: {a:?} against {b:?}"
            );
            // and the value itself: a sum of f32 trees, error about log2(n)·ε·Σ|terms|
            let term = |v: f32| match mode {
                Reduction::SumOfSquares => v as f64 * v as f64,
                Reduction::AbsSum => (v as f64).abs(),
                _ => v as f64,
            };
            let want: f64 = xs.iter().flatten().map(|&v| term(v)).sum::<f64>()
                + if accumulate { 0.5 } else { 0.0 };
            assert_close(&format!("{mode:?}"), &b[1..2], &[want], 1e-5, 1e-5);
        }
    }
}

#[test]
fn non_finite_values_are_counted() {
    let mut x = vec![1.0f32; 5000];
    x[17] = f32::NAN;
    x[4000] = f32::INFINITY;
    x[4999] = f32::NEG_INFINITY;
    let out = zeros("out", &[1]);
    reduce(
        gpu(),
        &upload("x", &[5000], &x),
        Reduction::NonFinite,
        &out,
        0,
        false,
    )
    .unwrap();
    assert_eq!(read(&out), vec![3.0]);
    // the scalar kernel (a size not divisible by 4) counts the same
    reduce(
        gpu(),
        &upload("x", &[4999], &x[..4999]),
        Reduction::NonFinite,
        &out,
        0,
        false,
    )
    .unwrap();
    assert_eq!(read(&out), vec![2.0]);
    reduce(
        gpu(),
        &upload("ok", &[7], &[f32::MAX; 7]),
        Reduction::NonFinite,
        &out,
        0,
        false,
    )
    .unwrap();
    assert_eq!(read(&out), vec![0.0]);
}

#[test]
fn backward_of_sum_and_sum_of_squares() {
    let mut rng = Rng::new(61);
    let n = 1001;
    let x = rand_vec(&mut rng, n);
    let x64 = to64(&x);
    let (tx, dy, dx) = (
        upload("x", &[n], &x),
        upload("dy", &[1], &[0.75]),
        zeros("dx", &[n]),
    );
    for (mode, f) in [
        (
            Reduction::Sum,
            (|v: &[f64]| v.iter().sum::<f64>()) as fn(&[f64]) -> f64,
        ),
        (Reduction::SumOfSquares, |v: &[f64]| {
            v.iter().map(|a| a * a).sum::<f64>()
        }),
    ] {
        let fd: Vec<f64> = finite_diff(&x64, 1e-6, f)
            .iter()
            .map(|g| 0.75 * g)
            .collect();
        let analytic: Vec<f64> = match mode {
            Reduction::Sum => vec![0.75; n],
            _ => x64.iter().map(|v| 2.0 * v * 0.75).collect(),
        };
        assert_close64(
            &format!("{mode:?} reference vs fd"),
            &analytic,
            &fd,
            1e-7,
            1e-6,
        );
        reduce_backward(gpu(), &tx, mode, &dy, &dx);
        assert_close(
            &format!("{mode:?} backward"),
            &read(&dx),
            &analytic,
            0.0,
            1e-7,
        );
    }
}

#[test]
fn colsum_is_the_bias_gradient() {
    let mut rng = Rng::new(62);
    // columns in multiples of 4 are summed four at a time (colsum4)
    for &(rows, cols) in &[
        (1, 1),
        (7, 33),
        (129, 17),
        (1000, 3),
        (2, 4),
        (9, 36),
        (300, 256),
    ] {
        let x = rand_vec(&mut rng, rows * cols);
        let want: Vec<f64> = (0..cols)
            .map(|c| (0..rows).map(|r| x[r * cols + c] as f64).sum())
            .collect();
        let out = zeros("out", &[cols]);
        colsum(
            gpu(),
            &upload("x", &[rows, cols], &x),
            rows,
            cols,
            &out,
            false,
        );
        assert_close(
            &format!("{rows}x{cols}"),
            &read(&out),
            &want,
            1e-6 * rows as f64,
            0.0,
        );
    }
}

#[test]
fn colsum_four_columns_at_a_time_matches_one_at_a_time_bit_for_bit() {
    let mut rng = Rng::new(63);
    let rows = 50;
    // the same 36 columns, summed as a (50, 36) matrix (colsum4) and inside a (50, 37) one
    let wide = rand_vec(&mut rng, rows * 37);
    let narrow: Vec<f32> = wide
        .chunks(37)
        .flat_map(|row| row[..36].iter().copied())
        .collect();
    let (a, b) = (zeros("a", &[36]), zeros("b", &[37]));
    let start = rand_vec(&mut rng, 37);
    a.write_f32(gpu(), &start[..36]);
    b.write_f32(gpu(), &start);
    colsum(
        gpu(),
        &upload("x", &[rows, 36], &narrow),
        rows,
        36,
        &a,
        true,
    );
    colsum(gpu(), &upload("x", &[rows, 37], &wide), rows, 37, &b, true);
    let (a, b) = (read(&a), read(&b));
    assert_eq!(a, b[..36].to_vec());
    // and it accumulated: the sums start from `start`
    let want: Vec<f64> = (0..36)
        .map(|c| start[c] as f64 + (0..rows).map(|r| narrow[r * 36 + c] as f64).sum::<f64>())
        .collect();
    assert_close("accumulated", &a, &want, 1e-5, 0.0);
}
