//! LayerNorm over the last dimension, forward and backward. Kernels: `shaders/layernorm.wgsl`, and
//! `shaders/layernorm_subgroup.wgsl` for the row passes where the adapter has subgroups of at least
//! 8 lanes and C is a multiple of 4 (about 4x faster on lavapipe: no barriers).

use super::{dispatch_items, expect_numel, flag};
use crate::gpu::shaders::{LAYERNORM_SUBGROUP_TEXTURES, LAYERNORM_TEXTURES};
use crate::gpu::{Access, Gpu, Kernel, Shader};
use crate::tensor::Tensor;

const FORWARD: Kernel = Kernel::new(Shader::Layernorm, "forward");
const BACKWARD_INPUT: Kernel = Kernel::new(Shader::Layernorm, "backward_input");
const BACKWARD_PARAMS: Kernel = Kernel::new(Shader::Layernorm, "backward_params");
const BACKWARD_PARAMS4: Kernel = Kernel::new(Shader::Layernorm, "backward_params4");
const FORWARD_SG: Kernel = Kernel::new(Shader::LayernormSubgroup, "forward");
const BACKWARD_INPUT_SG: Kernel = Kernel::new(Shader::LayernormSubgroup, "backward_input");

/// The row kernels to use: the subgroup ones where they can run.
fn row_kernels(gpu: &Gpu, cols: usize) -> (&'static Kernel, &'static Kernel) {
    if super::subgroup_rows(gpu, cols) {
        (&FORWARD_SG, &BACKWARD_INPUT_SG)
    } else {
        (&FORWARD, &BACKWARD_INPUT)
    }
}

/// Records one row kernel over `rows` rows, the subgroup kernel's first three inputs (x, w, b;
/// dout, x, w) read through textures where the device does.
fn dispatch_rows(
    gpu: &Gpu,
    kernel: &Kernel,
    args: &[(&Tensor, Access)],
    params: &[u32],
    rows: usize,
) {
    if kernel.shader == Shader::LayernormSubgroup {
        let form = &LAYERNORM_SUBGROUP_TEXTURES;
        let (kernel, per_group) = super::row_kernel(gpu, kernel);
        super::dispatch_items_textured(
            gpu,
            &kernel,
            form,
            &[0, 1, 2],
            args,
            params,
            rows,
            per_group,
        );
    } else {
        dispatch_items(gpu, kernel, args, params, rows, 1);
    }
}

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
    // half-precision x, w, b and out through f32 views; the statistics are f32 always
    let (Some(x), Some(w), Some(b), Some(o)) = (
        super::widen(gpu, x),
        super::widen(gpu, w),
        super::widen(gpu, b),
        super::Written::new(gpu, out, false),
    ) else {
        return;
    };
    layernorm_forward_f32(gpu, &x, &w, &b, eps, o.f32(), mean, rstd);
    o.done(gpu);
}

#[allow(clippy::too_many_arguments)]
fn layernorm_forward_f32(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f32,
    out: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
) {
    super::expect_f32("layernorm_forward", &[x, w, b, out, mean, rstd]);
    let (rows, cols) = (x.rows(), x.cols());
    expect_numel("layernorm w", w, cols);
    expect_numel("layernorm b", b, cols);
    expect_numel("layernorm out", out, rows * cols);
    expect_numel("layernorm mean", mean, rows);
    expect_numel("layernorm rstd", rstd, rows);
    let params = [rows as u32, cols as u32, eps.to_bits(), 0];
    dispatch_rows(
        gpu,
        row_kernels(gpu, cols).0,
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
    );
}

/// dx is written; dw and db are written, or added to when `params` is `Some(true)`, and left
/// alone when it is None (both frozen: the parameter pass does not run).
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
    params: Option<bool>,
) {
    let acc = params.unwrap_or(false);
    let (Some(dout), Some(x), Some(w), Some(dxo), Some(dwo), Some(dbo)) = (
        super::widen(gpu, dout),
        super::widen(gpu, x),
        super::widen(gpu, w),
        super::Written::new(gpu, dx, false),
        super::Written::new(gpu, dw, acc),
        super::Written::new(gpu, db, acc),
    ) else {
        return;
    };
    layernorm_backward_f32(
        gpu,
        [&dout, &x, &w, mean, rstd],
        [dxo.f32(), dwo.f32(), dbo.f32()],
        params,
    );
    dxo.done(gpu);
    if params.is_some() {
        dwo.done(gpu);
        dbo.done(gpu);
    }
}

fn layernorm_backward_f32(
    gpu: &Gpu,
    [dout, x, w, mean, rstd]: [&Tensor; 5],
    [dx, dw, db]: [&Tensor; 3],
    params: Option<bool>,
) {
    super::expect_f32("layernorm_backward", &[dout, x, w, mean, rstd, dx, dw, db]);
    let accumulate = params.unwrap_or(false);
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
    let param_pass = params.is_some();
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
    dispatch_rows(gpu, row_kernels(gpu, cols).1, &args, &params, rows);
    if !param_pass {
        return;
    }
    if cols % 4 == 0 {
        let form = &LAYERNORM_TEXTURES;
        let (kernel, items) = (&BACKWARD_PARAMS4, cols / 4);
        super::dispatch_items_textured(gpu, kernel, form, &[0, 1], &args, &params, items, 16);
    } else {
        dispatch_items(gpu, &BACKWARD_PARAMS, &args, &params, cols, 64);
    }
}
