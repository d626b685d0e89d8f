use crate::common::*;
use crate::reference;
use wgtrain::ops::matmul::{matmul, matmul_backward, Layout, MatmulDims};
use wgtrain::rng::Rng;

/// Storage shapes of a and b for a layout.
fn shapes(d: &MatmulDims) -> (Vec<usize>, Vec<usize>) {
    let MatmulDims {
        batch,
        m,
        n,
        k,
        layout,
    } = *d;
    match layout {
        Layout::NN => (vec![batch, m, k], vec![batch, k, n]),
        Layout::NT => (vec![batch, m, k], vec![batch, n, k]),
        Layout::TN => (vec![batch, k, m], vec![batch, k, n]),
    }
}

fn flags(layout: Layout) -> (bool, bool) {
    (layout == Layout::TN, layout == Layout::NT)
}

/// Reference C for every batch.
fn reference_matmul(d: &MatmulDims, a: &[f64], b: &[f64]) -> Vec<f64> {
    let (ta, tb) = flags(d.layout);
    (0..d.batch)
        .flat_map(|i| {
            reference::matmul(
                &a[i * d.m * d.k..(i + 1) * d.m * d.k],
                &b[i * d.k * d.n..(i + 1) * d.k * d.n],
                d.m,
                d.n,
                d.k,
                ta,
                tb,
            )
        })
        .collect()
}

/// Analytic gradients of <C, dc> with respect to a and b (storage layouts): for each product term
/// op(A)(i,kk)·op(B)(kk,j)·dc(i,j), written as plain loops independent of the GPU's formulas.
fn reference_backward(d: &MatmulDims, a: &[f64], b: &[f64], dc: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let MatmulDims {
        batch,
        m,
        n,
        k,
        layout,
    } = *d;
    let (ta, tb) = flags(layout);
    let ai = |bi: usize, i: usize, kk: usize| bi * m * k + if ta { kk * m + i } else { i * k + kk };
    let bi_ =
        |bi: usize, kk: usize, j: usize| bi * k * n + if tb { j * k + kk } else { kk * n + j };
    let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let g = dc[bi * m * n + i * n + j];
                for kk in 0..k {
                    da[ai(bi, i, kk)] += g * b[bi_(bi, kk, j)];
                    db[bi_(bi, kk, j)] += g * a[ai(bi, i, kk)];
                }
            }
        }
    }
    (da, db)
}

// f32 sums of k products of values in [-1, 1]: rounding error grows about like sqrt(k)·ε·k in the
// worst case; 2e-6·k bounds it for the sizes here with margin, and is 100x tighter than any
// indexing mistake would produce.
fn atol(k: usize) -> f64 {
    2e-6 * (k as f64).max(1.0)
}

const AWKWARD: [usize; 6] = [1, 7, 17, 33, 65, 129];

