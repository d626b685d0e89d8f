// tile: 32 64 8 rows-first timing-only
// Arithmetic peak, an inner loop of 3 vec4 fmas run 85 times.
// Not a matmul: per k-step of 4 it runs the 1020 multiply-adds per lane that 25's tile does, on
// three vec4 accumulators held in registers and no memory reads, so the GFLOP/s it prints are
// what llvmpipe's code reaches on pure arithmetic in this loop shape (`timing-only`: not
// validated).
struct P { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let k4 = p.k / 4u;
    let x = vec4<f32>(f32(lid.x) * 1e-3 + 0.999);
    let y = vec4<f32>(f32(wg.x) * 1e-5) + a[0] * 1e-9 + b[0] * 1e-9;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(1.0);
    var a2 = vec4<f32>(2.0);
    for (var kq = 0u; kq < k4; kq++) {
        for (var j = 0u; j < 85u; j++) {
            a0 = fma(a0, x, y);
            a1 = fma(a1, x, y);
            a2 = fma(a2, x, y);
        }
    }
    let i = (wg.x * 32u) * (p.n / 4u) + wg.y * 16u + lid.x;
    if (i < arrayLength(&c)) { c[i] = a0 + a1 + a2; }
}
