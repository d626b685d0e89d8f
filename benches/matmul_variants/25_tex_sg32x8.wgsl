// tile: 32 64 8 rows-first textures
// 22's tile (the library's 4x2 subgroup tile) with A and B read through textures
// (rgba32float, textureLoad: one texel = one vec4) instead of storage buffers: llvmpipe fetches
// texels for all SIMD lanes with gathers, where a storage read is a loop over the lanes.
// 32 rows x 8 columns per lane (4 row groups x 2 vec4 columns), k stepped by 4: the
// library's subgroup tile generated at this size (A shared by subgroupBroadcast).
struct P { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var a: texture_2d<f32>; // (K/4 texels wide, M high)
@group(0) @binding(2) var b: texture_2d<f32>; // (N/4 texels wide, K high)
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.x * 32u;
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let col4 = wg.y * 16u + lid.x;
    var acc: array<vec4<f32>, 64>;
    let arow0 = min(row0 + 0u + lid.x, p.m - 1u);
    let arow1 = min(row0 + 8u + lid.x, p.m - 1u);
    let arow2 = min(row0 + 16u + lid.x, p.m - 1u);
    let arow3 = min(row0 + 24u + lid.x, p.m - 1u);
    let bcol0 = min(col4 + 0u, n4 - 1u);
    let bcol1 = min(col4 + 8u, n4 - 1u);
    for (var kq = 0u; kq < k4; kq++) {
        let a0 = textureLoad(a, vec2<u32>(kq, arow0), 0);
        let a1 = textureLoad(a, vec2<u32>(kq, arow1), 0);
        let a2 = textureLoad(a, vec2<u32>(kq, arow2), 0);
        let a3 = textureLoad(a, vec2<u32>(kq, arow3), 0);
        let b0_0 = textureLoad(b, vec2<u32>(bcol0, 4u * kq + 0u), 0);
        let b0_1 = textureLoad(b, vec2<u32>(bcol0, 4u * kq + 1u), 0);
        let b0_2 = textureLoad(b, vec2<u32>(bcol0, 4u * kq + 2u), 0);
        let b0_3 = textureLoad(b, vec2<u32>(bcol0, 4u * kq + 3u), 0);
        let b1_0 = textureLoad(b, vec2<u32>(bcol1, 4u * kq + 0u), 0);
        let b1_1 = textureLoad(b, vec2<u32>(bcol1, 4u * kq + 1u), 0);
        let b1_2 = textureLoad(b, vec2<u32>(bcol1, 4u * kq + 2u), 0);
        let b1_3 = textureLoad(b, vec2<u32>(bcol1, 4u * kq + 3u), 0);
        acc[0] = fma(vec4(subgroupBroadcast(a0.w, 0u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 0u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 0u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 0u)), b0_0, acc[0]))));
        acc[1] = fma(vec4(subgroupBroadcast(a0.w, 1u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 1u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 1u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 1u)), b0_0, acc[1]))));
        acc[2] = fma(vec4(subgroupBroadcast(a0.w, 2u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 2u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 2u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 2u)), b0_0, acc[2]))));
        acc[3] = fma(vec4(subgroupBroadcast(a0.w, 3u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 3u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 3u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 3u)), b0_0, acc[3]))));
        acc[4] = fma(vec4(subgroupBroadcast(a0.w, 4u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 4u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 4u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 4u)), b0_0, acc[4]))));
        acc[5] = fma(vec4(subgroupBroadcast(a0.w, 5u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 5u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 5u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 5u)), b0_0, acc[5]))));
        acc[6] = fma(vec4(subgroupBroadcast(a0.w, 6u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 6u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 6u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 6u)), b0_0, acc[6]))));
        acc[7] = fma(vec4(subgroupBroadcast(a0.w, 7u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 7u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 7u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 7u)), b0_0, acc[7]))));
        acc[8] = fma(vec4(subgroupBroadcast(a0.w, 0u)), b1_3, fma(vec4(subgroupBroadcast(a0.z, 0u)), b1_2, fma(vec4(subgroupBroadcast(a0.y, 0u)), b1_1, fma(vec4(subgroupBroadcast(a0.x, 0u)), b1_0, acc[8]))));
        acc[9] = fma(vec4(subgroupBroadcast(a0.w, 1u)), b1_3, fma(vec4(subgroupBroadcast(a0.z, 1u)), b1_2, fma(vec4(subgroupBroadcast(a0.y, 1u)), b1_1, fma(vec4(subgroupBroadcast(a0.x, 1u)), b1_0, acc[9]))));
        acc[10] = fma(vec4(subgroupBroadcast(a0.w, 2u)), b1_3, fma(vec4(subgroupBroadcast(a0.z, 2u)), b1_2, fma(vec4(subgroupBroadcast(a0.y, 2u)), b1_1, fma(vec4(subgroupBroadcast(a0.x, 2u)), b1_0, acc[10]))));
        acc[11] = fma(vec4(subgroupBroadcast(a0.w, 3u)), b1_3, fma(vec4(subgroupBroadcast(a0.z, 3u)), b1_2, fma(vec4(subgroupBroadcast(a0.y, 3u)), b1_1, fma(vec4(subgroupBroadcast(a0.x, 3u)), b1_0, acc[11]))));
        acc[12] = fma(vec4(subgroupBroadcast(a0.w, 4u)), b1_3, fma(vec4(subgroupBroadcast(a0.z, 4u)), b1_2, fma(vec4(subgroupBroadcast(a0.y, 4u)), b1_1, fma(vec4(subgroupBroadcast(a0.x, 4u)), b1_0, acc[12]))));
        acc[13] = fma(vec4(subgroupBroadcast(a0.w, 5u)), b1_3, fma(vec4(subgroupBroadcast(a0.z, 5u)), b1_2, fma(vec4(subgroupBroadcast(a0.y, 5u)), b1_1, fma(vec4(subgroupBroadcast(a0.x, 5u)), b1_0, acc[13]))));
        acc[14] = fma(vec4(subgroupBroadcast(a0.w, 6u)), b1_3, fma(vec4(subgroupBroadcast(a0.z, 6u)), b1_2, fma(vec4(subgroupBroadcast(a0.y, 6u)), b1_1, fma(vec4(subgroupBroadcast(a0.x, 6u)), b1_0, acc[14]))));
        acc[15] = fma(vec4(subgroupBroadcast(a0.w, 7u)), b1_3, fma(vec4(subgroupBroadcast(a0.z, 7u)), b1_2, fma(vec4(subgroupBroadcast(a0.y, 7u)), b1_1, fma(vec4(subgroupBroadcast(a0.x, 7u)), b1_0, acc[15]))));
        acc[16] = fma(vec4(subgroupBroadcast(a1.w, 0u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 0u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 0u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 0u)), b0_0, acc[16]))));
        acc[17] = fma(vec4(subgroupBroadcast(a1.w, 1u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 1u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 1u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 1u)), b0_0, acc[17]))));
        acc[18] = fma(vec4(subgroupBroadcast(a1.w, 2u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 2u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 2u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 2u)), b0_0, acc[18]))));
        acc[19] = fma(vec4(subgroupBroadcast(a1.w, 3u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 3u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 3u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 3u)), b0_0, acc[19]))));
        acc[20] = fma(vec4(subgroupBroadcast(a1.w, 4u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 4u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 4u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 4u)), b0_0, acc[20]))));
        acc[21] = fma(vec4(subgroupBroadcast(a1.w, 5u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 5u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 5u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 5u)), b0_0, acc[21]))));
        acc[22] = fma(vec4(subgroupBroadcast(a1.w, 6u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 6u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 6u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 6u)), b0_0, acc[22]))));
        acc[23] = fma(vec4(subgroupBroadcast(a1.w, 7u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 7u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 7u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 7u)), b0_0, acc[23]))));
        acc[24] = fma(vec4(subgroupBroadcast(a1.w, 0u)), b1_3, fma(vec4(subgroupBroadcast(a1.z, 0u)), b1_2, fma(vec4(subgroupBroadcast(a1.y, 0u)), b1_1, fma(vec4(subgroupBroadcast(a1.x, 0u)), b1_0, acc[24]))));
        acc[25] = fma(vec4(subgroupBroadcast(a1.w, 1u)), b1_3, fma(vec4(subgroupBroadcast(a1.z, 1u)), b1_2, fma(vec4(subgroupBroadcast(a1.y, 1u)), b1_1, fma(vec4(subgroupBroadcast(a1.x, 1u)), b1_0, acc[25]))));
        acc[26] = fma(vec4(subgroupBroadcast(a1.w, 2u)), b1_3, fma(vec4(subgroupBroadcast(a1.z, 2u)), b1_2, fma(vec4(subgroupBroadcast(a1.y, 2u)), b1_1, fma(vec4(subgroupBroadcast(a1.x, 2u)), b1_0, acc[26]))));
        acc[27] = fma(vec4(subgroupBroadcast(a1.w, 3u)), b1_3, fma(vec4(subgroupBroadcast(a1.z, 3u)), b1_2, fma(vec4(subgroupBroadcast(a1.y, 3u)), b1_1, fma(vec4(subgroupBroadcast(a1.x, 3u)), b1_0, acc[27]))));
        acc[28] = fma(vec4(subgroupBroadcast(a1.w, 4u)), b1_3, fma(vec4(subgroupBroadcast(a1.z, 4u)), b1_2, fma(vec4(subgroupBroadcast(a1.y, 4u)), b1_1, fma(vec4(subgroupBroadcast(a1.x, 4u)), b1_0, acc[28]))));
        acc[29] = fma(vec4(subgroupBroadcast(a1.w, 5u)), b1_3, fma(vec4(subgroupBroadcast(a1.z, 5u)), b1_2, fma(vec4(subgroupBroadcast(a1.y, 5u)), b1_1, fma(vec4(subgroupBroadcast(a1.x, 5u)), b1_0, acc[29]))));
        acc[30] = fma(vec4(subgroupBroadcast(a1.w, 6u)), b1_3, fma(vec4(subgroupBroadcast(a1.z, 6u)), b1_2, fma(vec4(subgroupBroadcast(a1.y, 6u)), b1_1, fma(vec4(subgroupBroadcast(a1.x, 6u)), b1_0, acc[30]))));
        acc[31] = fma(vec4(subgroupBroadcast(a1.w, 7u)), b1_3, fma(vec4(subgroupBroadcast(a1.z, 7u)), b1_2, fma(vec4(subgroupBroadcast(a1.y, 7u)), b1_1, fma(vec4(subgroupBroadcast(a1.x, 7u)), b1_0, acc[31]))));
        acc[32] = fma(vec4(subgroupBroadcast(a2.w, 0u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 0u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 0u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 0u)), b0_0, acc[32]))));
        acc[33] = fma(vec4(subgroupBroadcast(a2.w, 1u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 1u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 1u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 1u)), b0_0, acc[33]))));
        acc[34] = fma(vec4(subgroupBroadcast(a2.w, 2u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 2u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 2u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 2u)), b0_0, acc[34]))));
        acc[35] = fma(vec4(subgroupBroadcast(a2.w, 3u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 3u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 3u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 3u)), b0_0, acc[35]))));
        acc[36] = fma(vec4(subgroupBroadcast(a2.w, 4u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 4u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 4u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 4u)), b0_0, acc[36]))));
        acc[37] = fma(vec4(subgroupBroadcast(a2.w, 5u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 5u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 5u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 5u)), b0_0, acc[37]))));
        acc[38] = fma(vec4(subgroupBroadcast(a2.w, 6u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 6u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 6u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 6u)), b0_0, acc[38]))));
        acc[39] = fma(vec4(subgroupBroadcast(a2.w, 7u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 7u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 7u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 7u)), b0_0, acc[39]))));
        acc[40] = fma(vec4(subgroupBroadcast(a2.w, 0u)), b1_3, fma(vec4(subgroupBroadcast(a2.z, 0u)), b1_2, fma(vec4(subgroupBroadcast(a2.y, 0u)), b1_1, fma(vec4(subgroupBroadcast(a2.x, 0u)), b1_0, acc[40]))));
        acc[41] = fma(vec4(subgroupBroadcast(a2.w, 1u)), b1_3, fma(vec4(subgroupBroadcast(a2.z, 1u)), b1_2, fma(vec4(subgroupBroadcast(a2.y, 1u)), b1_1, fma(vec4(subgroupBroadcast(a2.x, 1u)), b1_0, acc[41]))));
        acc[42] = fma(vec4(subgroupBroadcast(a2.w, 2u)), b1_3, fma(vec4(subgroupBroadcast(a2.z, 2u)), b1_2, fma(vec4(subgroupBroadcast(a2.y, 2u)), b1_1, fma(vec4(subgroupBroadcast(a2.x, 2u)), b1_0, acc[42]))));
        acc[43] = fma(vec4(subgroupBroadcast(a2.w, 3u)), b1_3, fma(vec4(subgroupBroadcast(a2.z, 3u)), b1_2, fma(vec4(subgroupBroadcast(a2.y, 3u)), b1_1, fma(vec4(subgroupBroadcast(a2.x, 3u)), b1_0, acc[43]))));
        acc[44] = fma(vec4(subgroupBroadcast(a2.w, 4u)), b1_3, fma(vec4(subgroupBroadcast(a2.z, 4u)), b1_2, fma(vec4(subgroupBroadcast(a2.y, 4u)), b1_1, fma(vec4(subgroupBroadcast(a2.x, 4u)), b1_0, acc[44]))));
        acc[45] = fma(vec4(subgroupBroadcast(a2.w, 5u)), b1_3, fma(vec4(subgroupBroadcast(a2.z, 5u)), b1_2, fma(vec4(subgroupBroadcast(a2.y, 5u)), b1_1, fma(vec4(subgroupBroadcast(a2.x, 5u)), b1_0, acc[45]))));
        acc[46] = fma(vec4(subgroupBroadcast(a2.w, 6u)), b1_3, fma(vec4(subgroupBroadcast(a2.z, 6u)), b1_2, fma(vec4(subgroupBroadcast(a2.y, 6u)), b1_1, fma(vec4(subgroupBroadcast(a2.x, 6u)), b1_0, acc[46]))));
        acc[47] = fma(vec4(subgroupBroadcast(a2.w, 7u)), b1_3, fma(vec4(subgroupBroadcast(a2.z, 7u)), b1_2, fma(vec4(subgroupBroadcast(a2.y, 7u)), b1_1, fma(vec4(subgroupBroadcast(a2.x, 7u)), b1_0, acc[47]))));
        acc[48] = fma(vec4(subgroupBroadcast(a3.w, 0u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 0u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 0u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 0u)), b0_0, acc[48]))));
        acc[49] = fma(vec4(subgroupBroadcast(a3.w, 1u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 1u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 1u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 1u)), b0_0, acc[49]))));
        acc[50] = fma(vec4(subgroupBroadcast(a3.w, 2u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 2u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 2u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 2u)), b0_0, acc[50]))));
        acc[51] = fma(vec4(subgroupBroadcast(a3.w, 3u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 3u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 3u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 3u)), b0_0, acc[51]))));
        acc[52] = fma(vec4(subgroupBroadcast(a3.w, 4u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 4u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 4u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 4u)), b0_0, acc[52]))));
        acc[53] = fma(vec4(subgroupBroadcast(a3.w, 5u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 5u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 5u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 5u)), b0_0, acc[53]))));
        acc[54] = fma(vec4(subgroupBroadcast(a3.w, 6u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 6u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 6u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 6u)), b0_0, acc[54]))));
        acc[55] = fma(vec4(subgroupBroadcast(a3.w, 7u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 7u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 7u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 7u)), b0_0, acc[55]))));
        acc[56] = fma(vec4(subgroupBroadcast(a3.w, 0u)), b1_3, fma(vec4(subgroupBroadcast(a3.z, 0u)), b1_2, fma(vec4(subgroupBroadcast(a3.y, 0u)), b1_1, fma(vec4(subgroupBroadcast(a3.x, 0u)), b1_0, acc[56]))));
        acc[57] = fma(vec4(subgroupBroadcast(a3.w, 1u)), b1_3, fma(vec4(subgroupBroadcast(a3.z, 1u)), b1_2, fma(vec4(subgroupBroadcast(a3.y, 1u)), b1_1, fma(vec4(subgroupBroadcast(a3.x, 1u)), b1_0, acc[57]))));
        acc[58] = fma(vec4(subgroupBroadcast(a3.w, 2u)), b1_3, fma(vec4(subgroupBroadcast(a3.z, 2u)), b1_2, fma(vec4(subgroupBroadcast(a3.y, 2u)), b1_1, fma(vec4(subgroupBroadcast(a3.x, 2u)), b1_0, acc[58]))));
        acc[59] = fma(vec4(subgroupBroadcast(a3.w, 3u)), b1_3, fma(vec4(subgroupBroadcast(a3.z, 3u)), b1_2, fma(vec4(subgroupBroadcast(a3.y, 3u)), b1_1, fma(vec4(subgroupBroadcast(a3.x, 3u)), b1_0, acc[59]))));
        acc[60] = fma(vec4(subgroupBroadcast(a3.w, 4u)), b1_3, fma(vec4(subgroupBroadcast(a3.z, 4u)), b1_2, fma(vec4(subgroupBroadcast(a3.y, 4u)), b1_1, fma(vec4(subgroupBroadcast(a3.x, 4u)), b1_0, acc[60]))));
        acc[61] = fma(vec4(subgroupBroadcast(a3.w, 5u)), b1_3, fma(vec4(subgroupBroadcast(a3.z, 5u)), b1_2, fma(vec4(subgroupBroadcast(a3.y, 5u)), b1_1, fma(vec4(subgroupBroadcast(a3.x, 5u)), b1_0, acc[61]))));
        acc[62] = fma(vec4(subgroupBroadcast(a3.w, 6u)), b1_3, fma(vec4(subgroupBroadcast(a3.z, 6u)), b1_2, fma(vec4(subgroupBroadcast(a3.y, 6u)), b1_1, fma(vec4(subgroupBroadcast(a3.x, 6u)), b1_0, acc[62]))));
        acc[63] = fma(vec4(subgroupBroadcast(a3.w, 7u)), b1_3, fma(vec4(subgroupBroadcast(a3.z, 7u)), b1_2, fma(vec4(subgroupBroadcast(a3.y, 7u)), b1_1, fma(vec4(subgroupBroadcast(a3.x, 7u)), b1_0, acc[63]))));
    }
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + 0u + i;
        if (row < p.m && col4 + 0u < n4) { c[row * n4 + col4 + 0u] = acc[0u + i]; }
    }
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + 0u + i;
        if (row < p.m && col4 + 8u < n4) { c[row * n4 + col4 + 8u] = acc[8u + i]; }
    }
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + 8u + i;
        if (row < p.m && col4 + 0u < n4) { c[row * n4 + col4 + 0u] = acc[16u + i]; }
    }
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + 8u + i;
        if (row < p.m && col4 + 8u < n4) { c[row * n4 + col4 + 8u] = acc[24u + i]; }
    }
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + 16u + i;
        if (row < p.m && col4 + 0u < n4) { c[row * n4 + col4 + 0u] = acc[32u + i]; }
    }
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + 16u + i;
        if (row < p.m && col4 + 8u < n4) { c[row * n4 + col4 + 8u] = acc[40u + i]; }
    }
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + 24u + i;
        if (row < p.m && col4 + 0u < n4) { c[row * n4 + col4 + 0u] = acc[48u + i]; }
    }
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + 24u + i;
        if (row < p.m && col4 + 8u < n4) { c[row * n4 + col4 + 8u] = acc[56u + i]; }
    }
}
