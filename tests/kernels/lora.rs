//! A LoRA adapter on a Linear layer: forward and backward (A, B and input gradients) against the
//! f64 reference, whose own gradients are checked by central finite differences; the frozen base
//! weight gets no gradient; merging folds scale·B·A into W; an adapter over a quantized weight
//! trains as over its dequantized twin.

use crate::common::*;
use crate::reference;
use wgtrain::nn::linear::Linear;
use wgtrain::nn::lora::{LoraAdapter, LoraConfig};
use wgtrain::nn::Build;
use wgtrain::rng::Rng;

const DIMS: (usize, usize, usize, usize) = (6, 12, 10, 3); // rows, in, out, r

fn layer(rng: &mut Rng) -> (Linear, f64) {
    let (_, n_in, n_out, _) = DIMS;
    // the base frozen, as LoRA trains it
    let base = Build::new(gpu()).frozen(&["l.weight".into(), "l.bias".into()]);
    let mut l = Linear::new(&base, "l", n_in, n_out, true, 0.5, rng).unwrap();
    let config = LoraConfig {
        r: DIMS.3,
        alpha: 6.0,
        ..LoraConfig::default()
    };
    let adapter =
        LoraAdapter::new(&Build::new(gpu()), l.name(), n_in, n_out, &config, rng).unwrap();
    // B = 0 at init; give it values so every term of the backward is exercised
    adapter
        .b
        .value()
        .write_f32(gpu(), &rand_vec(rng, n_out * DIMS.3));
    let bias = rand_vec(rng, n_out);
    l.b.as_ref().unwrap().value().write_f32(gpu(), &bias);
    l.lora = Some(adapter);
    (l, config.scale() as f64)
}

#[test]
fn lora_forward_and_backward_match_the_reference() {
    let mut rng = Rng::new(31);
    let (rows, n_in, n_out, r) = DIMS;
    let (l, s) = layer(&mut rng);
    let lora = l.lora.as_ref().unwrap();
    let x = rand_vec(&mut rng, rows * n_in);
    let dy = rand_vec(&mut rng, rows * n_out);
    let (x64, dy64) = (to64(&x), to64(&dy));
    let w64 = to64(&read(l.w().value()));
    let b64 = to64(&read(l.b.as_ref().unwrap().value()));
    let a64 = to64(&read(lora.a.value()));
    let bb64 = to64(&read(lora.b.value()));
    assert_eq!(s, 2.0, "alpha / r");

    let tx = upload("x", &[rows, n_in], &x);
    let y = zeros("y", &[rows, n_out]);
    l.forward(gpu(), &tx, &y).unwrap();
    let want = reference::lora_linear(&x64, &w64, &b64, &a64, &bb64, s, DIMS);
    // f32 sums of ≤ 12 products of values ≤ ~1: a few ulps of the largest partial sums
    assert_close("lora forward", &read(&y), &want, 1e-5, 1e-5);

    let tdy = upload("dy", &[rows, n_out], &dy);
    let dx = zeros("dx", &[rows, n_in]);
    l.backward(gpu(), &tx, &tdy, Some(&dx)).unwrap();
    let (rdx, rda, rdb) = reference::lora_linear_backward(&x64, &w64, &a64, &bb64, s, &dy64, DIMS);
    assert_close("lora dx", &read(&dx), &rdx, 1e-5, 1e-5);
    assert_close("lora dA", &read(lora.a.grad()), &rda, 1e-5, 1e-5);
    assert_close("lora dB", &read(lora.b.grad()), &rdb, 1e-5, 1e-5);
    assert!(!l.w().trainable() && l.b.as_ref().is_some_and(|b| !b.trainable()));

    // the reference's own gradients against central finite differences of Σ y·dy
    let loss = |x: &[f64], a: &[f64], b: &[f64]| {
        dot(&reference::lora_linear(x, &w64, &b64, a, b, s, DIMS), &dy64)
    };
    let h = 1e-6;
    assert_close64(
        "fd dx",
        &rdx,
        &finite_diff(&x64, h, |v| loss(v, &a64, &bb64)),
        1e-7,
        1e-6,
    );
    assert_close64(
        "fd dA",
        &rda,
        &finite_diff(&a64, h, |v| loss(&x64, v, &bb64)),
        1e-7,
        1e-6,
    );
    assert_close64(
        "fd dB",
        &rdb,
        &finite_diff(&bb64, h, |v| loss(&x64, &a64, v)),
        1e-7,
        1e-6,
    );
    let _ = r;
}

