//! The memory planner: predicts the peak bytes per category of a training configuration by
//! running the real training step on a ledger twin of the device ([`Gpu::ledger`]): the pool
//! keeps its books without creating buffers and the recorder keeps no commands, so the model
//! set-up, one optimizer step (its micro-batches, recompute policy, reductions) and an
//! evaluation allocate exactly what a run allocates, in the same order, and nothing runs. There
//! is no second description of the models to keep in step with them: tests hold the prediction
//! to the pool's measurement of a real run, to the byte.

use crate::data::text::Text;
use crate::error::{Error, Result};
use crate::gpu::{ByCategory, Category, Gpu};
use crate::nn::Recompute;
use crate::optim::OptimizerName;
use crate::tensor::DType;
use crate::train::checkpoint::Checkpoint;
use crate::train::config::Precision;
use crate::train::{load_task, ModelKind, Task, TrainConfig, Trainer};
use serde_json::json;

/// A configuration's predicted peaks, and the textbook model-state formula beside them.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Peak bytes per category.
    pub predicted: ByCategory,
    /// Peak of the sum over categories at one instant.
    pub total: u64,
    /// Ψ: every parameter.
    pub psi: u64,
    /// Parameters that train (Ψ less the frozen ones): those with gradients and state.
    pub psi_trainable: u64,
    /// Frozen weights held quantized (a QLoRA base), and their stored bytes.
    pub quantized: Quantized,
    /// Optimizer-state bytes per parameter in the textbook formula (K).
    pub optimizer_bytes_per_param: f64,
    /// fp32, or mixed precision (half working weights and gradients over fp32 masters).
    pub precision: Precision,
    /// The gradients' dtype: the working precision, or f32 where mixed-precision micro-batches
    /// are summed ([`TrainConfig::grad_dtype`]).
    pub grad_dtype: DType,
    /// Every tensor the run allocates, by name, with its largest size: checked against the
    /// adapter's limits before a run.
    pub tensors: Vec<(String, u64)>,
}

impl Plan {
    /// The textbook formula, Ψ' the trainable parameters: in fp32, 4Ψ weights, 4Ψ' gradients
    /// and KΨ' optimizer state; in mixed precision, 2Ψ half weights (and 4 bytes for each frozen
    /// one's fp32 value), 2Ψ' half gradients (4Ψ' when micro-batches are summed in f32) and
    /// (4 + K)Ψ' optimizer state (the fp32 masters with it, as ZeRO counts them: 16Ψ for Adam).
    pub fn formula(&self) -> (u64, u64, u64) {
        model_state_formula(
            self.precision,
            self.grad_dtype,
            self.psi,
            self.psi_trainable,
            self.quantized,
            self.optimizer_bytes_per_param,
        )
    }

    pub fn formula_text(&self, optimizer: OptimizerName) -> String {
        let k = self.optimizer_bytes_per_param;
        let text = match self.precision {
            Precision::Fp32 => format!(
                "4Ψ + 4Ψ + {k}Ψ = {}Ψ (fp32 weights, fp32 gradients, {} state); Ψ = {}",
                8.0 + k,
                optimizer.as_str(),
                self.psi
            ),
            p => {
                let half = p.as_str();
                let (g, grads) = match self.grad_dtype {
                    DType::F32 => (4.0, "fp32 gradients summed over micro-batches".to_string()),
                    _ => (2.0, format!("{half} gradients")),
                };
                format!(
                    "2Ψ + {g}Ψ + (4 + {k})Ψ = {}Ψ ({half} weights, {grads}, fp32 masters and {} \
                     state); Ψ = {}",
                    6.0 + g + k,
                    optimizer.as_str(),
                    self.psi
                )
            }
        };
        let q = self.quantized;
        if q.weights == 0 {
            return text;
        }
        // a QLoRA base: frozen, its weights at their stored bytes
        format!(
            "{text}; of Ψ, {} frozen weights held quantized in {} bytes ({:.2} bits each) \
             instead of 4 bytes each",
            q.weights,
            q.bytes,
            8.0 * q.bytes as f64 / q.weights as f64
        )
    }

    pub fn to_json(&self, optimizer: OptimizerName) -> serde_json::Value {
        let p = &self.predicted;
        let (fp, fg, fo) = self.formula();
        json!({
            "predicted": {
                "params": p.get(Category::Params),
                "grads": p.get(Category::Grads),
                "optimizer": p.get(Category::OptimizerState),
                "activations": p.get(Category::Activations),
                "workspace": p.get(Category::Workspace),
                "total": self.total,
            },
            "formula": {
                "psi": self.psi,
                "params": fp,
                "grads": fg,
                "optimizer": fo,
                "total": fp + fg + fo,
                "text": self.formula_text(optimizer),
            },
        })
    }
}

