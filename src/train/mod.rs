//! The trainer: builds the model and data a config describes, runs optimizer steps (each recorded
//! into one submit), evaluates, and saves or resumes checkpoints.
//!
//! A step runs in phases, each a method that parallel and mixed-precision training can call
//! around: [`Trainer::draw_batch`] (host data) → [`Trainer::forward_backward`] (every
//! micro-batch; gradients accumulate) → [`Trainer::grad_norm`] (the squared global norm over the
//! trainable parameters, on the GPU) → [`Trainer::update`] (the optimizer, given that norm).

pub mod adapter;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod fit;
pub mod generate;
pub mod layout;
pub mod metrics;
pub mod outdir;
pub mod sft;

pub use config::{ModelKind, TrainConfig};
pub use fit::{Event, FitReport, Local, Observer, StepLog, Strategy, CHECKPOINT_FILE};
pub use layout::Layout;

use crate::data::addition::Addition;
use crate::data::digits;
use crate::data::rows::Rows;
use crate::data::text::Text;
use crate::error::{Error, Result};
use crate::gpu::{Category, Gpu};
use crate::nn::model::freeze;
use crate::nn::{zero_grads, Batch, Build, Gpt, LossGrad, Mlp, Model, NoHooks, Param, StepHooks};
use crate::ops::reduce::{reduce, reduce_all, Reduction};
use crate::optim::guard::{self, Health};
use crate::optim::{grad_norm_sq, Optimizer};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};
use checkpoint::{Checkpoint, CheckpointMeta, RestoreReport};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

pub enum Task {
    /// Feature rows in classes (the digits).
    Rows(Rows),
    Addition(Addition),
    Text(Text),
    /// Fine-tuning examples (a JSONL directory through the base model's tokenizer).
    Sft(sft::Sft),
}

/// Loads the data a config names.
pub fn load_task(config: &TrainConfig) -> Result<Task> {
    Ok(match config.data.as_str() {
        "digits" => Task::Rows(digits::load()?),
        "addition" => Task::Addition(config.addition_task()),
        path if crate::data::jsonl::is_data_dir(Path::new(path)) => {
            let base = config
                .init
                .as_deref()
                .filter(|b| crate::import::is_model(Path::new(b)))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{path} is fine-tuning data (JSONL): it needs a model with a tokenizer \
                         to start from, a GGUF file or a Hugging Face directory (--model)"
                    ))
                })?;
            let vocab = crate::import::Vocab::load(Path::new(base))?;
            let seq = config.gpt.block_size;
            Task::Sft(sft::Sft::load(
                Path::new(path),
                &vocab,
                seq,
                config.train_on_prompts,
            )?)
        }
        path if config
            .init
            .as_deref()
            .is_some_and(|b| crate::import::is_model(Path::new(b))) =>
        {
            return Err(Error::Config(format!(
                "{path}: a model from elsewhere fine-tunes on a directory of JSONL records \
                 (train.jsonl, valid.jsonl); a text file trains byte-level models (write it as \
                 {{\"text\": …}} lines)"
            )))
        }
        path => {
            let text = Text::load(Path::new(path))?;
            text.check_block_size(config.gpt.block_size)?;
            Task::Text(text)
        }
    })
}

impl Task {
    /// Draws a training batch of `b` rows or sequences.
    pub fn draw(&self, b: usize, seq: usize, rng: &mut Rng) -> Batch {
        match self {
            Task::Rows(d) => {
                let n = d.train_y.len();
                let idx: Vec<usize> = (0..b).map(|_| rng.below(n as u64) as usize).collect();
                let f = d.features;
                Batch::Rows {
                    x: idx
                        .iter()
                        .flat_map(|&i| d.train_x[i * f..(i + 1) * f].to_vec())
                        .collect(),
                    y: idx.iter().map(|&i| d.train_y[i]).collect(),
                    features: f,
                }
            }
            Task::Addition(a) => {
                let (x, y) = a.batch(b, rng);
                Batch::Tokens { x, y, seq }
            }
            Task::Text(text) => {
                let (x, y) = Text::batch(&text.train, b, seq, rng);
                Batch::Tokens { x, y, seq }
            }
            Task::Sft(s) => s.draw(b, rng),
        }
    }

