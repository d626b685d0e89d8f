// LayerNorm rows (layernorm.wgsl has the math) for adapters with subgroups of at least 8 lanes and
// C a multiple of 4: 8 lanes per row, each reading vec4s at columns 4·(lane + 8j).
// layernorm.wgsl's kernels reduce through workgroup memory with a barrier per step, and on
// llvmpipe every barrier suspends and resumes each group of lanes; here there is none.
// Rows run on clusters of 8 lanes of one subgroup, CLUSTERS clusters (rows at a time) per
// workgroup of 8·CLUSTERS invocations (Gpu::row_clusters: 1 on CPU adapters, where a workgroup is
// one 8-lane subgroup and walks several rows; 8 on GPUs, whose 32- and 64-wide subgroups then
// hold four or eight rows' clusters). A cluster's sums: subgroupAdd/subgroupMax where the
// workgroup is one cluster, else a butterfly of subgroupShuffleXor over lanes 1, 2, 4 (every lane
// of the cluster ends with the same bits, as a + b = b + a).
override CLUSTERS: u32 = 1u;

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

fn cluster_add(v: f32) -> f32 {
    if (CLUSTERS == 1u) {
        return subgroupAdd(v);
    }
    let a = v + subgroupShuffleXor(v, 1u);
    let b = a + subgroupShuffleXor(a, 2u);
    return b + subgroupShuffleXor(b, 4u);
}

fn cluster_max(v: f32) -> f32 {
    if (CLUSTERS == 1u) {
        return subgroupMax(v);
    }
    let a = max(v, subgroupShuffleXor(v, 1u));
    let b = max(a, subgroupShuffleXor(a, 2u));
    return max(b, subgroupShuffleXor(b, 4u));
}

// Which of its workgroup's CLUSTERS rows an invocation works on: lanes 8c .. 8c + 7 of a subgroup
// are a cluster, whatever order the device forms its subgroups in.
fn cluster_slot(sg_id: u32, sg_lane: u32, sg_size: u32) -> u32 {
    return sg_id * (sg_size / LANES) + sg_lane / LANES;
}

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

@compute @workgroup_size(8u * CLUSTERS)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32, @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32) {
    // workgroups walk CLUSTERS rows at a time from first, in steps of CLUSTERS times the
    // workgroup count; every cluster takes the same steps (one past the last row recomputes the
    // last and stores nothing), so the subgroup operations stay in uniform control flow
    let slot = cluster_slot(sg_id, sg_lane, sg_size);
    let rows = p.rows;
    for (var first = (wid.y * nwg.x + wid.x) * CLUSTERS; first < rows; first += nwg.x * nwg.y * CLUSTERS) {
        let row = first + slot;
        forward_row(min(row, rows - 1u), sg_lane % LANES, row < rows);
    }
}

fn forward_row(row: u32, lane: u32, store: bool) {
    let c4 = p.cols / 4u;
    let base = row * c4;
    let n = f32(p.cols);

    var s = vec4<f32>(0.0);
    for (var c = lane; c < c4; c += LANES) { s += x[base + c]; }
    let mu = cluster_add(hsum(s)) / n;

    var q = vec4<f32>(0.0);
    for (var c = lane; c < c4; c += LANES) {
        let d = x[base + c] - mu;
        q += d * d;
    }
    let rs = 1.0 / sqrt(cluster_add(hsum(q)) / n + p.eps);

    if (!store) {
        return;
    }
    for (var c = lane; c < c4; c += LANES) {
        out[base + c] = (x[base + c] - mu) * rs * w[c] + b[c];
    }
    if (lane == 0u) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

@compute @workgroup_size(8u * CLUSTERS)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32, @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32) {
    // workgroups walk CLUSTERS rows at a time from first, in steps of CLUSTERS times the
    // workgroup count; every cluster takes the same steps (one past the last row recomputes the
    // last and stores nothing), so the subgroup operations stay in uniform control flow
    let slot = cluster_slot(sg_id, sg_lane, sg_size);
    let rows = p.rows;
    for (var first = (wid.y * nwg.x + wid.x) * CLUSTERS; first < rows; first += nwg.x * nwg.y * CLUSTERS) {
        let row = first + slot;
        backward_input_row(min(row, rows - 1u), sg_lane % LANES, row < rows);
    }
}

fn backward_input_row(row: u32, lane: u32, store: bool) {
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
    let mean_g = cluster_add(hsum(sg)) / n;
    let mean_gx = cluster_add(hsum(sgx)) / n;
    if (!store) {
        return;
    }
    for (var c = lane; c < c4; c += LANES) {
        let xhat = (bx[base + c] - mu) * rs;
        let g = dout[base + c] * bw[c];
        dx[base + c] = rs * (g - mean_g - xhat * mean_gx);
    }
}
