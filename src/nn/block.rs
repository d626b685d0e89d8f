//! The GPT-2 transformer block (pre-LayerNorm, residual):
//!   x_mid = x + attn(ln1(x));   y = x_mid + mlp(ln2(x_mid)),   mlp = proj(gelu(fc(·)))
//! Input and output are both (B, T, C): the uniform shape later issues cut the model at.

use super::attention::{AttentionCache, CausalSelfAttention};
use super::layernorm::{LayerNorm, LayerNormCache};
use super::linear::Linear;
use super::{activation, Build, Param};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::elementwise::{accumulate, add};
use crate::rng::Rng;
use crate::tensor::Tensor;

pub struct Block {
    pub ln1: LayerNorm,
    pub attn: CausalSelfAttention,
    pub ln2: LayerNorm,
    /// C → 4C
    pub fc: Linear,
    /// 4C → C
    pub fc_proj: Linear,
}

/// Everything the backward reads, apart from the block input.
pub struct BlockCache {
    ln1_out: Tensor,
    ln1: LayerNormCache,
    attn: AttentionCache,
    /// (B, T, C) after the attention residual
    x_mid: Tensor,
    ln2_out: Tensor,
    ln2: LayerNormCache,
    /// (B, T, 4C) before GELU
    h: Tensor,
    /// (B, T, 4C) after GELU
    g: Tensor,
}

impl Block {
    /// GPT-2 init: weights Normal(0, 0.02²); the two residual output projections scaled by
    /// 1/sqrt(2·n_layer).
    pub fn new(
        b: &Build,
        name: &str,
        c: usize,
        n_head: usize,
        n_layer: usize,
        rng: &mut Rng,
    ) -> Result<Block> {
        let std = 0.02;
        let proj_std = std / (2.0 * n_layer as f32).sqrt();
        Ok(Block {
            ln1: LayerNorm::new(b, &format!("{name}.ln_1"), c)?,
            attn: CausalSelfAttention::new(
                b,
                &format!("{name}.attn"),
                c,
                n_head,
                std,
                proj_std,
                rng,
            )?,
            ln2: LayerNorm::new(b, &format!("{name}.ln_2"), c)?,
            fc: Linear::new(b, &format!("{name}.mlp.c_fc"), c, 4 * c, true, std, rng)?,
            fc_proj: Linear::new(
                b,
                &format!("{name}.mlp.c_proj"),
                4 * c,
                c,
                true,
                proj_std,
                rng,
            )?,
        })
    }

    /// x (B, T, C) → y (B, T, C)
    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<(Tensor, BlockCache)> {
        let shape = x.shape().to_vec();
        let (ln1_out, ln1) = self.ln1.forward(gpu, x)?;
        let (a, attn) = self.attn.forward(gpu, &ln1_out)?;
        let x_mid = activation(gpu, self.fc.dtype(), "block.x_mid", &shape)?;
        add(gpu, x, &a, &x_mid);
        let (ln2_out, ln2) = self.ln2.forward(gpu, &x_mid)?;
        let mut wide = shape.clone();
        *wide.last_mut().unwrap() *= 4;
        let h = activation(gpu, self.fc.dtype(), "block.h", &wide)?;
        let g = activation(gpu, self.fc.dtype(), "block.g", &wide)?;
        self.fc.forward_gelu(gpu, &ln2_out, &h, &g)?;
        let m = activation(gpu, self.fc.dtype(), "block.mlp_out", &shape)?;
        self.fc_proj.forward(gpu, &g, &m)?;
        let y = activation(gpu, self.fc.dtype(), "block.y", &shape)?;
        add(gpu, &x_mid, &m, &y);
        Ok((
            y,
            BlockCache {
                ln1_out,
                ln1,
                attn,
                x_mid,
                ln2_out,
                ln2,
                h,
                g,
            },
        ))
    }

    /// The forward in reverse: adds into every trainable parameter's gradient and returns dx, or
    /// with `need_dx` false (nothing below trains) returns None and skips what only dx needs.
    pub fn backward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        cache: BlockCache,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        // y = x_mid + fc_proj(gelu(fc(ln2(x_mid))))
        let dh = activation(gpu, self.fc.dtype(), "block.dh", cache.h.shape())?;
        self.fc_proj
            .backward_through_gelu(gpu, &cache.g, &cache.h, dy, &dh)?;
        let dln2 = activation(gpu, self.fc.dtype(), "block.dln2", x.shape())?;
        self.fc.backward(gpu, &cache.ln2_out, &dh, Some(&dln2))?;
        drop(dh);
        let dx_mid = self.ln2.backward(gpu, &cache.x_mid, &cache.ln2, &dln2)?;
        accumulate(gpu, dy, 1.0, &dx_mid);
        // x_mid = x + attn(ln1(x)); ln1's input gradient is needed for dx or for ln1's own
        // parameters
        let need_dln1 = need_dx || self.ln1.w.trainable() || self.ln1.b.trainable();
        let dln1 = self
            .attn
            .backward(gpu, &cache.ln1_out, &cache.attn, &dx_mid, need_dln1)?;
        let Some(dln1) = dln1 else {
            return Ok(None);
        };
        let dx = self.ln1.backward(gpu, x, &cache.ln1, &dln1)?;
        if !need_dx {
            return Ok(None);
        }
        accumulate(gpu, &dx_mid, 1.0, &dx);
        Ok(Some(dx))
    }

    pub fn params(&self) -> Vec<&Param> {
        let mut p = self.ln1.params();
        p.extend(self.attn.params());
        p.extend(self.ln2.params());
        p.extend(self.fc.params());
        p.extend(self.fc_proj.params());
        p
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut p = self.ln1.params_mut();
        p.extend(self.attn.params_mut());
        p.extend(self.ln2.params_mut());
        p.extend(self.fc.params_mut());
        p.extend(self.fc_proj.params_mut());
        p
    }
}
