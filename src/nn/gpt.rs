//! GPT: a decoder-only transformer, of GPT-2's family (token and learned position embeddings,
//! pre-LayerNorm blocks, a final LayerNorm, the LM head tied to the token embedding) or Llama's
//! (token embedding, rotary positions in the attention, RMSNorm, grouped-query attention, SwiGLU,
//! the head tied or its own). [`Family`] picks the layers; everything around them (stages,
//! recomputation, hooks, the head and its loss) is one code path.

use super::block::{Block, BlockCache};
use super::layernorm::LayerNorm;
use super::linear::Linear;
use super::lora::{LoraAdapter, LoraConfig};
use super::norm::{Norm, RmsNorm};
use super::recompute::Recompute;
use super::{activation, f32_activation, Build, LossGrad, Param, StepHooks};
use crate::error::{Error, Result};
use crate::gpu::{Category, Gpu};
use crate::ops::elementwise::add;
use crate::ops::embedding::{embedding_backward, embedding_forward, EmbeddingIndex};
use crate::ops::matmul::{matmul, matmul_backward, Layout, MatmulDims};
use crate::ops::rope::RopeTables;
use crate::ops::softmax_xent::{softmax_xent, softmax_xent_scaled, PAD};
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where a GPT's parameter belongs, by its name (either family's naming; a LoRA adapter's with
/// its layer's): what a pipeline splits the model by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The token embedding ("wte", "model.embed_tokens.weight"), the LM head too when tied.
    TokenEmbedding,
    /// GPT-2's learned positions ("wpe").
    Positions,
    /// Block i's ("h.i.…", "model.layers.i.…").
    Block(usize),
    /// The final norm and an untied LM head.
    Head,
}

impl Part {
    pub fn of(name: &str) -> Part {
        match name {
            "wte" | "model.embed_tokens.weight" => return Part::TokenEmbedding,
            "wpe" => return Part::Positions,
            _ => {}
        }
        let block = name
            .strip_prefix("h.")
            .or_else(|| name.strip_prefix("model.layers."))
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse().ok());
        block.map_or(Part::Head, Part::Block)
    }
}

/// The layers a [`Gpt`] is built of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// GPT-2: learned positions, LayerNorm, packed qkv with biases, a GELU MLP, tied head.
    #[default]
    Gpt2,
    /// Llama: rotary positions, RMSNorm, grouped-query attention and a SwiGLU MLP without
    /// biases, the head tied or not.
    Llama,
}

