//! The GPU runtime: a [`Gpu`] is one device with its queue, pipeline cache, buffer pool and
//! recorder. It is a value passed to whoever needs it, never a global: several live at once (one per
//! device, pipeline stage or data-parallel rank), and one can wrap a device an application already
//! owns.

pub mod adapter;
pub mod pool;
pub mod shaders;

mod pipeline;
mod profile;
mod recorder;

pub use adapter::AdapterSummary;
pub use pool::{BufferPool, ByCategory, Category, MemoryStats, PooledBuffer};
pub use profile::KernelTime;
pub use recorder::Access;
pub use shaders::{Kernel, Shader};

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use pipeline::PipelineCache;
use recorder::{Command, Recorder};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Optional features used when the adapter offers them; never required.
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY);

/// Counters of host-side work, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    pub submits: u64,
    pub dispatches: u64,
    pub pipelines: usize,
    /// Bind groups created (the recorder reuses them across steps).
    pub bind_groups: u64,
}

pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pool: BufferPool,
    pipelines: Mutex<PipelineCache>,
    recorder: Mutex<Recorder>,
    /// MAP_READ buffers for readbacks, by size, reused across reads.
    readback: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    submits: AtomicU64,
    dispatches: AtomicU64,
}

impl Gpu {
    /// Opens the adapter `selector` names (an index or a name substring; `None` falls back to
    /// `WGTRAIN_ADAPTER`, then to the best ranked adapter) on the backends `WGTRAIN_BACKEND` allows.
    pub fn new(selector: Option<&str>) -> Result<Gpu> {
        let backends = adapter::backends_from_env()?;
        let instance = adapter::instance(backends);
        let mut adapters = adapter::enumerate(&instance, backends);
        let infos: Vec<_> = adapters.iter().map(|a| a.get_info()).collect();
        let env_selector = std::env::var(adapter::ADAPTER_ENV).ok();
        let selector = selector.or(env_selector.as_deref());
        let backend_note = match std::env::var(adapter::BACKEND_ENV) {
            Ok(v) if !v.trim().is_empty() => format!(" for WGTRAIN_BACKEND={v}"),
            _ => String::new(),
        };
        let index = adapter::choose(&infos, selector, &backend_note)?;
        Self::open(adapters.swap_remove(index))
    }

    /// Creates a device on `adapter` with the adapter's own limits, and with every optional feature
    /// it offers.
    pub fn open(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let features = adapter.features() & OPTIONAL_FEATURES;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgtrain"),
            required_features: features,
            // The adapter's maxima, not wgpu's defaults (whose max_buffer_size is 256 MiB).
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|source| Error::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;
        Ok(Self::from_parts(device, queue, info))
    }

