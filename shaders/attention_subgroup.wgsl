// attention.wgsl's row-wise causal softmax and its backward for adapters with subgroups of at
// least 8 lanes and T a multiple of 4: 8 lanes per row of (B·NH·T, T), each taking vec4s at
// columns 4·(lane + 8j). attention.wgsl gives a row to one invocation, which reads it a
// scalar at a time. Same math (each lane keeps an online max and a sum rescaled to it, the lanes'
// pairs combined at the end); the sums are added in another (fixed) order.
// Rows run on clusters of 8 lanes of one subgroup, CLUSTERS clusters (rows at a time) per
// workgroup of 8·CLUSTERS invocations (Gpu::row_clusters: 1 on CPU adapters, where a workgroup is
// one 8-lane subgroup and walks several rows; 8 on GPUs, whose 32- and 64-wide subgroups then
// hold four or eight rows' clusters). A cluster's sums: subgroupAdd/subgroupMax where the
// workgroup is one cluster, else a butterfly of subgroupShuffleXor over lanes 1, 2, 4 (every lane
// of the cluster ends with the same bits, as a + b = b + a).
override CLUSTERS: u32 = 1u;

struct Params {
    batch: u32,
    seq: u32,      // T
    channels: u32, // C
    heads: u32,    // NH
    scale: f32,
    kv_heads: u32, // KH (attention.wgsl's head moves)
}

@group(0) @binding(0) var<uniform> p: Params;

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

// softmax: scores in, probabilities out, in place
@group(0) @binding(1) var<storage, read_write> sm_att4: array<vec4<f32>>; // (B·NH·T, T/4)

// softmax_backward
@group(0) @binding(1) var<storage, read> sb_att4: array<vec4<f32>>;     // (B·NH·T, T/4)
@group(0) @binding(2) var<storage, read_write> sb_d4: array<vec4<f32>>; // datt in, dpre out

// Which of the vec4 at column 4c are on or below the diagonal of row t.
fn causal(c: u32, t: u32) -> vec4<bool> {
    return (vec4<u32>(4u * c) + vec4<u32>(0u, 1u, 2u, 3u)) <= vec4<u32>(t);
}

@compute @workgroup_size(8u * CLUSTERS)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32, @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32) {
    // workgroups walk CLUSTERS rows at a time from first, in steps of CLUSTERS times the
    // workgroup count; every cluster takes the same steps (one past the last row recomputes the
    // last and stores nothing), so the subgroup operations stay in uniform control flow
    let slot = cluster_slot(sg_id, sg_lane, sg_size);
    let rows = p.batch * p.heads * p.seq;
    for (var first = (wid.y * nwg.x + wid.x) * CLUSTERS; first < rows; first += nwg.x * nwg.y * CLUSTERS) {
        let row = first + slot;
        softmax_row(min(row, rows - 1u), sg_lane % LANES, row < rows);
    }
}

fn softmax_row(r: u32, lane: u32, store: bool) {
    let t = r % p.seq;
    let t4 = p.seq / 4u;
    let row = r * t4;
    let lowest = -3.402823e38;
    var m = lowest;
    var z = 0.0;
    for (var c = lane; 4u * c <= t; c += LANES) {
        let s = select(vec4<f32>(lowest), p.scale * sm_att4[row + c], causal(c, t));
        let m_new = max(m, max(max(s.x, s.y), max(s.z, s.w)));
        let e = select(vec4<f32>(0.0), exp(s - m_new), causal(c, t));
        z = z * exp(m - m_new) + ((e.x + e.y) + (e.z + e.w));
        m = m_new;
    }
    let m_row = cluster_max(m);
    let inv = 1.0 / cluster_add(z * exp(m - m_row));
    if (!store) {
        return;
    }
    for (var c = lane; c < t4; c += LANES) {
        var a = vec4<f32>(0.0);
        if (4u * c <= t) {
            a = select(vec4<f32>(0.0), exp(p.scale * sm_att4[row + c] - m_row) * inv, causal(c, t));
        }
        sm_att4[row + c] = a;
    }
}

@compute @workgroup_size(8u * CLUSTERS)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32, @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32) {
    // workgroups walk CLUSTERS rows at a time from first, in steps of CLUSTERS times the
    // workgroup count; every cluster takes the same steps (one past the last row recomputes the
    // last and stores nothing), so the subgroup operations stay in uniform control flow
    let slot = cluster_slot(sg_id, sg_lane, sg_size);
    let rows = p.batch * p.heads * p.seq;
    for (var first = (wid.y * nwg.x + wid.x) * CLUSTERS; first < rows; first += nwg.x * nwg.y * CLUSTERS) {
        let row = first + slot;
        softmax_backward_row(min(row, rows - 1u), sg_lane % LANES, row < rows);
    }
}

fn softmax_backward_row(r: u32, lane: u32, store: bool) {
    let t = r % p.seq;
    let t4 = p.seq / 4u;
    let row = r * t4;
    var d = vec4<f32>(0.0);
    for (var c = lane; 4u * c <= t; c += LANES) {
        d += select(vec4<f32>(0.0), sb_att4[row + c] * sb_d4[row + c], causal(c, t));
    }
    let dot = cluster_add((d.x + d.y) + (d.z + d.w));
    if (!store) {
        return;
    }
    for (var c = lane; c < t4; c += LANES) {
        var g = vec4<f32>(0.0);
        if (4u * c <= t) {
            g = select(vec4<f32>(0.0), p.scale * sb_att4[row + c] * (sb_d4[row + c] - dot), causal(c, t));
        }
        sb_d4[row + c] = g;
    }
}
