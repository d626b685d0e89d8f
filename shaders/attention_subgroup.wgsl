// attention.wgsl's row-wise causal softmax and its backward for adapters with subgroups of at
// least 8 lanes and T a multiple of 4: one 8-invocation workgroup (a single subgroup) per row of
// (B·NH·T, T) (one walks several on CPU adapters: ops::subgroup_rows_per_group), each lane
// taking vec4s at columns 4·(lane + 8j), the row's max and sums taken by subgroupMax and
// subgroupAdd. attention.wgsl gives a row to one invocation, which reads it a
// scalar at a time. Same math (each lane keeps an online max and a sum rescaled to it, the lanes'
// pairs combined at the end); the sums are added in another (fixed) order.

struct Params {
    batch: u32,
    seq: u32,      // T
    channels: u32, // C
    heads: u32,    // NH
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

const LANES: u32 = 8u;

// softmax: scores in, probabilities out, in place
@group(0) @binding(1) var<storage, read_write> sm_att4: array<vec4<f32>>; // (B·NH·T, T/4)

// softmax_backward
@group(0) @binding(1) var<storage, read> sb_att4: array<vec4<f32>>;     // (B·NH·T, T/4)
@group(0) @binding(2) var<storage, read_write> sb_d4: array<vec4<f32>>; // datt in, dpre out

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// Which of the vec4 at column 4c are on or below the diagonal of row t.
fn causal(c: u32, t: u32) -> vec4<bool> {
    return (vec4<u32>(4u * c) + vec4<u32>(0u, 1u, 2u, 3u)) <= vec4<u32>(t);
}

@compute @workgroup_size(8)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid3: vec3<u32>) {
    // a workgroup walks rows first, first + G, ... (G workgroups: ops::subgroup_rows_per_group);
    // every lane takes the same rows, so the subgroup operations stay in uniform control flow
    for (var r = row_index(wid, nwg); r < p.batch * p.heads * p.seq; r += nwg.x * nwg.y) {
        softmax_row(r, lid3.x);
    }
}

fn softmax_row(r: u32, lane: u32) {
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
    let m_row = subgroupMax(m);
    let inv = 1.0 / subgroupAdd(z * exp(m - m_row));
    for (var c = lane; c < t4; c += LANES) {
        var a = vec4<f32>(0.0);
        if (4u * c <= t) {
            a = select(vec4<f32>(0.0), exp(p.scale * sm_att4[row + c] - m_row) * inv, causal(c, t));
        }
        sm_att4[row + c] = a;
    }
}

@compute @workgroup_size(8)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid3: vec3<u32>) {
    // a workgroup walks rows first, first + G, ... (G workgroups: ops::subgroup_rows_per_group);
    // every lane takes the same rows, so the subgroup operations stay in uniform control flow
    for (var r = row_index(wid, nwg); r < p.batch * p.heads * p.seq; r += nwg.x * nwg.y) {
        softmax_backward_row(r, lid3.x);
    }
}

fn softmax_backward_row(r: u32, lane: u32) {
    let t = r % p.seq;
    let t4 = p.seq / 4u;
    let row = r * t4;
    var d = vec4<f32>(0.0);
    for (var c = lane; 4u * c <= t; c += LANES) {
        d += select(vec4<f32>(0.0), sb_att4[row + c] * sb_d4[row + c], causal(c, t));
    }
    let dot = subgroupAdd((d.x + d.y) + (d.z + d.w));
    for (var c = lane; c < t4; c += LANES) {
        var g = vec4<f32>(0.0);
        if (4u * c <= t) {
            g = select(vec4<f32>(0.0), p.scale * sb_att4[row + c] * (sb_d4[row + c] - dot), causal(c, t));
        }
        sb_d4[row + c] = g;
    }
}
