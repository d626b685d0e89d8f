//! Matmul against a quantized weight (`shaders/qmatmul.wgsl`): y = x · Wᵀ with W's codes and
//! scales on the device as [`crate::quant`] packs them, each weight decoded inside the load.
//! Four rows of one output column per invocation, each output summing over k in order; the reference is the host's
//! dequantization and an f64 product.

use super::dispatch_items;
use crate::error::Result;
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::quant::{Method, Quantized};
use crate::tensor::{DType, Tensor};

/// A quantized (N, K) weight on a device: its codes (bytes in u32 words) and scales (f32, or
/// f16 pairs for int4), charged to params.
pub struct QuantWeight {
    pub method: Method,
    pub rows: usize,
    pub cols: usize,
    row_bytes: usize,
    groups: usize,
    codes: Tensor,
    scales: Tensor,
}

impl QuantWeight {
    pub fn upload(gpu: &Gpu, name: &str, q: &Quantized) -> Result<QuantWeight> {
        let mut bytes = q.codes.clone();
        bytes.resize(q.codes.len().div_ceil(4).max(1) * 4, 0);
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        let codes = Tensor::from_u32(
            gpu,
            &format!("{name}.qcodes"),
            &[words.len()],
            &words,
            Category::Params,
        )?;
        let scales = match q.method {
            Method::Int { .. } => {
                let halves: Vec<u16> = q
                    .scales
                    .iter()
                    .map(|&s| half::f16::from_f32(s).to_bits())
                    .collect();
                let t = Tensor::empty(
                    gpu,
                    &format!("{name}.qscale"),
                    &[halves.len()],
                    DType::F16,
                    Category::Params,
                )?;
                let mut b: Vec<u8> = bytemuck::cast_slice(&halves).to_vec();
                b.resize(t.bytes() as usize, 0);
                gpu.upload(&t, &b);
                t
            }
            _ => Tensor::from_f32(
                gpu,
                &format!("{name}.qscale"),
                &[q.scales.len()],
                &q.scales,
                Category::Params,
            )?,
        };
        Ok(QuantWeight {
            method: q.method,
            rows: q.rows,
            cols: q.cols,
            row_bytes: q.row_bytes(),
            groups: q.groups_per_row(),
            codes,
            scales,
        })
    }
}

/// (format, entry) → kernel: `main4` reads x a vec4 at a time (K a multiple of 4), `main`
/// does not, `dequantize` writes W itself.
fn kernel(method: Method, entry: &'static str) -> Kernel {
    let overrides: &'static [(&'static str, f64)] = match method {
        Method::Int8 => &[("FORMAT", 0.0)],
        Method::Int { .. } => &[("FORMAT", 1.0)],
        Method::Nf4 { .. } => &[("FORMAT", 2.0)],
    };
    Kernel {
        shader: Shader::Qmatmul,
        entry,
        overrides,
    }
}

/// Records y (M, N) = x (M, K) · Wᵀ (+ bias (N)) (then max(·, 0) with `relu`) for the quantized
/// (N, K) weight `w`; x may be any shape of M·K elements.
pub fn qmatmul(
    gpu: &Gpu,
    x: &Tensor,
    w: &QuantWeight,
    bias: Option<&Tensor>,
    relu: bool,
    y: &Tensor,
) {
    let k = w.cols;
    let m = x.numel() / k.max(1);
    assert_eq!(
        x.numel(),
        m * k,
        "qmatmul: x {:?} against K = {k}",
        x.shape()
    );
    assert_eq!(
        y.numel(),
        m * w.rows,
        "qmatmul: y {:?} for ({m}, {})",
        y.shape(),
        w.rows
    );
    super::expect_f32("qmatmul", &[x, y]);
    if let Some(b) = bias {
        assert_eq!(
            b.numel(),
            w.rows,
            "qmatmul: bias {:?} for N = {}",
            b.shape(),
            w.rows
        );
        super::expect_f32("qmatmul", &[b]);
    }
    let kernel = kernel(w.method, if k % 4 == 0 { "main4" } else { "main" });
    let params = [
        m as u32,
        w.rows as u32,
        k as u32,
        w.row_bytes as u32,
        w.groups as u32,
        w.method.group(w.cols).min(w.cols) as u32,
        bias.is_some() as u32,
        relu as u32,
        w.method.code_bits() as u32,
    ];
    // without a bias the binding still needs a buffer: the scales stand in, never read
    let args = [
        (x, Access::Read),
        (&w.codes, Access::Read),
        (&w.scales, Access::Read),
        (bias.unwrap_or(&w.scales), Access::Read),
        (y, Access::ReadWrite),
    ];
    // four rows (main) or eight (main4) of one column per invocation
    let rows = if k % 4 == 0 { 8 } else { 4 };
    dispatch_items(gpu, &kernel, &args, &params, m.div_ceil(rows) * w.rows, 64);
}

/// Records W (N, K) = `w` decoded into `out` (f32): the weights [`qmatmul`] multiplies by, each
/// decoded as it decodes them (so dequantize-then-matmul is the dequantizing matmul's math).
pub fn dequantize(gpu: &Gpu, w: &QuantWeight, out: &Tensor) {
    assert_eq!(
        out.shape(),
        [w.rows, w.cols],
        "dequantize: out for ({}, {})",
        w.rows,
        w.cols
    );
    super::expect_f32("dequantize", &[out]);
    let params = [
        0,
        w.rows as u32,
        w.cols as u32,
        w.row_bytes as u32,
        w.groups as u32,
        w.method.group(w.cols).min(w.cols) as u32,
        0,
        0,
        w.method.code_bits() as u32,
    ];
    // x and the bias are not read: the scales stand in for their bindings
    let args = [
        (&w.scales, Access::Read),
        (&w.codes, Access::Read),
        (&w.scales, Access::Read),
        (&w.scales, Access::Read),
        (out, Access::ReadWrite),
    ];
    let kernel = kernel(w.method, "dequantize");
    dispatch_items(gpu, &kernel, &args, &params, w.rows * w.cols, 64);
}
