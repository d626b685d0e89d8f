// Batched matmul through workgroup-memory tiles, for GPUs (the autotune, src/ops/matmul_tune.rs,
// tries it on adapters that are not CPUs; `WGTRAIN_MATMUL=tiled:BMxBN` forces it anywhere):
//   C[b] (M, N) = op(A[b]) (M, K) · op(B[b]) (K, N)   (epilogue 0; 1: + bias (N); 2: then ReLU)
//   C[b] (M, N) += op(A[b]) · op(B[b])                             (ACCUMULATE)
// M, N and K must be multiples of 4 (the host runs other dims on zero-padded copies: ops::pad).
//
// A workgroup of 16×16 invocations computes a BM × BN block of C (BM = 16·TM, BN = 16·TN) and
// walks K in steps of BK: all 256 invocations copy the BM × BK slice of A and the BK × BN slice
// of B into workgroup memory with vec4 loads along each operand's contiguous dimension (so every
// layout reads global memory coalesced), wait at a barrier, then each multiplies its TM rows by
// its TN columns out of the shared tiles (TM scalar and TN/4 vec4 reads of workgroup memory per
// TM·TN multiply-adds), and waits again before the next slice overwrites the tiles. On a GPU this
// turns a matmul from bound by global-memory bandwidth into one bound by arithmetic; on llvmpipe,
// where a barrier is a coroutine switch for every invocation, it is slow (see matmul_subgroup).
//
// Tile shapes are override constants (TM, TN, BK), and so are the layout and accumulation, so that
// no access sits behind a runtime branch on them. Every output is fma(a_k, b_k, acc) over k
// ascending from 0, then + bias (then the ReLU), then + C: the operations and order of the other
// matmul kernels, so all of them agree bit for bit and the autotune's choice never changes a result.

override TM: u32 = 4u; // rows of C per invocation: 4 or 8
override TN: u32 = 4u; // columns of C per invocation: 4 or 8 (TN / 4 vec4s)
override BK: u32 = 16u; // k per shared slice: a multiple of 4
override A_T: bool = false; // A stored (K, M) instead of (M, K)
override B_T: bool = false; // B stored (N, K) instead of (K, N)
override ACCUMULATE: bool = false; // C += A·B (never with a bias)

const WG: u32 = 16u; // invocations along each axis of the workgroup

