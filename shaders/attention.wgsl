// Causal multi-head self-attention, forward and backward, in GPT-2's packed layout:
//   qkv (B, T, 3C) holds q | k | v; head h owns columns h*hs .. (h+1)*hs of each, hs = C / NH.
//   att (B, NH, T, T) = softmax_t2(scale · q_t · k_t2) over t2 ≤ t (0 above the diagonal)
//   out (B, T, C): out[b, t, h*hs + d] = Σ_t2 att[b, h, t, t2] · v[b, t2, h*hs + d]
// scale = 1/sqrt(hs). Backward, with dpre = att ⊙ (datt − Σ_t2 att·datt), datt[t,t2] = dout_t·v_t2:
//   dq_t = scale Σ_{t2≤t} dpre[t,t2] k_t2;  dk_t = scale Σ_{t'≥t} dpre[t',t] q_t';
//   dv_t = Σ_{t'≥t} att[t',t] dout_t'.
// Every output element is owned by one invocation that sums in a fixed order: no atomics,
// deterministic.

struct Params {
    batch: u32,
    seq: u32,     // T
    channels: u32, // C
    heads: u32,   // NH
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward: scores
@group(0) @binding(1) var<storage, read> qkv: array<f32>;           // (B, T, 3C)
@group(0) @binding(2) var<storage, read_write> att: array<f32>;     // (B, NH, T, T)
// forward: values
@group(0) @binding(2) var<storage, read> att_in: array<f32>;        // (B, NH, T, T)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;     // (B, T, C)

// backward
@group(0) @binding(1) var<storage, read> dout: array<f32>;          // (B, T, C)
@group(0) @binding(2) var<storage, read> bqkv: array<f32>;          // (B, T, 3C)
@group(0) @binding(3) var<storage, read> batt: array<f32>;          // (B, NH, T, T)
@group(0) @binding(4) var<storage, read_write> dpre: array<f32>;    // (B, NH, T, T)
@group(0) @binding(4) var<storage, read> dpre_in: array<f32>;       // (B, NH, T, T)
@group(0) @binding(5) var<storage, read_write> dqkv: array<f32>;    // (B, T, 3C)

const WG: u32 = 64u;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// One invocation per (b, h, t) row of att.
@compute @workgroup_size(64)
fn forward_scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.batch * p.heads * p.seq) { return; }
    let t = i % p.seq;
    let h = (i / p.seq) % p.heads;
    let b = i / (p.seq * p.heads);
    let hs = p.channels / p.heads;
    let c3 = 3u * p.channels;
    let q = (b * p.seq + t) * c3 + h * hs;
    let row = i * p.seq;

    var m = -3.402823e38;
    for (var t2 = 0u; t2 <= t; t2++) {
        let k = (b * p.seq + t2) * c3 + p.channels + h * hs;
        var s = 0.0;
        for (var d = 0u; d < hs; d++) { s += qkv[q + d] * qkv[k + d]; }
        s *= p.scale;
        att[row + t2] = s;
        m = max(m, s);
    }
    var z = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) {
        let e = exp(att[row + t2] - m);
        att[row + t2] = e;
        z += e;
    }
    let inv = 1.0 / z;
    for (var t2 = 0u; t2 < p.seq; t2++) {
        att[row + t2] = select(0.0, att[row + t2] * inv, t2 <= t);
    }
}

// One invocation per element of out (B, T, C).
@compute @workgroup_size(64)
fn forward_values(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.batch * p.seq * p.channels) { return; }
    let col = i % p.channels;
    let t = (i / p.channels) % p.seq;
    let b = i / (p.channels * p.seq);
    let hs = p.channels / p.heads;
    let h = col / hs;
    let c3 = 3u * p.channels;
    let row = ((b * p.heads + h) * p.seq + t) * p.seq;
    var s = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) {
        s += att_in[row + t2] * qkv[(b * p.seq + t2) * c3 + 2u * p.channels + col];
    }
    out[i] = s;
}

// One invocation per (b, h, t) row: dpre = att ⊙ (datt − Σ att·datt).
@compute @workgroup_size(64)
fn backward_scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.batch * p.heads * p.seq) { return; }
    let t = i % p.seq;
    let h = (i / p.seq) % p.heads;
    let b = i / (p.seq * p.heads);
    let hs = p.channels / p.heads;
    let c3 = 3u * p.channels;
    let o = (b * p.seq + t) * p.channels + h * hs;
    let row = i * p.seq;

    var dot = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) {
        let v = (b * p.seq + t2) * c3 + 2u * p.channels + h * hs;
        var s = 0.0;
        for (var d = 0u; d < hs; d++) { s += dout[o + d] * bqkv[v + d]; }
        dpre[row + t2] = s;
        dot += batt[row + t2] * s;
    }
    for (var t2 = 0u; t2 < p.seq; t2++) {
        dpre[row + t2] = select(0.0, batt[row + t2] * (dpre[row + t2] - dot), t2 <= t);
    }
}

// One invocation per element of dqkv (B, T, 3C).
@compute @workgroup_size(64)
fn backward_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    let c3 = 3u * p.channels;
    if (i >= p.batch * p.seq * c3) { return; }
    let j = i % c3;
    let t = (i / c3) % p.seq;
    let b = i / (c3 * p.seq);
    let part = j / p.channels;      // 0 = q, 1 = k, 2 = v
    let col = j % p.channels;
    let hs = p.channels / p.heads;
    let h = col / hs;
    let rows = (b * p.heads + h) * p.seq; // first att row of (b, h)
    var s = 0.0;
    if (part == 0u) {
        for (var t2 = 0u; t2 <= t; t2++) {
            s += dpre_in[(rows + t) * p.seq + t2] * bqkv[(b * p.seq + t2) * c3 + p.channels + col];
        }
        s *= p.scale;
    } else if (part == 1u) {
        for (var t1 = t; t1 < p.seq; t1++) {
            s += dpre_in[(rows + t1) * p.seq + t] * bqkv[(b * p.seq + t1) * c3 + col];
        }
        s *= p.scale;
    } else {
        for (var t1 = t; t1 < p.seq; t1++) {
            s += batt[(rows + t1) * p.seq + t] * dout[(b * p.seq + t1) * p.channels + col];
        }
    }
    dqkv[i] = s;
}
