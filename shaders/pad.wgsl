// Moves a batch of row-major f32 matrices between their own (rows, cols) layout and a padded
// (prows, pcols) one (prows ≥ rows, pcols ≥ cols), for matmul dims that are not multiples of 4
// (ops::pad): `pad` writes the padded matrices, zeros past the original's edges; `crop` writes
// the original's corner of each padded matrix back, adding it to what the destination holds
// when `accumulate` is 1 (dst + src, the sum an accumulating matmul makes). One invocation per
// destination element; the linear index folds a 2-D grid of workgroups (see Gpu::groups_1d).

struct Params {
    rows: u32, cols: u32,
    prows: u32, pcols: u32,
    // destination elements over the whole batch
    total: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

const WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(256, 1, 1)
fn pad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let per = p.prows * p.pcols;
    let b = i / per;
    let r = (i % per) / p.pcols;
    let c = i % p.pcols;
    var v = 0.0;
    if (r < p.rows && c < p.cols) {
        v = src[(b * p.rows + r) * p.cols + c];
    }
    dst[i] = v;
}

@compute @workgroup_size(256, 1, 1)
fn crop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let per = p.rows * p.cols;
    let b = i / per;
    let r = (i % per) / p.cols;
    let c = i % p.cols;
    var v = src[(b * p.prows + r) * p.pcols + c];
    if (p.accumulate == 1u) {
        v = dst[i] + v;
    }
    dst[i] = v;
}

// `columns`: a block of columns moved between two row-major layouts of the same rows, as 32-bit
// words (f32 elements, or pairs of half ones): dst[r, dst_col + j] = src[r, src_col + j] for
// j < width, the destination's rows from `dst_first` on. Packs q, k and v side by side into
// attention's qkv, takes them back out of its gradient, and appends keys and values to a KV cache
// (ops::pad::columns). One invocation per word moved.
struct ColumnParams {
    rows: u32,
    width: u32,
    src_row: u32,
    src_col: u32,
    dst_row: u32,
    dst_col: u32,
    dst_first: u32,
}

@group(0) @binding(0) var<uniform> cp: ColumnParams;
@group(0) @binding(1) var<storage, read> col_src: array<u32>;
@group(0) @binding(2) var<storage, read_write> col_dst: array<u32>;

@compute @workgroup_size(256, 1, 1)
fn columns(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = index(wid, nwg, lid);
    if (i >= cp.rows * cp.width) { return; }
    let r = i / cp.width;
    let j = i % cp.width;
    col_dst[(cp.dst_first + r) * cp.dst_row + cp.dst_col + j] = col_src[r * cp.src_row + cp.src_col + j];
}
