// tile: 32 32 8 rows-first
// 18's tile (32 rows x 4 columns per lane) stepping k by one: A read as scalars (one per lane per
// row group), B as one vec4 per k. A 4x smaller loop body than 18 (which steps k by 4): the same
// loads and fmas, less for the compiler to schedule.
struct P { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.x * 32u;
    let n4 = p.n / 4u;
    let col4 = wg.y * 8u + lid.x;
    var acc: array<vec4<f32>, 32>;
    let arow0 = min(row0 + 0u + lid.x, p.m - 1u) * p.k;
    let arow1 = min(row0 + 8u + lid.x, p.m - 1u) * p.k;
    let arow2 = min(row0 + 16u + lid.x, p.m - 1u) * p.k;
    let arow3 = min(row0 + 24u + lid.x, p.m - 1u) * p.k;
    let bcol0 = min(col4, n4 - 1u);
    for (var k = 0u; k < p.k; k++) {
        let bk = b[k * n4 + bcol0];
        let a0 = a[arow0 + k];
        let a1 = a[arow1 + k];
        let a2 = a[arow2 + k];
        let a3 = a[arow3 + k];
        acc[0] = fma(vec4(subgroupBroadcast(a0, 0u)), bk, acc[0]);
        acc[1] = fma(vec4(subgroupBroadcast(a0, 1u)), bk, acc[1]);
        acc[2] = fma(vec4(subgroupBroadcast(a0, 2u)), bk, acc[2]);
        acc[3] = fma(vec4(subgroupBroadcast(a0, 3u)), bk, acc[3]);
        acc[4] = fma(vec4(subgroupBroadcast(a0, 4u)), bk, acc[4]);
        acc[5] = fma(vec4(subgroupBroadcast(a0, 5u)), bk, acc[5]);
        acc[6] = fma(vec4(subgroupBroadcast(a0, 6u)), bk, acc[6]);
        acc[7] = fma(vec4(subgroupBroadcast(a0, 7u)), bk, acc[7]);
        acc[8] = fma(vec4(subgroupBroadcast(a1, 0u)), bk, acc[8]);
        acc[9] = fma(vec4(subgroupBroadcast(a1, 1u)), bk, acc[9]);
        acc[10] = fma(vec4(subgroupBroadcast(a1, 2u)), bk, acc[10]);
        acc[11] = fma(vec4(subgroupBroadcast(a1, 3u)), bk, acc[11]);
        acc[12] = fma(vec4(subgroupBroadcast(a1, 4u)), bk, acc[12]);
        acc[13] = fma(vec4(subgroupBroadcast(a1, 5u)), bk, acc[13]);
        acc[14] = fma(vec4(subgroupBroadcast(a1, 6u)), bk, acc[14]);
        acc[15] = fma(vec4(subgroupBroadcast(a1, 7u)), bk, acc[15]);
        acc[16] = fma(vec4(subgroupBroadcast(a2, 0u)), bk, acc[16]);
        acc[17] = fma(vec4(subgroupBroadcast(a2, 1u)), bk, acc[17]);
        acc[18] = fma(vec4(subgroupBroadcast(a2, 2u)), bk, acc[18]);
        acc[19] = fma(vec4(subgroupBroadcast(a2, 3u)), bk, acc[19]);
        acc[20] = fma(vec4(subgroupBroadcast(a2, 4u)), bk, acc[20]);
        acc[21] = fma(vec4(subgroupBroadcast(a2, 5u)), bk, acc[21]);
        acc[22] = fma(vec4(subgroupBroadcast(a2, 6u)), bk, acc[22]);
        acc[23] = fma(vec4(subgroupBroadcast(a2, 7u)), bk, acc[23]);
        acc[24] = fma(vec4(subgroupBroadcast(a3, 0u)), bk, acc[24]);
        acc[25] = fma(vec4(subgroupBroadcast(a3, 1u)), bk, acc[25]);
        acc[26] = fma(vec4(subgroupBroadcast(a3, 2u)), bk, acc[26]);
        acc[27] = fma(vec4(subgroupBroadcast(a3, 3u)), bk, acc[27]);
        acc[28] = fma(vec4(subgroupBroadcast(a3, 4u)), bk, acc[28]);
        acc[29] = fma(vec4(subgroupBroadcast(a3, 5u)), bk, acc[29]);
        acc[30] = fma(vec4(subgroupBroadcast(a3, 6u)), bk, acc[30]);
        acc[31] = fma(vec4(subgroupBroadcast(a3, 7u)), bk, acc[31]);
    }
    for (var r = 0u; r < 32u; r++) {
        if (row0 + r < p.m && col4 < n4) {
            c[(row0 + r) * n4 + col4] = acc[r];
        }
    }
}
