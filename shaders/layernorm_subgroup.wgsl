// LayerNorm rows (layernorm.wgsl has the math) for adapters with subgroups of at least 8 lanes and
// C a multiple of 4: one 8-invocation workgroup (a single subgroup) per row (one walks several
// on CPU adapters: ops::subgroup_rows_per_group), each lane reading
// vec4s at columns 4·(lane + 8j), and the row sums taken by subgroupAdd. layernorm.wgsl's kernels
// reduce through workgroup memory with a barrier per step, and on llvmpipe every barrier suspends
// and resumes each group of lanes; here there is none.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;          // (R, C)
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;          // (C)
@group(0) @binding(3) var<storage, read> b: array<vec4<f32>>;          // (C)
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;  // (R, C)
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;       // (R)
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;       // (R)

// backward
@group(0) @binding(1) var<storage, read> dout: array<vec4<f32>>;       // (R, C)
@group(0) @binding(2) var<storage, read> bx: array<vec4<f32>>;         // (R, C) forward input
@group(0) @binding(3) var<storage, read> bw: array<vec4<f32>>;         // (C)
@group(0) @binding(4) var<storage, read> bmean: array<f32>;            // (R)
@group(0) @binding(5) var<storage, read> brstd: array<f32>;            // (R)
@group(0) @binding(6) var<storage, read_write> dx: array<vec4<f32>>;   // (R, C)

const LANES: u32 = 8u;

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

@compute @workgroup_size(8)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid3: vec3<u32>) {
    // a workgroup walks rows first, first + G, ... (G workgroups: ops::subgroup_rows_per_group);
    // every lane takes the same rows, so the subgroup operations stay in uniform control flow
    for (var row = wid.y * nwg.x + wid.x; row < p.rows; row += nwg.x * nwg.y) {
        forward_row(row, lid3.x);
    }
}

fn forward_row(row: u32, lane: u32) {
    let c4 = p.cols / 4u;
    let base = row * c4;
    let n = f32(p.cols);

    var s = vec4<f32>(0.0);
    for (var c = lane; c < c4; c += LANES) { s += x[base + c]; }
    let mu = subgroupAdd(hsum(s)) / n;

    var q = vec4<f32>(0.0);
    for (var c = lane; c < c4; c += LANES) {
        let d = x[base + c] - mu;
        q += d * d;
    }
    let rs = 1.0 / sqrt(subgroupAdd(hsum(q)) / n + p.eps);

    for (var c = lane; c < c4; c += LANES) {
        out[base + c] = (x[base + c] - mu) * rs * w[c] + b[c];
    }
    if (lane == 0u) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

@compute @workgroup_size(8)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid3: vec3<u32>) {
    // a workgroup walks rows first, first + G, ... (G workgroups: ops::subgroup_rows_per_group);
    // every lane takes the same rows, so the subgroup operations stay in uniform control flow
    for (var row = wid.y * nwg.x + wid.x; row < p.rows; row += nwg.x * nwg.y) {
        backward_input_row(row, lid3.x);
    }
}

fn backward_input_row(row: u32, lane: u32) {
    let c4 = p.cols / 4u;
    let base = row * c4;
    let n = f32(p.cols);
    let mu = bmean[row];
    let rs = brstd[row];

    var sg = vec4<f32>(0.0);
    var sgx = vec4<f32>(0.0);
    for (var c = lane; c < c4; c += LANES) {
        let g = dout[base + c] * bw[c];
        sg += g;
        sgx += g * (bx[base + c] - mu) * rs;
    }
    let mean_g = subgroupAdd(hsum(sg)) / n;
    let mean_gx = subgroupAdd(hsum(sgx)) / n;
    for (var c = lane; c < c4; c += LANES) {
        let xhat = (bx[base + c] - mu) * rs;
        let g = dout[base + c] * bw[c];
        dx[base + c] = rs * (g - mean_g - xhat * mean_gx);
    }
}