#[test]
fn merging_folds_the_update_into_w_and_unmerging_restores_it() {
    let mut rng = Rng::new(32);
    let (rows, n_in, n_out, _) = DIMS;
    let (mut l, _) = layer(&mut rng);
    let x = upload("x", &[rows, n_in], &rand_vec(&mut rng, rows * n_in));
    let (unmerged, merged) = (zeros("y0", &[rows, n_out]), zeros("y1", &[rows, n_out]));
    l.forward(gpu(), &x, &unmerged).unwrap();
    let w0 = read(l.w().value());
    l.fold_lora(gpu(), true).unwrap();
    l.forward(gpu(), &x, &merged).unwrap();
    // the same sums in another order: f32 rounding of values ≤ ~10
    assert_close(
        "merged",
        &read(&merged),
        &to64(&read(&unmerged)),
        1e-5,
        1e-5,
    );
    l.fold_lora(gpu(), false).unwrap();
    // (W + d) − d: W back up to one rounding of W + d
    assert_close("unmerged W", &read(l.w().value()), &to64(&w0), 1e-6, 1e-6);
}

#[test]
fn dropout_keeps_the_elements_its_mask_says_scaled_and_is_its_own_backward() {
    use wgtrain::ops::dropout::{dropout, kept};
    let mut rng = Rng::new(33);
    let n = 10_000;
    let x = rand_vec(&mut rng, n);
    let tx = upload("x", &[n], &x);
    let out = zeros("out", &[n]);
    let (p, seed) = (0.25f32, 1234u32);
    dropout(gpu(), &tx, p, seed, &out);
    let got = read(&out);
    let scale = 1.0 / (1.0 - p);
    let mut kept_count = 0;
    for i in 0..n {
        let want = if kept(i as u32, seed, p) {
            x[i] * scale
        } else {
            0.0
        };
        kept_count += usize::from(kept(i as u32, seed, p));
        assert_eq!(got[i].to_bits(), want.to_bits(), "element {i}");
    }
    // 7500 expected; the binomial's standard deviation is 43
    assert!((7300..7700).contains(&kept_count), "{kept_count} kept");
    // another seed, another mask
    dropout(gpu(), &tx, p, seed + 1, &out);
    assert_ne!(read(&out), got);
}

#[test]
fn lora_with_dropout_matches_the_reference_under_the_same_mask() {
    use std::sync::atomic::Ordering;
    use wgtrain::ops::dropout::kept;
    let mut rng = Rng::new(34);
    let (rows, n_in, n_out, _) = DIMS;
    let (mut l, s) = layer(&mut rng);
    let p = 0.3f32;
    let seed = {
        let lora = l.lora.as_mut().unwrap();
        lora.dropout = p;
        lora.set_seed(99, 0);
        lora.training.store(true, Ordering::Relaxed);
        lora.seed.load(Ordering::Relaxed)
    };
    let lora = l.lora.as_ref().unwrap();
    let x = rand_vec(&mut rng, rows * n_in);
    let dy = rand_vec(&mut rng, rows * n_out);
    let keep = 1.0 / (1.0 - p as f64);
    // the mask as f64 multipliers (0 or 1/(1 − p)), the kernel's rule
    let m: Vec<f64> = (0..rows * n_in)
        .map(|i| if kept(i as u32, seed, p) { keep } else { 0.0 })
        .collect();
    let (x64, dy64) = (to64(&x), to64(&dy));
    let xd: Vec<f64> = x64.iter().zip(&m).map(|(a, b)| a * b).collect();
    let w64 = to64(&read(l.w().value()));
    let b64 = to64(&read(l.b.as_ref().unwrap().value()));
    let a64 = to64(&read(lora.a.value()));
    let bb64 = to64(&read(lora.b.value()));

    let tx = upload("x", &[rows, n_in], &x);
    let y = zeros("y", &[rows, n_out]);
    l.forward(gpu(), &tx, &y).unwrap();
    // the base term sees x, the adapter x' = mask·x
    let mut want = reference::lora_linear(&xd, &w64, &b64, &a64, &bb64, s, DIMS);
    let base_x = reference::matmul(&x64, &w64, rows, n_out, n_in, false, true);
    let base_xd = reference::matmul(&xd, &w64, rows, n_out, n_in, false, true);
    for i in 0..want.len() {
        want[i] += base_x[i] - base_xd[i];
    }
    assert_close("lora dropout forward", &read(&y), &want, 1e-5, 1e-5);

    let tdy = upload("dy", &[rows, n_out], &dy);
    let dx = zeros("dx", &[rows, n_in]);
    l.backward(gpu(), &tx, &tdy, Some(&dx)).unwrap();
    let (rdx_d, rda, rdb) = reference::lora_linear_backward(&xd, &w64, &a64, &bb64, s, &dy64, DIMS);
    // dx = dy·W + mask·(du·A): the reference's dx at x' holds dy·W + du·A
    let dyw = reference::matmul(&dy64, &w64, rows, n_in, n_out, false, false);
    let rdx: Vec<f64> = (0..rows * n_in)
        .map(|i| dyw[i] + m[i] * (rdx_d[i] - dyw[i]))
        .collect();
    assert_close("lora dropout dx", &read(&dx), &rdx, 1e-5, 1e-5);
    assert_close("lora dropout dA", &read(lora.a.grad()), &rda, 1e-5, 1e-5);
    assert_close("lora dropout dB", &read(lora.b.grad()), &rdb, 1e-5, 1e-5);
    // outside training no dropout applies
    lora.training.store(false, Ordering::Relaxed);
    let y2 = zeros("y2", &[rows, n_out]);
    l.forward(gpu(), &tx, &y2).unwrap();
    let plain = reference::lora_linear(&x64, &w64, &b64, &a64, &bb64, s, DIMS);
    assert_close("lora eval forward", &read(&y2), &plain, 1e-5, 1e-5);
}