    /// Samples in one epoch: the training rows (digits), the problems not held out (addition;
    /// batches draw them at random, so an epoch is this many draws, not one pass), or the
    /// windows of block_size that tile the training text (each token a target once).
    pub fn epoch_size(&self, config: &TrainConfig) -> usize {
        match self {
            Task::Rows(d) => d.train_y.len(),
            Task::Addition(a) => a.train_size(),
            Task::Text(text) => text.train.len() / config.gpt.block_size.max(1),
            Task::Sft(s) => s.train.len(),
        }
    }

    /// Every batch as long as the context (fine-tuning examples otherwise pad to their batch's
    /// longest): what a pipeline's fixed activation shapes, and a plan's worst case, need.
    pub fn pad_to_block(&mut self) {
        if let Task::Sft(s) = self {
            s.full_rows = true;
        }
    }

    /// The sequence length a GPT trains on for this task (1 for rows).
    pub fn seq_len(&self, config: &TrainConfig) -> usize {
        match self {
            Task::Rows(_) => 1,
            Task::Addition(a) => a.seq_len() - 1,
            Task::Text(_) | Task::Sft(_) => config.gpt.block_size,
        }
    }
}

/// Builds the model a config describes in `b`'s precision and shard, initialised from the
/// config's seed, with the parameters the config's `freeze` patterns name frozen.
pub fn build_model(b: &Build, config: &TrainConfig) -> Result<Box<dyn Model>> {
    let gpu = b.gpu;
    // the weights alone, from the config, before anything is built
    crate::memory::check_fits(
        gpu,
        "the model's fp32 weights",
        config.weight_count().saturating_mul(4),
        None,
        "use a smaller model (fewer or narrower layers, a smaller vocabulary or context)",
    )?;
    let mut rng = Rng::new(config.seed);
    // Frozen parameters are built without gradients; `freeze` then checks every pattern
    // matched. With LoRA every base weight is frozen and the adapters (from their own stream,
    // so the base draws the same weights as without) are what trains.
    let mut base_frozen = config.freeze.clone();
    if config.lora.is_some() {
        base_frozen.push("*".into());
    }
    let mut base = b.clone().frozen(&base_frozen);
    if let Some(lora) = &config.lora {
        // modules_to_save: trained in full beside the adapters
        base = base.thawed(&lora.modules_to_save);
    }
    if config.init.is_some() {
        // every base weight comes from the init (Trainer::init_from): none drawn
        base = base.loading();
    }
    if config.qlora.is_some() {
        // the frozen linears wait for their quantized form: never allocated dense
        base = base.quantized();
    }
    let mut model: Box<dyn Model> = match config.model {
        ModelKind::Mlp => Box::new(Mlp::new(&base, config.mlp.clone(), &mut rng)?),
        ModelKind::Gpt => {
            let mut g = Gpt::new(&base, config.gpt.clone(), &mut rng)?;
            g.recompute = config.recompute;
            Box::new(g)
        }
    };
    if let Some(lora) = &config.lora {
        let mut lora_rng = Rng::new(config.seed ^ 0x10_4A);
        let adapters = b.clone().frozen(&config.freeze);
        model.add_lora(&adapters, lora, &mut lora_rng)?;
    }
    freeze(model.as_mut(), &config.freeze)?;
    if model.trainable_params().is_empty() {
        return Err(Error::Config(
            "freeze: every parameter is frozen; nothing would train".into(),
        ));
    }
    Ok(model)
}

/// What one evaluation measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    pub loss: f32,
    /// The standard error of `loss`: the standard deviation of the items' mean losses (test
    /// samples, held-out problems, validation windows) over √items, so that two runs' losses
    /// can be told apart or not.
    pub loss_se: f32,
    /// Test accuracy (digits) or held-out exact match (addition); none for text.
    pub accuracy: Option<f32>,
    /// The binomial standard error of `accuracy`, √(p(1−p)/n).
    pub accuracy_se: Option<f32>,
    /// What the loss was measured on ("validation split", "test split", …).
    pub source: &'static str,
}