impl Family {
    fn is_gpt2(&self) -> bool {
        *self == Family::Gpt2
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Context length T: positions 0 .. block_size.
    pub block_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    #[serde(skip_serializing_if = "Family::is_gpt2")]
    pub family: Family,
    /// Llama: key/value heads, a divisor of n_head (grouped-query attention); None: n_head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_kv_head: Option<usize>,
    /// Llama: SwiGLU's hidden width (GPT-2's MLP is 4·n_embd wide).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ffn_hidden: Option<usize>,
    /// Llama: RoPE's base θ (None: 10 000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f32>,
    /// Llama: the dimensions of each head that rotate, even (None: all of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_dim: Option<usize>,
    /// Llama: RMSNorm's epsilon (None: 1e-5, GPT-2's LayerNorm's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm_eps: Option<f32>,
    /// Llama: an LM head of its own (`lm_head.weight`) instead of the token embedding.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub untied_head: bool,
}

impl Default for GptConfig {
    fn default() -> Self {
        GptConfig {
            vocab_size: 256,
            block_size: 64,
            n_layer: 2,
            n_head: 4,
            n_embd: 64,
            family: Family::Gpt2,
            n_kv_head: None,
            ffn_hidden: None,
            rope_theta: None,
            rope_dim: None,
            norm_eps: None,
            untied_head: false,
        }
    }
}

impl GptConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.vocab_size == 0 || self.block_size == 0 || self.n_layer == 0 || self.n_head == 0 {
            return Err("gpt: vocab_size, block_size, n_layer and n_head must be positive".into());
        }
        if self.n_embd == 0 || self.n_embd % self.n_head != 0 {
            return Err(format!(
                "gpt: n_embd ({}) must be a positive multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        match self.family {
            Family::Gpt2 => {
                let llama_only = [
                    ("n_kv_head", self.n_kv_head.is_some()),
                    ("ffn_hidden", self.ffn_hidden.is_some()),
                    ("rope_theta", self.rope_theta.is_some()),
                    ("rope_dim", self.rope_dim.is_some()),
                    ("norm_eps", self.norm_eps.is_some()),
                    ("untied_head", self.untied_head),
                ];
                if let Some((name, _)) = llama_only.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "gpt: {name} is a Llama-family setting (\"family\": \"llama\")"
                    ));
                }
            }
            Family::Llama => {
                let kv = self.kv_heads();
                if kv == 0 || self.n_head % kv != 0 {
                    return Err(format!(
                        "llama: n_head ({}) must be a multiple of n_kv_head ({kv})",
                        self.n_head
                    ));
                }
                if self.ffn() == 0 {
                    return Err("llama: ffn_hidden must be positive".into());
                }
                let rot = self.rope_dims();
                if rot < 2 || rot % 2 != 0 || rot > self.head_dim() {
                    return Err(format!(
                        "llama: rope_dim ({rot}) must be even, at least 2 and at most the head size {}",
                        self.head_dim()
                    ));
                }
                let eps = self.eps();
                let theta = self.rope_base();
                if !(eps.is_finite() && eps > 0.0 && theta.is_finite() && theta > 0.0) {
                    return Err(format!(
                        "llama: norm_eps ({eps}) and rope_theta ({theta}) must be positive"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Key/value heads: n_kv_head, or n_head (multi-head attention).
    pub fn kv_heads(&self) -> usize {
        self.n_kv_head.unwrap_or(self.n_head)
    }

    /// Keys' and values' width: kv_heads heads of head_dim.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads() * self.head_dim()
    }

    /// The MLP's hidden width.
    pub fn ffn(&self) -> usize {
        self.ffn_hidden.unwrap_or(4 * self.n_embd)
    }

    pub fn eps(&self) -> f32 {
        self.norm_eps.unwrap_or(super::layernorm::EPS)
    }

    pub fn rope_base(&self) -> f32 {
        self.rope_theta.unwrap_or(10_000.0)
    }

    pub fn rope_dims(&self) -> usize {
        self.rope_dim.unwrap_or(self.head_dim())
    }

    /// The weight count from the config alone (closed form, in u128 so no claimed size
    /// overflows; without LoRA adapters).
    pub fn weight_count(&self) -> u128 {
        let (v, t, l, c) = (
            self.vocab_size as u128,
            self.block_size as u128,
            self.n_layer as u128,
            self.n_embd as u128,
        );
        let (kv, f) = (self.kv_dim() as u128, self.ffn() as u128);
        match self.family {
            // wte, wpe; per block: two LayerNorms (2C each), qkv (3C² + 3C), attention
            // projection (C² + C), MLP (4C² + 4C and 4C² + C); the final LayerNorm
            Family::Gpt2 => v * c + t * c + l * (12 * c * c + 13 * c) + 2 * c,
            // the embedding (and an untied head); per block: two RMSNorms (C each), q and o
            // (C² each), k and v (C·KC each), gate, up and down (C·F each); the final RMSNorm
            Family::Llama => {
                let head = if self.untied_head { v * c } else { 0 };
                v * c + head + l * (2 * c + 2 * c * c + 2 * c * kv + 3 * c * f) + c
            }
        }
    }

    /// Whether the LM head is the token embedding.
    pub fn tied(&self) -> bool {
        !self.untied_head
    }
}

/// One batch of token sequences on the device: inputs (B, T) and targets (B, T), PAD where no
/// loss is wanted.
pub struct TokenBatch {
    pub tokens: EmbeddingIndex,
    pub positions: EmbeddingIndex,
    /// (B·T) u32
    pub targets: Tensor,
    pub batch: usize,
    pub seq: usize,
    /// Targets that are not PAD: the denominator of the mean loss.
    pub n_targets: usize,
}

impl TokenBatch {
    pub fn new(
        gpu: &Gpu,
        config: &GptConfig,
        tokens: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
    ) -> Result<Self> {
        assert_eq!(
            tokens.len(),
            batch * seq,
            "tokens for a ({batch}, {seq}) batch"
        );
        assert_eq!(
            targets.len(),
            batch * seq,
            "targets for a ({batch}, {seq}) batch"
        );
        if seq > config.block_size {
            return Err(Error::Config(format!(
                "a sequence of {seq} tokens is longer than the model's block_size {}",
                config.block_size
            )));
        }
        // A target past the vocabulary would read as padding (no loss, no gradient): refuse it.
        if let Some(position) = targets
            .iter()
            .position(|&t| t != PAD && t as usize >= config.vocab_size)
        {
            return Err(Error::IndexOutOfRange {
                name: "targets".into(),
                position,
                index: targets[position] as u64,
                size: config.vocab_size as u64,
            });
        }
        let positions: Vec<u32> = (0..batch).flat_map(|_| 0..seq as u32).collect();
        Ok(TokenBatch {
            tokens: EmbeddingIndex::new(gpu, "tokens", tokens, config.vocab_size)?,
            positions: EmbeddingIndex::new(gpu, "positions", &positions, config.block_size)?,
            targets: Tensor::from_u32(
                gpu,
                "targets",
                &[batch * seq],
                targets,
                Category::Activations,
            )?,
            batch,
            seq,
            n_targets: targets.iter().filter(|&&t| t != PAD).count(),
        })
    }
}

/// What one pipeline stage of a GPT runs: a contiguous range of blocks, with the embeddings
/// on the first stage and the final LayerNorm, head and loss on the last (one device: both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSpan {
    pub blocks: std::ops::Range<usize>,
    pub first: bool,
    pub last: bool,
}

impl StageSpan {
    /// The whole model as one stage.
    pub fn whole(n_layer: usize) -> StageSpan {
        StageSpan {
            blocks: 0..n_layer,
            first: true,
            last: true,
        }
    }
}

/// A stage forward's result: the (B, T, C) activation for the next stage, or the last stage's
/// per-position losses (B·T).
pub enum StageOut {
    Hidden(Tensor),
    Losses(Tensor),
}

/// What a stage's backward needs from its forward.
pub struct StageCache {
    inputs: Vec<Option<Tensor>>,
    caches: Vec<Option<BlockCache>>,
    /// The last stage's gradient at its blocks' output (the head's backward ran in the forward).
    dout: Option<Tensor>,
}

pub struct Gpt {
    pub config: GptConfig,
    /// (V, C), also the LM head unless the head is untied
    pub wte: Param,
    /// (block_size, C): GPT-2's learned positions (Llama's rotate q and k instead)
    pub wpe: Option<Param>,
    pub blocks: Vec<Block>,
    pub ln_f: Norm,
    /// (V, C): an untied LM head
    pub lm_head: Option<Param>,
    /// Which activations the training step keeps and which it recomputes.
    pub recompute: Recompute,
    /// Block forward evaluations so far (recomputation included).
    pub block_forwards: AtomicU64,
    /// Rows per chunk of the LM head's training pass (None: [`Gpt::head_rows`]'s choice).
    pub head_rows: Option<usize>,
}

/// A chunk of the head's rows ([`Gpt::head_chunk`]): its rows of xf and the targets when they
/// are not the whole tensors, and its logits.
struct HeadChunk {
    x: Option<Tensor>,
    targets: Option<Tensor>,
    logits: Tensor,
}

/// Rows start .. start + r of `t` (a row its last dimension; a vector's element), copied.
fn take_rows(gpu: &Gpu, t: &Tensor, start: usize, r: usize) -> Result<Tensor> {
    let cols = if t.shape().len() > 1 { t.cols() } else { 1 };
    let part = Tensor::empty(gpu, t.name(), &[r, cols], t.dtype(), Category::Activations)?;
    let row = t.dtype().bytes_for(cols);
    gpu.copy_region(t, start as u64 * row, &part, 0, r as u64 * row);
    Ok(part)
}

/// Writes `part`'s rows into `t` from row `start` on.
fn put_rows(gpu: &Gpu, part: &Tensor, t: &Tensor, start: usize) {
    let cols = if t.shape().len() > 1 { t.cols() } else { 1 };
    let row = t.dtype().bytes_for(cols);
    gpu.copy_region(
        part,
        0,
        t,
        start as u64 * row,
        (part.numel() / cols) as u64 * row,
    );
}

/// The most bytes of f32 logits a chunk of the LM head's training pass holds: a (B, T, V)
/// tensor larger than this is never made whole (49 152 × 2048 tokens would be 400 MB).
pub const HEAD_CHUNK_BYTES: u64 = 64 << 20;

impl Gpt {
    pub fn new(b: &Build, config: GptConfig, rng: &mut Rng) -> Result<Gpt> {
        config.validate().map_err(Error::Config)?;
        let (c, v) = (config.n_embd, config.vocab_size);
        let llama = config.family == Family::Llama;
        // GPT-2's names are nanoGPT's; Llama's are Hugging Face's
        let wte_name = if llama {
            "model.embed_tokens.weight"
        } else {
            "wte"
        };
        let wte = Param::normal(b, wte_name, &[v, c], 0.02, rng)?;
        let wpe = match config.family {
            Family::Gpt2 => Some(Param::normal(b, "wpe", &[config.block_size, c], 0.01, rng)?),
            Family::Llama => None,
        };
        let rope = llama
            .then(|| {
                let (base, rot) = (config.rope_base() as f64, config.rope_dims());
                RopeTables::new(b.gpu, base, rot, config.block_size).map(Arc::new)
            })
            .transpose()?;
        let blocks = (0..config.n_layer)
            .map(|i| Block::new(b, &config, i, rope.clone(), rng))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = match config.family {
            Family::Gpt2 => Norm::Layer(LayerNorm::new(b, "ln_f", c)?),
            Family::Llama => Norm::Rms(RmsNorm::new(b, "model.norm", c, config.eps())?),
        };
        let lm_head = config
            .untied_head
            .then(|| Param::normal(b, "lm_head.weight", &[v, c], 0.02, rng))
            .transpose()?;
        Ok(Gpt {
            config,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
            recompute: Recompute::None,
            block_forwards: AtomicU64::new(0),
            head_rows: None,
        })
    }

    /// Whether the blocks' attention runs fused (no (B, NH, T, T) scores kept), keeps its
    /// probabilities, or (None) chooses by their size (see `nn::attention::SCORES_BYTES`).
    pub fn set_fused_attention(&mut self, fused: Option<bool>) {
        for b in &mut self.blocks {
            b.attn.fused = fused;
        }
    }

    /// Every parameter, in a fixed order (the optimizer's and the checkpoint's).
    pub fn params(&self) -> Vec<&Param> {
        let mut p = vec![&self.wte];
        p.extend(&self.wpe);
        for b in &self.blocks {
            p.extend(b.params());
        }
        p.extend(self.ln_f.params());
        p.extend(&self.lm_head);
        p
    }

    /// Every Linear of every block, in parameter order.
    pub fn linears(&self) -> Vec<&Linear> {
        self.blocks.iter().flat_map(|b| b.linears()).collect()
    }

    /// [`Gpt::linears`], mutably.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.blocks
            .iter_mut()
            .flat_map(|b| b.linears_mut())
            .collect()
    }

    /// Gives every layer the LoRA config targets an adapter (PEFT's init; A from `rng`).
    pub fn add_lora(&mut self, b: &Build, config: &LoraConfig, rng: &mut Rng) -> Result<()> {
        config.validate()?;
        let mut layers = self.linears_mut();
        let names: Vec<&str> = layers.iter().map(|l| l.name()).collect();
        let chosen = config.select(&names)?;
        for (layer, on) in layers.iter_mut().zip(chosen) {
            if on {
                let (i, o) = (layer.in_features, layer.out_features);
                layer.lora = Some(LoraAdapter::new(b, layer.name(), i, o, config, rng)?);
            }
        }
        Ok(())
    }

    /// [`Gpt::params`], mutably (to freeze some).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut p = vec![&mut self.wte];
        p.extend(&mut self.wpe);
        for b in &mut self.blocks {
            p.extend(b.params_mut());
        }
        p.extend(self.ln_f.params_mut());
        p.extend(&mut self.lm_head);
        p
    }

