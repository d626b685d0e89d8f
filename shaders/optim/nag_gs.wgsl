// NAG-GS (Leplat, Merkulov et al., "NAG-GS: Semi-Implicit, Accelerated and Robust Stochastic
// Optimizer"). Per tensor a state v (initialised to x) and a scalar γ (initialised to γ0). With
// step size α and μ > 0, using the old γ and the old x:
//   b = αμ / (αμ + γ);   v ← (1 − b)·v + b·x − (b/μ)·g;   x ← (x + α·v) / (1 + α)
// and then γ ← (γ + αμ)/(1 + α). γ's sequence does not depend on the data, so the host advances
// it and passes b. g = grad·clip (global-norm clipping as in sgd.wgsl).

struct Params {
    n: u32,
    alpha: f32,
    b: f32,
    mu: f32,
    max_norm: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
// stats (shaders/guard.wgsl): [0] the squared global gradient norm (unscaled), [1] nonzero when
// the step guard skips this step (a skipped step changes nothing), [2] the factor that unscales
// the gradients (1/loss scale; 1 without a scaler), [3] the optimizer steps taken before this one.
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.n || stats[1] != 0.0) { return; }
    var clip = stats[2];
    if (p.max_norm > 0.0) { clip *= min(1.0, p.max_norm / (sqrt(stats[0]) + 1e-6)); }
    let g = grad[i] * clip;
    let x = param[i];
    let vi = (1.0 - p.b) * v[i] + p.b * x - (p.b / p.mu) * g;
    v[i] = vi;
    param[i] = (x + p.alpha * vi) / (1.0 + p.alpha);
}
