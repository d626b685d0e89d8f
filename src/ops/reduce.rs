//! Deterministic reductions (sum, sum of squares, non-finite count, ℓ1 norm), column sums, and their
//! backward. Kernel: `shaders/reduce.wgsl`.

use super::{dispatch_items, expect_numel, flag};
use crate::error::Result;
use crate::gpu::shaders::REDUCE_TEXTURES;
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::tensor::{DType, Tensor};

const PARTIALS: Kernel = Kernel::new(Shader::Reduce, "partials");
const PARTIALS4: Kernel = Kernel {
    shader: Shader::Reduce,
    entry: "partials4",
    overrides: &[],
};
const FINISH_SEGMENTS: Kernel = Kernel::new(Shader::Reduce, "finish_segments");
const COLSUM: Kernel = Kernel::new(Shader::Reduce, "colsum");
const COLSUM4: Kernel = Kernel::new(Shader::Reduce, "colsum4");
const BACKWARD: Kernel = Kernel::new(Shader::Reduce, "backward");
const WG: usize = 256;
/// At most this many partial sums (one per workgroup of the first pass).
const MAX_PARTIALS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    Sum = 0,
    /// Σ x², for a global gradient norm.
    SumOfSquares = 1,
    /// How many values are NaN or ±Inf.
    NonFinite = 2,
    /// Σ |x|, the entrywise ℓ1 norm.
    AbsSum = 3,
}

/// out[index] (+)= reduction of x. Two passes with a fixed shape for a given n: deterministic.
/// `accumulate` adds to out[index], so a global norm sums several tensors in a fixed order.
pub fn reduce(
    gpu: &Gpu,
    x: &Tensor,
    mode: Reduction,
    out: &Tensor,
    index: usize,
    accumulate: bool,
) -> Result<()> {
    reduce_all(gpu, &[x], mode, out, index, accumulate)
}

/// out[index] (+)= the reductions of `xs`, added in order: the same bits as [`reduce`] on each
/// in turn (the first with `accumulate`, the rest accumulating), in one finishing pass instead
/// of one per tensor. Each tensor's first pass writes its partials into its segment of one
/// buffer; `finish_segments` reduces the segments one after the other, each by a fixed tree, and
/// adds the totals in order: a global gradient norm over W-GPT-S's 53 tensors had 53 finishing
/// dispatches.
pub fn reduce_all(
    gpu: &Gpu,
    xs: &[&Tensor],
    mode: Reduction,
    out: &Tensor,
    index: usize,
    accumulate: bool,
) -> Result<()> {
    super::expect_f32("reduce_all", &[out]);
    assert!(
        index < out.numel(),
        "reduce_all: index {index} outside {out:?}"
    );
    assert!(!xs.is_empty(), "reduce_all: no tensors");
    let shapes: Vec<_> = xs.iter().map(|x| first_pass_shape(x.numel())).collect();
    let total: usize = shapes.iter().map(|s| s.3).sum();
    let partials = Tensor::empty(
        gpu,
        "reduce partials",
        &[total],
        DType::F32,
        Category::Workspace,
    )?;
    // (first partial, partial count) per tensor
    let mut segments = Vec::with_capacity(2 * xs.len());
    let mut first = 0;
    for (x, &(kernel, n, chunk, groups)) in xs.iter().zip(&shapes) {
        let Some(x) = super::widen(gpu, x) else {
            return Ok(());
        };
        let x: &Tensor = &x;
        super::expect_f32("reduce_all", &[x]);
        let params = [n as u32, chunk as u32, mode as u32, first as u32, 0];
        dispatch_reading_x(
            gpu,
            kernel,
            &[
                (x, Access::Read),
                (&partials, Access::ReadWrite),
                (x, Access::Read),
            ],
            &params,
            groups,
            1,
        );
        segments.extend([first as u32, groups as u32]);
        first += groups;
    }
    let table = Tensor::from_u32(
        gpu,
        "reduce segments",
        &[segments.len()],
        &segments,
        Category::Workspace,
    )?;
    let params = [xs.len() as u32, 0, 0, index as u32, flag(accumulate)];
    gpu.dispatch(
        &FINISH_SEGMENTS,
        &[
            (&partials, Access::Read),
            (out, Access::ReadWrite),
            (&table, Access::Read),
        ],
        &params,
        [1, 1, 1],
    );
    Ok(())
}

