//! Causal self-attention: the q, k, v projections, rotary positions where the model uses them,
//! attention (multi-head or grouped-query), and the output projection.
//!
//! GPT-2 projects q | k | v with one packed linear (`c_attn`, C → 3C). Llama projects them with
//! three (`q_proj` C → C, `k_proj` and `v_proj` C → KC), rotates q and k (RoPE), and places the
//! three side by side in the same packed layout, (B, T, C + 2·KC), that the attention op reads.

use super::linear::Linear;
use super::{activation, Param};
use crate::error::Result;
use crate::gpu::{Category, Gpu};
use crate::ops::attention::{
    attention_backward, attention_forward, attention_fused_backward, attention_fused_forward,
    cached_attention, Heads,
};
use crate::ops::elementwise::accumulate;
use crate::ops::pad::columns;
use crate::ops::rope::{rope, RopeTables};
use crate::tensor::{DType, Tensor};
use std::sync::Arc;

/// How q, k and v are projected.
// one per layer, built once: boxing a variant would buy nothing
#[allow(clippy::large_enum_variant)]
pub enum Projection {
    /// One linear, C → 3C, packed q | k | v (GPT-2's c_attn).
    Packed(Linear),
    /// Three linears (Llama's q_proj, k_proj, v_proj), q and k rotated by the tables (if any)
    /// before they are packed.
    Split {
        q: Linear,
        k: Linear,
        v: Linear,
        rope: Option<Arc<RopeTables>>,
    },
}

pub struct CausalSelfAttention {
    pub qkv: Projection,
    /// C → C
    pub proj: Linear,
    pub heads: Heads,
    /// Fused attention (FlashAttention's scheme: no (B, NH, T, T) scores kept) or the
    /// probabilities kept for the backward; None: fused when the probabilities would pass
    /// [`SCORES_BYTES`] or one storage binding.
    pub fused: Option<bool>,
}

/// The most bytes of f32 probabilities an attention keeps for its backward before it runs fused.
pub const SCORES_BYTES: u64 = 64 << 20;

/// What the attention's backward reads of its forward besides qkv and y.
pub enum Scores {
    /// (B, NH, T, T) softmax probabilities
    Probs(Tensor),
    /// (B, NH, T) f32 log-sum-exp of each row's scores (fused: the backward recomputes them)
    Lse(Tensor),
}

pub struct AttentionCache {
    /// (B, T, C + 2·KC), q and k rotated
    pub qkv: Tensor,
    pub scores: Scores,
    /// (B, T, C) attention output before the projection
    pub y: Tensor,
}

impl CausalSelfAttention {
    fn dtype(&self) -> DType {
        self.proj.dtype()
    }

