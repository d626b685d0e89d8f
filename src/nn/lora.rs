//! LoRA (Hu et al., 2021) as Hugging Face PEFT does it: a frozen Linear W gets a low-rank update
//! ΔW = scale·B·A, A (r, in) kaiming-uniform (bound 1/√in), B (out, r) zero, so training starts
//! from the unchanged model; scale = alpha / r (alpha / √r with rsLoRA).
//!   y = x·Wᵀ + b + scale·(x·Aᵀ)·Bᵀ
//! Only A and B train. The adapter's names are the layer's with `.lora_A.weight` and
//! `.lora_B.weight` (PEFT's, under `base_model.model.transformer.` in its files).

use super::{Build, Param};
use crate::error::{Error, Result};
use crate::ops::dropout::mix;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// `"lora": {"r": 8, "alpha": 16, "targets": ["attn.qkv", "attn.proj"], "dropout": 0.0,
/// "rslora": false}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank of the update (≥ 1).
    pub r: usize,
    pub alpha: f32,
    /// Which linears get adapters: "attn.qkv", "attn.proj", "mlp.fc", "mlp.proj" (or their
    /// GPT-2 names "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj").
    pub targets: Vec<String>,
    /// Dropout on the adapter input (0: none).
    pub dropout: f32,
    /// Scale by alpha/√r instead of alpha/r.
    pub rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            targets: vec!["attn.qkv".into(), "attn.proj".into()],
            dropout: 0.0,
            rslora: false,
        }
    }
}

/// A config target and the GPT-2 module suffix it names.
const TARGETS: [(&str, &str); 4] = [
    ("attn.qkv", "attn.c_attn"),
    ("attn.proj", "attn.c_proj"),
    ("mlp.fc", "mlp.c_fc"),
    ("mlp.proj", "mlp.c_proj"),
];

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.r as f32).sqrt()
        } else {
            self.alpha / self.r as f32
        }
    }

    /// The GPT-2 module suffixes ("attn.c_attn", …) the targets name; an unknown target is an
    /// error listing the known ones.
    pub fn modules(&self) -> Result<Vec<&'static str>> {
        let mut out = vec![];
        for t in &self.targets {
            let m = TARGETS
                .iter()
                .find(|(short, long)| t == short || t == long)
                .map(|(_, long)| *long)
                .ok_or_else(|| {
                    let known: Vec<_> = TARGETS.iter().map(|(s, _)| *s).collect();
                    Error::Config(format!(
                        "lora target {t:?} matches no layer; the targets are {}",
                        known.join(", ")
                    ))
                })?;
            if !out.contains(&m) {
                out.push(m);
            }
        }
        Ok(out)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.r == 0 {
            return bad("lora.r must be at least 1".into());
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return bad(format!("lora.alpha must be positive, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "lora.dropout must be in [0, 1), got {}",
                self.dropout
            ));
        }
        if self.targets.is_empty() {
            return bad("lora.targets is empty".into());
        }
        self.modules().map(|_| ())
    }
}

/// The adapter of one Linear layer.
pub struct LoraAdapter {
    /// (r, in)
    pub a: Param,
    /// (out, r)
    pub b: Param,
    pub scale: f32,
    /// Whether scale·B·A is folded into W (then the forward does not add it again).
    pub merged: bool,
    /// Dropout probability on the adapter's input, applied only while `training` is set.
    pub dropout: f32,
    /// Set by the model around its training forward and backward (evaluation runs without
    /// dropout).
    pub training: AtomicBool,
    /// This layer's dropout seed for the current micro-batch (see [`LoraAdapter::set_seed`]).
    pub seed: AtomicU32,
}

impl LoraAdapter {
    /// PEFT's init for a layer named `layer` (e.g. "h.0.attn.c_attn"): A ~ U(±1/√in), B = 0.
    /// Both decay, as Hugging Face's Trainer decays every matrix.
    pub fn new(
        b: &Build,
        layer: &str,
        in_features: usize,
        out_features: usize,
        config: &LoraConfig,
        rng: &mut Rng,
    ) -> Result<LoraAdapter> {
        let r = config.r;
        let bound = 1.0 / (in_features as f64).sqrt();
        let a: Vec<f32> = (0..r * in_features)
            .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
            .collect();
        Ok(LoraAdapter {
            a: Param::new(
                b,
                &format!("{layer}.lora_A.weight"),
                &[r, in_features],
                &a,
                true,
            )?,
            b: Param::new(
                b,
                &format!("{layer}.lora_B.weight"),
                &[out_features, r],
                &vec![0.0; out_features * r],
                true,
            )?,
            scale: config.scale(),
            merged: false,
            dropout: config.dropout,
            training: AtomicBool::new(false),
            seed: AtomicU32::new(0),
        })
    }

    pub fn rank(&self) -> usize {
        self.a.shape()[0]
    }

    /// The dropout probability in force now: the configured one while training, else 0.
    pub fn active_dropout(&self) -> f32 {
        if self.training.load(Ordering::Relaxed) {
            self.dropout
        } else {
            0.0
        }
    }

    /// Derives this layer's mask seed from the micro-batch's `seed` and the layer's index, so
    /// that layers, steps and micro-batches draw different masks and a recomputed forward or a
    /// resumed run draws the same ones.
    pub fn set_seed(&self, seed: u64, layer: usize) {
        let s = mix(seed as u32 ^ mix((seed >> 32) as u32) ^ mix(layer as u32 + 1));
        self.seed.store(s, Ordering::Relaxed);
    }
}
