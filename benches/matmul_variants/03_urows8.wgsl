// tile: 8 32 8
// Variant 01 with 8 rows per lane (fewer accumulators: 8 vec4).
struct P { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

const R: u32 = 8u;

@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * R;
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let col4 = wg.x * 8u + lid.x;
    let cc = min(col4, n4 - 1u);
    var rows: array<u32, R>;
    for (var r = 0u; r < R; r++) {
        rows[r] = min(row0 + r, p.m - 1u) * k4;
    }
    var acc: array<vec4<f32>, R>;
    for (var kq = 0u; kq < k4; kq++) {
        let b0 = b[(4u * kq) * n4 + cc];
        let b1 = b[(4u * kq + 1u) * n4 + cc];
        let b2 = b[(4u * kq + 2u) * n4 + cc];
        let b3 = b[(4u * kq + 3u) * n4 + cc];
        for (var r = 0u; r < R; r++) {
            let x = a[rows[r] + kq];
            acc[r] = fma(vec4<f32>(x.w), b3, fma(vec4<f32>(x.z), b2, fma(vec4<f32>(x.y), b1, fma(vec4<f32>(x.x), b0, acc[r]))));
        }
    }
    if (col4 < n4) {
        for (var r = 0u; r < R; r++) {
            if (row0 + r < p.m) {
                c[(row0 + r) * n4 + col4] = acc[r];
            }
        }
    }
}
