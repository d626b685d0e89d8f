//! The normalisations a transformer block chooses between: GPT-2's LayerNorm (gain and bias,
//! mean subtracted) and Llama's RMSNorm (gain only: out = x·w / sqrt(mean(x²) + eps)).

use super::layernorm::{LayerNorm, LayerNormCache};
use super::{activation, f32_activation, Build, Param};
use crate::error::Result;
use crate::gpu::{Category, Gpu};
use crate::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use crate::tensor::{DType, Tensor};

pub struct RmsNorm {
    /// (C), initialised to 1
    pub w: Param,
    pub eps: f32,
}

impl RmsNorm {
    pub fn new(b: &Build, name: &str, channels: usize, eps: f32) -> Result<RmsNorm> {
        Ok(RmsNorm {
            w: Param::constant(b, &format!("{name}.weight"), &[channels], 1.0)?,
            eps,
        })
    }

    /// x (…, C) → out of the same shape, and the per-row rstd (R) the backward reads.
    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let out = activation(gpu, self.w.compute_dtype(), "rms.out", x.shape())?;
        let rstd = f32_activation(gpu, "rms.rstd", &[x.rows()])?;
        rmsnorm_forward(gpu, x, self.w.weight(), self.eps, &out, &rstd);
        Ok((out, rstd))
    }

    /// Returns dx; adds into the gain's gradient unless it is frozen.
    pub fn backward(&self, gpu: &Gpu, x: &Tensor, rstd: &Tensor, dout: &Tensor) -> Result<Tensor> {
        let dx = activation(gpu, self.w.compute_dtype(), "rms.dx", x.shape())?;
        // the kernel binds a gradient either way; a frozen gain's pass does not run
        let scratch;
        let (dw, params) = match self.w.grad_write() {
            Some((g, accumulate)) => (g, Some(accumulate)),
            None => {
                scratch = Tensor::empty(
                    gpu,
                    "rms frozen grad",
                    &[x.cols()],
                    DType::F32,
                    Category::Workspace,
                )?;
                (&scratch, None)
            }
        };
        rmsnorm_backward(gpu, dout, x, self.w.weight(), rstd, &dx, dw, params);
        Ok(dx)
    }
}

// one per layer, built once: boxing a variant would buy nothing
#[allow(clippy::large_enum_variant)]
pub enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

/// What a norm's backward needs from its forward: the per-row statistics.
pub enum NormCache {
    Layer(LayerNormCache),
    /// (R) 1/sqrt(mean(x²) + eps)
    Rms(Tensor),
}

impl Norm {
    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<(Tensor, NormCache)> {
        Ok(match self {
            Norm::Layer(n) => {
                let (out, c) = n.forward(gpu, x)?;
                (out, NormCache::Layer(c))
            }
            Norm::Rms(n) => {
                let (out, rstd) = n.forward(gpu, x)?;
                (out, NormCache::Rms(rstd))
            }
        })
    }

    /// Returns dx; adds into the trainable parameters' gradients.
    pub fn backward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        cache: &NormCache,
        dout: &Tensor,
    ) -> Result<Tensor> {
        match (self, cache) {
            (Norm::Layer(n), NormCache::Layer(c)) => n.backward(gpu, x, c, dout),
            (Norm::Rms(n), NormCache::Rms(rstd)) => n.backward(gpu, x, rstd, dout),
            _ => unreachable!("a norm's cache comes from its own forward"),
        }
    }

    /// Whether any of its parameters trains.
    pub fn trainable(&self) -> bool {
        self.params().iter().any(|p| p.trainable())
    }

    pub fn params(&self) -> Vec<&Param> {
        match self {
            Norm::Layer(n) => n.params(),
            Norm::Rms(n) => vec![&n.w],
        }
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Norm::Layer(n) => n.params_mut(),
            Norm::Rms(n) => vec![&mut n.w],
        }
    }
}
