// ggml's blocks decoded to f32 on the device (a GGUF tensor's bytes uploaded as they are, in u32
// words), one weight per invocation, each computed as the host decoder (src/import/ggml.rs)
// computes it: FORMAT 0 F16, 1 BF16, 2 Q8_0 (w = d·q), 3 Q4_0 (w = d·(q − 8)), 4 Q4_1
// (w = d·q + m), 5 Q4_K and 6 Q5_K (256-weight super-blocks of eight 32-weight sub-blocks, each
// with 6-bit scale and min codes: w = (d·sc)·q − dmin·m), 7 Q6_K (sixteen 16-weight
// sub-blocks with i8 scales: w = (d·sc)·q). Every product of a block's f16 scale and its small
// integer codes is exact in f32 (at most 11 + 6 + 5 significant bits) except Q6_K's second
// (11 + 8 + 6), a single correctly rounded multiply here as on the host; so the one rounding
// left in each (Q4_1's and the k-quants' sums) is the same whether or not a compiler fuses the
// multiply and add: the bits equal the host's on every GPU.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> raw: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

override FORMAT: u32 = 0u;
const WG: u32 = 256u;

fn byte_at(b: u32) -> u32 {
    return (raw[b >> 2u] >> ((b & 3u) * 8u)) & 0xFFu;
}

fn u16_at(b: u32) -> u32 {
    return byte_at(b) | (byte_at(b + 1u) << 8u);
}

// f16_to_f32_bits (an f16's bits widened to an f32's with integer arithmetic, exact) is
// cast.wgsl's, appended to this source when it is built (gpu::shaders::ggml_source).

fn f16_at(b: u32) -> f32 {
    return bitcast<f32>(f16_to_f32_bits(u16_at(b)));
}

@compute @workgroup_size(256)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.n) { return; }
    if (FORMAT == 0u) {
        out[i] = f16_at(2u * i);
        return;
    }
    if (FORMAT == 1u) {
        out[i] = bitcast<f32>(u16_at(2u * i) << 16u);
        return;
    }
    if (FORMAT >= 5u) {
        out[i] = k_quant(i);
        return;
    }
    let block = i / 32u;
    let j = i % 32u;
    if (FORMAT == 2u) {
        let at = block * 34u;
        let q = bitcast<i32>(byte_at(at + 2u + j) << 24u) >> 24u;
        out[i] = f16_at(at) * f32(q);
        return;
    }
    // Q4_0, Q4_1: 16 bytes of nibbles, the low ones the block's first 16 weights
    let size = select(20u, 18u, FORMAT == 3u);
    let at = block * size;
    let codes = at + size - 16u;
    let q = (byte_at(codes + j % 16u) >> (4u * (j / 16u))) & 15u;
    if (FORMAT == 3u) {
        out[i] = f16_at(at) * f32(i32(q) - 8);
    } else {
        out[i] = f16_at(at) * f32(q) + f16_at(at + 2u);
    }
}

// A Q4_K/Q5_K block's 6-bit (scale, min) of sub-block j, from its 12 packed bytes at `at`:
// the first four sub-blocks' in the low 6 bits of bytes 0-3 and 4-7, the last four's low 4 bits
// in bytes 8-11 and their top 2 bits in the top bits of bytes 0-3 and 4-7.
fn scale_min_k4(at: u32, j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(byte_at(at + j) & 63u, byte_at(at + j + 4u) & 63u);
    }
    let sc = (byte_at(at + j + 4u) & 15u) | ((byte_at(at + j - 4u) >> 6u) << 4u);
    let m = (byte_at(at + j + 4u) >> 4u) | ((byte_at(at + j) >> 6u) << 4u);
    return vec2<u32>(sc, m);
}

fn k_quant(i: u32) -> f32 {
    let e = i % 256u;
    if (FORMAT == 7u) {
        // Q6_K: ql (128 bytes), qh (64), scales (16, i8), d
        let at = (i / 256u) * 210u;
        let r = e / 32u;
        let l = e % 32u;
        let n = r / 4u;
        let low = (byte_at(at + 64u * n + 32u * (r % 2u) + l) >> (4u * ((r / 2u) % 2u))) & 15u;
        let high = (byte_at(at + 128u + 32u * n + l) >> (2u * (r % 4u))) & 3u;
        let q = i32(low | (high << 4u)) - 32;
        let sc = bitcast<i32>(byte_at(at + 192u + e / 16u) << 24u) >> 24u;
        return (f16_at(at + 208u) * f32(sc)) * f32(q);
    }
    // Q4_K: d, dmin, scales (12), qs (128); Q5_K: qh (32) before qs
    let five = FORMAT == 6u;
    let at = (i / 256u) * select(144u, 176u, five);
    let s = e / 32u;
    let l = e % 32u;
    let sm = scale_min_k4(at + 4u, s);
    let qs = at + select(16u, 48u, five);
    var q = (byte_at(qs + 32u * (s / 2u) + l) >> (4u * (s % 2u))) & 15u;
    if (five) {
        q |= ((byte_at(at + 16u + l) >> s) & 1u) << 4u;
    }
    let ds = f16_at(at) * f32(sm.x);
    let dm = f16_at(at + 2u) * f32(sm.y);
    return ds * f32(q) - dm;
}
