// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"):
//   c = β1·m + (1−β1)·g;   p −= lr·(sign(c) + λ·p);   m = β2·m + (1−β2)·g
// sign(0) = 0. g = grad·clip (global-norm clipping as in sgd.wgsl).

struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    weight_decay: f32,
    max_norm: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
// stats (shaders/guard.wgsl): [0] the squared global gradient norm (unscaled), [1] nonzero when
// the step guard skips this step (a skipped step changes nothing), [2] the factor that unscales
// the gradients (1/loss scale; 1 without a scaler), [3] the optimizer steps taken before this one.
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.n || stats[1] != 0.0) { return; }
    var clip = stats[2];
    if (p.max_norm > 0.0) { clip *= min(1.0, p.max_norm / (sqrt(stats[0]) + 1e-6)); }
    let g = grad[i] * clip;
    let c = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let x = param[i];
    param[i] = x - p.lr * (sign(c) + p.weight_decay * x);
    m[i] = p.beta2 * m[i] + (1.0 - p.beta2) * g;
}