/// [`dispatch_items`]; the vec4 kernels (partials4, colsum4) read x (the first arg) through
/// textures where the device reads them faster.
fn dispatch_reading_x(
    gpu: &Gpu,
    kernel: &Kernel,
    args: &[(&Tensor, Access)],
    params: &[u32],
    n: usize,
    per_group: usize,
) {
    // (by entry point: `&CONST` at two places need not be one address)
    if matches!(kernel.entry, "partials4" | "colsum4") {
        let form = &REDUCE_TEXTURES;
        super::dispatch_items_textured(gpu, kernel, form, &[0], args, params, n, per_group);
    } else {
        dispatch_items(gpu, kernel, args, params, n, per_group);
    }
}

/// The first pass of a reduction over `numel` values: (kernel, n, chunk, workgroups), n and chunk
/// counted in the kernel's reads. Sizes divisible by 4 are read as vec4s (`partials4`).
fn first_pass_shape(numel: usize) -> (&'static Kernel, usize, usize, usize) {
    let (kernel, n) = if numel % 4 == 0 {
        (&PARTIALS4, numel / 4)
    } else {
        (&PARTIALS, numel)
    };
    // At most MAX_PARTIALS workgroups, and at least 64 reads per invocation: each workgroup ends
    // in a tree of 8 barriers, which on a CPU adapter (llvmpipe runs a workgroup's invocations as
    // coroutines) costs more than the reads when there are many small workgroups (a sum of
    // squares of 2²⁰ values on lavapipe: 9 ms with 4 scalar reads per invocation, 3 ms with 64,
    // 0.85 ms with 64 vec4 reads).
    let chunk = n.div_ceil(MAX_PARTIALS).max(WG * 64).div_ceil(WG) * WG;
    (kernel, n, chunk, n.div_ceil(chunk).max(1))
}

/// Backward of `reduce` for Sum (dx = dy) and SumOfSquares (dx = 2·x·dy). dy: (1).
pub fn reduce_backward(gpu: &Gpu, x: &Tensor, mode: Reduction, dy: &Tensor, dx: &Tensor) {
    super::expect_f32("reduce_backward", &[x, dy, dx]);
    assert!(
        matches!(mode, Reduction::Sum | Reduction::SumOfSquares),
        "reduce_backward: only sums and sums of squares have a gradient here, not {mode:?}"
    );
    expect_numel("reduce_backward dy", dy, 1);
    expect_numel("reduce_backward dx", dx, x.numel());
    let params = [x.numel() as u32, 0, mode as u32, 0, 0];
    dispatch_items(
        gpu,
        &BACKWARD,
        &[
            (x, Access::Read),
            (dx, Access::ReadWrite),
            (dy, Access::Read),
        ],
        &params,
        x.numel(),
        WG,
    );
}

/// out[c] (+)= Σ_r x[r, c]: the bias gradient. x: (rows, cols); out: (cols).
pub fn colsum(gpu: &Gpu, x: &Tensor, rows: usize, cols: usize, out: &Tensor, accumulate: bool) {
    let (Some(x), Some(o)) = (
        super::widen(gpu, x),
        super::Written::new(gpu, out, accumulate),
    ) else {
        return;
    };
    colsum_f32(gpu, &x, rows, cols, o.f32(), accumulate);
    o.done(gpu);
}

fn colsum_f32(gpu: &Gpu, x: &Tensor, rows: usize, cols: usize, out: &Tensor, accumulate: bool) {
    super::expect_f32("colsum", &[x, out]);
    expect_numel("colsum x", x, rows * cols);
    expect_numel("colsum out", out, cols);
    let params = [rows as u32, cols as u32, 0, 0, flag(accumulate)];
    // four columns per invocation where they divide (a quarter of the reads on llvmpipe)
    let (kernel, items, per_group) = if cols % 4 == 0 {
        (&COLSUM4, cols / 4, 16)
    } else {
        (&COLSUM, cols, WG)
    };
    dispatch_reading_x(
        gpu,
        kernel,
        &[
            (x, Access::Read),
            (out, Access::ReadWrite),
            (x, Access::Read),
        ],
        &params,
        items,
        per_group,
    );
}
