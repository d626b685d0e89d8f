// Batched matmul sharing A across an 8-lane subgroup; the autotune (src/ops/matmul_tune.rs) picks
// it, and its tile shape, where it beats the register-blocked vec4 kernel in matmul.wgsl.
//   C[b] (M, N) = op(A[b]) (M, K) · op(B[b]) (K, N)   (epilogue 0; 1: + bias (N); 2: then ReLU)
//   C[b] (M, N) += op(A[b]) · op(B[b])                             (ACCUMULATE)
// M, N and K must be multiples of 4 (the host runs other dims on zero-padded copies: ops::pad).
// A workgroup is 8 invocations (one subgroup on llvmpipe) and
// covers 8·ROW_GROUPS rows × 32·COL_GROUPS columns: lane i owns the vec4 columns col4 + 8h
// (h < COL_GROUPS) of every row of the tile. Per step of 4 in k, lane i reads one vec4 of A per
// row group, so the 8 lanes together hold that group's 8 rows × 4 k, and each lane takes the
// values it needs with subgroupBroadcast: on llvmpipe a broadcast is an extract and a splat while
// every storage read is a loop over the lanes, so sharing A this way is what makes the kernel fast
// there. Needs subgroups of at least 8 lanes; the autotune validates it before using it.
//
// The tile is spelled out group by group behind `if`s on the override constants rather than in
// loops: the compiler folds the `if`s away and every accumulator keeps a constant index, so all of
// them stay in registers (a loop it declined to unroll would push them to memory).
//
// Every output is fma(a_k, b_k, acc) over k ascending from 0, then + bias, then + C: the same
// operations in the same order as matmul.wgsl's kernels, so the kernels agree bit for bit and the
// autotune's choice never changes a result.

override ROW_GROUPS: u32 = 1u; // 8-row groups per workgroup, 1 ..= 4
override COL_GROUPS: u32 = 1u; // vec4 columns per lane, 1 ..= 2
override A_T: bool = false;    // A stored (K, M) instead of (M, K)
override B_T: bool = false;    // B stored (N, K) instead of (K, N)
// Accumulating is an override constant, not a flag in the uniform block: on llvmpipe every
// storage access in a branch the compiler cannot fold is code for all lanes, and a runtime
// accumulate (a read of C per row) and bias (a read per row too, then) in the stores made the 4x1
// tile take 1.1 s to compile instead of 0.23 s. The bias (and the ReLU after it) stays a runtime
// word, the bias read once per column and both applied with selects: cheap code, and one
// pipeline fewer per layout.
override ACCUMULATE: bool = false; // C += A·B (never with a bias)