    /// Wraps a device and queue an application already owns (e.g. one it renders with), so it can
    /// train on the same device. wgtrain uses whatever features and limits the device was made with.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Gpu {
        let info = device.adapter_info();
        Self::from_parts(device, queue, info)
    }

    fn from_parts(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Gpu {
        Gpu {
            limits: device.limits(),
            pool: BufferPool::new(device.clone()),
            device,
            queue,
            info,
            pipelines: Mutex::default(),
            recorder: Mutex::default(),
            readback: Mutex::default(),
            submits: AtomicU64::new(0),
            dispatches: AtomicU64::new(0),
        }
    }

    /// Every adapter on the backends `WGTRAIN_BACKEND` allows, and the index [`Gpu::new`] would
    /// choose with `selector`.
    pub fn list_adapters(selector: Option<&str>) -> Result<(Vec<AdapterSummary>, Result<usize>)> {
        let backends = adapter::backends_from_env()?;
        let instance = adapter::instance(backends);
        let infos: Vec<_> = adapter::enumerate(&instance, backends)
            .iter()
            .map(|a| a.get_info())
            .collect();
        let env_selector = std::env::var(adapter::ADAPTER_ENV).ok();
        let chosen = adapter::choose(&infos, selector.or(env_selector.as_deref()), "");
        let summaries = infos
            .iter()
            .enumerate()
            .map(|(i, info)| AdapterSummary::from_info(i, info))
            .collect();
        Ok((summaries, chosen))
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
    pub fn features(&self) -> wgpu::Features {
        self.device.features()
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }
    pub fn memory(&self) -> MemoryStats {
        self.pool.stats()
    }
    pub fn stats(&self) -> GpuStats {
        GpuStats {
            submits: self.submits.load(Ordering::Relaxed),
            dispatches: self.dispatches.load(Ordering::Relaxed),
            pipelines: self.pipelines.lock().unwrap().len(),
            bind_groups: self.recorder.lock().unwrap().bind_groups_created,
        }
    }

    /// Checks a buffer of `bytes` against the adapter's limits; the error names the tensor.
    pub fn check_size(&self, name: &str, bytes: u64) -> Result<()> {
        let checks = [
            (
                self.limits.max_storage_buffer_binding_size,
                "storage binding",
            ),
            (self.limits.max_buffer_size, "buffer"),
        ];
        for (limit, what) in checks {
            if bytes > limit {
                return Err(Error::TensorTooLarge {
                    name: name.to_string(),
                    bytes,
                    limit,
                    what,
                });
            }
        }
        Ok(())
    }

    /// Records one dispatch of `kernel`. Binding 0 is the uniform block `params` (32-bit words, in
    /// the order of the WGSL struct); bindings 1.. are `args` in order.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        args: &[(&Tensor, Access)],
        params: &[u32],
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        assert!(
            groups.iter().all(|&g| g <= max),
            "{}::{}: {groups:?} workgroups exceed the limit of {max} per dimension",
            kernel.shader.name(),
            kernel.entry
        );
        let access: Vec<Access> = args.iter().map(|(_, a)| *a).collect();
        let pipeline = self
            .pipelines
            .lock()
            .unwrap()
            .get(&self.device, kernel, &access);
        let buffers = args
            .iter()
            .map(|(t, _)| (t.buffer().clone(), t.bytes()))
            .collect();
        self.dispatches.fetch_add(1, Ordering::Relaxed);
        self.recorder
            .lock()
            .unwrap()
            .commands
            .push(Command::Dispatch {
                pipeline,
                buffers,
                params: params.to_vec(),
                groups,
            });
    }

    /// Workgroup counts for `n` workgroups along one axis, folded into 2-D when `n` exceeds the
    /// per-dimension limit. Kernels recover the linear index as `wid.y * nwg.x + wid.x`.
    pub fn groups_1d(&self, n: u32) -> [u32; 3] {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if n <= max {
            [n, 1, 1]
        } else {
            let y = n.div_ceil(max);
            [n.div_ceil(y), y, 1]
        }
    }

    /// Records a zero fill of the whole tensor.
    pub fn clear(&self, t: &Tensor) {
        self.recorder.lock().unwrap().commands.push(Command::Clear {
            buffer: t.buffer().clone(),
            size: t.bytes().div_ceil(4) * 4,
        });
    }

    /// Records a copy of `src` into `dst` (the same byte size).
    pub fn copy(&self, src: &Tensor, dst: &Tensor) {
        assert_eq!(
            src.bytes(),
            dst.bytes(),
            "copy {:?} {:?} -> {:?} {:?}",
            src.name(),
            src.shape(),
            dst.name(),
            dst.shape()
        );
        self.recorder.lock().unwrap().commands.push(Command::Copy {
            src: src.buffer().clone(),
            src_offset: 0,
            dst: dst.buffer().clone(),
            dst_offset: 0,
            size: src.bytes().div_ceil(4) * 4,
        });
    }

    /// Records a copy of `bytes` bytes from `src` at `src_offset` to `dst` at `dst_offset`
    /// (offsets and size multiples of 4).
    pub fn copy_region(
        &self,
        src: &Tensor,
        src_offset: u64,
        dst: &Tensor,
        dst_offset: u64,
        bytes: u64,
    ) {
        assert!(
            src_offset + bytes <= src.bytes() && dst_offset + bytes <= dst.bytes(),
            "copy_region {:?}[{src_offset}..+{bytes}] -> {:?}[{dst_offset}..]",
            src.name(),
            dst.name()
        );
        self.recorder.lock().unwrap().commands.push(Command::Copy {
            src: src.buffer().clone(),
            src_offset,
            dst: dst.buffer().clone(),
            dst_offset,
            size: bytes,
        });
    }

    /// Writes `data` into `t`, ordered after everything recorded so far.
    pub fn upload(&self, t: &Tensor, data: &[u8]) {
        assert_eq!(
            data.len() as u64,
            t.bytes(),
            "upload into {:?} {:?}",
            t.name(),
            t.shape()
        );
        let mut padded;
        let data = if data.len() % 4 != 0 {
            padded = data.to_vec();
            padded.resize(data.len().div_ceil(4) * 4, 0);
            &padded[..]
        } else {
            data
        };
        let mut rec = self.recorder.lock().unwrap();
        if rec.is_empty() {
            // Nothing pending can read the old contents: the queue orders this write first.
            self.queue.write_buffer(t.buffer(), 0, data);
        } else {
            // Recorded work may still read the old contents: the copy goes in command order,
            // from the upload arena the flush fills.
            rec.commands.push(Command::Upload {
                data: data.to_vec(),
                dst: t.buffer().clone(),
            });
        }
    }

    /// Submits everything recorded so far (one submit), without waiting.
    pub fn flush(&self) {
        let mut rec = self.recorder.lock().unwrap();
        if let Some(cb) = rec.encode(&self.device, &self.queue) {
            self.queue.submit([cb]);
            self.submits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Submits what is recorded and waits until the GPU has finished it.
    pub fn sync(&self) -> Result<()> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback(e.to_string()))?;
        Ok(())
    }

    /// GPU time of the work `record` records, in ms, measured with timestamp queries at the
    /// start of its first compute pass and the end of its last; None when the adapter offers no
    /// TIMESTAMP_QUERY. Pending work is submitted first so that it is not counted.
    pub fn gpu_time_ms(&self, record: impl FnOnce()) -> Result<Option<f64>> {
        if !self.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            record();
            self.sync()?;
            return Ok(None);
        }
        self.flush();
        let qs = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("wgtrain timing"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgtrain timing resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        record();
        {
            let mut rec = self.recorder.lock().unwrap();
            if !rec
                .commands
                .iter()
                .any(|c| matches!(c, Command::Dispatch { .. }))
            {
                drop(rec);
                self.sync()?;
                return Ok(Some(0.0));
            }
            rec.timestamps = Some((qs, resolve.clone()));
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgtrain timing readback"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.flush();
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(&resolve, 0, &staging, 0, 16);
        self.queue.submit([encoder.finish()]);
        self.submits.fetch_add(1, Ordering::Relaxed);
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.map_read(&staging)?);
        let ns = ticks[1].wrapping_sub(ticks[0]) as f64 * self.queue.get_timestamp_period() as f64;
        Ok(Some(ns / 1e6))
    }

    /// Waits for the submitted work, maps a MAP_READ buffer, copies it out and unmaps it.
    fn map_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| Error::Readback(e.to_string()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let bytes = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Readback(format!("{e:?}")))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// Reads the tensor's bytes back: a sync point (one submit holding all recorded work and the
    /// copy, then a wait).
    pub fn read_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        let size = t.bytes().div_ceil(4) * 4;
        let cached = self
            .readback
            .lock()
            .unwrap()
            .get_mut(&size)
            .and_then(Vec::pop);
        let staging = cached.unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgtrain readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        self.recorder.lock().unwrap().commands.push(Command::Copy {
            src: t.buffer().clone(),
            src_offset: 0,
            dst: staging.clone(),
            dst_offset: 0,
            size,
        });
        self.flush();
        let mut bytes = self.map_read(&staging)?;
        self.readback
            .lock()
            .unwrap()
            .entry(size)
            .or_default()
            .push(staging);
        bytes.truncate(t.bytes() as usize);
        Ok(bytes)
    }
}