pub struct Trainer<'g> {
    pub gpu: &'g Gpu,
    pub config: TrainConfig,
    pub model: Box<dyn Model>,
    pub task: Task,
    pub optimizer: Optimizer,
    /// Draws the training batches; saved in checkpoints so a resumed run sees the same batches.
    pub rng: Rng,
    /// Optimizer steps taken.
    pub step: u64,
    /// Tokens (GPT) or samples (MLP) drawn so far by [`Trainer::draw_batch`] (for tokens/s).
    pub items_drawn: u64,
    /// This run's id (new for a fresh run, the checkpoint's on a resume).
    pub run: String,
    /// (1): Σ of the last step's per-target losses
    loss_sum: Tensor,
    /// (8): the step's squared global gradient norm, its skip word, the loss scaler's state and
    /// the steps taken (optim::guard); shared with the model's step for the loss scale
    stats: Arc<Tensor>,
    /// (4, u32): the non-finite steps the guard skipped (optim::guard)
    health: Tensor,
    /// What a data-parallel rank keeps of the model states (ZeRO); None: all of them.
    shard: Option<Shard>,
}

/// A ZeRO rank's share of the model states: optimizer state for the parameters it owns (stage
/// 1; under mixed precision their f32 masters too, the others keeping half working copies),
/// from stage 2 gradient buffers for those alone, from stage 3 their values alone (the others'
/// gradients are lent by the step's hooks while the backward writes them, see
/// [`crate::nn::StepHooks`]). A parameter server's replica owns nothing.
#[derive(Clone, Debug, Default)]
pub struct Shard {
    pub own: HashSet<String>,
    pub grads: bool,
    /// ZeRO 3: only the owned parameters' values too (the others gathered layer by layer).
    pub values: bool,
}

impl<'g> Trainer<'g> {
    pub fn new(gpu: &'g Gpu, config: TrainConfig) -> Result<Trainer<'g>> {
        Self::loading(gpu, config, None)
    }

    /// Validates the config, loads its data and builds the trainer.
    fn loading(
        gpu: &'g Gpu,
        config: TrainConfig,
        rank: Option<Option<Shard>>,
    ) -> Result<Trainer<'g>> {
        config.validate()?;
        let task = load_task(&config)?;
        Self::build(gpu, config, task, rank)
    }

    /// A trainer on data already loaded (`task` must be the config's kind of data).
    pub fn with_task(gpu: &'g Gpu, config: TrainConfig, task: Task) -> Result<Trainer<'g>> {
        Self::build(gpu, config, task, None)
    }

    /// One rank (or pipeline stage) of a run over several devices, keeping `shard` of the model
    /// states (ZeRO, a stage: each updates its own and the ranks exchange the results; None:
    /// all of them). Its gradients are f32 whatever the precision: they are summed over the
    /// ranks (on the host, in f32), as one device sums its micro-batches' gradients in f32
    /// under mixed precision ([`TrainConfig::grad_dtype`]), so a run on n ranks equals one
    /// device running the global batch as n micro-batches.
    pub fn for_rank(
        gpu: &'g Gpu,
        config: TrainConfig,
        shard: Option<Shard>,
    ) -> Result<Trainer<'g>> {
        Self::loading(gpu, config, Some(shard))
    }

