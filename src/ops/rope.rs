//! Rotary position embeddings (`shaders/rope.wgsl`), Hugging Face's "rotate half" layout as
//! Llama models use it: in each head's first `rot` dimensions, dimension i < rot/2 pairs with
//! i + rot/2 and the pair turns by t·θ_i, θ_i = base^(−2i/rot), t the position. The angles'
//! cos and sin come from tables the host computes in f64 ([`RopeTables`]), so every adapter
//! rotates by the same f32 values (GPUs' own cos and sin differ in their last bits). The
//! backward is the inverse rotation: the same kernel with the sine negated.

use super::{dispatch_items, expect_numel};
use crate::error::Result;
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::tensor::Tensor;

const ROPE: Kernel = Kernel::new(Shader::Rope, "rope");

/// cos and sin of t·θ_i for positions 0..positions and i < rot/2, (positions, rot/2) each, f32
/// rounded from f64.
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
    /// Dimensions that rotate (even, at most the head size).
    pub rot: usize,
    pub positions: usize,
}

impl RopeTables {
    pub fn new(gpu: &Gpu, base: f64, rot: usize, positions: usize) -> Result<RopeTables> {
        assert!(rot >= 2 && rot % 2 == 0, "rope: {rot} rotating dimensions");
        let (cos, sin) = rope_angles(base, rot, positions);
        let shape = [positions, rot / 2];
        Ok(RopeTables {
            cos: Tensor::from_f32(gpu, "rope cos", &shape, &cos, Category::Workspace)?,
            sin: Tensor::from_f32(gpu, "rope sin", &shape, &sin, Category::Workspace)?,
            rot,
            positions,
        })
    }
}

/// The tables' values: cos and sin of t·base^(−2i/rot) in f64, rounded to f32.
pub fn rope_angles(base: f64, rot: usize, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = rot / 2;
    let (mut cos, mut sin) = (vec![], vec![]);
    for t in 0..positions {
        for i in 0..half {
            let angle = t as f64 * base.powf(-2.0 * i as f64 / rot as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// out = x rotated (or, with `inverse`, rotated back: the backward of the rotation for dout).
/// x, out: (B, T, H, D) in any shape of that many elements, `seq` = T and `heads` = H; positions
/// start at `offset` (a KV cache's next position), all within the tables. Half tensors rotate
/// through f32 views (the angles' products in f32 whatever the storage).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    gpu: &Gpu,
    x: &Tensor,
    tables: &RopeTables,
    seq: usize,
    heads: usize,
    dim: usize,
    offset: usize,
    inverse: bool,
    out: &Tensor,
) {
    let (Some(x), Some(o)) = (super::widen(gpu, x), super::Written::new(gpu, out, false)) else {
        return;
    };
    let out = o.f32();
    super::expect_f32("rope", &[&x, out]);
    let rows = x.numel() / dim;
    assert_eq!(
        rows * dim,
        x.numel(),
        "rope: x {:?} in rows of {dim}",
        x.shape()
    );
    assert_eq!(
        rows % (seq * heads),
        0,
        "rope: {rows} rows of {seq} positions × {heads} heads"
    );
    assert!(
        tables.rot <= dim,
        "rope: {} rotating dimensions of {dim}",
        tables.rot
    );
    assert!(
        offset + seq <= tables.positions,
        "rope: positions {offset}..{} past the tables' {}",
        offset + seq,
        tables.positions
    );
    expect_numel("rope out", out, x.numel());
    let params = [
        rows as u32,
        seq as u32,
        heads as u32,
        dim as u32,
        tables.rot as u32,
        offset as u32,
        (if inverse { -1.0f32 } else { 1.0 }).to_bits(),
    ];
    let args = [
        (&*x, Access::Read),
        (&tables.cos, Access::Read),
        (&tables.sin, Access::Read),
        (out, Access::ReadWrite),
    ];
    let per_row = tables.rot / 2 + (dim - tables.rot);
    dispatch_items(gpu, &ROPE, &args, &params, rows * per_row, 64);
    o.done(gpu);
}
