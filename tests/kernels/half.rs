//! Every op the models run, on f16 and bf16 tensors (mixed precision), against the float64
//! reference. Inputs are drawn, rounded to the half type on the host (so the reference sees
//! exactly the stored values), and the op's half-precision outputs are compared twice:
//! - bit for bit with the f32 op on the same values, rounded to the half type by the `half`
//!   crate (ops compute in f32 and round each output once: `ops::View`, `ops::Written`);
//! - with the f64 reference at a tolerance from the format's epsilon: the output's rounding is
//!   at most half an ulp (2^-11 relative for f16, 2^-8 for bf16), plus the f32 test's own
//!   tolerance for the arithmetic, plus, where stated, what an intermediate stored in half
//!   (attention's probabilities) adds.

use crate::common::*;
use crate::reference;
use half::{bf16, f16};
use wgtrain::gpu::Category;
use wgtrain::ops::attention::{attention_backward, attention_forward};
use wgtrain::ops::elementwise::{accumulate, gelu_backward, gelu_forward};
use wgtrain::ops::embedding::{embedding_backward, embedding_forward, EmbeddingIndex};
use wgtrain::ops::layernorm::{layernorm_backward, layernorm_forward};
use wgtrain::ops::matmul::{matmul, matmul_backward, matmul_bias_relu, Layout, MatmulDims};
use wgtrain::ops::reduce::{colsum, reduce, Reduction};
use wgtrain::ops::softmax_xent::softmax_xent_scaled;
use wgtrain::rng::Rng;
use wgtrain::{DType, Tensor};

const HALVES: [DType; 2] = [DType::F16, DType::BF16];

/// The largest relative rounding error of one conversion to `dtype` (half an ulp).
fn eps(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2f64.powi(-11),
        _ => 2f64.powi(-8),
    }
}

fn round(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(x).to_f32(),
        _ => bf16::from_f32(x).to_f32(),
    }
}

fn bits(dtype: DType, x: f32) -> u16 {
    match dtype {
        DType::F16 => f16::from_f32(x).to_bits(),
        _ => bf16::from_f32(x).to_bits(),
    }
}

/// A half tensor of `values` rounded to `dtype`, and the rounded values (what it holds).
fn half(dtype: DType, name: &str, shape: &[usize], values: &[f32]) -> (Tensor, Vec<f32>) {
    let b: Vec<u16> = values.iter().map(|&x| bits(dtype, x)).collect();
    let t = Tensor::from_bits16(gpu(), name, shape, dtype, &b, Category::Activations).unwrap();
    (t, values.iter().map(|&x| round(dtype, x)).collect())
}

fn empty(dtype: DType, name: &str, shape: &[usize]) -> Tensor {
    let t = Tensor::empty(gpu(), name, shape, dtype, Category::Activations).unwrap();
    gpu().clear(&t);
    t
}

/// A half tensor's values, widened exactly.
fn read_half(t: &Tensor) -> Vec<f32> {
    let bytes = gpu().read_bytes(t).unwrap();
    let words: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .take(t.numel())
        .collect();
    words
        .iter()
        .map(|&w| match t.dtype() {
            DType::F16 => f16::from_bits(w).to_f32(),
            _ => bf16::from_bits(w).to_f32(),
        })
        .collect()
}

/// The half output equals the f32 op's output rounded once, bit for bit.
#[track_caller]
fn assert_rounded(what: &str, got: &Tensor, f32_result: &[f32]) {
    let dtype = got.dtype();
    let want: Vec<u16> = f32_result.iter().map(|&x| bits(dtype, x)).collect();
    let got_bits: Vec<u16> = read_half(got).iter().map(|&x| bits(dtype, x)).collect();
    assert!(
        got_bits == want,
        "{what} ({}): not the f32 result rounded once",
        dtype.name()
    );
}

/// Against f64: the rounding of the output (rtol eps) on top of the f32 tolerance.
#[track_caller]
fn assert_near(what: &str, got: &Tensor, want: &[f64], atol: f64, rtol: f64) {
    let e = eps(got.dtype());
    let what = format!("{what} ({})", got.dtype().name());
    // 2^-24: f16's smallest subnormal step, where the relative bound stops holding
    assert_close(&what, &read_half(got), want, atol + 6e-8, rtol + e);
}

