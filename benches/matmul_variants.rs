//! Matmul kernel experiments (not a test, not the library): `cargo bench --bench matmul_variants
//! [-- FILTER]`. Each numbered variant in `benches/matmul_variants/NN_name.wgsl` computes
//! C (M, N) = A (M, K) · B (K, N), row-major, with entry point `main` and bindings
//! 0: uniform {m, n, k}, 1: a, 2: b, 3: c. A variant declares its launch shape in its first line:
//! `// tile: ROWS COLS WGX [rows-first]` (outputs per workgroup along M and N, invocations per
//! workgroup; rows-first: workgroup x walks M; textures: A and B are rgba32float textures, A
//! (K/4 texels wide, M high) and B (N/4 wide, K high); ubo-b: B a uniform buffer, its first
//! 64 KiB; timing-only: not checked, for experiments that are not a correct product).
//! Every other variant is validated against an f64 reference on odd-free small shapes, then all
//! are timed at 256³, 512³ and 1024³ (median of 10 runs after a warm-up, or of `REPS` runs,
//! wall clock around a wait).

use std::time::Instant;
use wgpu::util::DeviceExt;
use wgtrain::rng::Rng;
use wgtrain::Gpu;

struct Variant {
    name: String,
    source: String,
    rows: u32,
    cols: u32,
    /// Workgroup x walks the rows (M) instead of the columns.
    rows_first: bool,
    /// A and B are bound as rgba32float textures (`// tile: … textures`): A (K/4 wide, M high),
    /// B (N/4 wide, K high), one texel a vec4 of a row.
    textures: bool,
    /// B is a uniform buffer (`ubo-b`: its first 64 KiB bound; timing experiments only).
    ubo_b: bool,
    /// Timed without the check against the reference (`timing-only`: an experiment that is not a
    /// correct matmul, such as the arithmetic-peak loops).
    timing_only: bool,
}

fn load_variants(filter: Option<&str>) -> Vec<Variant> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/matmul_variants");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("benches/matmul_variants")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    paths.sort();
    let mut out = vec![];
    for p in paths {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let source = std::fs::read_to_string(&p).unwrap();
        let first = source.lines().next().unwrap_or("").to_string();
        let nums: Vec<u32> = first
            .trim_start_matches("// tile:")
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        out.push(Variant {
            name,
            source,
            rows: nums[0],
            cols: nums[1],
            rows_first: first.contains("rows-first"),
            textures: first.contains("textures"),
            ubo_b: first.contains("ubo-b"),
            timing_only: first.contains("timing-only"),
        });
    }
    out
}

struct Run<'a> {
    gpu: &'a Gpu,
    pipeline: wgpu::ComputePipeline,
    v: &'a Variant,
}

impl Run<'_> {
    /// Runs `reps` dispatches of the variant on (m, n, k) and returns C and the per-run times.
    fn run(
        &self,
        m: u32,
        n: u32,
        k: u32,
        a: &[f32],
        b: &[f32],
        reps: usize,
    ) -> (Vec<f32>, Vec<f64>) {
        let dev = self.gpu.device();
        let q = self.gpu.queue();
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let ub = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&[m, n, k, 0]),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let ab = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(a),
            usage: storage,
        });
        let bb = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            // at least 64 KiB, the size a `ubo-b` variant declares
            contents: bytemuck::cast_slice(
                &[b, &vec![0.0; 16384usize.saturating_sub(b.len())]].concat(),
            ),
            usage: storage | wgpu::BufferUsages::UNIFORM,
        });
        let cbytes = (m * n * 4) as u64;
        let cb = dev.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: cbytes,
            usage: storage,
            mapped_at_creation: false,
        });
        let texture = |w: u32, h: u32, data: &[f32]| {
            let t = dev.create_texture(&wgpu::TextureDescriptor {
                label: None,
                size: wgpu::Extent3d {
                    width: w,
                    height: h,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            q.write_texture(
                t.as_image_copy(),
                bytemuck::cast_slice(data),
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(w * 16),
                    rows_per_image: None,
                },
                t.size(),
            );
            t.create_view(&Default::default())
        };
        let views = self
            .v
            .textures
            .then(|| (texture(k / 4, m, a), texture(n / 4, k, b)));
        let layout = self.pipeline.get_bind_group_layout(0);
        let mut entries: Vec<wgpu::BindGroupEntry> = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: ub.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: cb.as_entire_binding(),
            },
        ];
        match &views {
            Some((va, vb)) => entries.extend([
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(va),
                },
                if self.v.ubo_b {
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &bb,
                            offset: 0,
                            size: std::num::NonZeroU64::new(bb.size().min(65536)),
                        }),
                    }
                } else {
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::TextureView(vb),
                    }
                },
            ]),
            None => entries.extend([
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: ab.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: bb.as_entire_binding(),
                },
            ]),
        }
        let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let (gm, gn) = (m.div_ceil(self.v.rows), n.div_ceil(self.v.cols));
        let groups = if self.v.rows_first {
            [gm, gn, 1]
        } else {
            [gn, gm, 1]
        };
        let dispatch = || {
            let mut enc = dev.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&self.pipeline);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            q.submit([enc.finish()]);
            dev.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        };
        let mut times = vec![];
        dispatch();
        for _ in 0..reps {
            let t = Instant::now();
            dispatch();
            times.push(t.elapsed().as_secs_f64());
        }
        let staging = dev.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: cbytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = dev.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&cb, 0, &staging, 0, cbytes);
        q.submit([enc.finish()]);
        staging.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
        dev.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        let c = bytemuck::pod_collect_to_vec(&staging.get_mapped_range(..).unwrap());
        (c, times)
    }
}

fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for kk in 0..k {
            let x = a[i * k + kk] as f64;
            for j in 0..n {
                c[i * n + j] += x * b[kk * n + j] as f64;
            }
        }
    }
    c
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let gpu = Gpu::new(None).expect("an adapter");
    println!("adapter: {}", gpu.info().name);
    let mut rng = Rng::new(1);
    for v in load_variants(filter.as_deref()) {
        let module = gpu
            .device()
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&v.name),
                source: wgpu::ShaderSource::Wgsl(v.source.clone().into()),
            });
        // rgba32float is not filterable: a textured variant's layout says so (the automatic
        // layout would ask for a filterable texture)
        let explicit = v.textures.then(|| {
            let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty,
                count: None,
            };
            let texture = wgpu::BindingType::Texture {
                sample_type: wgpu::TextureSampleType::Float { filterable: false },
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            };
            let bgl = gpu
                .device()
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: None,
                    entries: &[
                        entry(
                            0,
                            wgpu::BindingType::Buffer {
                                ty: wgpu::BufferBindingType::Uniform,
                                has_dynamic_offset: false,
                                min_binding_size: None,
                            },
                        ),
                        entry(1, texture),
                        if v.ubo_b {
                            entry(
                                2,
                                wgpu::BindingType::Buffer {
                                    ty: wgpu::BufferBindingType::Uniform,
                                    has_dynamic_offset: false,
                                    min_binding_size: None,
                                },
                            )
                        } else {
                            entry(2, texture)
                        },
                        entry(
                            3,
                            wgpu::BindingType::Buffer {
                                ty: wgpu::BufferBindingType::Storage { read_only: false },
                                has_dynamic_offset: false,
                                min_binding_size: None,
                            },
                        ),
                    ],
                });
            gpu.device()
                .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: None,
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                })
        });
        let pipeline = gpu
            .device()
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&v.name),
                layout: explicit.as_ref(),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let run = Run {
            gpu: &gpu,
            pipeline,
            v: &v,
        };
        let mut ok = true;
        let t = Instant::now();
        run.run(8, 32, 4, &[0.0; 32], &[0.0; 128], 0);
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        for (m, n, k) in [(64, 64, 64), (36, 40, 28), (100, 12, 52)] {
            let a = rng.uniform_vec(m * k, -1.0, 1.0);
            let b = rng.uniform_vec(k * n, -1.0, 1.0);
            let (c, _) = run.run(m as u32, n as u32, k as u32, &a, &b, 0);
            let r = reference(m, n, k, &a, &b);
            let err = c
                .iter()
                .zip(&r)
                .map(|(x, y)| (*x as f64 - y).abs())
                .fold(0.0, f64::max);
            if err > 1e-4 * (k as f64).sqrt() && !v.timing_only {
                println!("{}: WRONG on {m}x{n}x{k}: max error {err:e}", v.name);
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        let mut line = format!("{:24} first run {compile_ms:6.0} ms", v.name);
        for s in [256usize, 512, 1024] {
            let a = rng.uniform_vec(s * s, -1.0, 1.0);
            let b = rng.uniform_vec(s * s, -1.0, 1.0);
            // REPS: more runs, for a profiler to attach to
            let reps = std::env::var("REPS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(10);
            let (_, mut t) = run.run(s as u32, s as u32, s as u32, &a, &b, reps);
            t.sort_by(f64::total_cmp);
            let med = t[t.len() / 2];
            line += &format!(
                "  {s}³ {:6.2} GFLOP/s",
                2.0 * (s * s * s) as f64 / med / 1e9
            );
        }
        println!("{line}");
    }
}
