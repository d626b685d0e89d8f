// tile: 8 64 8 rows-first
// (workgroups walk down the rows first, so neighbours share a strip of B)
// Variant 04 with 8 columns per lane: two B vec4 per k (columns 4i.. and 32+4i..).
struct P { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.x * 8u;
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let col4 = wg.y * 16u + lid.x;
    let cc = min(col4, n4 - 1u);
    let cd = min(col4 + 8u, n4 - 1u);
    let my_row = min(row0 + lid.x, p.m - 1u) * k4;
    var acc: array<vec4<f32>, 16>;
    for (var kq = 0u; kq < k4; kq++) {
        let av = a[my_row + kq];
        let b0 = b[(4u * kq) * n4 + cc];
        let b1 = b[(4u * kq + 1u) * n4 + cc];
        let b2 = b[(4u * kq + 2u) * n4 + cc];
        let b3 = b[(4u * kq + 3u) * n4 + cc];
        let d0 = b[(4u * kq) * n4 + cd];
        let d1 = b[(4u * kq + 1u) * n4 + cd];
        let d2 = b[(4u * kq + 2u) * n4 + cd];
        let d3 = b[(4u * kq + 3u) * n4 + cd];
        acc[0] = fma(vec4(subgroupBroadcast(av.w, 0u)), b3, fma(vec4(subgroupBroadcast(av.z, 0u)), b2, fma(vec4(subgroupBroadcast(av.y, 0u)), b1, fma(vec4(subgroupBroadcast(av.x, 0u)), b0, acc[0]))));
        acc[1] = fma(vec4(subgroupBroadcast(av.w, 1u)), b3, fma(vec4(subgroupBroadcast(av.z, 1u)), b2, fma(vec4(subgroupBroadcast(av.y, 1u)), b1, fma(vec4(subgroupBroadcast(av.x, 1u)), b0, acc[1]))));
        acc[2] = fma(vec4(subgroupBroadcast(av.w, 2u)), b3, fma(vec4(subgroupBroadcast(av.z, 2u)), b2, fma(vec4(subgroupBroadcast(av.y, 2u)), b1, fma(vec4(subgroupBroadcast(av.x, 2u)), b0, acc[2]))));
        acc[3] = fma(vec4(subgroupBroadcast(av.w, 3u)), b3, fma(vec4(subgroupBroadcast(av.z, 3u)), b2, fma(vec4(subgroupBroadcast(av.y, 3u)), b1, fma(vec4(subgroupBroadcast(av.x, 3u)), b0, acc[3]))));
        acc[4] = fma(vec4(subgroupBroadcast(av.w, 4u)), b3, fma(vec4(subgroupBroadcast(av.z, 4u)), b2, fma(vec4(subgroupBroadcast(av.y, 4u)), b1, fma(vec4(subgroupBroadcast(av.x, 4u)), b0, acc[4]))));
        acc[5] = fma(vec4(subgroupBroadcast(av.w, 5u)), b3, fma(vec4(subgroupBroadcast(av.z, 5u)), b2, fma(vec4(subgroupBroadcast(av.y, 5u)), b1, fma(vec4(subgroupBroadcast(av.x, 5u)), b0, acc[5]))));
        acc[6] = fma(vec4(subgroupBroadcast(av.w, 6u)), b3, fma(vec4(subgroupBroadcast(av.z, 6u)), b2, fma(vec4(subgroupBroadcast(av.y, 6u)), b1, fma(vec4(subgroupBroadcast(av.x, 6u)), b0, acc[6]))));
        acc[7] = fma(vec4(subgroupBroadcast(av.w, 7u)), b3, fma(vec4(subgroupBroadcast(av.z, 7u)), b2, fma(vec4(subgroupBroadcast(av.y, 7u)), b1, fma(vec4(subgroupBroadcast(av.x, 7u)), b0, acc[7]))));
        acc[8] = fma(vec4(subgroupBroadcast(av.w, 0u)), d3, fma(vec4(subgroupBroadcast(av.z, 0u)), d2, fma(vec4(subgroupBroadcast(av.y, 0u)), d1, fma(vec4(subgroupBroadcast(av.x, 0u)), d0, acc[8]))));
        acc[9] = fma(vec4(subgroupBroadcast(av.w, 1u)), d3, fma(vec4(subgroupBroadcast(av.z, 1u)), d2, fma(vec4(subgroupBroadcast(av.y, 1u)), d1, fma(vec4(subgroupBroadcast(av.x, 1u)), d0, acc[9]))));
        acc[10] = fma(vec4(subgroupBroadcast(av.w, 2u)), d3, fma(vec4(subgroupBroadcast(av.z, 2u)), d2, fma(vec4(subgroupBroadcast(av.y, 2u)), d1, fma(vec4(subgroupBroadcast(av.x, 2u)), d0, acc[10]))));
        acc[11] = fma(vec4(subgroupBroadcast(av.w, 3u)), d3, fma(vec4(subgroupBroadcast(av.z, 3u)), d2, fma(vec4(subgroupBroadcast(av.y, 3u)), d1, fma(vec4(subgroupBroadcast(av.x, 3u)), d0, acc[11]))));
        acc[12] = fma(vec4(subgroupBroadcast(av.w, 4u)), d3, fma(vec4(subgroupBroadcast(av.z, 4u)), d2, fma(vec4(subgroupBroadcast(av.y, 4u)), d1, fma(vec4(subgroupBroadcast(av.x, 4u)), d0, acc[12]))));
        acc[13] = fma(vec4(subgroupBroadcast(av.w, 5u)), d3, fma(vec4(subgroupBroadcast(av.z, 5u)), d2, fma(vec4(subgroupBroadcast(av.y, 5u)), d1, fma(vec4(subgroupBroadcast(av.x, 5u)), d0, acc[13]))));
        acc[14] = fma(vec4(subgroupBroadcast(av.w, 6u)), d3, fma(vec4(subgroupBroadcast(av.z, 6u)), d2, fma(vec4(subgroupBroadcast(av.y, 6u)), d1, fma(vec4(subgroupBroadcast(av.x, 6u)), d0, acc[14]))));
        acc[15] = fma(vec4(subgroupBroadcast(av.w, 7u)), d3, fma(vec4(subgroupBroadcast(av.z, 7u)), d2, fma(vec4(subgroupBroadcast(av.y, 7u)), d1, fma(vec4(subgroupBroadcast(av.x, 7u)), d0, acc[15]))));
    }
    for (var r = 0u; r < 8u; r++) {
        if (row0 + r < p.m) {
            if (col4 < n4) {
                c[(row0 + r) * n4 + col4] = acc[r];
            }
            if (col4 + 8u < n4) {
                c[(row0 + r) * n4 + col4 + 8u] = acc[r + 8u];
            }
        }
    }
}
