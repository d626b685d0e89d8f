//! Per-kernel GPU time: [`Gpu::profile`] runs recorded work with a timestamp pair around every
//! dispatch and sums the time by kernel. Each dispatch then gets a compute pass of its own, so a
//! profiled run is a little slower than a plain one; the per-kernel split is what it is for.

use super::Gpu;
use crate::error::Result;
use std::sync::atomic::Ordering;

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
    /// every dispatch it records timed. Returns the time per kernel, largest first; None when the
    /// adapter offers no TIMESTAMP_QUERY (the work still runs).
    pub fn profile<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<Option<Vec<KernelTime>>> {
        if !self.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            work()?;
            self.sync()?;
            return Ok(None);
        }
        self.flush()?;
        self.recorder.lock().unwrap().profiling = true;
        let result = work().and_then(|_| self.sync());
        let batches = {
            let mut rec = self.recorder.lock().unwrap();
            rec.profiling = false;
            std::mem::take(&mut rec.profiled)
        };
        result?;
        let mut by_kernel: Vec<KernelTime> = vec![];
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
        }
        by_kernel.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(Some(by_kernel))
    }
}
