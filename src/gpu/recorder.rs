//! The recorder: ops append dispatches, copies and clears here; nothing reaches the GPU until a sync
//! point (a readback or an explicit [`crate::Gpu::flush`]). At flush, consecutive dispatches share
//! one compute pass, everything shares one command encoder, and the whole batch is one submit.
//!
//! Measured on lavapipe (2 cores): a submit costs about 0.25 ms and a dispatch inside a pass about
//! 7 µs, so a training step recorded here costs one submit, not one per op.
//!
//! Each dispatch's small uniform block (shapes, scalars) is packed into one arena buffer at flush,
//! at the adapter's uniform offset alignment, and written with a single `write_buffer`. Bind
//! groups are cached by (pipeline, uniform offset, buffers): a training step records the same
//! dispatches on the same pooled buffers every time, so from the second step on it creates none.

use super::pipeline::CachedPipeline;
use std::collections::HashMap;
use std::sync::Arc;

/// What a bind group binds: the pipeline (by address; the pipeline cache keeps it alive), the
/// uniform block's offset and size in the arena, and each storage buffer with its bound size or
/// texture view.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: usize,
    offset: u64,
    param_size: u64,
    buffers: Vec<Bound>,
}

/// One binding of a dispatch after binding 0 (the uniform block).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Bound {
    /// A storage buffer and the bytes bound.
    Buffer(wgpu::Buffer, u64),
    /// A texture (sampled or storage, as the kernel's [`Access`] says).
    Texture(wgpu::TextureView),
}

/// Past this many cached bind groups the cache starts over (a program that keeps binding new
/// buffer combinations should not grow it without bound).
const BIND_CACHE_LIMIT: usize = 8192;

/// Dispatches one profiling query set covers (two timestamps each, at wgpu's limit of 4096
/// queries per set).
pub(crate) const PROFILE_DISPATCHES_PER_SET: usize = wgpu::QUERY_SET_MAX_QUERIES as usize / 2;

/// How a kernel binds a buffer or texture; must match its declaration in the WGSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
    /// `texture_2d<f32>` (an unfilterable float texture, read with `textureLoad`)
    Texture,
}

pub(crate) enum Command {
    Dispatch {
        pipeline: Arc<CachedPipeline>,
        /// Bindings 1..; binding 0 is the uniform block.
        buffers: Vec<Bound>,
        /// The uniform block, as 32-bit words.
        params: Vec<u32>,
        groups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    },
    Clear {
        buffer: wgpu::Buffer,
        size: u64,
    },
    /// `height` rows of `width` texels from `src` at `offset` into an operand texture from row
    /// `first_row` on (the buffer's rows `TEXELS_PER_ROW` texels apart).
    CopyToTexture {
        src: wgpu::Buffer,
        offset: u64,
        dst: wgpu::Texture,
        first_row: u32,
        width: u32,
        height: u32,
    },
    /// Host data for `dst`, copied in command order from the upload arena.
    Upload {
        data: Vec<u8>,
        dst: wgpu::Buffer,
    },
}

#[derive(Default)]
pub(crate) struct Recorder {
    pub commands: Vec<Command>,
    arena: Option<wgpu::Buffer>,
    /// Staging for uploads recorded between sync points: one buffer, one write per flush.
    upload_arena: Option<wgpu::Buffer>,
    /// When set, the next encode writes a timestamp at the start of its first compute pass and
    /// at the end of its last, and resolves both into the buffer (two u64 ticks).
    pub timestamps: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    /// While set, every encode gives each dispatch a compute pass of its own with a timestamp
    /// at its start and end, and appends the batch's kernel labels and resolved ticks (two u64
    /// per dispatch, in order) to `profiled`.
    pub profiling: bool,
    pub profiled: Vec<(Vec<String>, wgpu::Buffer)>,
    /// Bind groups for the current uniform arena (emptied when the arena is replaced).
    bind_cache: HashMap<BindKey, wgpu::BindGroup>,
    /// Bind groups created so far (the cache's misses).
    pub bind_groups_created: u64,
}

impl Recorder {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Bytes of the uniform and upload arenas (kept and regrown across flushes).
    pub fn arena_bytes(&self) -> u64 {
        [&self.arena, &self.upload_arena]
            .iter()
            .filter_map(|a| a.as_ref().map(|b| b.size()))
            .sum()
    }