fn up(values: &[f32], shape: &[usize]) -> Tensor {
    upload("f32 twin", shape, values)
}

#[test]
fn matmul_in_half_precision_matches_the_reference() {
    let mut rng = Rng::new(160);
    for dtype in HALVES {
        for (m, n, k) in [(13, 7, 21), (16, 32, 24), (1, 5, 3)] {
            for layout in [Layout::NN, Layout::NT, Layout::TN] {
                let (ta, tb) = (layout == Layout::TN, layout == Layout::NT);
                let a_shape = if ta { [k, m] } else { [m, k] };
                let b_shape = if tb { [n, k] } else { [k, n] };
                let (a, av) = half(dtype, "a", &a_shape, &rand_vec(&mut rng, m * k));
                let (b, bv) = half(dtype, "b", &b_shape, &rand_vec(&mut rng, k * n));
                let (bias, biasv) = half(dtype, "bias", &[n], &rand_vec(&mut rng, n));
                let d = MatmulDims::new(m, n, k, layout);
                let what = format!("{layout:?} {m}x{n}x{k}");
                let prod = reference::matmul(&to64(&av), &to64(&bv), m, n, k, ta, tb);
                // products of half values are exact in f32; k of them summed in f32
                let atol = 1e-6 * k as f64;

                let c = empty(dtype, "c", &[m, n]);
                matmul(gpu(), d, &a, &b, Some(&bias), &c, false);
                let c32 = zeros("c32", &[m, n]);
                matmul(
                    gpu(),
                    d,
                    &up(&av, &a_shape),
                    &up(&bv, &b_shape),
                    Some(&up(&biasv, &[n])),
                    &c32,
                    false,
                );
                assert_rounded(&what, &c, &read(&c32));
                let want: Vec<f64> = (0..m * n).map(|i| prod[i] + biasv[i % n] as f64).collect();
                assert_near(&what, &c, &want, atol, 0.0);

                // accumulate: C (half) += A·B, the sum in f32 and rounded once
                let (c0, c0v) = half(dtype, "c0", &[m, n], &rand_vec(&mut rng, m * n));
                matmul(gpu(), d, &a, &b, None, &c0, true);
                let want: Vec<f64> = (0..m * n).map(|i| prod[i] + c0v[i] as f64).collect();
                assert_near(&format!("{what} accumulate"), &c0, &want, atol, 0.0);

                // bias + ReLU epilogue
                let r = empty(dtype, "relu", &[m, n]);
                matmul_bias_relu(gpu(), d, &a, &b, &bias, &r);
                let want: Vec<f64> = (0..m * n)
                    .map(|i| (prod[i] + biasv[i % n] as f64).max(0.0))
                    .collect();
                assert_near(&format!("{what} relu"), &r, &want, atol, 0.0);
            }
        }
    }
}

#[test]
fn a_linear_backward_in_half_precision_matches_the_reference() {
    // y = x·Wᵀ + b (NT): dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy, with half gradients
    let mut rng = Rng::new(161);
    for dtype in HALVES {
        let (r, o, i) = (9, 6, 11);
        let (x, xv) = half(dtype, "x", &[r, i], &rand_vec(&mut rng, r * i));
        let (w, wv) = half(dtype, "w", &[o, i], &rand_vec(&mut rng, o * i));
        let (dy, dyv) = half(dtype, "dy", &[r, o], &rand_vec(&mut rng, r * o));
        let (dx, dw, db) = (
            empty(dtype, "dx", &[r, i]),
            empty(dtype, "dw", &[o, i]),
            empty(dtype, "db", &[o]),
        );
        let d = MatmulDims::new(r, o, i, Layout::NT);
        matmul_backward(
            gpu(),
            d,
            &x,
            &w,
            &dy,
            Some(&dx),
            Some(&dw),
            Some(&db),
            false,
        );
        let (x64, w64, dy64) = (to64(&xv), to64(&wv), to64(&dyv));
        let want_dx = reference::matmul(&dy64, &w64, r, i, o, false, false);
        let want_dw = reference::matmul(&dy64, &x64, o, i, r, true, false);
        let want_db: Vec<f64> = (0..o)
            .map(|c| (0..r).map(|j| dy64[j * o + c]).sum())
            .collect();
        assert_near("dx", &dx, &want_dx, 1e-5, 0.0);
        assert_near("dW", &dw, &want_dw, 1e-5, 0.0);
        assert_near("db", &db, &want_db, 1e-5, 0.0);
        let db32 = zeros("db32", &[o]);
        colsum(gpu(), &up(&dyv, &[r, o]), r, o, &db32, false);
        assert_rounded("db", &db, &read(&db32));
    }
}

