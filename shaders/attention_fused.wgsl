// Fused causal self-attention (src/ops/attention.rs: attention_fused_forward/backward), on the
// packed qkv (B, T, C + 2·KC) as attention.wgsl reads it (query head h at columns h·hs, its
// key/value head g = h / (NH / KH) at C + g·hs and C + KC + g·hs), FlashAttention's scheme in
// one invocation per row: the (B, NH, T, T) scores are never stored.
//   forward:   per (b, h, t): an online softmax over keys t2 ≤ t (running max, rescaled sum
//              and output), y (B, T, C) and the row's log-sum-exp lse (B, NH, T)
//   delta:     per (b, h, t): D = Σ_d dy·y (the softmax backward's row term)
//   dq:        per (b, h, t): dq = scale · Σ_{t2 ≤ t} p·(dy·v_t2 − D)·k_t2, p = exp(s − lse)
//   dkv:       per (b, g, t2): over the group's query heads h and rows t ≥ t2,
//              dv = Σ p·dy_t, dk = scale · Σ p·(dy_t·v_t2 − D)·q_t
// Scores are recomputed from q and k in every pass; each output is one invocation's sum in a
// fixed order (no atomics): deterministic.

struct Params {
    batch: u32,
    seq: u32,      // T
    channels: u32, // C
    heads: u32,    // NH
    scale: f32,
    kv_heads: u32, // KH
}

const MAX_HS: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 64u + lid.x;
}

// Row i of a (B, NH, T) grid: (b, h, t).
fn row_of(i: u32) -> vec3<u32> {
    return vec3<u32>(i / (p.seq * p.heads), (i / p.seq) % p.heads, i % p.seq);
}

fn hs() -> u32 {
    return p.channels / p.heads;
}

fn width() -> u32 {
    return p.channels + 2u * p.kv_heads * hs();
}

// Offsets in qkv of row (b, t): its query head h, and key and value head g.
fn q_at(b: u32, t: u32, h: u32) -> u32 {
    return (b * p.seq + t) * width() + h * hs();
}

fn k_at(b: u32, t: u32, g: u32) -> u32 {
    return (b * p.seq + t) * width() + p.channels + g * hs();
}

fn v_at(b: u32, t: u32, g: u32) -> u32 {
    return k_at(b, t, g) + p.kv_heads * hs();
}

// Offset in a (B, T, C) tensor of row (b, t), head h.
fn y_at(b: u32, t: u32, h: u32) -> u32 {
    return (b * p.seq + t) * p.channels + h * hs();
}

@group(0) @binding(1) var<storage, read> f_qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_lse: array<f32>; // (B, NH, T)

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.batch * p.heads * p.seq) { return; }
    let row = row_of(i);
    let b = row.x;
    let h = row.y;
    let t = row.z;
    let g = h / (p.heads / p.kv_heads);
    let n = hs();
    let qo = q_at(b, t, h);
    var acc: array<f32, MAX_HS>;
    for (var d = 0u; d < n; d++) {
        acc[d] = 0.0;
    }
    var m = -3.402823e38;
    var z = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) {
        let ko = k_at(b, t2, g);
        var s = 0.0;
        for (var d = 0u; d < n; d++) {
            s += f_qkv[qo + d] * f_qkv[ko + d];
        }
        s *= p.scale;
        let m_new = max(m, s);
        let c = exp(m - m_new);
        let e = exp(s - m_new);
        z = z * c + e;
        let vo = v_at(b, t2, g);
        for (var d = 0u; d < n; d++) {
            acc[d] = acc[d] * c + e * f_qkv[vo + d];
        }
        m = m_new;
    }
    let inv = 1.0 / z;
    let yo = y_at(b, t, h);
    for (var d = 0u; d < n; d++) {
        f_y[yo + d] = acc[d] * inv;
    }
    f_lse[i] = m + log(z);
}

