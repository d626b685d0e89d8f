//! Post-training quantization of weight matrices (rows = output channels, columns = inputs):
//! the codes and scales of each format, computed on the host by one exact rule each, and
//! their dequantization. Every format groups along a row, so a matrix of any width works (a
//! row's last group may be shorter); codes narrower than a byte pack as each row's
//! little-endian bitstream (code c in bits c·b .. c·b + b of the row: 4-bit codes two to a
//! byte, the even column in the low nibble).
//!
//! - `int8`: per output channel, d = absmax/127, q = round(x/d) (half away from zero),
//!   x ≈ q·d. 8 + 32/K bits per weight.
//! - `int4`: llama.cpp's Q4_0 rule per group of g: the signed value of largest magnitude m,
//!   d = m/−8, q = min(15, ⌊x/d + 8.5⌋), x ≈ (q − 8)·d with d stored as f16 (quantized with the
//!   f32 d, decoded with the f16 one, as Q4_0 does). 4 + 16/g bits per weight. `int3` and
//!   `int2` are the same rule at b bits (h = 2^(b−1): d = m/−h, q = min(2^b − 1, ⌊x/d + h +
//!   ½⌋), x ≈ (q − h)·d): the group-wise rounding baseline at the Kashin method's widths.
//! - `nf4`: bitsandbytes' 16 NormalFloat values per block of B with an f32 absmax: the code of
//!   the nearest value to x·(1/absmax), ties to the lower code (bitsandbytes' strict
//!   comparisons at the midpoints), x ≈ NF4[q]·absmax. 4 + 32/B bits per weight.

use crate::error::{Error, Result};
use half::f16;

pub mod file;
pub mod ggml;
pub mod kashin;

/// bitsandbytes' NF4 values (the quantiles of N(0, 1) scaled to [−1, 1], with an exact 0).
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Int8,
    /// Q4_0's rule at `bits` = 2, 3 or 4.
    Int {
        bits: u32,
        group: usize,
    },
    Nf4 {
        block: usize,
    },
}

impl Method {
    /// A method by name: int8, int4, int3, int2 (group `group`, default 32) or nf4 (block
    /// `group`, default 64).
    pub fn parse(name: &str, group: Option<usize>) -> Result<Method> {
        let g = |default: usize| -> Result<usize> {
            match group.unwrap_or(default) {
                0 => Err(Error::Config("--group must be positive".into())),
                g => Ok(g),
            }
        };
        match name {
            "int8" if group.is_some() => Err(Error::Config(
                "int8 scales each output channel: it takes no --group".into(),
            )),
            "int8" => Ok(Method::Int8),
            "int4" | "int3" | "int2" => Ok(Method::Int {
                bits: u32::from(name.as_bytes()[3] - b'0'),
                group: g(32)?,
            }),
            "nf4" => Ok(Method::Nf4 { block: g(64)? }),
            _ => Err(Error::Config(format!(
                "--method must be int8, int4, int3, int2, nf4 or kashin, not {name:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Int8 => "int8",
            Method::Int { bits: 2, .. } => "int2",
            Method::Int { bits: 3, .. } => "int3",
            Method::Int { .. } => "int4",
            Method::Nf4 { .. } => "nf4",
        }
    }

    /// The group (block) length along a row; a whole row for int8.
    pub fn group(self, cols: usize) -> usize {
        match self {
            Method::Int8 => cols,
            Method::Int { group, .. } => group,
            Method::Nf4 { block } => block,
        }
    }

    pub fn code_bits(self) -> usize {
        match self {
            Method::Int8 => 8,
            Method::Int { bits, .. } => bits as usize,
            Method::Nf4 { .. } => 4,
        }
    }

    fn scale_bits(self) -> usize {
        match self {
            Method::Int { .. } => 16,
            _ => 32,
        }
    }
}

/// How a checkpoint's weights are quantized: a row-grouped format (which the dequantizing matmul
/// runs on its codes) or the Kashin method (decoded once at load).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scheme {
    Grouped(Method),
    Kashin(kashin::Options),
}

impl Scheme {
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Grouped(m) => m.name(),
            Scheme::Kashin(_) => "kashin",
        }
    }

    /// The name and its parameters, as `quantize` prints them.
    pub fn describe(&self) -> String {
        match self {
            Scheme::Grouped(Method::Int8) => "int8".into(),
            Scheme::Grouped(m) => format!("{} (group {})", m.name(), m.group(0)),
            Scheme::Kashin(o) => format!("kashin ({} bits, {} basis)", o.bits, o.basis.describe()),
        }
    }
}

