//! Elementwise ops and their backward passes. Kernel: `shaders/elementwise.wgsl`.

use super::{dispatch_vec4_and_tail, expect_numel};
use crate::gpu::shaders::ELEMENTWISE_TEXTURES;
use crate::gpu::{Access, Gpu, Kernel, Shader};
use crate::tensor::Tensor;

const WG: usize = 256;

/// Records `entry` over out's n elements: the `entry4` kernel (vec4) on the first 4·(n/4), the
/// scalar `entry` on the rest. Half-precision tensors go through f32 views (`super::View`).
fn run(gpu: &Gpu, entry: [&'static str; 2], x: &Tensor, y: &Tensor, out: &Tensor, alpha: f32) {
    let same = std::ptr::eq(x, y);
    let reads_out = entry[0] == "accumulate";
    let (Some(xv), Some(yv), Some(o)) = (
        super::widen(gpu, x),
        if same {
            Some(super::View::Same(y))
        } else {
            super::widen(gpu, y)
        },
        super::Written::new(gpu, out, reads_out),
    ) else {
        return;
    };
    let yv: &Tensor = if same { &xv } else { &yv };
    run_f32(gpu, entry, &xv, yv, o.f32(), alpha);
    o.done(gpu);
}

fn run_f32(gpu: &Gpu, entry: [&'static str; 2], x: &Tensor, y: &Tensor, out: &Tensor, alpha: f32) {
    super::expect_f32(entry[0], &[x, y, out]);
    let [scalar, vec4] = entry;
    let n = out.numel();
    expect_numel(scalar, x, n);
    expect_numel(scalar, y, n);
    let args = [
        (x, Access::Read),
        (y, Access::Read),
        (out, Access::ReadWrite),
    ];
    let kernels = (
        &Kernel::new(Shader::Elementwise, vec4),
        &Kernel::new(Shader::Elementwise, scalar),
    );
    // x4 and y4 through textures where the device reads them faster
    let textured = Some((&ELEMENTWISE_TEXTURES, &[0, 1][..]));
    let words = [n as u32, alpha.to_bits()];
    dispatch_vec4_and_tail(gpu, kernels, textured, &args, &words, n, WG);
}

/// out = x + y
pub fn add(gpu: &Gpu, x: &Tensor, y: &Tensor, out: &Tensor) {
    run(gpu, ["add", "add4"], x, y, out, 0.0);
}

/// Backward of `add`: dx += dout and dy += dout (gradients accumulate).
pub fn add_backward(gpu: &Gpu, dout: &Tensor, dx: &Tensor, dy: &Tensor) {
    accumulate(gpu, dout, 1.0, dx);
    accumulate(gpu, dout, 1.0, dy);
}

/// out = alpha · x
pub fn scale(gpu: &Gpu, x: &Tensor, alpha: f32, out: &Tensor) {
    run(gpu, ["scale", "scale4"], x, x, out, alpha);
}

/// Backward of `scale`: dx = alpha · dout.
pub fn scale_backward(gpu: &Gpu, dout: &Tensor, alpha: f32, dx: &Tensor) {
    scale(gpu, dout, alpha, dx);
}

/// out += alpha · x
pub fn accumulate(gpu: &Gpu, x: &Tensor, alpha: f32, out: &Tensor) {
    run(gpu, ["accumulate", "accumulate4"], x, x, out, alpha);
}

/// out = max(x, 0)
pub fn relu_forward(gpu: &Gpu, x: &Tensor, out: &Tensor) {
    run(gpu, ["relu_forward", "relu_forward4"], x, x, out, 0.0);
}

/// out = sign(x) (−1, 0 or 1).
pub fn sign(gpu: &Gpu, x: &Tensor, out: &Tensor) {
    run(gpu, ["sign_map", "sign_map4"], x, x, out, 0.0);
}

/// dx = dout · [x > 0], with x the forward input.
pub fn relu_backward(gpu: &Gpu, x: &Tensor, dout: &Tensor, dx: &Tensor) {
    run(gpu, ["relu_backward", "relu_backward4"], x, dout, dx, 0.0);
}

/// out = GELU(x), tanh approximation (GPT-2).
pub fn gelu_forward(gpu: &Gpu, x: &Tensor, out: &Tensor) {
    run(gpu, ["gelu_forward", "gelu_forward4"], x, x, out, 0.0);
}

/// dx = dout · GELU'(x), with x the forward input.
pub fn gelu_backward(gpu: &Gpu, x: &Tensor, dout: &Tensor, dx: &Tensor) {
    run(gpu, ["gelu_backward", "gelu_backward4"], x, dout, dx, 0.0);
}

/// out = x · y
pub fn mul(gpu: &Gpu, x: &Tensor, y: &Tensor, out: &Tensor) {
    run(gpu, ["mul", "mul4"], x, y, out, 0.0);
}

/// SwiGLU's forward: out = silu(gate) · up, silu(v) = v·sigmoid(v) (Llama's MLP between its up
/// and down projections).
pub fn swiglu(gpu: &Gpu, gate: &Tensor, up: &Tensor, out: &Tensor) {
    run(gpu, ["silu_mul", "silu_mul4"], gate, up, out, 0.0);
}

/// SwiGLU's backward: d_up = dout · silu(gate), d_gate = dout · up · silu'(gate) (`scratch`,
/// of dout's shape, holds dout·up).
pub fn swiglu_backward(
    gpu: &Gpu,
    gate: &Tensor,
    up: &Tensor,
    dout: &Tensor,
    scratch: &Tensor,
    d_gate: &Tensor,
    d_up: &Tensor,
) {
    run(gpu, ["silu_mul", "silu_mul4"], gate, dout, d_up, 0.0);
    run(gpu, ["mul", "mul4"], dout, up, scratch, 0.0);
    run(
        gpu,
        ["silu_backward", "silu_backward4"],
        gate,
        scratch,
        d_gate,
        0.0,
    );
}
