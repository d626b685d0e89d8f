// Adam and AdamW (Kingma & Ba; Loshchilov & Hutter), one fused step:
//   g = grad·clip (+ weight_decay·p for Adam's L2 form, decoupled = 0)
//   m = β1·m + (1−β1)·g;   v = β2·v + (1−β2)·g²
//   p −= lr · ( (m / bc1) / (sqrt(v / bc2) + eps) (+ weight_decay·p for AdamW, decoupled = 1) )
// bc1 = 1−β1^t and bc2 = 1−β2^t: the host's f64 values for t = 1 .. L in `bias_corrections`,
// indexed by t = the steps taken before + 1 (stats[3], counted on the GPU after each update that
// was not skipped, so a skipped step leaves t as it was); past L both are 1.0 in f32. clip is global-norm clipping as in sgd.wgsl.

struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    max_norm: f32,
    decoupled: u32,
    first: u32, // `step` handles elements first .. n (the tail `step4` leaves)
    chunk_first: u32, // `step4_textures`: the vec4s chunk_first .. chunk_first + chunk_len
    chunk_len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
// stats (shaders/guard.wgsl): [0] the squared global gradient norm (unscaled), [1] nonzero when
// the step guard skips this step (a skipped step changes nothing), [2] the factor that unscales
// the gradients (1/loss scale; 1 without a scaler), [3] the optimizer steps taken before this one.
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;
// (L + 1) pairs (bc1, bc2) for t = 1 .. L, then (1, 1) for every later step
@group(0) @binding(6) var<storage, read> bias_corrections: array<vec2<f32>>;

fn bias_correction() -> vec2<f32> {
    let t = u32(stats[3]) + 1u; // the step being taken
    return bias_corrections[min(t, arrayLength(&bias_corrections)) - 1u];
}

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = p.first + (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.n || stats[1] != 0.0) { return; }
    let x = param[i];
    var g = grad[i] * clip_factor();
    if (p.decoupled == 0u) { g += p.weight_decay * x; }
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let bc = bias_correction();
    var update = (mi / bc.x) / (sqrt(vi / bc.y) + p.eps);
    if (p.decoupled == 1u) { update += p.weight_decay * x; }
    param[i] = x - p.lr * update;
}

// The same step on four elements at a time, elements 0 .. 4·(n/4): vec4 loads cost a quarter of
// the per-lane memory loops of scalar ones on llvmpipe. Each component does exactly the scalar
// step's operations, so the results are the same bits.
@group(0) @binding(1) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> v4: array<vec4<f32>>;

// One vec4 of the step: x, the raw gradient, m and v in, their new values out.
struct Step4 { x: vec4<f32>, m: vec4<f32>, v: vec4<f32> }

fn update4(x: vec4<f32>, grad: vec4<f32>, m_old: vec4<f32>, v_old: vec4<f32>, clip: f32,
           bc: vec2<f32>) -> Step4 {
    var g = grad * clip;
    if (p.decoupled == 0u) { g += p.weight_decay * x; }
    let mi = p.beta1 * m_old + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v_old + (1.0 - p.beta2) * g * g;
    var update = (mi / bc.x) / (sqrt(vi / bc.y) + p.eps);
    if (p.decoupled == 1u) { update += p.weight_decay * x; }
    return Step4(x - p.lr * update, mi, vi);
}

fn clip_factor() -> f32 {
    var clip = stats[2];
    if (p.max_norm > 0.0) { clip *= min(1.0, p.max_norm / (sqrt(stats[0]) + 1e-6)); }
    return clip;
}

@compute @workgroup_size(256)
fn step4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.n / 4u || stats[1] != 0.0) { return; }
    let r = update4(param4[i], grad4[i], m4[i], v4[i], clip_factor(), bias_correction());
    m4[i] = r.m;
    v4[i] = r.v;
    param4[i] = r.x;
}

// `step4` over one chunk of vec4s whose inputs the host copied into operand textures
// (src/gpu/texture.rs: the chunk's vec4 j at texel (j % 256, j / 256)), for CPU adapters: on
// llvmpipe a texel fetch is one call for all SIMD lanes where a storage read is a loop over
// them, and this form with its four copies takes about half the time. The same update4, so the
// same bits.
@group(0) @binding(7) var grad_t: texture_2d<f32>;
@group(0) @binding(8) var param_t: texture_2d<f32>;
@group(0) @binding(9) var m_t: texture_2d<f32>;
@group(0) @binding(10) var v_t: texture_2d<f32>;

@compute @workgroup_size(256)
fn step4_textures(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (j >= p.chunk_len || stats[1] != 0.0) { return; }
    let at = vec2<u32>(j % 256u, j / 256u);
    let r = update4(textureLoad(param_t, at, 0), textureLoad(grad_t, at, 0),
                    textureLoad(m_t, at, 0), textureLoad(v_t, at, 0), clip_factor(),
                    bias_correction());
    let i = p.chunk_first + j;
    m4[i] = r.m;
    v4[i] = r.v;
    param4[i] = r.x;
}