/// One quantized matrix as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Encoded {
    Grouped(Quantized),
    Kashin(kashin::Kashin),
}

impl Encoded {
    pub fn shape(&self) -> [usize; 2] {
        match self {
            Encoded::Grouped(q) => [q.rows, q.cols],
            Encoded::Kashin(k) => [k.rows, k.cols],
        }
    }

    /// Stored bytes.
    pub fn bytes(&self) -> usize {
        match self {
            Encoded::Grouped(q) => q.bytes(),
            Encoded::Kashin(k) => k.bytes(),
        }
    }

    /// The f32 matrix the codes stand for, decoded on the host.
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            Encoded::Grouped(q) => q.dequantize(),
            Encoded::Kashin(k) => k.dequantize(),
        }
    }
}

/// A quantized (rows, cols) matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    pub method: Method,
    pub rows: usize,
    pub cols: usize,
    /// int8: one byte (two's complement) per weight; int4, nf4: two codes a byte per row
    /// (⌈cols/2⌉ bytes a row), the even column in the low nibble.
    pub codes: Vec<u8>,
    /// One per group, row by row (int4: the f16-rounded value).
    pub scales: Vec<f32>,
}

impl Quantized {
    pub fn groups_per_row(&self) -> usize {
        self.cols.div_ceil(self.method.group(self.cols))
    }

    /// Bytes a row's codes take.
    pub fn row_bytes(&self) -> usize {
        row_bytes(self.method, self.cols)
    }

    /// The stored size: codes plus scales at their stored width.
    pub fn bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * self.method.scale_bits() / 8
    }

    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.bytes() as f64 / (self.rows * self.cols) as f64
    }

    /// Weight (r, c)'s code.
    pub fn code(&self, r: usize, c: usize) -> u8 {
        let row = &self.codes[r * self.row_bytes()..];
        match self.method {
            Method::Int8 => row[c],
            m => {
                // up to 4 bits from the row's bitstream: within one byte or across two
                let (b, bit) = (m.code_bits(), c * m.code_bits());
                let two =
                    u16::from(row[bit / 8]) | u16::from(*row.get(bit / 8 + 1).unwrap_or(&0)) << 8;
                ((two >> (bit % 8)) & ((1 << b) - 1)) as u8
            }
        }
    }

    /// The f32 matrix the codes stand for, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let g = self.method.group(self.cols);
        let gpr = self.groups_per_row();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                let d = self.scales[r * gpr + c / g];
                let q = self.code(r, c);
                out.push(match self.method {
                    Method::Int8 => q as i8 as f32 * d,
                    Method::Int { bits, .. } => (q as f32 - (1 << (bits - 1)) as f32) * d,
                    Method::Nf4 { .. } => NF4[q as usize] * d,
                });
            }
        }
        out
    }
}

impl Quantized {
    /// A (rows, cols) matrix of `method` with every code and scale zero: what a ledger plans
    /// with (the sizes alone matter there).
    pub fn zeros(method: Method, rows: usize, cols: usize) -> Quantized {
        let groups = cols.div_ceil(method.group(cols).min(cols.max(1)).max(1));
        Quantized {
            method,
            rows,
            cols,
            codes: vec![0; rows * row_bytes(method, cols)],
            scales: vec![0.0; rows * groups],
        }
    }
}

fn row_bytes(method: Method, cols: usize) -> usize {
    (cols * method.code_bits()).div_ceil(8)
}

/// Quantizes the (rows, cols) row-major matrix `w` by `method`. NaN or infinite weights are
/// refused (no scale represents them), naming the first.
pub fn quantize(method: Method, w: &[f32], rows: usize, cols: usize) -> Result<Quantized> {
    assert_eq!(w.len(), rows * cols, "a ({rows}, {cols}) matrix");
    refuse_non_finite(w, cols)?;
    let g = method.group(cols).min(cols.max(1));
    let rb = row_bytes(method, cols);
    let mut codes = vec![0u8; rows * rb];
    let mut scales = vec![];
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        let out = &mut codes[r * rb..(r + 1) * rb];
        for (k, group) in row.chunks(g.max(1)).enumerate() {
            let (scale, q) = quantize_group(method, group).ok_or_else(|| {
                Error::Config(format!(
                    "int4 stores each group's scale as f16 (as Q4_0 does): the group at ({r}, \
                     {}) needs one beyond f16's range (its largest weight is over 5·10⁵); \
                     use int8 or nf4",
                    k * g
                ))
            })?;
            scales.push(scale);
            for (j, q) in q.into_iter().enumerate() {
                let c = k * g + j;
                match method {
                    Method::Int8 => out[c] = q,
                    m => {
                        let bit = c * m.code_bits();
                        let two = u16::from(q) << (bit % 8);
                        out[bit / 8] |= two as u8;
                        if two >> 8 != 0 {
                            out[bit / 8 + 1] |= (two >> 8) as u8;
                        }
                    }
                }
            }
        }
    }
    Ok(Quantized {
        method,
        rows,
        cols,
        codes,
        scales,
    })
}

