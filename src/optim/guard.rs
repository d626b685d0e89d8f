//! The step guard: a step whose loss or gradient is not finite is skipped on the GPU, in that
//! step, with no readback (`shaders/guard.wgsl` sets the skip word of the step's stats, which
//! every optimizer kernel reads), and counted in a small health buffer the host reads at its own
//! sync points. PyTorch's GradScaler skips such steps the same way; a run in fp32 then stops (see
//! `TrainConfig::max_nonfinite_steps`).

use crate::error::Result;
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::tensor::{DType, Tensor};

const GUARD: Kernel = Kernel::new(Shader::Guard, "guard");

/// A step's stats (2, f32): [0] the squared global gradient norm ([`super::grad_norm_sq`]),
/// [1] the skip word (nonzero: the optimizer leaves every weight and state as it is).
pub fn step_stats(gpu: &Gpu) -> Result<Tensor> {
    Tensor::zeros(gpu, "step stats", &[2], Category::Workspace)
}

/// The health counters (4, u32) [`check`] keeps: see `shaders/guard.wgsl`.
pub fn health_counters(gpu: &Gpu) -> Result<Tensor> {
    let t = Tensor::empty(gpu, "step health", &[4], DType::U32, Category::Workspace)?;
    gpu.clear(&t);
    Ok(t)
}

/// Records the guard of step number `step` (1-based): sets `stats[1]` when `loss_sum[0]` or
/// `stats[0]` is NaN or ±Inf, and counts the step in `health`.
pub fn check(gpu: &Gpu, loss_sum: &Tensor, stats: &Tensor, health: &Tensor, step: u64) {
    crate::ops::expect_f32("step guard", &[loss_sum, stats]);
    crate::tensor::expect_dtype("step guard", health, &[DType::U32]);
    assert!(
        stats.numel() == 2 && health.numel() == 4,
        "step guard: stats (2), health (4)"
    );
    // a step number past u32 saturates: the count stays right, the step named is the last
    let step = u32::try_from(step).unwrap_or(u32::MAX);
    gpu.dispatch(
        &GUARD,
        &[
            (loss_sum, Access::Read),
            (stats, Access::ReadWrite),
            (health, Access::ReadWrite),
        ],
        &[step],
        [1, 1, 1],
    );
}

/// What the guard has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Steps skipped because their loss or gradient was not finite.
    pub skipped: u32,
    /// The first such step's number (1-based).
    pub first: Option<u64>,
    /// The latest such step's number.
    pub last: Option<u64>,
    /// Whether the first one's loss, and its gradient, were not finite.
    pub first_loss_bad: bool,
    pub first_grad_bad: bool,
}

impl Health {
    /// Reads the counters back (a sync point).
    pub fn read(gpu: &Gpu, health: &Tensor) -> Result<Health> {
        let w: Vec<u32> = bytemuck::pod_collect_to_vec(&gpu.read_bytes(health)?);
        let step = |s: u32| (s > 0).then_some(s as u64);
        Ok(Health {
            skipped: w[0],
            first: step(w[1]),
            last: step(w[2]),
            first_loss_bad: w[3] & 1 != 0,
            first_grad_bad: w[3] & 2 != 0,
        })
    }

    /// "the loss and the gradient norm were NaN or infinite at step 13 (skipped)".
    pub fn describe(&self) -> String {
        let what = match (self.first_loss_bad, self.first_grad_bad) {
            (true, true) => "the loss and the gradient norm were",
            (true, false) => "the loss was",
            _ => "the gradient norm was",
        };
        let mut s = format!(
            "{what} NaN or infinite at step {}; that step's update was skipped",
            self.first.unwrap_or(0)
        );
        if self.skipped > 1 {
            s += &format!(
                ", and {} more since (the last at step {})",
                self.skipped - 1,
                self.last.unwrap_or(0)
            );
        }
        s
    }
}
