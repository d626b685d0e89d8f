// Attention of n new queries against a KV cache, for generation (ops::attention::cached_attention):
// query i, at position pos + i, attends to the cached keys and values 0 ..= pos + i (its own
// included: the caller appends them first). q is read in place from the packed qkv rows
// (stride q_row, head h at columns h·hs); k and v are the cache, (capacity, KH·hs) each; query
// head h reads key/value head h / (NH / KH). One invocation per (query, head) keeps a running max,
// a sum rescaled to it and the output rescaled likewise (the online softmax FlashAttention's
// forward uses): no score is stored, and each output element is a fixed-order sum.

struct Params {
    n: u32,
    pos: u32,
    heads: u32,
    kv_heads: u32,
    hs: u32,
    q_row: u32,
    scale: f32,
}

const MAX_HS: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>; // (n, NH·hs)

@compute @workgroup_size(64)
fn cached(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (i >= p.n * p.heads) { return; }
    let row = i / p.heads;
    let h = i % p.heads;
    let kc = p.kv_heads * p.hs;
    let kv = (h / (p.heads / p.kv_heads)) * p.hs;
    let qo = row * p.q_row + h * p.hs;
    var acc: array<f32, MAX_HS>;
    for (var d = 0u; d < p.hs; d++) {
        acc[d] = 0.0;
    }
    var m = -3.402823e38;
    var z = 0.0;
    for (var t = 0u; t <= p.pos + row; t++) {
        var s = 0.0;
        for (var d = 0u; d < p.hs; d++) {
            s += q[qo + d] * k[t * kc + kv + d];
        }
        s *= p.scale;
        let m_new = max(m, s);
        let c = exp(m - m_new);
        let e = exp(s - m_new);
        z = z * c + e;
        for (var d = 0u; d < p.hs; d++) {
            acc[d] = acc[d] * c + e * v[t * kc + kv + d];
        }
        m = m_new;
    }
    let inv = 1.0 / z;
    let yo = row * p.heads * p.hs + h * p.hs;
    for (var d = 0u; d < p.hs; d++) {
        y[yo + d] = acc[d] * inv;
    }
}