#[test]
fn forward_matches_f64_reference_in_every_layout_on_awkward_shapes() {
    let mut rng = Rng::new(1);
    let layouts = [Layout::NN, Layout::NT, Layout::TN];
    let mut cases = vec![];
    for (i, &m) in AWKWARD.iter().enumerate() {
        // every size in every role, without the full cube
        let n = AWKWARD[(i + 2) % AWKWARD.len()];
        let k = AWKWARD[(i + 4) % AWKWARD.len()];
        cases.push((1, m, n, k));
    }
    cases.extend([(3, 7, 17, 33), (2, 1, 1, 1), (5, 33, 7, 65)]);
    // multiples of 4 take the vec4 path: 8x8 blocks with edges at 4 mod 8 and whole tiles
    cases.extend([
        (1, 4, 4, 4),
        (2, 12, 20, 36),
        (1, 68, 132, 8),
        (3, 64, 64, 64),
        (1, 132, 4, 100),
    ]);
    for &(batch, m, n, k) in &cases {
        for layout in layouts {
            let d = MatmulDims::batched(batch, m, n, k, layout);
            let (sa, sb) = shapes(&d);
            let a = rand_vec(&mut rng, batch * m * k);
            let b = rand_vec(&mut rng, batch * k * n);
            let bias = rand_vec(&mut rng, n);
            let (ta, tb, tbias) = (
                upload("a", &sa, &a),
                upload("b", &sb, &b),
                upload("bias", &[n], &bias),
            );
            let c = zeros("c", &[batch, m, n]);
            let want = reference_matmul(&d, &to64(&a), &to64(&b));
            let what = format!("{layout:?} batch {batch} m {m} n {n} k {k}");

            matmul(gpu(), d, &ta, &tb, None, &c, false);
            assert_close(&what, &read(&c), &want, atol(k), 0.0);

            matmul(gpu(), d, &ta, &tb, Some(&tbias), &c, false);
            let with_bias: Vec<f64> = want
                .iter()
                .enumerate()
                .map(|(i, w)| w + bias[i % n] as f64)
                .collect();
            assert_close(
                &format!("{what} + bias"),
                &read(&c),
                &with_bias,
                atol(k),
                0.0,
            );

            matmul(gpu(), d, &ta, &tb, None, &c, true);
            let twice: Vec<f64> = with_bias.iter().zip(&want).map(|(x, y)| x + y).collect();
            assert_close(
                &format!("{what} accumulate"),
                &read(&c),
                &twice,
                atol(k),
                0.0,
            );
        }
    }
}

#[test]
fn backward_matches_reference_and_reference_matches_finite_differences() {
    let mut rng = Rng::new(2);
    for layout in [Layout::NN, Layout::NT, Layout::TN] {
        for &(batch, m, n, k) in &[
            (1, 7, 17, 33),
            (2, 17, 1, 7),
            (1, 65, 33, 17),
            (2, 12, 20, 36),
            (1, 20, 8, 44),
        ] {
            let d = MatmulDims::batched(batch, m, n, k, layout);
            let (sa, sb) = shapes(&d);
            let a = rand_vec(&mut rng, batch * m * k);
            let b = rand_vec(&mut rng, batch * k * n);
            let dc = rand_vec(&mut rng, batch * m * n);
            let (a64, b64, dc64) = (to64(&a), to64(&b), to64(&dc));

            // Reference gradients by finite differences of <C(a, b), dc>, exact for a bilinear map.
            let f_a = |x: &[f64]| dot(&reference_matmul(&d, x, &b64), &dc64);
            let f_b = |x: &[f64]| dot(&reference_matmul(&d, &a64, x), &dc64);
            let da_fd = finite_diff(&a64, 1e-3, f_a);
            let db_fd = finite_diff(&b64, 1e-3, f_b);
            let (da_ref, db_ref) = reference_backward(&d, &a64, &b64, &dc64);
            assert_close64(
                "reference da vs finite differences",
                &da_ref,
                &da_fd,
                1e-8,
                1e-8,
            );
            assert_close64(
                "reference db vs finite differences",
                &db_ref,
                &db_fd,
                1e-8,
                1e-8,
            );
            let dbias_ref: Vec<f64> = (0..n)
                .map(|j| (0..batch * m).map(|r| dc64[r * n + j]).sum())
                .collect();

            let (ta, tb, tdc) = (
                upload("a", &sa, &a),
                upload("b", &sb, &b),
                upload("dc", &[batch, m, n], &dc),
            );
            let (da, db, dbias) = (zeros("da", &sa), zeros("db", &sb), zeros("dbias", &[n]));
            matmul_backward(
                gpu(),
                d,
                &ta,
                &tb,
                &tdc,
                Some(&da),
                Some(&db),
                Some(&dbias),
                false,
            );
            let what = format!("{layout:?} batch {batch} m {m} n {n} k {k}");
            assert_close(
                &format!("{what} da"),
                &read(&da),
                &da_ref,
                atol(n) + 1e-7,
                1e-6,
            );
            assert_close(
                &format!("{what} db"),
                &read(&db),
                &db_ref,
                atol(batch * m) + 1e-7,
                1e-6,
            );
            assert_close(
                &format!("{what} dbias"),
                &read(&dbias),
                &dbias_ref,
                atol(batch * m),
                0.0,
            );

            // accumulate adds to what is there
            matmul_backward(
                gpu(),
                d,
                &ta,
                &tb,
                &tdc,
                Some(&da),
                None,
                Some(&dbias),
                true,
            );
            let da2: Vec<f64> = da_ref.iter().map(|x| 2.0 * x).collect();
            let dbias2: Vec<f64> = dbias_ref.iter().map(|x| 2.0 * x).collect();
            assert_close(
                &format!("{what} da accumulated"),
                &read(&da),
                &da2,
                2.0 * atol(n) + 1e-7,
                1e-6,
            );
            assert_close(
                &format!("{what} dbias accumulated"),
                &read(&dbias),
                &dbias2,
                2.0 * atol(batch * m),
                0.0,
            );
        }
    }
}

