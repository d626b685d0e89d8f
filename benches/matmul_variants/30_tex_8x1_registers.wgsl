// tile: 8 32 8 rows-first textures
// 25 with a tile that fits the registers: 8 rows x one vec4 column per lane (32 accumulators'
// worth of lanes, 8 rows x 32 columns per workgroup) instead of 32 x 8: no spills, but five
// texture fetches per 4 k for 32 vec4 multiply-adds instead of 12 for 256.
struct P { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var a: texture_2d<f32>;
@group(0) @binding(2) var b: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;
@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let lane = lid.x;
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let row0 = wg.x * 8u;
    let arow = min(row0 + min(lane, 7u), p.m - 1u);
    let bcol0 = min(wg.y * 8u + 0u + lane, n4 - 1u);
    var acc0_0 = vec4<f32>(0.0);
    var acc1_0 = vec4<f32>(0.0);
    var acc2_0 = vec4<f32>(0.0);
    var acc3_0 = vec4<f32>(0.0);
    var acc4_0 = vec4<f32>(0.0);
    var acc5_0 = vec4<f32>(0.0);
    var acc6_0 = vec4<f32>(0.0);
    var acc7_0 = vec4<f32>(0.0);
    for (var kq = 0u; kq < k4; kq++) {
        let av = textureLoad(a, vec2<u32>(kq, arow), 0);
        let b0_0 = textureLoad(b, vec2<u32>(bcol0, 4u * kq + 0u), 0);
        let b0_1 = textureLoad(b, vec2<u32>(bcol0, 4u * kq + 1u), 0);
        let b0_2 = textureLoad(b, vec2<u32>(bcol0, 4u * kq + 2u), 0);
        let b0_3 = textureLoad(b, vec2<u32>(bcol0, 4u * kq + 3u), 0);
        let s0_0 = vec4(subgroupBroadcast(av.x, 0u));
        let s0_1 = vec4(subgroupBroadcast(av.y, 0u));
        let s0_2 = vec4(subgroupBroadcast(av.z, 0u));
        let s0_3 = vec4(subgroupBroadcast(av.w, 0u));
        let s1_0 = vec4(subgroupBroadcast(av.x, 1u));
        let s1_1 = vec4(subgroupBroadcast(av.y, 1u));
        let s1_2 = vec4(subgroupBroadcast(av.z, 1u));
        let s1_3 = vec4(subgroupBroadcast(av.w, 1u));
        let s2_0 = vec4(subgroupBroadcast(av.x, 2u));
        let s2_1 = vec4(subgroupBroadcast(av.y, 2u));
        let s2_2 = vec4(subgroupBroadcast(av.z, 2u));
        let s2_3 = vec4(subgroupBroadcast(av.w, 2u));
        let s3_0 = vec4(subgroupBroadcast(av.x, 3u));
        let s3_1 = vec4(subgroupBroadcast(av.y, 3u));
        let s3_2 = vec4(subgroupBroadcast(av.z, 3u));
        let s3_3 = vec4(subgroupBroadcast(av.w, 3u));
        let s4_0 = vec4(subgroupBroadcast(av.x, 4u));
        let s4_1 = vec4(subgroupBroadcast(av.y, 4u));
        let s4_2 = vec4(subgroupBroadcast(av.z, 4u));
        let s4_3 = vec4(subgroupBroadcast(av.w, 4u));
        let s5_0 = vec4(subgroupBroadcast(av.x, 5u));
        let s5_1 = vec4(subgroupBroadcast(av.y, 5u));
        let s5_2 = vec4(subgroupBroadcast(av.z, 5u));
        let s5_3 = vec4(subgroupBroadcast(av.w, 5u));
        let s6_0 = vec4(subgroupBroadcast(av.x, 6u));
        let s6_1 = vec4(subgroupBroadcast(av.y, 6u));
        let s6_2 = vec4(subgroupBroadcast(av.z, 6u));
        let s6_3 = vec4(subgroupBroadcast(av.w, 6u));
        let s7_0 = vec4(subgroupBroadcast(av.x, 7u));
        let s7_1 = vec4(subgroupBroadcast(av.y, 7u));
        let s7_2 = vec4(subgroupBroadcast(av.z, 7u));
        let s7_3 = vec4(subgroupBroadcast(av.w, 7u));
        acc0_0 = fma(s0_3, b0_3, fma(s0_2, b0_2, fma(s0_1, b0_1, fma(s0_0, b0_0, acc0_0))));
        acc1_0 = fma(s1_3, b0_3, fma(s1_2, b0_2, fma(s1_1, b0_1, fma(s1_0, b0_0, acc1_0))));
        acc2_0 = fma(s2_3, b0_3, fma(s2_2, b0_2, fma(s2_1, b0_1, fma(s2_0, b0_0, acc2_0))));
        acc3_0 = fma(s3_3, b0_3, fma(s3_2, b0_2, fma(s3_1, b0_1, fma(s3_0, b0_0, acc3_0))));
        acc4_0 = fma(s4_3, b0_3, fma(s4_2, b0_2, fma(s4_1, b0_1, fma(s4_0, b0_0, acc4_0))));
        acc5_0 = fma(s5_3, b0_3, fma(s5_2, b0_2, fma(s5_1, b0_1, fma(s5_0, b0_0, acc5_0))));
        acc6_0 = fma(s6_3, b0_3, fma(s6_2, b0_2, fma(s6_1, b0_1, fma(s6_0, b0_0, acc6_0))));
        acc7_0 = fma(s7_3, b0_3, fma(s7_2, b0_2, fma(s7_1, b0_1, fma(s7_0, b0_0, acc7_0))));
    }
    if (row0 + 0u < p.m && wg.y * 8u + 0u + lane < n4) { c[(row0 + 0u) * n4 + wg.y * 8u + 0u + lane] = acc0_0; }
    if (row0 + 1u < p.m && wg.y * 8u + 0u + lane < n4) { c[(row0 + 1u) * n4 + wg.y * 8u + 0u + lane] = acc1_0; }
    if (row0 + 2u < p.m && wg.y * 8u + 0u + lane < n4) { c[(row0 + 2u) * n4 + wg.y * 8u + 0u + lane] = acc2_0; }
    if (row0 + 3u < p.m && wg.y * 8u + 0u + lane < n4) { c[(row0 + 3u) * n4 + wg.y * 8u + 0u + lane] = acc3_0; }
    if (row0 + 4u < p.m && wg.y * 8u + 0u + lane < n4) { c[(row0 + 4u) * n4 + wg.y * 8u + 0u + lane] = acc4_0; }
    if (row0 + 5u < p.m && wg.y * 8u + 0u + lane < n4) { c[(row0 + 5u) * n4 + wg.y * 8u + 0u + lane] = acc5_0; }
    if (row0 + 6u < p.m && wg.y * 8u + 0u + lane < n4) { c[(row0 + 6u) * n4 + wg.y * 8u + 0u + lane] = acc6_0; }
    if (row0 + 7u < p.m && wg.y * 8u + 0u + lane < n4) { c[(row0 + 7u) * n4 + wg.y * 8u + 0u + lane] = acc7_0; }
}
