//! Whole-model gradients of `Mlp` and `Gpt` against a float64 CPU model built from the kernel
//! references (the end-to-end check, as llm.c's test_gpt2 does), and that CPU model's gradients
//! against finite differences of its own loss.

use crate::{gpu, reference};
use std::collections::HashMap;
use wgtrain::nn::gpt::TokenBatch;
use wgtrain::nn::{zero_grads, Build, Gpt, GptConfig, LossGrad, Mlp, MlpConfig, NoHooks, Param};
use wgtrain::ops::softmax_xent::PAD;
use wgtrain::rng::Rng;
use wgtrain::{Category, Tensor};

type Params = HashMap<String, Vec<f64>>;

fn read_params(params: &[&Param]) -> (Params, Params) {
    let mut values = HashMap::new();
    let mut grads = HashMap::new();
    for p in params {
        let v = p.value().to_f32(gpu()).unwrap();
        let g = p.grad().to_f32(gpu()).unwrap();
        values.insert(p.name.clone(), v.iter().map(|&x| x as f64).collect());
        grads.insert(p.name.clone(), g.iter().map(|&x| x as f64).collect());
    }
    (values, grads)
}

/// y (rows, out) = x (rows, inp) · Wᵀ + b
fn linear(x: &[f64], w: &[f64], b: &[f64], rows: usize, inp: usize, out: usize) -> Vec<f64> {
    let mut y = reference::matmul(x, w, rows, out, inp, false, true);
    for r in 0..rows {
        for j in 0..out {
            y[r * out + j] += b[j];
        }
    }
    y
}

