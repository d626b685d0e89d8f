// Rotary position embeddings (Hugging Face's "rotate half" layout, as Llama uses them) on x of
// rows (B·T·H) of D, the row's position t = (row / H) % T + offset. The first `rot` dimensions of
// each row rotate in pairs (i, i + rot/2), i < rot/2, by the angle whose cos and sin are the
// tables' [t, i]; the rest pass through:
//   out[i]         = x[i]·cos − x[i + rot/2]·sin
//   out[i + rot/2] = x[i + rot/2]·cos + x[i]·sin
// `sign` −1 rotates back (the backward: dx = Rᵀ·dout). One invocation per pair or passed value.

struct Params {
    rows: u32,
    seq: u32,
    heads: u32,
    dim: u32,
    rot: u32,
    offset: u32,
    sign: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;      // (rows, D)
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;  // (positions, rot/2)
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;  // (positions, rot/2)
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (rows, D)

const WG: u32 = 64u;

// Items per row: rot/2 pairs, then the D − rot values that pass through.
@compute @workgroup_size(64)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let half_rot = p.rot / 2u;
    let per_row = half_rot + (p.dim - p.rot);
    let item = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (item >= p.rows * per_row) { return; }
    let row = item / per_row;
    let j = item % per_row;
    let base = row * p.dim;
    if (j >= half_rot) {
        let c = p.rot + (j - half_rot);
        out[base + c] = x[base + c];
        return;
    }
    let t = (row / p.heads) % p.seq + p.offset;
    let c = cos_t[t * half_rot + j];
    let s = p.sign * sin_t[t * half_rot + j];
    let a = x[base + j];
    let b = x[base + j + half_rot];
    out[base + j] = a * c - b * s;
    out[base + j + half_rot] = b * c + a * s;
}
