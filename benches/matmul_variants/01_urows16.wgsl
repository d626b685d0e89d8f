// tile: 16 32 8
// Rows from the workgroup id, so every A read is uniform across the SIMD lanes (llvmpipe then
// loads one scalar and broadcasts it); each of the 8 lanes owns 4 adjacent columns (one vec4 of B
// per k) and 16 rows.
struct P { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

const R: u32 = 16u;

@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * R;
    let n4 = p.n / 4u;
    let col4 = wg.x * 8u + lid.x;
    let cc = min(col4, n4 - 1u);
    var rows: array<u32, R>;
    for (var r = 0u; r < R; r++) {
        rows[r] = min(row0 + r, p.m - 1u) * p.k;
    }
    var acc: array<vec4<f32>, R>;
    for (var kk = 0u; kk < p.k; kk++) {
        let bv = b[kk * n4 + cc];
        for (var r = 0u; r < R; r++) {
            acc[r] = fma(vec4<f32>(a[rows[r] + kk]), bv, acc[r]);
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
