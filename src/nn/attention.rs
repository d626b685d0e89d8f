//! Causal multi-head self-attention: qkv projection, attention, output projection.

use super::linear::Linear;
use super::{activation, Build, Param};
use crate::error::Result;
use crate::gpu::{Category, Gpu};
use crate::ops::attention::{attention_backward, attention_forward};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};

pub struct CausalSelfAttention {
    /// C → 3C, packed q | k | v
    pub qkv: Linear,
    /// C → C
    pub proj: Linear,
    pub n_head: usize,
}

pub struct AttentionCache {
    /// (B, T, 3C)
    pub qkv: Tensor,
    /// (B, NH, T, T) softmax probabilities
    pub att: Tensor,
    /// (B, T, C) attention output before the projection
    pub y: Tensor,
}

impl CausalSelfAttention {
    pub fn new(
        b: &Build,
        name: &str,
        c: usize,
        n_head: usize,
        std: f32,
        proj_std: f32,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(CausalSelfAttention {
            qkv: Linear::new(b, &format!("{name}.c_attn"), c, 3 * c, true, std, rng)?,
            proj: Linear::new(b, &format!("{name}.c_proj"), c, c, true, proj_std, rng)?,
            n_head,
        })
    }

    /// x (B, T, C) → (B, T, C)
    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<(Tensor, AttentionCache)> {
        let (b, t, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let qkv = activation(gpu, self.qkv.dtype(), "attn.qkv", &[b, t, 3 * c])?;
        self.qkv.forward(gpu, x, &qkv)?;
        let att = activation(gpu, self.qkv.dtype(), "attn.att", &[b, self.n_head, t, t])?;
        let y = activation(gpu, self.qkv.dtype(), "attn.y", &[b, t, c])?;
        attention_forward(gpu, &qkv, self.n_head, &att, &y)?;
        let out = activation(gpu, self.qkv.dtype(), "attn.out", &[b, t, c])?;
        self.proj.forward(gpu, &y, &out)?;
        Ok((out, AttentionCache { qkv, att, y }))
    }

    /// Adds into the trainable parameters' gradients; returns dx when `need_dx`.
    pub fn backward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        cache: &AttentionCache,
        dout: &Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        let dy = activation(gpu, self.qkv.dtype(), "attn.dy", cache.y.shape())?;
        self.proj.backward(gpu, &cache.y, dout, Some(&dy))?;
        let dpre = Tensor::empty(
            gpu,
            "attn.dpre",
            cache.att.shape(),
            DType::F32,
            Category::Workspace,
        )?;
        let dqkv = activation(gpu, self.qkv.dtype(), "attn.dqkv", cache.qkv.shape())?;
        attention_backward(gpu, &dy, &cache.qkv, &cache.att, self.n_head, &dpre, &dqkv)?;
        let dx = need_dx
            .then(|| activation(gpu, self.qkv.dtype(), "attn.dx", x.shape()))
            .transpose()?;
        self.qkv.backward(gpu, x, &dqkv, dx.as_ref())?;
        Ok(dx)
    }

    pub fn params(&self) -> Vec<&Param> {
        let mut p = self.qkv.params();
        p.extend(self.proj.params());
        p
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut p = self.qkv.params_mut();
        p.extend(self.proj.params_mut());
        p
    }
}
