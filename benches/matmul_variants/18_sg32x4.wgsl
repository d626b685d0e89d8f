// tile: 32 32 8 rows-first
// 32 rows x 4 columns per lane: 4 A vec4 and 4 B vec4 per k-quad; A shared by subgroupBroadcast.
struct P { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.x * 32u;
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let col4 = wg.y * 8u + lid.x;
    var acc: array<vec4<f32>, 32>;
    let arow0 = min(row0 + 0u + lid.x, p.m - 1u) * k4;
    let arow1 = min(row0 + 8u + lid.x, p.m - 1u) * k4;
    let arow2 = min(row0 + 16u + lid.x, p.m - 1u) * k4;
    let arow3 = min(row0 + 24u + lid.x, p.m - 1u) * k4;
    let bcol0 = min(col4 + 0u, n4 - 1u);
    for (var kq = 0u; kq < k4; kq++) {
        let a0 = a[arow0 + kq];
        let a1 = a[arow1 + kq];
        let a2 = a[arow2 + kq];
        let a3 = a[arow3 + kq];
        let b0_0 = b[(4u * kq + 0u) * n4 + bcol0];
        let b0_1 = b[(4u * kq + 1u) * n4 + bcol0];
        let b0_2 = b[(4u * kq + 2u) * n4 + bcol0];
        let b0_3 = b[(4u * kq + 3u) * n4 + bcol0];
        acc[0] = fma(vec4(subgroupBroadcast(a0.w, 0u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 0u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 0u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 0u)), b0_0, acc[0]))));
        acc[1] = fma(vec4(subgroupBroadcast(a0.w, 1u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 1u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 1u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 1u)), b0_0, acc[1]))));
        acc[2] = fma(vec4(subgroupBroadcast(a0.w, 2u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 2u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 2u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 2u)), b0_0, acc[2]))));
        acc[3] = fma(vec4(subgroupBroadcast(a0.w, 3u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 3u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 3u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 3u)), b0_0, acc[3]))));
        acc[4] = fma(vec4(subgroupBroadcast(a0.w, 4u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 4u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 4u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 4u)), b0_0, acc[4]))));
        acc[5] = fma(vec4(subgroupBroadcast(a0.w, 5u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 5u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 5u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 5u)), b0_0, acc[5]))));
        acc[6] = fma(vec4(subgroupBroadcast(a0.w, 6u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 6u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 6u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 6u)), b0_0, acc[6]))));
        acc[7] = fma(vec4(subgroupBroadcast(a0.w, 7u)), b0_3, fma(vec4(subgroupBroadcast(a0.z, 7u)), b0_2, fma(vec4(subgroupBroadcast(a0.y, 7u)), b0_1, fma(vec4(subgroupBroadcast(a0.x, 7u)), b0_0, acc[7]))));
        acc[8] = fma(vec4(subgroupBroadcast(a1.w, 0u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 0u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 0u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 0u)), b0_0, acc[8]))));
        acc[9] = fma(vec4(subgroupBroadcast(a1.w, 1u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 1u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 1u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 1u)), b0_0, acc[9]))));
        acc[10] = fma(vec4(subgroupBroadcast(a1.w, 2u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 2u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 2u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 2u)), b0_0, acc[10]))));
        acc[11] = fma(vec4(subgroupBroadcast(a1.w, 3u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 3u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 3u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 3u)), b0_0, acc[11]))));
        acc[12] = fma(vec4(subgroupBroadcast(a1.w, 4u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 4u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 4u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 4u)), b0_0, acc[12]))));
        acc[13] = fma(vec4(subgroupBroadcast(a1.w, 5u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 5u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 5u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 5u)), b0_0, acc[13]))));
        acc[14] = fma(vec4(subgroupBroadcast(a1.w, 6u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 6u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 6u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 6u)), b0_0, acc[14]))));
        acc[15] = fma(vec4(subgroupBroadcast(a1.w, 7u)), b0_3, fma(vec4(subgroupBroadcast(a1.z, 7u)), b0_2, fma(vec4(subgroupBroadcast(a1.y, 7u)), b0_1, fma(vec4(subgroupBroadcast(a1.x, 7u)), b0_0, acc[15]))));
        acc[16] = fma(vec4(subgroupBroadcast(a2.w, 0u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 0u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 0u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 0u)), b0_0, acc[16]))));
        acc[17] = fma(vec4(subgroupBroadcast(a2.w, 1u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 1u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 1u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 1u)), b0_0, acc[17]))));
        acc[18] = fma(vec4(subgroupBroadcast(a2.w, 2u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 2u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 2u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 2u)), b0_0, acc[18]))));
        acc[19] = fma(vec4(subgroupBroadcast(a2.w, 3u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 3u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 3u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 3u)), b0_0, acc[19]))));
        acc[20] = fma(vec4(subgroupBroadcast(a2.w, 4u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 4u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 4u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 4u)), b0_0, acc[20]))));
        acc[21] = fma(vec4(subgroupBroadcast(a2.w, 5u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 5u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 5u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 5u)), b0_0, acc[21]))));
        acc[22] = fma(vec4(subgroupBroadcast(a2.w, 6u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 6u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 6u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 6u)), b0_0, acc[22]))));
        acc[23] = fma(vec4(subgroupBroadcast(a2.w, 7u)), b0_3, fma(vec4(subgroupBroadcast(a2.z, 7u)), b0_2, fma(vec4(subgroupBroadcast(a2.y, 7u)), b0_1, fma(vec4(subgroupBroadcast(a2.x, 7u)), b0_0, acc[23]))));
        acc[24] = fma(vec4(subgroupBroadcast(a3.w, 0u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 0u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 0u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 0u)), b0_0, acc[24]))));
        acc[25] = fma(vec4(subgroupBroadcast(a3.w, 1u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 1u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 1u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 1u)), b0_0, acc[25]))));
        acc[26] = fma(vec4(subgroupBroadcast(a3.w, 2u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 2u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 2u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 2u)), b0_0, acc[26]))));
        acc[27] = fma(vec4(subgroupBroadcast(a3.w, 3u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 3u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 3u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 3u)), b0_0, acc[27]))));
        acc[28] = fma(vec4(subgroupBroadcast(a3.w, 4u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 4u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 4u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 4u)), b0_0, acc[28]))));
        acc[29] = fma(vec4(subgroupBroadcast(a3.w, 5u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 5u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 5u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 5u)), b0_0, acc[29]))));
        acc[30] = fma(vec4(subgroupBroadcast(a3.w, 6u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 6u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 6u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 6u)), b0_0, acc[30]))));
        acc[31] = fma(vec4(subgroupBroadcast(a3.w, 7u)), b0_3, fma(vec4(subgroupBroadcast(a3.z, 7u)), b0_2, fma(vec4(subgroupBroadcast(a3.y, 7u)), b0_1, fma(vec4(subgroupBroadcast(a3.x, 7u)), b0_0, acc[31]))));
    }
    for (var r = 0u; r < 32u; r++) {
        if (row0 + r < p.m) {
            if (col4 + 0u < n4) {
                c[(row0 + r) * n4 + col4 + 0u] = acc[r * 1u + 0u];
            }
        }
    }
}
