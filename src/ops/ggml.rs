//! ggml's blocks decoded on the device (`shaders/ggml.wgsl`): a GGUF tensor's bytes uploaded as
//! they are and decoded there, bit for bit as the host decodes them ([`crate::quant::ggml`]),
//! so a model file's quantized weights need no f32 copy on the host: every type wgtrain reads
//! but F32 (F16, BF16, Q8_0, Q4_0, Q4_1 and the k-quants Q4_K, Q5_K, Q6_K).

use crate::error::Result;
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::ops::dispatch_items;
use crate::quant::ggml::GgmlType;
use crate::tensor::Tensor;

/// Whether [`decode`] takes `ty`: every block type the host decodes (F32 needs no decoding).
pub fn decodes(ty: GgmlType) -> bool {
    ty != GgmlType::F32 && GgmlType::DECODED.contains(&ty)
}

/// `raw` (a tensor's blocks as stored) on the device in u32 words, the last one zero-padded,
/// charged to `category` (workspace while loading, params for blocks a layer keeps).
pub fn upload_raw(gpu: &Gpu, name: &str, raw: &[u8], category: Category) -> Result<Tensor> {
    let mut bytes = raw.to_vec();
    bytes.resize(raw.len().div_ceil(4).max(1) * 4, 0);
    let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
    Tensor::from_u32(gpu, name, &[words.len()], &words, category)
}

/// Records `out` (f32, the tensor's element count) = `raw` (its `ty` blocks, [`upload_raw`])
/// decoded. Panics (a programmer error) for a type [`decodes`] refuses.
pub fn decode(gpu: &Gpu, raw: &Tensor, ty: GgmlType, out: &Tensor) {
    crate::ops::expect_f32("ggml decode", &[out]);
    let overrides: &'static [(&'static str, f64)] = match ty {
        GgmlType::F16 => &[("FORMAT", 0.0)],
        GgmlType::BF16 => &[("FORMAT", 1.0)],
        GgmlType::Q8_0 => &[("FORMAT", 2.0)],
        GgmlType::Q4_0 => &[("FORMAT", 3.0)],
        GgmlType::Q4_1 => &[("FORMAT", 4.0)],
        GgmlType::Q4_K => &[("FORMAT", 5.0)],
        GgmlType::Q5_K => &[("FORMAT", 6.0)],
        GgmlType::Q6_K => &[("FORMAT", 7.0)],
        other => panic!(
            "ggml decode: {} is not a block type (F32 uploads as it is)",
            other.name()
        ),
    };
    let n = out.numel();
    let bytes = ty.bytes_for(n as u64).expect("whole blocks");
    assert!(
        raw.numel() as u64 * 4 >= bytes,
        "ggml decode: {} words for {bytes} bytes",
        raw.numel()
    );
    let kernel = Kernel {
        shader: Shader::Ggml,
        entry: "decode",
        overrides,
    };
    let args = [(raw, Access::Read), (out, Access::ReadWrite)];
    dispatch_items(gpu, &kernel, &args, &[n as u32], n, 256);
}
