//! The Kashin method on the GPU (src/quant/kashin.rs, shaders/kashin.wgsl): the decomposition
//! against a float64 replay of the same iteration, the k-means assignment against the host's,
//! and the decoding against the host's f64 dequantization.

use crate::common::*;
use wgtrain::quant::kashin::{
    assign_host, decompose, distortion, kmeans, pack_codes, quantize, Basis, Kashin, Options,
};
use wgtrain::rng::Rng;
use wgtrain::{Category, Tensor};

/// y = Q1ᵀ·x·Q2 or (transposed) Q1·x·Q2ᵀ in f64; q row-major (n, n).
fn rotate(q1: &[f64], x: &[f64], q2: &[f64], m: usize, n: usize, transpose: bool) -> Vec<f64> {
    let at = |q: &[f64], s: usize, i: usize, j: usize| {
        if transpose {
            q[i * s + j]
        } else {
            q[j * s + i]
        }
    };
    // t = op(Q1)·x, then t·op(Q2)ᵀ… written as explicit sums
    let mut t = vec![0.0; m * n];
    for i in 0..m {
        for k in 0..m {
            let a = at(q1, m, i, k);
            for j in 0..n {
                t[i * n + j] += a * x[k * n + j];
            }
        }
    }
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..n).map(|l| t[i * n + l] * at(q2, n, j, l)).sum();
        }
    }
    y
}

fn sign(v: f64) -> f64 {
    if v == 0.0 {
        0.0
    } else {
        v.signum()
    }
}

#[test]
fn decomposition_follows_the_rule_falls_monotonically_and_reconstructs() {
    let mut rng = Rng::new(90);
    // awkward sides (not multiples of 4 or of each other), both bases
    for (m, n, basis) in [
        (21, 13, Basis::Dct),
        (12, 40, Basis::Random { seed: 5 }),
        (48, 36, Basis::Dct),
    ] {
        let w: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32 * 0.02).collect();
        let tol = 1e-5;
        let d = decompose(gpu(), &w, m, n, basis, tol, 500).unwrap();
        let what = format!("({m}, {n}) {basis:?}");
        assert!(d.converged, "{what}: residual {}", d.residual());
        assert!(d.residual() < tol && d.residuals[0] > 0.99, "{what}");
        // ‖X‖² falls by c² > 0 each step: monotonic, up to the f32 rounding of the norm
        for (i, r) in d.residuals.windows(2).enumerate() {
            assert!(
                r[1] <= r[0] * (1.0 + 1e-6),
                "{what}: step {i}: {} -> {}",
                r[0],
                r[1]
            );
        }
        // a float64 replay of the first 8 iterations (later ones shrink X's entries to where
        // f32 rounding flips the signs of those nearest zero) taking the GPU's branches: each
        // branch is the rule's choice (unless the two ℓ1 norms are too close for f32 to tell),
        // and the factors agree
        let early = decompose(gpu(), &w, m, n, basis, tol, 8).unwrap();
        assert!(!early.converged && early.iterations() == 8, "{what}");
        assert_eq!(
            early.into_u[..],
            d.into_u[..8],
            "{what}: the same first steps"
        );
        let q1 = basis.matrix(m, false);
        let q2 = basis.matrix(n, true);
        let mut x: Vec<f64> = w.iter().map(|&v| v as f64 / d.norm).collect();
        let (mut u, mut v) = (vec![0.0; m * n], vec![0.0; m * n]);
        for (i, &into_u) in early.into_u.iter().enumerate() {
            let y = rotate(&q1, &x, &q2, m, n, false);
            let (l1x, l1y) = (
                x.iter().map(|a| a.abs()).sum::<f64>(),
                y.iter().map(|a| a.abs()).sum::<f64>(),
            );
            if (l1x - l1y).abs() > 1e-4 * l1x {
                assert_eq!(into_u, l1x > l1y, "{what}: branch at step {i}");
            }
            if into_u {
                let s: Vec<f64> = x.iter().map(|&a| sign(a)).collect();
                let a = l1x / s.iter().filter(|&&v| v != 0.0).count() as f64;
                for k in 0..m * n {
                    x[k] -= a * s[k];
                    u[k] += a * s[k];
                }
            } else {
                let s: Vec<f64> = y.iter().map(|&a| sign(a)).collect();
                let a = l1y / s.iter().filter(|&&v| v != 0.0).count() as f64;
                let p = rotate(&q1, &s, &q2, m, n, true);
                for k in 0..m * n {
                    x[k] -= a * p[k];
                    v[k] += a * s[k];
                }
            }
        }
        // entries are about 1/√(mn) ≈ 0.02..0.06: eight f32 steps, a few ulps each
        assert_close(&format!("{what}: U"), &early.u, &u, 1e-7, 1e-5);
        assert_close(&format!("{what}: V'"), &early.v, &v, 1e-7, 1e-5);
        // U + Q1 V' Q2ᵀ reconstructs X / ‖X‖ to the tolerance
        let v64: Vec<f64> = d.v.iter().map(|&a| a as f64).collect();
        let back = rotate(&q1, &v64, &q2, m, n, true);
        let err: f64 = (0..m * n)
            .map(|k| (d.u[k] as f64 + back[k] - w[k] as f64 / d.norm).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(err < tol + 1e-5, "{what}: ‖X/‖X‖ − U − V‖ = {err}");
    }
}