#[test]
fn gelu_layernorm_and_residuals_in_half_precision_match_the_reference() {
    let mut rng = Rng::new(162);
    for dtype in HALVES {
        for (rows, cols) in [(5, 13), (4, 64)] {
            let n = rows * cols;
            let (x, xv) = half(dtype, "x", &[rows, cols], &rng.uniform_vec(n, -3.0, 3.0));
            let (dout, dv) = half(dtype, "dout", &[rows, cols], &rand_vec(&mut rng, n));
            let x64 = to64(&xv);
            let what = format!("{rows}x{cols}");

            let g = empty(dtype, "gelu", &[rows, cols]);
            gelu_forward(gpu(), &x, &g);
            let g32 = zeros("g32", &[rows, cols]);
            gelu_forward(gpu(), &up(&xv, &[n]), &g32);
            assert_rounded(&format!("gelu {what}"), &g, &read(&g32));
            assert_near(
                &format!("gelu {what}"),
                &g,
                &reference::gelu(&x64),
                1e-6,
                1e-5,
            );
            let dg = empty(dtype, "dgelu", &[rows, cols]);
            gelu_backward(gpu(), &x, &dout, &dg);
            let want = reference::gelu_backward(&x64, &to64(&dv));
            assert_near(&format!("gelu backward {what}"), &dg, &want, 1e-6, 1e-5);

            // a residual add into a half buffer: the sum in f32, rounded once
            let (acc, accv) = half(dtype, "acc", &[rows, cols], &rand_vec(&mut rng, n));
            accumulate(gpu(), &dout, 1.0, &acc);
            let want: Vec<f64> = (0..n).map(|i| accv[i] as f64 + dv[i] as f64).collect();
            assert_near(&format!("accumulate {what}"), &acc, &want, 0.0, 0.0);

            // LayerNorm: half x, gain, bias and output; the statistics stay f32
            let (w, wv) = half(dtype, "w", &[cols], &rng.uniform_vec(cols, 0.5, 1.5));
            let (b, bv) = half(dtype, "b", &[cols], &rand_vec(&mut rng, cols));
            let out = empty(dtype, "ln", &[rows, cols]);
            let (mean, rstd) = (zeros("mean", &[rows]), zeros("rstd", &[rows]));
            layernorm_forward(gpu(), &x, &w, &b, 1e-5, &out, &mean, &rstd);
            let r = reference::layernorm(&x64, &to64(&wv), &to64(&bv), rows, cols, 1e-5);
            assert_near(&format!("layernorm {what}"), &out, &r.out, 1e-5, 1e-5);
            assert_close("layernorm mean", &read(&mean), &r.mean, 1e-6, 1e-6);
            let (dx, dw, db) = (
                empty(dtype, "dx", &[rows, cols]),
                empty(dtype, "dw", &[cols]),
                empty(dtype, "db", &[cols]),
            );
            layernorm_backward(
                gpu(),
                &dout,
                &x,
                &w,
                &mean,
                &rstd,
                &dx,
                &dw,
                &db,
                Some(false),
            );
            let (want_dx, want_dw, want_db) =
                reference::layernorm_backward(&to64(&dv), &x64, &to64(&wv), rows, cols, 1e-5);
            assert_near(&format!("layernorm dx {what}"), &dx, &want_dx, 1e-5, 1e-4);
            assert_near(&format!("layernorm dw {what}"), &dw, &want_dw, 1e-5, 1e-4);
            assert_near(&format!("layernorm db {what}"), &db, &want_db, 1e-5, 1e-4);
        }
    }
}

