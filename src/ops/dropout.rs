//! Inverted dropout with a counter-based mask (`shaders/dropout.wgsl`): element i is kept when
//! `mix(i ^ mix(seed)) ≥ p·2³²` and scaled by 1/(1 − p). The backward is the same call on the
//! gradient with the same seed; recomputation with the seed gives the same mask.

use super::dispatch_items;
use crate::gpu::{Access, Gpu, Kernel, Shader};
use crate::tensor::Tensor;

const DROPOUT: Kernel = Kernel::new(Shader::Dropout, "dropout");

/// The kernel's 32-bit mixer (lowbias32), for host references.
pub fn mix(v: u32) -> u32 {
    let mut h = v;
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// The mask's threshold for drop probability `p` in [0, 1).
pub fn threshold(p: f32) -> u32 {
    (p as f64 * 4_294_967_296.0).round().min(u32::MAX as f64) as u32
}

/// Whether element `i` is kept under `seed` at drop probability `p` (the kernel's rule).
pub fn kept(i: u32, seed: u32, p: f32) -> bool {
    mix(i ^ mix(seed)) >= threshold(p)
}

/// out = x ⊙ mask / (1 − p) (out and x of the same size, not the same tensor).
pub fn dropout(gpu: &Gpu, x: &Tensor, p: f32, seed: u32, out: &Tensor) {
    let (Some(x), Some(o)) = (super::widen(gpu, x), super::Written::new(gpu, out, false)) else {
        return;
    };
    dropout_f32(gpu, &x, p, seed, o.f32());
    o.done(gpu);
}

fn dropout_f32(gpu: &Gpu, x: &Tensor, p: f32, seed: u32, out: &Tensor) {
    super::expect_f32("dropout", &[x, out]);
    super::expect_numel("dropout out", out, x.numel());
    assert!((0.0..1.0).contains(&p), "dropout: p = {p} is not in [0, 1)");
    let scale = 1.0 / (1.0 - p);
    let n = x.numel();
    let params = [n as u32, seed, threshold(p), scale.to_bits()];
    let args = [(x, Access::Read), (out, Access::ReadWrite)];
    dispatch_items(gpu, &DROPOUT, &args, &params, n, 256);
}
