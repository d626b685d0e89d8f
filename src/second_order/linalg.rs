//! Vector and matrix helpers on the GPU for the full-batch methods: dot products (read back as
//! f64), axpy, matrix-vector products, and the rank-two update.

use crate::error::Result;
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::ops::dispatch_items;
use crate::ops::elementwise::{accumulate, scale};
use crate::ops::matmul::{matmul, Layout, MatmulDims};
use crate::ops::reduce::{reduce, Reduction};
use crate::tensor::{DType, Tensor};

pub(crate) fn kernel(entry: &'static str) -> Kernel {
    Kernel::new(Shader::SecondOrder, entry)
}

/// The uniform block of `shaders/second_order.wgsl`.
pub(crate) fn params(n: usize, cols: usize, first: usize, a: f32, b: f32, c: f32) -> [u32; 6] {
    [
        n as u32,
        cols as u32,
        first as u32,
        a.to_bits(),
        b.to_bits(),
        c.to_bits(),
    ]
}

pub fn vector(gpu: &Gpu, name: &str, values: &[f32]) -> Result<Tensor> {
    Tensor::from_f32(gpu, name, &[values.len()], values, Category::Workspace)
}

pub fn empty(gpu: &Gpu, name: &str, n: usize) -> Result<Tensor> {
    Tensor::empty(gpu, name, &[n], DType::F32, Category::Workspace)
}

/// aᵀb (a sync point).
pub fn dot(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<f64> {
    let n = a.numel();
    let prod = empty(gpu, "dot terms", n)?;
    dispatch_items(
        gpu,
        &kernel("mul"),
        &[
            (a, Access::Read),
            (b, Access::Read),
            (&prod, Access::ReadWrite),
        ],
        &params(n, 0, 0, 0.0, 0.0, 0.0),
        n,
        256,
    );
    sum(gpu, &prod)
}

/// Σ x (a sync point).
pub fn sum(gpu: &Gpu, x: &Tensor) -> Result<f64> {
    let out = empty(gpu, "sum", 1)?;
    reduce(gpu, x, Reduction::Sum, &out, 0, false)?;
    Ok(out.to_f32(gpu)?[0] as f64)
}

/// y += alpha · x
pub fn axpy(gpu: &Gpu, alpha: f64, x: &Tensor, y: &Tensor) {
    accumulate(gpu, x, alpha as f32, y);
}

/// out = alpha · x
pub fn scaled(gpu: &Gpu, alpha: f64, x: &Tensor, out: &Tensor) {
    scale(gpu, x, alpha as f32, out);
}

/// out (n) = M (n, n) · x (n)
pub fn matvec(gpu: &Gpu, m: &Tensor, x: &Tensor, out: &Tensor) {
    let n = x.numel();
    matmul(
        gpu,
        MatmulDims::new(n, 1, n, Layout::NN),
        m,
        x,
        None,
        out,
        false,
    );
}

/// C (n, n) += a·u uᵀ + b·(u vᵀ + v uᵀ) + c·v vᵀ
pub fn rank2(gpu: &Gpu, cmat: &Tensor, u: &Tensor, v: &Tensor, a: f64, b: f64, c: f64) {
    let n = u.numel();
    dispatch_items(
        gpu,
        &kernel("rank2"),
        &[
            (u, Access::Read),
            (v, Access::Read),
            (cmat, Access::ReadWrite),
        ],
        &params(n, 0, 0, a as f32, b as f32, c as f32),
        n * n,
        256,
    );
}

/// H (n, n) += alpha on the diagonal from index `first` on.
pub fn add_diag(gpu: &Gpu, h: &Tensor, n: usize, first: usize, alpha: f64) -> Result<()> {
    // bindings 1 and 2 are not read by this entry point; a placeholder fills them
    let unused = empty(gpu, "unused", 1)?;
    dispatch_items(
        gpu,
        &kernel("add_diag"),
        &[
            (&unused, Access::Read),
            (&unused, Access::Read),
            (h, Access::ReadWrite),
        ],
        &params(n, 0, first, alpha as f32, 0.0, 0.0),
        n,
        256,
    );
    Ok(())
}

/// The identity (n, n).
pub fn identity(gpu: &Gpu, name: &str, n: usize) -> Result<Tensor> {
    let mut v = vec![0.0f32; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    Tensor::from_f32(gpu, name, &[n, n], &v, Category::Workspace)
}

/// Splits an f64 into float-float (hi, lo): hi the nearest f32, lo the nearest f32 to the rest.
pub fn split_f64(v: f64) -> (f32, f32) {
    let hi = v as f32;
    (hi, (v - hi as f64) as f32)
}

/// (out_hi, out_lo) = (x_hi + x_lo) + alpha·d in float-float: the iterate of the exact line
/// search, kept to about 48 bits so that steps far below an f32 ulp of x still count.
pub fn ff_axpy(
    gpu: &Gpu,
    (x_hi, x_lo): (&Tensor, &Tensor),
    alpha: f64,
    d: &Tensor,
    (out_hi, out_lo): (&Tensor, &Tensor),
) -> Result<()> {
    let n = d.numel();
    let (a_hi, a_lo) = split_f64(alpha);
    let zero = zero_word(gpu)?;
    dispatch_items(
        gpu,
        &kernel("ff_axpy"),
        &[
            (x_hi, Access::Read),
            (x_lo, Access::Read),
            (d, Access::Read),
            (out_hi, Access::ReadWrite),
            (out_lo, Access::ReadWrite),
            (&zero, Access::Read),
        ],
        &params(n, 0, 0, a_hi, a_lo, 0.0),
        n,
        256,
    );
    Ok(())
}

/// A zero word in a storage buffer: the float-float kernels pass values through it to keep the
/// compiler from simplifying their error terms away (see `opaque` in second_order.wgsl).
fn zero_word(gpu: &Gpu) -> Result<Tensor> {
    vector(gpu, "0", &[0.0])
}

/// g = A (x_hi + x_lo) − (b_hi + b_lo) for A (n, n), each row summed in float-float.
pub fn ff_quad_grad(
    gpu: &Gpu,
    a: &Tensor,
    (x_hi, x_lo): (&Tensor, &Tensor),
    (b_hi, b_lo): (&Tensor, &Tensor),
    g: &Tensor,
) -> Result<()> {
    let n = g.numel();
    let zero = zero_word(gpu)?;
    dispatch_items(
        gpu,
        &kernel("ff_quad_grad"),
        &[
            (a, Access::Read),
            (x_hi, Access::Read),
            (x_lo, Access::Read),
            (b_hi, Access::Read),
            (b_lo, Access::Read),
            (&zero, Access::Read),
            (g, Access::ReadWrite),
        ],
        &params(n, 0, 0, 0.0, 0.0, 0.0),
        n,
        256,
    );
    Ok(())
}
