//! The transformer block (pre-norm, residual):
//!   x_mid = x + attn(norm1(x));   y = x_mid + mlp(norm2(x_mid))
//! GPT-2's: LayerNorm, packed qkv with biases, proj(gelu(fc(·))). Llama's: RMSNorm, rotary
//! grouped-query attention without biases, SwiGLU. Input and output are both (B, T, C): the
//! uniform shape pipelines cut the model at.

use super::attention::{AttentionCache, CausalSelfAttention, Projection};
use super::feedforward::{FeedForward, FeedForwardCache};
use super::gpt::{Family, GptConfig};
use super::layernorm::LayerNorm;
use super::linear::Linear;
use super::norm::{Norm, NormCache, RmsNorm};
use super::{activation, Build, Param};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::attention::Heads;
use crate::ops::elementwise::{accumulate, add};
use crate::ops::rope::RopeTables;
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::sync::Arc;

pub struct Block {
    pub ln1: Norm,
    pub attn: CausalSelfAttention,
    pub ln2: Norm,
    pub mlp: FeedForward,
}

/// Everything the backward reads, apart from the block input.
pub struct BlockCache {
    ln1_out: Tensor,
    ln1: NormCache,
    attn: AttentionCache,
    /// (B, T, C) after the attention residual
    x_mid: Tensor,
    ln2_out: Tensor,
    ln2: NormCache,
    mlp: FeedForwardCache,
}

impl Block {
    /// Block `i` of a model of `config`'s family, named as its checkpoints name it (GPT-2's
    /// `h.i.attn.c_attn`, Llama's `model.layers.i.self_attn.q_proj`). GPT-2's init: weights
    /// Normal(0, 0.02²), the two residual output projections scaled by 1/sqrt(2·n_layer);
    /// Llama's: Normal(0, 0.02²) throughout. `rope`: the rotary tables (Llama).
    pub fn new(
        b: &Build,
        config: &GptConfig,
        i: usize,
        rope: Option<Arc<RopeTables>>,
        rng: &mut Rng,
    ) -> Result<Block> {
        let c = config.n_embd;
        let std = 0.02;
        let heads = Heads {
            query: config.n_head,
            kv: config.kv_heads(),
        };
        let mut linear =
            |name: String, i, o, bias, std| Linear::new(b, &name, i, o, bias, std, rng);
        Ok(match config.family {
            Family::Gpt2 => {
                let name = format!("h.{i}");
                let proj_std = std / (2.0 * config.n_layer as f32).sqrt();
                let f = config.ffn();
                Block {
                    ln1: Norm::Layer(LayerNorm::new(b, &format!("{name}.ln_1"), c)?),
                    attn: CausalSelfAttention {
                        qkv: Projection::Packed(linear(
                            format!("{name}.attn.c_attn"),
                            c,
                            3 * c,
                            true,
                            std,
                        )?),
                        proj: linear(format!("{name}.attn.c_proj"), c, c, true, proj_std)?,
                        heads,
                        fused: None,
                    },
                    ln2: Norm::Layer(LayerNorm::new(b, &format!("{name}.ln_2"), c)?),
                    mlp: FeedForward::Gelu {
                        fc: linear(format!("{name}.mlp.c_fc"), c, f, true, std)?,
                        proj: linear(format!("{name}.mlp.c_proj"), f, c, true, proj_std)?,
                    },
                }
            }
            Family::Llama => {
                let name = format!("model.layers.{i}");
                let (kc, f, eps) = (config.kv_dim(), config.ffn(), config.eps());
                let attn = format!("{name}.self_attn");
                Block {
                    ln1: Norm::Rms(RmsNorm::new(b, &format!("{name}.input_layernorm"), c, eps)?),
                    attn: CausalSelfAttention {
                        qkv: Projection::Split {
                            q: linear(format!("{attn}.q_proj"), c, c, false, std)?,
                            k: linear(format!("{attn}.k_proj"), c, kc, false, std)?,
                            v: linear(format!("{attn}.v_proj"), c, kc, false, std)?,
                            rope,
                        },
                        proj: linear(format!("{attn}.o_proj"), c, c, false, std)?,
                        heads,
                        fused: None,
                    },
                    ln2: Norm::Rms(RmsNorm::new(
                        b,
                        &format!("{name}.post_attention_layernorm"),
                        c,
                        eps,
                    )?),
                    mlp: FeedForward::SwiGlu {
                        gate: linear(format!("{name}.mlp.gate_proj"), c, f, false, std)?,
                        up: linear(format!("{name}.mlp.up_proj"), c, f, false, std)?,
                        down: linear(format!("{name}.mlp.down_proj"), f, c, false, std)?,
                    },
                }
            }
        })
    }

    /// x (B, T, C) → y (B, T, C)
    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<(Tensor, BlockCache)> {
        let shape = x.shape().to_vec();
        let dtype = self.attn.proj.dtype();
        let (ln1_out, ln1) = self.ln1.forward(gpu, x)?;
        let (a, attn) = self.attn.forward(gpu, &ln1_out)?;
        let x_mid = activation(gpu, dtype, "block.x_mid", &shape)?;
        add(gpu, x, &a, &x_mid);
        let (ln2_out, ln2) = self.ln2.forward(gpu, &x_mid)?;
        let (m, mlp) = self.mlp.forward(gpu, &ln2_out)?;
        let y = activation(gpu, dtype, "block.y", &shape)?;
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
                mlp,
            },
        ))
    }

    /// Generation: x (1, n, C) at positions pos .. pos + n → y (1, n, C), the block's keys and
    /// values appended to its cache (see [`CausalSelfAttention::forward_cached`]).
    pub fn forward_cached(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        cache: (&Tensor, &Tensor),
        pos: usize,
    ) -> Result<Tensor> {
        let dtype = self.attn.proj.dtype();
        let a = self
            .attn
            .forward_cached(gpu, &self.ln1.forward(gpu, x)?.0, cache, pos)?;
        let x_mid = activation(gpu, dtype, "block.x_mid", x.shape())?;
        add(gpu, x, &a, &x_mid);
        let (m, _) = self.mlp.forward(gpu, &self.ln2.forward(gpu, &x_mid)?.0)?;
        let y = activation(gpu, dtype, "block.y", x.shape())?;
        add(gpu, &x_mid, &m, &y);
        Ok(y)
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
        // y = x_mid + mlp(ln2(x_mid))
        let dln2 = self.mlp.backward(gpu, &cache.ln2_out, &cache.mlp, dy)?;
        let dx_mid = self.ln2.backward(gpu, &cache.x_mid, &cache.ln2, &dln2)?;
        accumulate(gpu, dy, 1.0, &dx_mid);
        // x_mid = x + attn(ln1(x)); ln1's input gradient is needed for dx or for ln1's own
        // parameters
        let need_dln1 = need_dx || self.ln1.trainable();
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

    /// Its linears, in parameter order.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut l = self.attn.linears();
        l.extend(self.mlp.linears());
        l
    }

    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut l = self.attn.linears_mut();
        l.extend(self.mlp.linears_mut());
        l
    }

    pub fn params(&self) -> Vec<&Param> {
        let mut p = self.ln1.params();
        p.extend(self.attn.params());
        p.extend(self.ln2.params());
        p.extend(self.mlp.params());
        p
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut p = self.ln1.params_mut();
        p.extend(self.attn.params_mut());
        p.extend(self.ln2.params_mut());
        p.extend(self.mlp.params_mut());
        p
    }
}