    /// Encodes every recorded command into one command buffer; `None` when nothing is recorded.
    pub fn encode(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
    ) -> Option<wgpu::CommandBuffer> {
        if self.commands.is_empty() {
            return None;
        }
        let commands = std::mem::take(&mut self.commands);

        // 1. Pack every dispatch's uniform block into one arena.
        let align = u64::from(device.limits().min_uniform_buffer_offset_alignment);
        let mut arena_bytes: Vec<u8> = Vec::new();
        let mut offsets = Vec::with_capacity(commands.len());
        for cmd in &commands {
            if let Command::Dispatch { params, .. } = cmd {
                let offset = (arena_bytes.len() as u64).div_ceil(align) * align;
                arena_bytes.resize(offset as usize, 0);
                arena_bytes.extend_from_slice(bytemuck::cast_slice(params));
                // Uniform bindings are sized in 16-byte units.
                let padded = (arena_bytes.len() as u64).div_ceil(16) * 16;
                arena_bytes.resize(padded as usize, 0);
                offsets.push(offset);
            }
        }
        if !arena_bytes.is_empty() {
            let needed = arena_bytes.len() as u64;
            if self.arena.as_ref().is_none_or(|a| a.size() < needed) {
                self.bind_cache.clear();
                self.arena = Some(device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgtrain uniform arena"),
                    size: needed.next_power_of_two().max(4096),
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
            }
            queue.write_buffer(self.arena.as_ref().unwrap(), 0, &arena_bytes);
        }

        // 1b. Pack every upload into the upload arena (copies below read it in command order).
        let mut upload_bytes: Vec<u8> = Vec::new();
        let mut upload_offsets = Vec::new();
        for cmd in &commands {
            if let Command::Upload { data, .. } = cmd {
                upload_offsets.push(upload_bytes.len() as u64);
                upload_bytes.extend_from_slice(data);
            }
        }
        if !upload_bytes.is_empty() {
            let needed = upload_bytes.len() as u64;
            if self.upload_arena.as_ref().is_none_or(|a| a.size() < needed) {
                self.upload_arena = Some(device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgtrain upload arena"),
                    size: needed.next_power_of_two().max(4096),
                    usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
            }
            queue.write_buffer(self.upload_arena.as_ref().unwrap(), 0, &upload_bytes);
        }
        let mut next_upload = upload_offsets.iter();

        // 2. Bind groups, made now that the arena is final.
        let mut bind_groups = Vec::with_capacity(offsets.len());
        let mut next = offsets.iter();
        for cmd in &commands {
            if let Command::Dispatch {
                pipeline,
                buffers,
                params,
                ..
            } = cmd
            {
                let offset = *next.next().unwrap();
                let param_size = (params.len() as u64 * 4).div_ceil(16) * 16;
                let key = BindKey {
                    pipeline: Arc::as_ptr(pipeline) as usize,
                    offset,
                    param_size,
                    buffers: buffers.clone(),
                };
                if let Some(bg) = self.bind_cache.get(&key) {
                    bind_groups.push(bg.clone());
                    continue;
                }
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: self.arena.as_ref().unwrap(),
                        offset,
                        size: std::num::NonZeroU64::new(param_size),
                    }),
                }];
                for (i, bound) in buffers.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: match bound {
                            Bound::Buffer(buffer, bytes) => {
                                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer,
                                    offset: 0,
                                    size: std::num::NonZeroU64::new(bytes.div_ceil(4) * 4),
                                })
                            }
                            Bound::Texture(view) => wgpu::BindingResource::TextureView(view),
                        },
                    });
                }
                let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.bind_group_layout,
                    entries: &entries,
                });
                self.bind_groups_created += 1;
                if self.bind_cache.len() >= BIND_CACHE_LIMIT {
                    self.bind_cache.clear();
                }
                self.bind_cache.insert(key, bg.clone());
                bind_groups.push(bg);
            }
        }

        // 3. One encoder; a compute pass per run of consecutive dispatches.
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgtrain batch"),
        });
        let mut groups_iter = bind_groups.iter();
        let timestamps = self.timestamps.take();
        let first_dispatch = commands
            .iter()
            .position(|c| matches!(c, Command::Dispatch { .. }));
        let last_dispatch = commands
            .iter()
            .rposition(|c| matches!(c, Command::Dispatch { .. }));
        let profile = self.profiling.then(|| profile_slots(device, &commands));
        let mut dispatch_index = 0;
        let mut i = 0;
        while i < commands.len() {
            match &commands[i] {
                Command::Dispatch {
                    pipeline, groups, ..
                } if profile.is_some() => {
                    let (sets, _, _) = profile.as_ref().unwrap();
                    let slot = (dispatch_index % PROFILE_DISPATCHES_PER_SET) as u32;
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &sets[dispatch_index / PROFILE_DISPATCHES_PER_SET],
                            beginning_of_pass_write_index: Some(2 * slot),
                            end_of_pass_write_index: Some(2 * slot + 1),
                        }),
                    });
                    pass.set_pipeline(&pipeline.pipeline);
                    pass.set_bind_group(0, groups_iter.next().unwrap(), &[]);
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                    dispatch_index += 1;
                    i += 1;
                }
                Command::Dispatch { .. } => {
                    // the pass that holds the first (last) dispatch writes the start (end) tick
                    let run_end = commands[i..]
                        .iter()
                        .position(|c| !matches!(c, Command::Dispatch { .. }))
                        .map_or(commands.len(), |k| i + k);
                    let writes =
                        timestamps
                            .as_ref()
                            .map(|(qs, _)| wgpu::ComputePassTimestampWrites {
                                query_set: qs,
                                beginning_of_pass_write_index: (Some(i) == first_dispatch)
                                    .then_some(0),
                                end_of_pass_write_index: last_dispatch
                                    .filter(|&l| l < run_end)
                                    .map(|_| 1),
                            });
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: writes,
                    });
                    while let Some(Command::Dispatch {
                        pipeline, groups, ..
                    }) = commands.get(i)
                    {
                        pass.set_pipeline(&pipeline.pipeline);
                        pass.set_bind_group(0, groups_iter.next().unwrap(), &[]);
                        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        i += 1;
                    }
                }
                Command::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                } => {
                    encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size);
                    i += 1;
                }
                Command::CopyToTexture {
                    src,
                    offset,
                    dst,
                    first_row,
                    width,
                    height,
                } => {
                    encoder.copy_buffer_to_texture(
                        wgpu::TexelCopyBufferInfo {
                            buffer: src,
                            layout: wgpu::TexelCopyBufferLayout {
                                offset: *offset,
                                bytes_per_row: Some(super::texture::TEXELS_PER_ROW * 16),
                                rows_per_image: Some(*height),
                            },
                        },
                        wgpu::TexelCopyTextureInfo {
                            texture: dst,
                            mip_level: 0,
                            origin: wgpu::Origin3d {
                                x: 0,
                                y: *first_row,
                                z: 0,
                            },
                            aspect: wgpu::TextureAspect::All,
                        },
                        wgpu::Extent3d {
                            width: *width,
                            height: *height,
                            depth_or_array_layers: 1,
                        },
                    );
                    i += 1;
                }
                Command::Clear { buffer, size } => {
                    encoder.clear_buffer(buffer, 0, Some(*size));
                    i += 1;
                }
                Command::Upload { data, dst } => {
                    let offset = *next_upload.next().unwrap();
                    let arena = self.upload_arena.as_ref().unwrap();
                    encoder.copy_buffer_to_buffer(arena, offset, dst, 0, data.len() as u64);
                    i += 1;
                }
            }
        }
        if let Some((qs, resolve)) = &timestamps {
            encoder.resolve_query_set(qs, 0..2, resolve, 0);
        }
        if let Some((sets, resolve, labels)) = profile {
            for (s, qs) in sets.iter().enumerate() {
                let pairs = (dispatch_index - s * PROFILE_DISPATCHES_PER_SET)
                    .min(PROFILE_DISPATCHES_PER_SET) as u32;
                let offset = (s * PROFILE_DISPATCHES_PER_SET * 16) as u64;
                encoder.resolve_query_set(qs, 0..2 * pairs, &resolve, offset);
            }
            if !labels.is_empty() {
                self.profiled.push((labels, resolve));
            }
        }
        Some(encoder.finish())
    }
}

/// Query sets for timing every dispatch of `commands`, the buffer they resolve into, and each
/// dispatch's kernel label.
fn profile_slots(
    device: &wgpu::Device,
    commands: &[Command],
) -> (Vec<wgpu::QuerySet>, wgpu::Buffer, Vec<String>) {
    let labels: Vec<String> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Dispatch { pipeline, .. } => Some(pipeline.label.clone()),
            _ => None,
        })
        .collect();
    let sets = (0..labels.len().div_ceil(PROFILE_DISPATCHES_PER_SET))
        .map(|_| {
            device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("wgtrain profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * PROFILE_DISPATCHES_PER_SET as u32,
            })
        })
        .collect();
    let resolve = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgtrain profile resolve"),
        size: (16 * labels.len()).max(16) as u64,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    (sets, resolve, labels)
}