    /// `rank`: None for a run on one device, Some(shard) for a rank of a parallel run.
    fn build(
        gpu: &'g Gpu,
        mut config: TrainConfig,
        task: Task,
        rank: Option<Option<Shard>>,
    ) -> Result<Trainer<'g>> {
        let grad_dtype = match rank {
            Some(_) => DType::F32,
            None => config.grad_dtype(),
        };
        let shard = rank.flatten();
        if let (ModelKind::Mlp, Task::Rows(rows)) = (config.model, &task) {
            config.mlp.inputs = rows.features;
            config.mlp.classes = rows.classes;
        }
        config.validate_for(matches!(task, Task::Rows(_)))?;
        let dtype = config.precision.dtype();
        if dtype == DType::F16 && !gpu.features().contains(wgpu::Features::SHADER_F16) {
            return Err(Error::Config(format!(
                "precision fp16 needs the adapter feature SHADER_F16, which {} does not offer; \
                 use bf16 (every adapter)",
                gpu.info().name
            )));
        }
        if config.lora.is_none() && config.freeze.is_empty() && shard.is_none() {
            // weights, gradients and optimizer state from the config alone, before anything
            // is built (a lower bound of the plan: activations come on top)
            let h = config.optimizer.resolve()?;
            let per_weight = crate::memory::model_state_bytes_per_param(
                config.precision,
                config.grad_dtype(),
                crate::memory::optimizer_bytes_per_param(h.name, h.centered, h.momentum),
            );
            let states = config.weight_count() as f64 * per_weight;
            crate::memory::check_fits(
                gpu,
                "the model states (weights, gradients and optimizer state)",
                states.min(u64::MAX as f64) as u64,
                None,
                "use a smaller model, or train part of it (freeze, LoRA)",
            )?;
        }
        // The matmul tuning first: an autotune's buffers are given back before the model
        // exists, so the run's peaks (and the planner's) are the training step's alone.
        crate::ops::matmul_tune::tuning(gpu);
        gpu.pool().reset_peaks();
        let mut build = Build::new(gpu).precision(dtype).grads(grad_dtype);
        if let Some(s) = &shard {
            build = build.shard(&s.own, s.grads, s.values);
        }
        let model = build_model(&build, &config)?;
        let scale = config.scaler().map_or(1.0, |s| s.initial_scale);
        let owned: Vec<_> = model
            .trainable_params()
            .into_iter()
            .filter(|p| shard.as_ref().is_none_or(|s| s.own.contains(&p.name)))
            .collect();
        let optimizer = Optimizer::new(gpu, &config.optimizer, config.grad_clip, &owned)?;
        drop(owned);
        Ok(Trainer {
            gpu,
            rng: Rng::new(config.seed ^ 0x5EED_DA7A),
            config,
            model,
            task,
            optimizer,
            step: 0,
            run: new_run_id(),
            items_drawn: 0,
            loss_sum: Tensor::zeros(gpu, "loss sum", &[1], Category::Workspace)?,
            stats: Arc::new(guard::step_stats(gpu, scale)?),
            health: guard::health_counters(gpu)?,
            shard,
        })
    }

    /// Phase 1: the whole effective batch, drawn first so that micro-batching changes nothing
    /// but what runs at once.
    pub fn draw_batch(&mut self) -> Batch {
        let seq = self.task.seq_len(&self.config);
        let batch = self.task.draw(self.config.batch_size, seq, &mut self.rng);
        self.items_drawn += match &batch {
            Batch::Rows { y, .. } => y.len(),
            // the tokens run, padding included (a fine-tuning batch's rows are its longest)
            Batch::Tokens { x, .. } => x.len(),
        } as u64;
        batch
    }

    /// Phase 2: zeroes the gradients, then records forward and backward of every micro-batch;
    /// the gradients accumulate, each micro-batch's loss scaled by 1/(targets in the whole
    /// batch). Returns that target count (the loss's denominator).
    pub fn forward_backward(&mut self, batch: &Batch) -> Result<usize> {
        let count = batch.targets().max(1);
        self.forward_backward_scaled(batch, count, 0, &mut NoHooks)?;
        Ok(count)
    }

    /// [`Trainer::forward_backward`] of a part of a larger batch (a data-parallel rank's
    /// slice): the losses are scaled by 1/`count`, the targets of the whole batch, and the
    /// part's micro-batches are the whole batch's from number `first` on (their dropout masks
    /// are those micro-batches' on one device); `hooks` see every micro-batch's backward (ZeRO 2
    /// reduces gradients inside it).
    pub fn forward_backward_scaled(
        &mut self,
        batch: &Batch,
        count: usize,
        first: usize,
        hooks: &mut dyn StepHooks,
    ) -> Result<()> {
        let gpu = self.gpu;
        zero_grads(gpu, &self.model.trainable_params());
        for (k, micro) in batch.split(self.config.micro_batch()).iter().enumerate() {
            let seed = self.dropout_seed(first + k);
            self.model.set_dropout_seed(seed);
            let scale = 1.0 / count as f32;
            let loss_scale = self.loss_scale();
            let loss = LossGrad {
                scale,
                loss_scale: loss_scale.as_deref(),
            };
            let losses = self.model.forward_backward(gpu, micro, loss, hooks)?;
            reduce(gpu, &losses, Reduction::Sum, &self.loss_sum, 0, k > 0)?;
        }
        Ok(())
    }

    /// The step stats whose loss scale a backward multiplies the loss gradient by, under a
    /// loss scaler (for a pass's [`LossGrad`]; None without one).
    pub fn loss_scale(&self) -> Option<Arc<Tensor>> {
        self.config.scaler().map(|_| self.stats.clone())
    }

    /// The dropout seed of this step's micro-batch `k`: from the run's seed, the step and the
    /// micro-batch, so a resumed run (or a pipeline stage) draws the same masks.
    pub fn dropout_seed(&self, k: usize) -> u64 {
        self.config.seed ^ (self.step << 20) ^ k as u64 ^ 0xD80_0000_0000_0000
    }

    /// Adds a micro-batch's per-target losses into the step's loss sum (`first`: the step's
    /// first, which replaces it); for a step run outside [`Trainer::forward_backward`] (a
    /// pipeline stage).
    pub fn add_losses(&self, losses: &Tensor, first: bool) -> Result<()> {
        reduce(self.gpu, losses, Reduction::Sum, &self.loss_sum, 0, !first)
    }

    /// Σ of the last forward_backward's per-target losses (a sync point).
    pub fn last_loss_sum(&self) -> Result<f32> {
        Ok(self.loss_sum.to_f32(self.gpu)?[0])
    }

    /// Phase 3: the squared global gradient norm over the trainable parameters, recorded into
    /// [`Trainer::stats`] on the GPU (no readback). Every step computes it: the clipping and
    /// the step guard read it.
    pub fn grad_norm(&mut self) -> Result<()> {
        grad_norm_sq(self.gpu, &self.model.trainable_params(), &self.stats)
    }

    /// (2): the squared global gradient norm the update clips by, and the skip word. A phase
    /// that changes the gradients between [`Trainer::grad_norm`] and [`Trainer::update`] (an
    /// all-reduce, a shard) writes the norm here.
    pub fn stats(&self) -> &Tensor {
        &self.stats
    }

    /// Replaces the step's loss sum on the GPU (a data-parallel rank puts the global sum here,
    /// so that every rank's step guard decides alike).
    pub fn set_loss_sum(&self, sum: f32) {
        self.loss_sum.write_f32(self.gpu, &[sum]);
    }

    /// Phase 4: the step guard (a non-finite loss or gradient skips the step, on the GPU), then
    /// the optimizer step at this step's learning rate, clipping by [`Trainer::stats`].
    pub fn update(&mut self) -> Result<()> {
        guard::check(
            self.gpu,
            &self.loss_sum,
            &self.stats,
            &self.health,
            self.step + 1,
            self.config.scaler(),
        );
        let lr = self.config.lr_at(self.step);
        let shard = &self.shard;
        let params: Vec<_> = self
            .model
            .trainable_params()
            .into_iter()
            .filter(|p| shard.as_ref().is_none_or(|s| s.own.contains(&p.name)))
            .collect();
        self.optimizer.step(self.gpu, &params, lr, &self.stats)?;
        self.step += 1;
        Ok(())
    }

    /// The optimizer steps taken and the loss scaler's state (a sync point).
    pub fn step_state(&self) -> Result<guard::StepState> {
        guard::StepState::read(self.gpu, &self.stats)
    }

    /// The global gradient norm of the last step (a sync point).
    pub fn last_grad_norm(&self) -> Result<f32> {
        Ok(self.stats.to_f32(self.gpu)?[0].sqrt())
    }

    /// The non-finite steps skipped so far (a sync point).
    pub fn health(&self) -> Result<Health> {
        Health::read(self.gpu, &self.health)
    }

    /// An error once `max_nonfinite_steps` steps had a non-finite loss or gradient (a sync
    /// point; the trainer calls it before every checkpoint, the CLI at every logging step).
    pub fn check_health(&self) -> Result<()> {
        let h = self.health()?;
        if h.skipped >= self.config.max_nonfinite_steps {
            return Err(Error::NonFinite(format!(
                "training stopped: {}{}. Try a smaller --lr (or grad_clip)",
                h.describe(),
                if self.config.max_nonfinite_steps > 1 {
                    format!(" (max_nonfinite_steps {})", self.config.max_nonfinite_steps)
                } else {
                    String::new()
                }
            )));
        }
        Ok(())
    }

    /// How many weights are NaN or infinite (a sync point). A step whose gradient was finite
    /// can still overflow a weight (a huge learning rate); the next step's guard then skips,
    /// but the weights are already lost.
    pub fn nonfinite_weights(&self) -> Result<u64> {
        let count = Tensor::zeros(self.gpu, "non-finite weights", &[1], Category::Workspace)?;
        let params = self.model.params();
        let values: Vec<&Tensor> = params
            .iter()
            .filter(|p| p.resident())
            .map(|p| p.value())
            .filter(|v| v.dtype() == crate::tensor::DType::F32)
            .collect();
        if !values.is_empty() {
            reduce_all(self.gpu, &values, Reduction::NonFinite, &count, 0, true)?;
        }
        Ok(count.to_f32(self.gpu)?[0] as u64)
    }

    /// Evaluates on the task's held-out data. Buffers the evaluation needed beyond the training
    /// step's (other shapes) go back to the device afterwards, so the pool keeps only the
    /// step's working set between steps.
    pub fn evaluate(&mut self) -> Result<EvalResult> {
        self.evaluate_through(&mut eval::Whole)
    }

    /// [`Trainer::evaluate`] with the model run forward through `forward` (sharded under ZeRO
    /// 3 and pipelines: see [`eval::Forward`]).
    pub fn evaluate_through(&mut self, forward: &mut dyn eval::Forward) -> Result<EvalResult> {
        let mark = self.gpu.pool().mark();
        let model = self.model.as_mut();
        let r = eval::evaluate(self.gpu, model, forward, &self.task, &self.config)?;
        self.gpu.sync()?;
        self.gpu.pool().trim_since(mark);
        Ok(r)
    }

    /// What a checkpoint of this trainer records besides tensors (reads the step stats back).
    pub fn checkpoint_meta(&self) -> Result<CheckpointMeta> {
        Ok(CheckpointMeta {
            step: self.step,
            optimizer_t: self.optimizer.t,
            optimizer_gamma: self.optimizer.gamma,
            rng: self.rng.state(),
            config: serde_json::to_string(&self.config).expect("a config serializes"),
            run: self.run.clone(),
            step_state: Some(self.step_state()?),
        })
    }

    /// Writes a checkpoint atomically, after checking the run is healthy and every weight is
    /// finite: a diverged run never replaces a good checkpoint.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.write_checked(path, &|_| true, false)
    }

    /// Writes this rank's part of a sharded checkpoint at `path` (the values `holds` names and
    /// the optimizer state this rank keeps), after the same checks as [`Trainer::save`].
    pub fn save_part(&self, path: &Path, holds: &dyn Fn(&str) -> bool) -> Result<()> {
        self.write_checked(path, holds, true)
    }

    fn write_checked(&self, path: &Path, holds: &dyn Fn(&str) -> bool, part: bool) -> Result<()> {
        self.check_health()?;
        let bad = self.nonfinite_weights()?;
        if bad > 0 {
            return Err(Error::NonFinite(format!(
                "training stopped at step {}: {bad} weights are NaN or infinite; not writing a \
                 checkpoint from them ({} keeps the last good one). Try a smaller --lr",
                self.step,
                path.display()
            )));
        }
        if self.gpu.is_ledger() {
            // a plan: the checks above are what a save allocates; nothing is written
            return Ok(());
        }
        // a base from a model file is not copied into every checkpoint: a resume reads it
        // from there again (TrainConfig::base_from_file)
        let mine: Vec<&Param> = self
            .saved_params()
            .into_iter()
            .filter(|p| holds(&p.name))
            .collect();
        let meta = self.checkpoint_meta()?;
        if !part {
            return checkpoint::save(self.gpu, path, &mine, self.optimizer.state(), &meta);
        }
        // the state of the values this part holds (a pipeline's two copies of the tied
        // embedding keep the same state: one is written)
        let state: Vec<_> = self
            .optimizer
            .state()
            .iter()
            .filter(|(name, _)| holds(name))
            .collect();
        checkpoint::save_part(self.gpu, path, &mine, &state, &meta)
    }

    /// Continues from a checkpoint: weights, optimizer state, step and data RNG. The model's
    /// shape must match. A checkpoint of another optimizer method restores the weights and
    /// drops its state (the report names what was dropped); the new optimizer starts fresh.
    /// A fine-tune of a model file ([`TrainConfig::base_from_file`]) reads its frozen base
    /// from that file again and the trained weights from the checkpoint.
    pub fn resume(&mut self, ckpt: &Checkpoint) -> Result<RestoreReport> {
        let saved = ckpt.config().map(|c| c.optimizer.name).ok();
        // a checkpoint without optimizer state (a merged model) restores the weights only
        let has_state = ckpt.names().any(|k| k.starts_with("optim."));
        let same_method = saved == Some(self.optimizer.hyper.name) && has_state;
        if self.config.base_from_file() {
            let init = self.config.init.clone().expect("a base from a file");
            self.init_from(Path::new(&init))?;
        }
        let state = same_method.then_some(self.optimizer.state());
        let report = ckpt.restore(self.gpu, &self.saved_params(), state, false)?;
        self.step = ckpt.meta.step;
        let mut state = guard::StepState {
            steps_taken: 0,
            loss_scale: self.config.scaler().map_or(1.0, |s| s.initial_scale),
            growth_tracker: 0,
            overflows: 0,
        };
        if same_method {
            self.optimizer.t = ckpt.meta.optimizer_t;
            self.optimizer.gamma = ckpt.meta.optimizer_gamma;
            state.steps_taken = ckpt.meta.optimizer_t;
        }
        if let Some(saved) = ckpt.meta.step_state {
            if same_method {
                state.steps_taken = saved.steps_taken;
            }
            // the scaler's state carries over when this run scales too
            if self.config.scaler().is_some() && saved.loss_scale != 1.0 {
                state.loss_scale = saved.loss_scale;
                state.growth_tracker = saved.growth_tracker;
                state.overflows = saved.overflows;
            }
        }
        state.write(self.gpu, &self.stats);
        self.rng = Rng::from_state(ckpt.meta.rng);
        if !ckpt.meta.run.is_empty() {
            self.run = ckpt.meta.run.clone();
        }
        Ok(report)
    }

    /// The parameters its checkpoints hold: all of them, or what trains where the base comes
    /// from a model file.
    fn saved_params(&self) -> Vec<&Param> {
        match self.config.base_from_file() {
            true => self.model.trainable_params(),
            false => self.model.params(),
        }
    }

    /// Loads the parameters a checkpoint has (by name) into this trainer's model, leaving the
    /// others as initialised: e.g. a base model from a full checkpoint under new, freshly
    /// initialised parameters. Nothing else (step, optimizer state, data RNG) is taken.
    pub fn restore_subset(&mut self, ckpt: &Checkpoint) -> Result<RestoreReport> {
        ckpt.restore(self.gpu, &self.model.params(), None, true)
    }

    /// The start of a fine-tune (`init`): the base model's weights from `path`, a wgtrain
    /// checkpoint, a GGUF file or a Hugging Face directory; every parameter it lacks must be a
    /// LoRA adapter's (else it was saved from another model).
    pub fn init_from(&mut self, path: &Path) -> Result<RestoreReport> {
        let report = if crate::import::is_model(path) {
            let qlora = self.config.qlora.as_ref();
            let restored = fill_base(self.gpu, path, self.model.as_mut(), qlora)?;
            let params = self.model.params();
            RestoreReport {
                fresh: params
                    .iter()
                    .filter(|p| p.resident() && !restored.contains(&p.name))
                    .map(|p| p.name.clone())
                    .collect(),
                restored,
                unused: vec![],
            }
        } else {
            self.restore_subset(&Checkpoint::load(path)?)?
        };
        if let Some(missing) = report.fresh.iter().find(|n| !n.contains(".lora_")) {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "has no tensor {missing:?}: it was saved from another model shape than this \
                     config's"
                ),
            });
        }
        Ok(report)
    }
}