    /// The embeddings: the token embedding and (GPT-2) the positions'.
    fn embedding_params(&mut self) -> Vec<&mut Param> {
        let mut p = vec![&mut self.wte];
        p.extend(&mut self.wpe);
        p
    }

    /// The LM head's weight (V, C): its own, or the token embedding.
    fn head_weight(&self) -> &Param {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }

    fn embed(&self, gpu: &Gpu, batch: &TokenBatch) -> Result<Tensor> {
        let shape = [batch.batch, batch.seq, self.config.n_embd];
        let tok = activation(gpu, self.wte.compute_dtype(), "tok_emb", &shape)?;
        embedding_forward(gpu, &batch.tokens, self.wte.weight(), &tok);
        let Some(wpe) = &self.wpe else {
            return Ok(tok);
        };
        let pos = activation(gpu, self.wte.compute_dtype(), "pos_emb", &shape)?;
        embedding_forward(gpu, &batch.positions, wpe.weight(), &pos);
        let x = activation(gpu, self.wte.compute_dtype(), "x0", &shape)?;
        add(gpu, &tok, &pos, &x);
        Ok(x)
    }

    fn head_dims(&self, batch: &TokenBatch) -> MatmulDims {
        // logits (B·T, V) = x (B·T, C) · Wᵀ, W the head's (V, C)
        MatmulDims::new(
            batch.batch * batch.seq,
            self.config.vocab_size,
            self.config.n_embd,
            Layout::NT,
        )
    }

