//! Training configuration: JSON with serde defaults; an unknown field is rejected by name; command
//! line flags override the file.

use crate::data::addition::Addition;
use crate::error::{Error, Result};
use crate::nn::{GptConfig, MlpConfig};
use crate::optim::AdamWConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Mlp,
    Gpt,
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
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear warmup from lr/warmup_steps to lr over this many steps.
    pub warmup_steps: u64,
    /// Cosine decay from lr after warmup to lr · min_lr_ratio at the last step.
    pub min_lr_ratio: f32,
    pub seed: u64,
    /// Read the loss back (a sync point) every this many steps.
    pub log_every: u64,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Write a checkpoint every this many steps when `out` is set (0: only at the end).
    pub checkpoint_every: u64,
    pub out: Option<String>,
    pub metrics: Option<String>,
    pub adamw: AdamWConfig,
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
            lr: 3e-3,
            warmup_steps: 50,
            min_lr_ratio: 0.1,
            seed: 1337,
            log_every: 25,
            eval_every: 250,
            checkpoint_every: 0,
            out: None,
            metrics: None,
            adamw: AdamWConfig {
                weight_decay: 0.1,
                beta2: 0.99,
                ..AdamWConfig::default()
            },
            mlp: MlpConfig::default(),
            gpt: GptConfig {
                vocab_size: 256,
                block_size: 8,
                n_layer: 2,
                n_head: 4,
                n_embd: 64,
            },
            addition: AdditionConfig::default(),
        }
    }
}

impl TrainConfig {
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
                warmup_steps: 20,
                min_lr_ratio: 0.05,
                log_every: 50,
                eval_every: 500,
                adamw: AdamWConfig {
                    weight_decay: 1e-4,
                    ..AdamWConfig::default()
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
                warmup_steps: 50,
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

    pub fn from_json(text: &str, origin: &str) -> Result<TrainConfig> {
        serde_json::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))
    }

    pub fn load(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Checks the values that JSON types cannot; each error says what to change.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "min_lr_ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if self.log_every == 0 {
            return bad("log_every must be at least 1".into());
        }
        match (self.model, self.data.as_str()) {
            (ModelKind::Mlp, "digits") => {}
            (ModelKind::Mlp, other) => {
                return bad(format!(
                    "the mlp model trains on data \"digits\", not {other:?}"
                ));
            }
            (ModelKind::Gpt, "digits") => {
                return bad("the gpt model trains on \"addition\" or a text file".into())
            }
            (ModelKind::Gpt, "addition") => {
                if self.addition.digits == 0 || self.addition.digits > 9 {
                    return bad(format!(
                        "addition.digits must be 1..9, got {}",
                        self.addition.digits
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
            (ModelKind::Gpt, _) => {}
        }
        self.gpt.validate().map_err(Error::Config)?;
        Ok(())
    }

    /// Learning rate at `step` (0-based): linear warmup, then cosine decay to lr · min_lr_ratio.
    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f32;
        let progress = ((step - self.warmup_steps) as f32 / span).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + 0.5 * (self.lr - floor) * (1.0 + (std::f32::consts::PI * progress).cos())
    }

    /// The addition task this config describes.
    pub fn addition_task(&self) -> Addition {
        Addition::new(self.addition.digits, self.addition.test_size, self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_schedule_warms_up_then_decays_to_the_floor() {
        let c = TrainConfig {
            steps: 100,
            warmup_steps: 10,
            lr: 1.0,
            min_lr_ratio: 0.1,
            ..TrainConfig::default()
        };
        assert!((c.lr_at(0) - 0.1).abs() < 1e-6);
        assert!((c.lr_at(9) - 1.0).abs() < 1e-6);
        assert!((c.lr_at(10) - 1.0).abs() < 1e-6);
        assert!((c.lr_at(100) - 0.1).abs() < 1e-6);
        assert!(c.lr_at(50) < 1.0 && c.lr_at(50) > 0.1);
    }
}
