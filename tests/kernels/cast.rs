//! The casts f32 ↔ f16 and f32 ↔ bf16 against the `half` crate, bit for bit: every one of the
//! 65536 16-bit patterns widened, and narrowing on the values where rounding is decided (ties,
//! the largest finite values and just past them, subnormals and the smallest of them, signed
//! zeros, ±inf, quiet and signalling NaNs with payloads) plus random bit patterns.

use crate::common::*;
use half::{bf16, f16};
use wgtrain::gpu::Category;
use wgtrain::ops::cast::cast;
use wgtrain::rng::Rng;
use wgtrain::{DType, Tensor};

fn narrowing_inputs() -> Vec<u32> {
    let mut v: Vec<u32> = vec![
        0x0000_0000,
        0x8000_0000, // ±0
        0x7F80_0000,
        0xFF80_0000, // ±inf
        0x7FC0_0000,
        0xFFC0_0000,
        0x7F80_0001,
        0x7FA0_1234,
        0xFFFF_FFFF, // NaNs
        0x0000_0001,
        0x8000_0001,
        0x007F_FFFF,
        0x0080_0000, // f32 subnormals, smallest normal
        0x477F_E000,
        0x477F_EFFF,
        0x477F_F000,
        0x477F_F001,
        0x4780_0000, // f16 max, 65520
        0x7F7F_FFFF,
        0x7F7F_8000,
        0x7F7F_7FFF, // bf16: the largest finite and its rounding
        0x3F80_1000,
        0x3F80_3000,
        0x3F80_1001,
        0x3F80_8000,
        0x3F81_8000, // ties, both parities
        0x3380_0000,
        0x3300_0000,
        0x3300_0001,
        0x387F_C000,
        0x3880_0000, // f16 subnormal range
    ];
    // every exponent, with mantissas around the f16 and bf16 rounding points
    for e in 0..256u32 {
        for m in [
            0, 1, 0x0FFF, 0x1000, 0x1001, 0x3000, 0x7FFF, 0x8000, 0x8001, 0x18000, 0x7F_FFFF,
        ] {
            v.push(e << 23 | m);
            v.push(0x8000_0000 | e << 23 | m);
        }
    }
    let mut rng = Rng::new(42);
    v.extend((0..100_000).map(|_| rng.below(1 << 32) as u32));
    v
}

fn upload_bits(name: &str, bits: &[u32]) -> Tensor {
    Tensor::from_u32(gpu(), name, &[bits.len()], bits, Category::Activations)
        .map(|t| {
            // the same words, as an f32 tensor
            let f = Tensor::empty(
                gpu(),
                name,
                &[bits.len()],
                DType::F32,
                Category::Activations,
            )
            .unwrap();
            gpu().copy_region(&t, 0, &f, 0, t.bytes());
            f
        })
        .unwrap()
}

fn f32_bits(t: &Tensor) -> Vec<u32> {
    bytemuck::pod_collect_to_vec(&gpu().read_bytes(t).unwrap())
}

#[test]
fn f32_to_f16_and_bf16_round_like_the_reference_bit_for_bit() {
    let input = narrowing_inputs();
    let x = upload_bits("x", &input);
    for dtype in [DType::F16, DType::BF16] {
        for n in [input.len(), input.len() - 1] {
            // an odd count too: the last word's high half must be left zero
            let xs = Tensor::empty(gpu(), "x", &[n], DType::F32, Category::Activations).unwrap();
            gpu().copy_region(&x, 0, &xs, 0, 4 * n as u64);
            let y = Tensor::empty(gpu(), "y", &[n], dtype, Category::Activations).unwrap();
            cast(gpu(), &xs, &y);
            let got = y.to_bits16(gpu()).unwrap();
            for (i, (&bits, &g)) in input.iter().zip(&got).enumerate() {
                let f = f32::from_bits(bits);
                let want = match dtype {
                    DType::F16 => f16::from_f32(f).to_bits(),
                    _ => bf16::from_f32(f).to_bits(),
                };
                assert_eq!(
                    g,
                    want,
                    "{} of {bits:#010x} (element {i}): got {g:#06x}, want {want:#06x}",
                    dtype.name()
                );
            }
        }
    }
}

#[test]
fn f16_and_bf16_to_f32_widen_every_pattern_exactly() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for dtype in [DType::F16, DType::BF16] {
        let h = Tensor::from_bits16(gpu(), "h", &[all.len()], dtype, &all, Category::Activations)
            .unwrap();
        let y = zeros("y", &[all.len()]);
        cast(gpu(), &h, &y);
        let got = f32_bits(&y);
        for (&b, &g) in all.iter().zip(&got) {
            let want = match dtype {
                DType::F16 => f16::from_bits(b).to_f32().to_bits(),
                _ => bf16::from_bits(b).to_f32().to_bits(),
            };
            assert_eq!(
                g,
                want,
                "{} {b:#06x} -> {g:#010x}, want {want:#010x}",
                dtype.name()
            );
        }
    }
}

#[test]
fn a_round_trip_through_f16_keeps_every_f16_value() {
    let all: Vec<u16> = (0..=u16::MAX)
        .filter(|&b| !f16::from_bits(b).is_nan())
        .collect();
    let n = all.len();
    let h = Tensor::from_bits16(gpu(), "h", &[n], DType::F16, &all, Category::Activations).unwrap();
    let f = zeros("f", &[n]);
    let back = Tensor::empty(gpu(), "back", &[n], DType::F16, Category::Activations).unwrap();
    cast(gpu(), &h, &f);
    cast(gpu(), &f, &back);
    assert_eq!(back.to_bits16(gpu()).unwrap(), all);
}

#[test]
#[should_panic(expected = "no cast from u32 to f16")]
fn an_unsupported_cast_panics_naming_the_dtypes() {
    let x = Tensor::from_u32(gpu(), "idx", &[4], &[1, 2, 3, 4], Category::Activations).unwrap();
    let y = Tensor::empty(gpu(), "y", &[4], DType::F16, Category::Activations).unwrap();
    cast(gpu(), &x, &y);
}

#[test]
#[should_panic(expected = "is i8, the op takes f32")]
fn an_op_given_a_packed_integer_tensor_panics_naming_it() {
    // float ops take f32, f16 and bf16 (the half types through f32 views); anything else is a
    // programmer error
    let q = Tensor::empty(gpu(), "codes", &[8], DType::I8, Category::Activations).unwrap();
    let out = zeros("out", &[8]);
    wgtrain::ops::elementwise::scale(gpu(), &q, 2.0, &out);
}
