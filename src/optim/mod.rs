//! Optimizers as fused WGSL kernels over each parameter tensor and its state.
//! For now AdamW with global-norm gradient clipping; the rest of the optimizer set comes later.

use crate::error::Result;
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::nn::Param;
use crate::ops::reduce::{reduce, Reduction};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

const ADAMW_STEP: Kernel = Kernel::new(Shader::AdamW, "step");

/// AdamW hyper-parameters. Weight decay applies to tensors marked `decay` (matrices and
/// embeddings), never to biases or LayerNorm gains, as in GPT-2 / nanoGPT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this; 0 disables clipping.
    pub grad_clip: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: 1.0,
        }
    }
}

/// AdamW state: first and second moments per parameter (8 bytes per parameter, charged to
/// optimizer state), the step count, and a one-element buffer for the squared global norm.
pub struct AdamW {
    pub config: AdamWConfig,
    /// Steps taken so far (bias correction uses t + 1 for the next one).
    pub t: u64,
    /// (m, v) per parameter, in the model's parameter order.
    pub moments: Vec<(Tensor, Tensor)>,
    norm_sq: Tensor,
}

impl AdamW {
    pub fn new(gpu: &Gpu, config: AdamWConfig, params: &[&Param]) -> Result<Self> {
        let mut moments = Vec::with_capacity(params.len());
        for p in params {
            let shape = p.value.shape();
            moments.push((
                Tensor::zeros(
                    gpu,
                    &format!("{}.adam_m", p.name),
                    shape,
                    Category::OptimizerState,
                )?,
                Tensor::zeros(
                    gpu,
                    &format!("{}.adam_v", p.name),
                    shape,
                    Category::OptimizerState,
                )?,
            ));
        }
        Ok(AdamW {
            config,
            t: 0,
            moments,
            norm_sq: Tensor::zeros(gpu, "grad norm²", &[1], Category::Workspace)?,
        })
    }

    /// Records one step at learning rate `lr`: the squared global gradient norm (a fixed-order
    /// reduction over every gradient, on the GPU), then the fused update of every tensor.
    pub fn step(&mut self, gpu: &Gpu, params: &[&Param], lr: f32) -> Result<()> {
        assert_eq!(
            params.len(),
            self.moments.len(),
            "AdamW built for another parameter list"
        );
        let c = &self.config;
        for (i, p) in params.iter().enumerate() {
            reduce(
                gpu,
                &p.grad,
                Reduction::SumOfSquares,
                &self.norm_sq,
                0,
                i > 0,
            )?;
        }
        self.t += 1;
        let bc1 = 1.0 - (c.beta1 as f64).powi(self.t as i32);
        let bc2 = 1.0 - (c.beta2 as f64).powi(self.t as i32);
        for (p, (m, v)) in params.iter().zip(&self.moments) {
            let wd = if p.decay { c.weight_decay } else { 0.0 };
            let words = [
                p.value.numel() as u32,
                lr.to_bits(),
                c.beta1.to_bits(),
                c.beta2.to_bits(),
                c.eps.to_bits(),
                wd.to_bits(),
                (bc1 as f32).to_bits(),
                (bc2 as f32).to_bits(),
                c.grad_clip.to_bits(),
            ];
            crate::ops::dispatch_items(
                gpu,
                &ADAMW_STEP,
                &[
                    (&p.grad, Access::Read),
                    (&self.norm_sq, Access::Read),
                    (&p.value, Access::ReadWrite),
                    (m, Access::ReadWrite),
                    (v, Access::ReadWrite),
                ],
                &words,
                p.value.numel(),
                256,
            );
        }
        Ok(())
    }

    /// The squared global gradient norm of the last step (a sync point).
    pub fn last_grad_norm(&self, gpu: &Gpu) -> Result<f32> {
        Ok(self.norm_sq.to_f32(gpu)?[0].sqrt())
    }
}