/// (dx, dW, db) of `linear`.
fn linear_backward(
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    rows: usize,
    inp: usize,
    out: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dx = reference::matmul(dy, w, rows, inp, out, false, false);
    let dw = reference::matmul(dy, x, out, inp, rows, true, false);
    let db = (0..out)
        .map(|j| (0..rows).map(|r| dy[r * out + j]).sum())
        .collect();
    (dx, dw, db)
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

fn acc(grads: &mut Params, name: &str, g: &[f64]) {
    let e = grads
        .entry(name.to_string())
        .or_insert_with(|| vec![0.0; g.len()]);
    for (a, b) in e.iter_mut().zip(g) {
        *a += b;
    }
}

const EPS: f64 = 1e-5;

/// The GPT's mean loss over non-PAD targets and, when asked, every parameter's gradient.
fn gpt_reference(
    p: &Params,
    cfg: &GptConfig,
    tokens: &[u32],
    targets: &[u32],
    b: usize,
    t: usize,
    want_grads: bool,
) -> (f64, Params) {
    let (c, v, rows) = (cfg.n_embd, cfg.vocab_size, b * t);
    let positions: Vec<u32> = (0..b).flat_map(|_| 0..t as u32).collect();
    let mut x = add(
        &reference::embedding(tokens, &p["wte"], c),
        &reference::embedding(&positions, &p["wpe"], c),
    );
    struct Saved {
        x: Vec<f64>,
        ln1: Vec<f64>,
        qkv: Vec<f64>,
        y: Vec<f64>,
        x_mid: Vec<f64>,
        ln2: Vec<f64>,
        h: Vec<f64>,
        g: Vec<f64>,
    }
    let mut saved = vec![];
    for l in 0..cfg.n_layer {
        let n = |s: &str| format!("h.{l}.{s}");
        let ln1 =
            reference::layernorm(&x, &p[&n("ln_1.weight")], &p[&n("ln_1.bias")], rows, c, EPS).out;
        let qkv = linear(
            &ln1,
            &p[&n("attn.c_attn.weight")],
            &p[&n("attn.c_attn.bias")],
            rows,
            c,
            3 * c,
        );
        let (y, _) = reference::attention(&qkv, b, t, c, cfg.n_head);
        let a = linear(
            &y,
            &p[&n("attn.c_proj.weight")],
            &p[&n("attn.c_proj.bias")],
            rows,
            c,
            c,
        );
        let x_mid = add(&x, &a);
        let ln2 = reference::layernorm(
            &x_mid,
            &p[&n("ln_2.weight")],
            &p[&n("ln_2.bias")],
            rows,
            c,
            EPS,
        )
        .out;
        let h = linear(
            &ln2,
            &p[&n("mlp.c_fc.weight")],
            &p[&n("mlp.c_fc.bias")],
            rows,
            c,
            4 * c,
        );
        let g = reference::gelu(&h);
        let m = linear(
            &g,
            &p[&n("mlp.c_proj.weight")],
            &p[&n("mlp.c_proj.bias")],
            rows,
            4 * c,
            c,
        );
        let out = add(&x_mid, &m);
        saved.push(Saved {
            x,
            ln1,
            qkv,
            y,
            x_mid,
            ln2,
            h,
            g,
        });
        x = out;
    }
    let xf = reference::layernorm(&x, &p["ln_f.weight"], &p["ln_f.bias"], rows, c, EPS).out;
    let logits = reference::matmul(&xf, &p["wte"], rows, v, c, false, true);
    let count = targets.iter().filter(|&&t| t != PAD).count() as f64;
    let (losses, dlogits) = reference::softmax_xent(&logits, targets, v, 1.0 / count);
    let loss = losses.iter().sum::<f64>() / count;
    let mut grads = Params::new();
    if !want_grads {
        return (loss, grads);
    }
    let dxf = reference::matmul(&dlogits, &p["wte"], rows, c, v, false, false);
    acc(
        &mut grads,
        "wte",
        &reference::matmul(&dlogits, &xf, v, c, rows, true, false),
    );
    let (mut dx, dw, db) = reference::layernorm_backward(&dxf, &x, &p["ln_f.weight"], rows, c, EPS);
    acc(&mut grads, "ln_f.weight", &dw);
    acc(&mut grads, "ln_f.bias", &db);
    for l in (0..cfg.n_layer).rev() {
        let n = |s: &str| format!("h.{l}.{s}");
        let s = &saved[l];
        let (dg, dw, db) = linear_backward(&s.g, &p[&n("mlp.c_proj.weight")], &dx, rows, 4 * c, c);
        acc(&mut grads, &n("mlp.c_proj.weight"), &dw);
        acc(&mut grads, &n("mlp.c_proj.bias"), &db);
        let dh = reference::gelu_backward(&s.h, &dg);
        let (dln2, dw, db) =
            linear_backward(&s.ln2, &p[&n("mlp.c_fc.weight")], &dh, rows, c, 4 * c);
        acc(&mut grads, &n("mlp.c_fc.weight"), &dw);
        acc(&mut grads, &n("mlp.c_fc.bias"), &db);
        let (dxm, dw, db) =
            reference::layernorm_backward(&dln2, &s.x_mid, &p[&n("ln_2.weight")], rows, c, EPS);
        acc(&mut grads, &n("ln_2.weight"), &dw);
        acc(&mut grads, &n("ln_2.bias"), &db);
        let dx_mid = add(&dxm, &dx);
        let (dy, dw, db) = linear_backward(&s.y, &p[&n("attn.c_proj.weight")], &dx_mid, rows, c, c);
        acc(&mut grads, &n("attn.c_proj.weight"), &dw);
        acc(&mut grads, &n("attn.c_proj.bias"), &db);
        let dqkv = reference::attention_backward(&s.qkv, &dy, b, t, c, cfg.n_head);
        let (dln1, dw, db) =
            linear_backward(&s.ln1, &p[&n("attn.c_attn.weight")], &dqkv, rows, c, 3 * c);
        acc(&mut grads, &n("attn.c_attn.weight"), &dw);
        acc(&mut grads, &n("attn.c_attn.bias"), &db);
        let (dxl, dw, db) =
            reference::layernorm_backward(&dln1, &s.x, &p[&n("ln_1.weight")], rows, c, EPS);
        acc(&mut grads, &n("ln_1.weight"), &dw);
        acc(&mut grads, &n("ln_1.bias"), &db);
        dx = add(&dxl, &dx_mid);
    }
    acc(
        &mut grads,
        "wte",
        &reference::embedding_backward(tokens, &dx, v, c),
    );
    acc(
        &mut grads,
        "wpe",
        &reference::embedding_backward(&positions, &dx, cfg.block_size, c),
    );
    (loss, grads)
}

/// Compares every GPU gradient with the f64 one, then checks the f64 gradient against central
/// differences of the f64 loss on a sample of coordinates of every tensor.
fn check(gpu_grads: &Params, ref_grads: &Params, values: &Params, loss: impl Fn(&Params) -> f64) {
    let mut rng = Rng::new(7);
    for (name, want) in ref_grads {
        let got = &gpu_grads[name];
        let scale = want.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            // f32 through a whole model: 1e-3 of the tensor's largest gradient, plus a floor
            assert!(
                (g - w).abs() <= 1e-6 + 1e-3 * scale,
                "{name}[{i}]: GPU {g}, f64 reference {w} (max |g| {scale})"
            );
        }
        for _ in 0..6 {
            let i = rng.below(want.len() as u64) as usize;
            let h = 1e-5;
            let mut p = values.clone();
            p.get_mut(name).unwrap()[i] += h;
            let up = loss(&p);
            p.get_mut(name).unwrap()[i] -= 2.0 * h;
            let down = loss(&p);
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - want[i]).abs() <= 1e-7 + 1e-5 * want[i].abs(),
                "{name}[{i}]: analytic {}, finite difference {fd}",
                want[i]
            );
        }
    }
    assert_eq!(
        gpu_grads.len(),
        ref_grads.len(),
        "every parameter has a gradient"
    );
}