struct Params {
    m: u32, n: u32, k: u32,
    a_bs4: u32, b_bs4: u32, c_bs4: u32, // batch strides in vec4s
    epilogue: u32, // 0 store, 1 + bias, 2 + bias then ReLU
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>; // (N / 4), read when epilogue ≥ 1
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;

// a_tile[kk * BM + r] = op(A)(m0 + r, k0 + kk); b_tile[kk * BN / 4 + q] = op(B)(k0 + kk, n0 + 4q ..).
var<workgroup> a_tile: array<f32, BK * WG * TM>;
var<workgroup> b_tile: array<vec4<f32>, BK * WG * TN / 4u>;

// Copies the slice of A at rows m0 .., k0 .. into a_tile. Rows past M read the last row (their
// outputs are never stored); k past K is not read (the multiply loop stops at K).
fn load_a(a_base: u32, m0: u32, k0: u32, idx: u32) {
    let bm = WG * TM;
    let m4 = p.m / 4u;
    let k4 = p.k / 4u;
    for (var v = idx; v < bm * BK / 4u; v += WG * WG) {
        if (A_T) {
            // A stored (K, M): a vec4 is 4 rows at one k.
            let kk = v / (bm / 4u);
            let r4 = v % (bm / 4u);
            if (k0 + kk < p.k) {
                let x = a[a_base + (k0 + kk) * m4 + min(m0 / 4u + r4, m4 - 1u)];
                let t = kk * bm + 4u * r4;
                a_tile[t] = x.x;
                a_tile[t + 1u] = x.y;
                a_tile[t + 2u] = x.z;
                a_tile[t + 3u] = x.w;
            }
        } else {
            // A stored (M, K): a vec4 is 4 k of one row.
            let r = v / (BK / 4u);
            let kq = v % (BK / 4u);
            if (k0 + 4u * kq < p.k) {
                let x = a[a_base + min(m0 + r, p.m - 1u) * k4 + k0 / 4u + kq];
                let t = 4u * kq * bm + r;
                a_tile[t] = x.x;
                a_tile[t + bm] = x.y;
                a_tile[t + 2u * bm] = x.z;
                a_tile[t + 3u * bm] = x.w;
            }
        }
    }
}

// Copies the slice of B at k0 .., columns n0 .. into b_tile (columns past N read the last ones).
fn load_b(b_base: u32, n0: u32, k0: u32, idx: u32) {
    let bn4 = WG * TN / 4u;
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    for (var v = idx; v < BK * bn4; v += WG * WG) {
        if (B_T) {
            // B stored (N, K): a vec4 is 4 k of one column.
            let col = v / (BK / 4u);
            let kq = v % (BK / 4u);
            if (k0 + 4u * kq < p.k) {
                let x = b[b_base + min(n0 + col, p.n - 1u) * k4 + k0 / 4u + kq];
                let t = 4u * kq * bn4 + col / 4u;
                let j = col % 4u;
                b_tile[t][j] = x.x;
                b_tile[t + bn4][j] = x.y;
                b_tile[t + 2u * bn4][j] = x.z;
                b_tile[t + 3u * bn4][j] = x.w;
            }
        } else {
            // B stored (K, N): a vec4 is 4 columns at one k.
            let kk = v / bn4;
            let q = v % bn4;
            if (k0 + kk < p.k) {
                b_tile[kk * bn4 + q] = b[b_base + (k0 + kk) * n4 + min(n0 / 4u + q, n4 - 1u)];
            }
        }
    }
}

// What the stores do besides C: nothing here; the GELU forms (src/gpu/shaders.rs: GeluForm)
// put shaders/matmul_gelu.wgsl in this function's place (ci: C's vec4 index, v: the value C gets).
fn epilogue_aux(ci: u32, v: vec4<f32>) -> vec4<f32> {
    return v;
}

@compute @workgroup_size(16, 16, 1)
fn matmul_tiled(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) idx: u32,
) {
    let bm = WG * TM;
    let bn4 = WG * TN / 4u;
    let m0 = wg.y * bm;
    let n0 = wg.x * bn4 * 4u;
    let a_base = wg.z * p.a_bs4;
    let b_base = wg.z * p.b_bs4;
    // acc[i * 2 + j]: row m0 + lid.y·TM + i, vec4 column n0/4 + lid.x·TN/4 + j (at most 8 × 2;
    // the loops below have constant trip counts once the overrides are set, so the compiler
    // unrolls them and keeps every accumulator in a register).
    var acc: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        load_a(a_base, m0, k0, idx);
        load_b(b_base, n0, k0, idx);
        workgroupBarrier();
        let kt = min(BK, p.k - k0);
        for (var kk = 0u; kk < kt; kk++) {
            var bv: array<vec4<f32>, 2>;
            for (var j = 0u; j < TN / 4u; j++) {
                bv[j] = b_tile[kk * bn4 + lid.x * (TN / 4u) + j];
            }
            for (var i = 0u; i < TM; i++) {
                let av = vec4<f32>(a_tile[kk * bm + lid.y * TM + i]);
                for (var j = 0u; j < TN / 4u; j++) {
                    acc[i * 2u + j] = fma(av, bv[j], acc[i * 2u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    let n4 = p.n / 4u;
    let c_base = wg.z * p.c_bs4;
    for (var j = 0u; j < TN / 4u; j++) {
        let cv = n0 / 4u + lid.x * (TN / 4u) + j;
        var bv = vec4<f32>(0.0);
        if (p.epilogue >= 1u) {
            bv = bias[min(cv, n4 - 1u)];
        }
        for (var i = 0u; i < TM; i++) {
            let row = m0 + lid.y * TM + i;
            if (row < p.m && cv < n4) {
                // acc + 0 would turn a -0 into +0: without a bias the sum is stored as it is
                var v = select(acc[i * 2u + j], acc[i * 2u + j] + bv, p.epilogue >= 1u);
                v = select(v, max(v, vec4<f32>(0.0)), p.epilogue == 2u);
                let ci = c_base + row * n4 + cv;
                v = epilogue_aux(ci, v);
                if (ACCUMULATE) {
                    v += c[ci];
                }
                c[ci] = v;
            }
        }
    }
}
