// Fused softmax + cross-entropy over rows of logits, forward and backward in one pass:
//   loss[r]       = logsumexp(logits[r, :]) - logits[r, tgt[r]]
//   dlogits[r, v] = grad_scale * (softmax(logits[r, :])[v] - [v == tgt[r]]) (* the loss scale)
// The loss scale (mixed precision's dynamic loss scaling) is read from the step stats on the GPU,
// where the step guard keeps it (shaders/guard.wgsl), when `scaled` is 1.
// Stable: the row max is subtracted before exp. A tgt equal to PAD (0xFFFFFFFF) marks a padded
// row: its loss and its dlogits are 0. One workgroup per row; reductions use a fixed tree, so
// results are deterministic.

struct Params {
    rows: u32,
    vocab: u32,
    grad_scale: f32,
    write_grad: u32,
    scaled: u32,
    scale_index: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;   // (R, V)
@group(0) @binding(2) var<storage, read> targets: array<u32>;  // (R)
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;  // (R)
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>; // (R, V), when write_grad = 1
@group(0) @binding(5) var<storage, read> stats: array<f32>; // the loss scale at scale_index, when scaled = 1

const WG: u32 = 64u;
const PAD: u32 = 0xFFFFFFFFu;
var<workgroup> scratch: array<f32, 64>;

fn reduce_max(v: f32, lid: u32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { scratch[lid] = max(scratch[lid], scratch[lid + s]); }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

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
fn forward_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.y * nwg.x + wid.x;
    // Uniform control flow: every invocation of the workgroup takes the same branch.
    if (row >= p.rows) { return; }
    let lid = lid3.x;
    let base = row * p.vocab;
    let tgt = targets[row];

    var m = -3.402823e38;
    for (var v = lid; v < p.vocab; v += WG) { m = max(m, logits[base + v]); }
    m = reduce_max(m, lid);

    var s = 0.0;
    for (var v = lid; v < p.vocab; v += WG) { s += exp(logits[base + v] - m); }
    s = reduce_sum(s, lid);

    let padded = tgt == PAD || tgt >= p.vocab;
    if (lid == 0u) {
        if (padded) {
            losses[row] = 0.0;
        } else {
            losses[row] = log(s) + m - logits[base + tgt];
        }
    }
    if (p.write_grad == 1u) {
        let inv = 1.0 / s;
        var scale = p.grad_scale;
        if (p.scaled == 1u) { scale = scale * stats[p.scale_index]; }
        for (var v = lid; v < p.vocab; v += WG) {
            var g = 0.0;
            if (!padded) {
                g = exp(logits[base + v] - m) * inv - select(0.0, 1.0, v == tgt);
            }
            dlogits[base + v] = scale * g;
        }
    }
}
