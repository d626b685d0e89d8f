// LayerNorm over the last dimension C of R rows:
//   mean = Σx/C, rstd = 1/sqrt(Σ(x-mean)²/C + eps), out = (x - mean)·rstd·w + b
// forward saves mean and rstd (R) for backward. Backward (xhat = (x-mean)·rstd, g = dout·w):
//   dx = rstd · (g - mean(g) - xhat·mean(g·xhat))           one workgroup per row
//   dw = Σ_rows dout·xhat,  db = Σ_rows dout                 one invocation per column
//                                                            (backward_params4: per 4 columns)
// No atomics: the parameter gradients are column sums in a fixed row order.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    accumulate: u32, // dw, db: 1 adds to the existing values
}

@group(0) @binding(0) var<uniform> p: Params;

// forward
@group(0) @binding(1) var<storage, read> x: array<f32>;            // (R, C)
@group(0) @binding(2) var<storage, read> w: array<f32>;            // (C)
@group(0) @binding(3) var<storage, read> b: array<f32>;            // (C)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;    // (R, C)
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;   // (R)
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;   // (R)

// backward
@group(0) @binding(1) var<storage, read> dout: array<f32>;         // (R, C)
@group(0) @binding(2) var<storage, read> bx: array<f32>;           // (R, C) forward input
@group(0) @binding(3) var<storage, read> bw: array<f32>;           // (C)
@group(0) @binding(4) var<storage, read> bmean: array<f32>;        // (R)
@group(0) @binding(5) var<storage, read> brstd: array<f32>;        // (R)
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;     // (R, C)
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;     // (C)
@group(0) @binding(8) var<storage, read_write> db: array<f32>;     // (C)

const WG: u32 = 64u;
var<workgroup> scratch: array<f32, 64>;
var<workgroup> scratch2: array<f32, 64>;

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

// Two sums at once (one set of barriers).
fn reduce_sum2(u: f32, v: f32, lid: u32) -> vec2<f32> {
    scratch[lid] = u;
    scratch2[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            scratch[lid] = scratch[lid] + scratch[lid + s];
            scratch2[lid] = scratch2[lid] + scratch2[lid + s];
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(scratch[0], scratch2[0]);
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
    let n = f32(p.cols);

    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) { s += x[base + c]; }
    let mu = reduce_sum(s, lid) / n;

    var q = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let d = x[base + c] - mu;
        q += d * d;
    }
    let rs = 1.0 / sqrt(reduce_sum(q, lid) / n + p.eps);

    for (var c = lid; c < p.cols; c += WG) {
        out[base + c] = (x[base + c] - mu) * rs * w[c] + b[c];
    }
    if (lid == 0u) {
        mean[row] = mu;
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
    let n = f32(p.cols);
    let mu = bmean[row];
    let rs = brstd[row];

    var sg = 0.0;
    var sgx = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let g = dout[base + c] * bw[c];
        sg += g;
        sgx += g * (bx[base + c] - mu) * rs;
    }
    let sums = reduce_sum2(sg, sgx, lid);
    let mean_g = sums.x / n;
    let mean_gx = sums.y / n;
    for (var c = lid; c < p.cols; c += WG) {
        let xhat = (bx[base + c] - mu) * rs;
        let g = dout[base + c] * bw[c];
        dx[base + c] = rs * (g - mean_g - xhat * mean_gx);
    }
}

@compute @workgroup_size(64)
fn backward_params(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.cols) { return; }
    var sw = 0.0;
    var sb = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        let d = dout[r * p.cols + c];
        sw += d * (bx[r * p.cols + c] - bmean[r]) * brstd[r];
        sb += d;
    }
    if (p.accumulate == 1u) {
        sw += dw[c];
        sb += db[c];
    }
    dw[c] = sw;
    db[c] = sb;
}

// backward_params over four columns per invocation (C a multiple of 4), in small workgroups so
// that a few hundred columns still spread over every core: the same operations in the same
// order per column as backward_params (bit for bit), a quarter of the reads on llvmpipe.
@group(0) @binding(1) var<storage, read> dout4: array<vec4<f32>>;    // (R, C/4)
@group(0) @binding(2) var<storage, read> bx4: array<vec4<f32>>;      // (R, C/4)
@group(0) @binding(7) var<storage, read_write> dw4: array<vec4<f32>>; // (C/4)
@group(0) @binding(8) var<storage, read_write> db4: array<vec4<f32>>; // (C/4)

@compute @workgroup_size(16)
fn backward_params4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let cols4 = p.cols / 4u;
    if (c >= cols4) { return; }
    var sw = vec4<f32>(0.0);
    var sb = vec4<f32>(0.0);
    for (var r = 0u; r < p.rows; r++) {
        let d = dout4[r * cols4 + c];
        sw += d * (bx4[r * cols4 + c] - bmean[r]) * brstd[r];
        sb += d;
    }
    if (p.accumulate == 1u) {
        sw += dw4[c];
        sb += db4[c];
    }
    dw4[c] = sw;
    db4[c] = sb;
}