#[test]
fn softmax_xent_attention_and_embedding_in_half_precision_match_the_reference() {
    let mut rng = Rng::new(163);
    for dtype in HALVES {
        // the loss from half logits, dlogits in half, times a loss scale read from the GPU
        let (rows, vocab) = (7, 37);
        let (logits, lv) = half(
            dtype,
            "logits",
            &[rows, vocab],
            &rng.uniform_vec(rows * vocab, -4.0, 4.0),
        );
        let tg: Vec<u32> = (0..rows).map(|_| rng.below(vocab as u64) as u32).collect();
        let targets =
            Tensor::from_u32(gpu(), "targets", &[rows], &tg, Category::Activations).unwrap();
        let losses = zeros("losses", &[rows]);
        let dlogits = empty(dtype, "dlogits", &[rows, vocab]);
        let mut words = [0.0f32; wgtrain::optim::guard::STATS];
        words[wgtrain::optim::guard::LOSS_SCALE] = 1024.0;
        let stats = upload("stats", &[words.len()], &words);
        let scale = 1.0 / rows as f32;
        softmax_xent_scaled(
            gpu(),
            &logits,
            &targets,
            &losses,
            Some(&dlogits),
            scale,
            Some(&stats),
        )
        .unwrap();
        let (want_l, want_d) =
            reference::softmax_xent(&to64(&lv), &tg, vocab, scale as f64 * 1024.0);
        assert_close(
            "losses from half logits",
            &read(&losses),
            &want_l,
            1e-5,
            1e-5,
        );
        assert_near(
            "scaled dlogits",
            &dlogits,
            &want_d,
            1e-5 * 1024.0 / rows as f64,
            1e-5,
        );

        // attention: half qkv and outputs; the probabilities are stored in half and the
        // backward reads them, which adds up to eps relative per probability: atol 8·eps·max
        let (b, t, c, nh) = (2, 5, 12, 3);
        let (qkv, qv) = half(
            dtype,
            "qkv",
            &[b, t, 3 * c],
            &rng.uniform_vec(b * t * 3 * c, -2.0, 2.0),
        );
        let (att, out) = (
            empty(dtype, "att", &[b, nh, t, t]),
            empty(dtype, "out", &[b, t, c]),
        );
        attention_forward(gpu(), &qkv, nh, &att, &out).unwrap();
        let (want_out, want_att) = reference::attention(&to64(&qv), b, t, c, nh);
        assert_near("attention probabilities", &att, &want_att, 1e-6, 1e-5);
        let max = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let e = eps(dtype);
        assert_near(
            "attention out",
            &out,
            &want_out,
            4.0 * e * max(&want_out),
            1e-5,
        );
        let (dout, dv) = half(dtype, "dout", &[b, t, c], &rand_vec(&mut rng, b * t * c));
        let dpre = zeros("dpre", &[b, nh, t, t]);
        let dqkv = empty(dtype, "dqkv", &[b, t, 3 * c]);
        attention_backward(gpu(), &dout, &qkv, &att, nh, &dpre, &dqkv).unwrap();
        let want = reference::attention_backward(&to64(&qv), &to64(&dv), b, t, c, nh);
        assert_near("attention dqkv", &dqkv, &want, 8.0 * e * max(&want), 1e-5);

        // embedding forward (a gather: exact) and backward (sums per row in f32, rounded once)
        let (vocab, cols, n) = (11, 6, 17);
        let idx: Vec<u32> = (0..n).map(|_| rng.below(vocab as u64) as u32).collect();
        let index = EmbeddingIndex::new(gpu(), "idx", &idx, vocab).unwrap();
        let (table, tv) = half(
            dtype,
            "table",
            &[vocab, cols],
            &rand_vec(&mut rng, vocab * cols),
        );
        let e_out = empty(dtype, "emb", &[n, cols]);
        embedding_forward(gpu(), &index, &table, &e_out);
        assert_near(
            "embedding",
            &e_out,
            &reference::embedding(&idx, &to64(&tv), cols),
            0.0,
            0.0,
        );
        let (dout, dv) = half(dtype, "demb", &[n, cols], &rand_vec(&mut rng, n * cols));
        let dtable = empty(dtype, "dtable", &[vocab, cols]);
        embedding_backward(gpu(), &index, &dout, &dtable, false);
        let want = reference::embedding_backward(&idx, &to64(&dv), vocab, cols);
        assert_near("embedding backward", &dtable, &want, 1e-6, 1e-6);

        // a sum of squares over a half gradient (the gradient norm): f32 result
        let sq = zeros("sq", &[1]);
        reduce(gpu(), &dout, Reduction::SumOfSquares, &sq, 0, false).unwrap();
        let want: f64 = dv.iter().map(|&x| (x as f64).powi(2)).sum();
        assert_close("Σg² of a half gradient", &read(&sq), &[want], 1e-5, 1e-5);
    }
}