/// Writes a model file's weights (a GGUF file or Hugging Face directory) into `model`'s
/// parameters of the same names, and with `qlora` its frozen linears' quantized forms; returns
/// the names written.
fn fill_base(
    gpu: &Gpu,
    path: &Path,
    model: &mut dyn Model,
    qlora: Option<&crate::nn::lora::QloraConfig>,
) -> Result<Vec<String>> {
    let mut written = crate::import::fill(gpu, path, &model.params())?;
    if let Some(q) = qlora {
        written.extend(crate::import::fill_quantized(
            gpu,
            path,
            model.linears_mut(),
            q,
        )?);
    }
    Ok(written)
}

/// A fresh run id: the time and process, hashed (unique enough to tell runs apart; nothing
/// depends on its value).
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Refuses a model file whose stored config describes more weights (LoRA adapters aside) than
/// the `held` ones the file has, before anything is built: the config was altered, and building
/// what it says could take any time and memory (fewer are refused by name when the tensors
/// are matched).
pub fn check_weight_count(path: &Path, config: &TrainConfig, held: u64) -> Result<()> {
    let described = config.weight_count();
    if described > held {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "its config describes a model of {described} weights, but it holds {held}: the \
                 config or the tensors were altered"
            ),
        });
    }
    Ok(())
}

