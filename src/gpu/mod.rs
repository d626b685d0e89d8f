//! The GPU runtime: a [`Gpu`] is one device with its queue, pipeline cache, buffer pool and
//! recorder. It is a value passed to whoever needs it, never a global: several live at once (one per
//! device, pipeline stage or data-parallel rank), and one can wrap a device an application already
//! owns.

pub mod adapter;
pub mod capacity;
pub mod pool;
pub mod shaders;

mod pipeline;
mod profile;
mod recorder;
mod texture;

pub use adapter::AdapterSummary;
pub use pool::{BufferPool, ByCategory, Category, DeviceId, MemoryStats, PooledBuffer};
pub use profile::{KernelTime, ProfileClock, TRANSFERS};
pub use recorder::Access;
pub use shaders::{Kernel, Shader, TextureForm};
pub use texture::OperandTexture;

use crate::error::{Error, Result};
use pipeline::PipelineCache;
use recorder::{Bound, Command, Recorder};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the recorder binds, copies and reads: anything backed by a pooled buffer (a
/// [`crate::Tensor`]). The runtime knows tensors only through this, so `tensor` depends on `gpu`
/// and not the other way round.
pub trait DeviceBuffer {
    fn pooled(&self) -> &PooledBuffer;
    /// The name errors and panics call it by.
    fn label(&self) -> &str;
    fn buffer(&self) -> &wgpu::Buffer {
        self.pooled().buffer()
    }
    fn bytes(&self) -> u64 {
        self.pooled().bytes()
    }
}

impl<T: DeviceBuffer + ?Sized> DeviceBuffer for &T {
    fn pooled(&self) -> &PooledBuffer {
        (**self).pooled()
    }
    fn label(&self) -> &str {
        (**self).label()
    }
}

/// Every device opened in this process, by [`DeviceId`]: "llvmpipe (Vulkan)", so that a panic
/// about two devices can name both.
static DEVICE_NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn register_device(info: &wgpu::AdapterInfo, ledger: bool) -> DeviceId {
    let mut names = DEVICE_NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let ledger = if ledger { ", ledger" } else { "" };
    names.push(format!("{} ({:?}{ledger})", info.name, info.backend));
    DeviceId(names.len() as u64 - 1)
}

/// "device #1: llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)".
pub fn device_name(id: DeviceId) -> String {
    let names = DEVICE_NAMES.lock().unwrap_or_else(|e| e.into_inner());
    match names.get(id.0 as usize) {
        Some(n) => format!("{id}: {n}"),
        None => id.to_string(),
    }
}

/// How [`Gpu::open_with`] opens a device: which of [`OPTIONAL_FEATURES`] to enable (those the
/// adapter lacks are left out) and, when given, limits below the adapter's own.
#[derive(Clone, Debug)]
pub struct DeviceOptions {
    pub features: wgpu::Features,
    pub limits: Option<wgpu::Limits>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            features: OPTIONAL_FEATURES,
            limits: None,
        }
    }
}

/// Optional features used when the adapter offers them; never required.
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY);

/// One binding of a dispatch (bindings 1.. in order; binding 0 is the uniform block).
pub enum Binding<'a> {
    /// A tensor's buffer, [`Access::Read`] or [`Access::ReadWrite`].
    Buffer(&'a dyn DeviceBuffer, Access),
    /// An operand texture, read as `texture_2d<f32>` ([`Access::Texture`]).
    Texture(&'a OperandTexture),
}

/// Counters of host-side work, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    pub submits: u64,
    pub dispatches: u64,
    pub pipelines: usize,
    /// Bind groups created (the recorder reuses them across steps).
    pub bind_groups: u64,
    /// Host time turning recorded commands into a command buffer at flushes (uniform arena,
    /// bind groups, passes: [`Recorder::encode`]), in ns.
    pub encode_ns: u64,
    /// Host time in `queue.submit` and the flush's error scopes, in ns (on a CPU adapter the
    /// driver may do some of the work here).
    pub submit_ns: u64,
    /// Time the host waited for submitted work (syncs and readbacks), in ns.
    pub wait_ns: u64,
}

