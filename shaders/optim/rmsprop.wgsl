// RMSProp as torch.optim.RMSprop:
//   g = grad·clip + weight_decay·p
//   sq = α·sq + (1−α)·g²
//   centered: gavg = α·gavg + (1−α)·g;  denom = sqrt(sq − gavg²) + eps;  else denom = sqrt(sq) + eps
//   momentum > 0: buf = μ·buf + g/denom;  p −= lr·buf;   else p −= lr·g/denom
// buf and gavg are bound (to one-element placeholders) even when unused.

struct Params {
    n: u32,
    lr: f32,
    alpha: f32,
    eps: f32,
    momentum: f32,
    weight_decay: f32,
    max_norm: f32,
    centered: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
// stats (shaders/guard.wgsl): [0] the squared global gradient norm (unscaled), [1] nonzero when
// the step guard skips this step (a skipped step changes nothing), [2] the factor that unscales
// the gradients (1/loss scale; 1 without a scaler), [3] the optimizer steps taken before this one.
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> sq: array<f32>;
@group(0) @binding(5) var<storage, read_write> buf: array<f32>;
@group(0) @binding(6) var<storage, read_write> gavg: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.n || stats[1] != 0.0) { return; }
    var clip = stats[2];
    if (p.max_norm > 0.0) { clip *= min(1.0, p.max_norm / (sqrt(stats[0]) + 1e-6)); }
    let g = grad[i] * clip + p.weight_decay * param[i];
    let s = p.alpha * sq[i] + (1.0 - p.alpha) * g * g;
    sq[i] = s;
    var denom: f32;
    if (p.centered == 1u) {
        let a = p.alpha * gavg[i] + (1.0 - p.alpha) * g;
        gavg[i] = a;
        denom = sqrt(s - a * a) + p.eps;
    } else {
        denom = sqrt(s) + p.eps;
    }
    if (p.momentum > 0.0) {
        let b = p.momentum * buf[i] + g / denom;
        buf[i] = b;
        param[i] = param[i] - p.lr * b;
    } else {
        param[i] = param[i] - p.lr * g / denom;
    }
}