#[test]
fn gpt_gradients_match_a_float64_model() {
    let cfg = GptConfig {
        vocab_size: 11,
        block_size: 6,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        ..Default::default()
    };
    let mut rng = Rng::new(3);
    let mut model = Gpt::new(&Build::new(gpu()), cfg.clone(), &mut rng).unwrap();
    // Larger weights than GPT-2's init so every path carries signal.
    for p in model.params() {
        let n = p.numel();
        let init: Vec<f32> = if p.decay {
            rng.uniform_vec(n, -0.5, 0.5)
        } else {
            rng.uniform_vec(n, 0.5, 1.5)
        };
        p.value().write_f32(gpu(), &init);
    }
    let (b, t) = (2, 5);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
    let mut targets: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
    targets[3] = PAD;
    let batch = TokenBatch::new(gpu(), &cfg, &tokens, &targets, b, t).unwrap();
    zero_grads(gpu(), &model.params());
    let losses = model
        .forward_backward(
            gpu(),
            &batch,
            LossGrad::plain(1.0 / batch.n_targets as f32),
            &mut NoHooks,
        )
        .unwrap();
    let params = model.params();
    let gpu_loss: f32 = losses.to_f32(gpu()).unwrap().iter().sum::<f32>() / batch.n_targets as f32;
    let (values, grads) = read_params(&params);
    let (loss, ref_grads) = gpt_reference(&values, &cfg, &tokens, &targets, b, t, true);
    assert!(
        (gpu_loss as f64 - loss).abs() < 1e-5 * loss.abs().max(1.0),
        "loss: GPU {gpu_loss}, f64 {loss}"
    );
    check(&grads, &ref_grads, &values, |p| {
        gpt_reference(p, &cfg, &tokens, &targets, b, t, false).0
    });
}

#[test]
fn mlp_gradients_match_a_float64_model() {
    let mut rng = Rng::new(4);
    for activation in [wgtrain::nn::Activation::Relu, wgtrain::nn::Activation::Gelu] {
        let cfg = MlpConfig {
            inputs: 7,
            hidden: vec![9, 5],
            classes: 4,
            activation,
        };
        let mut model = Mlp::new(&Build::new(gpu()), cfg.clone(), &mut rng).unwrap();
        let n = 6;
        let x: Vec<f32> = rng.uniform_vec(n * 7, -1.0, 1.0);
        let y: Vec<u32> = (0..n).map(|_| rng.below(4) as u32).collect();
        let tx = Tensor::from_f32(gpu(), "x", &[n, 7], &x, Category::Activations).unwrap();
        let ty = Tensor::from_u32(gpu(), "y", &[n], &y, Category::Activations).unwrap();
        zero_grads(gpu(), &model.params());
        model
            .forward_backward(
                gpu(),
                &tx,
                &ty,
                LossGrad::plain(1.0 / n as f32),
                &mut NoHooks,
            )
            .unwrap();
        let params = model.params();
        let (values, grads) = read_params(&params);
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let sizes = [7usize, 9, 5, 4];
        let act = |h: &[f64]| match activation {
            wgtrain::nn::Activation::Relu => reference::relu(h),
            wgtrain::nn::Activation::Gelu => reference::gelu(h),
        };
        let run = |p: &Params, want_grads: bool| -> (f64, Params) {
            let mut inputs = vec![x64.clone()];
            let mut pres = vec![];
            for l in 0..3 {
                let z = linear(
                    inputs.last().unwrap(),
                    &p[&format!("fc{l}.weight")],
                    &p[&format!("fc{l}.bias")],
                    n,
                    sizes[l],
                    sizes[l + 1],
                );
                if l < 2 {
                    inputs.push(act(&z));
                }
                pres.push(z);
            }
            let (losses, mut d) = reference::softmax_xent(&pres[2], &y, 4, 1.0 / n as f64);
            let loss = losses.iter().sum::<f64>() / n as f64;
            let mut grads = Params::new();
            if want_grads {
                for l in (0..3).rev() {
                    let (dx, dw, db) = linear_backward(
                        &inputs[l],
                        &p[&format!("fc{l}.weight")],
                        &d,
                        n,
                        sizes[l],
                        sizes[l + 1],
                    );
                    grads.insert(format!("fc{l}.weight"), dw);
                    grads.insert(format!("fc{l}.bias"), db);
                    if l > 0 {
                        d = match activation {
                            wgtrain::nn::Activation::Relu => {
                                reference::relu_backward(&pres[l - 1], &dx)
                            }
                            wgtrain::nn::Activation::Gelu => {
                                reference::gelu_backward(&pres[l - 1], &dx)
                            }
                        };
                    }
                }
            }
            (loss, grads)
        };
        let (_, ref_grads) = run(&values, true);
        check(&grads, &ref_grads, &values, |p| run(p, false).0);
    }
}

