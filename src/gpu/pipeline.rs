//! Compute pipelines, cached by (shader, entry point, override constants).

use super::recorder::Access;
use super::shaders::{Kernel, Shader};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) struct CachedPipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group_layout: wgpu::BindGroupLayout,
    /// `shader::entry` plus any override constants, e.g. `matmul_subgroup::matmul[A_T=1,…]`;
    /// names the kernel in profiles.
    pub label: String,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    shader: Shader,
    entry: &'static str,
    /// (name, value bits): f64 is not `Hash`.
    overrides: Vec<(&'static str, u64)>,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: HashMap<Shader, wgpu::ShaderModule>,
    pipelines: HashMap<Key, Arc<CachedPipeline>>,
}

impl PipelineCache {
    pub fn len(&self) -> usize {
        self.pipelines.len()
    }

    /// The pipeline for `kernel`, built on first use. Its explicit layout is binding 0 = the
    /// uniform block, then one storage buffer or texture per entry of `access`, in order. Built inside a
    /// validation error scope: a kernel the device refuses is an error (not cached), not a panic.
    pub fn get(
        &mut self,
        device: &wgpu::Device,
        kernel: &Kernel,
        access: &[Access],
    ) -> Result<Arc<CachedPipeline>, String> {
        let key = Key {
            shader: kernel.shader,
            entry: kernel.entry,
            overrides: kernel
                .overrides
                .iter()
                .map(|(n, v)| (*n, v.to_bits()))
                .collect(),
        };
        if let Some(p) = self.pipelines.get(&key) {
            return Ok(p.clone());
        }
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.modules.entry(kernel.shader).or_insert_with(|| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.shader.name()),
                source: wgpu::ShaderSource::Wgsl(kernel.shader.source().into()),
            })
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, a) in access.iter().enumerate() {
            let storage = |read_only| wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            };
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match a {
                    Access::Read => storage(true),
                    Access::ReadWrite => storage(false),
                    // rgba32float is not filterable in core WebGPU
                    Access::Texture => wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                },
                count: None,
            });
        }
        let label = format!("{}::{}", kernel.shader.name(), kernel.entry);
        let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&bind_group_layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&layout),
            module,
            entry_point: Some(kernel.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: kernel.overrides,
                // Every kernel initialises the workgroup memory it reads.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            self.modules.remove(&kernel.shader);
            return Err(format!("building the pipeline {label}: {e}"));
        }
        let overrides: Vec<String> = kernel
            .overrides
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        let cached = Arc::new(CachedPipeline {
            pipeline,
            bind_group_layout,
            label: if overrides.is_empty() {
                label
            } else {
                format!("{label}[{}]", overrides.join(","))
            },
        });
        self.pipelines.insert(key, cached.clone());
        Ok(cached)
    }
}
