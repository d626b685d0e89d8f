// Kernels of the full-batch objectives and quasi-Newton updates (src/second_order/).
//   rosen_terms: t_i = 100 (x_{i+1} − x_i²)² + (1 − x_i)²       (n − 1 terms, chained Rosenbrock)
//   rosen_grad:  g_i = −400 x_i (x_{i+1} − x_i²) − 2 (1 − x_i) [i < n−1] + 200 (x_i − x_{i−1}²) [i > 0]
//   rosen_hess:  H (n, n), tridiagonal: H_ii = 1200 x_i² − 400 x_{i+1} + 2 [i < n−1] + 200 [i > 0],
//                H_{i,i+1} = H_{i+1,i} = −400 x_i
//   logistic:    per sample, from z = Xw: loss = softplus(z) − y z (stable), r = (σ(z) − y)/N,
//                h = σ(z)(1 − σ(z))/N
//   scale_rows:  out[i, j] = x[i, j] · s[i]
//   add_diag:    H[i, i] += alpha for i ≥ first
//   rank2:       C += a·u uᵀ + b·(u vᵀ + v uᵀ) + c·v vᵀ   (SR1, DFP and BFGS in inverse form)
//   mul:         out = x ⊙ y

struct Params {
    n: u32,       // elements, rows or the matrix order
    cols: u32,
    first: u32,
    a: f32,
    b: f32,
    c: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// logistic's extra outputs
@group(0) @binding(4) var<storage, read_write> out2: array<f32>;
@group(0) @binding(5) var<storage, read_write> out3: array<f32>;

const WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = x[i] * y[i]; }
}

@compute @workgroup_size(256)
fn rosen_terms(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i + 1u >= p.n) { return; }
    let d = x[i + 1u] - x[i] * x[i];
    let e = 1.0 - x[i];
    out[i] = 100.0 * d * d + e * e;
}

@compute @workgroup_size(256)
fn rosen_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    var g = 0.0;
    if (i + 1u < p.n) {
        g += -400.0 * x[i] * (x[i + 1u] - x[i] * x[i]) - 2.0 * (1.0 - x[i]);
    }
    if (i > 0u) {
        g += 200.0 * (x[i] - x[i - 1u] * x[i - 1u]);
    }
    out[i] = g;
}

@compute @workgroup_size(256)
fn rosen_hess(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = index(wid, nwg, lid);
    if (e >= p.n * p.n) { return; }
    let i = e / p.n;
    let j = e % p.n;
    var h = 0.0;
    if (i == j) {
        if (i + 1u < p.n) { h += 1200.0 * x[i] * x[i] - 400.0 * x[i + 1u] + 2.0; }
        if (i > 0u) { h += 200.0; }
    } else if (j == i + 1u) {
        h = -400.0 * x[i];
    } else if (i == j + 1u) {
        h = -400.0 * x[j];
    }
    out[e] = h;
}

// x = z (N), y = labels (N); out = loss, out2 = r, out3 = h
@compute @workgroup_size(256)
fn logistic(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let z = x[i];
    // softplus(z) = max(z, 0) + log(1 + exp(−|z|))
    let softplus = max(z, 0.0) + log(1.0 + exp(-abs(z)));
    out[i] = softplus - y[i] * z;
    let s = select(exp(z) / (1.0 + exp(z)), 1.0 / (1.0 + exp(-z)), z >= 0.0);
    let inv_n = 1.0 / f32(p.n);
    out2[i] = (s - y[i]) * inv_n;
    out3[i] = s * (1.0 - s) * inv_n;
}

// x (n rows, cols), y = s (n); out (n, cols)
@compute @workgroup_size(256)
fn scale_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = index(wid, nwg, lid);
    if (e >= p.n * p.cols) { return; }
    out[e] = x[e] * y[e / p.cols];
}

// out = H (n, n) in place
@compute @workgroup_size(256)
fn add_diag(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n || i < p.first) { return; }
    out[i * p.n + i] = out[i * p.n + i] + p.a;
}

// x = u (n), y = v (n), out = C (n, n) in place
@compute @workgroup_size(256)
fn rank2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = index(wid, nwg, lid);
    if (e >= p.n * p.n) { return; }
    let i = e / p.n;
    let j = e % p.n;
    out[e] = out[e] + p.a * x[i] * x[j] + p.b * (x[i] * y[j] + y[i] * x[j]) + p.c * y[i] * y[j];
}