/// A GPT and a GELU MLP give the same loss and gradients, bit for bit, with the GELU in the
/// matmul's stores (GPUs' default) and after it (CPU adapters'), on one device of its own (the
/// choice is a per-device setting and the other tests share one). d_model 16: the hidden width
/// 64 is whole vec4s and tiles, the MLP's 9 and 5 are not (the padded path).
#[test]
fn the_fused_gelu_gives_the_unfused_bits_in_a_gpt_and_an_mlp() {
    let own = wgtrain::Gpu::new(None).unwrap();
    let mut runs = vec![];
    for fused in [true, false] {
        own.set_gelu_in_stores(fused);
        let mut out = vec![];
        let profile = own
            .profile(wgtrain::gpu::ProfileClock::Wall, || {
                out = fused_gelu_run(&own);
                Ok(())
            })
            .unwrap();
        // the GELU forms ran, forward and backward, only when asked; the elementwise GELU else
        let ran = |what: &str| profile.iter().filter(|k| k.kernel.contains(what)).count();
        if fused {
            assert!(
                ran("GELU_GRAD=0") > 0 && ran("GELU_GRAD=1") > 0,
                "{profile:?}"
            );
            assert_eq!(ran("gelu_forward") + ran("gelu_backward"), 0, "{profile:?}");
        } else {
            assert_eq!(ran("(gelu"), 0, "{profile:?}");
            assert!(
                ran("gelu_forward") > 0 && ran("gelu_backward") > 0,
                "{profile:?}"
            );
        }
        runs.push(out);
    }
    assert_eq!(runs[0].len(), runs[1].len());
    for (i, (fused, after)) in runs[0].iter().zip(&runs[1]).enumerate() {
        assert!(
            fused == after,
            "tensor {i}: the fused GELU changed the bits"
        );
    }
}

/// The losses and gradients (as bits) of a GPT step and of a GELU MLP step on `own`.
fn fused_gelu_run(own: &wgtrain::Gpu) -> Vec<Vec<u32>> {
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let grads = |params: Vec<&Param>| {
        params
            .iter()
            .map(|p| bits(p.grad().to_f32(own).unwrap()))
            .collect::<Vec<_>>()
    };
    let cfg = GptConfig {
        vocab_size: 13,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        ..Default::default()
    };
    let mut rng = Rng::new(5);
    let mut gpt = Gpt::new(&Build::new(own), cfg.clone(), &mut rng).unwrap();
    let (b, t) = (2, 8);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(13) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(13) as u32).collect();
    let batch = TokenBatch::new(own, &cfg, &tokens, &targets, b, t).unwrap();
    zero_grads(own, &gpt.params());
    let losses = gpt
        .forward_backward(own, &batch, LossGrad::plain(0.1), &mut NoHooks)
        .unwrap();
    let mut out = vec![bits(losses.to_f32(own).unwrap())];
    out.extend(grads(gpt.params()));
    let mlp_cfg = MlpConfig {
        inputs: 7,
        hidden: vec![9, 5],
        classes: 4,
        activation: wgtrain::nn::Activation::Gelu,
    };
    let mut mlp = Mlp::new(&Build::new(own), mlp_cfg, &mut rng).unwrap();
    let x = rng.uniform_vec(42, -2.0, 2.0);
    let x = Tensor::from_f32(own, "x", &[6, 7], &x, Category::Activations).unwrap();
    let y = [0, 1, 2, 3, 1, 2];
    let y = Tensor::from_u32(own, "y", &[6], &y, Category::Activations).unwrap();
    zero_grads(own, &mlp.params());
    let losses = mlp
        .forward_backward(own, &x, &y, LossGrad::plain(0.2), &mut NoHooks)
        .unwrap();
    out.push(bits(losses.to_f32(own).unwrap()));
    out.extend(grads(mlp.params()));
    out
}

