// Inverted dropout with a counter-based mask: out[i] = x[i]·scale where hash(i, seed) ≥
// threshold, else 0, with threshold = p·2³² and scale = 1/(1 − p). The mask is a pure function
// of (seed, i), so the backward (the same kernel on the gradient, with the same seed) and any
// recomputation see the same mask, and a run is deterministic given its seed.
// The linear index folds a 2-D grid of workgroups (see Gpu::groups_1d).

struct Params {
    n: u32,
    seed: u32,
    threshold: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

// A 32-bit integer mixer (lowbias32, C. Wellons): every input bit flips each output bit with
// probability close to 1/2.
fn mix(v: u32) -> u32 {
    var h = v;
    h = h ^ (h >> 16u);
    h = h * 0x7feb352du;
    h = h ^ (h >> 15u);
    h = h * 0x846ca68bu;
    h = h ^ (h >> 16u);
    return h;
}

@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.n) { return; }
    let keep = mix(i ^ mix(p.seed)) >= p.threshold;
    out[i] = select(0.0, x[i] * p.scale, keep);
}
