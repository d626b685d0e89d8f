//! Shared test helpers: one Gpu per test process, random data, comparisons, finite differences.

use std::sync::OnceLock;
use wgtrain::rng::Rng;
use wgtrain::{Category, Gpu, Tensor};

/// One device for every kernel test in this process (pipelines are cached across tests). Tests
/// that count submits or bytes make their own `Gpu` instead.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new(None).unwrap_or_else(|e| panic!("kernel tests need an adapter: {e}"))
    })
}

pub fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.uniform_vec(n, -1.0, 1.0)
}

pub fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn upload(name: &str, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(gpu(), name, shape, data, Category::Activations).unwrap()
}

pub fn zeros(name: &str, shape: &[usize]) -> Tensor {
    Tensor::zeros(gpu(), name, shape, Category::Activations).unwrap()
}

pub fn read(t: &Tensor) -> Vec<f32> {
    t.to_f32(gpu()).unwrap()
}

/// |got − want| ≤ atol + rtol·|want| everywhere; the message names the worst element.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g as f64 - w).abs() - (atol + rtol * w.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
        assert!(
            g.is_finite() || !w.is_finite(),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
    let (i, excess) = worst;
    assert!(
        excess <= 0.0,
        "{what}[{i}]: got {}, want {} (atol {atol}, rtol {rtol})",
        got[i],
        want[i]
    );
}

/// The same check between two f64 vectors (reference analytic gradient vs finite differences).
#[track_caller]
pub fn assert_close64(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: analytic {g}, finite difference {w} (atol {atol}, rtol {rtol})"
        );
    }
}

/// Central finite differences of a scalar f64 function at x, step h.
pub fn finite_diff(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = x[i];
            x[i] = orig + h;
            let up = f(&x);
            x[i] = orig - h;
            let down = f(&x);
            x[i] = orig;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Σ a·b: projects an output onto a fixed random cotangent, giving the scalar that finite
/// differences check a vector-Jacobian product against.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
