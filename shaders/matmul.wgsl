// Batched matrix multiply with optional fused bias, in any of the layouts a training step needs:
//   C[b] (M, N) = op(A[b]) (M, K) · op(B[b]) (K, N)                 (epilogue 0)
//   C[b] (M, N) = op(A[b]) · op(B[b]) + bias (N)                    (epilogue 1)
//   C[b] (M, N) = max(op(A[b]) · op(B[b]) + bias, 0)                (epilogue 2: Linear + ReLU)
//   C[b] (M, N) += op(A[b]) · op(B[b])                             (accumulate = 1, epilogue 0)
// in a layout given by two flags (A stored transposed, B stored transposed), so A·B, A·Bᵀ and
// Aᵀ·B are one kernel. Each output is fma(a_k, b_k, acc) over k ascending from 0, then + bias
// (then the ReLU), then + C, as in matmul_subgroup.wgsl and matmul_tiled.wgsl: deterministic, and
// the same bits whichever kernel the autotune picks.
//
// M, N and K must be multiples of 4 (the host runs other dims on zero-padded copies: ops::pad).
// Each invocation computes an 8x8 block of C, stepping k by 4 and reading A and B as vec4 along
// their contiguous dimension, 16 vec4 loads per 256 multiply-adds; strides in vec4 units.
// a_rowk = 1: A stored (M, K), read along k; else (K, M), read along m.
// b_rowk = 1: B stored (N, K), read along k; else (K, N), read along n.
struct Params4 {
    m: u32, n: u32, k: u32,
    a_rowk: u32, b_rowk: u32,
    a_bs4: u32, b_bs4: u32, c_bs: u32,
    epilogue: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p4: Params4;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>; // (N), read only when epilogue ≥ 1
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn matmul_v4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 8u;
    let col0 = gid.x * 8u;
    if (row0 >= p4.m || col0 >= p4.n) {
        return;
    }
    let batch = gid.z;
    let a_base = batch * p4.a_bs4;
    let b_base = batch * p4.b_bs4;
    let k4 = p4.k / 4u;
    let m4 = p4.m / 4u;
    let n4 = p4.n / 4u;
    // The second group of four rows / columns, clamped to stay in bounds when M or N is 4 mod 8.
    let rg1 = min(row0 / 4u + 1u, m4 - 1u);
    let cg1 = min(col0 / 4u + 1u, n4 - 1u);
    var acc: array<vec4<f32>, 16>; // acc[2r + h]: row r, columns 4h .. 4h+3
    for (var kq = 0u; kq < k4; kq++) {
        // at[r]: A(row0 + r, 4kq .. 4kq+3)
        var at: array<vec4<f32>, 8>;
        if (p4.a_rowk == 1u) {
            for (var r = 0u; r < 8u; r++) {
                at[r] = a4[a_base + min(row0 + r, p4.m - 1u) * k4 + kq];
            }
        } else {
            // A stored (K, M): rows k = 4kq .. 4kq+3 over the block's 8 rows, transposed into at.
            let base = a_base + 4u * kq * m4;
            let r0 = row0 / 4u;
            let x0 = a4[base + r0];
            let x1 = a4[base + m4 + r0];
            let x2 = a4[base + 2u * m4 + r0];
            let x3 = a4[base + 3u * m4 + r0];
            let y0 = a4[base + rg1];
            let y1 = a4[base + m4 + rg1];
            let y2 = a4[base + 2u * m4 + rg1];
            let y3 = a4[base + 3u * m4 + rg1];
            at[0] = vec4<f32>(x0.x, x1.x, x2.x, x3.x);
            at[1] = vec4<f32>(x0.y, x1.y, x2.y, x3.y);
            at[2] = vec4<f32>(x0.z, x1.z, x2.z, x3.z);
            at[3] = vec4<f32>(x0.w, x1.w, x2.w, x3.w);
            at[4] = vec4<f32>(y0.x, y1.x, y2.x, y3.x);
            at[5] = vec4<f32>(y0.y, y1.y, y2.y, y3.y);
            at[6] = vec4<f32>(y0.z, y1.z, y2.z, y3.z);
            at[7] = vec4<f32>(y0.w, y1.w, y2.w, y3.w);
        }
        if (p4.b_rowk == 1u) {
            // bt[c]: B(4kq .. 4kq+3, col0 + c), stored along k
            var bt: array<vec4<f32>, 8>;
            for (var c = 0u; c < 8u; c++) {
                bt[c] = b4[b_base + min(col0 + c, p4.n - 1u) * k4 + kq];
            }
            // Transposed to B(k, the 8 columns) so that every output is one fma per k in order.
            let b00 = vec4<f32>(bt[0].x, bt[1].x, bt[2].x, bt[3].x);
            let b10 = vec4<f32>(bt[0].y, bt[1].y, bt[2].y, bt[3].y);
            let b20 = vec4<f32>(bt[0].z, bt[1].z, bt[2].z, bt[3].z);
            let b30 = vec4<f32>(bt[0].w, bt[1].w, bt[2].w, bt[3].w);
            let b01 = vec4<f32>(bt[4].x, bt[5].x, bt[6].x, bt[7].x);
            let b11 = vec4<f32>(bt[4].y, bt[5].y, bt[6].y, bt[7].y);
            let b21 = vec4<f32>(bt[4].z, bt[5].z, bt[6].z, bt[7].z);
            let b31 = vec4<f32>(bt[4].w, bt[5].w, bt[6].w, bt[7].w);
            for (var r = 0u; r < 8u; r++) {
                let x = at[r];
                acc[2u * r] = fma(vec4<f32>(x.w), b30, fma(vec4<f32>(x.z), b20, fma(vec4<f32>(x.y), b10, fma(vec4<f32>(x.x), b00, acc[2u * r]))));
                acc[2u * r + 1u] = fma(vec4<f32>(x.w), b31, fma(vec4<f32>(x.z), b21, fma(vec4<f32>(x.y), b11, fma(vec4<f32>(x.x), b01, acc[2u * r + 1u]))));
            }
        } else {
            // B rows k = 4kq .. 4kq+3 over the block's 8 columns; written out per k so that no
            // vector component is indexed at run time.
            let base = b_base + 4u * kq * n4;
            let b00 = b4[base + col0 / 4u];
            let b01 = b4[base + cg1];
            let b10 = b4[base + n4 + col0 / 4u];
            let b11 = b4[base + n4 + cg1];
            let b20 = b4[base + 2u * n4 + col0 / 4u];
            let b21 = b4[base + 2u * n4 + cg1];
            let b30 = b4[base + 3u * n4 + col0 / 4u];
            let b31 = b4[base + 3u * n4 + cg1];
            for (var r = 0u; r < 8u; r++) {
                let a = at[r];
                acc[2u * r] = fma(vec4<f32>(a.w), b30, fma(vec4<f32>(a.z), b20, fma(vec4<f32>(a.y), b10, fma(vec4<f32>(a.x), b00, acc[2u * r]))));
                acc[2u * r + 1u] = fma(vec4<f32>(a.w), b31, fma(vec4<f32>(a.z), b21, fma(vec4<f32>(a.y), b11, fma(vec4<f32>(a.x), b01, acc[2u * r + 1u]))));
            }
        }
    }
    let c_base = batch * p4.c_bs;
    for (var r = 0u; r < 8u; r++) {
        let row = row0 + r;
        if (row >= p4.m) {
            break;
        }
        for (var j = 0u; j < 8u; j++) {
            let col = col0 + j;
            if (col >= p4.n) {
                break;
            }
            var v = acc[2u * r + j / 4u][j % 4u];
            if (p4.epilogue >= 1u) {
                v += bias[col];
            }
            if (p4.epilogue == 2u) {
                v = max(v, 0.0);
            }
            let ci = c_base + row * p4.n + col;
            if (p4.accumulate == 1u) {
                v += c[ci];
            }
            c[ci] = v;
        }
    }
}

