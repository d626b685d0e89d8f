//! The Kashin method's per-weight kernels (`shaders/kashin.wgsl`): the 2-D k-means assignment
//! and the codebook lookup that decodes a quantized weight's two factors. The method itself is
//! in [`crate::quant::kashin`].

use super::dispatch_items;
use crate::gpu::{Access, Gpu, Kernel, Shader};
use crate::tensor::{DType, Tensor};

const ASSIGN: Kernel = Kernel::new(Shader::Kashin, "assign");
const DECODE: Kernel = Kernel::new(Shader::Kashin, "decode");
const WG: usize = 256;

/// labels[i] = the index of the centroid nearest point i (squared distance in f32, the lowest
/// index on a tie). points: (n, 2) f32; centroids: (k, 2) f32; labels: (n) u32.
pub fn assign(gpu: &Gpu, points: &Tensor, centroids: &Tensor, labels: &Tensor) {
    super::expect_f32("kmeans assign", &[points, centroids]);
    crate::tensor::expect_dtype("kmeans assign", labels, &[DType::U32]);
    let n = labels.numel();
    super::expect_numel("kmeans assign points", points, 2 * n);
    let k = centroids.numel() / 2;
    assert!(k > 0, "kmeans assign: no centroids");
    dispatch_items(
        gpu,
        &ASSIGN,
        &[
            (points, Access::Read),
            (centroids, Access::Read),
            (labels, Access::ReadWrite),
        ],
        &[n as u32, k as u32, 0],
        n,
        WG,
    );
}

/// u[i], v[i] = codebook[c_i] for weight i's `bits`-bit code c_i (codes: a little-endian
/// bitstream in u32 words). codebook: (2^bits, 2) f32; u, v: (n) f32.
pub fn decode(gpu: &Gpu, codes: &Tensor, bits: u32, codebook: &Tensor, u: &Tensor, v: &Tensor) {
    crate::tensor::expect_dtype("kashin decode", codes, &[DType::U32]);
    super::expect_f32("kashin decode", &[codebook, u, v]);
    assert!((1..=16).contains(&bits), "kashin decode: {bits} bits");
    let n = u.numel();
    super::expect_numel("kashin decode v", v, n);
    super::expect_numel("kashin decode codebook", codebook, 2 << bits);
    assert!(
        codes.numel() * 32 >= n * bits as usize,
        "kashin decode: {} code words for {n} weights of {bits} bits",
        codes.numel()
    );
    dispatch_items(
        gpu,
        &DECODE,
        &[
            (codes, Access::Read),
            (codebook, Access::Read),
            (u, Access::ReadWrite),
            (v, Access::ReadWrite),
        ],
        &[n as u32, 1 << bits, bits],
        n,
        WG,
    );
}
