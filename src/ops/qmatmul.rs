//! Matmul against a quantized weight (`shaders/qmatmul.wgsl`): y = x · Wᵀ with W's codes and
//! scales on the device as [`crate::quant`] packs them, each weight decoded inside the load.
//! Four rows of one output column per invocation, each output summing over k in order; the
//! reference is the host's dequantization and an f64 product. A weight may instead hold a GGUF
//! file's ggml blocks as they are ([`QuantWeight::from_ggml`]): [`dequantize`] decodes those
//! ([`super::ggml`]), and a layer multiplies by the decoded matrix.

use super::dispatch_items;
use crate::error::Result;
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::quant::ggml::GgmlType;
use crate::quant::{Method, Quantized};
use crate::tensor::{DType, Tensor};

/// A quantized (N, K) weight on a device: its codes (bytes in u32 words) and how to read
/// them, charged to params.
pub struct QuantWeight {
    pub rows: usize,
    pub cols: usize,
    codes: Tensor,
    pub format: QuantFormat,
}

/// What a [`QuantWeight`]'s codes are.
pub enum QuantFormat {
    /// A [`crate::quant`] method's codes, `row_bytes` a row, and its scales (f32, or f16
    /// pairs for int4), `groups` a row.
    Codes {
        method: Method,
        row_bytes: usize,
        groups: usize,
        scales: Tensor,
    },
    /// A GGUF tensor's blocks as the file stores them, rows in order.
    Ggml(GgmlType),
}

impl QuantWeight {
    /// A GGUF tensor's `raw` blocks of type `ty` (a type [`super::ggml::decodes`] takes) as an
    /// (N, K) weight, uploaded as they are.
    pub fn from_ggml(
        gpu: &Gpu,
        name: &str,
        raw: &[u8],
        ty: GgmlType,
        rows: usize,
        cols: usize,
    ) -> Result<QuantWeight> {
        assert!(
            super::ggml::decodes(ty),
            "from_ggml: {} is not a block type",
            ty.name()
        );
        let codes = super::ggml::upload_raw(gpu, &format!("{name}.blocks"), raw, Category::Params)?;
        Ok(QuantWeight {
            rows,
            cols,
            codes,
            format: QuantFormat::Ggml(ty),
        })
    }

    /// Bytes on the device: codes (or blocks) and scales, as charged to params.
    pub fn bytes(&self) -> u64 {
        let scales = match &self.format {
            QuantFormat::Codes { scales, .. } => scales.bytes(),
            QuantFormat::Ggml(_) => 0,
        };
        self.codes.bytes() + scales
    }

    /// Its format's name: a method's ("nf4") or a ggml type's ("Q4_1").
    pub fn format_name(&self) -> String {
        match &self.format {
            QuantFormat::Codes { method, .. } => method.name().to_string(),
            QuantFormat::Ggml(ty) => ty.name(),
        }
    }

    /// Whether the dequantizing matmul reads it ([`qmatmul`]); ggml blocks are decoded first
    /// ([`dequantize`]).
    pub fn is_codes(&self) -> bool {
        matches!(self.format, QuantFormat::Codes { .. })
    }

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
            rows: q.rows,
            cols: q.cols,
            codes,
            format: QuantFormat::Codes {
                method: q.method,
                row_bytes: q.row_bytes(),
                groups: q.groups_per_row(),
                scales,
            },
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
    let QuantFormat::Codes {
        method,
        row_bytes,
        groups,
        scales,
    } = &w.format
    else {
        panic!("qmatmul: ggml blocks are decoded, then multiplied (dequantize)");
    };
    let kernel = kernel(*method, if k % 4 == 0 { "main4" } else { "main" });
    let params = [
        m as u32,
        w.rows as u32,
        k as u32,
        *row_bytes as u32,
        *groups as u32,
        method.group(w.cols).min(w.cols) as u32,
        bias.is_some() as u32,
        relu as u32,
        method.code_bits() as u32,
    ];
    // without a bias the binding still needs a buffer: the scales stand in, never read
    let args = [
        (x, Access::Read),
        (&w.codes, Access::Read),
        (scales, Access::Read),
        (bias.unwrap_or(scales), Access::Read),
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
    let (method, row_bytes, groups, scales) = match &w.format {
        QuantFormat::Codes {
            method,
            row_bytes,
            groups,
            scales,
        } => (*method, *row_bytes, *groups, scales),
        QuantFormat::Ggml(ty) => return super::ggml::decode(gpu, &w.codes, *ty, out),
    };
    let params = [
        0,
        w.rows as u32,
        w.cols as u32,
        row_bytes as u32,
        groups as u32,
        method.group(w.cols).min(w.cols) as u32,
        0,
        0,
        method.code_bits() as u32,
    ];
    // x and the bias are not read: the scales stand in for their bindings
    let args = [
        (scales, Access::Read),
        (&w.codes, Access::Read),
        (scales, Access::Read),
        (scales, Access::Read),
        (out, Access::ReadWrite),
    ];
    let kernel = kernel(method, "dequantize");
    dispatch_items(gpu, &kernel, &args, &params, w.rows * w.cols, 64);
}
