//! The trainer: builds the model and data a config describes, runs optimizer steps (each recorded
//! into one submit), evaluates, and saves or resumes checkpoints.

pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod metrics;

pub use config::{ModelKind, TrainConfig};

use crate::data::addition::Addition;
use crate::data::digits::{self, Digits};
use crate::data::text::Text;
use crate::error::Result;
use crate::gpu::{Category, Gpu};
use crate::nn::gpt::GptBatch;
use crate::nn::{zero_grads, Gpt, Mlp, Param};
use crate::ops::reduce::{reduce, Reduction};
use crate::ops::softmax_xent::PAD;
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::tensor::Tensor;
use checkpoint::{Checkpoint, CheckpointMeta};
use std::path::Path;

#[allow(clippy::large_enum_variant)] // one model per trainer; boxing buys nothing
pub enum Model {
    Mlp(Mlp),
    Gpt(Gpt),
}

impl Model {
    pub fn params(&self) -> Vec<&Param> {
        match self {
            Model::Mlp(m) => m.params(),
            Model::Gpt(g) => g.params(),
        }
    }

    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.numel()).sum()
    }
}

pub enum Task {
    Digits(Digits),
    Addition(Addition),
    Text(Text),
}

/// Loads the data a config names.
pub fn load_task(config: &TrainConfig) -> Result<Task> {
    Ok(match config.data.as_str() {
        "digits" => Task::Digits(Digits::load()?),
        "addition" => Task::Addition(config.addition_task()),
        path => {
            let text = Text::load(Path::new(path))?;
            text.check_block_size(config.gpt.block_size)?;
            Task::Text(text)
        }
    })
}

/// Builds the model a config describes, initialised from the config's seed.
pub fn build_model(gpu: &Gpu, config: &TrainConfig) -> Result<Model> {
    let mut rng = Rng::new(config.seed);
    Ok(match config.model {
        ModelKind::Mlp => Model::Mlp(Mlp::new(gpu, config.mlp.clone(), &mut rng)?),
        ModelKind::Gpt => {
            let mut g = Gpt::new(gpu, config.gpt.clone(), &mut rng)?;
            g.recompute = config.checkpoint;
            Model::Gpt(g)
        }
    })
}

/// What one evaluation measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    pub loss: f32,
    /// Test accuracy (digits) or held-out exact match (addition); none for text.
    pub accuracy: Option<f32>,
}

pub struct Trainer<'g> {
    pub gpu: &'g Gpu,
    pub config: TrainConfig,
    pub model: Model,
    pub task: Task,
    pub optimizer: Optimizer,
    /// Draws the training batches; saved in checkpoints so a resumed run sees the same batches.
    pub rng: Rng,
    /// Optimizer steps taken.
    pub step: u64,
    /// (1): Σ of the last step's per-token losses
    loss_sum: Tensor,
}

