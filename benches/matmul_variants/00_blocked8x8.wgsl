// tile: 64 64 64
// The library's vec4 path before the uniform-row kernels (NN only): 8x8 outputs per invocation,
// workgroup 8x8, A and B read as vec4.
struct P { m: u32, n: u32, k: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 8u;
    let col0 = gid.x * 8u;
    if (row0 >= p.m || col0 >= p.n) {
        return;
    }
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    let cg1 = min(col0 / 4u + 1u, n4 - 1u);
    var acc: array<vec4<f32>, 16>;
    for (var kq = 0u; kq < k4; kq++) {
        var at: array<vec4<f32>, 8>;
        for (var r = 0u; r < 8u; r++) {
            at[r] = a[min(row0 + r, p.m - 1u) * k4 + kq];
        }
        let base = 4u * kq * n4;
        let b00 = b[base + col0 / 4u];
        let b01 = b[base + cg1];
        let b10 = b[base + n4 + col0 / 4u];
        let b11 = b[base + n4 + cg1];
        let b20 = b[base + 2u * n4 + col0 / 4u];
        let b21 = b[base + 2u * n4 + cg1];
        let b30 = b[base + 3u * n4 + col0 / 4u];
        let b31 = b[base + 3u * n4 + cg1];
        for (var r = 0u; r < 8u; r++) {
            let x = at[r];
            acc[2u * r] = fma(vec4<f32>(x.w), b30, fma(vec4<f32>(x.z), b20, fma(vec4<f32>(x.y), b10, fma(vec4<f32>(x.x), b00, acc[2u * r]))));
            acc[2u * r + 1u] = fma(vec4<f32>(x.w), b31, fma(vec4<f32>(x.z), b21, fma(vec4<f32>(x.y), b11, fma(vec4<f32>(x.x), b01, acc[2u * r + 1u]))));
        }
    }
    for (var r = 0u; r < 8u; r++) {
        let row = row0 + r;
        if (row >= p.m) {
            break;
        }
        for (var j = 0u; j < 8u; j++) {
            let col = col0 + j;
            if (col >= p.n) {
                break;
            }
            c[row * p.n + col] = acc[2u * r + j / 4u][j % 4u];
        }
    }
}
