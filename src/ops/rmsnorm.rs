//! RMSNorm over the last dimension (Llama's normalisation: out = x·rstd·w, rstd =
//! 1/sqrt(mean(x²) + eps), no mean subtracted, no bias), forward and backward
//! (`shaders/rmsnorm.wgsl`): a workgroup per row, the weight's gradient a column sum in row
//! order. Half-precision tensors go through f32 views, as LayerNorm's do; rstd is f32 always.

use super::{dispatch_items, expect_numel, flag};
use crate::gpu::{Access, Gpu, Kernel, Shader};
use crate::tensor::Tensor;

const FORWARD: Kernel = Kernel::new(Shader::Rmsnorm, "forward");
const BACKWARD_INPUT: Kernel = Kernel::new(Shader::Rmsnorm, "backward_input");
const BACKWARD_PARAMS: Kernel = Kernel::new(Shader::Rmsnorm, "backward_params");

/// out = x·rstd·w per row, saving rstd for the backward. x, out: (R, C); w: (C); rstd: (R).
pub fn rmsnorm_forward(gpu: &Gpu, x: &Tensor, w: &Tensor, eps: f32, out: &Tensor, rstd: &Tensor) {
    let (Some(x), Some(w), Some(o)) = (
        super::widen(gpu, x),
        super::widen(gpu, w),
        super::Written::new(gpu, out, false),
    ) else {
        return;
    };
    let out = o.f32();
    super::expect_f32("rmsnorm_forward", &[&x, &w, out, rstd]);
    let (rows, cols) = (x.rows(), x.cols());
    expect_numel("rmsnorm w", &w, cols);
    expect_numel("rmsnorm out", out, rows * cols);
    expect_numel("rmsnorm rstd", rstd, rows);
    let params = [rows as u32, cols as u32, eps.to_bits(), 0];
    let args = [
        (&*x, Access::Read),
        (&*w, Access::Read),
        (out, Access::ReadWrite),
        (rstd, Access::ReadWrite),
    ];
    dispatch_items(gpu, &FORWARD, &args, &params, rows, 1);
    o.done(gpu);
}

/// dx is written; dw is written, or added to when `params` is `Some(true)`, and left alone
/// when it is None (a frozen gain: the parameter pass does not run).
/// dout, x, dx: (R, C); w, dw: (C); rstd: (R) from the forward.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    gpu: &Gpu,
    dout: &Tensor,
    x: &Tensor,
    w: &Tensor,
    rstd: &Tensor,
    dx: &Tensor,
    dw: &Tensor,
    params: Option<bool>,
) {
    let accumulate = params.unwrap_or(false);
    let (Some(dout), Some(x), Some(w), Some(dxo), Some(dwo)) = (
        super::widen(gpu, dout),
        super::widen(gpu, x),
        super::widen(gpu, w),
        super::Written::new(gpu, dx, false),
        super::Written::new(gpu, dw, accumulate),
    ) else {
        return;
    };
    let (dx, dw) = (dxo.f32(), dwo.f32());
    super::expect_f32("rmsnorm_backward", &[&dout, &x, &w, rstd, dx, dw]);
    let (rows, cols) = (x.rows(), x.cols());
    for (what, t, n) in [
        ("dout", &*dout, rows * cols),
        ("w", &*w, cols),
        ("rstd", rstd, rows),
        ("dx", dx, rows * cols),
        ("dw", dw, cols),
    ] {
        expect_numel(what, t, n);
    }
    let uniform = [rows as u32, cols as u32, 0, flag(accumulate)];
    let args = [
        (&*dout, Access::Read),
        (&*x, Access::Read),
        (&*w, Access::Read),
        (rstd, Access::Read),
        (dx, Access::ReadWrite),
        (dw, Access::ReadWrite),
    ];
    dispatch_items(gpu, &BACKWARD_INPUT, &args, &uniform, rows, 1);
    if params.is_some() {
        dispatch_items(gpu, &BACKWARD_PARAMS, &args, &uniform, cols, 64);
    }
    dxo.done(gpu);
    if params.is_some() {
        dwo.done(gpu);
    }
}
