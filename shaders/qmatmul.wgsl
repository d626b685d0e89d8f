// y (M, N) = x (M, K) · Wᵀ with W (N, K) stored quantized (src/quant): each weight decoded
// inside the load from its code and its group's scale, the products summed in f32 over k in
// order. FORMAT: 0 int8 (a signed byte, one scale per row), 1 int4, int3, int2 (a `bits`-bit
// code, (q − 2^(bits−1))·d with d an f16), 2 nf4 (a nibble indexing the NF4 values, times an
// f32 absmax). Codes are bytes, row n starting at byte n·row_bytes; narrower codes are the
// row's little-endian bitstream (code c in bits c·bits ..: 4-bit codes two to a byte, the even
// column in the low nibble; a 3-bit code may straddle two bytes); scales are one per group of
// `group` columns, row by row (int: f16 pairs per u32).
// With `has_bias` each output adds its column's bias, and with `relu` it is max(·, 0) after.
// The linear index folds a 2-D grid (see Gpu::groups_1d).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    row_bytes: u32,
    groups: u32,
    group: u32,
    has_bias: u32,
    relu: u32,
    bits: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>; // main4's view of x

override FORMAT: u32 = 0u;

const WG: u32 = 64u;

fn byte_at(b: u32) -> u32 {
    return (codes[b >> 2u] >> ((b & 3u) * 8u)) & 0xFFu;
}

fn scale_at(i: u32) -> f32 {
    if (FORMAT == 1u) {
        let h = unpack2x16float(scales[i >> 1u]);
        return select(h.x, h.y, (i & 1u) == 1u);
    }
    return bitcast<f32>(scales[i]);
}

// The NF4 value of code q as a tree of selects on q's bits: a private table indexed per lane
// is a gather on llvmpipe, and this decode runs once per weight per eight products.
fn nf4(q: u32) -> f32 {
    let b0 = (q & 1u) != 0u;
    let b1 = (q & 2u) != 0u;
    let b2 = (q & 4u) != 0u;
    let b3 = (q & 8u) != 0u;
    let p0 = select(-1.0, -0.6961928009986877, b0);
    let p1 = select(-0.5250730514526367, -0.39491748809814453, b0);
    let p2 = select(-0.28444138169288635, -0.18477343022823334, b0);
    let p3 = select(-0.09105003625154495, 0.0, b0);
    let p4 = select(0.07958029955625534, 0.16093020141124725, b0);
    let p5 = select(0.24611230194568634, 0.33791524171829224, b0);
    let p6 = select(0.44070982933044434, 0.5626170039176941, b0);
    let p7 = select(0.7229568362236023, 1.0, b0);
    let q0 = select(p0, p1, b1);
    let q1 = select(p2, p3, b1);
    let q2 = select(p4, p5, b1);
    let q3 = select(p6, p7, b1);
    let r0 = select(q0, q1, b2);
    let r1 = select(q2, q3, b2);
    return select(r0, r1, b3);
}

fn weight(row: u32, c: u32) -> f32 {
    let d = scale_at(row * p.groups + c / p.group);
    let base = row * p.row_bytes;
    if (FORMAT == 0u) {
        let q = bitcast<i32>(byte_at(base + c) << 24u) >> 24u;
        return f32(q) * d;
    }
    let bit = c * p.bits;
    var two = byte_at(base + bit / 8u);
    if ((bit % 8u) + p.bits > 8u) {
        // only then is the next byte part of this row's codes
        two = two | (byte_at(base + bit / 8u + 1u) << 8u);
    }
    let q = (two >> (bit % 8u)) & ((1u << p.bits) - 1u);
    if (FORMAT == 1u) {
        return (f32(q) - f32(1u << (p.bits - 1u))) * d;
    }
    return nf4(q) * d;
}

// The epilogue: y[row, col] = v (+ bias[col]) (then max(·, 0)), for rows inside M.
fn store(row: u32, col: u32, acc: f32) {
    if (row >= p.m) {
        return;
    }
    var v = acc;
    if (p.has_bias != 0u) {
        v = v + bias[col];
    }
    if (p.relu != 0u) {
        v = max(v, 0.0);
    }
    y[row * p.n + col] = v;
}

// Each invocation computes four rows of one output column, so each weight is decoded once
// for four products; every output still sums its k in order.
const ROWS: u32 = 4u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    let row_blocks = (p.m + ROWS - 1u) / ROWS;
    if (i >= row_blocks * p.n) {
        return;
    }
    let r0 = (i / p.n) * ROWS;
    let col = i % p.n;
    // rows past M read row M − 1 again (in bounds) and are not stored
    let last = p.m - 1u;
    let x0 = min(r0, last) * p.k;
    let x1 = min(r0 + 1u, last) * p.k;
    let x2 = min(r0 + 2u, last) * p.k;
    let x3 = min(r0 + 3u, last) * p.k;
    var acc = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        let w = weight(col, kk);
        acc = acc + vec4<f32>(x[x0 + kk], x[x1 + kk], x[x2 + kk], x[x3 + kk]) * w;
    }
    for (var j = 0u; j < ROWS; j = j + 1u) {
        store(r0 + j, col, acc[j]);
    }
}

// main for K a multiple of 4, eight rows of one column per invocation: x read a vec4 (four k)
// at a time for each row, each weight decoded once per eight products. The same sums grouped by
// four (a dot of four products, then added).
const ROWS8: u32 = 8u;

fn x_row(r: u32) -> u32 {
    return min(r, p.m - 1u) * (p.k / 4u);
}

@compute @workgroup_size(64)
fn main4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    let row_blocks = (p.m + ROWS8 - 1u) / ROWS8;
    if (i >= row_blocks * p.n) {
        return;
    }
    let r0 = (i / p.n) * ROWS8;
    let col = i % p.n;
    // rows past M read row M − 1 again (in bounds) and are not stored
    let x0 = x_row(r0);
    let x1 = x_row(r0 + 1u);
    let x2 = x_row(r0 + 2u);
    let x3 = x_row(r0 + 3u);
    let x4_ = x_row(r0 + 4u);
    let x5 = x_row(r0 + 5u);
    let x6 = x_row(r0 + 6u);
    let x7 = x_row(r0 + 7u);
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k / 4u; kk = kk + 1u) {
        let c = 4u * kk;
        let w = vec4<f32>(weight(col, c), weight(col, c + 1u), weight(col, c + 2u),
                          weight(col, c + 3u));
        lo = lo + vec4<f32>(dot(x4[x0 + kk], w), dot(x4[x1 + kk], w), dot(x4[x2 + kk], w),
                            dot(x4[x3 + kk], w));
        hi = hi + vec4<f32>(dot(x4[x4_ + kk], w), dot(x4[x5 + kk], w), dot(x4[x6 + kk], w),
                            dot(x4[x7 + kk], w));
    }
    for (var j = 0u; j < ROWS8; j = j + 1u) {
        store(r0 + j, col, select(hi[j % 4u], lo[j % 4u], j < 4u));
    }
}

// W itself: y (N, K) = the decoded weights, one per invocation (what a frozen quantized weight's
// backward multiplies by: dx = dy·W; see ops::qmatmul::dequantize).
@compute @workgroup_size(64)
fn dequantize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.n * p.k) {
        return;
    }
    y[i] = weight(i / p.k, i % p.k);
}
