//! Casts between f32 and the 16-bit float types (f16, bf16), forward and back:
//! `shaders/cast.wgsl`. Integer arithmetic, so every adapter runs them (no SHADER_F16) and they
//! agree bit for bit with a CPU reference (the `half` crate): round to nearest even, NaN kept
//! (quiet), ±inf kept, overflow to ±inf, f16 subnormals exact.

use super::dispatch_items;
use crate::gpu::{Access, Gpu, Kernel, Shader};
use crate::tensor::{DType, Tensor};

/// `cast.wgsl`'s entry points for f16 (BF16 = false) and bf16.
const NARROW: [Kernel; 2] = [
    Kernel {
        shader: Shader::Cast,
        entry: "narrow",
        overrides: &[("BF16", 0.0)],
    },
    Kernel {
        shader: Shader::Cast,
        entry: "narrow",
        overrides: &[("BF16", 1.0)],
    },
];
const WIDEN: [Kernel; 2] = [
    Kernel {
        shader: Shader::Cast,
        entry: "widen",
        overrides: &[("BF16", 0.0)],
    },
    Kernel {
        shader: Shader::Cast,
        entry: "widen",
        overrides: &[("BF16", 1.0)],
    },
];

/// Records dst = src converted to dst's dtype. The pairs: f32 → f16, f32 → bf16, f16 → f32,
/// bf16 → f32 (panics, naming both, for any other). Shapes must have the same element count.
pub fn cast(gpu: &Gpu, src: &Tensor, dst: &Tensor) {
    assert_eq!(
        src.numel(),
        dst.numel(),
        "cast {src:?} -> {dst:?}: element counts differ"
    );
    // (kernel, elements per invocation)
    let (kernel, per_invocation) = match (src.dtype(), dst.dtype()) {
        (DType::F32, DType::F16) => (&NARROW[0], 2),
        (DType::F32, DType::BF16) => (&NARROW[1], 2),
        (DType::F16, DType::F32) => (&WIDEN[0], 1),
        (DType::BF16, DType::F32) => (&WIDEN[1], 1),
        (a, b) => panic!(
            "cast {src:?} -> {dst:?}: no cast from {} to {}",
            a.name(),
            b.name()
        ),
    };
    let n = src.numel();
    let params = [u32::try_from(n).expect("element count fits in u32")];
    let args = [(src, Access::Read), (dst, Access::ReadWrite)];
    dispatch_items(gpu, kernel, &args, &params, n.div_ceil(per_invocation), 256);
}