#[test]
fn the_bases_are_orthogonal() {
    for basis in [Basis::Dct, Basis::Random { seed: 3 }] {
        for n in [1, 2, 7, 16, 33] {
            let q = basis.matrix(n, false);
            for i in 0..n {
                for j in 0..n {
                    let dot: f64 = (0..n).map(|k| q[k * n + i] * q[k * n + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!(
                        (dot - want).abs() < 1e-12,
                        "{basis:?} n {n}: ({i}, {j}) {dot}"
                    );
                }
            }
        }
    }
    // regenerated from the seed: the same matrix; another seed, another matrix
    let r = Basis::Random { seed: 3 };
    assert_eq!(r.matrix(9, true), r.matrix(9, true));
    assert_ne!(r.matrix(9, false), r.matrix(9, true));
}

#[test]
fn kmeans_assignment_on_the_gpu_equals_the_hosts() {
    let mut rng = Rng::new(91);
    let n = 5003;
    let points: Vec<[f32; 2]> = (0..n)
        .map(|_| [rng.normal() as f32 * 0.01, rng.normal() as f32 * 0.01])
        .collect();
    for k in [1, 4, 16, 256] {
        let cents: Vec<[f32; 2]> = (0..k)
            .map(|_| [rng.normal() as f32 * 0.01, rng.normal() as f32 * 0.01])
            .collect();
        let flat: Vec<f32> = points.iter().flatten().copied().collect();
        let pts = upload("points", &[n, 2], &flat);
        let cflat: Vec<f32> = cents.iter().flatten().copied().collect();
        let cb = upload("centroids", &[k, 2], &cflat);
        let labels = Tensor::empty(
            gpu(),
            "labels",
            &[n],
            wgtrain::DType::U32,
            Category::Activations,
        )
        .unwrap();
        wgtrain::ops::kashin::assign(gpu(), &pts, &cb, &labels);
        assert_eq!(
            labels.to_u32(gpu()).unwrap(),
            assign_host(&points, &cents),
            "k {k}"
        );
    }
    // a tie goes to the lower index
    let tie = assign_host(&[[0.0, 0.0]], &[[1.0, 0.0], [-1.0, 0.0]]);
    assert_eq!(tie, vec![0]);
    // the whole k-means: labels are the final centroids' assignment, the distortion is below
    // the seeding's (k-means never increases it), and the same seed gives the same answer
    let (c, l) = kmeans(gpu(), &points, 16, 7, 2, 100).unwrap();
    assert_eq!(l, assign_host(&points, &c));
    let spread: f64 = distortion(&points, &[[0.0, 0.0]], &vec![0; n]);
    assert!(distortion(&points, &c, &l) < 0.2 * spread);
    assert_eq!(kmeans(gpu(), &points, 16, 7, 2, 100).unwrap(), (c, l));
}

#[test]
fn codes_pack_and_unpack_at_every_width() {
    let mut rng = Rng::new(92);
    for bits in 2..=8u32 {
        let labels: Vec<u32> = (0..77).map(|_| rng.below(1 << bits) as u32).collect();
        let k = Kashin {
            rows: 7,
            cols: 11,
            bits,
            basis: Basis::Dct,
            norm: 1.0,
            codebook: vec![[0.0; 2]; 1 << bits],
            codes: pack_codes(&labels, bits),
        };
        assert_eq!(k.codes.len(), (77 * bits as usize).div_ceil(8));
        let back: Vec<u32> = (0..77).map(|i| k.code(i)).collect();
        assert_eq!(back, labels, "{bits} bits");
    }
}

#[test]
fn gpu_decoding_matches_the_hosts_dequantization() {
    let mut rng = Rng::new(93);
    // 3 and 5 bits straddle u32 words; an odd shape
    for (m, n, bits, basis) in [
        (13, 22, 3, Basis::Dct),
        (20, 9, 5, Basis::Random { seed: 1 }),
        (32, 32, 2, Basis::Dct),
    ] {
        let w: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32 * 0.05).collect();
        let o = Options {
            bits,
            basis,
            ..Options::default()
        };
        let k = quantize(gpu(), &w, m, n, &o)
            .unwrap()
            .quantized
            .expect("converged");
        let out = zeros("decoded", &[m, n]);
        k.decode_on(gpu(), &out).unwrap();
        let want: Vec<f64> = k.dequantize().iter().map(|&v| v as f64).collect();
        // two f32 products over m and n terms of values about 0.05: a few ulps of their sum
        assert_close(
            &format!("({m}, {n}) {bits} bits"),
            &read(&out),
            &want,
            1e-6,
            1e-5,
        );
        // the codes stand for a matrix near w: 2^bits centroids for both factors
        let err = wgtrain::quant::relative_error(&k.dequantize(), &w);
        assert!(
            err < [0.0, 0.0, 0.45, 0.3, 0.25, 0.15][bits as usize],
            "{bits} bits: {err}"
        );
    }
}

#[test]
fn adversarial_matrices_decompose_cleanly() {
    let o = Options::default();
    // all zeros: nothing to decompose, decodes to zeros
    let k = quantize(gpu(), &[0.0; 40], 5, 8, &o)
        .unwrap()
        .quantized
        .unwrap();
    assert!(k.dequantize().iter().all(|&v| v == 0.0));
    // a constant matrix is sign(X) times a constant: one step into U
    let d = decompose(gpu(), &[0.3; 40], 5, 8, Basis::Dct, 1e-5, 100).unwrap();
    assert!(d.converged && d.iterations() <= 2, "{:?}", d.residuals);
    // one huge outlier among small weights: converges, and the outlier comes back
    let mut w: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 1e-3).collect();
    w[17] = 1e4;
    let q = quantize(gpu(), &w, 5, 8, &o)
        .unwrap()
        .quantized
        .expect("converged");
    let back = q.dequantize();
    assert!((back[17] / 1e4 - 1.0).abs() < 0.05, "{}", back[17]);
    // NaN is refused by position
    w[9] = f32::NAN;
    let e = quantize(gpu(), &w, 5, 8, &o).unwrap_err().to_string();
    assert!(e.contains("weight (1, 1) is NaN"), "{e}");
}