fn add_ns(counter: &AtomicU64, d: std::time::Duration) {
    counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
}

/// Staging buffers the readback cache keeps (a step reads the same one or two sizes back; an
/// evaluation a few more).
const READBACK_CACHE: usize = 8;

/// [`Gpu::row_clusters`] on GPUs: 8 rows on 64 invocations, two 32-wide warps or one 64-wide
/// wave.
pub const ROW_CLUSTERS_GPU: u32 = 8;

/// Per-device state that layers above the runtime keep on a [`Gpu`] (e.g. the matmul tuning), by
/// type.
type DeviceState = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

pub struct Gpu {
    id: DeviceId,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    /// The device's memory in bytes and where the figure came from (see [`capacity`]).
    memory_capacity: Option<(u64, &'static str)>,
    pool: BufferPool,
    state: Mutex<DeviceState>,
    pipelines: Mutex<PipelineCache>,
    recorder: Mutex<Recorder>,
    /// MAP_READ buffers for readbacks, reused across reads: at most [`READBACK_CACHE`] of them,
    /// the least recently used dropped first.
    readback: Mutex<Vec<wgpu::Buffer>>,
    /// Operand textures by (recording thread, slot) (see [`texture`]).
    textures: Mutex<texture::TextureCache>,
    /// Whether memory-bound kernels that have a texture form use it ([`Gpu::texture_reads`]).
    texture_reads: std::sync::atomic::AtomicBool,
    /// Rows per workgroup of the one-cluster-a-row kernels ([`Gpu::row_clusters`]).
    row_clusters: std::sync::atomic::AtomicU32,
    /// Whether a GELU next to a Linear layer runs in the matmul's stores ([`Gpu::gelu_in_stores`]).
    gelu_in_stores: std::sync::atomic::AtomicBool,
    submits: AtomicU64,
    dispatches: AtomicU64,
    encode_ns: AtomicU64,
    submit_ns: AtomicU64,
    wait_ns: AtomicU64,
    /// While set, every dispatch runs alone and its wall time is appended (label, ms): the
    /// profile on CPU adapters ([`Gpu::profile`]).
    wall_profile: Mutex<Option<Vec<(String, f64)>>>,
    /// An error of recorded work (a pipeline the device refused), returned by the next flush.
    pending_error: Mutex<Option<Error>>,
}

impl Gpu {
    /// Opens the adapter `selector` names (an index or a name substring; `None` falls back to
    /// `WGTRAIN_ADAPTER`, then to the best ranked adapter) on the backends `WGTRAIN_BACKEND` allows.
    pub fn new(selector: Option<&str>) -> Result<Gpu> {
        Self::new_with(selector, &DeviceOptions::default())
    }

    /// `n` devices on the adapter `selector` names (as [`Gpu::new`]): each with its own queue,
    /// pool and tuning, e.g. one per data-parallel rank or pipeline stage.
    pub fn open_n(selector: Option<&str>, n: usize) -> Result<Vec<Gpu>> {
        (0..n).map(|_| Gpu::new(selector)).collect()
    }

    /// One device on every adapter the backends `WGTRAIN_BACKEND` allows, in enumeration order.
    pub fn open_all() -> Result<Vec<Gpu>> {
        let backends = adapter::backends_from_env()?;
        let instance = adapter::instance(backends);
        let adapters = adapter::enumerate(&instance, backends);
        if adapters.is_empty() {
            return Err(Error::NoAdapter {
                backends: String::new(),
            });
        }
        adapters.into_iter().map(Gpu::open).collect()
    }

    /// Creates a device on `adapter` with the adapter's own limits, and with every optional feature
    /// it offers.
    pub fn open(adapter: wgpu::Adapter) -> Result<Gpu> {
        Self::open_with(adapter, &DeviceOptions::default())
    }

