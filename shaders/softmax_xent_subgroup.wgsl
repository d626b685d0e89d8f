// softmax_xent.wgsl's fused loss and dlogits for adapters with subgroups of at least 8 lanes and
// a vocabulary that is a multiple of 4: 8 lanes per row, each reading vec4s at columns
// 4·(lane + 8j). softmax_xent.wgsl reduces through workgroup memory with a barrier per step, and
// on llvmpipe every barrier suspends and resumes each group of lanes; here there is none (as in
// layernorm_subgroup.wgsl). Same math; the sums are added in another (fixed) order.
// Rows run on clusters of 8 lanes of one subgroup, CLUSTERS clusters (rows at a time) per
// workgroup of 8·CLUSTERS invocations (Gpu::row_clusters: 1 on CPU adapters, where a workgroup is
// one 8-lane subgroup and walks several rows; 8 on GPUs, whose 32- and 64-wide subgroups then
// hold four or eight rows' clusters). A cluster's sums: subgroupAdd/subgroupMax where the
// workgroup is one cluster, else a butterfly of subgroupShuffleXor over lanes 1, 2, 4 (every lane
// of the cluster ends with the same bits, as a + b = b + a).
override CLUSTERS: u32 = 1u;

struct Params {
    rows: u32,
    vocab: u32,
    grad_scale: f32,
    write_grad: u32,
    scaled: u32,
    scale_index: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits4: array<vec4<f32>>;     // (R, V/4)
@group(0) @binding(2) var<storage, read> targets: array<u32>;           // (R)
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;      // (R)
@group(0) @binding(4) var<storage, read_write> dlogits4: array<vec4<f32>>; // (R, V/4), when write_grad = 1
@group(0) @binding(5) var<storage, read> stats: array<f32>; // the loss scale at scale_index, when scaled = 1

const LANES: u32 = 8u;
const PAD: u32 = 0xFFFFFFFFu;

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

@compute @workgroup_size(8u * CLUSTERS)
fn forward_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32, @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32) {
    // workgroups walk CLUSTERS rows at a time from first, in steps of CLUSTERS times the
    // workgroup count; every cluster takes the same steps (one past the last row recomputes the
    // last and stores nothing), so the subgroup operations stay in uniform control flow
    let slot = cluster_slot(sg_id, sg_lane, sg_size);
    let rows = p.rows;
    for (var first = (wid.y * nwg.x + wid.x) * CLUSTERS; first < rows; first += nwg.x * nwg.y * CLUSTERS) {
        let row = first + slot;
        forward_backward_row(min(row, rows - 1u), sg_lane % LANES, row < rows);
    }
}

fn forward_backward_row(row: u32, lane: u32, store: bool) {
    let v4 = p.vocab / 4u;
    let base = row * v4;
    let tgt = targets[row];

    var m4 = vec4<f32>(-3.402823e38);
    for (var c = lane; c < v4; c += LANES) { m4 = max(m4, logits4[base + c]); }
    let m = cluster_max(max(max(m4.x, m4.y), max(m4.z, m4.w)));

    var s4 = vec4<f32>(0.0);
    for (var c = lane; c < v4; c += LANES) { s4 += exp(logits4[base + c] - m); }
    let s = cluster_add((s4.x + s4.y) + (s4.z + s4.w));

    if (!store) {
        return;
    }
    let padded = tgt == PAD || tgt >= p.vocab;
    if (lane == 0u) {
        if (padded) {
            losses[row] = 0.0;
        } else {
            losses[row] = log(s) + m - logits4[base + tgt / 4u][tgt % 4u];
        }
    }
    if (p.write_grad == 1u) {
        let inv = 1.0 / s;
        var scale = p.grad_scale;
        if (p.scaled == 1u) { scale = scale * stats[p.scale_index]; }
        for (var c = lane; c < v4; c += LANES) {
            var g = vec4<f32>(0.0);
            if (!padded) {
                let v = vec4<u32>(4u * c) + vec4<u32>(0u, 1u, 2u, 3u);
                g = exp(logits4[base + c] - m) * inv - select(vec4<f32>(0.0), vec4<f32>(1.0), v == vec4<u32>(tgt));
            }
            dlogits4[base + c] = scale * g;
        }
    }
}
