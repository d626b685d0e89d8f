//! Causal multi-head self-attention, forward and backward, over GPT-2's packed qkv layout.
//! Kernel: `shaders/attention.wgsl`.

use super::{dispatch_items, expect_numel};
use crate::gpu::{Access, Gpu, Kernel, Shader};
use crate::tensor::Tensor;

const FORWARD_SCORES: Kernel = Kernel::new(Shader::Attention, "forward_scores");
const FORWARD_VALUES: Kernel = Kernel::new(Shader::Attention, "forward_values");
const BACKWARD_SCORES: Kernel = Kernel::new(Shader::Attention, "backward_scores");
const BACKWARD_QKV: Kernel = Kernel::new(Shader::Attention, "backward_qkv");
const WG: usize = 64;

/// (batch, seq, channels) read from qkv (B, T, 3C), and the uniform block.
fn dims(qkv: &Tensor, heads: usize) -> (usize, usize, usize, [u32; 5]) {
    let shape = qkv.shape();
    assert!(
        shape.len() == 3 && shape[2] % 3 == 0,
        "attention qkv must be (B, T, 3C): {qkv:?}"
    );
    let (b, t, c) = (shape[0], shape[1], shape[2] / 3);
    assert!(
        heads > 0 && c % heads == 0,
        "attention: {c} channels do not split into {heads} heads"
    );
    let scale = 1.0 / ((c / heads) as f32).sqrt();
    (
        b,
        t,
        c,
        [b as u32, t as u32, c as u32, heads as u32, scale.to_bits()],
    )
}

/// att (B, NH, T, T) = causal softmax of scaled q·k; out (B, T, C) = att·v.
pub fn attention_forward(gpu: &Gpu, qkv: &Tensor, heads: usize, att: &Tensor, out: &Tensor) {
    let (b, t, c, params) = dims(qkv, heads);
    expect_numel("attention att", att, b * heads * t * t);
    expect_numel("attention out", out, b * t * c);
    dispatch_items(
        gpu,
        &FORWARD_SCORES,
        &[(qkv, Access::Read), (att, Access::ReadWrite)],
        &params,
        b * heads * t,
        WG,
    );
    dispatch_items(
        gpu,
        &FORWARD_VALUES,
        &[
            (qkv, Access::Read),
            (att, Access::Read),
            (out, Access::ReadWrite),
        ],
        &params,
        b * t * c,
        WG,
    );
}

/// dqkv (B, T, 3C) from dout (B, T, C), the forward's qkv and att; dpre (B, NH, T, T) is workspace.
pub fn attention_backward(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    att: &Tensor,
    heads: usize,
    dpre: &Tensor,
    dqkv: &Tensor,
) {
    let (b, t, c, params) = dims(qkv, heads);
    expect_numel("attention dout", dout, b * t * c);
    expect_numel("attention att", att, b * heads * t * t);
    expect_numel("attention dpre", dpre, b * heads * t * t);
    expect_numel("attention dqkv", dqkv, b * t * 3 * c);
    let mut args = vec![
        (dout, Access::Read),
        (qkv, Access::Read),
        (att, Access::Read),
        (dpre, Access::ReadWrite),
    ];
    dispatch_items(gpu, &BACKWARD_SCORES, &args, &params, b * heads * t, WG);
    args[3].1 = Access::Read;
    args.push((dqkv, Access::ReadWrite));
    dispatch_items(gpu, &BACKWARD_QKV, &args, &params, b * t * 3 * c, WG);
}