    /// Logits (B, T, V) for a batch (forward only).
    pub fn logits(&self, gpu: &Gpu, batch: &TokenBatch) -> Result<Tensor> {
        let mut x = self.embed(gpu, batch)?;
        for i in 0..self.blocks.len() {
            x = self.block_forward(gpu, i, &x)?.0;
        }
        self.head(gpu, batch, &x)
    }

    /// The final norm and the head of the blocks' output x (B, T, C): the logits (B, T, V),
    /// forward only.
    fn head(&self, gpu: &Gpu, batch: &TokenBatch, x: &Tensor) -> Result<Tensor> {
        let (xf, _) = self.ln_f.forward(gpu, x)?;
        let logits = activation(
            gpu,
            self.wte.compute_dtype(),
            "logits",
            &[batch.batch, batch.seq, self.config.vocab_size],
        )?;
        matmul(
            gpu,
            self.head_dims(batch),
            &xf,
            self.head_weight().weight(),
            None,
            &logits,
            false,
        );
        Ok(logits)
    }

    /// A stage's forward only (an evaluation): the embeddings (first stage; else `input`, the
    /// previous stage's (B, T, C) output), the span's blocks and, on the last stage, the head.
    /// Returns the stage's (B, T, C) output, or the logits (B, T, V) on the last stage; keeps
    /// nothing for a backward. `hooks` bring each group's values and free them (ZeRO 3).
    pub fn stage_logits(
        &mut self,
        gpu: &Gpu,
        span: &StageSpan,
        batch: &TokenBatch,
        input: Option<Tensor>,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        let mut x = match input {
            Some(x) => x,
            None => {
                hooks.values_needed(gpu, &mut self.embedding_params())?;
                let x = self.embed(gpu, batch)?;
                hooks.values_done(gpu, &mut self.embedding_params())?;
                x
            }
        };
        for i in span.blocks.clone() {
            x = self.block_forward_hooked(gpu, i, &x, hooks)?.0;
        }
        if !span.last {
            return Ok(x);
        }
        hooks.values_needed(gpu, &mut self.head_params())?;
        let logits = self.head(gpu, batch, &x)?;
        hooks.values_done(gpu, &mut self.head_params())?;
        Ok(logits)
    }

