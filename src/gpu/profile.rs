//! Per-kernel GPU time: [`Gpu::profile`] runs recorded work with every dispatch timed and sums
//! the time by kernel. On a GPU a timestamp pair goes around every dispatch, each then in a
//! compute pass of its own. On a CPU adapter timestamps do not measure the kernels: lavapipe
//! writes them as it hands the work to its threads, so a W-MLP step's timestamps summed to 56 ms
//! of a 211 ms step while `perf` put 88 % of its CPU time in shader code. There each dispatch
//! runs alone instead, as a submit of its own timed by the wall clock, which counts its submit
//! and wait too (a fraction of a millisecond). A profiled run is slower than a plain one; the
//! per-kernel split is what it is for.

use super::Gpu;
use crate::error::Result;
use std::sync::atomic::Ordering;

/// The label under which a wall-clock profile counts the copies, clears and uploads recorded
/// between two dispatches (each such run timed as one submit).
pub const TRANSFERS: &str = "(copies, clears and uploads)";

/// How [`Gpu::profile`] timed the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileClock {
    /// Timestamp queries around every dispatch (GPUs).
    Timestamps,
    /// Every dispatch a submit of its own, timed by the host's clock (CPU adapters, and
    /// adapters without TIMESTAMP_QUERY).
    Wall,
}

impl ProfileClock {
    /// The clock that measures kernels on this device.
    pub fn for_device(gpu: &Gpu) -> ProfileClock {
        if gpu.info().device_type == wgpu::DeviceType::Cpu
            || !gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            ProfileClock::Wall
        } else {
            ProfileClock::Timestamps
        }
    }
}

/// GPU time spent in one kernel (a pipeline: shader, entry point and override constants).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct KernelTime {
    /// `shader::entry`, with override constants in brackets.
    pub kernel: String,
    pub dispatches: usize,
    pub ms: f64,
}

impl Gpu {
    /// Submits what is pending, then runs `work` (which may flush and sync as it likes) with
    /// every dispatch it records timed by `clock`. Returns the time per kernel, largest first.
    pub fn profile<T>(
        &self,
        clock: ProfileClock,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<Vec<KernelTime>> {
        self.sync()?;
        if clock == ProfileClock::Wall {
            *self.wall_profile.lock().unwrap() = Some(vec![]);
            let result = work().and_then(|_| self.sync());
            let times = self.wall_profile.lock().unwrap().take().unwrap_or_default();
            result?;
            return Ok(by_kernel(times));
        }
        assert!(
            self.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            "timestamp profiling on a device without TIMESTAMP_QUERY"
        );
        self.recorder.lock().unwrap().profiling = true;
        let result = work().and_then(|_| self.sync());
        let batches = {
            let mut rec = self.recorder.lock().unwrap();
            rec.profiling = false;
            std::mem::take(&mut rec.profiled)
        };
        result?;
        let mut times = vec![];
        let period = self.queue.get_timestamp_period() as f64;
        for (labels, resolve) in batches {
            let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgtrain profile readback"),
                size: resolve.size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            encoder.copy_buffer_to_buffer(&resolve, 0, &staging, 0, resolve.size());
            self.queue.submit([encoder.finish()]);
            self.submits.fetch_add(1, Ordering::Relaxed);
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.map_read(&staging)?);
            for (j, label) in labels.into_iter().enumerate() {
                let ms = ticks[2 * j + 1].wrapping_sub(ticks[2 * j]) as f64 * period / 1e6;
                times.push((label, ms));
            }
        }
        Ok(by_kernel(times))
    }
}

/// Dispatch times summed by kernel, largest first.
fn by_kernel(times: Vec<(String, f64)>) -> Vec<KernelTime> {
    let mut by_kernel: Vec<KernelTime> = vec![];
    for (label, ms) in times {
        match by_kernel.iter_mut().find(|k| k.kernel == label) {
            Some(k) => {
                k.dispatches += 1;
                k.ms += ms;
            }
            None => by_kernel.push(KernelTime {
                kernel: label,
                dispatches: 1,
                ms,
            }),
        }
    }
    by_kernel.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    by_kernel
}
