//! The buffer pool: every device buffer the trainer owns comes from here and is charged to a
//! [`Category`]. Freed buffers are kept by size class and handed out again, so a training step
//! allocates nothing after the first one. The pool's counters are the ground truth for every memory
//! figure wgtrain prints.
//!
//! Size classes: requests are rounded up to a multiple of 256 bytes, and above 4 KiB to one of
//! eight steps per power of two, so a class wastes at most 12.5 %. That rounding is what
//! `held_bytes − live_bytes` calls internal fragmentation; freed-but-cached buffers are counted
//! apart as `cached_bytes`.
//!
//! A pool in ledger mode ([`BufferPool::ledger`]) creates no buffers: it keeps the same books (every
//! request, category, size class and reuse) over one shared placeholder buffer, so that running
//! a training step on a ledger [`crate::Gpu`] measures what the step would allocate.

use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Which device a buffer (and so a tensor) lives on: unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceId(pub u64);

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device #{}", self.0)
    }
}

/// What a buffer is for; every byte is charged to exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Params,
    Grads,
    OptimizerState,
    Activations,
    Workspace,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Params,
        Category::Grads,
        Category::OptimizerState,
        Category::Activations,
        Category::Workspace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Params => "params",
            Category::Grads => "grads",
            Category::OptimizerState => "optimizer_state",
            Category::Activations => "activations",
            Category::Workspace => "workspace",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Bytes per category, indexable by [`Category`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByCategory(pub [u64; 5]);

impl ByCategory {
    pub fn get(&self, c: Category) -> u64 {
        self.0[c.index()]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// `{"params": …, "grads": …, …, "total": …}` for metrics and `--json` output.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for c in Category::ALL {
            map.insert(c.name().into(), self.get(c).into());
        }
        map.insert("total".into(), self.total().into());
        serde_json::Value::Object(map)
    }
}

/// A snapshot of the pool's accounting.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryStats {
    /// Bytes requested by live buffers, per category.
    pub live: ByCategory,
    /// The highest `live` each category has reached (per category, not at one instant).
    pub peak: ByCategory,
    /// The highest total of live bytes at one instant.
    pub peak_total: u64,
    /// Bytes of device memory behind live buffers (requests rounded up to their size class).
    pub held_live: u64,
    /// Bytes of device memory in freed buffers the pool keeps for reuse.
    pub cached: u64,
    /// Device buffers created since the pool was made (a steady training step adds none).
    pub allocations: u64,
    /// Requests served from the cache.
    pub reuses: u64,
    /// The most device memory the pool has held at once (live and cached buffers, by class).
    pub peak_held: u64,
    /// Device memory outside the pool and its categories (filled in by `Gpu::memory`): the
    /// recorder's uniform and upload arenas and the readback staging buffers. Timing and
    /// profiling buffers (bench, `--profile`) live only for one measurement and are not counted.
    pub runtime: u64,
}

impl MemoryStats {
    /// Device memory the pool holds that no live tensor uses: rounding waste plus the cache.
    pub fn unusable_bytes(&self) -> u64 {
        self.held_live - self.live.total() + self.cached
    }

    /// Device memory held now (live buffers by size class, and cached free ones).
    pub fn held(&self) -> u64 {
        self.held_live + self.cached
    }

    /// Fragmentation as the course defines it: of the most memory the pool ever held, the share
    /// no tensor needed, i.e. `1 − peak_total / peak_held` (rounding waste at the peak, and
    /// cached buffers that the peak could not use). 0 for an empty pool.
    pub fn fragmentation(&self) -> f64 {
        if self.peak_held == 0 {
            0.0
        } else {
            1.0 - self.peak_total as f64 / self.peak_held as f64
        }
    }
}

/// Usage flags of every pooled buffer: storage, and copy in both directions (uploads, readbacks,
/// clears).
pub const POOL_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// The size class a request of `bytes` is served from.
pub fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(4);
    let rounded = bytes.div_ceil(256) * 256;
    if rounded <= 4096 {
        return rounded;
    }
    // Eight steps per power of two: step = 2^(floor(log2)) / 8.
    let step = (1u64 << (63 - rounded.leading_zeros())) / 8;
    rounded.div_ceil(step) * step
}

#[derive(Default)]
struct PoolState {
    /// Free buffers by size class, by creation number (so the oldest is the first: a lookup
    /// costs log n, which keeps a 10 000-layer plan linear in the layers).
    free: HashMap<u64, BTreeMap<u64, wgpu::Buffer>>,
    stats: MemoryStats,
    /// Ledger mode only: every tensor name requested, with its largest request, in
    /// first-request order, and each name's index in it.
    largest: Vec<(String, u64)>,
    largest_index: HashMap<String, usize>,
}

/// Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct BufferPool {
    device: wgpu::Device,
    id: DeviceId,
    /// Ledger mode: the one placeholder every request is handed (nothing is created).
    placeholder: Option<wgpu::Buffer>,
    state: Arc<Mutex<PoolState>>,
}

impl BufferPool {
    pub fn new(device: wgpu::Device, id: DeviceId) -> Self {
        BufferPool {
            device,
            id,
            placeholder: None,
            state: Arc::default(),
        }
    }

