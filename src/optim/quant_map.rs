//! The dynamic quantization maps of 8-bit Adam, built as bitsandbytes'
//! `create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)` builds them: for each exponent
//! i = 0..7 the midpoints of an even split of [0.1, 1] (2^i parts signed, 2^(i+1) unsigned),
//! scaled by 10^(i−6), mirrored for the signed map; then 0 and 1; sorted. 256 values each.

/// The 256 sorted values of the dynamic map (as f32, the precision the kernel reads).
pub fn dynamic_map(signed: bool) -> Vec<f32> {
    const MAX_EXPONENT_BITS: i32 = 7;
    const NON_SIGN_BITS: i32 = 7; // total_bits − 1, whether signed or not
    let mut data: Vec<f64> = vec![];
    for i in 0..MAX_EXPONENT_BITS {
        let fraction_items = if signed {
            (1i64 << (i + NON_SIGN_BITS - MAX_EXPONENT_BITS)) + 1
        } else {
            (1i64 << (i + NON_SIGN_BITS - MAX_EXPONENT_BITS + 1)) + 1
        };
        let scale = 10f64.powi(-(MAX_EXPONENT_BITS - 1) + i);
        // boundaries = linspace(0.1, 1, fraction_items); means of neighbours
        let step = 0.9 / (fraction_items - 1) as f64;
        for j in 0..fraction_items - 1 {
            let mean = ((0.1 + j as f64 * step) + (0.1 + (j + 1) as f64 * step)) / 2.0;
            data.push(scale * mean);
            if signed {
                data.push(-scale * mean);
            }
        }
    }
    // additional_items = 2^(non_sign_bits − max_exponent_bits) − 1 = 0 for these arguments
    data.push(0.0);
    data.push(1.0);
    assert_eq!(data.len(), 256);
    data.sort_by(f64::total_cmp);
    data.into_iter().map(|v| v as f32).collect()
}

/// Signed map followed by unsigned map: the kernel's `qmap` binding (512 values).
pub fn kernel_maps() -> Vec<f32> {
    let mut maps = dynamic_map(true);
    maps.extend(dynamic_map(false));
    maps
}

/// The code whose map value is nearest to x (ties to the lower code), as the kernel computes it.
pub fn nearest_code(map: &[f32], x: f32) -> u8 {
    if x <= map[0] {
        return 0;
    }
    if x >= map[255] {
        return 255;
    }
    let (mut lo, mut hi) = (0usize, 255usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if map[mid] <= x {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if map[hi] - x < x - map[lo] {
        hi as u8
    } else {
        lo as u8
    }
}