/// NaN or an infinity in a (·, cols) matrix: an error naming the first.
fn refuse_non_finite(w: &[f32], cols: usize) -> Result<()> {
    match w.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::NonFinite(format!(
            "weight ({}, {}) is {}: a quantized format cannot hold it",
            i / cols.max(1),
            i % cols.max(1),
            w[i]
        ))),
        None => Ok(()),
    }
}

/// One group's stored scale and codes; None when int4's f16 scale cannot hold the group's.
fn quantize_group(method: Method, x: &[f32]) -> Option<(f32, Vec<u8>)> {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    match method {
        Method::Int8 => {
            let d = amax / 127.0;
            let q = x
                .iter()
                .map(|&v| match d {
                    0.0 => 0,
                    _ => ((v / d).round().clamp(-127.0, 127.0) as i8) as u8,
                })
                .collect();
            Some((d, q))
        }
        Method::Int { bits, .. } => {
            // the signed value of the largest magnitude (the first of equals)
            let m = x
                .iter()
                .copied()
                .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let half = (1 << (bits - 1)) as f32;
            let d = m / -half;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let top = (1 << bits) - 1;
            let q = x
                .iter()
                .map(|&v| ((v * id + (half + 0.5)) as i32).min(top) as u8)
                .collect();
            let stored = f16::from_f32(d);
            stored.is_finite().then(|| (stored.to_f32(), q))
        }
        Method::Nf4 { .. } => {
            let inv = if amax != 0.0 { 1.0 / amax } else { 0.0 };
            let q = x.iter().map(|&v| nf4_code(v * inv)).collect();
            Some((amax, q))
        }
    }
}

/// The code of the NF4 value nearest to `x` (in [−1, 1]); ties to the lower code.
pub fn nf4_code(x: f32) -> u8 {
    let mut q = 0;
    for k in 1..16 {
        if x > (NF4[k - 1] + NF4[k]) / 2.0 {
            q = k as u8;
        }
    }
    q
}