/// Rebuilds the model a checkpoint was saved from, with its weights.
pub fn load_model(gpu: &Gpu, ckpt: &Checkpoint) -> Result<(TrainConfig, Box<dyn Model>)> {
    let mut config = ckpt.config()?;
    if config.model == ModelKind::Mlp {
        config.mlp.inputs = digits::FEATURES;
        config.mlp.classes = digits::CLASSES;
    }
    config.validate()?;
    // the config's size in closed form against the file's first: a config claiming 100 000
    // layers is refused before even a ledger twin of it is built
    let held: u64 = ckpt
        .names()
        .filter(|n| !n.starts_with("optim.") && !n.contains(".lora_"))
        .filter_map(|n| ckpt.info(n))
        .map(|(_, shape)| shape.iter().map(|&d| d as u64).product::<u64>())
        .sum();
    if !config.base_from_file() {
        check_weight_count(&ckpt.path, &config, held)?;
    }
    // The model on a ledger twin first: every tensor is checked against the checkpoint and the
    // memory planned before anything is allocated.
    let ledger = gpu.ledger();
    let twin = restored_model(&ledger, &config, ckpt)?;
    crate::memory::check_fits(
        gpu,
        "the checkpoint's model",
        ledger.memory().peak_total,
        None,
        "it was trained on a device with more memory; run it there",
    )?;
    drop(twin);
    let model = restored_model(gpu, &config, ckpt)?;
    Ok((config, model))
}

