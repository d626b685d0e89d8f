// The Kashin method's two per-weight kernels (src/quant/kashin.rs):
//   assign: the 2-D k-means assignment step. Point i = (pts[2i], pts[2i+1]) gets the index of
//           its nearest centroid (squared Euclidean distance in f32, the lowest index on a tie),
//           the same arithmetic as the host's assignment, so the two agree label for label.
//   decode: weight i's b-bit code (a little-endian bitstream: bits i·b .. i·b + b of the u32
//           words, a code may straddle two words) looks up its centroid: u[i] = cb[2c],
//           v[i] = cb[2c + 1].

struct Params {
    n: u32,     // points (assign) or weights (decode)
    k: u32,     // centroids
    bits: u32,  // decode: bits per code
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pts: array<f32>;       // assign: (n, 2)
@group(0) @binding(2) var<storage, read> cb: array<f32>;        // (k, 2)
@group(0) @binding(3) var<storage, read_write> labels: array<u32>; // assign: (n)

@group(0) @binding(1) var<storage, read> codes: array<u32>;     // decode: ⌈n·b/32⌉ words
@group(0) @binding(3) var<storage, read_write> u: array<f32>;   // decode: (n)
@group(0) @binding(4) var<storage, read_write> v: array<f32>;   // decode: (n)

const WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(256)
fn assign(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let x = pts[2u * i];
    let y = pts[2u * i + 1u];
    var best = 0u;
    var best_d = 3.4e38;
    for (var c = 0u; c < p.k; c++) {
        let dx = x - cb[2u * c];
        let dy = y - cb[2u * c + 1u];
        let d = dx * dx + dy * dy;
        if (d < best_d) { best_d = d; best = c; }
    }
    labels[i] = best;
}

@compute @workgroup_size(256)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let bit = i * p.bits;
    let word = bit / 32u;
    let off = bit % 32u;
    var c = codes[word] >> off;
    if (off + p.bits > 32u) { c = c | (codes[word + 1u] << (32u - off)); }
    c = c & ((1u << p.bits) - 1u);
    u[i] = cb[2u * c];
    v[i] = cb[2u * c + 1u];
}
