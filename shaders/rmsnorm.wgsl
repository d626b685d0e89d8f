// RMSNorm over the last dimension C of R rows (Llama's normalisation: no mean, no bias):
//   rstd = 1/sqrt(Σx²/C + eps), out = x·rstd·w
// forward saves rstd (R) for backward. Backward (xhat = x·rstd, g = dout·w):
//   dx = rstd · (g − xhat·mean(g·xhat))      one workgroup per row
//   dw = Σ_rows dout·xhat                    one invocation per column, rows in order
// No atomics: dw is a column sum in a fixed row order.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    accumulate: u32, // dw: 1 adds to the existing values
}

@group(0) @binding(0) var<uniform> p: Params;

// forward
@group(0) @binding(1) var<storage, read> x: array<f32>;            // (R, C)
@group(0) @binding(2) var<storage, read> w: array<f32>;            // (C)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;    // (R, C)
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;   // (R)

// backward
@group(0) @binding(1) var<storage, read> dout: array<f32>;         // (R, C)
@group(0) @binding(2) var<storage, read> bx: array<f32>;           // (R, C) forward input
@group(0) @binding(3) var<storage, read> bw: array<f32>;           // (C)
@group(0) @binding(4) var<storage, read> brstd: array<f32>;        // (R)
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;     // (R, C)
@group(0) @binding(6) var<storage, read_write> dw: array<f32>;     // (C)

const WG: u32 = 64u;
var<workgroup> scratch: array<f32, 64>;

fn reduce_sum(v: f32, lid: u32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { scratch[lid] = scratch[lid] + scratch[lid + s]; }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) { return; }
    let lid = lid3.x;
    let base = row * p.cols;
    var q = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let v = x[base + c];
        q += v * v;
    }
    let rs = 1.0 / sqrt(reduce_sum(q, lid) / f32(p.cols) + p.eps);
    for (var c = lid; c < p.cols; c += WG) {
        out[base + c] = x[base + c] * rs * w[c];
    }
    if (lid == 0u) {
        rstd[row] = rs;
    }
}

@compute @workgroup_size(64)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) { return; }
    let lid = lid3.x;
    let base = row * p.cols;
    let rs = brstd[row];
    var sgx = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        sgx += dout[base + c] * bw[c] * bx[base + c] * rs;
    }
    let mean_gx = reduce_sum(sgx, lid) / f32(p.cols);
    for (var c = lid; c < p.cols; c += WG) {
        let xhat = bx[base + c] * rs;
        let g = dout[base + c] * bw[c];
        dx[base + c] = rs * (g - xhat * mean_gx);
    }
}

@compute @workgroup_size(64)
fn backward_params(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.cols) { return; }
    var sw = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        sw += dout[r * p.cols + c] * bx[r * p.cols + c] * brstd[r];
    }
    if (p.accumulate == 1u) {
        sw += dw[c];
    }
    dw[c] = sw;
}
