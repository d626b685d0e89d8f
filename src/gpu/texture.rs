//! Operand textures: a buffer's contents copied into an rgba32float texture so that a kernel
//! reads them with `textureLoad`. The layout is flat: the buffer's i-th vec4 is the texel at
//! (i % TEXELS_PER_ROW, i / TEXELS_PER_ROW), whatever the shape of the tensor, so that every
//! texture row is 4 KiB and one `copy_buffer_to_texture` of the whole rows (plus one of the
//! last, partial row) fills it: wgpu needs a multiple of 256 bytes per row, which a tensor's own
//! rows (an attention head of 32 floats is 128 bytes) often are not. On llvmpipe a texel fetch is one
//! call that fetches every SIMD lane's texel where a storage-buffer read is a loop over the lanes,
//! which
//! makes the matmul 2-2.5x faster there (`benches/matmul_variants/README.md`).
//!
//! A [`Gpu`](super::Gpu) keeps one texture per (recording thread, slot), grown to the largest
//! request so far, and reuses it for every smaller one (a kernel reads only the texels its
//! operand fills): a training step asks for the same sizes every time, so after the first step
//! it creates none, and the memory is the largest operand per slot, not one texture per shape.
//! A texture is scratch between its copy and the kernel that reads it, so two threads recording
//! on one device (tests share one) must not share one: their commands interleave in the
//! recorder, and one thread's copy would land between the other's copy and kernel. One
//! thread's commands keep their order, so within a thread reuse is safe; a texture replaced by a
//! larger one lives on until the commands that bind it are submitted.
//! They are outside the pool's categories, counted in [`super::MemoryStats::runtime`] like the
//! recorder's arenas (their contents live for one dispatch, a cache of scratch, not a tensor).

use super::pool::DeviceId;
use std::sync::Arc;

/// Textures a device keeps; past this many the least recently used is dropped (a recorded
/// command that still binds it keeps it alive until the submit).
pub(crate) const TEXTURE_CACHE: usize = 32;

/// Texels in every row of an operand texture (4 KiB: a multiple of wgpu's 256-byte copy
/// alignment). Kernels that read one write it out (the texture matmul derived in
/// `src/gpu/shaders.rs`, `optim/adam.wgsl`; a unit test checks both).
pub const TEXELS_PER_ROW: u32 = 256;

/// An rgba32float texture of `TEXELS_PER_ROW` texels a row that kernels read
/// (`texture_2d<f32>`), filled by [`Gpu::copy_to_texture`](super::Gpu::copy_to_texture).
#[derive(Debug)]
pub struct OperandTexture {
    pub(crate) texture: wgpu::Texture,
    pub(crate) view: wgpu::TextureView,
    device: DeviceId,
    height: u32,
}

impl OperandTexture {
    /// Rows enough for `texels` texels.
    pub fn rows_for(texels: u64) -> u64 {
        texels.div_ceil(u64::from(TEXELS_PER_ROW))
    }

    pub(crate) fn new(device: &wgpu::Device, id: DeviceId, height: u32) -> OperandTexture {
        let width = TEXELS_PER_ROW;
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("wgtrain operand texture"),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        OperandTexture {
            view: texture.create_view(&Default::default()),
            texture,
            device: id,
            height,
        }
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn device(&self) -> DeviceId {
        self.device
    }

    pub fn bytes(&self) -> u64 {
        u64::from(TEXELS_PER_ROW) * u64::from(self.height) * 16
    }
}

/// (recording thread, slot)
pub(crate) type TextureKey = (std::thread::ThreadId, u32);

/// The cache: key → texture, most recently used last.
#[derive(Default)]
pub(crate) struct TextureCache {
    entries: Vec<(TextureKey, Arc<OperandTexture>)>,
}

impl TextureCache {
    /// The texture for `key` if it has at least `height` rows, else a new one of `height` rows
    /// made by `make` (replacing the smaller).
    pub fn get(
        &mut self,
        key: TextureKey,
        height: u32,
        make: impl FnOnce() -> OperandTexture,
    ) -> Arc<OperandTexture> {
        let cached = match self.entries.iter().position(|(k, _)| *k == key) {
            Some(i) => Some(self.entries.remove(i).1),
            None => None,
        };
        let t = match cached {
            Some(t) if t.height() >= height => t,
            _ => {
                log::debug!(
                    "operand texture {key:?}: {height} rows, {} cached",
                    self.entries.len()
                );
                Arc::new(make())
            }
        };
        if self.entries.len() >= TEXTURE_CACHE {
            self.entries.remove(0);
        }
        self.entries.push((key, t.clone()));
        t
    }

    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|(_, t)| t.bytes()).sum()
    }
}
