// Copies a buffer of vec4s into an rgba32float texture, row by row (width texels a row): the
// operand textures the texture matmul reads (src/gpu/texture.rs). Where rows are a multiple of
// 256 bytes the matmul uses a copy_buffer_to_texture instead (`Gpu::copy_to_texture`, several
// times faster on lavapipe); this kernel takes the other widths.

struct Params {
    width: u32,  // texels per row
    height: u32, // rows
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(8, 8, 1)
fn pack(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.width && gid.y < p.height) {
        textureStore(dst, gid.xy, src[gid.y * p.width + gid.x]);
    }
}