impl<'g> Trainer<'g> {
    pub fn new(gpu: &'g Gpu, mut config: TrainConfig) -> Result<Trainer<'g>> {
        if config.model == ModelKind::Mlp {
            config.mlp.inputs = digits::FEATURES;
            config.mlp.classes = digits::CLASSES;
        }
        config.validate()?;
        let task = load_task(&config)?;
        let model = build_model(gpu, &config)?;
        let optimizer = Optimizer::new(gpu, &config.optimizer, config.grad_clip, &model.params())?;
        Ok(Trainer {
            gpu,
            rng: Rng::new(config.seed ^ 0x5EED_DA7A),
            config,
            model,
            task,
            optimizer,
            step: 0,
            loss_sum: Tensor::zeros(gpu, "loss sum", &[1], Category::Workspace)?,
        })
    }

    /// Tokens (GPT) or samples (MLP) in one optimizer step.
    pub fn items_per_step(&self) -> usize {
        match &self.model {
            Model::Gpt(g) => self.config.batch_size * self.seq_len(g),
            Model::Mlp(_) => self.config.batch_size,
        }
    }

    fn seq_len(&self, g: &Gpt) -> usize {
        match &self.task {
            Task::Addition(a) => a.seq_len() - 1,
            _ => g.config.block_size,
        }
    }

    /// One optimizer step, recorded and submitted as one batch of GPU work. With `read_loss`, waits
    /// for it and returns the mean training loss.
    pub fn train_step(&mut self, read_loss: bool) -> Result<Option<f32>> {
        let gpu = self.gpu;
        let b = self.config.batch_size;
        let mb = self.config.micro_batch();
        let params = self.model.params();
        zero_grads(gpu, &params);
        // The whole effective batch is drawn first, so that micro-batching changes nothing but
        // what runs at once; every micro-batch's loss is scaled by 1/(targets in the whole batch).
        let count;
        match (&self.model, &self.task) {
            (Model::Mlp(m), Task::Digits(d)) => {
                let n = d.train_y.len();
                let idx: Vec<usize> = (0..b).map(|_| self.rng.below(n as u64) as usize).collect();
                count = b;
                for (k, chunk) in idx.chunks(mb).enumerate() {
                    let x: Vec<f32> = chunk
                        .iter()
                        .flat_map(|&i| {
                            d.train_x[i * digits::FEATURES..(i + 1) * digits::FEATURES].to_vec()
                        })
                        .collect();
                    let y: Vec<u32> = chunk.iter().map(|&i| d.train_y[i]).collect();
                    let tx = Tensor::from_f32(
                        gpu,
                        "x",
                        &[chunk.len(), digits::FEATURES],
                        &x,
                        Category::Activations,
                    )?;
                    let ty = Tensor::from_u32(gpu, "y", &[chunk.len()], &y, Category::Activations)?;
                    let losses = m.forward_backward(gpu, &tx, &ty, 1.0 / count as f32)?;
                    reduce(gpu, &losses, Reduction::Sum, &self.loss_sum, 0, k > 0)?;
                }
            }
            (Model::Gpt(g), task) => {
                let t = self.seq_len(g);
                let (x, y) = match task {
                    Task::Addition(a) => a.batch(b, &mut self.rng),
                    Task::Text(text) => Text::batch(&text.train, b, t, &mut self.rng),
                    Task::Digits(_) => unreachable!("validated: gpt does not train on digits"),
                };
                count = y.iter().filter(|&&v| v != PAD).count().max(1);
                for (k, (xs, ys)) in x.chunks(mb * t).zip(y.chunks(mb * t)).enumerate() {
                    let batch = GptBatch::new(gpu, &g.config, xs, ys, xs.len() / t, t)?;
                    let losses = g.forward_backward(gpu, &batch, 1.0 / count as f32)?;
                    reduce(gpu, &losses, Reduction::Sum, &self.loss_sum, 0, k > 0)?;
                }
            }
            (Model::Mlp(_), _) => unreachable!("validated: mlp trains on digits"),
        }
        let lr = self.config.lr_at(self.step);
        self.optimizer.step(gpu, &params, lr)?;
        self.step += 1;
        if read_loss {
            Ok(Some(self.loss_sum.to_f32(gpu)?[0] / count as f32))
        } else {
            gpu.flush()?;
            Ok(None)
        }
    }

    pub fn evaluate(&self) -> Result<EvalResult> {
        eval::evaluate(self.gpu, &self.model, &self.task, &self.config)
    }

    pub fn checkpoint_meta(&self) -> CheckpointMeta {
        CheckpointMeta {
            step: self.step,
            optimizer_t: self.optimizer.t,
            optimizer_gamma: self.optimizer.gamma,
            rng: self.rng.state(),
            config: serde_json::to_string(&self.config).expect("a config serializes"),
        }
    }

    /// Writes a checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        checkpoint::save(
            self.gpu,
            path,
            &self.model.params(),
            &self.optimizer.state,
            &self.checkpoint_meta(),
        )
    }

    /// Continues from a checkpoint: weights, optimizer state, step and data RNG. The model's
    /// shape must match.
    pub fn resume(&mut self, ckpt: &Checkpoint) -> Result<()> {
        ckpt.restore(self.gpu, &self.model.params(), Some(&self.optimizer.state))?;
        self.step = ckpt.meta.step;
        self.optimizer.t = ckpt.meta.optimizer_t;
        self.optimizer.gamma = ckpt.meta.optimizer_gamma;
        self.rng = Rng::from_state(ckpt.meta.rng);
        Ok(())
    }
}

/// Rebuilds the model a checkpoint was saved from, with its weights.
pub fn load_model(gpu: &Gpu, ckpt: &Checkpoint) -> Result<(TrainConfig, Model)> {
    let mut config = TrainConfig::from_json(&ckpt.meta.config, &ckpt.path.display().to_string())?;
    if config.model == ModelKind::Mlp {
        config.mlp.inputs = digits::FEATURES;
        config.mlp.classes = digits::CLASSES;
    }
    let model = build_model(gpu, &config)?;
    ckpt.restore(gpu, &model.params(), None)?;
    Ok((config, model))
}
