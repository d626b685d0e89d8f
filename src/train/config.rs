//! Training configuration: JSON with serde defaults; an unknown field is rejected by name; command
//! line flags override the file.

use crate::data::addition::Addition;
use crate::error::{Error, Result};
use crate::nn::lora::{LoraConfig, QloraConfig};
use crate::nn::{GptConfig, MlpConfig, Recompute};
use crate::optim::schedule::{Schedule, Warmup};
use crate::optim::{OptimizerConfig, OptimizerName};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The most held-out addition problems (each evaluation runs them all).
pub const MAX_TEST_SIZE: usize = 1_000_000;
/// The most tokens one step draws on the host (its inputs and targets: 8 bytes a token).
pub const MAX_TOKENS_PER_STEP: u128 = 1 << 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Mlp,
    Gpt,
}

/// The training precision: "fp32", or mixed precision with f16 or bf16 working weights,
/// activations and gradients over fp32 master weights and optimizer state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Fp16, Precision::Bf16];

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Result<Precision> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown precision {s:?}; expected fp32, fp16 or bf16"
                ))
            })
    }

    /// The working (compute) dtype: f32, f16 or bf16.
    pub fn dtype(self) -> crate::tensor::DType {
        match self {
            Precision::Fp32 => crate::tensor::DType::F32,
            Precision::Fp16 => crate::tensor::DType::F16,
            Precision::Bf16 => crate::tensor::DType::BF16,
        }
    }

    fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }
}

fn is_default_scale(s: &f32) -> bool {
    *s == crate::optim::guard::INITIAL_SCALE
}

fn is_default_interval(i: &u32) -> bool {
    *i == crate::optim::guard::GROWTH_INTERVAL
}

/// The addition task's knobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdditionConfig {
    /// Digits per operand.
    pub digits: usize,
    /// Held-out problems, never trained on; exact match is measured on them.
    pub test_size: usize,
}