#[test]
fn matmul_is_deterministic() {
    let mut rng = Rng::new(3);
    let d = MatmulDims::new(65, 129, 33, Layout::NT);
    let (sa, sb) = shapes(&d);
    let a = upload("a", &sa, &rand_vec(&mut rng, 65 * 33));
    let b = upload("b", &sb, &rand_vec(&mut rng, 129 * 33));
    let (c1, c2) = (zeros("c1", &[65, 129]), zeros("c2", &[65, 129]));
    matmul(gpu(), d, &a, &b, None, &c1, false);
    matmul(gpu(), d, &a, &b, None, &c2, false);
    let (r1, r2) = (read(&c1), read(&c2));
    assert!(r1.iter().zip(&r2).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// Every kernel the autotune may pick on this adapter (on a CPU or a GPU): the blocked one first.
fn candidates() -> Vec<wgtrain::ops::matmul_tune::MatmulKernel> {
    use wgtrain::ops::matmul_tune::{
        subgroups_usable, MatmulKernel, CPU_TUNE, SUBGROUP_TILES, TILED_TILES,
    };
    if gpu().info().name.contains("llvmpipe") {
        assert!(subgroups_usable(gpu()), "lavapipe offers 8-lane subgroups");
    }
    let mut candidates = vec![MatmulKernel::Blocked];
    if subgroups_usable(gpu()) {
        candidates.extend(
            SUBGROUP_TILES.map(|(row_groups, col_groups)| MatmulKernel::Subgroup {
                row_groups,
                col_groups,
            }),
        );
        // the tile the autotune offers reading A and B through operand textures (the other
        // tiles' texture forms are the same source with other constants; compiling all of them
        // on llvmpipe took 2.5 minutes)
        candidates.extend(CPU_TUNE);
    }
    // the workgroup-memory tiled kernel, for GPUs, validated here on whatever adapter runs the
    // tests: K over several shared slices with a partial last one (36, 100 at BK 16; 12 at BK 8),
    // M and N past one 128-wide tile, and ragged edges
    candidates.extend(TILED_TILES.map(|((rows, cols), _)| MatmulKernel::Tiled { rows, cols }));
    candidates
}

/// Every kernel the autotune may pick (on a CPU or a GPU) gives the f64 reference's answer and
/// exactly the blocked kernel's bits (same operations in the same order), with bias and with
/// accumulate, in every layout, on whole tiles, on ragged edges, and on dims that are not
/// multiples of 4 (which every kernel runs on zero-padded copies).
#[test]
fn every_autotune_candidate_agrees_with_the_reference_and_bit_for_bit() {
    use wgtrain::ops::matmul::{matmul_bias_relu_with, matmul_with};
    let candidates = candidates();
    let mut rng = Rng::new(11);
    let cases = [
        (1, 4, 4, 4),
        (2, 12, 20, 36),
        (1, 68, 132, 8),
        (1, 40, 72, 12),
        (3, 64, 64, 64),
        (1, 132, 4, 100),
        // not multiples of 4: M, N or K alone, and all three, batched or not
        (1, 1, 1, 1),
        (2, 7, 17, 33),
        (1, 33, 10, 65),
        (1, 70, 130, 9),
        (3, 5, 7, 3),
        (1, 10, 36, 12),
        (1, 12, 10, 8),
        (2, 8, 12, 6),
    ];
    for (batch, m, n, k) in cases {
        for layout in [Layout::NN, Layout::NT, Layout::TN] {
            let d = MatmulDims::batched(batch, m, n, k, layout);
            let (sa, sb) = shapes(&d);
            let a = rand_vec(&mut rng, batch * m * k);
            let b = rand_vec(&mut rng, batch * k * n);
            let bias = rand_vec(&mut rng, n);
            let start = rand_vec(&mut rng, batch * m * n);
            let (ta, tb, tbias) = (
                upload("a", &sa, &a),
                upload("b", &sb, &b),
                upload("bias", &[n], &bias),
            );
            let want = reference_matmul(&d, &to64(&a), &to64(&b));
            let with_bias: Vec<f64> = want
                .iter()
                .enumerate()
                .map(|(i, w)| w + bias[i % n] as f64)
                .collect();
            let relu: Vec<f64> = with_bias.iter().map(|v| v.max(0.0)).collect();
            let accumulated: Vec<f64> = want
                .iter()
                .zip(&start)
                .map(|(w, s)| w + *s as f64)
                .collect();
            let mut blocked: Option<[Vec<f32>; 4]> = None;
            for &kernel in &candidates {
                let what = format!("{kernel} {layout:?} batch {batch} m {m} n {n} k {k}");
                let c = zeros("c", &[batch, m, n]);
                matmul_with(gpu(), kernel, d, &ta, &tb, None, &c, false);
                let plain = read(&c);
                assert_close(&what, &plain, &want, atol(k), 0.0);
                matmul_with(gpu(), kernel, d, &ta, &tb, Some(&tbias), &c, false);
                let biased = read(&c);
                assert_close(&format!("{what} + bias"), &biased, &with_bias, atol(k), 0.0);
                matmul_bias_relu_with(gpu(), kernel, d, &ta, &tb, &tbias, &c);
                let relued = read(&c);
                assert_close(
                    &format!("{what} + bias, ReLU"),
                    &relued,
                    &relu,
                    atol(k),
                    0.0,
                );
                assert!(
                    relued
                        .iter()
                        .zip(&biased)
                        .all(|(r, b)| r.to_bits() == b.max(0.0).to_bits()),
                    "{what}: the fused ReLU is max(A·B + bias, 0) of the same sums"
                );
                let c = upload("c", &[batch, m, n], &start);
                matmul_with(gpu(), kernel, d, &ta, &tb, None, &c, true);
                let acc = read(&c);
                assert_close(
                    &format!("{what} accumulate"),
                    &acc,
                    &accumulated,
                    atol(k),
                    0.0,
                );
                let outs = [plain, biased, relued, acc];
                match &blocked {
                    None => blocked = Some(outs),
                    Some(r) => {
                        for (got, want) in outs.iter().zip(r) {
                            assert!(
                                got.iter()
                                    .zip(want)
                                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                                "{what}: not bit-identical to the blocked kernel"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The GELU epilogues (a Linear layer and the GELU after it; the gradient through a GELU from
/// the layer after it) on every kernel family the autotune may pick, against the f64 reference
/// and bit for bit against the matmul followed by the elementwise GELU kernels (the same
/// expressions), in every layout, batched, on ragged dims (padded copies, the GELU's output
/// cropped and its input padded), with and without a bias. One tile per family: the tiles differ
/// in their product loops, tested above, and share the stores the GELU is in.
#[test]
fn the_gelu_epilogues_give_the_unfused_bits_on_every_kernel() {
    use wgtrain::ops::elementwise::{gelu_backward, gelu_forward};
    use wgtrain::ops::matmul::{matmul_gelu_grad_with, matmul_gelu_with, matmul_with};
    use wgtrain::ops::matmul_tune::MatmulKernel;
    let mut families: Vec<MatmulKernel> = vec![];
    for kernel in candidates() {
        let family = std::mem::discriminant(&kernel);
        if !families.iter().any(|k| std::mem::discriminant(k) == family) {
            families.push(kernel);
        }
    }
    let mut rng = Rng::new(13);
    for (batch, m, n, k) in [(1, 12, 20, 36), (2, 8, 64, 12), (1, 7, 10, 9), (3, 5, 6, 4)] {
        for layout in [Layout::NN, Layout::NT, Layout::TN] {
            let d = MatmulDims::batched(batch, m, n, k, layout);
            let (sa, sb) = shapes(&d);
            // inputs of a size that reaches GELU's curved part
            let scale = |v: Vec<f32>| v.into_iter().map(|x| 2.0 * x).collect::<Vec<_>>();
            let a = scale(rand_vec(&mut rng, batch * m * k));
            let b = rand_vec(&mut rng, batch * k * n);
            let bias = rand_vec(&mut rng, n);
            let pre = scale(rand_vec(&mut rng, batch * m * n));
            let (ta, tb, tbias, tpre) = (
                upload("a", &sa, &a),
                upload("b", &sb, &b),
                upload("bias", &[n], &bias),
                upload("pre", &[batch, m, n], &pre),
            );
            let product = reference_matmul(&d, &to64(&a), &to64(&b));
            let with_bias: Vec<f64> = product
                .iter()
                .enumerate()
                .map(|(i, w)| w + bias[i % n] as f64)
                .collect();
            let through = reference::gelu_backward(&to64(&pre), &product);
            for &kernel in &families {
                let what = format!("{kernel} {layout:?} batch {batch} m {m} n {n} k {k}");
                let shape = [batch, m, n];
                for bias in [None, Some(&tbias)] {
                    let what = format!("{what}, bias {}", bias.is_some());
                    let (c, post) = (zeros("c", &shape), zeros("post", &shape));
                    matmul_gelu_with(gpu(), kernel, d, &ta, &tb, bias, &c, &post);
                    let want = if bias.is_some() { &with_bias } else { &product };
                    // GELU's slope is below 1.13: the product's error, plus tanh's
                    let post_want = reference::gelu(want);
                    assert_close(
                        &format!("{what}: gelu"),
                        &read(&post),
                        &post_want,
                        1.2 * atol(k),
                        1e-5,
                    );
                    let (c2, post2) = (zeros("c2", &shape), zeros("post2", &shape));
                    matmul_with(gpu(), kernel, d, &ta, &tb, bias, &c2, false);
                    gelu_forward(gpu(), &c2, &post2);
                    assert_bits(&format!("{what}: pre-activation"), &read(&c), &read(&c2));
                    assert_bits(&format!("{what}: gelu"), &read(&post), &read(&post2));
                }
                let dpre = zeros("dpre", &shape);
                matmul_gelu_grad_with(gpu(), kernel, d, &ta, &tb, &tpre, &dpre);
                assert_close(
                    &format!("{what}: through gelu"),
                    &read(&dpre),
                    &through,
                    1.2 * atol(k),
                    1e-5,
                );
                let (dpost, dpre2) = (zeros("dpost", &shape), zeros("dpre2", &shape));
                matmul_with(gpu(), kernel, d, &ta, &tb, None, &dpost, false);
                gelu_backward(gpu(), &tpre, &dpost, &dpre2);
                assert_bits(
                    &format!("{what}: through gelu"),
                    &read(&dpre),
                    &read(&dpre2),
                );
            }
        }
    }
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let diff = got
        .iter()
        .zip(want)
        .position(|(g, w)| g.to_bits() != w.to_bits());
    assert!(
        diff.is_none(),
        "{what}: element {diff:?} differs: {got:?} vs {want:?}"
    );
}

/// The f16 matmul (A and B stored as f16, f32 products and sums) against an f64 product of the
/// same f16 values, in every layout, where the adapter has SHADER_F16 and subgroups; elsewhere a
/// clear error.
#[test]
fn f16_matmul_matches_the_reference_of_its_f16_inputs() {
    use half::f16;
    use wgtrain::ops::matmul::matmul_f16;
    use wgtrain::ops::matmul_tune::subgroups_usable;
    let supported =
        gpu().features().contains(wgpu::Features::SHADER_F16) && subgroups_usable(gpu());
    if gpu().info().name.contains("llvmpipe") {
        assert!(supported, "lavapipe offers SHADER_F16 and subgroups");
    }
    let mut rng = Rng::new(12);
    for (batch, m, n, k) in [(1, 4, 4, 4), (2, 36, 68, 20), (1, 64, 32, 100)] {
        for layout in [Layout::NN, Layout::NT, Layout::TN] {
            let d = MatmulDims::batched(batch, m, n, k, layout);
            let (sa, sb) = shapes(&d);
            let to16 = |v: Vec<f32>| v.into_iter().map(f16::from_f32).collect::<Vec<_>>();
            let (a, b) = (
                to16(rand_vec(&mut rng, batch * m * k)),
                to16(rand_vec(&mut rng, batch * k * n)),
            );
            let f64s = |v: &[f16]| v.iter().map(|x| x.to_f64()).collect::<Vec<_>>();
            let want = reference_matmul(&d, &f64s(&a), &f64s(&b));
            let cat = wgtrain::Category::Activations;
            let ta = wgtrain::Tensor::from_f16(gpu(), "a", &sa, &a, cat).unwrap();
            let tb = wgtrain::Tensor::from_f16(gpu(), "b", &sb, &b, cat).unwrap();
            let c = zeros("c", &[batch, m, n]);
            let r = matmul_f16(gpu(), d, &ta, &tb, None, &c, false);
            if !supported {
                assert!(r.unwrap_err().to_string().contains("f16 matmul"));
                return;
            }
            r.unwrap();
            let what = format!("f16 {layout:?} batch {batch} m {m} n {n} k {k}");
            assert_close(&what, &read(&c), &want, atol(k), 0.0);
        }
    }
}

/// A·Bᵀ of one to four rows runs on `gemv` (a token decoded at a time); each of its outputs is
/// the same fma chain as the block kernels', so its rows are bit for bit those of a taller
/// product on the block kernels (rows are independent), with a bias, a ReLU or accumulating.
#[test]
fn few_row_products_on_gemv_give_the_block_kernels_bits() {
    use wgtrain::ops::matmul::{matmul, matmul_bias_relu};
    let mut rng = Rng::new(12);
    for (m, n, k) in [(1, 49, 64), (2, 8, 4), (3, 130, 36), (4, 5, 576)] {
        let tall = 12;
        let a = rand_vec(&mut rng, tall * k);
        let b = rand_vec(&mut rng, n * k);
        let bias = rand_vec(&mut rng, n);
        let start = rand_vec(&mut rng, tall * n);
        let (tb, tbias) = (upload("b", &[n, k], &b), upload("bias", &[n], &bias));
        let run = |rows: usize| -> Vec<Vec<f32>> {
            let d = MatmulDims::new(rows, n, k, Layout::NT);
            let ta = upload("a", &[rows, k], &a[..rows * k]);
            let c = zeros("c", &[rows, n]);
            matmul(gpu(), d, &ta, &tb, None, &c, false);
            let plain = read(&c);
            matmul(gpu(), d, &ta, &tb, Some(&tbias), &c, false);
            let biased = read(&c);
            matmul_bias_relu(gpu(), d, &ta, &tb, &tbias, &c);
            let relu = read(&c);
            let c = upload("c", &[rows, n], &start[..rows * n]);
            matmul(gpu(), d, &ta, &tb, None, &c, true);
            vec![plain, biased, relu, read(&c)]
        };
        let (small, big) = (run(m), run(tall));
        for (i, (s, b)) in small.iter().zip(&big).enumerate() {
            assert_bits(&format!("m {m} n {n} k {k} form {i}"), s, &b[..m * n]);
        }
        let want = reference_matmul(
            &MatmulDims::new(m, n, k, Layout::NT),
            &to64(&a[..m * k]),
            &to64(&b),
        );
        assert_close("gemv vs f64", &small[0], &want, atol(k), 0.0);
    }
}