/// The GELU epilogues with half-precision storage (as GPUs run a mixed-precision GPT's MLP):
/// each half output is the f32 fused pass's output on the same stored values, rounded once; the
/// GELU reads the pre-activation before its rounding (so these are not the unfused half bits).
#[test]
fn the_gelu_epilogues_in_half_precision_round_the_f32_pass_once() {
    use wgtrain::ops::matmul::{matmul_gelu_grad_with, matmul_gelu_with};
    let kernel = wgtrain::ops::matmul_tune::tuning(gpu()).kernel;
    let mut rng = Rng::new(164);
    for dtype in HALVES {
        for (m, n, k) in [(16, 32, 24), (13, 7, 21)] {
            let what = format!("{m}x{n}x{k}");
            // forward: pre (m, n) = x (m, k)·Wᵀ + b, post = gelu(pre)
            let (x, xv) = half(dtype, "x", &[m, k], &rand_vec(&mut rng, m * k));
            let (w, wv) = half(dtype, "w", &[n, k], &rand_vec(&mut rng, k * n));
            let (bias, biasv) = half(dtype, "bias", &[n], &rand_vec(&mut rng, n));
            let (x32, w32, bias32) = (up(&xv, &[m, k]), up(&wv, &[n, k]), up(&biasv, &[n]));
            let d = MatmulDims::new(m, n, k, Layout::NT);
            let (pre, post) = (empty(dtype, "pre", &[m, n]), empty(dtype, "post", &[m, n]));
            let (pre32, post32) = (zeros("pre32", &[m, n]), zeros("post32", &[m, n]));
            matmul_gelu_with(gpu(), kernel, d, &x, &w, Some(&bias), &pre, &post);
            matmul_gelu_with(gpu(), kernel, d, &x32, &w32, Some(&bias32), &pre32, &post32);
            assert_rounded(&format!("{what} pre-activation"), &pre, &read(&pre32));
            assert_rounded(&format!("{what} gelu"), &post, &read(&post32));
            // backward: dpre (m, k) = (dy (m, n)·W (n, k)) ⊙ gelu'(a pre-activation (m, k))
            let (dy, dyv) = half(dtype, "dy", &[m, n], &rand_vec(&mut rng, m * n));
            let (h, hv) = half(dtype, "h", &[m, k], &rand_vec(&mut rng, m * k));
            let (dy32, h32) = (up(&dyv, &[m, n]), up(&hv, &[m, k]));
            let dx = MatmulDims::new(m, k, n, Layout::NN);
            let (dh, dh32) = (empty(dtype, "dh", &[m, k]), zeros("dh32", &[m, k]));
            matmul_gelu_grad_with(gpu(), kernel, dx, &dy, &w, &h, &dh);
            matmul_gelu_grad_with(gpu(), kernel, dx, &dy32, &w32, &h32, &dh32);
            assert_rounded(&format!("{what} through gelu"), &dh, &read(&dh32));
        }
    }
}