struct Params {
    m: u32, n: u32, k: u32,
    a_bs4: u32, b_bs4: u32, c_bs4: u32, // batch strides in vec4 units
    epilogue: u32, // 0 store, 1 + bias, 2 + bias then ReLU
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>; // (N / 4), read when epilogue ≥ 1
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;

// Every read of A and B goes through these two, by (vec4 column, row) of the operand as stored
// (batches stacked: row = batch · rows + row), so that the f16 variant and the texture variant
// (src/gpu/shaders.rs derives both from this file) change only them and the two declarations
// above. `width`: the operand's row length in vec4s.
fn read_a(col: u32, row: u32, width: u32) -> vec4<f32> {
    return a[row * width + col];
}

fn read_b(col: u32, row: u32, width: u32) -> vec4<f32> {
    return b[row * width + col];
}

// B(k0 + j, 4 columns) for j = 0 .. 3.
struct Quad { k0: vec4<f32>, k1: vec4<f32>, k2: vec4<f32>, k3: vec4<f32> }

// One row group × one vec4 column of a lane's accumulators: r{i} is row 8g + i.
struct Tile {
    r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>,
    r4: vec4<f32>, r5: vec4<f32>, r6: vec4<f32>, r7: vec4<f32>,
}

// This lane's B(4kq .. 4kq+3, vec4 column cv); b_row: the batch's first row of B as stored.
fn load_b(b_row: u32, kq: u32, k4: u32, n4: u32, cv: u32) -> Quad {
    if (B_T) {
        // B stored (N, K): each of the 4 columns read along k, then transposed (on SIMD lanes
        // a renaming, no work).
        let t0 = read_b(kq, b_row + 4u * cv, k4);
        let t1 = read_b(kq, b_row + 4u * cv + 1u, k4);
        let t2 = read_b(kq, b_row + 4u * cv + 2u, k4);
        let t3 = read_b(kq, b_row + 4u * cv + 3u, k4);
        return Quad(
            vec4<f32>(t0.x, t1.x, t2.x, t3.x),
            vec4<f32>(t0.y, t1.y, t2.y, t3.y),
            vec4<f32>(t0.z, t1.z, t2.z, t3.z),
            vec4<f32>(t0.w, t1.w, t2.w, t3.w),
        );
    }
    let row = b_row + 4u * kq;
    return Quad(read_b(cv, row, n4), read_b(cv, row + 1u, n4), read_b(cv, row + 2u, n4), read_b(cv, row + 3u, n4));
}

// This lane's share of A for the row group starting at row g0 and k = 4kq .. 4kq+3 (a_row: the
// batch's first row of A as stored):
// A stored (M, K): lane i holds A(g0 + i, the 4 k);
// A stored (K, M): lane 4q + j holds A(g0 + 4q .. g0 + 4q + 3, 4kq + j).
fn load_a(a_row: u32, kq: u32, k4: u32, m4: u32, g0: u32, lane: u32) -> vec4<f32> {
    if (A_T) {
        let rv = min(g0 / 4u + lane / 4u, m4 - 1u);
        return read_a(rv, a_row + 4u * kq + lane % 4u, m4);
    }
    let row = min(g0 + lane, p.m - 1u);
    return read_a(kq, a_row + row, k4);
}

// t += (the row group's 8 rows × 4 k of A) · (4 k × this lane's 4 columns of B), one fma per k
// in ascending order for every output.
fn rank4(t: ptr<function, Tile>, av: vec4<f32>, b: Quad) {
    if (A_T) {
        (*t).r0 = fma(vec4(subgroupBroadcast(av.x, 3u)), b.k3, fma(vec4(subgroupBroadcast(av.x, 2u)), b.k2, fma(vec4(subgroupBroadcast(av.x, 1u)), b.k1, fma(vec4(subgroupBroadcast(av.x, 0u)), b.k0, (*t).r0))));
        (*t).r1 = fma(vec4(subgroupBroadcast(av.y, 3u)), b.k3, fma(vec4(subgroupBroadcast(av.y, 2u)), b.k2, fma(vec4(subgroupBroadcast(av.y, 1u)), b.k1, fma(vec4(subgroupBroadcast(av.y, 0u)), b.k0, (*t).r1))));
        (*t).r2 = fma(vec4(subgroupBroadcast(av.z, 3u)), b.k3, fma(vec4(subgroupBroadcast(av.z, 2u)), b.k2, fma(vec4(subgroupBroadcast(av.z, 1u)), b.k1, fma(vec4(subgroupBroadcast(av.z, 0u)), b.k0, (*t).r2))));
        (*t).r3 = fma(vec4(subgroupBroadcast(av.w, 3u)), b.k3, fma(vec4(subgroupBroadcast(av.w, 2u)), b.k2, fma(vec4(subgroupBroadcast(av.w, 1u)), b.k1, fma(vec4(subgroupBroadcast(av.w, 0u)), b.k0, (*t).r3))));
        (*t).r4 = fma(vec4(subgroupBroadcast(av.x, 7u)), b.k3, fma(vec4(subgroupBroadcast(av.x, 6u)), b.k2, fma(vec4(subgroupBroadcast(av.x, 5u)), b.k1, fma(vec4(subgroupBroadcast(av.x, 4u)), b.k0, (*t).r4))));
        (*t).r5 = fma(vec4(subgroupBroadcast(av.y, 7u)), b.k3, fma(vec4(subgroupBroadcast(av.y, 6u)), b.k2, fma(vec4(subgroupBroadcast(av.y, 5u)), b.k1, fma(vec4(subgroupBroadcast(av.y, 4u)), b.k0, (*t).r5))));
        (*t).r6 = fma(vec4(subgroupBroadcast(av.z, 7u)), b.k3, fma(vec4(subgroupBroadcast(av.z, 6u)), b.k2, fma(vec4(subgroupBroadcast(av.z, 5u)), b.k1, fma(vec4(subgroupBroadcast(av.z, 4u)), b.k0, (*t).r6))));
        (*t).r7 = fma(vec4(subgroupBroadcast(av.w, 7u)), b.k3, fma(vec4(subgroupBroadcast(av.w, 6u)), b.k2, fma(vec4(subgroupBroadcast(av.w, 5u)), b.k1, fma(vec4(subgroupBroadcast(av.w, 4u)), b.k0, (*t).r7))));
    } else {
        (*t).r0 = fma(vec4(subgroupBroadcast(av.w, 0u)), b.k3, fma(vec4(subgroupBroadcast(av.z, 0u)), b.k2, fma(vec4(subgroupBroadcast(av.y, 0u)), b.k1, fma(vec4(subgroupBroadcast(av.x, 0u)), b.k0, (*t).r0))));
        (*t).r1 = fma(vec4(subgroupBroadcast(av.w, 1u)), b.k3, fma(vec4(subgroupBroadcast(av.z, 1u)), b.k2, fma(vec4(subgroupBroadcast(av.y, 1u)), b.k1, fma(vec4(subgroupBroadcast(av.x, 1u)), b.k0, (*t).r1))));
        (*t).r2 = fma(vec4(subgroupBroadcast(av.w, 2u)), b.k3, fma(vec4(subgroupBroadcast(av.z, 2u)), b.k2, fma(vec4(subgroupBroadcast(av.y, 2u)), b.k1, fma(vec4(subgroupBroadcast(av.x, 2u)), b.k0, (*t).r2))));
        (*t).r3 = fma(vec4(subgroupBroadcast(av.w, 3u)), b.k3, fma(vec4(subgroupBroadcast(av.z, 3u)), b.k2, fma(vec4(subgroupBroadcast(av.y, 3u)), b.k1, fma(vec4(subgroupBroadcast(av.x, 3u)), b.k0, (*t).r3))));
        (*t).r4 = fma(vec4(subgroupBroadcast(av.w, 4u)), b.k3, fma(vec4(subgroupBroadcast(av.z, 4u)), b.k2, fma(vec4(subgroupBroadcast(av.y, 4u)), b.k1, fma(vec4(subgroupBroadcast(av.x, 4u)), b.k0, (*t).r4))));
        (*t).r5 = fma(vec4(subgroupBroadcast(av.w, 5u)), b.k3, fma(vec4(subgroupBroadcast(av.z, 5u)), b.k2, fma(vec4(subgroupBroadcast(av.y, 5u)), b.k1, fma(vec4(subgroupBroadcast(av.x, 5u)), b.k0, (*t).r5))));
        (*t).r6 = fma(vec4(subgroupBroadcast(av.w, 6u)), b.k3, fma(vec4(subgroupBroadcast(av.z, 6u)), b.k2, fma(vec4(subgroupBroadcast(av.y, 6u)), b.k1, fma(vec4(subgroupBroadcast(av.x, 6u)), b.k0, (*t).r6))));
        (*t).r7 = fma(vec4(subgroupBroadcast(av.w, 7u)), b.k3, fma(vec4(subgroupBroadcast(av.z, 7u)), b.k2, fma(vec4(subgroupBroadcast(av.y, 7u)), b.k1, fma(vec4(subgroupBroadcast(av.x, 7u)), b.k0, (*t).r7))));
    }
}

// What the stores do besides C: nothing here; the GELU forms (src/gpu/shaders.rs: GeluForm)
// put shaders/matmul_gelu.wgsl in this function's place (ci: C's vec4 index, v: the value C gets).
fn epilogue_aux(ci: u32, v: vec4<f32>) -> vec4<f32> {
    return v;
}

// bv: the bias of column vec4 cv (read once per column, not per row).
fn store(row: u32, cv: u32, c_base: u32, n4: u32, acc: vec4<f32>, bv: vec4<f32>) {
    if (row < p.m && cv < n4) {
        // acc + 0 would turn a -0 into +0: without a bias the sum is stored as it is
        var v = select(acc, acc + bv, p.epilogue >= 1u);
        v = select(v, max(v, vec4<f32>(0.0)), p.epilogue == 2u);
        let ci = c_base + row * n4 + cv;
        v = epilogue_aux(ci, v);
        if (ACCUMULATE) {
            v += c[ci];
        }
        c[ci] = v;
    }
}

fn store_group(c_base: u32, g0: u32, cv: u32, n4: u32, t: Tile) {
    var bv = vec4<f32>(0.0);
    if (p.epilogue >= 1u) {
        bv = bias[min(cv, n4 - 1u)];
    }
    store(g0 + 0u, cv, c_base, n4, t.r0, bv);
    store(g0 + 1u, cv, c_base, n4, t.r1, bv);
    store(g0 + 2u, cv, c_base, n4, t.r2, bv);
    store(g0 + 3u, cv, c_base, n4, t.r3, bv);
    store(g0 + 4u, cv, c_base, n4, t.r4, bv);
    store(g0 + 5u, cv, c_base, n4, t.r5, bv);
    store(g0 + 6u, cv, c_base, n4, t.r6, bv);
    store(g0 + 7u, cv, c_base, n4, t.r7, bv);
}

@compute @workgroup_size(8, 1, 1)
fn matmul_subgroup(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let m4 = p.m / 4u;
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let row0 = wg.x * 8u * ROW_GROUPS;
    let col4 = wg.y * 8u * COL_GROUPS + lid.x;
    // the batch's first rows of A and B as stored: A (M, K) or (K, M), B (K, N) or (N, K)
    let a_row = wg.z * select(p.m, p.k, A_T);
    let b_row = wg.z * select(p.k, p.n, B_T);
    // t{g}{h}: row group g, the lane's vec4 column col4 + 8h.
    var t00: Tile;
    var t01: Tile;
    var t10: Tile;
    var t11: Tile;
    var t20: Tile;
    var t21: Tile;
    var t30: Tile;
    var t31: Tile;
    for (var kq = 0u; kq < k4; kq++) {
        let b0 = load_b(b_row, kq, k4, n4, min(col4, n4 - 1u));
        var b1: Quad;
        if (COL_GROUPS > 1u) {
            b1 = load_b(b_row, kq, k4, n4, min(col4 + 8u, n4 - 1u));
        }
        let a0 = load_a(a_row, kq, k4, m4, row0 + 0u, lane);
        rank4(&t00, a0, b0);
        if (COL_GROUPS > 1u) { rank4(&t01, a0, b1); }
        if (ROW_GROUPS > 1u) {
            let a1 = load_a(a_row, kq, k4, m4, row0 + 8u, lane);
            rank4(&t10, a1, b0);
            if (COL_GROUPS > 1u) { rank4(&t11, a1, b1); }
        }
        if (ROW_GROUPS > 2u) {
            let a2 = load_a(a_row, kq, k4, m4, row0 + 16u, lane);
            rank4(&t20, a2, b0);
            if (COL_GROUPS > 1u) { rank4(&t21, a2, b1); }
        }
        if (ROW_GROUPS > 3u) {
            let a3 = load_a(a_row, kq, k4, m4, row0 + 24u, lane);
            rank4(&t30, a3, b0);
            if (COL_GROUPS > 1u) { rank4(&t31, a3, b1); }
        }
    }
    let c_base = wg.z * p.c_bs4;
    store_group(c_base, row0 + 0u, col4 + 0u, n4, t00);
    if (COL_GROUPS > 1u) {
        store_group(c_base, row0 + 0u, col4 + 8u, n4, t01);
    }
    if (ROW_GROUPS > 1u) {
        store_group(c_base, row0 + 8u, col4 + 0u, n4, t10);
    }
    if (ROW_GROUPS > 1u && COL_GROUPS > 1u) {
        store_group(c_base, row0 + 8u, col4 + 8u, n4, t11);
    }
    if (ROW_GROUPS > 2u) {
        store_group(c_base, row0 + 16u, col4 + 0u, n4, t20);
    }
    if (ROW_GROUPS > 2u && COL_GROUPS > 1u) {
        store_group(c_base, row0 + 16u, col4 + 8u, n4, t21);
    }
    if (ROW_GROUPS > 3u) {
        store_group(c_base, row0 + 24u, col4 + 0u, n4, t30);
    }
    if (ROW_GROUPS > 3u && COL_GROUPS > 1u) {
        store_group(c_base, row0 + 24u, col4 + 8u, n4, t31);
    }
}
