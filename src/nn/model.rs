//! The [`Model`] trait: what the trainer, evaluation, the command line and the planner need of a
//! model, so that a new model kind (a pipelined GPT, a LoRA GPT, a quantized GPT) is one `impl`
//! instead of an arm in every `match`. Batches arrive as host data ([`Batch`]); the model uploads
//! them.

use super::gpt::{StageCache, StageOut, StageSpan, TokenBatch};
use super::kv_cache::KvCache;
use super::lora::LoraConfig;
use super::{f32_activation, Build, Gpt, LossGrad, Mlp, Param, StepHooks};
use crate::error::{Error, Result};
use crate::gpu::{Category, Gpu};
use crate::ops::softmax_xent::{softmax_xent, PAD};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// What a pipeline splits of a model ([`Model::stages`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stages {
    /// Blocks, the unit a stage holds a run of.
    pub blocks: usize,
    /// C of the (B, T, C) hidden state passed between stages.
    pub width: usize,
    /// V of the last stage's (B, T, V) logits.
    pub vocab: usize,
}

/// One batch on the host: the model's inputs and their targets.
#[derive(Clone, Debug, PartialEq)]
pub enum Batch {
    /// Feature rows x (N, features) and class targets y (N).
    Rows {
        x: Vec<f32>,
        y: Vec<u32>,
        features: usize,
    },
    /// Token sequences x (B, seq) and next-token targets y (B, seq); PAD targets carry no loss.
    Tokens {
        x: Vec<u32>,
        y: Vec<u32>,
        seq: usize,
    },
}

impl Batch {
    /// Rows, or sequences.
    pub fn len(&self) -> usize {
        match self {
            Batch::Rows { y, .. } => y.len(),
            Batch::Tokens { y, seq, .. } => y.len() / seq,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Targets that carry a loss (not PAD): the denominator of the batch's mean loss.
    pub fn targets(&self) -> usize {
        match self {
            Batch::Rows { y, .. } | Batch::Tokens { y, .. } => {
                y.iter().filter(|&&t| t != PAD).count()
            }
        }
    }

    /// Consecutive pieces of at most `n` rows or sequences (the micro-batches).
    pub fn split(&self, n: usize) -> Vec<Batch> {
        let n = n.max(1);
        match self {
            Batch::Rows { x, y, features } => x
                .chunks(n * features)
                .zip(y.chunks(n))
                .map(|(x, y)| Batch::Rows {
                    x: x.to_vec(),
                    y: y.to_vec(),
                    features: *features,
                })
                .collect(),
            Batch::Tokens { x, y, seq } => x
                .chunks(n * seq)
                .zip(y.chunks(n * seq))
                .map(|(x, y)| Batch::Tokens {
                    x: x.to_vec(),
                    y: y.to_vec(),
                    seq: *seq,
                })
                .collect(),
        }
    }
}

/// A trainable model. Its parameters are in a fixed order (the checkpoint's); the trainable ones
/// are those with a gradient (see [`Param::freeze`]).
pub trait Model {
    /// One line for logs: "gpt (4 layers, …)".
    fn describe(&self) -> String;

    fn params(&self) -> Vec<&Param>;
    fn params_mut(&mut self) -> Vec<&mut Param>;

    /// The parameters that get gradients and optimizer state.
    fn trainable_params(&self) -> Vec<&Param> {
        self.params()
            .into_iter()
            .filter(|p| p.trainable())
            .collect()
    }

    /// The working precision (f32, or the half type under mixed precision): its parameters'.
    fn compute_dtype(&self) -> crate::tensor::DType {
        self.params()
            .first()
            .map_or(crate::tensor::DType::F32, |p| p.compute_dtype())
    }

    fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.numel()).sum()
    }

