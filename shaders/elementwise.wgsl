// Elementwise kernels over n values, with their backward passes.
// Each comes twice: `name4` takes elements 0 .. 4·(n/4) four at a time (vec4 reads cost a quarter
// of the per-lane memory loops of scalar ones on llvmpipe), `name` one per invocation from
// `first` on (the tail, or everything). The two do the same operations per element, so the
// results are the same bits. The linear index folds a 2-D grid of workgroups so that more than
// 65535 workgroups' worth of elements work (see Gpu::groups_1d).

struct Params {
    n: u32,
    alpha: f32,
    first: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return p.first + (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// out = x + y
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = x[i] + y[i]; }
}

// out = alpha * x   (y is not read). Also the backward of itself: dx = alpha * dout.
@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = p.alpha * x[i]; }
}

// out += alpha * x   (y is not read): gradient accumulation, the backward of add.
@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = out[i] + p.alpha * x[i]; }
}

// out = max(x, 0)
@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = max(x[i], 0.0); }
}

// out = sign(x): −1, 0 or 1 (y is not read). The Kashin decomposition's sign maps.
@compute @workgroup_size(256)
fn sign_map(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = sign(x[i]); }
}

// dx = dout * [x > 0]      (x = forward input, y = dout)
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = select(0.0, y[i], x[i] > 0.0); }
}

// GELU, tanh approximation as GPT-2: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
const GELU_S: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;

// tanh through exp of a negative argument: no overflow for large |u|.
fn tanh_stable(u: f32) -> f32 {
    let e = exp(-2.0 * abs(u));
    return sign(u) * (1.0 - e) / (1.0 + e);
}

fn tanh_stable4(u: vec4<f32>) -> vec4<f32> {
    let e = exp(-2.0 * abs(u));
    return sign(u) * (1.0 - e) / (1.0 + e);
}

@compute @workgroup_size(256)
fn gelu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let v = x[i];
        out[i] = 0.5 * v * (1.0 + tanh_stable(GELU_S * (v + GELU_C * v * v * v)));
    }
}

// dx = dout * gelu'(x)     (x = forward input, y = dout)
@compute @workgroup_size(256)
fn gelu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let v = x[i];
        let u = GELU_S * (v + GELU_C * v * v * v);
        let t = tanh_stable(u);
        let du = GELU_S * (1.0 + 3.0 * GELU_C * v * v);
        out[i] = y[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
    }
}

// out = x · y: SwiGLU's products (the backward's dout·up)
@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = x[i] * y[i]; }
}

// out = silu(x) · y, silu(x) = x·sigmoid(x): SwiGLU's forward (x the gate, y the up
// projection) and its up-projection gradient (y = dout)
@compute @workgroup_size(256)
fn silu_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let v = x[i];
        out[i] = v / (1.0 + exp(-v)) * y[i];
    }
}

// out = y · silu'(x), silu'(x) = s·(1 + x·(1 − s)) with s = sigmoid(x): the gate's gradient
// (x = the gate, y = dout·up)
@compute @workgroup_size(256)
fn silu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let v = x[i];
        let s = 1.0 / (1.0 + exp(-v));
        out[i] = y[i] * (s * (1.0 + v * (1.0 - s)));
    }
}

// ---- four elements per invocation ----

@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> y4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;

fn index4(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(256)
fn add4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) { out4[i] = x4[i] + y4[i]; }
}

@compute @workgroup_size(256)
fn scale4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) { out4[i] = p.alpha * x4[i]; }
}

@compute @workgroup_size(256)
fn accumulate4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) { out4[i] = out4[i] + p.alpha * x4[i]; }
}

@compute @workgroup_size(256)
fn relu_forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) { out4[i] = max(x4[i], vec4<f32>(0.0)); }
}

@compute @workgroup_size(256)
fn sign_map4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) { out4[i] = sign(x4[i]); }
}

@compute @workgroup_size(256)
fn relu_backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) { out4[i] = select(vec4<f32>(0.0), y4[i], x4[i] > vec4<f32>(0.0)); }
}

@compute @workgroup_size(256)
fn gelu_forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) {
        let v = x4[i];
        out4[i] = 0.5 * v * (1.0 + tanh_stable4(GELU_S * (v + GELU_C * v * v * v)));
    }
}

@compute @workgroup_size(256)
fn gelu_backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) {
        let v = x4[i];
        let u = GELU_S * (v + GELU_C * v * v * v);
        let t = tanh_stable4(u);
        let du = GELU_S * (1.0 + 3.0 * GELU_C * v * v);
        out4[i] = y4[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
    }
}

@compute @workgroup_size(256)
fn mul4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) { out4[i] = x4[i] * y4[i]; }
}

@compute @workgroup_size(256)
fn silu_mul4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) {
        let v = x4[i];
        out4[i] = v / (1.0 + exp(-v)) * y4[i];
    }
}

@compute @workgroup_size(256)
fn silu_backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index4(wid, nwg, lid);
    if (i < p.n / 4u) {
        let v = x4[i];
        let s = 1.0 / (1.0 + exp(-v));
        out4[i] = y4[i] * (s * (1.0 + v * (1.0 - s)));
    }
}
