//! LayerNorm over the last dimension, with learned gain and bias.

use super::{activation, f32_activation, Build, Param};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::layernorm::{layernorm_backward, layernorm_forward};
use crate::tensor::Tensor;

pub const EPS: f32 = 1e-5;

pub struct LayerNorm {
    /// (C), initialised to 1
    pub w: Param,
    /// (C), initialised to 0
    pub b: Param,
}

/// What the backward needs from the forward: the per-row statistics.
pub struct LayerNormCache {
    /// (R)
    pub mean: Tensor,
    /// (R)
    pub rstd: Tensor,
}

impl LayerNorm {
    pub fn new(b: &Build, name: &str, channels: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            w: Param::constant(b, &format!("{name}.weight"), &[channels], 1.0)?,
            b: Param::constant(b, &format!("{name}.bias"), &[channels], 0.0)?,
        })
    }

    /// The working precision of its activations: its gain's.
    fn dtype(&self) -> crate::tensor::DType {
        self.w.compute_dtype()
    }

    /// x (…, C) → out of the same shape.
    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<(Tensor, LayerNormCache)> {
        let out = activation(gpu, self.dtype(), "ln.out", x.shape())?;
        let cache = LayerNormCache {
            mean: f32_activation(gpu, "ln.mean", &[x.rows()])?,
            rstd: f32_activation(gpu, "ln.rstd", &[x.rows()])?,
        };
        layernorm_forward(
            gpu,
            x,
            self.w.weight(),
            self.b.weight(),
            EPS,
            &out,
            &cache.mean,
            &cache.rstd,
        );
        Ok((out, cache))
    }

    /// Returns dx; adds into the gain and bias gradients.
    pub fn backward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        cache: &LayerNormCache,
        dout: &Tensor,
    ) -> Result<Tensor> {
        let dx = activation(gpu, self.dtype(), "ln.dx", x.shape())?;
        // One kernel writes both parameter gradients: it adds if either holds more than zeros
        // (adding to the zeros of the other is the same sum). A frozen one's share lands in a
        // scratch row; with both frozen the kernel does not run.
        let scratch = |p: &Param| -> Result<Option<Tensor>> {
            match p.trainable() {
                true => Ok(None),
                false => Tensor::empty(
                    gpu,
                    "ln frozen grad",
                    p.shape(),
                    crate::tensor::DType::F32,
                    crate::gpu::Category::Workspace,
                )
                .map(Some),
            }
        };
        let (sw, sb) = (scratch(&self.w)?, scratch(&self.b)?);
        let params = (self.w.trainable() || self.b.trainable()).then(|| {
            self.w.trainable()
                && self.w.accumulate_grad() | self.b.trainable()
                && self.b.accumulate_grad()
        });
        layernorm_backward(
            gpu,
            dout,
            x,
            self.w.weight(),
            &cache.mean,
            &cache.rstd,
            &dx,
            sw.as_ref().unwrap_or_else(|| self.w.grad()),
            sb.as_ref().unwrap_or_else(|| self.b.grad()),
            params,
        );
        Ok(dx)
    }

    pub fn params(&self) -> Vec<&Param> {
        vec![&self.w, &self.b]
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.w, &mut self.b]
    }
}