    /// Per-position losses (B·T) of a batch, forward only (PAD targets give 0).
    /// The head by chunks of rows as in training ([`Gpt::head_rows`]): no (B, T, V) logits.
    pub fn losses(&self, gpu: &Gpu, batch: &TokenBatch) -> Result<Tensor> {
        let mut x = self.embed(gpu, batch)?;
        for i in 0..self.blocks.len() {
            x = self.block_forward(gpu, i, &x)?.0;
        }
        let (xf, _) = self.ln_f.forward(gpu, &x)?;
        drop(x);
        let n = batch.batch * batch.seq;
        let per = self.head_rows(gpu);
        let losses = f32_activation(gpu, "losses", &[n])?;
        for start in (0..n).step_by(per) {
            let r = per.min(n - start);
            let HeadChunk {
                targets, logits, ..
            } = self.head_chunk(gpu, batch, &xf, start, r)?;
            let targets = targets.as_ref().unwrap_or(&batch.targets);
            match r == n {
                true => softmax_xent(gpu, &logits, targets, &losses, None, 0.0)?,
                false => {
                    let part = f32_activation(gpu, "losses.chunk", &[r])?;
                    softmax_xent(gpu, &logits, targets, &part, None, 0.0)?;
                    put_rows(gpu, &part, &losses, start);
                }
            }
        }
        Ok(losses)
    }

    /// One block's forward, counted.
    fn block_forward(&self, gpu: &Gpu, i: usize, x: &Tensor) -> Result<(Tensor, BlockCache)> {
        self.block_forwards.fetch_add(1, Ordering::Relaxed);
        self.blocks[i].forward(gpu, x)
    }

    /// Forward and backward of Σ losses, the backward seeded by `loss`: adds every parameter's gradient and returns
    /// the per-position losses (B·T). Saved activations follow `self.recompute` (see
    /// [`Recompute`]); the gradients are bit-identical under every policy. All recorded; nothing
    /// is submitted unless `hooks` submit (see [`StepHooks`]: the groups are the head with
    /// the tied token embedding, the final LayerNorm, each block, and the embeddings).
    pub fn forward_backward(
        &mut self,
        gpu: &Gpu,
        batch: &TokenBatch,
        loss: LossGrad,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        // LoRA adapters apply their dropout in this forward and backward only
        self.set_training(true);
        let r = self.train_pass(gpu, batch, loss, hooks);
        self.set_training(false);
        r
    }

    /// Whether forwards and backwards train: LoRA adapters apply their dropout only then. A
    /// caller of [`Gpt::stage_forward`] sets it around a step's stage passes.
    pub fn set_training(&self, on: bool) {
        for l in self.linears() {
            if let Some(a) = &l.lora {
                a.training.store(on, Ordering::Relaxed);
            }
        }
    }