/// The model-state formula (weights, gradients, optimizer state in bytes) for Ψ parameters of
/// which Ψ' train, gradients of `grad_dtype`, with K optimizer-state bytes per trainable one
/// (see [`Plan::formula`]).
pub fn model_state_formula(
    precision: Precision,
    grad_dtype: DType,
    psi: u64,
    trainable: u64,
    quantized: Quantized,
    k: f64,
) -> (u64, u64, u64) {
    let state = (k * trainable as f64) as u64;
    // the quantized weights are frozen ones, counted at their stored bytes
    let dense = psi - quantized.weights;
    let frozen = psi - trainable - quantized.weights;
    let grads = grad_dtype.bytes_for(trainable as usize);
    match precision {
        Precision::Fp32 => (4 * dense + quantized.bytes, grads, state),
        _ => (
            2 * dense + 4 * frozen + quantized.bytes,
            grads,
            4 * trainable + state,
        ),
    }
}

/// Frozen weights a model holds quantized (a QLoRA base's linears) and their stored bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Quantized {
    pub weights: u64,
    pub bytes: u64,
}

impl Quantized {
    /// What `model`'s quantized linears hold.
    pub fn of(model: &mut dyn crate::nn::Model) -> Quantized {
        let mut q = Quantized::default();
        for l in model.linears_mut() {
            if let crate::nn::linear::Weight::Quantized { quant, .. } = &l.weight {
                q.weights += (quant.rows * quant.cols) as u64;
                q.bytes += quant.bytes();
            }
        }
        q
    }
}

/// Model-state bytes per parameter (weights, gradients of `grad_dtype`, optimizer state of K
/// bytes): 8 + K in fp32, 2 + 2 + (4 + K) in mixed precision (2 + 4 + (4 + K) with f32
/// gradients).
pub fn model_state_bytes_per_param(precision: Precision, grad_dtype: DType, k: f64) -> f64 {
    let g = grad_dtype.bytes_for(1) as f64;
    match precision {
        Precision::Fp32 => 4.0 + g + k,
        _ => 2.0 + g + 4.0 + k,
    }
}

/// Textbook optimizer-state bytes per parameter.
pub fn optimizer_bytes_per_param(name: OptimizerName, centered: bool, momentum: f32) -> f64 {
    match name {
        OptimizerName::Sgd => 0.0,
        OptimizerName::Momentum
        | OptimizerName::Nesterov
        | OptimizerName::Lion
        | OptimizerName::NagGs => 4.0,
        OptimizerName::Rmsprop => {
            4.0 + if centered { 4.0 } else { 0.0 } + if momentum > 0.0 { 4.0 } else { 0.0 }
        }
        OptimizerName::Adam | OptimizerName::Adamw => 8.0,
        OptimizerName::Adam8bit => 2.0 + 8.0 / 256.0,
    }
}

/// Predicts a configuration's peaks on `gpu`'s adapter (its limits, features and matmul tuning)
/// without allocating anything there. Errors are the run's own: a tensor over the adapter's
/// limits is `TensorTooLarge` naming it, before any training time is spent.
pub fn plan(gpu: &Gpu, config: &TrainConfig) -> Result<Plan> {
    plan_resumed(gpu, config, None)
}

/// [`plan`] for a run that resumes from `ckpt` (whose tensors must fit the model).
pub fn plan_resumed(gpu: &Gpu, config: &TrainConfig, ckpt: Option<&Checkpoint>) -> Result<Plan> {
    let ledger = gpu.ledger();
    // What the run allocates does not depend on what the text says: a text file that is not
    // there (yet) is planned with a stand-in of the same block size.
    let mut task = match load_task(config) {
        Err(Error::Io { .. }) if config.model == ModelKind::Gpt => {
            let stand_in = vec![b' '; 20 * (config.gpt.block_size + 1)];
            Task::Text(Text::from_bytes(stand_in).map_err(Error::Data)?)
        }
        task => task?,
    };
    // the longest batch the examples could make
    task.pad_to_block();
    let mut trainer = Trainer::with_task(&ledger, config.clone(), task)?;
    if let Some(ckpt) = ckpt {
        trainer.resume(ckpt)?;
    } else if let Some(init) = &config.init {
        // checks the base fits the model before the run
        trainer.init_from(std::path::Path::new(init))?;
    }
    // the run as `Trainer::fit` runs it: a step, the evaluation, the checkpoint
    let m = trainer.rehearse(&mut crate::train::Local)?;
    let numel = |ps: Vec<&crate::nn::Param>| ps.iter().map(|p| p.numel() as u64).sum();
    let hyper = trainer.optimizer.hyper;
    let mut tensors = ledger.pool().requests();
    tensors.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(Plan {
        predicted: m.peak,
        total: m.peak_total,
        psi: numel(trainer.model.params()),
        psi_trainable: numel(trainer.model.trainable_params()),
        quantized: Quantized::of(trainer.model.as_mut()),
        optimizer_bytes_per_param: optimizer_bytes_per_param(
            hyper.name,
            hyper.centered,
            hyper.momentum,
        ),
        precision: config.precision,
        grad_dtype: config.grad_dtype(),
        tensors,
    })
}