/// The model a fine-tune of a model file starts from: `config`'s model (its LoRA adapters as
/// initialised) with the base's weights from `config.init` (quantized under `qlora`).
pub fn base_model(gpu: &Gpu, config: &TrainConfig) -> Result<Box<dyn Model>> {
    let Some(init) = config.init.as_deref().filter(|_| config.base_from_file()) else {
        return Err(Error::Config(
            "base_model: the config's init is not a GGUF file or Hugging Face directory".into(),
        ));
    };
    let mut model = build_model(&Build::new(gpu), config)?;
    fill_base(gpu, Path::new(init), model.as_mut(), config.qlora.as_ref())?;
    Ok(model)
}

/// The model `config` describes with `ckpt`'s weights: every one, or, for a fine-tune of a
/// model file, the base from that file and what trained from the checkpoint.
fn restored_model(gpu: &Gpu, config: &TrainConfig, ckpt: &Checkpoint) -> Result<Box<dyn Model>> {
    if !config.base_from_file() {
        let model = build_model(&Build::new(gpu), config)?;
        ckpt.restore(gpu, &model.params(), None, false)?;
        return Ok(model);
    }
    let model = base_model(gpu, config)?;
    ckpt.restore(gpu, &model.trainable_params(), None, false)?;
    Ok(model)
}
