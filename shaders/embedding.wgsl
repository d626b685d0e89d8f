// Row lookup (token and position embeddings) and its backward, without float atomics.
//   forward:  out[r, c] = table[idx[r], c]
//   backward: dtable[v, c] (+)= Σ_{r : idx[r] = v} dout[r, c]
// The backward reads a CSR inverse of idx built on the host with the batch (offsets (V+1), rows (R),
// rows ascending within a bucket), so each dtable element is one invocation summing its own rows
// in a fixed order: deterministic, and no atomics.

struct Params {
    rows: u32,   // R
    cols: u32,   // C
    vocab: u32,  // V
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward
@group(0) @binding(1) var<storage, read> idx: array<u32>;          // (R)
@group(0) @binding(2) var<storage, read> table: array<f32>;        // (V, C)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;    // (R, C)

// backward
@group(0) @binding(1) var<storage, read> dout: array<f32>;         // (R, C)
@group(0) @binding(2) var<storage, read> offsets: array<u32>;      // (V + 1)
@group(0) @binding(3) var<storage, read> bucket_rows: array<u32>;  // (R)
@group(0) @binding(4) var<storage, read_write> dtable: array<f32>; // (V, C)

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    let v = idx[r];
    // Out-of-range indices are refused on the host; this guard keeps reads in bounds regardless.
    out[i] = select(0.0, table[v * p.cols + c], v < p.vocab);
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.vocab * p.cols) { return; }
    let v = i / p.cols;
    let c = i % p.cols;
    var s = 0.0;
    for (var j = offsets[v]; j < offsets[v + 1u]; j++) {
        s += dout[bucket_rows[j] * p.cols + c];
    }
    if (p.accumulate == 1u) {
        s += dtable[i];
    }
    dtable[i] = s;
}