    fn train_pass(
        &mut self,
        gpu: &Gpu,
        batch: &TokenBatch,
        loss: LossGrad,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        let span = StageSpan::whole(self.blocks.len());
        let (out, cache) = self.stage_forward(gpu, &span, batch, None, loss, hooks)?;
        self.stage_backward(gpu, &span, batch, cache, None, hooks)?;
        match out {
            StageOut::Losses(l) => Ok(l),
            StageOut::Hidden(_) => unreachable!("the whole model ends in the loss"),
        }
    }

    /// A pipeline stage's forward of one micro-batch: the embeddings (first stage; else
    /// `input`, the previous stage's (B, T, C) output), the span's blocks, and on the last stage
    /// the final LayerNorm, the head and the loss, whose backward runs here too (the head's
    /// gradients written, the cache holding the gradient at the blocks' output), so that no
    /// (B, T, V) buffer outlives the forward. Saved activations follow `self.recompute` over
    /// the span's blocks. Recorded, not submitted (unless `hooks` submit).
    pub fn stage_forward(
        &mut self,
        gpu: &Gpu,
        span: &StageSpan,
        batch: &TokenBatch,
        input: Option<Tensor>,
        loss: LossGrad,
        hooks: &mut dyn StepHooks,
    ) -> Result<(StageOut, StageCache)> {
        let n = span.blocks.len();
        let policy = self.recompute;
        // What the forward keeps: block i's input and/or cache (indices within the span).
        let mut inputs: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
        let mut caches: Vec<Option<BlockCache>> = (0..n).map(|_| None).collect();
        let mut x = match input {
            Some(x) => x,
            None => {
                assert!(
                    span.first,
                    "a stage after the first takes the previous one's output"
                );
                hooks.values_needed(gpu, &mut self.embedding_params())?;
                let x = self.embed(gpu, batch)?;
                hooks.values_done(gpu, &mut self.embedding_params())?;
                x
            }
        };
        for (li, i) in span.blocks.clone().enumerate() {
            let (y, cache) = self.block_forward_hooked(gpu, i, &x, hooks)?;
            if policy.keeps_cache(li, n) {
                caches[li] = Some(cache);
            }
            if policy.keeps_input(li, n) {
                inputs[li] = Some(x);
            }
            x = y;
        }
        if !span.last {
            let cache = StageCache {
                inputs,
                caches,
                dout: None,
            };
            return Ok((StageOut::Hidden(x), cache));
        }
        let x_last = x;
        // the head: the final norm and the head's weight, forward and backward
        hooks.values_needed(gpu, &mut self.head_params())?;
        let (xf, lnf_cache) = self.ln_f.forward(gpu, &x_last)?;
        let (losses, dxf) = self.head_pass(gpu, batch, &xf, loss, hooks)?;
        drop(xf);
        hooks.grads_needed(gpu, &mut self.ln_f.params_mut())?;
        let dx = self.ln_f.backward(gpu, &x_last, &lnf_cache, &dxf)?;
        hooks.grads_written(gpu, &mut self.ln_f.params_mut())?;
        hooks.values_done(gpu, &mut self.head_params())?;
        if !self.config.tied() || !span.first {
            // an untied head's gradient is complete; so is the tied embedding's on a pipeline's
            // last stage, which holds its own copy of it (the head's share)
            hooks.grads_written(gpu, &mut [self.head_weight_mut()])?;
        }
        let cache = StageCache {
            inputs,
            caches,
            dout: Some(dx),
        };
        Ok((StageOut::Losses(losses), cache))
    }

