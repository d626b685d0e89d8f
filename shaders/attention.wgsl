// Causal multi-head self-attention around batched matmuls (src/ops/attention.rs), in GPT-2's
// packed layout: qkv (B, T, 3C) holds q | k | v; head h owns columns h*hs .. (h+1)*hs of each,
// hs = C / NH. The products q·kᵀ, att·v and their gradients run on the matmul kernels; the
// kernels here only move heads in and out of that layout and do the row-wise causal softmax:
//   split_qkv:   qkv (B, T, 3C) → q, k, v (B, NH, T, hs)
//   split:       x (B, T, C) → xh (B, NH, T, hs)
//   merge:       xh (B, NH, T, hs) → x (B, T, C)
//   merge_qkv:   dq, dk, dv (B, NH, T, hs) → dqkv (B, T, 3C)
//   split_qkv4, split4, merge4, merge_qkv4: the same four moves a vec4 per invocation, for hs a
//                multiple of 4 (4 consecutive elements of a head row are 4 consecutive ones in
//                the packed layout); llvmpipe makes a vec4 move about 3x cheaper than 4 scalar ones
//   softmax:     att[r, t2] = softmax over t2 ≤ t of scale·s[r, t2], 0 for t2 > t, in place
//                (r = (b, h, t) a row of (B·NH·T, T); t = r mod T)
//   softmax_backward: datt → dpre = scale · att ⊙ (datt − Σ_t2 att·datt), 0 above the diagonal,
//                in place
// Every output element is owned by one invocation that sums in a fixed order: deterministic.

struct Params {
    batch: u32,
    seq: u32,      // T
    channels: u32, // C
    heads: u32,    // NH
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 64u;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// Element i of a (B, NH, T, hs) tensor: its offset in a (B, T, sections·C) tensor, section 0.
fn packed_offset(i: u32, sections: u32) -> u32 {
    let hs = p.channels / p.heads;
    let d = i % hs;
    let t = (i / hs) % p.seq;
    let h = (i / (hs * p.seq)) % p.heads;
    let b = i / (hs * p.seq * p.heads);
    return (b * p.seq + t) * sections * p.channels + h * hs + d;
}

@group(0) @binding(1) var<storage, read> sq_qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> sq_q: array<f32>;
@group(0) @binding(3) var<storage, read_write> sq_k: array<f32>;
@group(0) @binding(4) var<storage, read_write> sq_v: array<f32>;

// One invocation per element of q.
@compute @workgroup_size(64)
fn split_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.batch * p.seq * p.channels) { return; }
    let o = packed_offset(i, 3u);
    sq_q[i] = sq_qkv[o];
    sq_k[i] = sq_qkv[o + p.channels];
    sq_v[i] = sq_qkv[o + 2u * p.channels];
}

@group(0) @binding(1) var<storage, read> sp_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sp_xh: array<f32>;

@compute @workgroup_size(64)
fn split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.batch * p.seq * p.channels) { return; }
    sp_xh[i] = sp_x[packed_offset(i, 1u)];
}

@group(0) @binding(1) var<storage, read> mg_xh: array<f32>;
@group(0) @binding(2) var<storage, read_write> mg_x: array<f32>;

@compute @workgroup_size(64)
fn merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.batch * p.seq * p.channels) { return; }
    mg_x[packed_offset(i, 1u)] = mg_xh[i];
}

@group(0) @binding(1) var<storage, read> mq_dq: array<f32>;
@group(0) @binding(2) var<storage, read> mq_dk: array<f32>;
@group(0) @binding(3) var<storage, read> mq_dv: array<f32>;
@group(0) @binding(4) var<storage, read_write> mq_dqkv: array<f32>;

@compute @workgroup_size(64)
fn merge_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.batch * p.seq * p.channels) { return; }
    let o = packed_offset(i, 3u);
    mq_dqkv[o] = mq_dq[i];
    mq_dqkv[o + p.channels] = mq_dk[i];
    mq_dqkv[o + 2u * p.channels] = mq_dv[i];
}