    /// Creates a device on `adapter` with the optional features of `options` that the adapter
    /// offers, and its limits (the adapter's own when none are given).
    pub fn open_with(adapter: wgpu::Adapter, options: &DeviceOptions) -> Result<Gpu> {
        let info = adapter.get_info();
        let memory = capacity::of_adapter(&adapter);
        let features = adapter.features() & OPTIONAL_FEATURES & options.features;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgtrain"),
            required_features: features,
            // The adapter's maxima, not wgpu's defaults (whose max_buffer_size is 256 MiB).
            required_limits: options.limits.clone().unwrap_or_else(|| adapter.limits()),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|source| Error::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;
        Ok(Self::from_parts(device, queue, info, memory))
    }

    /// Wraps a device and queue an application already owns (e.g. one it renders with), so it can
    /// train on the same device. wgtrain uses whatever features and limits the device was made with.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Gpu {
        let info = device.adapter_info();
        let memory = capacity::of_device(&info);
        Self::from_parts(device, queue, info, memory)
    }

    /// The adapter chosen as [`Gpu::new`] would, opened with `options`.
    pub fn new_with(selector: Option<&str>, options: &DeviceOptions) -> Result<Gpu> {
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
        Self::open_with(adapters.swap_remove(index), options)
    }

    fn from_parts(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        memory: Option<(u64, &'static str)>,
    ) -> Gpu {
        let id = register_device(&info, false);
        let pool = BufferPool::new(device.clone(), id);
        let mut gpu = Self::assemble(id, device, queue, info, pool, DeviceState::default());
        gpu.memory_capacity = memory;
        gpu
    }

    /// The device's memory in bytes, and where the figure came from ("largest device-local
    /// heap", "host memory available", or the `WGTRAIN_DEVICE_MEMORY` override); None where
    /// the backend tells nothing (see [`capacity`]).
    pub fn memory_capacity(&self) -> Option<(u64, &'static str)> {
        self.memory_capacity
    }

    fn assemble(
        id: DeviceId,
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        pool: BufferPool,
        state: DeviceState,
    ) -> Gpu {
        Gpu {
            id,
            limits: device.limits(),
            memory_capacity: None,
            pool,
            state: Mutex::new(state),
            device,
            queue,
            pipelines: Mutex::default(),
            recorder: Mutex::default(),
            readback: Mutex::default(),
            textures: Mutex::default(),
            texture_reads: (info.device_type == wgpu::DeviceType::Cpu).into(),
            row_clusters: if info.device_type == wgpu::DeviceType::Cpu {
                1.into()
            } else {
                ROW_CLUSTERS_GPU.into()
            },
            gelu_in_stores: true.into(),
            submits: AtomicU64::new(0),
            dispatches: AtomicU64::new(0),
            encode_ns: AtomicU64::new(0),
            submit_ns: AtomicU64::new(0),
            wait_ns: AtomicU64::new(0),
            wall_profile: Mutex::new(None),
            pending_error: Mutex::default(),
            info,
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

    /// A ledger twin of this device: the same adapter, features, limits and per-device state
    /// (the matmul tuning), but a pool that creates no buffers and a recorder that keeps no
    /// commands; readbacks return zeros. Running a training step on it measures what the step
    /// allocates, per category, without allocating it: this is the memory planner.
    pub fn ledger(&self) -> Gpu {
        let id = register_device(&self.info, true);
        let pool = BufferPool::ledger(self.device.clone(), id);
        let state = self.state.lock().unwrap().clone();
        let info = self.info.clone();
        let mut twin = Self::assemble(
            id,
            self.device.clone(),
            self.queue.clone(),
            info,
            pool,
            state,
        );
        twin.memory_capacity = self.memory_capacity;
        // (the unfused GELU allocates a buffer the fused one does not)
        twin.set_gelu_in_stores(self.gelu_in_stores());
        twin
    }

    /// Whether this is a [`Gpu::ledger`] twin.
    pub fn is_ledger(&self) -> bool {
        self.pool.is_ledger()
    }

    /// This device's identity; every tensor carries the id of the device it lives on.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// Per-device state of type `T` that an upper layer stored with [`Gpu::set_state`].
    pub fn state<T: Any + Send + Sync + Clone>(&self) -> Option<T> {
        let map = self.state.lock().unwrap();
        map.get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
    }

    pub fn set_state<T: Any + Send + Sync>(&self, value: T) {
        self.state
            .lock()
            .unwrap()
            .insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// Panics (a programmer error) when `t` lives on another device than this one.
    #[track_caller]
    pub fn check_device<B: DeviceBuffer + ?Sized>(&self, op: &str, t: &B) {
        let on = t.pooled().device();
        if on != self.id {
            panic!(
                "{op}: tensor {:?} lives on {}, but the op runs on {}",
                t.label(),
                device_name(on),
                device_name(self.id)
            );
        }
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
    /// The pool's accounting, with [`MemoryStats::runtime`] (the recorder's arenas, the
    /// readback staging buffers and the operand textures) filled in.
    pub fn memory(&self) -> MemoryStats {
        let mut m = self.pool.stats();
        m.runtime = self.recorder.lock().unwrap().arena_bytes()
            + self.textures.lock().unwrap().bytes()
            + self
                .readback
                .lock()
                .unwrap()
                .iter()
                .map(|b| b.size())
                .sum::<u64>();
        m
    }
    pub fn stats(&self) -> GpuStats {
        GpuStats {
            submits: self.submits.load(Ordering::Relaxed),
            dispatches: self.dispatches.load(Ordering::Relaxed),
            pipelines: self.pipelines.lock().unwrap().len(),
            bind_groups: self.recorder.lock().unwrap().bind_groups_created,
            encode_ns: self.encode_ns.load(Ordering::Relaxed),
            submit_ns: self.submit_ns.load(Ordering::Relaxed),
            wait_ns: self.wait_ns.load(Ordering::Relaxed),
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
    pub fn dispatch<B: DeviceBuffer>(
        &self,
        kernel: &Kernel,
        args: &[(&B, Access)],
        params: &[u32],
        groups: [u32; 3],
    ) {
        let binds: Vec<Binding> = args
            .iter()
            .map(|(t, a)| Binding::Buffer(t as &dyn DeviceBuffer, *a))
            .collect();
        self.dispatch_bound(kernel, &binds, params, groups);
    }

    /// [`Gpu::dispatch`] with buffers and textures: bindings 1.. in the order given.
    pub fn dispatch_bound(
        &self,
        kernel: &Kernel,
        binds: &[Binding],
        params: &[u32],
        groups: [u32; 3],
    ) {
        for b in binds {
            match b {
                Binding::Buffer(t, _) => self.check_device(kernel.entry, *t),
                Binding::Texture(t) => assert_eq!(
                    t.device(),
                    self.id,
                    "{}: a texture of {} bound on {}",
                    kernel.entry,
                    device_name(t.device()),
                    device_name(self.id)
                ),
            }
        }
        if groups.contains(&0) || self.is_ledger() {
            return;
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        assert!(
            groups.iter().all(|&g| g <= max),
            "{}::{}: {groups:?} workgroups exceed the limit of {max} per dimension",
            kernel.shader.name(),
            kernel.entry
        );
        let access: Vec<Access> = binds
            .iter()
            .map(|b| match b {
                Binding::Buffer(_, a) => *a,
                Binding::Texture(_) => Access::Texture,
            })
            .collect();
        let pipeline = self
            .pipelines
            .lock()
            .unwrap()
            .get(&self.device, kernel, &access);
        let pipeline = match pipeline {
            Ok(p) => p,
            Err(e) => {
                // Reported by the next flush or sync: ops record, they do not fail.
                self.defer_error(Error::Device(e));
                return;
            }
        };
        let buffers = binds
            .iter()
            .map(|b| match b {
                Binding::Buffer(t, _) => Bound::Buffer(t.buffer().clone(), t.bytes()),
                Binding::Texture(t) => Bound::Texture(t.view.clone()),
            })
            .collect();
        let wall_label = self
            .wall_profile
            .lock()
            .unwrap()
            .is_some()
            .then(|| pipeline.label.clone());
        if wall_label.is_some() && !self.recorder.lock().unwrap().is_empty() {
            // what was recorded before this dispatch (copies, clears, uploads) runs first
            self.time_alone(TRANSFERS.to_string());
        }
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
        if let Some(label) = wall_label {
            self.time_alone(label);
        }
    }

    /// Under a wall-clock profile: runs what is recorded as one submit and adds its time
    /// under `label`.
    fn time_alone(&self, label: String) {
        let t = Instant::now();
        match self.sync() {
            Ok(()) => {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if let Some(times) = self.wall_profile.lock().unwrap().as_mut() {
                    times.push((label, ms));
                }
            }
            Err(e) => self.defer_error(e),
        }
    }

    /// Whether kernels that have a texture form (`shaders::TextureForm`, the Adam step) read
    /// their inputs from operand textures: on CPU adapters by default, where a texel fetch is one
    /// call for all SIMD lanes and a storage read a loop over them; GPUs read buffers. Both forms give the same bits.
    pub fn texture_reads(&self) -> bool {
        self.texture_reads.load(Ordering::Relaxed) && !self.is_ledger()
    }

    /// Chooses the form [`Gpu::texture_reads`] reports (tests run both on one adapter).
    pub fn set_texture_reads(&self, on: bool) {
        self.texture_reads.store(on, Ordering::Relaxed);
    }

    /// How many rows a workgroup of the one-cluster-a-row kernels (LayerNorm, the attention
    /// softmax and its backward, softmax-xent: `*_subgroup.wgsl`) works on at once, each on 8
    /// lanes of a subgroup (the kernels' `CLUSTERS`, a workgroup of 8 per row). On CPU adapters
    /// 1: a workgroup is one 8-lane subgroup (lavapipe's SIMD width on AVX2) and walks several
    /// rows ([`crate::ops`]'s `subgroup_rows_per_group`). On GPUs [`ROW_CLUSTERS_GPU`], so that a
    /// workgroup fills 32- and 64-wide subgroups instead of a quarter or an eighth of one. Both
    /// give the same values up to the order of a row's sums (checked against f64 on lavapipe).
    pub fn row_clusters(&self) -> u32 {
        self.row_clusters.load(Ordering::Relaxed)
    }

    /// Whether `ops::matmul::matmul_gelu` and `matmul_gelu_grad` (a Linear layer and the GELU
    /// after it, and the gradient back through both) run the GELU in the matmul's stores: one
    /// pass over C instead of three, and no buffer for the gradient at the GELU's output. On by
    /// default everywhere (on lavapipe the fused pass takes the time of the matmul and the
    /// elementwise kernel one after the other: `WGTRAIN_GELU=1 cargo bench --bench kernels`,
    /// README; on GPUs it saves two passes over the MLP's widest activation); off runs those two
    /// (tests compare them: the same bits).
    pub fn gelu_in_stores(&self) -> bool {
        self.gelu_in_stores.load(Ordering::Relaxed)
    }

    /// Chooses [`Gpu::gelu_in_stores`] (tests run both on one adapter).
    pub fn set_gelu_in_stores(&self, on: bool) {
        self.gelu_in_stores.store(on, Ordering::Relaxed);
    }

    /// Chooses [`Gpu::row_clusters`]: 1 or [`ROW_CLUSTERS_GPU`] (tests run both on one adapter).
    pub fn set_row_clusters(&self, clusters: u32) {
        assert!(
            clusters == 1 || clusters == ROW_CLUSTERS_GPU,
            "row clusters: 1 or {ROW_CLUSTERS_GPU}, not {clusters}"
        );
        self.row_clusters.store(clusters, Ordering::Relaxed);
    }

    /// An operand texture holding at least `texels` texels (rows of
    /// [`texture::TEXELS_PER_ROW`]) for operand `slot` of a kernel (two operands of one
    /// dispatch take different slots), reused across calls from this thread with the same key
    /// (see [`texture`]: one per key, grown to the largest request); None on a ledger twin (which runs nothing), for no texels, or past the
    /// adapter's texture size.
    pub fn operand_texture(&self, slot: u32, texels: u64) -> Option<Arc<OperandTexture>> {
        let max = self.limits.max_texture_dimension_2d;
        let height = u32::try_from(OperandTexture::rows_for(texels)).ok()?;
        if self.is_ledger() || height == 0 || height > max || texture::TEXELS_PER_ROW > max {
            return None;
        }
        Some(
            self.textures
                .lock()
                .unwrap()
                .get((std::thread::current().id(), slot), height, || {
                    OperandTexture::new(&self.device, self.id, height)
                }),
        )
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
    pub fn clear<B: DeviceBuffer>(&self, t: &B) {
        self.check_device("clear", t);
        if self.is_ledger() {
            return;
        }
        self.recorder.lock().unwrap().commands.push(Command::Clear {
            buffer: t.buffer().clone(),
            size: t.bytes().div_ceil(4) * 4,
        });
    }

    /// Records a copy of `src` into `dst` (the same byte size).
    pub fn copy<B: DeviceBuffer>(&self, src: &B, dst: &B) {
        assert_eq!(
            src.bytes(),
            dst.bytes(),
            "copy {:?} -> {:?}",
            src.label(),
            dst.label(),
        );
        self.check_device("copy", src);
        self.check_device("copy", dst);
        if self.is_ledger() {
            return;
        }
        self.recorder.lock().unwrap().commands.push(Command::Copy {
            src: src.buffer().clone(),
            src_offset: 0,
            dst: dst.buffer().clone(),
            dst_offset: 0,
            size: src.bytes().div_ceil(4) * 4,
        });
    }

    /// Records a copy of `texels` vec4s of `src` from vec4 `first` on into `dst` in its flat
    /// layout (the j-th at texel (j % TEXELS_PER_ROW, j / TEXELS_PER_ROW)): one transfer of the
    /// whole rows, one of the last partial row.
    pub fn copy_to_texture(
        &self,
        src: &dyn DeviceBuffer,
        first: u64,
        texels: u64,
        dst: &OperandTexture,
    ) {
        self.check_device("copy_to_texture", src);
        assert_eq!(
            dst.device(),
            self.id,
            "copy_to_texture: a texture of another device"
        );
        assert!(
            src.bytes() >= (first + texels) * 16 && dst.bytes() >= texels * 16,
            "copy_to_texture: vec4s {first}..+{texels} of {:?} ({} bytes) into a texture of {} bytes",
            src.label(),
            src.bytes(),
            dst.bytes()
        );
        if self.is_ledger() {
            return;
        }
        let per_row = u64::from(texture::TEXELS_PER_ROW);
        let (rows, rest) = (texels / per_row, texels % per_row);
        let mut recorder = self.recorder.lock().unwrap();
        let mut copy = |first_row: u64, width: u64, height: u64| {
            recorder.commands.push(Command::CopyToTexture {
                src: src.buffer().clone(),
                offset: (first + first_row * per_row) * 16,
                dst: dst.texture.clone(),
                first_row: first_row as u32,
                width: width as u32,
                height: height as u32,
            })
        };
        if rows > 0 {
            copy(0, per_row, rows);
        }
        if rest > 0 {
            copy(rows, rest, 1);
        }
    }

    /// Records a copy of `bytes` bytes from `src` at `src_offset` to `dst` at `dst_offset`
    /// (offsets and size multiples of 4).
    pub fn copy_region<B: DeviceBuffer>(
        &self,
        src: &B,
        src_offset: u64,
        dst: &B,
        dst_offset: u64,
        bytes: u64,
    ) {
        // a buffer's storage is whole 32-bit words (halves and 8-bit values packed in them), so
        // a copy may take the last word of an odd-length half tensor whole
        let words = |b: &B| b.bytes().next_multiple_of(4);
        assert!(
            src_offset + bytes <= words(src) && dst_offset + bytes <= words(dst),
            "copy_region {:?}[{src_offset}..+{bytes}] -> {:?}[{dst_offset}..]",
            src.label(),
            dst.label()
        );
        self.check_device("copy_region", src);
        self.check_device("copy_region", dst);
        if self.is_ledger() {
            return;
        }
        self.recorder.lock().unwrap().commands.push(Command::Copy {
            src: src.buffer().clone(),
            src_offset,
            dst: dst.buffer().clone(),
            dst_offset,
            size: bytes,
        });
    }

    /// Writes `data` into `t`, ordered after everything recorded so far.
    pub fn upload<B: DeviceBuffer>(&self, t: &B, data: &[u8]) {
        assert_eq!(data.len() as u64, t.bytes(), "upload into {:?}", t.label(),);
        self.check_device("upload", t);
        if self.is_ledger() {
            return;
        }
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

    /// Keeps the first error of recorded work for the next [`Gpu::flush`] to return.
    pub(crate) fn defer_error(&self, e: Error) {
        let mut pending = self.pending_error.lock().unwrap();
        if pending.is_none() {
            *pending = Some(e);
        }
    }

    /// Submits everything recorded so far (one submit), without waiting. Encoding and the
    /// submit run inside wgpu error scopes: work the device refuses (an invalid dispatch, a
    /// pipeline it cannot build, memory it cannot find) is returned as an error, and the batch
    /// it was in does not run.
    pub fn flush(&self) -> Result<()> {
        if let Some(e) = self.pending_error.lock().unwrap().take() {
            self.recorder.lock().unwrap().commands.clear();
            return Err(e);
        }
        let mut rec = self.recorder.lock().unwrap();
        if rec.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let encoded = rec.encode(&self.device, &self.queue);
        let t1 = Instant::now();
        if let Some(cb) = encoded {
            self.queue.submit([cb]);
            self.submits.fetch_add(1, Ordering::Relaxed);
        }
        drop(rec);
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        add_ns(&self.encode_ns, t1 - t0);
        add_ns(&self.submit_ns, t1.elapsed());
        match (oom, invalid) {
            (Some(e), _) => Err(Error::Device(format!("out of memory running a batch: {e}"))),
            (None, Some(e)) => Err(Error::Device(e.to_string())),
            (None, None) => Ok(()),
        }
    }

    /// Submits what is recorded and waits until the GPU has finished it.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.wait()
    }

    /// Waits until the GPU has finished what was submitted (counted in [`GpuStats::wait_ns`]).
    fn wait(&self) -> Result<()> {
        let t = Instant::now();
        let polled = self.device.poll(wgpu::PollType::wait_indefinitely());
        add_ns(&self.wait_ns, t.elapsed());
        polled.map_err(|e| Error::Readback(e.to_string()))?;
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
        self.flush()?;
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
        self.flush()?;
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
        self.wait()?;
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
    pub fn read_bytes<B: DeviceBuffer>(&self, t: &B) -> Result<Vec<u8>> {
        self.check_device("read", t);
        if self.is_ledger() {
            return Ok(vec![0; t.bytes() as usize]);
        }
        let size = t.bytes().div_ceil(4) * 4;
        let cached = {
            let mut cache = self.readback.lock().unwrap();
            cache
                .iter()
                .position(|b| b.size() == size)
                .map(|i| cache.remove(i))
        };
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
        self.flush()?;
        let mut bytes = self.map_read(&staging)?;
        let mut cache = self.readback.lock().unwrap();
        // most recently used last
        cache.push(staging);
        if cache.len() > READBACK_CACHE {
            cache.remove(0).destroy();
        }
        drop(cache);
        bytes.truncate(t.bytes() as usize);
        Ok(bytes)
    }
}
