//! LayerNorm over the last dimension, forward and backward. Kernel: `shaders/layernorm.wgsl`.

use super::{dispatch_items, expect_numel, flag};
use crate::gpu::{Access, Gpu, Kernel, Shader};
use crate::tensor::Tensor;

const FORWARD: Kernel = Kernel::new(Shader::Layernorm, "forward");
const BACKWARD_INPUT: Kernel = Kernel::new(Shader::Layernorm, "backward_input");
const BACKWARD_PARAMS: Kernel = Kernel::new(Shader::Layernorm, "backward_params");

/// out = (x − mean)·rstd·w + b per row, saving mean and rstd for the backward.
/// x, out: (R, C); w, b: (C); mean, rstd: (R).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f32,
    out: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
) {
    let (rows, cols) = (x.rows(), x.cols());
    expect_numel("layernorm w", w, cols);
    expect_numel("layernorm b", b, cols);
    expect_numel("layernorm out", out, rows * cols);
    expect_numel("layernorm mean", mean, rows);
    expect_numel("layernorm rstd", rstd, rows);
    let params = [rows as u32, cols as u32, eps.to_bits(), 0];
    dispatch_items(
        gpu,
        &FORWARD,
        &[
            (x, Access::Read),
            (w, Access::Read),
            (b, Access::Read),
            (out, Access::ReadWrite),
            (mean, Access::ReadWrite),
            (rstd, Access::ReadWrite),
        ],
        &params,
        rows,
        1,
    );
}

/// dx is written; dw and db are written, or added to with `accumulate`.
/// dout, x, dx: (R, C); w, dw, db: (C); mean, rstd: (R) from the forward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    gpu: &Gpu,
    dout: &Tensor,
    x: &Tensor,
    w: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dx: &Tensor,
    dw: &Tensor,
    db: &Tensor,
    accumulate: bool,
) {
    let (rows, cols) = (x.rows(), x.cols());
    for (what, t, n) in [
        ("dout", dout, rows * cols),
        ("w", w, cols),
        ("mean", mean, rows),
        ("rstd", rstd, rows),
        ("dx", dx, rows * cols),
        ("dw", dw, cols),
        ("db", db, cols),
    ] {
        expect_numel(what, t, n);
    }
    let params = [rows as u32, cols as u32, 0, flag(accumulate)];
    let inputs = [
        (dout, Access::Read),
        (x, Access::Read),
        (w, Access::Read),
        (mean, Access::Read),
        (rstd, Access::Read),
    ];
    let mut args = inputs.to_vec();
    args.extend([
        (dx, Access::ReadWrite),
        (dw, Access::ReadWrite),
        (db, Access::ReadWrite),
    ]);
    dispatch_items(gpu, &BACKWARD_INPUT, &args, &params, rows, 1);
    dispatch_items(gpu, &BACKWARD_PARAMS, &args, &params, cols, 64);
}
