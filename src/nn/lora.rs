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

/// `"lora": {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"], "dropout": 0.0,
/// "rslora": false}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank of the update (≥ 1).
    pub r: usize,
    pub alpha: f32,
    /// Which linears get adapters, as PEFT's `target_modules` names them: a module name or the
    /// end of one after a dot ("q_proj", "mlp.down_proj", GPT-2's "c_attn"; wgtrain's own
    /// "attn.qkv", "attn.proj", "mlp.fc", "mlp.proj" for GPT-2's), or "all-linear" (every
    /// linear of every block; the LM head not).
    pub targets: Vec<String>,
    /// Dropout on the adapter input (0: none).
    pub dropout: f32,
    /// Scale by alpha/√r instead of alpha/r.
    pub rslora: bool,
    /// Modules trained in full beside the adapters (PEFT's `modules_to_save`: "lm_head",
    /// "embed_tokens"), named as `targets` are; saved whole in the adapter file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modules_to_save: Vec<String>,
}

impl Default for LoraConfig {
    /// Rank 8, alpha 16, on a GPT-2's attention (both its linears).
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            targets: vec!["attn.qkv".into(), "attn.proj".into()],
            dropout: 0.0,
            rslora: false,
            modules_to_save: vec![],
        }
    }
}

impl LoraConfig {
    /// The default for a model family: a Llama's on q_proj and v_proj (PEFT's default for
    /// Llama models), a GPT-2's as [`LoraConfig::default`].
    pub fn for_family(family: super::Family) -> LoraConfig {
        match family {
            super::Family::Llama => LoraConfig {
                targets: vec!["q_proj".into(), "v_proj".into()],
                ..LoraConfig::default()
            },
            super::Family::Gpt2 => LoraConfig::default(),
        }
    }
}

/// wgtrain's short target names and the GPT-2 modules they stand for.
const ALIASES: [(&str, &str); 4] = [
    ("attn.qkv", "attn.c_attn"),
    ("attn.proj", "attn.c_proj"),
    ("mlp.fc", "mlp.c_fc"),
    ("mlp.proj", "mlp.c_proj"),
];

/// Whether parameter `name` belongs to one of `modules` (its name less ".weight" or ".bias"
/// equals one or ends with it after a dot: PEFT's rule).
pub fn in_modules(modules: &[String], name: &str) -> bool {
    let module = name
        .strip_suffix(".weight")
        .or_else(|| name.strip_suffix(".bias"))
        .unwrap_or(name);
    modules
        .iter()
        .any(|m| module == m || module.ends_with(&format!(".{m}")))
}

/// The target that adapts every linear of every block.
pub const ALL_LINEAR: &str = "all-linear";

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.r as f32).sqrt()
        } else {
            self.alpha / self.r as f32
        }
    }

    /// The targets as PEFT's `target_modules` (wgtrain's short names as the GPT-2 modules they
    /// stand for; others as given), without repeats.
    pub fn modules(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for t in &self.targets {
            let m = ALIASES
                .iter()
                .find(|(short, _)| t == short)
                .map_or(t.as_str(), |(_, long)| long);
            if !out.iter().any(|o| o == m) {
                out.push(m.to_string());
            }
        }
        out
    }

    /// Whether parameter `name` belongs to a module `modules_to_save` names (its name less
    /// ".weight" or ".bias", by PEFT's rule).
    pub fn saves(&self, name: &str) -> bool {
        in_modules(&self.modules_to_save, name)
    }

    /// Which of `layers` (module names, "model.layers.0.self_attn.q_proj") get adapters, by
    /// PEFT's rule: a target equals the name or ends it after a dot. A target matching none is
    /// an error listing the module names the model has.
    pub fn select(&self, layers: &[&str]) -> Result<Vec<bool>> {
        let modules = self.modules();
        let matches =
            |m: &str, name: &str| m == ALL_LINEAR || name == m || name.ends_with(&format!(".{m}"));
        if let Some(unmatched) = modules
            .iter()
            .find(|m| !layers.iter().any(|name| matches(m, name)))
        {
            // the kinds of module there are: each name past its block's index
            let mut kinds: Vec<String> = vec![];
            for name in layers {
                let parts: Vec<&str> = name.split('.').collect();
                let after = parts
                    .iter()
                    .rposition(|p| p.parse::<usize>().is_ok())
                    .map_or(0, |i| i + 1);
                let kind = parts[after..].join(".");
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            return Err(Error::Config(format!(
                "lora target {unmatched:?} matches no layer; this model's are {}, or {ALL_LINEAR}",
                kinds.join(", ")
            )));
        }
        Ok(layers
            .iter()
            .map(|name| modules.iter().any(|m| matches(m, name)))
            .collect())
    }

    /// The settings alone (the targets are checked against a model by [`LoraConfig::select`]).
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
        Ok(())
    }
}

/// `"qlora": {"block": 64, "keep_file_blocks": true}`: QLoRA (Dettmers et al., 2023): the frozen
/// base's linear weights stay quantized on the device (NF4 in blocks of `block` along a row
/// with an f32 absmax each; a GGUF base's own ggml blocks where `keep_file_blocks` and the
/// device decodes them), read through the dequantizing matmul; the adapters train in f32 over
/// them. The embedding, norms and LM head stay dense.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QloraConfig {
    pub block: usize,
    pub keep_file_blocks: bool,
}

impl Default for QloraConfig {
    /// bitsandbytes' NF4 block, a GGUF file's blocks kept.
    fn default() -> Self {
        QloraConfig {
            block: 64,
            keep_file_blocks: true,
        }
    }
}

impl QloraConfig {
    /// The method weights not kept in their file's blocks are quantized by.
    pub fn method(&self) -> crate::quant::Method {
        crate::quant::Method::Nf4 { block: self.block }
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
