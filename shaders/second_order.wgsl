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
//   ff_axpy:     (hi, lo) = (x_hi + x_lo) + α·d in float-float (α = a + b), renormalised
//   ff_quad_grad: g = A (x_hi + x_lo) − (b_hi + b_lo), a compensated row sum rounded once to f32

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

// Float-float ("double-single") arithmetic: a value is an unevaluated sum hi + lo of two f32 with
// |lo| ≤ ulp(hi)/2, about 48 bits of significand. The error-free transformations below need
// IEEE round-to-nearest f32 arithmetic, nothing more (the float-float kernel test checks the
// results against f64), and they need the compiler to leave their algebra alone: llvmpipe
// compiles with reassociation allowed, and then (a − ((a + b) − a)) is "simplified" to 0, the
// very rounding error TwoSum exists to capture. `opaque` passes a value through its bits XOR a
// zero read from a storage buffer, which no compiler can see through, so each marked rounding
// happens where written.
fn opaque(x: f32, zero: u32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) ^ zero);
}

// s + e = a + b exactly (Knuth's TwoSum).
fn two_sum(a: f32, b: f32, z: u32) -> vec2<f32> {
    let s = opaque(a + b, z);
    let bb = opaque(s - a, z);
    let e = opaque(a - opaque(s - bb, z), z) + opaque(b - bb, z);
    return vec2<f32>(s, e);
}

// hi + lo = a with hi holding the upper 12 significand bits (Veltkamp's split).
fn split(a: f32, z: u32) -> vec2<f32> {
    let c = opaque(4097.0 * a, z);
    let big = opaque(c - a, z);
    let hi = opaque(c - big, z);
    return vec2<f32>(hi, opaque(a - hi, z));
}

// p + e = a · b exactly (Dekker's product; products of the 12-bit halves are exact in f32).
// Not fma(a, b, −p): a compiler may split an fma into a multiply and an add, which makes that
// error term 0.
fn two_prod(a: f32, b: f32, z: u32) -> vec2<f32> {
    let p = opaque(a * b, z);
    let x = split(a, z);
    let y = split(b, z);
    let e1 = opaque(opaque(x.x * y.x, z) - p, z);
    let e2 = opaque(e1 + opaque(x.x * y.y, z), z);
    let e3 = opaque(e2 + opaque(x.y * y.x, z), z);
    return vec2<f32>(p, e3 + opaque(x.y * y.y, z));
}

// The float-float nearest to hi + lo, given |lo| small next to |hi| (Dekker's FastTwoSum).
fn renormalise(hi: f32, lo: f32, z: u32) -> vec2<f32> {
    let s = opaque(hi + lo, z);
    return vec2<f32>(s, lo - opaque(s - hi, z));
}

@group(0) @binding(1) var<storage, read> ff_x_hi: array<f32>;
@group(0) @binding(2) var<storage, read> ff_x_lo: array<f32>;
@group(0) @binding(3) var<storage, read> ff_d: array<f32>;
@group(0) @binding(4) var<storage, read_write> ff_out_hi: array<f32>;
@group(0) @binding(5) var<storage, read_write> ff_out_lo: array<f32>;
@group(0) @binding(6) var<storage, read> ff_zero: array<u32>; // [0]

// (out_hi, out_lo) = (x_hi + x_lo) + (a + b)·d.
@compute @workgroup_size(256)
fn ff_axpy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let z = ff_zero[0];
    let prod = two_prod(p.a, ff_d[i], z);
    let prod_lo = prod.y + p.b * ff_d[i];
    let s = two_sum(ff_x_hi[i], prod.x, z);
    let r = renormalise(s.x, s.y + (ff_x_lo[i] + prod_lo), z);
    ff_out_hi[i] = r.x;
    ff_out_lo[i] = r.y;
}

@group(0) @binding(1) var<storage, read> fq_a: array<f32>;
@group(0) @binding(2) var<storage, read> fq_x_hi: array<f32>;
@group(0) @binding(3) var<storage, read> fq_x_lo: array<f32>;
@group(0) @binding(4) var<storage, read> fq_b_hi: array<f32>;
@group(0) @binding(5) var<storage, read> fq_b_lo: array<f32>;
@group(0) @binding(6) var<storage, read> fq_zero: array<u32>; // [0]
@group(0) @binding(7) var<storage, read_write> fq_g: array<f32>;

// g_i = Σ_j A_ij (x_hi_j + x_lo_j) − (b_hi_i + b_lo_i): the products A_ij·x_hi_j and their sum
// carried exactly in float-float, the small terms A_ij·x_lo_j in f32.
@compute @workgroup_size(256)
fn ff_quad_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let z = fq_zero[0];
    var hi = 0.0;
    var lo = 0.0;
    for (var j = 0u; j < p.n; j++) {
        let aij = fq_a[i * p.n + j];
        let prod = two_prod(aij, fq_x_hi[j], z);
        let s = two_sum(hi, prod.x, z);
        hi = s.x;
        lo += s.y + prod.y + aij * fq_x_lo[j];
    }
    let s = two_sum(hi, -fq_b_hi[i], z);
    fq_g[i] = s.x + (lo + s.y - fq_b_lo[i]);
}
