//! A transformer block's MLP: GPT-2's proj(gelu(fc(x))) (C → 4C → C, with biases) or Llama's
//! SwiGLU, down(silu(gate(x)) · up(x)) (C → F twice, F → C, no biases).

use super::linear::Linear;
use super::{activation, Param};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::elementwise::{accumulate, swiglu, swiglu_backward};
use crate::tensor::Tensor;

// one per layer, built once: boxing a variant would buy nothing
#[allow(clippy::large_enum_variant)]
pub enum FeedForward {
    Gelu {
        /// C → 4C, the GELU in its stores
        fc: Linear,
        /// 4C → C
        proj: Linear,
    },
    SwiGlu {
        /// C → F
        gate: Linear,
        /// C → F
        up: Linear,
        /// F → C
        down: Linear,
    },
}

/// What the backward reads, apart from the input.
pub enum FeedForwardCache {
    /// (B, T, 4C) before and after the GELU
    Gelu { h: Tensor, g: Tensor },
    /// (B, T, F) each: gate(x), up(x) and silu(gate)·up
    SwiGlu { gate: Tensor, up: Tensor, h: Tensor },
}

impl FeedForward {
    /// x (B, T, C) → (B, T, C)
    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<(Tensor, FeedForwardCache)> {
        let shape = x.shape().to_vec();
        let mut wide = shape.clone();
        match self {
            FeedForward::Gelu { fc, proj } => {
                *wide.last_mut().unwrap() = fc.out_features;
                let h = activation(gpu, fc.dtype(), "block.h", &wide)?;
                let g = activation(gpu, fc.dtype(), "block.g", &wide)?;
                fc.forward_gelu(gpu, x, &h, &g)?;
                let out = activation(gpu, fc.dtype(), "block.mlp_out", &shape)?;
                proj.forward(gpu, &g, &out)?;
                Ok((out, FeedForwardCache::Gelu { h, g }))
            }
            FeedForward::SwiGlu { gate, up, down } => {
                *wide.last_mut().unwrap() = gate.out_features;
                let dtype = gate.dtype();
                let g = activation(gpu, dtype, "mlp.gate", &wide)?;
                gate.forward(gpu, x, &g)?;
                let u = activation(gpu, dtype, "mlp.up", &wide)?;
                up.forward(gpu, x, &u)?;
                let h = activation(gpu, dtype, "mlp.h", &wide)?;
                swiglu(gpu, &g, &u, &h);
                let out = activation(gpu, dtype, "block.mlp_out", &shape)?;
                down.forward(gpu, &h, &out)?;
                Ok((out, FeedForwardCache::SwiGlu { gate: g, up: u, h }))
            }
        }
    }

    /// Adds into the trainable parameters' gradients and returns dx.
    pub fn backward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        cache: &FeedForwardCache,
        dy: &Tensor,
    ) -> Result<Tensor> {
        match (self, cache) {
            (FeedForward::Gelu { fc, proj }, FeedForwardCache::Gelu { h, g }) => {
                let dh = activation(gpu, fc.dtype(), "block.dh", h.shape())?;
                proj.backward_through_gelu(gpu, g, h, dy, &dh)?;
                let dx = activation(gpu, fc.dtype(), "block.dln2", x.shape())?;
                fc.backward(gpu, x, &dh, Some(&dx))?;
                Ok(dx)
            }
            (
                FeedForward::SwiGlu { gate, up, down },
                FeedForwardCache::SwiGlu { gate: g, up: u, h },
            ) => {
                let dtype = gate.dtype();
                let dh = activation(gpu, dtype, "mlp.dh", h.shape())?;
                down.backward(gpu, h, dy, Some(&dh))?;
                let (dg, du) = (
                    activation(gpu, dtype, "mlp.dgate", g.shape())?,
                    activation(gpu, dtype, "mlp.dup", u.shape())?,
                );
                // the SwiGLU backward's scratch holds dh·up
                let scratch = activation(gpu, dtype, "mlp.scratch", g.shape())?;
                swiglu_backward(gpu, g, u, &dh, &scratch, &dg, &du);
                drop((dh, scratch));
                let dx = activation(gpu, dtype, "block.dln2", x.shape())?;
                gate.backward(gpu, x, &dg, Some(&dx))?;
                let dx_up = activation(gpu, dtype, "mlp.dx_up", x.shape())?;
                up.backward(gpu, x, &du, Some(&dx_up))?;
                accumulate(gpu, &dx_up, 1.0, &dx);
                Ok(dx)
            }
            _ => unreachable!("a feed-forward's cache comes from its own forward"),
        }
    }

    /// Its linears, in parameter order.
    pub fn linears(&self) -> Vec<&Linear> {
        match self {
            FeedForward::Gelu { fc, proj } => vec![fc, proj],
            FeedForward::SwiGlu { gate, up, down } => vec![gate, up, down],
        }
    }

    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            FeedForward::Gelu { fc, proj } => vec![fc, proj],
            FeedForward::SwiGlu { gate, up, down } => vec![gate, up, down],
        }
    }

    pub fn params(&self) -> Vec<&Param> {
        self.linears()
            .into_iter()
            .flat_map(|l| l.params())
            .collect()
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.linears_mut()
            .into_iter()
            .flat_map(|l| l.params_mut())
            .collect()
    }
}
