//! ggml's tensor types: each one's block (elements and bytes), and the host decoders of those
//! wgtrain reads (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K), each computing every
//! weight with the same f32 operations in the same order as the `gguf` Python package's
//! `dequantize` (and ggml's reference decoders), so the results agree bit for bit.
//!
//! Blocks (little-endian; d, m, dmin are f16): Q4_0 (32 weights) d, 16 bytes of nibbles, the
//! low nibbles the first 16 weights and the high ones the next 16, w = d·(q − 8); Q4_1 (32) d,
//! m, nibbles as Q4_0, w = d·q + m; Q8_0 (32) d, 32 signed bytes, w = d·q. The k-quants hold 256
//! weights in 8 (Q4_K, Q5_K) or 16 (Q6_K) sub-blocks with 6- or 8-bit scales: Q4_K d, dmin, 12
//! bytes of packed (scale, min) pairs, 128 bytes of nibbles (each 32 bytes the low nibbles of
//! one sub-block and the high of the next), w = (d·scale)·q − (dmin·min); Q5_K adds 32 bytes
//! of fifth bits (bit s of byte l for sub-block s); Q6_K 128 bytes of low nibbles, 64 of high
//! bit pairs, 16 signed scales and d, w = (d·scale)·(q − 32).

/// A ggml tensor type, by its id in GGUF files (named as ggml names them).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
    /// Known to ggml (its id and name), not decoded here.
    Other(u32),
}

/// Weights per k-quant super-block.
const QK_K: usize = 256;

/// (id, name, weights a block, bytes a block) of every type ggml's GGUF files use.
const TYPES: [(u32, &str, u64, u64); 34] = [
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            30 => GgmlType::BF16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            other => GgmlType::Other(other),
        }
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::BF16 => 30,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Other(id) => id,
        }
    }

    fn entry(self) -> Option<&'static (u32, &'static str, u64, u64)> {
        TYPES.iter().find(|t| t.0 == self.id())
    }

    /// ggml's name ("Q4_K"), or "type N" for an id ggml does not have.
    pub fn name(self) -> String {
        self.entry()
            .map_or_else(|| format!("type {}", self.id()), |t| t.1.to_string())
    }

    /// Bytes `numel` weights take: an error for an unknown type or a count that is not a
    /// whole number of blocks.
    pub fn bytes_for(self, numel: u64) -> Result<u64, String> {
        let &(_, name, block, size) = self
            .entry()
            .ok_or_else(|| format!("unknown ggml type id {}", self.id()))?;
        if numel % block != 0 {
            return Err(format!(
                "{numel} weights are not whole {name} blocks of {block}"
            ));
        }
        (numel / block)
            .checked_mul(size)
            .ok_or_else(|| format!("{numel} weights of {name} overflow a byte count"))
    }

    /// The types [`GgmlType::dequantize`] decodes.
    pub const DECODED: [GgmlType; 9] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// `raw` (`numel` weights' blocks) decoded to f32 in storage order.
    pub fn dequantize(self, raw: &[u8], numel: usize) -> Result<Vec<f32>, String> {
        let bytes = self.bytes_for(numel as u64)?;
        if raw.len() as u64 != bytes {
            return Err(format!(
                "{} bytes for {numel} weights of {}, which take {bytes}",
                raw.len(),
                self.name()
            ));
        }
        let mut out = Vec::with_capacity(numel);
        match self {
            GgmlType::F32 => out.extend(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap())),
            ),
            GgmlType::F16 => out.extend(raw.chunks_exact(2).map(f16_at)),
            GgmlType::BF16 => out.extend(
                raw.chunks_exact(2)
                    .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)),
            ),
            GgmlType::Q8_0 => {
                for b in raw.chunks_exact(34) {
                    let d = f16_at(&b[0..2]);
                    out.extend(b[2..].iter().map(|&q| d * (q as i8) as f32));
                }
            }
            GgmlType::Q4_0 => {
                for b in raw.chunks_exact(18) {
                    let d = f16_at(&b[0..2]);
                    let qs = &b[2..];
                    for shift in [0, 4] {
                        out.extend(
                            qs.iter()
                                .map(|&q| d * (((q >> shift) & 15) as i32 - 8) as f32),
                        );
                    }
                }
            }
            GgmlType::Q4_1 => {
                for b in raw.chunks_exact(20) {
                    let (d, m) = (f16_at(&b[0..2]), f16_at(&b[2..4]));
                    let qs = &b[4..];
                    for shift in [0, 4] {
                        out.extend(qs.iter().map(|&q| d * ((q >> shift) & 15) as f32 + m));
                    }
                }
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let five = self == GgmlType::Q5_K;
                for b in raw.chunks_exact(if five { 176 } else { 144 }) {
                    let (d, dmin) = (f16_at(&b[0..2]), f16_at(&b[2..4]));
                    let (scales, rest) = b[4..].split_at(12);
                    let (qh, qs) = if five {
                        rest.split_at(32)
                    } else {
                        (&[][..], rest)
                    };
                    for s in 0..8 {
                        let (sc, m) = scale_min_k4(scales, s);
                        let (ds, dm) = (d * sc as f32, dmin * m as f32);
                        let (chunk, shift) = (&qs[32 * (s / 2)..32 * (s / 2) + 32], 4 * (s % 2));
                        out.extend(chunk.iter().enumerate().map(|(l, &q)| {
                            let high = if five { ((qh[l] >> s) & 1) << 4 } else { 0 };
                            ds * (((q >> shift) & 15) | high) as f32 - dm
                        }));
                    }
                }
            }
            GgmlType::Q6_K => {
                for b in raw.chunks_exact(210) {
                    let (ql, rest) = b.split_at(QK_K / 2);
                    let (qh, rest) = rest.split_at(QK_K / 4);
                    let (scales, d) = rest.split_at(QK_K / 16);
                    let d = f16_at(d);
                    for e in 0..QK_K {
                        // row r of 32 weights: its low nibble from ql, its high pair from qh
                        let (r, l) = (e / 32, e % 32);
                        let (n, half, h) = (r / 4, r % 2, (r / 2) % 2);
                        let low = (ql[64 * n + 32 * half + l] >> (4 * h)) & 15;
                        let high = (qh[32 * n + l] >> (2 * (r % 4))) & 3;
                        let q = ((low | (high << 4)) as i8 - 32) as f32;
                        out.push((d * (scales[e / 16] as i8) as f32) * q);
                    }
                }
            }
            GgmlType::Other(_) => {
                return Err(format!(
                    "wgtrain does not decode {} (it decodes {})",
                    self.name(),
                    Self::DECODED.map(|t| t.name()).join(", ")
                ))
            }
        }
        Ok(out)
    }
}

fn f16_at(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Sub-block `j`'s 6-bit (scale, min) of a Q4_K/Q5_K block's 12 packed bytes: the first four
/// sub-blocks' in the low 6 bits of bytes 0-3 and 4-7, the last four's low 4 bits in bytes 8-11
/// (scale low nibble, min high nibble) and their top 2 bits in the top bits of bytes 0-3 and 4-7.
fn scale_min_k4(q: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}
