// tile: 16 8 8 rows-first textures ubo-b timing-only
// lane = row: each lane accumulates its row of A times 8 columns of B as scalars (2 row groups of
// 8 rows, 16 accumulators per lane in registers), A read through a texture, B from a uniform
// buffer at an index the same for every lane, hoping for one scalar load and splat per value.
// On llvmpipe (Mesa 22.3) it was 5-8 GFLOP/s (README). `timing-only`: B is indexed modulo its first
// 64 KiB, so the products are wrong by design; only the rate is of interest.
struct P { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var a: texture_2d<f32>;
@group(0) @binding(2) var<uniform> b: array<vec4<f32>, 4096>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let lane = lid.x;
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let row0 = wg.x * 16u;
    let col0 = wg.y * 8u;
    let arow0 = min(row0 + 0u + lane, p.m - 1u);
    let arow1 = min(row0 + 8u + lane, p.m - 1u);
    var c0_0 = 0.0;
    var c0_1 = 0.0;
    var c0_2 = 0.0;
    var c0_3 = 0.0;
    var c0_4 = 0.0;
    var c0_5 = 0.0;
    var c0_6 = 0.0;
    var c0_7 = 0.0;
    var c1_0 = 0.0;
    var c1_1 = 0.0;
    var c1_2 = 0.0;
    var c1_3 = 0.0;
    var c1_4 = 0.0;
    var c1_5 = 0.0;
    var c1_6 = 0.0;
    var c1_7 = 0.0;
    for (var kq = 0u; kq < k4; kq++) {
        let a0 = textureLoad(a, vec2<u32>(kq, arow0), 0);
        let a1 = textureLoad(a, vec2<u32>(kq, arow1), 0);
        let b0_0 = b[((4u * kq + 0u) * n4 + col0 / 4u + 0u) % 4096u];
        c0_0 = fma(a0.x, b0_0.x, c0_0);
        c1_0 = fma(a1.x, b0_0.x, c1_0);
        c0_1 = fma(a0.x, b0_0.y, c0_1);
        c1_1 = fma(a1.x, b0_0.y, c1_1);
        c0_2 = fma(a0.x, b0_0.z, c0_2);
        c1_2 = fma(a1.x, b0_0.z, c1_2);
        c0_3 = fma(a0.x, b0_0.w, c0_3);
        c1_3 = fma(a1.x, b0_0.w, c1_3);
        let b0_1 = b[((4u * kq + 0u) * n4 + col0 / 4u + 1u) % 4096u];
        c0_4 = fma(a0.x, b0_1.x, c0_4);
        c1_4 = fma(a1.x, b0_1.x, c1_4);
        c0_5 = fma(a0.x, b0_1.y, c0_5);
        c1_5 = fma(a1.x, b0_1.y, c1_5);
        c0_6 = fma(a0.x, b0_1.z, c0_6);
        c1_6 = fma(a1.x, b0_1.z, c1_6);
        c0_7 = fma(a0.x, b0_1.w, c0_7);
        c1_7 = fma(a1.x, b0_1.w, c1_7);
        let b1_0 = b[((4u * kq + 1u) * n4 + col0 / 4u + 0u) % 4096u];
        c0_0 = fma(a0.y, b1_0.x, c0_0);
        c1_0 = fma(a1.y, b1_0.x, c1_0);
        c0_1 = fma(a0.y, b1_0.y, c0_1);
        c1_1 = fma(a1.y, b1_0.y, c1_1);
        c0_2 = fma(a0.y, b1_0.z, c0_2);
        c1_2 = fma(a1.y, b1_0.z, c1_2);
        c0_3 = fma(a0.y, b1_0.w, c0_3);
        c1_3 = fma(a1.y, b1_0.w, c1_3);
        let b1_1 = b[((4u * kq + 1u) * n4 + col0 / 4u + 1u) % 4096u];
        c0_4 = fma(a0.y, b1_1.x, c0_4);
        c1_4 = fma(a1.y, b1_1.x, c1_4);
        c0_5 = fma(a0.y, b1_1.y, c0_5);
        c1_5 = fma(a1.y, b1_1.y, c1_5);
        c0_6 = fma(a0.y, b1_1.z, c0_6);
        c1_6 = fma(a1.y, b1_1.z, c1_6);
        c0_7 = fma(a0.y, b1_1.w, c0_7);
        c1_7 = fma(a1.y, b1_1.w, c1_7);
        let b2_0 = b[((4u * kq + 2u) * n4 + col0 / 4u + 0u) % 4096u];
        c0_0 = fma(a0.z, b2_0.x, c0_0);
        c1_0 = fma(a1.z, b2_0.x, c1_0);
        c0_1 = fma(a0.z, b2_0.y, c0_1);
        c1_1 = fma(a1.z, b2_0.y, c1_1);
        c0_2 = fma(a0.z, b2_0.z, c0_2);
        c1_2 = fma(a1.z, b2_0.z, c1_2);
        c0_3 = fma(a0.z, b2_0.w, c0_3);
        c1_3 = fma(a1.z, b2_0.w, c1_3);
        let b2_1 = b[((4u * kq + 2u) * n4 + col0 / 4u + 1u) % 4096u];
        c0_4 = fma(a0.z, b2_1.x, c0_4);
        c1_4 = fma(a1.z, b2_1.x, c1_4);
        c0_5 = fma(a0.z, b2_1.y, c0_5);
        c1_5 = fma(a1.z, b2_1.y, c1_5);
        c0_6 = fma(a0.z, b2_1.z, c0_6);
        c1_6 = fma(a1.z, b2_1.z, c1_6);
        c0_7 = fma(a0.z, b2_1.w, c0_7);
        c1_7 = fma(a1.z, b2_1.w, c1_7);
        let b3_0 = b[((4u * kq + 3u) * n4 + col0 / 4u + 0u) % 4096u];
        c0_0 = fma(a0.w, b3_0.x, c0_0);
        c1_0 = fma(a1.w, b3_0.x, c1_0);
        c0_1 = fma(a0.w, b3_0.y, c0_1);
        c1_1 = fma(a1.w, b3_0.y, c1_1);
        c0_2 = fma(a0.w, b3_0.z, c0_2);
        c1_2 = fma(a1.w, b3_0.z, c1_2);
        c0_3 = fma(a0.w, b3_0.w, c0_3);
        c1_3 = fma(a1.w, b3_0.w, c1_3);
        let b3_1 = b[((4u * kq + 3u) * n4 + col0 / 4u + 1u) % 4096u];
        c0_4 = fma(a0.w, b3_1.x, c0_4);
        c1_4 = fma(a1.w, b3_1.x, c1_4);
        c0_5 = fma(a0.w, b3_1.y, c0_5);
        c1_5 = fma(a1.w, b3_1.y, c1_5);
        c0_6 = fma(a0.w, b3_1.z, c0_6);
        c1_6 = fma(a1.w, b3_1.z, c1_6);
        c0_7 = fma(a0.w, b3_1.w, c0_7);
        c1_7 = fma(a1.w, b3_1.w, c1_7);
    }
    let orow0 = row0 + 0u + lane;
    if (orow0 < p.m && col0 + 0u < p.n) { c[orow0 * p.n + col0 + 0u] = c0_0; }
    if (orow0 < p.m && col0 + 1u < p.n) { c[orow0 * p.n + col0 + 1u] = c0_1; }
    if (orow0 < p.m && col0 + 2u < p.n) { c[orow0 * p.n + col0 + 2u] = c0_2; }
    if (orow0 < p.m && col0 + 3u < p.n) { c[orow0 * p.n + col0 + 3u] = c0_3; }
    if (orow0 < p.m && col0 + 4u < p.n) { c[orow0 * p.n + col0 + 4u] = c0_4; }
    if (orow0 < p.m && col0 + 5u < p.n) { c[orow0 * p.n + col0 + 5u] = c0_5; }
    if (orow0 < p.m && col0 + 6u < p.n) { c[orow0 * p.n + col0 + 6u] = c0_6; }
    if (orow0 < p.m && col0 + 7u < p.n) { c[orow0 * p.n + col0 + 7u] = c0_7; }
    let orow1 = row0 + 8u + lane;
    if (orow1 < p.m && col0 + 0u < p.n) { c[orow1 * p.n + col0 + 0u] = c1_0; }
    if (orow1 < p.m && col0 + 1u < p.n) { c[orow1 * p.n + col0 + 1u] = c1_1; }
    if (orow1 < p.m && col0 + 2u < p.n) { c[orow1 * p.n + col0 + 2u] = c1_2; }
    if (orow1 < p.m && col0 + 3u < p.n) { c[orow1 * p.n + col0 + 3u] = c1_3; }
    if (orow1 < p.m && col0 + 4u < p.n) { c[orow1 * p.n + col0 + 4u] = c1_4; }
    if (orow1 < p.m && col0 + 5u < p.n) { c[orow1 * p.n + col0 + 5u] = c1_5; }
    if (orow1 < p.m && col0 + 6u < p.n) { c[orow1 * p.n + col0 + 6u] = c1_6; }
    if (orow1 < p.m && col0 + 7u < p.n) { c[orow1 * p.n + col0 + 7u] = c1_7; }
}