#[test]
fn an_adapter_over_a_quantized_weight_trains_as_over_the_dequantized_one() {
    use wgtrain::nn::linear::Weight;
    use wgtrain::ops::qmatmul::QuantWeight;
    use wgtrain::quant::{quantize, Method};
    let (rows, n_in, n_out, _) = DIMS;
    // two layers of the same draws: W quantized (NF4, blocks of 5: partial blocks) in one, its
    // host decode as the dense W of the other
    let (mut quantized, _) = layer(&mut Rng::new(41));
    let (dense, _) = layer(&mut Rng::new(41));
    let q = quantize(
        Method::Nf4 { block: 5 },
        &read(dense.w().value()),
        n_out,
        n_in,
    )
    .unwrap();
    dense.w().value().write_f32(gpu(), &q.dequantize());
    quantized
        .weight
        .quantize(QuantWeight::upload(gpu(), "l.weight", &q).unwrap());
    assert!(matches!(quantized.weight, Weight::Quantized { .. }));
    assert!(!quantized.w().trainable() && !quantized.w().resident());
    let mut rng = Rng::new(42);
    let x = upload("x", &[rows, n_in], &rand_vec(&mut rng, rows * n_in));
    let dy = upload("dy", &[rows, n_out], &rand_vec(&mut rng, rows * n_out));
    let mut out = vec![];
    for l in [&quantized, &dense] {
        let y = zeros("y", &[rows, n_out]);
        l.forward(gpu(), &x, &y).unwrap();
        let dx = zeros("dx", &[rows, n_in]);
        l.backward(gpu(), &x, &dy, Some(&dx)).unwrap();
        let lora = l.lora.as_ref().unwrap();
        out.push((
            read(&y),
            read(&dx),
            read(lora.a.grad()),
            read(lora.b.grad()),
        ));
    }
    let (q, d) = (&out[0], &out[1]);
    // the forward: the dequantizing matmul sums each output's 12 products in its own grouping,
    // the dense kernel in another, so a few ulps apart
    assert_close("forward", &q.0, &to64(&d.0), 1e-6, 1e-6);
    // the backward decodes W on the device as the host does and then runs the dense kernels:
    // dx, dA and dB are the dense layer's bits
    assert_eq!(q.1, d.1, "dx");
    assert_eq!(q.2, d.2, "dA");
    assert_eq!(q.3, d.3, "dB");
    // an adapter over a quantized weight cannot fold into it
    let err = quantized.fold_lora(gpu(), true).unwrap_err().to_string();
    assert!(err.contains("quantized"), "{err}");
}