impl Default for AdditionConfig {
    fn default() -> Self {
        AdditionConfig {
            digits: 2,
            test_size: 1000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub model: ModelKind,
    /// "digits", "addition", or a path to a text file.
    pub data: String,
    pub steps: u64,
    /// The effective batch: samples (or sequences) per optimizer step.
    pub batch_size: usize,
    /// What runs at once (0: the whole batch); gradients accumulate over
    /// batch_size / micro_batch_size micro-batches.
    pub micro_batch_size: usize,
    /// Gradient checkpointing (activation recomputation) of the GPT's blocks: "none", "all",
    /// "every:K" or "sqrt". Configs may still spell the key "checkpoint".
    #[serde(alias = "checkpoint")]
    pub recompute: Recompute,
    /// Parameters to freeze (no gradient, no optimizer state): exact names or prefixes ending
    /// in `*`, e.g. ["wte", "wpe", "h.0.*"].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// LoRA adapters on the GPT's linears; the base weights are frozen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// Start from this model's weights (and nothing else of it): the base model of a
    /// fine-tune, a wgtrain checkpoint, a GGUF file or a Hugging Face directory. Parameters it
    /// lacks (LoRA adapters) keep their initial values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// QLoRA: the frozen base's linear weights stay quantized on the device (needs `lora` and
    /// an `init` from a GGUF file or Hugging Face directory; fp32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qlora: Option<QloraConfig>,
    /// Fine-tuning data (a JSONL directory): the loss learns every token, not only the
    /// completions and assistant turns.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub train_on_prompts: bool,
    /// "fp32", "fp16" or "bf16" (mixed precision: fp32 masters and optimizer state).
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// Dynamic loss scaling (PyTorch's GradScaler rules): on by default for fp16, off for bf16
    /// (its exponent range is fp32's); not available for fp32.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scaling: Option<bool>,
    /// The scaler's initial scale (a power of two, so that unscaling is exact).
    #[serde(skip_serializing_if = "is_default_scale")]
    pub initial_loss_scale: f32,
    /// Finite steps in a row after which the scale doubles.
    #[serde(skip_serializing_if = "is_default_interval")]
    pub loss_scale_growth_interval: u32,
    /// Peak learning rate (before batch-size scaling, see `schedule`).
    pub lr: f32,
    /// Warmup, decay and batch-size scaling of the learning rate.
    pub schedule: Schedule,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f32,
    pub seed: u64,
    /// Read the loss back (a sync point) every this many steps.
    pub log_every: u64,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Validation windows (of block_size tokens) a text evaluation averages over, the same
    /// windows at every evaluation (like nanoGPT's eval_iters).
    pub eval_windows: usize,
    /// Write a checkpoint every this many steps when `out` is set (0: only at the end).
    pub checkpoint_every: u64,
    pub out: Option<String>,
    pub metrics: Option<String>,
    /// Stop the run once this many steps had a non-finite loss or gradient (each is skipped: no
    /// weight or optimizer state changes). 1, the default: stop at the first.
    pub max_nonfinite_steps: u32,
    pub optimizer: OptimizerConfig,
    pub mlp: MlpConfig,
    pub gpt: GptConfig,
    pub addition: AdditionConfig,
}

impl Default for TrainConfig {
    /// The default run: a small GPT learning 2-digit addition.
    fn default() -> Self {
        TrainConfig {
            model: ModelKind::Gpt,
            data: "addition".into(),
            steps: 1000,
            batch_size: 32,
            micro_batch_size: 0,
            recompute: Recompute::None,
            freeze: vec![],
            lora: None,
            init: None,
            qlora: None,
            train_on_prompts: false,
            precision: Precision::Fp32,
            loss_scaling: None,
            initial_loss_scale: crate::optim::guard::INITIAL_SCALE,
            loss_scale_growth_interval: crate::optim::guard::GROWTH_INTERVAL,
            lr: 3e-3,
            schedule: Schedule {
                warmup: Warmup::Gradual,
                warmup_steps: 50,
                min_lr_ratio: 0.1,
                ..Schedule::default()
            },
            grad_clip: 1.0,
            seed: 1337,
            log_every: 25,
            eval_every: 250,
            eval_windows: 64,
            checkpoint_every: 0,
            out: None,
            metrics: None,
            max_nonfinite_steps: 1,
            optimizer: OptimizerConfig {
                weight_decay: Some(0.1),
                beta2: Some(0.99),
                ..OptimizerConfig::named(OptimizerName::Adamw)
            },
            mlp: MlpConfig::default(),
            gpt: GptConfig {
                vocab_size: 256,
                block_size: 8,
                n_layer: 2,
                n_head: 4,
                n_embd: 64,
                ..Default::default()
            },
            addition: AdditionConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Whether the frozen base comes from a model file made elsewhere (`init`: a GGUF file or a
    /// Hugging Face directory): its checkpoints then hold what trains alone, and a resume
    /// reads the base from that file again.
    pub fn base_from_file(&self) -> bool {
        self.init
            .as_deref()
            .is_some_and(|i| crate::import::is_model(Path::new(i)))
    }

    /// The loss scaler this run has, if any (fp16 by default; see `loss_scaling`).
    pub fn scaler(&self) -> Option<crate::optim::guard::Scaler> {
        let on = self
            .loss_scaling
            .unwrap_or(self.precision == Precision::Fp16);
        (on && self.precision != Precision::Fp32).then_some(crate::optim::guard::Scaler {
            initial_scale: self.initial_loss_scale,
            growth_interval: self.loss_scale_growth_interval,
        })
    }

    /// The defaults for fine-tuning a model of `gpt` (a GGUF file's or Hugging Face
    /// directory's, `init`) on `data`: its context cut to 512 tokens, AdamW without weight
    /// decay at 2e-4 (PEFT's usual LoRA rate), ten steps of warmup, a cosine decay to 10 %, and
    /// the family's LoRA ([`LoraConfig::for_family`]) unless `lora` is false (every weight
    /// trains).
    pub fn fine_tune(gpt: GptConfig, init: &str, data: &str, lora: bool) -> TrainConfig {
        TrainConfig {
            model: ModelKind::Gpt,
            data: data.into(),
            steps: 100,
            batch_size: 4,
            gpt: GptConfig {
                block_size: gpt.block_size.min(512),
                ..gpt
            },
            init: Some(init.into()),
            lora: lora.then(|| LoraConfig::for_family(gpt.family)),
            lr: 2e-4,
            schedule: Schedule {
                warmup: Warmup::Gradual,
                warmup_steps: 10,
                ..Schedule::default()
            },
            log_every: 10,
            eval_every: 50,
            optimizer: OptimizerConfig {
                weight_decay: Some(0.0),
                ..OptimizerConfig::named(OptimizerName::Adamw)
            },
            ..TrainConfig::default()
        }
    }

    /// The defaults for a model and data pair, before any config file or flag: the default run
    /// for gpt on addition, and the shipped `mlp-digits` / `gpt-text` settings otherwise.
    pub fn preset(model: ModelKind, data: &str) -> TrainConfig {
        match (model, data) {
            (ModelKind::Mlp, _) => TrainConfig {
                model: ModelKind::Mlp,
                data: data.into(),
                steps: 2000,
                batch_size: 64,
                lr: 2e-3,
                schedule: Schedule {
                    warmup_steps: 20,
                    min_lr_ratio: 0.05,
                    ..Schedule::default()
                },
                log_every: 50,
                eval_every: 500,
                optimizer: OptimizerConfig {
                    weight_decay: Some(1e-4),
                    ..OptimizerConfig::named(OptimizerName::Adamw)
                },
                mlp: MlpConfig {
                    hidden: vec![128, 64],
                    ..MlpConfig::default()
                },
                ..TrainConfig::default()
            },
            (ModelKind::Gpt, "addition") => TrainConfig::default(),
            (ModelKind::Gpt, _) => TrainConfig {
                data: data.into(),
                steps: 1000,
                batch_size: 16,
                lr: 1e-3,
                gpt: GptConfig {
                    block_size: 64,
                    n_layer: 2,
                    n_head: 4,
                    n_embd: 64,
                    ..GptConfig::default()
                },
                ..TrainConfig::default()
            },
        }
    }

    /// A config from JSON: an object of fields (serde would otherwise also take an array,
    /// setting fields by position).
    pub fn from_json(text: &str, origin: &str) -> Result<TrainConfig> {
        if !text.trim_start().starts_with('{') {
            return Err(Error::Config(format!(
                "{origin}: a config is a JSON object of fields ({{\"steps\": 100, …}}), not {}",
                match text.trim_start().chars().next() {
                    Some('[') => "an array",
                    None => "an empty file",
                    _ => "a single value",
                }
            )));
        }
        serde_json::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))
    }

    pub fn load(path: &Path) -> Result<TrainConfig> {
        let text = crate::files::read_text_capped(path, crate::files::CONFIG_CAP, "config")?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// The model's weight count from the config alone (closed form, saturating; without LoRA
    /// adapters, which are small): what is checked against the device before anything is
    /// built, so a config claiming 100 000 layers is refused at once.
    pub fn weight_count(&self) -> u64 {
        let count: u128 = match self.model {
            ModelKind::Gpt => self.gpt.weight_count(),
            ModelKind::Mlp => {
                let m = &self.mlp;
                let widths: Vec<u128> = std::iter::once(crate::data::digits::FEATURES)
                    .chain(m.hidden.iter().copied())
                    .chain(std::iter::once(crate::data::digits::CLASSES))
                    .map(|w| w as u128)
                    .collect();
                widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
            }
        };
        u64::try_from(count).unwrap_or(u64::MAX)
    }

    /// Checks the values that JSON types cannot; each error says what to change.
    pub fn validate(&self) -> Result<()> {
        let rows = self.data == "digits";
        self.validate_for(rows)
    }

    /// [`TrainConfig::validate`] for data of feature rows (`rows`) or of token sequences,
    /// whatever `data` names: a trainer given its task by the app checks the model against
    /// that ([`super::Trainer::with_task`]).
    pub fn validate_for(&self, rows: bool) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.batch_size % self.micro_batch() != 0 {
            return bad(format!(
                "micro_batch_size {} must divide batch_size {}",
                self.micro_batch_size, self.batch_size
            ));
        }
        self.schedule.validate().map_err(Error::Config)?;
        self.optimizer.resolve()?;
        if self.grad_clip < 0.0 || self.grad_clip.is_nan() {
            return bad(format!(
                "grad_clip must be 0 (off) or positive, got {}",
                self.grad_clip
            ));
        }
        if self.log_every == 0 {
            return bad("log_every must be at least 1".into());
        }
        if let Some(q) = &self.qlora {
            if self.lora.is_none() {
                return bad(
                    "qlora quantizes the frozen base under LoRA adapters: it needs lora".into(),
                );
            }
            if !self.base_from_file() {
                return bad(
                    "qlora loads its base quantized from a GGUF file or a Hugging Face directory \
                     (init)"
                        .into(),
                );
            }
            if self.precision != Precision::Fp32 {
                return bad(format!(
                    "qlora's adapters train in fp32 over the quantized base, not {}",
                    self.precision.as_str()
                ));
            }
            if q.block == 0 {
                return bad("qlora.block must be at least 1".into());
            }
        }
        let tokens = (self.batch_size as u128) * (self.gpt.block_size.max(1) as u128);
        if self.model == ModelKind::Gpt && tokens > MAX_TOKENS_PER_STEP {
            return bad(format!(
                "batch_size × block_size = {tokens} tokens per step, more than {MAX_TOKENS_PER_STEP}; \
                 use a smaller batch or block"
            ));
        }
        if self.eval_windows == 0 || self.eval_windows > 1_000_000 {
            return bad(format!(
                "eval_windows must be 1..1000000, got {}",
                self.eval_windows
            ));
        }
        if self.precision == Precision::Fp32 && self.loss_scaling == Some(true) {
            return bad("loss_scaling needs mixed precision (precision fp16 or bf16)".into());
        }
        let s = self.initial_loss_scale;
        if !(s > 0.0 && s.is_finite() && s.to_bits() & 0x007f_ffff == 0 && s.is_normal()) {
            return bad(format!(
                "initial_loss_scale must be a positive power of two (exact unscaling), got {s}"
            ));
        }
        if self.loss_scale_growth_interval == 0 {
            return bad("loss_scale_growth_interval must be at least 1".into());
        }
        if self.max_nonfinite_steps == 0 {
            return bad("max_nonfinite_steps must be at least 1 (1: stop at the first)".into());
        }
        match (self.model, rows, self.data.as_str()) {
            (ModelKind::Mlp, true, _) => {}
            (ModelKind::Mlp, false, other) => {
                return bad(format!(
                    "the mlp model trains on feature rows (data \"digits\"), not {other:?}"
                ));
            }
            (ModelKind::Gpt, true, _) => {
                return bad("the gpt model trains on \"addition\" or a text file".into())
            }
            (ModelKind::Gpt, false, "addition") => {
                if self.addition.digits == 0 || self.addition.digits > 9 {
                    return bad(format!(
                        "addition.digits must be 1..9, got {}",
                        self.addition.digits
                    ));
                }
                if self.addition.test_size > MAX_TEST_SIZE {
                    return bad(format!(
                        "addition.test_size {} is more than the {MAX_TEST_SIZE} held-out \
                         problems an evaluation may take",
                        self.addition.test_size
                    ));
                }
                let need = 3 * self.addition.digits + 2;
                if self.gpt.block_size < need {
                    return bad(format!(
                        "gpt.block_size {} is too short for {}-digit addition (needs {need})",
                        self.gpt.block_size, self.addition.digits
                    ));
                }
            }
            (ModelKind::Gpt, false, _) => {}
        }
        self.gpt.validate().map_err(Error::Config)?;
        if self.model == ModelKind::Gpt {
            // the data's tokens are bytes: every one must have an embedding row and a logit
            let (need, tokens) = match self.data.as_str() {
                "addition" => (usize::from(b'=') + 1, "the bytes '0'..'9', '+' and '='"),
                // fine-tuning records: the base model's own tokenizer and vocabulary
                d if crate::data::jsonl::is_data_dir(Path::new(d)) => (0, ""),
                _ => (256, "bytes 0..255 (a text is read as bytes)"),
            };
            if self.gpt.vocab_size < need {
                return bad(format!(
                    "gpt.vocab_size {} is too small for data {:?}: its tokens are {tokens}, so \
                     vocab_size must be at least {need}",
                    self.gpt.vocab_size, self.data
                ));
            }
        }
        if let Some(lora) = &self.lora {
            if self.model != ModelKind::Gpt {
                return bad("lora applies to the gpt model".into());
            }
            lora.validate()?;
        }
        Ok(())
    }

    /// Switches the optimizer to `name` with that method's defaults; for the digits MLP, the
    /// values tuned for it in `assets/configs/optimizers/NAME.json` (lr, hyper-parameters,
    /// schedule) are laid over the config.
    pub fn with_optimizer(&self, name: OptimizerName) -> Result<TrainConfig> {
        let mut config = self.clone();
        config.optimizer = OptimizerConfig::named(name);
        if self.model != ModelKind::Mlp {
            return Ok(config);
        }
        let overlay: serde_json::Value = serde_json::from_str(tuned_for_digits(name))
            .map_err(|e| Error::Config(format!("optimizers/{}.json: {e}", name.as_str())))?;
        let mut base = serde_json::to_value(&config).expect("a config serializes");
        merge(&mut base, overlay);
        serde_json::from_value(base)
            .map_err(|e| Error::Config(format!("optimizers/{}.json: {e}", name.as_str())))
    }

    /// What runs at once.
    /// The gradients' dtype: f32, or under mixed precision the half type when a step is one
    /// micro-batch. With several, f32: the micro-batches' gradients are summed in f32, since a
    /// half sum rounded after each micro-batch loses the small contributions (bf16 keeps 8 bits).
    pub fn grad_dtype(&self) -> crate::tensor::DType {
        if self.micro_batch() < self.batch_size {
            crate::tensor::DType::F32
        } else {
            self.precision.dtype()
        }
    }

    pub fn micro_batch(&self) -> usize {
        if self.micro_batch_size == 0 {
            self.batch_size
        } else {
            self.micro_batch_size.min(self.batch_size)
        }
    }

    /// Micro-batches per optimizer step.
    pub fn accumulation(&self) -> usize {
        self.batch_size / self.micro_batch()
    }

    /// The effective batch: what one optimizer step sees.
    pub fn effective_batch(&self) -> usize {
        self.batch_size
    }

    /// The peak learning rate after batch-size scaling.
    pub fn peak_lr(&self) -> f32 {
        self.schedule.peak_lr(self.lr, self.effective_batch())
    }

    /// Learning rate at `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f32 {
        self.schedule.lr_at(self.peak_lr(), step, self.steps)
    }

    /// The optimizer steps `epochs` passes over the training data take at this batch size
    /// (rounded up; at least 1): a fixed budget of epochs, so a k-times larger batch takes
    /// k-times fewer steps. Loads the data to count it.
    pub fn steps_for_epochs(&self, epochs: f64) -> Result<u64> {
        if !(epochs.is_finite() && epochs > 0.0) {
            return Err(Error::Config(format!(
                "epochs must be a positive number, got {epochs}"
            )));
        }
        let size = crate::train::load_task(self)?.epoch_size(self);
        let steps = (epochs * size as f64 / self.effective_batch().max(1) as f64).ceil();
        Ok((steps as u64).max(1))
    }

    /// The addition task this config describes.
    pub fn addition_task(&self) -> Addition {
        Addition::new(self.addition.digits, self.addition.test_size, self.seed)
    }
}

/// Hyper-parameters tuned for the digits MLP, per optimizer.
fn tuned_for_digits(name: OptimizerName) -> &'static str {
    match name {
        OptimizerName::Sgd => include_str!("../../assets/configs/optimizers/sgd.json"),
        OptimizerName::Momentum => include_str!("../../assets/configs/optimizers/momentum.json"),
        OptimizerName::Nesterov => include_str!("../../assets/configs/optimizers/nesterov.json"),
        OptimizerName::Rmsprop => include_str!("../../assets/configs/optimizers/rmsprop.json"),
        OptimizerName::Adam => include_str!("../../assets/configs/optimizers/adam.json"),
        OptimizerName::Adamw => include_str!("../../assets/configs/optimizers/adamw.json"),
        OptimizerName::Lion => include_str!("../../assets/configs/optimizers/lion.json"),
        OptimizerName::NagGs => include_str!("../../assets/configs/optimizers/nag-gs.json"),
        OptimizerName::Adam8bit => include_str!("../../assets/configs/optimizers/adam8bit.json"),
    }
}

/// Lays `overlay`'s fields over `base`, objects recursively.
fn merge(base: &mut serde_json::Value, overlay: serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_budget_takes_k_times_fewer_steps_at_a_k_times_larger_batch() {
        // 2-digit addition: 10 000 problems, 1000 held out
        let mut c = TrainConfig::default();
        assert_eq!(crate::train::load_task(&c).unwrap().epoch_size(&c), 9000);
        c.batch_size = 8;
        assert_eq!(c.steps_for_epochs(2.0).unwrap(), 2250);
        c.batch_size = 256;
        assert_eq!(c.steps_for_epochs(2.0).unwrap(), 71); // 70.3, rounded up
        assert_eq!(c.steps_for_epochs(1e-9).unwrap(), 1);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(c.steps_for_epochs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_rejected_by_name() {
        let e = TrainConfig::from_json(r#"{"stepz": 3}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `stepz`"), "{e}");
        let e = TrainConfig::from_json(r#"{"gpt": {"n_layers": 3}}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("n_layers"), "{e}");
        let e = TrainConfig::from_json(r#"{"steps": "many"}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        for json in [
            r#"{"lr": 0}"#,
            r#"{"lr": -1}"#,
            r#"{"batch_size": 0}"#,
            r#"{"gpt": {"block_size": 4}}"#,
        ] {
            let c = TrainConfig::from_json(json, "c").unwrap();
            assert!(c.validate().is_err(), "{json}");
        }
        TrainConfig::default().validate().unwrap();
    }
}