pub use crate::gpu::capacity::parse_size;

/// What to change when a training run does not fit.
pub const SMALLER_RUN: &str =
    "use a smaller batch (or --micro-batch-size, --recompute), sequence or model";

/// Refuses `needed` bytes (`what`: "the run's planned peak", …) that exceed the device's memory
/// ([`Gpu::memory_capacity`]) or `budget` (`--max-memory`), naming both figures and `hint`
/// (what to change), so work too large is stopped before it allocates anything.
pub fn check_fits(
    gpu: &Gpu,
    what: &str,
    needed: u64,
    budget: Option<u64>,
    hint: &'static str,
) -> Result<()> {
    let device = gpu
        .memory_capacity()
        .map(|(b, source)| (b, format!("the device's memory ({source})")));
    let budget = budget.map(|b| (b, "the --max-memory budget".to_string()));
    let limit = match (device, budget) {
        (Some(d), Some(b)) => Some(if b.0 <= d.0 { b } else { d }),
        (d, b) => d.or(b),
    };
    match limit {
        Some((limit, limit_name)) if needed > limit => Err(Error::DoesNotFit {
            hint,
            what: what.to_string(),
            needed,
            needed_mib: needed as f64 / (1 << 20) as f64,
            limit,
            limit_mib: limit as f64 / (1 << 20) as f64,
            limit_name,
        }),
        _ => Ok(()),
    }
}

/// The largest micro-batch and lightest recompute policy whose predicted peak fits `budget` on
/// one device: [`fit_with`] its [`plan`].
pub fn fit(
    gpu: &Gpu,
    config: &TrainConfig,
    budget: u64,
) -> std::result::Result<TrainConfig, String> {
    fit_with(config, budget, &|c| plan(gpu, c).map(|p| p.total))
}

/// The largest micro-batch and lightest recompute policy whose predicted peak fits `budget`:
/// policies from least to most recomputation (none, sqrt, all), and for each the micro-batches
/// that divide the batch, largest first. `peak` predicts a config's peak on its largest device
/// (one device's plan, or the largest rank's or stage's under a parallel run; a
/// [`crate::Error::Config`] from it passes over a micro-batch the layout cannot take). Err
/// carries what the smallest configuration needs.
pub fn fit_with(
    config: &TrainConfig,
    budget: u64,
    peak: &dyn Fn(&TrainConfig) -> crate::Result<u64>,
) -> std::result::Result<TrainConfig, String> {
    let policies: Vec<Recompute> = if config.model == ModelKind::Gpt {
        vec![Recompute::None, Recompute::Sqrt, Recompute::All]
    } else {
        vec![Recompute::None]
    };
    let mut micros: Vec<usize> = (1..=config.batch_size)
        .filter(|m| config.batch_size % m == 0)
        .collect();
    micros.reverse();
    let mut smallest = None;
    let mut refused = None;
    for &policy in &policies {
        for &m in &micros {
            let mut c = config.clone();
            c.recompute = policy;
            c.micro_batch_size = m;
            let total = match peak(&c) {
                Ok(total) => total,
                Err(e @ crate::Error::Config(_)) => {
                    refused = Some(e.to_string());
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            if total <= budget {
                return Ok(c);
            }
            smallest = Some(total.min(smallest.unwrap_or(u64::MAX)));
        }
    }
    if let (None, Some(why)) = (smallest, refused) {
        // no micro-batch and policy the layout takes at all
        return Err(why);
    }
    Err(format!(
        "no configuration fits in {budget} bytes: the smallest (micro-batch 1, recompute {}) needs {} bytes",
        policies.last().unwrap().name(),
        smallest.unwrap_or(0)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("300MB"), Ok(300_000_000));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