    /// x (B, T, C) → qkv (B, T, C + 2·KC), x's positions starting at `offset`
    fn project(&self, gpu: &Gpu, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (b, t, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let width = self.heads.qkv_width(c);
        let qkv = activation(gpu, self.dtype(), "attn.qkv", &[b, t, width])?;
        match &self.qkv {
            Projection::Packed(l) => l.forward(gpu, x, &qkv)?,
            Projection::Split { q, k, v, rope: r } => {
                let mut col = 0;
                for (l, rotate) in [(q, true), (k, true), (v, false)] {
                    let out = activation(gpu, self.dtype(), "attn.part", &[b, t, l.out_features])?;
                    l.forward(gpu, x, &out)?;
                    let out = match r.as_deref().filter(|_| rotate) {
                        Some(tables) => self.rotate(gpu, &out, tables, offset, false)?,
                        None => out,
                    };
                    columns(gpu, &out, 0, &qkv, (0, col), l.out_features);
                    col += l.out_features;
                }
            }
        }
        Ok(qkv)
    }

    /// part (B, T, H·hs) rotated by position, the first at `offset` (or, `inverse`, rotated
    /// back: the backward).
    fn rotate(
        &self,
        gpu: &Gpu,
        part: &Tensor,
        tables: &RopeTables,
        offset: usize,
        inverse: bool,
    ) -> Result<Tensor> {
        let s = part.shape();
        let hs = self.head_size();
        let out = activation(gpu, part.dtype(), "attn.rotated", s)?;
        rope(
            gpu,
            part,
            tables,
            s[1],
            s[2] / hs,
            hs,
            offset,
            inverse,
            &out,
        );
        Ok(out)
    }

    fn head_size(&self) -> usize {
        self.proj.out_features / self.heads.query
    }

    /// The keys' and values' width KC.
    pub fn kv_width(&self) -> usize {
        self.heads.kv * self.head_size()
    }

    /// Generation: x (1, n, C) at positions pos .. pos + n → (1, n, C), their keys and values
    /// appended to the cache `k`, `v` (capacity, KC) at rows pos .. pos + n, each query
    /// attending to every cached position up to its own.
    pub fn forward_cached(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        (k, v): (&Tensor, &Tensor),
        pos: usize,
    ) -> Result<Tensor> {
        let (n, c) = (x.rows(), x.cols());
        let qkv = self.project(gpu, x, pos)?;
        let kc = self.kv_width();
        columns(gpu, &qkv, c, k, (pos, 0), kc);
        columns(gpu, &qkv, c + kc, v, (pos, 0), kc);
        let y = activation(gpu, self.dtype(), "attn.y", &[n, c])?;
        cached_attention(gpu, &qkv, k, v, self.heads, pos, &y);
        let out = activation(gpu, self.dtype(), "attn.out", x.shape())?;
        self.proj.forward(gpu, &y, &out)?;
        Ok(out)
    }

    /// x (B, T, C) → (B, T, C)
    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<(Tensor, AttentionCache)> {
        let (b, t, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let qkv = self.project(gpu, x, 0)?;
        let nh = self.heads.query;
        let scores = if self.runs_fused(gpu, b, t) {
            let lse = crate::nn::f32_activation(gpu, "attn.lse", &[b, nh, t])?;
            let y = activation(gpu, self.dtype(), "attn.y", &[b, t, c])?;
            attention_fused_forward(gpu, &qkv, self.heads, &y, &lse);
            (Scores::Lse(lse), y)
        } else {
            let att = activation(gpu, self.dtype(), "attn.att", &[b, nh, t, t])?;
            let y = activation(gpu, self.dtype(), "attn.y", &[b, t, c])?;
            attention_forward(gpu, &qkv, self.heads, &att, &y)?;
            (Scores::Probs(att), y)
        };
        let (scores, y) = scores;
        let out = activation(gpu, self.dtype(), "attn.out", &[b, t, c])?;
        self.proj.forward(gpu, &y, &out)?;
        Ok((out, AttentionCache { qkv, scores, y }))
    }

    /// Whether a (B, T) pass runs fused (see [`CausalSelfAttention::fused`]).
    fn runs_fused(&self, gpu: &Gpu, b: usize, t: usize) -> bool {
        // (the fused kernel's accumulators hold heads of up to ROW_KERNEL_MAX_HEAD)
        let fits = self.head_size() <= crate::ops::attention::ROW_KERNEL_MAX_HEAD;
        self.fused.unwrap_or_else(|| {
            let probs = (b * self.heads.query * t * t * 4) as u64;
            fits && probs > SCORES_BYTES.min(gpu.limits().max_storage_buffer_binding_size)
        })
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
        let dy = activation(gpu, self.dtype(), "attn.dy", cache.y.shape())?;
        self.proj.backward(gpu, &cache.y, dout, Some(&dy))?;
        // the probabilities' gradient (workspace) when they were kept
        let dpre = match &cache.scores {
            Scores::Probs(att) => Some(Tensor::empty(
                gpu,
                "attn.dpre",
                att.shape(),
                DType::F32,
                Category::Workspace,
            )?),
            Scores::Lse(_) => None,
        };
        let dqkv = activation(gpu, self.dtype(), "attn.dqkv", cache.qkv.shape())?;
        match (&cache.scores, &dpre) {
            (Scores::Probs(att), Some(dpre)) => {
                attention_backward(gpu, &dy, &cache.qkv, att, self.heads, dpre, &dqkv)?
            }
            (Scores::Lse(lse), _) => {
                attention_fused_backward(gpu, &dy, &cache.qkv, &cache.y, lse, self.heads, &dqkv)?
            }
            (Scores::Probs(_), None) => unreachable!("kept probabilities have their gradient"),
        }
        let dx = need_dx
            .then(|| activation(gpu, self.dtype(), "attn.dx", x.shape()))
            .transpose()?;
        match &self.qkv {
            Projection::Packed(l) => l.backward(gpu, x, &dqkv, dx.as_ref())?,
            Projection::Split { q, k, v, rope: r } => {
                let (b, t) = (x.shape()[0], x.shape()[1]);
                let mut col = 0;
                for (i, (l, rotate)) in [(q, true), (k, true), (v, false)].into_iter().enumerate() {
                    let part =
                        activation(gpu, self.dtype(), "attn.dpart", &[b, t, l.out_features])?;
                    columns(gpu, &dqkv, col, &part, (0, 0), l.out_features);
                    col += l.out_features;
                    let part = match r.as_deref().filter(|_| rotate) {
                        Some(tables) => self.rotate(gpu, &part, tables, 0, true)?,
                        None => part,
                    };
                    match (&dx, i) {
                        // the first writes dx, the others add theirs
                        (Some(dx), 0) => l.backward(gpu, x, &part, Some(dx))?,
                        (Some(dx), _) => {
                            let share = activation(gpu, self.dtype(), "attn.dx_part", x.shape())?;
                            l.backward(gpu, x, &part, Some(&share))?;
                            accumulate(gpu, &share, 1.0, dx);
                        }
                        (None, _) => l.backward(gpu, x, &part, None)?,
                    }
                }
            }
        }
        Ok(dx)
    }

    /// Its linears, in parameter order.
    pub fn linears(&self) -> Vec<&Linear> {
        match &self.qkv {
            Projection::Packed(l) => vec![l, &self.proj],
            Projection::Split { q, k, v, .. } => vec![q, k, v, &self.proj],
        }
    }

    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        match &mut self.qkv {
            Projection::Packed(l) => vec![l, &mut self.proj],
            Projection::Split { q, k, v, .. } => vec![q, k, v, &mut self.proj],
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