    /// The backward of [`Gpt::stage_forward`]: `dout` is the gradient at the span's output
    /// (None on the last stage, whose cache holds it). Returns the gradient at the stage's
    /// input, or None on the first stage (which writes the embeddings' gradients instead).
    pub fn stage_backward(
        &mut self,
        gpu: &Gpu,
        span: &StageSpan,
        batch: &TokenBatch,
        cache: StageCache,
        dout: Option<Tensor>,
        hooks: &mut dyn StepHooks,
    ) -> Result<Option<Tensor>> {
        let StageCache {
            mut inputs,
            mut caches,
            dout: kept,
        } = cache;
        let mut dx = dout.or(kept).expect("the gradient at the stage's output");
        let start = span.blocks.start;
        for i in span.blocks.clone().rev() {
            let li = i - start;
            if caches[li].is_none() {
                self.recompute_for(gpu, start, li, &mut inputs, &mut caches, hooks)?;
            }
            let cache = caches[li]
                .take()
                .expect("a cache for every block reached by backward");
            let x = inputs[li]
                .take()
                .expect("an input for every block reached by backward");
            // the first block's input gradient feeds only the embeddings' gradients
            let need_dx = i > start
                || !span.first
                || self.wte.trainable()
                || self.wpe.as_ref().is_some_and(|p| p.trainable());
            hooks.values_needed(gpu, &mut self.blocks[i].params_mut())?;
            hooks.grads_needed(gpu, &mut self.blocks[i].params_mut())?;
            let dx_in = self.blocks[i].backward(gpu, &x, cache, &dx, need_dx)?;
            hooks.grads_written(gpu, &mut self.blocks[i].params_mut())?;
            hooks.values_done(gpu, &mut self.blocks[i].params_mut())?;
            match dx_in {
                Some(d) => dx = d,
                None => return Ok(None),
            }
        }
        if !span.first {
            return Ok(Some(dx));
        }
        if span.last && self.config.tied() {
            // the tied embedding's gradient is lent already (the head wrote its share)
        } else {
            hooks.grads_needed(gpu, &mut [&mut self.wte])?;
        }
        if let Some(wpe) = &mut self.wpe {
            hooks.grads_needed(gpu, &mut [wpe])?;
        }
        if let Some((dwte, accumulate)) = self.wte.grad_write() {
            embedding_backward(gpu, &batch.tokens, &dx, dwte, accumulate);
        }
        if let Some((dwpe, accumulate)) = self.wpe.as_ref().and_then(|p| p.grad_write()) {
            embedding_backward(gpu, &batch.positions, &dx, dwpe, accumulate);
        }
        hooks.grads_written(gpu, &mut self.embedding_params())?;
        Ok(None)
    }

    /// The LM head and its loss, forward and backward, over the final norm's output xf
    /// (B, T, C): the per-position losses (B·T) and dxf; the head's gradient written (after
    /// `hooks` lend it). By chunks of rows ([`Gpt::head_rows`]), so the (B, T, V) logits are
    /// never whole: each chunk's logits and their gradient, (rows, V), live for that chunk
    /// alone. Losses and dxf are row-wise, the same bits whatever the chunks; the head's
    /// gradient sums the chunks' products in turn (one chunk: the one product).
    fn head_pass(
        &mut self,
        gpu: &Gpu,
        batch: &TokenBatch,
        xf: &Tensor,
        loss: LossGrad,
        hooks: &mut dyn StepHooks,
    ) -> Result<(Tensor, Tensor)> {
        let dtype = self.wte.compute_dtype();
        let (n, v, c) = (
            batch.batch * batch.seq,
            self.config.vocab_size,
            self.config.n_embd,
        );
        let per = self.head_rows(gpu);
        let losses = f32_activation(gpu, "losses", &[n])?;
        let dxf = activation(gpu, dtype, "dxf", xf.shape())?;
        for (i, start) in (0..n).step_by(per).enumerate() {
            let r = per.min(n - start);
            let whole = r == n;
            let chunk = self.head_chunk(gpu, batch, xf, start, r)?;
            // the chunk's losses and dxf (the tensors themselves when one chunk holds them all)
            let (lc, dc) = match whole {
                true => (None, None),
                false => (
                    Some(f32_activation(gpu, "losses.chunk", &[r])?),
                    Some(activation(gpu, dtype, "dxf.chunk", &[r, c])?),
                ),
            };
            let (l, dx) = (lc.as_ref().unwrap_or(&losses), dc.as_ref().unwrap_or(&dxf));
            let d = MatmulDims::new(r, v, c, Layout::NT);
            let HeadChunk { x, targets, logits } = chunk;
            let (x, targets) = (
                x.as_ref().unwrap_or(xf),
                targets.as_ref().unwrap_or(&batch.targets),
            );
            // A separate buffer keeps the kernel's read and write bindings distinct.
            let dlogits = activation(gpu, dtype, "dlogits", &[r, v])?;
            softmax_xent_scaled(
                gpu,
                &logits,
                targets,
                l,
                Some(&dlogits),
                loss.scale,
                loss.loss_scale,
            )?;
            drop(logits);
            // backward: the forward in reverse
            let w = self.head_weight().weight();
            matmul_backward(gpu, d, x, w, &dlogits, Some(dx), None, None, false);
            // the head's gradient (tied: the embedding's share; the embeddings add theirs last)
            if i == 0 {
                hooks.grads_needed(gpu, &mut [self.head_weight_mut()])?;
            }
            let head = self.head_weight();
            if let Some((dw, accumulate)) = head.grad_write() {
                let accumulate = accumulate || i > 0;
                matmul_backward(
                    gpu,
                    d,
                    x,
                    head.weight(),
                    &dlogits,
                    None,
                    Some(dw),
                    None,
                    accumulate,
                );
            }
            if let (Some(lc), Some(dc)) = (&lc, &dc) {
                put_rows(gpu, lc, &losses, start);
                put_rows(gpu, dc, &dxf, start);
            }
        }
        Ok((losses, dxf))
    }

