// ggml's blocks decoded to f32 on the device (a GGUF tensor's bytes uploaded as they are, in u32
// words), one weight per invocation, each computed as the host decoder (src/import/ggml.rs)
// computes it: FORMAT 0 F16, 1 BF16, 2 Q8_0 (w = d·q), 3 Q4_0 (w = d·(q − 8)), 4 Q4_1
// (w = d·q + m). Every product of a block's f16 scale and its small integer code is exact in
// f32, so the one rounding left (Q4_1's sum) is the same whether or not a compiler fuses the
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
