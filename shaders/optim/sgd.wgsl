// SGD, SGD with heavy-ball momentum, and Nesterov momentum, as torch.optim.SGD (dampening 0):
//   g = grad·clip + weight_decay·p
//   sgd:       p −= lr·g
//   momentum:  buf = μ·buf + g;  p −= lr·buf
//   nesterov:  buf = μ·buf + g;  p −= lr·(g + μ·buf)
// buf starts at 0, so the first step gives buf = g, as torch's first step does.
// clip = min(1, max_norm / (sqrt(Σ all grads²) + 1e-6)) when max_norm > 0 (global-norm clipping).

struct Params {
    n: u32,
    lr: f32,
    momentum: f32,
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
@group(0) @binding(4) var<storage, read_write> buf: array<f32>;

const WG: u32 = 256u;

fn clip_scale() -> f32 {
    if (p.max_norm > 0.0) {
        return stats[2] * min(1.0, p.max_norm / (sqrt(stats[0]) + 1e-6));
    }
    return stats[2];
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n || stats[1] != 0.0) { return; }
    let g = grad[i] * clip_scale() + p.weight_decay * param[i];
    param[i] = param[i] - p.lr * g;
}

@compute @workgroup_size(256)
fn momentum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n || stats[1] != 0.0) { return; }
    let g = grad[i] * clip_scale() + p.weight_decay * param[i];
    let b = p.momentum * buf[i] + g;
    buf[i] = b;
    param[i] = param[i] - p.lr * b;
}

@compute @workgroup_size(256)
fn nesterov(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n || stats[1] != 0.0) { return; }
    let g = grad[i] * clip_scale() + p.weight_decay * param[i];
    let b = p.momentum * buf[i] + g;
    buf[i] = b;
    param[i] = param[i] - p.lr * (g + p.momentum * b);
}
