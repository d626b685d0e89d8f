// Causal multi-head self-attention around batched matmuls (src/ops/attention.rs), over a packed
// qkv (B, T, C + 2·KC) holding q | k | v: NH query heads of hs = C / NH columns, and KH key/value
// heads (KC = KH·hs columns each), query head h reading key/value head h / (NH / KH) (grouped-query
// attention; GPT-2 has KH = NH). The products q·kᵀ, att·v and their gradients run on the matmul
// kernels; the kernels here only move heads in and out of that layout and do the row-wise causal
// softmax:
//   split_qkv:   qkv → q, k, v (B, NH, T, hs), each query head given its group's key and value
//   split:       x (B, T, C) → xh (B, NH, T, hs)
//   merge:       xh (B, NH, T, hs) → x (B, T, C)
//   merge_qkv:   dq, dk, dv (B, NH, T, hs) → dqkv, a key/value head's gradient the sum over its
//                group's query heads in head order (the first such head's invocation adds them)
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
    kv_heads: u32, // KH
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 64u;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// Element i of a (B, NH, T, hs) tensor: its offset in a (B, T, C) tensor.
fn packed_offset(i: u32) -> u32 {
    let hs = p.channels / p.heads;
    let d = i % hs;
    let t = (i / hs) % p.seq;
    let h = (i / (hs * p.seq)) % p.heads;
    let b = i / (hs * p.seq * p.heads);
    return (b * p.seq + t) * p.channels + h * hs + d;
}

// Element i of a (B, NH, T, hs) tensor: the offsets of its query element and of its group's key
// element in qkv (B, T, C + 2·KC) (the value element is KC past the key's), and whether head h
// is the first of its group.
struct QkvAt {
    q: u32,
    k: u32,
    first: bool,
}

fn qkv_at(i: u32) -> QkvAt {
    let hs = p.channels / p.heads;
    let kc = p.kv_heads * hs;
    let group = p.heads / p.kv_heads;
    let d = i % hs;
    let t = (i / hs) % p.seq;
    let h = (i / (hs * p.seq)) % p.heads;
    let b = i / (hs * p.seq * p.heads);
    let row = (b * p.seq + t) * (p.channels + 2u * kc);
    return QkvAt(row + h * hs + d, row + p.channels + (h / group) * hs + d, h % group == 0u);
}

// The distance between head h's and head h + 1's elements in a (B, NH, T, hs) tensor.
fn head_stride() -> u32 {
    return p.seq * (p.channels / p.heads);
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
    let at = qkv_at(i);
    let kc = p.kv_heads * (p.channels / p.heads);
    sq_q[i] = sq_qkv[at.q];
    sq_k[i] = sq_qkv[at.k];
    sq_v[i] = sq_qkv[at.k + kc];
}

@group(0) @binding(1) var<storage, read> sp_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sp_xh: array<f32>;

@compute @workgroup_size(64)
fn split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.batch * p.seq * p.channels) { return; }
    sp_xh[i] = sp_x[packed_offset(i)];
}

@group(0) @binding(1) var<storage, read> mg_xh: array<f32>;
@group(0) @binding(2) var<storage, read_write> mg_x: array<f32>;

@compute @workgroup_size(64)
fn merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.batch * p.seq * p.channels) { return; }
    mg_x[packed_offset(i)] = mg_xh[i];
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
    let at = qkv_at(i);
    mq_dqkv[at.q] = mq_dq[i];
    if (at.first) {
        let kc = p.kv_heads * (p.channels / p.heads);
        var dk = mq_dk[i];
        var dv = mq_dv[i];
        for (var j = 1u; j < p.heads / p.kv_heads; j++) {
            dk += mq_dk[i + j * head_stride()];
            dv += mq_dv[i + j * head_stride()];
        }
        mq_dqkv[at.k] = dk;
        mq_dqkv[at.k + kc] = dv;
    }
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
    let at = qkv_at(4u * j);
    let kc4 = p.kv_heads * (p.channels / p.heads) / 4u;
    sq4_q[j] = sq4_qkv[at.q / 4u];
    sq4_k[j] = sq4_qkv[at.k / 4u];
    sq4_v[j] = sq4_qkv[at.k / 4u + kc4];
}

@group(0) @binding(1) var<storage, read> sp4_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> sp4_xh: array<vec4<f32>>;

@compute @workgroup_size(64)
fn split4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = linear_index(wid, nwg, lid);
    if (j >= p.batch * p.seq * p.channels / 4u) { return; }
    sp4_xh[j] = sp4_x[packed_offset(4u * j) / 4u];
}

@group(0) @binding(1) var<storage, read> mg4_xh: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> mg4_x: array<vec4<f32>>;

@compute @workgroup_size(64)
fn merge4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = linear_index(wid, nwg, lid);
    if (j >= p.batch * p.seq * p.channels / 4u) { return; }
    mg4_x[packed_offset(4u * j) / 4u] = mg4_xh[j];
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
    let at = qkv_at(4u * j);
    mq4_dqkv[at.q / 4u] = mq4_dq[j];
    if (at.first) {
        let kc4 = p.kv_heads * (p.channels / p.heads) / 4u;
        let stride4 = head_stride() / 4u;
        var dk = mq4_dk[j];
        var dv = mq4_dv[j];
        for (var g = 1u; g < p.heads / p.kv_heads; g++) {
            dk += mq4_dk[j + g * stride4];
            dv += mq4_dv[j + g * stride4];
        }
        mq4_dqkv[at.k / 4u] = dk;
        mq4_dqkv[at.k / 4u + kc4] = dv;
    }
}