    /// A pool that keeps the books of [`BufferPool::alloc`] without creating buffers.
    pub fn ledger(device: wgpu::Device, id: DeviceId) -> Self {
        let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgtrain ledger placeholder"),
            size: 256,
            usage: POOL_USAGE,
            mapped_at_creation: false,
        });
        BufferPool {
            placeholder: Some(placeholder),
            ..Self::new(device, id)
        }
    }

    pub fn is_ledger(&self) -> bool {
        self.placeholder.is_some()
    }

    /// Ledger mode: every tensor name requested so far and its largest request, in first-request
    /// order (empty for a real pool).
    pub fn requests(&self) -> Vec<(String, u64)> {
        self.state.lock().unwrap().largest.clone()
    }

    /// A buffer of at least `bytes` bytes charged to `category`. Its contents are unspecified:
    /// callers that need zeros clear it through the recorder. The device's refusal (out of
    /// memory, or a size it does not allow) is an error naming `label`.
    pub fn alloc(&self, label: &str, bytes: u64, category: Category) -> Result<PooledBuffer> {
        let class = size_class(bytes);
        let mut st = self.state.lock().unwrap();
        // The oldest free buffer of the class, not the last freed: which buffer a tensor gets
        // then depends only on which are free, not on the order they were freed in, so a
        // training step lands on the same buffers every time and its bind groups can be reused.
        let reused = st.free.get_mut(&class).and_then(|list| list.pop_first());
        let (serial, buffer) = match reused {
            Some(b) => {
                st.stats.cached -= class;
                st.stats.reuses += 1;
                b
            }
            None => {
                let buffer = match &self.placeholder {
                    Some(p) => p.clone(),
                    None => self.create(label, bytes, class)?,
                };
                st.stats.allocations += 1;
                (st.stats.allocations, buffer)
            }
        };
        if self.placeholder.is_some() {
            let st = &mut *st;
            match st.largest_index.get(label) {
                Some(&i) => st.largest[i].1 = st.largest[i].1.max(bytes),
                None => {
                    st.largest_index.insert(label.to_string(), st.largest.len());
                    st.largest.push((label.to_string(), bytes));
                }
            }
        }
        let s = &mut st.stats;
        let i = category.index();
        s.live.0[i] += bytes;
        s.peak.0[i] = s.peak.0[i].max(s.live.0[i]);
        s.peak_total = s.peak_total.max(s.live.total());
        s.held_live += class;
        s.peak_held = s.peak_held.max(s.held());
        drop(st);
        Ok(PooledBuffer {
            buffer,
            serial,
            bytes,
            class,
            category,
            device: self.id,
            pool: self.state.clone(),
        })
    }

    /// Creates a device buffer inside an error scope, so that a refusal is a value.
    fn create(&self, label: &str, bytes: u64, class: u64) -> Result<wgpu::Buffer> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: class,
            usage: POOL_USAGE,
            mapped_at_creation: false,
        });
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        if oom.is_some() {
            return Err(Error::OutOfMemory {
                tensor: label.to_string(),
                bytes,
            });
        }
        if let Some(e) = invalid {
            return Err(Error::Device(format!(
                "creating the buffer for {label:?} ({bytes} bytes): {e}"
            )));
        }
        Ok(buffer)
    }

    pub fn stats(&self) -> MemoryStats {
        self.state.lock().unwrap().stats
    }

    /// Starts peak tracking afresh from what is live now (e.g. after model set-up).
    pub fn reset_peaks(&self) {
        let mut st = self.state.lock().unwrap();
        st.stats.peak = st.stats.live;
        st.stats.peak_total = st.stats.live.total();
    }

    /// Destroys every cached free buffer, giving its memory back to the driver.
    pub fn trim(&self) {
        self.trim_since(0);
    }

    /// The creation number of the newest buffer so far: buffers created after it are the ones
    /// [`BufferPool::trim_since`] gives back.
    pub fn mark(&self) -> u64 {
        self.state.lock().unwrap().stats.allocations
    }

    /// Destroys the cached free buffers created after `mark`, keeping the older ones (e.g. a
    /// training step's working set after an evaluation that needed buffers of other sizes).
    pub fn trim_since(&self, mark: u64) {
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        let ledger = self.placeholder.is_some();
        for (class, bufs) in st.free.iter_mut() {
            bufs.retain(|serial, b| {
                let keep = *serial <= mark;
                if !keep {
                    st.stats.cached -= class;
                    if !ledger {
                        b.destroy();
                    }
                }
                keep
            });
        }
        st.free.retain(|_, bufs| !bufs.is_empty());
    }
}

/// A buffer on loan from the pool; dropping it returns it to the pool's cache.
pub struct PooledBuffer {
    buffer: wgpu::Buffer,
    /// Creation number within the pool (free buffers are reused oldest first).
    serial: u64,
    bytes: u64,
    class: u64,
    category: Category,
    device: DeviceId,
    pool: Arc<Mutex<PoolState>>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// The device the buffer was created on.
    pub fn device(&self) -> DeviceId {
        self.device
    }
    /// Bytes requested (what the category is charged).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn category(&self) -> Category {
        self.category
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let mut st = self.pool.lock().unwrap();
        let s = &mut st.stats;
        s.live.0[self.category.index()] -= self.bytes;
        s.held_live -= self.class;
        s.cached += self.class;
        st.free
            .entry(self.class)
            .or_default()
            .insert(self.serial, self.buffer.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_by_at_most_an_eighth_above_4k() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 512);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4097), 4608);
        for bytes in [5000u64, 70_001, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = size_class(bytes);
            assert!(
                c >= bytes && (c - bytes) as f64 <= bytes as f64 / 8.0,
                "{bytes} -> {c}"
            );
            assert_eq!(size_class(c), c, "a class is its own class");
        }
    }
}
