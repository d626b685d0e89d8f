// Deterministic reductions: a fixed two-pass tree, no atomics.
//   partials: workgroup g reduces x[g*chunk .. min((g+1)*chunk, n)) into partials[g]
//   partials4: the same over vec4s (n and chunk counted in vec4s), for sizes divisible by 4:
//             llvmpipe gathers every storage read lane by lane, so a vec4 read is 4x fewer
//   finish_segments: one workgroup reduces the partials of one or more tensors, each tensor's a
//             segment (segs: first, count), by a tree each, and adds the totals in order into
//             out[index] (= or +=)
// mode 0 = sum, 1 = sum of squares (global gradient norm), 2 = count of non-finite values,
// 3 = sum of absolute values (an entrywise ℓ1 norm).
// colsum: out[c] (+)= Σ_r x[r, c], the bias gradient.
// colsum4: the same four columns per invocation (cols a multiple of 4), in small workgroups so
//          that a few hundred columns still spread over every core; the same sums in the same
//          order as colsum, so the two agree bit for bit.
// Backward: d(sum)/dx_i = dy, d(sumsq)/dx_i = 2·x_i·dy.

struct Params {
    n: u32,         // partials: elements; finish_segments: segments; colsum: rows
    chunk: u32,     // partials: elements per workgroup; colsum: columns
    mode: u32,
    index: u32,     // finish_segments: where in out to write; partials: where its partials start
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>; // backward: (1)
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>; // partials4's view of x
@group(0) @binding(3) var<storage, read> segs: array<u32>; // finish_segments: (first, count) each

const WG: u32 = 256u;
var<workgroup> scratch: array<f32, 256>;

// One value's term: the vec4 form's first lane (the same operations).
fn term(v: f32) -> f32 {
    return term4(vec4<f32>(v)).x;
}

fn tree(v: f32, lid: u32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { scratch[lid] = scratch[lid] + scratch[lid + s]; }
        workgroupBarrier();
    }
    return scratch[0];
}

@compute @workgroup_size(256)
fn partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid3: vec3<u32>) {
    let g = wid.y * nwg.x + wid.x;
    let lid = lid3.x;
    let start = g * p.chunk;
    let end = min(start + p.chunk, p.n);
    var s = 0.0;
    for (var i = start + lid; i < end; i += WG) { s += term(x[i]); }
    let total = tree(s, lid);
    if (lid == 0u) { out[p.index + g] = total; }
}

fn term4(v: vec4<f32>) -> vec4<f32> {
    switch p.mode {
        case 1u: { return v * v; }
        case 2u: {
            // exponent bits all ones: Inf or NaN (x != x may be optimised away)
            let inf = vec4<u32>(0x7f800000u);
            return select(vec4<f32>(0.0), vec4<f32>(1.0), (bitcast<vec4<u32>>(v) & inf) == inf);
        }
        case 3u: { return abs(v); }
        default: { return v; }
    }
}

@compute @workgroup_size(256)
fn partials4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid3: vec3<u32>) {
    let g = wid.y * nwg.x + wid.x;
    let lid = lid3.x;
    let start = g * p.chunk;
    let end = min(start + p.chunk, p.n);
    var s = vec4<f32>(0.0);
    for (var i = start + lid; i < end; i += WG) { s += term4(x4[i]); }
    let total = tree((s.x + s.y) + (s.z + s.w), lid);
    if (lid == 0u) { out[p.index + g] = total; }
}

// p.n segments of x: out[index] = t0 + t1 + ... (or out[index] + t0 + ...), added in that
// order, t_s the tree over segment s (each lane's strided sum, then the workgroup tree): the
// same bits as finishing each segment alone in turn, the first with p.accumulate.
@compute @workgroup_size(256)
fn finish_segments(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    var acc = 0.0;
    if (p.accumulate == 1u) { acc = out[p.index]; }
    for (var seg = 0u; seg < p.n; seg++) {
        let first = segs[2u * seg];
        let count = segs[2u * seg + 1u];
        var s = 0.0;
        for (var i = lid; i < count; i += WG) { s += x[first + i]; }
        let total = tree(s, lid);
        if (seg == 0u && p.accumulate == 0u) { acc = total; } else { acc = acc + total; }
        // every lane has read scratch[0] before the next segment's tree writes it
        workgroupBarrier();
    }
    if (lid == 0u) { out[p.index] = acc; }
}

@compute @workgroup_size(256)
fn colsum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let cols = p.chunk;
    if (c >= cols) { return; }
    var s = 0.0;
    for (var r = 0u; r < p.n; r++) { s += x[r * cols + c]; }
    if (p.accumulate == 1u) { s += out[c]; }
    out[c] = s;
}

@group(0) @binding(2) var<storage, read_write> out4: array<vec4<f32>>; // colsum4's view of out

@compute @workgroup_size(16)
fn colsum4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let cols4 = p.chunk / 4u;
    if (c >= cols4) { return; }
    var s = vec4<f32>(0.0);
    for (var r = 0u; r < p.n; r++) { s += x4[r * cols4 + c]; }
    if (p.accumulate == 1u) { s += out4[c]; }
    out4[c] = s;
}

// dx = dy (mode 0) or 2·x·dy (mode 1), over n elements.
@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.n) { return; }
    if (p.mode == 1u) {
        out[i] = 2.0 * x[i] * dy[0];
    } else {
        out[i] = dy[0];
    }
}
