//! Every optimizer kernel against a float64 CPU reference of the same update over 10 steps, on
//! random parameters and gradients that include exact zeros, tiny and huge values; 8-bit Adam
//! against a CPU reference that quantizes the same way; the dynamic maps against an independent
//! construction; and optimizer-state memory against the per-parameter formula.

use crate::common::*;
use wgtrain::nn::Param;
use wgtrain::optim::quant_map::{dynamic_map, nearest_code};
use wgtrain::optim::{grad_norm_sq, Optimizer, OptimizerConfig, OptimizerName, BLOCK_8BIT};
use wgtrain::rng::Rng;
use wgtrain::{Category, Gpu};

const STEPS: usize = 10;

/// Gradients for step `s`: normal values, with exact zeros, tiny (1e-12) and huge (1e6) ones.
fn grads(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 11 {
            0 => 0.0,
            1 => 1e-12 * rng.normal() as f32,
            2 => 1e6 * rng.normal() as f32,
            _ => rng.normal() as f32,
        })
        .collect()
}

/// A float64 reference of each update rule, one tensor at a time.
struct Reference {
    h: wgtrain::optim::Hyper,
    x: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    s3: Vec<f64>,
    t: i32,
    gamma: f64,
}

impl Reference {
    fn new(h: wgtrain::optim::Hyper, x: &[f32]) -> Self {
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let n = x.len();
        Reference {
            h,
            s1: if h.name == OptimizerName::NagGs {
                x.clone()
            } else {
                vec![0.0; n]
            },
            x,
            s2: vec![0.0; n],
            s3: vec![0.0; n],
            t: 0,
            gamma: h.gamma0 as f64,
        }
    }