// gemv: C (M, N) = A (M, K) · Bᵀ for B stored (N, K) (a_rowk = b_rowk = 1, one batch), for a
// few rows of A (a token decoded at a time). One invocation per row and 4 consecutive columns,
// reading its row of A and 4 rows of B along k as vec4s; each output is the same fma chain over k
// ascending, then the epilogue, as every kernel here: the same bits as the block kernels, without
// their blocks' rows that a one-row A does not have. Columns past N clamp their reads (to row
// N − 1, in range) and store nothing.
@compute @workgroup_size(64)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    let groups = (p4.n + 3u) / 4u;
    if (i >= p4.m * groups) {
        return;
    }
    let row = i / groups;
    let col0 = (i % groups) * 4u;
    let k4 = p4.k / 4u;
    let last = p4.n - 1u;
    let r0 = min(col0, last) * k4;
    let r1 = min(col0 + 1u, last) * k4;
    let r2 = min(col0 + 2u, last) * k4;
    let r3 = min(col0 + 3u, last) * k4;
    var acc = vec4<f32>(0.0);
    for (var kk = 0u; kk < k4; kk++) {
        let x = a4[row * k4 + kk];
        let w0 = b4[r0 + kk];
        let w1 = b4[r1 + kk];
        let w2 = b4[r2 + kk];
        let w3 = b4[r3 + kk];
        acc.x = fma(x.w, w0.w, fma(x.z, w0.z, fma(x.y, w0.y, fma(x.x, w0.x, acc.x))));
        acc.y = fma(x.w, w1.w, fma(x.z, w1.z, fma(x.y, w1.y, fma(x.x, w1.x, acc.y))));
        acc.z = fma(x.w, w2.w, fma(x.z, w2.z, fma(x.y, w2.y, fma(x.x, w2.x, acc.z))));
        acc.w = fma(x.w, w3.w, fma(x.z, w3.z, fma(x.y, w3.y, fma(x.x, w3.x, acc.w))));
    }
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + j;
        if (col >= p4.n) {
            break;
        }
        var v = acc[j];
        if (p4.epilogue >= 1u) {
            v += bias[col];
        }
        if (p4.epilogue == 2u) {
            v = max(v, 0.0);
        }
        let o = row * p4.n + col;
        if (p4.accumulate == 1u) {
            v += c[o];
        }
        c[o] = v;
    }
}
