// Batched matrix multiply with optional fused bias, in any of the layouts a training step needs:
//   C[b] (M, N) = op(A[b]) (M, K) · op(B[b]) (K, N) + bias (N)      (accumulate = 0)
//   C[b] (M, N) += op(A[b]) · op(B[b])                             (accumulate = 1)
// op() is a transpose or not, expressed through strides: op(A)(i, k) = a[b*a_bs + i*a_rs + k*a_cs].
// A·B, A·Bᵀ and Aᵀ·B are then one kernel. A batch stride of 0 broadcasts (a weight shared by all).
//
// Each invocation computes a 4x4 block of C held in registers, reading A and B straight from
// global memory (on lavapipe that beats workgroup-memory tiling); a workgroup of 8x8 invocations
// covers 32x32 outputs. Edge blocks clamp their reads and skip out-of-range writes, so any M, N, K
// works. The k loop runs in ascending order: results are deterministic.

struct Params {
    m: u32, n: u32, k: u32,
    a_rs: u32, a_cs: u32, a_bs: u32,
    b_rs: u32, b_cs: u32, b_bs: u32,
    c_bs: u32,
    has_bias: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>; // (N), read only when has_bias = 1
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

const TM: u32 = 4u;
const TN: u32 = 4u;

@compute @workgroup_size(8, 8, 1)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * TM;
    let col0 = gid.x * TN;
    if (row0 >= p.m || col0 >= p.n) {
        return;
    }
    let batch = gid.z;
    let a_base = batch * p.a_bs;
    let b_base = batch * p.b_bs;
    var rows: array<u32, 4>;
    for (var r = 0u; r < TM; r++) {
        rows[r] = a_base + min(row0 + r, p.m - 1u) * p.a_rs;
    }
    var cols: vec4<u32>;
    for (var j = 0u; j < TN; j++) {
        cols[j] = b_base + min(col0 + j, p.n - 1u) * p.b_cs;
    }
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < p.k; kk++) {
        let bo = kk * p.b_rs;
        let bv = vec4<f32>(b[cols.x + bo], b[cols.y + bo], b[cols.z + bo], b[cols.w + bo]);
        let ao = kk * p.a_cs;
        acc[0] = fma(vec4<f32>(a[rows[0] + ao]), bv, acc[0]);
        acc[1] = fma(vec4<f32>(a[rows[1] + ao]), bv, acc[1]);
        acc[2] = fma(vec4<f32>(a[rows[2] + ao]), bv, acc[2]);
        acc[3] = fma(vec4<f32>(a[rows[3] + ao]), bv, acc[3]);
    }
    let c_base = batch * p.c_bs;
    for (var r = 0u; r < TM; r++) {
        let row = row0 + r;
        if (row >= p.m) {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let col = col0 + j;
            if (col >= p.n) {
                break;
            }
            var v = acc[r][j];
            if (p.has_bias == 1u) {
                v += bias[col];
            }
            let ci = c_base + row * p.n + col;
            if (p.accumulate == 1u) {
                v += c[ci];
            }
            c[ci] = v;
        }
    }
}
