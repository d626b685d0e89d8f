// 8-bit Adam as bitsandbytes does it (Dettmers et al., "8-bit Optimizers via Block-wise
// Quantization"): both moments are stored as 8-bit codes, four to a u32, with one f32 absmax per
// block of 256 values; m uses the signed dynamic quantization map and v the unsigned one
// (bitsandbytes' create_dynamic_map, built on the host: src/optim/quant_map.rs).
// One workgroup per block: dequantize (code → map value · old absmax), the Adam/AdamW update as in
// adam.wgsl, the block's new absmax (a fixed tree), then requantize to the nearest map value
// (ties to the lower code) and pack four codes per word.

struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    max_norm: f32,
    decoupled: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
// stats (shaders/guard.wgsl): [0] the squared global gradient norm (unscaled), [1] nonzero when
// the step guard skips this step (a skipped step changes nothing), [2] the factor that unscales
// the gradients (1/loss scale; 1 without a scaler), [3] the optimizer steps taken before this one.
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> qmap: array<f32>;            // (512): signed | unsigned, each sorted
@group(0) @binding(4) var<storage, read_write> param: array<f32>;
@group(0) @binding(5) var<storage, read_write> m_codes: array<u32>;   // (ceil(n/4))
@group(0) @binding(6) var<storage, read_write> v_codes: array<u32>;   // (ceil(n/4))
@group(0) @binding(7) var<storage, read_write> absmax: array<f32>;    // (2·blocks): m, v per block
// bias corrections by steps taken, as in adam.wgsl
@group(0) @binding(8) var<storage, read> bias_corrections: array<vec2<f32>>;

fn bias_correction() -> vec2<f32> {
    let t = u32(stats[3]) + 1u; // the step being taken
    return bias_corrections[min(t, arrayLength(&bias_corrections)) - 1u];
}

const BLOCK: u32 = 256u;
var<workgroup> red_m: array<f32, 256>;
var<workgroup> red_v: array<f32, 256>;
var<workgroup> codes_m: array<u32, 256>;
var<workgroup> codes_v: array<u32, 256>;
var<workgroup> skip: f32;

fn code_of(words_value: u32, i: u32) -> u32 {
    return (words_value >> ((i % 4u) * 8u)) & 0xffu;
}

// Index of the map value nearest to x within qmap[base .. base + 256), ties to the lower index.
fn nearest(x: f32, base: u32) -> u32 {
    if (x <= qmap[base]) { return 0u; }
    if (x >= qmap[base + 255u]) { return 255u; }
    var lo = 0u;
    var hi = 255u;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (qmap[base + mid] <= x) { lo = mid; } else { hi = mid; }
    }
    return select(lo, hi, qmap[base + hi] - x < x - qmap[base + lo]);
}

@compute @workgroup_size(256)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid3: vec3<u32>) {
    let block = wid.y * nwg.x + wid.x;
    let lid = lid3.x;
    // the skip word, uniform across the workgroup so the barriers below stay in uniform flow
    if (lid == 0u) { skip = stats[1]; }
    if (workgroupUniformLoad(&skip) != 0.0) { return; }
    let i = block * BLOCK + lid;
    var mi = 0.0;
    var vi = 0.0;
    if (i < p.n) {
        var clip = stats[2];
        if (p.max_norm > 0.0) { clip *= min(1.0, p.max_norm / (sqrt(stats[0]) + 1e-6)); }
        let x = param[i];
        var g = grad[i] * clip;
        if (p.decoupled == 0u) { g += p.weight_decay * x; }
        let m_old = qmap[code_of(m_codes[i / 4u], i)] * absmax[2u * block];
        let v_old = qmap[256u + code_of(v_codes[i / 4u], i)] * absmax[2u * block + 1u];
        mi = p.beta1 * m_old + (1.0 - p.beta1) * g;
        vi = p.beta2 * v_old + (1.0 - p.beta2) * g * g;
        let bc = bias_correction();
        var update = (mi / bc.x) / (sqrt(vi / bc.y) + p.eps);
        if (p.decoupled == 1u) { update += p.weight_decay * x; }
        param[i] = x - p.lr * update;
    }
    red_m[lid] = abs(mi);
    red_v[lid] = vi;
    workgroupBarrier();
    for (var s = BLOCK / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red_m[lid] = max(red_m[lid], red_m[lid + s]);
            red_v[lid] = max(red_v[lid], red_v[lid + s]);
        }
        workgroupBarrier();
    }
    let am = red_m[0];
    let av = red_v[0];
    codes_m[lid] = nearest(select(0.0, mi / am, am > 0.0), 0u);
    codes_v[lid] = nearest(select(0.0, vi / av, av > 0.0), 256u);
    workgroupBarrier();
    if (lid % 4u == 0u && i < p.n) {
        m_codes[i / 4u] = codes_m[lid] | (codes_m[lid + 1u] << 8u) | (codes_m[lid + 2u] << 16u) | (codes_m[lid + 3u] << 24u);
        v_codes[i / 4u] = codes_v[lid] | (codes_v[lid + 1u] << 8u) | (codes_v[lid + 2u] << 16u) | (codes_v[lid + 3u] << 24u);
    }
    if (lid == 0u) {
        absmax[2u * block] = am;
        absmax[2u * block + 1u] = av;
    }
}