    /// Records forward and backward of Σ losses over the batch, the backward seeded by `loss`
    /// (the step's 1/targets and loss scale): adds into every
    /// trainable parameter's gradient and returns the per-target losses. Nothing is submitted
    /// unless `hooks` submit ([`StepHooks`]; [`super::NoHooks`] for one device).
    fn forward_backward(
        &mut self,
        gpu: &Gpu,
        batch: &Batch,
        loss: LossGrad,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor>;

    /// Per-target losses, forward only (PAD targets give 0).
    fn losses(&self, gpu: &Gpu, batch: &Batch) -> Result<Tensor>;

    /// Logits (N, classes) for rows, (B, seq, vocab) for tokens; forward only.
    fn logits(&self, gpu: &Gpu, batch: &Batch) -> Result<Tensor>;

    /// [`Model::logits`] with `hooks` around each layer group's forward (nothing kept for a
    /// backward): ZeRO 3's evaluation brings each group's values through them and frees them
    /// after, so no device holds the whole model.
    fn logits_hooked(
        &mut self,
        gpu: &Gpu,
        batch: &Batch,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor>;

    /// The longest token sequence the model reads, for a model that generates text.
    fn context(&self) -> Option<usize>;

    /// Block forward evaluations so far (recomputation included), for a model with blocks.
    fn block_forwards(&self) -> u64 {
        0
    }

    /// Seeds the dropout masks of the next training forward and backward (the trainer calls it
    /// per step and micro-batch, so masks depend on the run's seed and position, not on call
    /// order). A no-op for a model without dropout.
    fn set_dropout_seed(&self, seed: u64) {
        let _ = seed;
    }

    /// An empty KV cache for up to `capacity` positions, for a model that generates text (see
    /// [`super::kv_cache`]).
    fn kv_cache(&self, gpu: &Gpu, capacity: usize) -> Result<KvCache> {
        let _ = (gpu, capacity);
        Err(Error::Config(format!(
            "{} does not generate text",
            self.describe()
        )))
    }

    /// Runs `tokens` after the cache's positions, appending their keys and values: the next
    /// token's logits (1, V), f32 (see [`Gpt::extend`]).
    fn extend(&self, gpu: &Gpu, cache: &mut KvCache, tokens: &[u32]) -> Result<Tensor> {
        let _ = (gpu, cache, tokens);
        Err(Error::Config(format!(
            "{} does not generate text",
            self.describe()
        )))
    }

    /// What a pipeline splits, for a model of blocks between an embedding and a head: its
    /// block count and the width of the (B, T, C) state between stages (None: a model a
    /// pipeline cannot split).
    fn stages(&self) -> Option<Stages> {
        None
    }

    /// A batch of token sequences on the device, uploaded once for a micro-batch's stage
    /// passes (a model that reads tokens).
    fn upload_tokens(&self, gpu: &Gpu, batch: &Batch) -> Result<TokenBatch> {
        let _ = (gpu, batch);
        Err(self.not_staged())
    }

    /// A pipeline stage's forward of one micro-batch over `span`'s blocks (see
    /// [`Gpt::stage_forward`]): from the embeddings (first stage) or `input`, to the hidden
    /// state or, on the last stage, the losses with the head's backward done.
    fn stage_forward(
        &mut self,
        gpu: &Gpu,
        span: &StageSpan,
        batch: &TokenBatch,
        input: Option<Tensor>,
        loss: LossGrad,
        hooks: &mut dyn StepHooks,
    ) -> Result<(StageOut, StageCache)> {
        let _ = (gpu, span, batch, input, loss, hooks);
        Err(self.not_staged())
    }

    /// The backward of [`Model::stage_forward`]: the gradient at the stage's input (None on the
    /// first stage).
    fn stage_backward(
        &mut self,
        gpu: &Gpu,
        span: &StageSpan,
        batch: &TokenBatch,
        cache: StageCache,
        dout: Option<Tensor>,
        hooks: &mut dyn StepHooks,
    ) -> Result<Option<Tensor>> {
        let _ = (gpu, span, batch, cache, dout, hooks);
        Err(self.not_staged())
    }

    /// A stage's forward only (an evaluation): the hidden state, or the logits on the last.
    fn stage_logits(
        &mut self,
        gpu: &Gpu,
        span: &StageSpan,
        batch: &TokenBatch,
        input: Option<Tensor>,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        let _ = (gpu, span, batch, input, hooks);
        Err(self.not_staged())
    }

    /// Whether the passes run now train (LoRA's dropout applies only then); the model's own
    /// [`Model::forward_backward`] sets it, a pipeline around its stage passes.
    fn set_training(&self, on: bool) {
        let _ = on;
    }

    /// The error of a stage pass on a model a pipeline cannot split.
    fn not_staged(&self) -> Error {
        Error::Config(format!(
            "{}: a pipeline splits models of blocks (gpt)",
            self.describe()
        ))
    }

    /// The layers LoRA can adapt (empty for a model without any).
    fn linears_mut(&mut self) -> Vec<&mut super::linear::Linear> {
        vec![]
    }

    /// Gives the layers `config` targets LoRA adapters (trainable; everything else stays as it
    /// was built). An error for a model LoRA does not apply to.
    fn add_lora(&mut self, b: &Build, config: &LoraConfig, rng: &mut Rng) -> Result<()> {
        let _ = (b, config, rng);
        Err(Error::Config(format!(
            "lora: {} has no layers LoRA targets (it applies to the gpt model)",
            self.describe()
        )))
    }

    /// Folds every adapter into its weight (`merge`) or takes it out again.
    fn fold_lora(&mut self, gpu: &Gpu, merge: bool) -> Result<()> {
        for l in self.linears_mut() {
            if l.lora.is_some() {
                l.fold_lora(gpu, merge)?;
            }
        }
        Ok(())
    }
}

/// Freezes every parameter whose name matches one of `patterns` (see
/// [`super::name_matches`]; a model built by a [`Build`] with the same patterns has
/// them frozen already, and never allocated their gradients); an unmatched pattern is an error
/// naming it.
pub fn freeze(model: &mut dyn Model, patterns: &[String]) -> Result<()> {
    for pattern in patterns {
        let mut matched = false;
        for p in model.params_mut() {
            if super::name_matches(pattern, &p.name) {
                p.freeze();
                matched = true;
            }
        }
        if !matched {
            return Err(Error::Config(format!(
                "freeze: {pattern:?} matches no parameter of this model"
            )));
        }
    }
    Ok(())
}

fn rows<'b>(what: &str, batch: &'b Batch) -> (&'b [f32], &'b [u32], usize) {
    match batch {
        Batch::Rows { x, y, features } => (x, y, *features),
        Batch::Tokens { .. } => panic!("{what}: an mlp takes feature rows, not tokens"),
    }
}

impl Mlp {
    fn upload(&self, gpu: &Gpu, batch: &Batch) -> Result<(Tensor, Tensor)> {
        let (x, y, features) = rows("mlp", batch);
        assert_eq!(features, self.config.inputs, "mlp input features");
        let n = y.len();
        let tx = Tensor::from_f32(gpu, "x", &[n, features], x, Category::Activations)?;
        let ty = Tensor::from_u32(gpu, "y", &[n], y, Category::Activations)?;
        Ok((tx, ty))
    }
}

/// `t` as an f32 tensor (logits computed in half precision, for the callers that read them).
pub(crate) fn in_f32(gpu: &Gpu, t: Tensor) -> Result<Tensor> {
    if t.dtype() == crate::tensor::DType::F32 {
        return Ok(t);
    }
    let wide = f32_activation(gpu, t.name(), t.shape())?;
    crate::ops::cast::cast(gpu, &t, &wide);
    Ok(wide)
}

impl Model for Mlp {
    fn describe(&self) -> String {
        format!(
            "mlp ({:?} hidden, {:?})",
            self.config.hidden, self.config.activation
        )
    }
    fn params(&self) -> Vec<&Param> {
        Mlp::params(self)
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        Mlp::params_mut(self)
    }
    fn linears_mut(&mut self) -> Vec<&mut super::linear::Linear> {
        self.layers.iter_mut().collect()
    }
    fn forward_backward(
        &mut self,
        gpu: &Gpu,
        batch: &Batch,
        loss: LossGrad,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        let (x, y) = self.upload(gpu, batch)?;
        Mlp::forward_backward(self, gpu, &x, &y, loss, hooks)
    }
    fn losses(&self, gpu: &Gpu, batch: &Batch) -> Result<Tensor> {
        let (x, y) = self.upload(gpu, batch)?;
        let logits = Mlp::logits(self, gpu, &x)?;
        let losses = f32_activation(gpu, "losses", &[x.rows()])?;
        softmax_xent(gpu, &logits, &y, &losses, None, 0.0)?;
        Ok(losses)
    }
    fn logits(&self, gpu: &Gpu, batch: &Batch) -> Result<Tensor> {
        let (x, _) = self.upload(gpu, batch)?;
        let logits = Mlp::logits(self, gpu, &x)?;
        in_f32(gpu, logits)
    }
    fn logits_hooked(
        &mut self,
        gpu: &Gpu,
        batch: &Batch,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        let (x, _) = self.upload(gpu, batch)?;
        let logits = Mlp::logits_hooked(self, gpu, &x, hooks)?;
        in_f32(gpu, logits)
    }
    fn context(&self) -> Option<usize> {
        None
    }
}

impl Gpt {
    /// A host batch of token sequences on the device.
    pub fn upload(&self, gpu: &Gpu, batch: &Batch) -> Result<TokenBatch> {
        match batch {
            Batch::Tokens { x, y, seq } => {
                TokenBatch::new(gpu, &self.config, x, y, x.len() / seq, *seq)
            }
            Batch::Rows { .. } => panic!("gpt: takes token sequences, not feature rows"),
        }
    }
}

impl Model for Gpt {
    fn describe(&self) -> String {
        let c = &self.config;
        match c.family {
            super::Family::Gpt2 => format!(
                "gpt ({} layers, {} heads, d_model {}, context {})",
                c.n_layer, c.n_head, c.n_embd, c.block_size
            ),
            super::Family::Llama => format!(
                "llama ({} layers, {} heads sharing {} key/value heads, d_model {}, SwiGLU {}, \
                 context {}, {} head)",
                c.n_layer,
                c.n_head,
                c.kv_heads(),
                c.n_embd,
                c.ffn(),
                c.block_size,
                if c.tied() { "tied" } else { "untied" }
            ),
        }
    }
    fn params(&self) -> Vec<&Param> {
        Gpt::params(self)
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        Gpt::params_mut(self)
    }
    fn forward_backward(
        &mut self,
        gpu: &Gpu,
        batch: &Batch,
        loss: LossGrad,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        let b = self.upload(gpu, batch)?;
        Gpt::forward_backward(self, gpu, &b, loss, hooks)
    }
    fn losses(&self, gpu: &Gpu, batch: &Batch) -> Result<Tensor> {
        let b = self.upload(gpu, batch)?;
        Gpt::losses(self, gpu, &b)
    }
    fn logits(&self, gpu: &Gpu, batch: &Batch) -> Result<Tensor> {
        let b = self.upload(gpu, batch)?;
        let logits = Gpt::logits(self, gpu, &b)?;
        in_f32(gpu, logits)
    }
    fn logits_hooked(
        &mut self,
        gpu: &Gpu,
        batch: &Batch,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        let b = self.upload(gpu, batch)?;
        let whole = super::gpt::StageSpan::whole(self.config.n_layer);
        let logits = self.stage_logits(gpu, &whole, &b, None, hooks)?;
        in_f32(gpu, logits)
    }
    fn context(&self) -> Option<usize> {
        Some(self.config.block_size)
    }
    fn kv_cache(&self, gpu: &Gpu, capacity: usize) -> Result<KvCache> {
        Gpt::kv_cache(self, gpu, capacity)
    }
    fn extend(&self, gpu: &Gpu, cache: &mut KvCache, tokens: &[u32]) -> Result<Tensor> {
        Gpt::extend(self, gpu, cache, tokens)
    }
    fn block_forwards(&self) -> u64 {
        self.block_forwards
            .load(std::sync::atomic::Ordering::Relaxed)
    }
    fn linears_mut(&mut self) -> Vec<&mut super::linear::Linear> {
        Gpt::linears_mut(self)
    }
    fn stages(&self) -> Option<Stages> {
        Some(Stages {
            blocks: self.config.n_layer,
            width: self.config.n_embd,
            vocab: self.config.vocab_size,
        })
    }
    fn upload_tokens(&self, gpu: &Gpu, batch: &Batch) -> Result<TokenBatch> {
        self.upload(gpu, batch)
    }
    fn stage_forward(
        &mut self,
        gpu: &Gpu,
        span: &StageSpan,
        batch: &TokenBatch,
        input: Option<Tensor>,
        loss: LossGrad,
        hooks: &mut dyn StepHooks,
    ) -> Result<(StageOut, StageCache)> {
        Gpt::stage_forward(self, gpu, span, batch, input, loss, hooks)
    }
    fn stage_backward(
        &mut self,
        gpu: &Gpu,
        span: &StageSpan,
        batch: &TokenBatch,
        cache: StageCache,
        dout: Option<Tensor>,
        hooks: &mut dyn StepHooks,
    ) -> Result<Option<Tensor>> {
        Gpt::stage_backward(self, gpu, span, batch, cache, dout, hooks)
    }
    fn stage_logits(
        &mut self,
        gpu: &Gpu,
        span: &StageSpan,
        batch: &TokenBatch,
        input: Option<Tensor>,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        Gpt::stage_logits(self, gpu, span, batch, input, hooks)
    }
    fn set_training(&self, on: bool) {
        Gpt::set_training(self, on)
    }
    fn set_dropout_seed(&self, seed: u64) {
        for (i, l) in self.linears().into_iter().enumerate() {
            if let Some(lora) = &l.lora {
                lora.set_seed(seed, i);
            }
        }
    }
    fn add_lora(&mut self, b: &Build, config: &LoraConfig, rng: &mut Rng) -> Result<()> {
        Gpt::add_lora(self, b, config, rng)
    }
}