/// Σ cross-entropy / targets of a Llama-family model in float64, from the parameters by their
/// Hugging Face names: RMSNorm, q/k/v projections with Hugging Face's rotate-half RoPE
/// (positions 0..T per sequence), grouped-query causal attention, SwiGLU, the head tied or not.
fn llama_reference_loss(
    p: &Params,
    cfg: &GptConfig,
    tokens: &[u32],
    targets: &[u32],
    b: usize,
    t: usize,
) -> f64 {
    let (c, v, nh, kh) = (cfg.n_embd, cfg.vocab_size, cfg.n_head, cfg.kv_heads());
    let (hs, f, eps) = (cfg.head_dim(), cfg.ffn(), cfg.eps() as f64);
    let rows = b * t;
    let rms = |x: &[f64], w: &[f64]| -> Vec<f64> {
        x.chunks(c)
            .flat_map(|r| {
                let ms = r.iter().map(|v| v * v).sum::<f64>() / c as f64;
                let s = 1.0 / (ms + eps).sqrt();
                r.iter().zip(w).map(move |(v, g)| v * s * g)
            })
            .collect()
    };
    let mm = |x: &[f64], name: &str, inp: usize, out: usize| -> Vec<f64> {
        linear(x, &p[name], &vec![0.0; out], x.len() / inp, inp, out)
    };
    let rope = |x: &mut [f64], heads: usize| {
        let half = hs / 2;
        for (r, row) in x.chunks_mut(heads * hs).enumerate() {
            let pos = (r % t) as f64;
            for head in row.chunks_mut(hs) {
                for i in 0..half {
                    let theta = pos * (cfg.rope_base() as f64).powf(-2.0 * i as f64 / hs as f64);
                    let (a, bb) = (head[i], head[i + half]);
                    head[i] = a * theta.cos() - bb * theta.sin();
                    head[i + half] = bb * theta.cos() + a * theta.sin();
                }
            }
        }
    };
    let wte = &p["model.embed_tokens.weight"];
    let mut x: Vec<f64> = tokens
        .iter()
        .flat_map(|&tok| wte[tok as usize * c..(tok as usize + 1) * c].to_vec())
        .collect();
    for l in 0..cfg.n_layer {
        let n = |s: &str| format!("model.layers.{l}.{s}.weight");
        let h = rms(&x, &p[&n("input_layernorm")]);
        let mut q = mm(&h, &n("self_attn.q_proj"), c, c);
        let mut k = mm(&h, &n("self_attn.k_proj"), c, kh * hs);
        let vv = mm(&h, &n("self_attn.v_proj"), c, kh * hs);
        rope(&mut q, nh);
        rope(&mut k, kh);
        let mut y = vec![0.0; rows * c];
        for bi in 0..b {
            for head in 0..nh {
                let g = head / (nh / kh);
                for t1 in 0..t {
                    let qi = |d: usize| q[(bi * t + t1) * c + head * hs + d];
                    let s: Vec<f64> = (0..=t1)
                        .map(|t2| {
                            (0..hs)
                                .map(|d| qi(d) * k[(bi * t + t2) * kh * hs + g * hs + d])
                                .sum::<f64>()
                                / (hs as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                    for d in 0..hs {
                        y[(bi * t + t1) * c + head * hs + d] = (0..=t1)
                            .map(|t2| {
                                (s[t2] - m).exp() / z * vv[(bi * t + t2) * kh * hs + g * hs + d]
                            })
                            .sum();
                    }
                }
            }
        }
        x = add(&x, &mm(&y, &n("self_attn.o_proj"), c, c));
        let h = rms(&x, &p[&n("post_attention_layernorm")]);
        let gate = mm(&h, &n("mlp.gate_proj"), c, f);
        let up = mm(&h, &n("mlp.up_proj"), c, f);
        let act: Vec<f64> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        x = add(&x, &mm(&act, &n("mlp.down_proj"), f, c));
    }
    let x = rms(&x, &p["model.norm.weight"]);
    let head = if cfg.tied() {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    let logits = mm(&x, head, c, v);
    let mut total = 0.0;
    let mut n = 0;
    for (r, &target) in targets.iter().enumerate() {
        if target == PAD {
            continue;
        }
        let row = &logits[r * v..(r + 1) * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        total += lse - row[target as usize];
        n += 1;
    }
    total / n as f64
}

#[test]
fn llama_gradients_match_finite_differences_of_a_float64_model() {
    use wgtrain::nn::Family;
    // multi-query with a tied head; grouped-query (2 heads per group) with an untied one
    for (kv, untied) in [(1, false), (2, true)] {
        let cfg = GptConfig {
            vocab_size: 11,
            block_size: 6,
            n_layer: 2,
            n_head: 4,
            n_embd: 16,
            family: Family::Llama,
            n_kv_head: Some(kv),
            ffn_hidden: Some(12),
            rope_theta: Some(100.0),
            norm_eps: Some(1e-5),
            untied_head: untied,
            ..Default::default()
        };
        let mut rng = Rng::new(5 + kv as u64);
        let mut model = Gpt::new(&Build::new(gpu()), cfg.clone(), &mut rng).unwrap();
        for p in model.params() {
            let n = p.numel();
            let init: Vec<f32> = if p.decay {
                rng.uniform_vec(n, -0.5, 0.5)
            } else {
                rng.uniform_vec(n, 0.5, 1.5)
            };
            p.value().write_f32(gpu(), &init);
        }
        let (b, t) = (2, 5);
        let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
        let mut targets: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
        targets[3] = PAD;
        let batch = TokenBatch::new(gpu(), &cfg, &tokens, &targets, b, t).unwrap();
        zero_grads(gpu(), &model.params());
        let losses = model
            .forward_backward(
                gpu(),
                &batch,
                LossGrad::plain(1.0 / batch.n_targets as f32),
                &mut NoHooks,
            )
            .unwrap();
        let params = model.params();
        let gpu_loss: f32 =
            losses.to_f32(gpu()).unwrap().iter().sum::<f32>() / batch.n_targets as f32;
        let (values, grads) = read_params(&params);
        let loss = |p: &Params| llama_reference_loss(p, &cfg, &tokens, &targets, b, t);
        let want = loss(&values);
        assert!(
            (gpu_loss as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
            "loss: GPU {gpu_loss}, f64 {want}"
        );
        // the embedding, 9 per block, the final norm (and the untied head)
        let expected = 1 + 2 * 9 + 1 + usize::from(untied);
        assert_eq!(grads.len(), expected, "every parameter has a gradient");
        for (name, got) in &grads {
            // central differences of the f64 model (h = 1e-5: truncation ~1e-10) at 5 entries;
            // the GPU's f32 gradient within 1e-3 of the largest of them plus a floor
            let mut fds = vec![];
            for _ in 0..5 {
                let i = rng.below(got.len() as u64) as usize;
                let mut p = values.clone();
                p.get_mut(name).unwrap()[i] += 1e-5;
                let up = loss(&p);
                p.get_mut(name).unwrap()[i] -= 2e-5;
                let down = loss(&p);
                fds.push((i, (up - down) / 2e-5));
            }
            let scale = fds.iter().fold(0.0f64, |m, (_, g)| m.max(g.abs()));
            for (i, fd) in fds {
                assert!(
                    (got[i] - fd).abs() <= 1e-6 + 1e-3 * scale,
                    "kv {kv} {name}[{i}]: GPU {}, finite difference {fd}",
                    got[i]
                );
            }
        }
    }
}

/// The LM head by chunks of rows (so (B, T, V) logits are never whole) gives the whole head's
/// losses and every gradient below the head bit for bit (both row-wise); the head's own
/// gradient sums the chunks' products in turn, within f32 rounding of the one product.
#[test]
fn the_lm_head_by_chunks_of_rows_equals_the_whole_head() {
    use wgtrain::nn::Family;
    for (family, untied) in [(Family::Gpt2, false), (Family::Llama, true)] {
        let cfg = GptConfig {
            vocab_size: 37,
            block_size: 6,
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
            family,
            untied_head: untied,
            ffn_hidden: (family == Family::Llama).then_some(12),
            ..Default::default()
        };
        let (b, t) = (2, 5);
        let mut rng = Rng::new(8);
        let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(37) as u32).collect();
        let mut targets: Vec<u32> = (0..b * t).map(|_| rng.below(37) as u32).collect();
        targets[4] = PAD;
        let run = |rows: Option<usize>| -> (Vec<f32>, Params) {
            let mut model = Gpt::new(&Build::new(gpu()), cfg.clone(), &mut Rng::new(3)).unwrap();
            model.head_rows = rows;
            let batch = TokenBatch::new(gpu(), &cfg, &tokens, &targets, b, t).unwrap();
            zero_grads(gpu(), &model.params());
            let losses = model
                .forward_backward(gpu(), &batch, LossGrad::plain(0.1), &mut NoHooks)
                .unwrap();
            let (_, grads) = read_params(&model.params());
            // the forward-only losses (evaluation) by the same chunks
            let eval = model.losses(gpu(), &batch).unwrap().to_f32(gpu()).unwrap();
            let losses = losses.to_f32(gpu()).unwrap();
            assert_eq!(eval, losses, "evaluation's losses, head rows {rows:?}");
            (losses, grads)
        };
        let (whole_losses, whole) = run(None);
        // chunks of 3, 3, 3 and 1 rows
        let (losses, chunked) = run(Some(3));
        assert_eq!(losses, whole_losses, "{family:?}: losses");
        let head = if untied { "lm_head.weight" } else { "wte" };
        for (name, want) in &whole {
            let got = &chunked[name];
            if name == head {
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() <= 1e-6 + 1e-5 * w.abs(), "{name}: {g} vs {w}");
                }
            } else {
                assert_eq!(got, want, "{family:?}: {name}, below the head");
            }
        }
    }
}

/// Fused attention (each row's log-sum-exp kept instead of the (B, NH, T, T) probabilities, the
/// backward recomputing the scores) trains the same model: losses and every gradient within
/// f32 rounding of the kept-probabilities path (itself checked against float64 above), for
/// GPT-2 and a grouped-query Llama.
#[test]
fn fused_attention_gives_the_kept_probabilities_losses_and_gradients() {
    use wgtrain::nn::Family;
    for family in [Family::Gpt2, Family::Llama] {
        let cfg = GptConfig {
            vocab_size: 19,
            block_size: 12,
            n_layer: 2,
            n_head: 4,
            n_embd: 16,
            family,
            n_kv_head: (family == Family::Llama).then_some(2),
            ffn_hidden: (family == Family::Llama).then_some(24),
            ..Default::default()
        };
        let (b, t) = (2, 11);
        let mut rng = Rng::new(21);
        let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(19) as u32).collect();
        let targets: Vec<u32> = (0..b * t).map(|_| rng.below(19) as u32).collect();
        let run = |fused: bool| -> (Vec<f32>, Params) {
            let mut model = Gpt::new(&Build::new(gpu()), cfg.clone(), &mut Rng::new(4)).unwrap();
            model.set_fused_attention(Some(fused));
            let batch = TokenBatch::new(gpu(), &cfg, &tokens, &targets, b, t).unwrap();
            zero_grads(gpu(), &model.params());
            let losses = model
                .forward_backward(gpu(), &batch, LossGrad::plain(0.05), &mut NoHooks)
                .unwrap();
            (
                losses.to_f32(gpu()).unwrap(),
                read_params(&model.params()).1,
            )
        };
        let ((kept_losses, kept), (fused_losses, fused)) = (run(false), run(true));
        for (k, f) in kept_losses.iter().zip(&fused_losses) {
            assert!(
                (k - f).abs() <= 1e-5 * k.abs().max(1.0),
                "{family:?}: loss {k} vs {f}"
            );
        }
        for (name, want) in &kept {
            let scale = want.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            for (g, w) in fused[name].iter().zip(want) {
                assert!(
                    (g - w).abs() <= 1e-7 + 1e-4 * scale,
                    "{family:?} {name}: {g} vs {w}"
                );
            }
        }
    }
}
