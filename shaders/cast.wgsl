// Casts between f32 and the 16-bit float types, in integer arithmetic so that they run on every
// adapter (no SHADER_F16 needed) and give the same bits everywhere: round to nearest, ties to
// even; NaN stays NaN (made quiet, its top mantissa bits kept), ±inf stays ±inf, values past
// the narrow type's range overflow to ±inf, and f16 subnormals are produced and read exactly.
// 16-bit values are stored two per u32, the element with the lower index in the low half.
// The linear index folds a 2-D grid of workgroups (see Gpu::groups_1d).

struct Params {
    // elements
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

const WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// Rounds away the low `shift` bits of `m` to nearest, ties to even (the kept bits' lowest bit).
fn round_shift(m: u32, shift: u32) -> u32 {
    let kept = m >> shift;
    let round_bit = 1u << (shift - 1u);
    // the round bit set, and either a sticky bit below it or an odd kept value
    if ((m & round_bit) != 0u && (m & (3u * round_bit - 1u)) != 0u) {
        return kept + 1u;
    }
    return kept;
}

fn f32_to_f16_bits(x: u32) -> u32 {
    let sign = (x >> 16u) & 0x8000u;
    let exp = x & 0x7F800000u;
    let man = x & 0x007FFFFFu;
    if (exp == 0x7F800000u) {
        var quiet = 0u;
        if (man != 0u) { quiet = 0x0200u; }
        return sign | 0x7C00u | quiet | (man >> 13u);
    }
    let e = i32(exp >> 23u) - 127 + 15;
    if (e >= 31) {
        return sign | 0x7C00u;
    }
    if (e <= 0) {
        // an f16 subnormal, or zero: the hidden bit joins the mantissa
        if (e < -10) {
            return sign;
        }
        return sign | round_shift(man | 0x00800000u, u32(14 - e));
    }
    // a mantissa that rounds up past 1023 carries into the exponent (and 65520 and up to inf)
    return (sign | (u32(e) << 10u)) + round_shift(man, 13u);
}

fn f16_to_f32_bits(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let exp = h & 0x7C00u;
    let man = h & 0x03FFu;
    if (exp == 0x7C00u) {
        if (man == 0u) {
            return sign | 0x7F800000u;
        }
        return sign | 0x7FC00000u | (man << 13u);
    }
    if (exp == 0u) {
        if (man == 0u) {
            return sign;
        }
        // subnormal: normalise (man < 2^10, so its top bit is at 31 - countLeadingZeros)
        let top = 31u - countLeadingZeros(man);
        let e = 127u - 15u - (10u - top) + 1u;
        let m = (man << (23u - top)) & 0x007FFFFFu;
        return sign | (e << 23u) | m;
    }
    return sign | (((exp >> 10u) + 127u - 15u) << 23u) | (man << 13u);
}

fn f32_to_bf16_bits(x: u32) -> u32 {
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
        return (x >> 16u) | 0x0040u;
    }
    // the exponent takes the carry, so the largest finite values round to inf
    return round_shift(x, 16u);
}

fn bf16_to_f32_bits(b: u32) -> u32 {
    if ((b & 0x7FFFu) > 0x7F80u) {
        return (b | 0x0040u) << 16u;
    }
    return b << 16u;
}

// Which 16-bit type the entry points convert to or from (an override constant, so each is
// one pipeline with no branch on the type).
override BF16: bool = false;

fn narrow16(x: u32) -> u32 {
    if (BF16) { return f32_to_bf16_bits(x); }
    return f32_to_f16_bits(x);
}

fn widen16(h: u32) -> u32 {
    if (BF16) { return bf16_to_f32_bits(h); }
    return f16_to_f32_bits(h);
}

// dst (ceil(n/2) words of two 16-bit values) from src (n f32); one output word per invocation.
@compute @workgroup_size(256)
fn narrow(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = index(wid, nwg, lid);
    if (2u * w >= p.n) { return; }
    var hi = 0u;
    if (2u * w + 1u < p.n) { hi = narrow16(src[2u * w + 1u]); }
    dst[w] = narrow16(src[2u * w]) | (hi << 16u);
}

// dst (n f32) from src (two 16-bit values per word); one output element per invocation.
@compute @workgroup_size(256)
fn widen(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    dst[i] = widen16((src[i / 2u] >> (16u * (i % 2u))) & 0xFFFFu);
}