@group(0) @binding(1) var<storage, read_write> sm_att: array<f32>; // (B·NH·T, T)

// One invocation per row. The first pass keeps a running max and a sum rescaled to it (online
// softmax), the second writes the probabilities: two passes over the row, one of them a write.
@compute @workgroup_size(64)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_index(wid, nwg, lid);
    if (r >= p.batch * p.heads * p.seq) { return; }
    let t = r % p.seq;
    let row = r * p.seq;
    var m = -3.402823e38;
    var z = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) {
        let s = p.scale * sm_att[row + t2];
        let m_new = max(m, s);
        z = z * exp(m - m_new) + exp(s - m_new);
        m = m_new;
    }
    let inv = 1.0 / z;
    for (var t2 = 0u; t2 < p.seq; t2++) {
        var a = 0.0;
        if (t2 <= t) {
            a = exp(p.scale * sm_att[row + t2] - m) * inv;
        }
        sm_att[row + t2] = a;
    }
}

@group(0) @binding(1) var<storage, read> sb_att: array<f32>;        // (B·NH·T, T)
@group(0) @binding(2) var<storage, read_write> sb_d: array<f32>;    // datt in, dpre out

@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_index(wid, nwg, lid);
    if (r >= p.batch * p.heads * p.seq) { return; }
    let t = r % p.seq;
    let row = r * p.seq;
    var dot = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) {
        dot += sb_att[row + t2] * sb_d[row + t2];
    }
    for (var t2 = 0u; t2 < p.seq; t2++) {
        var g = 0.0;
        if (t2 <= t) {
            g = p.scale * sb_att[row + t2] * (sb_d[row + t2] - dot);
        }
        sb_d[row + t2] = g;
    }
}

// The vec4 moves: element index i = 4j for invocation j; offsets are multiples of 4 when hs is.
@group(0) @binding(1) var<storage, read> sq4_qkv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> sq4_q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> sq4_k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> sq4_v: array<vec4<f32>>;

@compute @workgroup_size(64)
fn split_qkv4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = linear_index(wid, nwg, lid);
    if (j >= p.batch * p.seq * p.channels / 4u) { return; }
    let o = packed_offset(4u * j, 3u) / 4u;
    let c4 = p.channels / 4u;
    sq4_q[j] = sq4_qkv[o];
    sq4_k[j] = sq4_qkv[o + c4];
    sq4_v[j] = sq4_qkv[o + 2u * c4];
}

@group(0) @binding(1) var<storage, read> sp4_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> sp4_xh: array<vec4<f32>>;

@compute @workgroup_size(64)
fn split4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = linear_index(wid, nwg, lid);
    if (j >= p.batch * p.seq * p.channels / 4u) { return; }
    sp4_xh[j] = sp4_x[packed_offset(4u * j, 1u) / 4u];
}

@group(0) @binding(1) var<storage, read> mg4_xh: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> mg4_x: array<vec4<f32>>;

@compute @workgroup_size(64)
fn merge4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = linear_index(wid, nwg, lid);
    if (j >= p.batch * p.seq * p.channels / 4u) { return; }
    mg4_x[packed_offset(4u * j, 1u) / 4u] = mg4_xh[j];
}

@group(0) @binding(1) var<storage, read> mq4_dq: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> mq4_dk: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> mq4_dv: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> mq4_dqkv: array<vec4<f32>>;

@compute @workgroup_size(64)
fn merge_qkv4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = linear_index(wid, nwg, lid);
    if (j >= p.batch * p.seq * p.channels / 4u) { return; }
    let o = packed_offset(4u * j, 3u) / 4u;
    let c4 = p.channels / 4u;
    mq4_dqkv[o] = mq4_dq[j];
    mq4_dqkv[o + c4] = mq4_dk[j];
    mq4_dqkv[o + 2u * c4] = mq4_dv[j];
}