    /// The forward of the head's rows start .. start + r: those rows of xf and the targets
    /// (taken only when they are not all of them) and their logits (r, V) = x·Wᵀ, W the head's.
    fn head_chunk(
        &self,
        gpu: &Gpu,
        batch: &TokenBatch,
        xf: &Tensor,
        start: usize,
        r: usize,
    ) -> Result<HeadChunk> {
        let (n, v, c) = (
            batch.batch * batch.seq,
            self.config.vocab_size,
            self.config.n_embd,
        );
        let (x, targets) = match r == n {
            true => (None, None),
            false => (
                Some(take_rows(gpu, xf, start, r)?),
                Some(take_rows(gpu, &batch.targets, start, r)?),
            ),
        };
        let logits = activation(gpu, self.wte.compute_dtype(), "logits", &[r, v])?;
        let d = MatmulDims::new(r, v, c, Layout::NT);
        let w = self.head_weight().weight();
        matmul(gpu, d, x.as_ref().unwrap_or(xf), w, None, &logits, false);
        Ok(HeadChunk { x, targets, logits })
    }

    /// Rows per chunk of the LM head: `head_rows` when set, else as many as keep a chunk's f32
    /// logits within [`HEAD_CHUNK_BYTES`] and one storage binding (at least one row).
    pub fn head_rows(&self, gpu: &Gpu) -> usize {
        if let Some(rows) = self.head_rows {
            return rows.max(1);
        }
        let row = 4 * self.config.vocab_size as u64;
        let budget = HEAD_CHUNK_BYTES.min(gpu.limits().max_storage_buffer_binding_size);
        (budget / row).max(1) as usize
    }

    /// [`Gpt::head_weight`], mutably.
    fn head_weight_mut(&mut self) -> &mut Param {
        self.lm_head.as_mut().unwrap_or(&mut self.wte)
    }

    /// What the head reads: the final norm and the head's weight.
    fn head_params(&mut self) -> Vec<&mut Param> {
        let mut p = self.ln_f.params_mut();
        p.insert(0, self.lm_head.as_mut().unwrap_or(&mut self.wte));
        p
    }

    /// [`Gpt::block_forward`] between the hooks that bring block i's values and free them.
    fn block_forward_hooked(
        &mut self,
        gpu: &Gpu,
        i: usize,
        x: &Tensor,
        hooks: &mut dyn StepHooks,
    ) -> Result<(Tensor, BlockCache)> {
        hooks.values_needed(gpu, &mut self.blocks[i].params_mut())?;
        let r = self.block_forward(gpu, i, x)?;
        hooks.values_done(gpu, &mut self.blocks[i].params_mut())?;
        Ok(r)
    }

    /// Rebuilds the cache (and input) of block `first + i` for the backward pass; `inputs` and
    /// `caches` are indexed within the span that starts at block `first`.
    fn recompute_for(
        &mut self,
        gpu: &Gpu,
        first: usize,
        i: usize,
        inputs: &mut [Option<Tensor>],
        caches: &mut [Option<BlockCache>],
        hooks: &mut dyn StepHooks,
    ) -> Result<()> {
        let n = inputs.len();
        match self.recompute {
            Recompute::None => unreachable!("vanilla backprop keeps every cache"),
            Recompute::All => {
                // From the span's input through block i, keeping only the running activation.
                let mut x: Option<Tensor> = None;
                for j in 0..i {
                    let input = x.as_ref().unwrap_or_else(|| inputs[0].as_ref().unwrap());
                    x = Some(self.block_forward_hooked(gpu, first + j, input, hooks)?.0);
                }
                let input = match x {
                    Some(x) => x,
                    // the span's first block's input is the kept input itself
                    None => inputs[0].take().unwrap(),
                };
                let (_, cache) = self.block_forward_hooked(gpu, first + i, &input, hooks)?;
                if i == 0 {
                    inputs[0] = Some(input);
                } else {
                    inputs[i] = Some(input);
                }
                caches[i] = Some(cache);
            }
            Recompute::Every(_) | Recompute::Sqrt => {
                // Recompute block i's whole segment from its checkpoint, keeping every cache.
                let k = self.recompute.segment(n).unwrap();
                let start = i / k * k;
                let mut x = inputs[start]
                    .take()
                    .expect("a checkpoint at every segment start");
                for j in start..=i {
                    let (y, cache) = self.block_forward_hooked(gpu, first + j, &x, hooks)?;
                    caches[j] = Some(cache);
                    inputs[j] = Some(x);
                    x = y;
                }
            }
        }
        Ok(())
    }

    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.numel()).sum()
    }
}