/// ‖a − b‖_F / ‖b‖_F (0 for a zero b equal to a), in f64.
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    if den == 0.0 {
        if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (num / den).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Each rule written out a weight at a time, in f64 where the rule allows, against which the
    /// packed implementation must agree code for code.
    fn reference_codes(method: Method, w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
        let g = method.group(cols).min(cols);
        let (mut codes, mut scales) = (vec![], vec![]);
        for r in 0..rows {
            let row = &w[r * cols..(r + 1) * cols];
            let mut start = 0;
            while start < cols {
                let group = &row[start..(start + g).min(cols)];
                let amax = group.iter().map(|v| v.abs()).fold(0f32, f32::max);
                match method {
                    Method::Int8 => {
                        let d = amax / 127.0;
                        scales.push(d);
                        for &v in group {
                            let q = if d == 0.0 { 0.0 } else { (v / d).round() };
                            codes.push(q.clamp(-127.0, 127.0) as i8 as u8);
                        }
                    }
                    Method::Int { bits, .. } => {
                        let i = (0..group.len()).find(|&i| group[i].abs() == amax).unwrap();
                        let h = 2f32.powi(bits as i32 - 1);
                        let d = group[i] / -h;
                        scales.push(half::f16::from_f32(d).to_f32());
                        for &v in group {
                            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
                            let q = ((v * id + h + 0.5).floor() as i32).min((1 << bits) - 1);
                            codes.push(q as u8);
                        }
                    }
                    Method::Nf4 { .. } => {
                        scales.push(amax);
                        for &v in group {
                            let x = if amax == 0.0 { 0.0 } else { v * (1.0 / amax) };
                            // the nearest value, the lower one on a tie
                            let mut best = 0;
                            for (k, v) in NF4.iter().enumerate().skip(1) {
                                if (x - v).abs() < (x - NF4[best]).abs() {
                                    best = k;
                                }
                            }
                            codes.push(best as u8);
                        }
                    }
                }
                start += g;
            }
        }
        (codes, scales)
    }

    fn methods() -> [Method; 7] {
        [
            Method::Int8,
            Method::Int { bits: 4, group: 32 },
            Method::Int { bits: 4, group: 7 },
            Method::Int { bits: 3, group: 7 },
            Method::Int { bits: 2, group: 32 },
            Method::Nf4 { block: 64 },
            Method::Nf4 { block: 5 },
        ]
    }

    fn check_against_reference(method: Method, w: &[f32], rows: usize, cols: usize) {
        let q = quantize(method, w, rows, cols).unwrap();
        let (codes, scales) = reference_codes(method, w, rows, cols);
        let mine: Vec<u8> = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .map(|(r, c)| q.code(r, c))
            .collect();
        assert_eq!(mine, codes, "{method:?} ({rows}, {cols}): codes");
        assert_eq!(q.scales, scales, "{method:?} ({rows}, {cols}): scales");
    }

    #[test]
    fn codes_follow_each_rule_exactly_on_awkward_shapes() {
        let mut rng = Rng::new(11);
        for (rows, cols) in [(7, 45), (3, 1), (1, 64), (5, 130), (2, 33)] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| rng.normal() as f32 * 0.05)
                .collect();
            for m in methods() {
                check_against_reference(m, &w, rows, cols);
            }
        }
    }

    #[test]
    fn adversarial_matrices_quantize_cleanly() {
        let zeros = vec![0f32; 4 * 40];
        let mut outlier: Vec<f32> = (0..4 * 40)
            .map(|i| (i as f32 * 0.37).sin() * 1e-3)
            .collect();
        outlier[77] = 1e30;
        let constant = vec![0.25f32; 4 * 40];
        for m in methods() {
            for (what, w) in [
                ("zeros", &zeros),
                ("outlier", &outlier),
                ("constant", &constant),
            ] {
                if what == "outlier" && matches!(m, Method::Int { .. }) {
                    // f16 scales top out at 65504: refused, saying which group and why
                    let e = quantize(m, w, 4, 40).unwrap_err().to_string();
                    assert!(
                        e.contains("beyond f16's range") && e.contains("(1, "),
                        "{e}"
                    );
                    continue;
                }
                check_against_reference(m, w, 4, 40);
                let d = quantize(m, w, 4, 40).unwrap().dequantize();
                assert!(d.iter().all(|v| v.is_finite()), "{m:?} {what}");
                match what {
                    "zeros" => assert!(d.iter().all(|&v| v == 0.0), "{m:?}"),
                    // the outlier sets its group's scale and comes back within it
                    "outlier" => assert!((d[77] / 1e30 - 1.0).abs() < 1e-2, "{m:?}: {}", d[77]),
                    _ => {
                        // a constant is its group's extreme: int8 and nf4 restore it to an ulp,
                        // int4 to its f16 scale's rounding
                        let tol = if matches!(m, Method::Int { .. }) {
                            1e-3
                        } else {
                            1e-6
                        };
                        assert!(
                            d.iter().all(|&v| (v - 0.25).abs() <= tol * 0.25),
                            "{m:?}: {d:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn non_finite_weights_are_refused_by_position() {
        let mut w = vec![0.5f32; 12];
        w[7] = f32::NAN;
        let e = quantize(Method::Nf4 { block: 4 }, &w, 3, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("weight (1, 3) is NaN"), "{e}");
    }

    #[test]
    fn errors_and_sizes_are_what_the_formats_promise() {
        let mut rng = Rng::new(3);
        let (rows, cols) = (64, 256);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal() as f32).collect();
        for (m, bits, max_err) in [
            (Method::Int8, 8.0 + 32.0 / 256.0, 0.01),
            (Method::Int { bits: 4, group: 32 }, 4.5, 0.12),
            (Method::Int { bits: 3, group: 32 }, 3.5, 0.25),
            (Method::Int { bits: 2, group: 32 }, 2.5, 0.6),
            (Method::Nf4 { block: 64 }, 4.5, 0.11),
        ] {
            let q = quantize(m, &w, rows, cols).unwrap();
            assert!(
                (q.bits_per_weight() - bits).abs() < 1e-9,
                "{m:?}: {}",
                q.bits_per_weight()
            );
            let e = relative_error(&q.dequantize(), &w);
            assert!(e < max_err, "{m:?}: relative error {e}");
        }
        assert!(Method::parse("int8", Some(32)).is_err());
        assert!(Method::parse("int4", Some(0)).is_err());
        assert!(Method::parse("fp3", None).is_err());
    }
}
