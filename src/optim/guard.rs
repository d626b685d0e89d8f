//! The step guard and the loss scaler: a step whose loss or gradient is not finite is skipped on
//! the GPU, in that step, with no readback (`shaders/guard.wgsl` sets the skip word of the step's
//! stats, which every optimizer kernel reads), and counted in a small health buffer the host
//! reads at its own sync points; a run then stops (see `TrainConfig::max_nonfinite_steps`). With
//! dynamic loss scaling (mixed precision) the guard is PyTorch's GradScaler: an overflow of the
//! scaled gradients skips the step and halves the scale, `growth_interval` finite steps double it,
//! and the optimizer kernels unscale the gradients by the factor it leaves in the stats.

use crate::error::Result;
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::tensor::{DType, Tensor};

const GUARD: Kernel = Kernel::new(Shader::Guard, "guard");
const COUNT_STEP: Kernel = Kernel::new(Shader::Guard, "count_step");

/// Records, after an optimizer step, its count in the steps taken unless the skip word is set
/// (Adam's bias corrections read the count: a skipped step leaves t as it was).
pub fn count_step(gpu: &Gpu, stats: &Tensor) {
    gpu.dispatch(
        &COUNT_STEP,
        &[(stats, Access::ReadWrite)],
        &[0, 0, 0],
        [1, 1, 1],
    );
}

/// Words in a trainer's step stats (see `shaders/guard.wgsl` for each).
pub const STATS: usize = 8;
/// Word indices in the step stats.
pub const NORM_SQ: usize = 0;
pub const SKIP: usize = 1;
pub const UNSCALE: usize = 2;
pub const STEPS_TAKEN: usize = 3;
pub const LOSS_SCALE: usize = 4;
pub const GROWTH_TRACKER: usize = 5;
pub const OVERFLOWS: usize = 6;

/// GradScaler's defaults: the initial scale 2^16 and the finite steps before it doubles.
pub const INITIAL_SCALE: f32 = 65536.0;
pub const GROWTH_INTERVAL: u32 = 2000;

/// Dynamic loss scaling, when a run has it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scaler {
    pub initial_scale: f32,
    pub growth_interval: u32,
}

/// A trainer's step stats (8, f32; see `shaders/guard.wgsl`): [0] the squared global gradient
/// norm ([`super::grad_norm_sq`]), [1] the skip word (nonzero: the optimizer leaves every weight
/// and state as it is), [2] the gradients' unscaling factor, [3] the optimizer steps taken, [4]
/// the loss scale (`scale`: 1 without a scaler), [5] finite steps since it changed, [6] overflow
/// skips so far.
pub fn step_stats(gpu: &Gpu, scale: f32) -> Result<Tensor> {
    let mut words = [0.0; STATS];
    words[UNSCALE] = 1.0;
    words[LOSS_SCALE] = scale;
    Tensor::from_f32(gpu, "step stats", &[STATS], &words, Category::Workspace)
}

/// Records `stats[0] = norm_sq` (a squared norm computed elsewhere: ZeRO's from the shards),
/// leaving the words the guard keeps across steps as they are.
pub fn set_norm_sq(gpu: &Gpu, stats: &Tensor, norm_sq: f32) -> Result<()> {
    let v = Tensor::from_f32(gpu, "gradient norm²", &[1], &[norm_sq], Category::Workspace)?;
    crate::ops::reduce::reduce(
        gpu,
        &v,
        crate::ops::reduce::Reduction::Sum,
        stats,
        NORM_SQ,
        false,
    )
}

/// What the stats keep across steps (a checkpoint's `scaler` fields): the steps taken, the loss
/// scale, the growth tracker and the overflow count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepState {
    pub steps_taken: u64,
    pub loss_scale: f32,
    pub growth_tracker: u32,
    pub overflows: u32,
}

impl StepState {
    /// Reads it back (a sync point).
    pub fn read(gpu: &Gpu, stats: &Tensor) -> Result<StepState> {
        let w = stats.to_f32(gpu)?;
        Ok(StepState {
            steps_taken: w[STEPS_TAKEN] as u64,
            loss_scale: w[LOSS_SCALE],
            growth_tracker: w[GROWTH_TRACKER] as u32,
            overflows: w[OVERFLOWS] as u32,
        })
    }

    /// Writes it into `stats` (a resume), leaving the per-step words as a fresh trainer has them.
    pub fn write(&self, gpu: &Gpu, stats: &Tensor) {
        let mut words = [0.0; STATS];
        words[UNSCALE] = 1.0;
        words[STEPS_TAKEN] = self.steps_taken as f32;
        words[LOSS_SCALE] = self.loss_scale;
        words[GROWTH_TRACKER] = self.growth_tracker as f32;
        words[OVERFLOWS] = self.overflows as f32;
        stats.write_f32(gpu, &words);
    }
}

/// The health counters (4, u32) [`check`] keeps: see `shaders/guard.wgsl`.
pub fn health_counters(gpu: &Gpu) -> Result<Tensor> {
    let t = Tensor::empty(gpu, "step health", &[4], DType::U32, Category::Workspace)?;
    gpu.clear(&t);
    Ok(t)
}

/// Records the guard of step number `step` (1-based): sets the skip word when `loss_sum[0]` or
/// the squared norm is NaN or ±Inf, counts a failed step in `health`, and with `scaler` runs the
/// loss scaler (see `shaders/guard.wgsl`).
pub fn check(
    gpu: &Gpu,
    loss_sum: &Tensor,
    stats: &Tensor,
    health: &Tensor,
    step: u64,
    scaler: Option<Scaler>,
) {
    crate::ops::expect_f32("step guard", &[loss_sum, stats]);
    crate::tensor::expect_dtype("step guard", health, &[DType::U32]);
    assert!(
        stats.numel() == STATS && health.numel() == 4,
        "step guard: stats ({STATS}), health (4)"
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
        &[
            step,
            u32::from(scaler.is_some()),
            scaler.map_or(0, |s| s.growth_interval),
        ],
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