@group(0) @binding(1) var<storage, read> dl_dy: array<f32>;
@group(0) @binding(2) var<storage, read> dl_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> dl_delta: array<f32>; // (B, NH, T)

@compute @workgroup_size(64)
fn delta(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.batch * p.heads * p.seq) { return; }
    let row = row_of(i);
    let b = row.x;
    let h = row.y;
    let t = row.z;
    let o = y_at(b, t, h);
    var s = 0.0;
    for (var d = 0u; d < hs(); d++) {
        s += dl_dy[o + d] * dl_y[o + d];
    }
    dl_delta[i] = s;
}

@group(0) @binding(1) var<storage, read> b_qkv: array<f32>;
@group(0) @binding(2) var<storage, read> b_dy: array<f32>;    // (B, T, C)
@group(0) @binding(3) var<storage, read> b_lse: array<f32>;   // (B, NH, T)
@group(0) @binding(4) var<storage, read> b_delta: array<f32>; // (B, NH, T)
@group(0) @binding(5) var<storage, read_write> b_dqkv: array<f32>;

// The probability p[t, t2] of row (b, h, t) and its score's gradient ds = p·(dy_t·v_t2 − D).
fn p_ds(b: u32, h: u32, g: u32, t: u32, t2: u32) -> vec2<f32> {
    let n = hs();
    let qo = q_at(b, t, h);
    let ko = k_at(b, t2, g);
    let vo = v_at(b, t2, g);
    let yo = y_at(b, t, h);
    var s = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < n; d++) {
        s += b_qkv[qo + d] * b_qkv[ko + d];
        dp += b_dy[yo + d] * b_qkv[vo + d];
    }
    let r = (b * p.heads + h) * p.seq + t;
    let pr = exp(p.scale * s - b_lse[r]);
    return vec2<f32>(pr, pr * (dp - b_delta[r]));
}

@compute @workgroup_size(64)
fn dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
      @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.batch * p.heads * p.seq) { return; }
    let row = row_of(i);
    let b = row.x;
    let h = row.y;
    let t = row.z;
    let g = h / (p.heads / p.kv_heads);
    let n = hs();
    var acc: array<f32, MAX_HS>;
    for (var d = 0u; d < n; d++) {
        acc[d] = 0.0;
    }
    for (var t2 = 0u; t2 <= t; t2++) {
        let ds = p_ds(b, h, g, t, t2).y;
        let ko = k_at(b, t2, g);
        for (var d = 0u; d < n; d++) {
            acc[d] += ds * b_qkv[ko + d];
        }
    }
    let qo = q_at(b, t, h);
    for (var d = 0u; d < n; d++) {
        b_dqkv[qo + d] = p.scale * acc[d];
    }
}

@compute @workgroup_size(64)
fn dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.batch * p.kv_heads * p.seq) { return; }
    let t2 = i % p.seq;
    let g = (i / p.seq) % p.kv_heads;
    let b = i / (p.seq * p.kv_heads);
    let n = hs();
    let group = p.heads / p.kv_heads;
    var dk: array<f32, MAX_HS>;
    var dv: array<f32, MAX_HS>;
    for (var d = 0u; d < n; d++) {
        dk[d] = 0.0;
        dv[d] = 0.0;
    }
    for (var j = 0u; j < group; j++) {
        let h = g * group + j;
        for (var t = t2; t < p.seq; t++) {
            let pd = p_ds(b, h, g, t, t2);
            let qo = q_at(b, t, h);
            let yo = y_at(b, t, h);
            for (var d = 0u; d < n; d++) {
                dv[d] += pd.x * b_dy[yo + d];
                dk[d] += pd.y * b_qkv[qo + d];
            }
        }
    }
    let ko = k_at(b, t2, g);
    let vo = v_at(b, t2, g);
    for (var d = 0u; d < n; d++) {
        b_dqkv[ko + d] = p.scale * dk[d];
        b_dqkv[vo + d] = dv[d];
    }
}
