// softmax_xent.wgsl's fused loss and dlogits for adapters with subgroups of at least 8 lanes and
// a vocabulary that is a multiple of 4: one 8-invocation workgroup (a single subgroup) per row
// (one walks several on CPU adapters: ops::subgroup_rows_per_group),
// each lane reading vec4s at columns 4·(lane + 8j), the row max and sum taken by subgroupMax and
// subgroupAdd. softmax_xent.wgsl reduces through workgroup memory with a barrier per step, and
// on llvmpipe every barrier suspends and resumes each group of lanes; here there is none (as in
// layernorm_subgroup.wgsl). Same math; the sums are added in another (fixed) order.

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

@compute @workgroup_size(8)
fn forward_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid3: vec3<u32>) {
    // a workgroup walks rows first, first + G, ... (G workgroups: ops::subgroup_rows_per_group);
    // every lane takes the same rows, so the subgroup operations stay in uniform control flow
    for (var row = wid.y * nwg.x + wid.x; row < p.rows; row += nwg.x * nwg.y) {
        forward_backward_row(row, lid3.x);
    }
}

fn forward_backward_row(row: u32, lane: u32) {
    let v4 = p.vocab / 4u;
    let base = row * v4;
    let tgt = targets[row];

    var m4 = vec4<f32>(-3.402823e38);
    for (var c = lane; c < v4; c += LANES) { m4 = max(m4, logits4[base + c]); }
    let m = subgroupMax(max(max(m4.x, m4.y), max(m4.z, m4.w)));

    var s4 = vec4<f32>(0.0);
    for (var c = lane; c < v4; c += LANES) { s4 += exp(logits4[base + c] - m); }
    let s = subgroupAdd((s4.x + s4.y) + (s4.z + s4.w));

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