    /// One update; with `clip` > 0 the gradient is first scaled by min(1, clip / (‖g‖ + 1e-6))
    /// (global-norm clipping, the norm in f64 over the whole tensor).
    fn step(&mut self, g: &[f32], lr: f64, clip: f64) {
        let h = self.h;
        let scale = if clip > 0.0 {
            let norm = g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            (clip / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        let (b1, b2, eps, wd) = (
            h.beta1 as f64,
            h.beta2 as f64,
            h.eps as f64,
            h.weight_decay as f64,
        );
        let mu = h.momentum as f64;
        self.t += 1;
        let bc1 = 1.0 - b1.powi(self.t);
        let bc2 = 1.0 - b2.powi(self.t);
        let nag_b = lr * h.mu as f64 / (lr * h.mu as f64 + self.gamma);
        for i in 0..self.x.len() {
            let x = self.x[i];
            let g = g[i] as f64 * scale;
            match h.name {
                OptimizerName::Sgd => self.x[i] = x - lr * (g + wd * x),
                OptimizerName::Momentum | OptimizerName::Nesterov => {
                    let gd = g + wd * x;
                    self.s1[i] = mu * self.s1[i] + gd;
                    let step = if h.name == OptimizerName::Nesterov {
                        gd + mu * self.s1[i]
                    } else {
                        self.s1[i]
                    };
                    self.x[i] = x - lr * step;
                }
                OptimizerName::Rmsprop => {
                    let a = h.alpha as f64;
                    let gd = g + wd * x;
                    self.s1[i] = a * self.s1[i] + (1.0 - a) * gd * gd;
                    let denom = if h.centered {
                        self.s3[i] = a * self.s3[i] + (1.0 - a) * gd;
                        (self.s1[i] - self.s3[i] * self.s3[i]).sqrt() + eps
                    } else {
                        self.s1[i].sqrt() + eps
                    };
                    if mu > 0.0 {
                        self.s2[i] = mu * self.s2[i] + gd / denom;
                        self.x[i] = x - lr * self.s2[i];
                    } else {
                        self.x[i] = x - lr * gd / denom;
                    }
                }
                OptimizerName::Adam | OptimizerName::Adamw | OptimizerName::Adam8bit => {
                    let decoupled = h.name == OptimizerName::Adamw;
                    let gd = if decoupled { g } else { g + wd * x };
                    self.s1[i] = b1 * self.s1[i] + (1.0 - b1) * gd;
                    self.s2[i] = b2 * self.s2[i] + (1.0 - b2) * gd * gd;
                    let mut u = (self.s1[i] / bc1) / ((self.s2[i] / bc2).sqrt() + eps);
                    if decoupled {
                        u += wd * x;
                    }
                    self.x[i] = x - lr * u;
                }
                OptimizerName::Lion => {
                    let c = b1 * self.s1[i] + (1.0 - b1) * g;
                    let sign = if c > 0.0 {
                        1.0
                    } else if c < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
                    self.x[i] = x - lr * (sign + wd * x);
                    self.s1[i] = b2 * self.s1[i] + (1.0 - b2) * g;
                }
                OptimizerName::NagGs => {
                    let v = (1.0 - nag_b) * self.s1[i] + nag_b * x - (nag_b / h.mu as f64) * g;
                    self.s1[i] = v;
                    self.x[i] = (x + lr * v) / (1.0 + lr);
                }
            }
        }
        self.gamma = (self.gamma + lr * h.mu as f64) / (1.0 + lr);
    }
}

/// `STEPS` updates on the GPU, the global norm recorded by `grad_norm_sq` before each (as the
/// trainer's phases do) and clipped to `clip` (0: off).
fn run_gpu(
    gpu: &Gpu,
    config: &OptimizerConfig,
    x0: &[f32],
    all_grads: &[Vec<f32>],
    lr: f32,
    decay: bool,
    clip: f32,
) -> (Vec<f32>, Optimizer, Param) {
    let n = x0.len();
    let p = Param::new(&wgtrain::nn::Build::new(gpu), "w", &[n], x0, decay).unwrap();
    let mut opt = Optimizer::new(gpu, config, clip, &[&p]).unwrap();
    let norm_sq = wgtrain::optim::guard::step_stats(gpu, 1.0).unwrap();
    for g in all_grads {
        p.grad().write_f32(gpu, g);
        grad_norm_sq(gpu, &[&p], &norm_sq).unwrap();
        opt.step(gpu, &[&p], lr, &norm_sq).unwrap();
    }
    (p.value().to_f32(gpu).unwrap(), opt, p)
}

/// The method against the f64 reference, without clipping and with a global-norm clip of 1
/// (which every step's gradients exceed: they hold values of 1e6).
fn check_against_reference(config: OptimizerConfig, lr: f32) {
    let h = config.resolve().unwrap();
    let mut rng = Rng::new(100 + h.name as u64);
    for clip in [0.0f32, 1.0] {
        for n in [1, 7, 300] {
            let x0 = rng.uniform_vec(n, -1.0, 1.0);
            let all: Vec<Vec<f32>> = (0..STEPS).map(|_| grads(&mut rng, n)).collect();
            let (got, _, _) = run_gpu(gpu(), &config, &x0, &all, lr, true, clip);
            let mut r = Reference::new(h, &x0);
            for g in &all {
                r.step(g, lr as f64, clip as f64);
            }
            // f32 arithmetic over 10 steps of size ≤ ~lr·(a few): a few ulps of the values and
            // of lr·steps; SGD's huge gradients move parameters by ~lr·1e6, so relative terms
            // count. The clip scale is computed from an f32 norm (relative error ~1e-7).
            let atol = 1e-6 + 1e-6 * lr as f64 * STEPS as f64;
            let what = format!("{} n={n} clip {clip}", h.describe());
            assert_close(&what, &got, &r.x, atol, 2e-5);
        }
    }
}

#[test]
fn sgd_momentum_and_nesterov_match_the_reference() {
    for (name, wd) in [
        (OptimizerName::Sgd, 0.01),
        (OptimizerName::Momentum, 0.0),
        (OptimizerName::Nesterov, 0.01),
    ] {
        let mut c = OptimizerConfig::named(name);
        c.weight_decay = Some(wd);
        check_against_reference(c, 1e-3);
    }
}

#[test]
fn rmsprop_plain_centered_and_with_momentum_matches_the_reference() {
    for (centered, momentum) in [(false, 0.0), (true, 0.0), (false, 0.9), (true, 0.5)] {
        let mut c = OptimizerConfig::named(OptimizerName::Rmsprop);
        c.centered = Some(centered);
        c.momentum = Some(momentum);
        c.weight_decay = Some(0.01);
        check_against_reference(c, 1e-3);
    }
}

#[test]
fn adam_and_adamw_match_the_reference() {
    for name in [OptimizerName::Adam, OptimizerName::Adamw] {
        let mut c = OptimizerConfig::named(name);
        c.weight_decay = Some(0.1);
        check_against_reference(c, 1e-2);
    }
}

/// Adam's texture form (CPU adapters: each chunk of 64 Ki vec4s copied into operand textures)
/// and its buffer form give the same bits, with clipping and weight decay, on a tensor of more
/// than four chunks with a partial last chunk and a scalar tail. A device of its own, since the
/// form is a per-device setting and the other tests share one.
#[test]
fn adam_reads_through_textures_with_the_buffer_forms_bits() {
    let own = Gpu::new(None).unwrap();
    let n = 4 * (4 * 64 * 1024 + 100) + 3;
    let mut rng = Rng::new(7);
    let x0 = rng.uniform_vec(n, -1.0, 1.0);
    let all: Vec<Vec<f32>> = (0..3).map(|_| grads(&mut rng, n)).collect();
    for name in [OptimizerName::Adam, OptimizerName::Adamw] {
        let mut c = OptimizerConfig::named(name);
        c.weight_decay = Some(0.1);
        let mut runs = Vec::new();
        for textures in [true, false] {
            own.set_texture_reads(textures);
            assert_eq!(own.texture_reads(), textures);
            runs.push(run_gpu(&own, &c, &x0, &all, 1e-2, true, 1.0).0);
        }
        let differ = runs[0]
            .iter()
            .zip(&runs[1])
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "{name:?}: {differ} of {n} parameters differ between the forms"
        );
        // (a few parameters whose update is below half an ulp of their value stay)
        let moved = (0..n).filter(|&i| runs[0][i] != x0[i]).count();
        assert!(
            moved > n - n / 1000,
            "{name:?}: only {moved} of {n} parameters moved"
        );
    }
}

#[test]
fn lion_matches_the_reference_with_exact_zero_signs() {
    let mut c = OptimizerConfig::named(OptimizerName::Lion);
    c.weight_decay = Some(0.1);
    check_against_reference(c.clone(), 1e-3);
    // all-zero gradients: sign(0) = 0, so only weight decay moves the parameters
    let x0 = vec![0.5f32; 9];
    let (got, _, _) = run_gpu(gpu(), &c, &x0, &vec![vec![0.0; 9]; 3], 1e-3, true, 0.0);
    let want = 0.5 * (1.0f64 - 1e-3 * 0.1).powi(3);
    assert_close("lion zero grads", &got, &[want; 9], 1e-7, 0.0);
}

#[test]
fn nag_gs_matches_the_reference_and_refuses_a_nonpositive_mu() {
    check_against_reference(OptimizerConfig::named(OptimizerName::NagGs), 1e-2);
    let mut c = OptimizerConfig::named(OptimizerName::NagGs);
    c.mu = Some(2.0);
    c.gamma0 = Some(0.5);
    check_against_reference(c.clone(), 5e-2);
    c.mu = Some(0.0);
    assert!(c.resolve().unwrap_err().to_string().contains("mu > 0"));
}

#[test]
fn the_dynamic_maps_match_an_independent_construction() {
    // Independently: for exponent e = 0..6, a signed map has 2^e midpoints of the split of
    // [0.1, 1] into 2^e parts, scaled by 10^(e-6), and their negatives; an unsigned map has
    // 2^(e+1) midpoints; both add 0 and 1.
    for signed in [true, false] {
        let mut want: Vec<f64> = vec![0.0, 1.0];
        for e in 0..7 {
            let parts = if signed {
                1usize << e
            } else {
                1usize << (e + 1)
            };
            for k in 0..parts {
                let mid = 0.1 + 0.9 * (2 * k + 1) as f64 / (2 * parts) as f64;
                let v = mid * 10f64.powi(e - 6);
                want.push(v);
                if signed {
                    want.push(-v);
                }
            }
        }
        want.sort_by(f64::total_cmp);
        let got = dynamic_map(signed);
        assert_eq!(got.len(), 256);
        assert_close(
            &format!("dynamic map signed={signed}"),
            &got,
            &want,
            0.0,
            1e-6,
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert_eq!(got[255], 1.0);
        assert_eq!(got.iter().filter(|&&v| v == 0.0).count(), 1);
    }
}

/// A float32 CPU model of the 8-bit kernel: the same dequantize, update, absmax and nearest-code
/// requantize, in the same order.
struct Adam8bitReference {
    signed: Vec<f32>,
    unsigned: Vec<f32>,
    x: Vec<f32>,
    m_codes: Vec<u8>,
    v_codes: Vec<u8>,
    absmax: Vec<f32>,
    t: i32,
}

impl Adam8bitReference {
    fn step(&mut self, g: &[f32], lr: f32, h: &wgtrain::optim::Hyper) -> Vec<f32> {
        self.t += 1;
        let bc1 = (1.0 - (h.beta1 as f64).powi(self.t)) as f32;
        let bc2 = (1.0 - (h.beta2 as f64).powi(self.t)) as f32;
        let n = self.x.len();
        let mut near_ties = vec![];
        for b in 0..n.div_ceil(BLOCK_8BIT) {
            let range = b * BLOCK_8BIT..((b + 1) * BLOCK_8BIT).min(n);
            let mut ms = vec![];
            let mut vs = vec![];
            for i in range.clone() {
                let m_old = self.signed[self.m_codes[i] as usize] * self.absmax[2 * b];
                let v_old = self.unsigned[self.v_codes[i] as usize] * self.absmax[2 * b + 1];
                let m = h.beta1 * m_old + (1.0 - h.beta1) * g[i];
                let v = h.beta2 * v_old + (1.0 - h.beta2) * g[i] * g[i];
                self.x[i] -= lr * ((m / bc1) / ((v / bc2).sqrt() + h.eps));
                ms.push(m);
                vs.push(v);
            }
            let am = ms.iter().fold(0.0f32, |a, m| a.max(m.abs()));
            let av = vs.iter().fold(0.0f32, |a, v| a.max(*v));
            for (k, i) in range.enumerate() {
                let qm = if am > 0.0 { ms[k] / am } else { 0.0 };
                let qv = if av > 0.0 { vs[k] / av } else { 0.0 };
                self.m_codes[i] = nearest_code(&self.signed, qm);
                self.v_codes[i] = nearest_code(&self.unsigned, qv);
                near_ties.push(qm);
            }
            self.absmax[2 * b] = am;
            self.absmax[2 * b + 1] = av;
        }
        near_ties
    }
}

fn unpack(words: &[u32], n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (words[i / 4] >> (8 * (i % 4))) as u8)
        .collect()
}

#[test]
fn adam8bit_matches_a_reference_that_quantizes_the_same_way() {
    // without clipping, and with a global-norm clip of 1 (the gradients' norm is about 38)
    for clip in [0.0f32, 1.0] {
        let gpu = gpu();
        let n = 4096 + 300; // ≥ 4096: 8-bit state; the last block is partial
        let mut rng = Rng::new(8);
        let x0 = rng.uniform_vec(n, -1.0, 1.0);
        let all: Vec<Vec<f32>> = (0..STEPS).map(|_| rng.uniform_vec(n, -1.0, 1.0)).collect();
        let config = OptimizerConfig::named(OptimizerName::Adam8bit);
        let h = config.resolve().unwrap();
        let (got, opt, _) = run_gpu(gpu, &config, &x0, &all, 1e-3, true, clip);
        assert_eq!(opt.state()[0].1.len(), 3, "8-bit state for a tensor of {n}");
        let mut r = Adam8bitReference {
            signed: dynamic_map(true),
            unsigned: dynamic_map(false),
            x: x0.clone(),
            m_codes: vec![0; n],
            v_codes: vec![0; n],
            absmax: vec![0.0; 2 * n.div_ceil(BLOCK_8BIT)],
            t: 0,
        };
        for g in &all {
            // clipping scales the gradient by min(1, clip / (‖g‖ + 1e-6)) before the update
            let norm = g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            let scale = if clip > 0.0 {
                (clip as f64 / (norm + 1e-6)).min(1.0)
            } else {
                1.0
            };
            let g: Vec<f32> = g.iter().map(|&v| (v as f64 * scale) as f32).collect();
            r.step(&g, 1e-3, &h);
        }
        let m_codes = unpack(&opt.state()[0].1[0].1.to_u32(gpu).unwrap(), n);
        let v_codes = unpack(&opt.state()[0].1[1].1.to_u32(gpu).unwrap(), n);
        // Codes are identical except where f32 rounding on the GPU (e.g. a fused multiply-add) puts
        // a value on the other side of a midpoint between two codes: then they differ by one.
        let differing = |a: &[u8], b: &[u8]| -> usize {
            a.iter()
                .zip(b)
                .map(|(x, y)| {
                    assert!((*x as i32 - *y as i32).abs() <= 1, "codes {x} vs {y}");
                    usize::from(x != y)
                })
                .sum()
        };
        let (dm, dv) = (
            differing(&m_codes, &r.m_codes),
            differing(&v_codes, &r.v_codes),
        );
        assert!(
            dm + dv <= n / 500,
            "{dm} m codes and {dv} v codes of {n} differ"
        );
        let want: Vec<f64> = r.x.iter().map(|&v| v as f64).collect();
        assert_close("adam8bit params", &got, &want, 1e-5, 1e-5);
        let absmax = opt.state()[0].1[2].1.to_f32(gpu).unwrap();
        let want: Vec<f64> = r.absmax.iter().map(|&v| v as f64).collect();
        assert_close("adam8bit absmax", &absmax, &want, 1e-9, 1e-4);
    }
}

#[test]
fn optimizer_state_bytes_match_the_formula_per_parameter() {
    // (name, bytes per parameter × 256) for a tensor of 256·k ≥ 4096 values
    // (optimizer, RMSProp's (centered, momentum), bytes per 256 parameters)
    type Case = (OptimizerName, Option<(bool, f32)>, u64);
    let cases: [Case; 10] = [
        (OptimizerName::Sgd, None, 0),
        (OptimizerName::Momentum, None, 4 * 256),
        (OptimizerName::Nesterov, None, 4 * 256),
        (OptimizerName::Rmsprop, None, 4 * 256),
        (OptimizerName::Rmsprop, Some((true, 0.0)), 8 * 256),
        (OptimizerName::Adam, None, 8 * 256),
        (OptimizerName::Adamw, None, 8 * 256),
        (OptimizerName::Lion, None, 4 * 256),
        (OptimizerName::NagGs, None, 4 * 256),
        (OptimizerName::Adam8bit, None, 2 * 256 + 8),
    ];
    let n = 256 * 20;
    for (name, rms, per_256) in cases {
        let gpu = Gpu::new(None).unwrap();
        let p = Param::new(
            &wgtrain::nn::Build::new(&gpu),
            "w",
            &[n],
            &vec![0.0; n],
            true,
        )
        .unwrap();
        let mut c = OptimizerConfig::named(name);
        if let Some((centered, momentum)) = rms {
            c.centered = Some(centered);
            c.momentum = Some(momentum);
        }
        let before = gpu.memory().live.get(Category::OptimizerState);
        let opt = Optimizer::new(&gpu, &c, 1.0, &[&p]).unwrap();
        let bytes = gpu.memory().live.get(Category::OptimizerState) - before;
        assert_eq!(bytes, per_256 * n as u64 / 256, "{name:?} {rms:?}");
        drop(opt);
    }
}
