//! LoRA adapters on disk in the format Hugging Face PEFT reads and writes: a directory with
//! `adapter_model.safetensors` (each adapted layer's `lora_A.weight` (r, in) and
//! `lora_B.weight` (out, r), f32, under the name PEFT gives the layer: `base_model.model.` and
//! the transformers module path, `transformer.h.0.attn.c_attn` for GPT-2,
//! `model.layers.0.self_attn.q_proj` for a Llama) and `adapter_config.json` (`peft_type:
//! "LORA"`, `r`, `lora_alpha`, `target_modules`, …).

use crate::error::{Error, Result};
use crate::files::write_atomically;
use crate::gpu::Gpu;
use crate::nn::gpt::Family;
use crate::nn::lora::LoraConfig;
use crate::nn::Model;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
pub const CONFIG_FILE: &str = "adapter_config.json";
/// What PEFT puts before a module's transformers path.
const PREFIX: &str = "base_model.model.";
/// What transformers puts before a GPT-2 module's name (a Llama's parameter names are its
/// module paths already: "model.layers.0…").
const GPT2_PREFIX: &str = "transformer.";

/// GPT-2's embeddings, which wgtrain names without transformers' ".weight".
const GPT2_EMBEDDINGS: [&str; 2] = ["wte", "wpe"];

/// PEFT's name for a wgtrain parameter.
fn peft_name(name: &str, family: Family) -> String {
    match family {
        Family::Gpt2 if GPT2_EMBEDDINGS.contains(&name) => {
            format!("{PREFIX}{GPT2_PREFIX}{name}.weight")
        }
        Family::Gpt2 => format!("{PREFIX}{GPT2_PREFIX}{name}"),
        Family::Llama => format!("{PREFIX}{name}"),
    }
}

/// The wgtrain parameter a PEFT name is: the prefixes off.
fn param_name(peft: &str) -> &str {
    let name = peft.strip_prefix(PREFIX).unwrap_or(peft);
    let name = name.strip_prefix(GPT2_PREFIX).unwrap_or(name);
    match name.strip_suffix(".weight") {
        Some(e) if GPT2_EMBEDDINGS.contains(&e) => e,
        _ => name,
    }
}

fn err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Writes the model's adapters (every parameter named `*.lora_A.weight` / `*.lora_B.weight`)
/// and their config into `dir`; returns the weights file's size in bytes. `base` is what
/// `base_model_name_or_path` says: a Hugging Face directory or hub id transformers can load.
pub fn save(
    gpu: &Gpu,
    dir: &Path,
    model: &dyn Model,
    config: &LoraConfig,
    base: &str,
    family: Family,
) -> Result<u64> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        error: source,
    })?;
    let mut named = vec![];
    for p in model.params() {
        // the adapters, and the modules trained in full beside them (PEFT saves those whole)
        if p.name.contains(".lora_") || (config.saves(&p.name) && p.trainable()) {
            let bytes = gpu.read_bytes(p.value())?;
            named.push((
                peft_name(&p.name, family),
                p.value().shape().to_vec(),
                bytes,
            ));
        }
    }
    let weights = dir.join(WEIGHTS_FILE);
    if named.is_empty() {
        return Err(err(&weights, "the model has no LoRA adapters to save"));
    }
    let views = named
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| err(&weights, e))
        })
        .collect::<Result<Vec<_>>>()?;
    // PEFT's own files carry format "pt", which Hugging Face's loaders require
    let info = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::tensor::serialize(views, Some(info)).map_err(|e| err(&weights, e))?;
    // PEFT takes "all-linear" as the whole value, not in a list
    let modules = match config.modules() {
        m if m.iter().any(|t| t == crate::nn::lora::ALL_LINEAR) => {
            json!(crate::nn::lora::ALL_LINEAR)
        }
        m => json!(m),
    };
    let peft = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": config.r,
        "lora_alpha": config.alpha,
        "target_modules": modules,
        "lora_dropout": config.dropout,
        "bias": "none",
        // GPT-2's linears are Conv1D modules, weights stored (in, out)
        "fan_in_fan_out": family == Family::Gpt2,
        "use_rslora": config.rslora,
        "modules_to_save": (!config.modules_to_save.is_empty()).then_some(&config.modules_to_save),
        "base_model_name_or_path": base,
        "inference_mode": true,
    });
    write_atomically(&weights, &bytes)?;
    write_atomically(
        &dir.join(CONFIG_FILE),
        serde_json::to_string_pretty(&peft).unwrap().as_bytes(),
    )?;
    Ok(bytes.len() as u64)
}

/// An adapter read from disk: its config and its tensors by wgtrain parameter name.
pub struct Adapter {
    pub config: LoraConfig,
    pub base: Option<String>,
    tensors: HashMap<String, (Vec<usize>, Vec<u8>)>,
    path: std::path::PathBuf,
}

impl Adapter {
    pub fn load(dir: &Path) -> Result<Adapter> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text =
            crate::files::read_text_capped(&cfg_path, crate::files::CONFIG_CAP, "adapter config")?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(&cfg_path, format!("not JSON: {e}")))?;
        if v["peft_type"] != "LORA" {
            return Err(err(&cfg_path, "peft_type is not \"LORA\""));
        }
        let num = |k: &str| {
            v[k].as_f64()
                .ok_or_else(|| err(&cfg_path, format!("{k} is missing or not a number")))
        };
        // per-layer ranks and scales are PEFT settings wgtrain does not implement: refused
        // rather than run at the wrong scale
        for key in ["alpha_pattern", "rank_pattern"] {
            if v[key].as_object().is_some_and(|m| !m.is_empty()) {
                return Err(err(
                    &cfg_path,
                    format!("sets {key}, per-layer LoRA settings wgtrain does not support"),
                ));
            }
        }
        if v["use_dora"].as_bool() == Some(true) {
            return Err(err(
                &cfg_path,
                "is a DoRA adapter (use_dora), which wgtrain does not support",
            ));
        }
        // a list of module names, or PEFT's "all-linear" (a regex string is not read)
        let targets = match &v["target_modules"] {
            serde_json::Value::String(s) if s == crate::nn::lora::ALL_LINEAR => vec![s.clone()],
            t => t
                .as_array()
                .ok_or_else(|| err(&cfg_path, "target_modules is not a list or \"all-linear\""))?
                .iter()
                .map(|t| t.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| err(&cfg_path, "target_modules holds a non-string"))?,
        };
        let modules_to_save = match &v["modules_to_save"] {
            serde_json::Value::Null => vec![],
            m => m
                .as_array()
                .and_then(|l| l.iter().map(|t| t.as_str().map(String::from)).collect())
                .ok_or_else(|| err(&cfg_path, "modules_to_save is not a list of names"))?,
        };
        let config = LoraConfig {
            r: num("r")? as usize,
            alpha: num("lora_alpha")? as f32,
            targets,
            dropout: num("lora_dropout").unwrap_or(0.0) as f32,
            rslora: v["use_rslora"].as_bool().unwrap_or(false),
            modules_to_save,
        };
        config
            .validate()
            .map_err(|e| err(&cfg_path, e.to_string()))?;
        let path = dir.join(WEIGHTS_FILE);
        let (header, mut data) = crate::files::open_safetensors(&path, "LoRA adapter")?;
        let mut in_order: Vec<_> = header.tensors().into_iter().collect();
        in_order.sort_by_key(|(_, view)| view.data_offsets);
        let mut tensors = HashMap::new();
        for (name, view) in in_order {
            if view.dtype != Dtype::F32 {
                return Err(err(&path, format!("{name} is {:?}, not F32", view.dtype)));
            }
            // the rank the file's own shapes give: A is (r, in), B is (out, r), so a config's r
            // is checked against sizes the file bounds before any layer is built from it
            // PEFT's own files name the weight `…lora_A.weight` too (older ones
            // `…lora_A.default.weight`)
            let short = param_name(&name).replace(".default.weight", ".weight");
            let r = match (
                name.contains(".lora_A."),
                name.contains(".lora_B."),
                &view.shape[..],
            ) {
                (true, _, [r, _]) | (_, true, [_, r]) => Some(*r),
                // a module trained in full (modules_to_save): checked against the model's
                _ if config.saves(&short) => None,
                _ => {
                    return Err(err(
                        &path,
                        format!(
                            "{name} is not a LoRA A (r, in) or B (out, r) matrix, nor a \
                             module modules_to_save names"
                        ),
                    ))
                }
            };
            if r.is_some_and(|r| r != config.r) {
                let r = r.unwrap_or_default();
                return Err(err(
                    &cfg_path,
                    format!(
                        "r is {}, but {name} in {WEIGHTS_FILE} has rank {r}",
                        config.r
                    ),
                ));
            }
            let bytes = data.read(view.data_offsets)?;
            let bad = crate::files::nonfinite_f32(&bytes);
            if bad > 0 {
                return Err(err(
                    &path,
                    format!("{name} holds {bad} NaN or infinite values"),
                ));
            }
            tensors.insert(short, (view.shape.clone(), bytes));
        }
        if tensors.is_empty() {
            return Err(err(&path, "holds no adapter weights"));
        }
        Ok(Adapter {
            config,
            base: v["base_model_name_or_path"].as_str().map(String::from),
            tensors,
            path,
        })
    }

    /// Gives `model` this adapter, frozen (for evaluation, sampling and merging): its layers get
    /// adapters of the config's rank and targets, and the saved A and B are uploaded. Every shape is checked first; a tensor the model
    /// lacks, or one it has and the file does not, is an error naming it.
    pub fn apply(&self, gpu: &Gpu, model: &mut dyn Model) -> Result<()> {
        // for inference: the adapters need no gradients
        let frozen = crate::nn::Build::new(gpu).frozen(&["*".to_string()]);
        model.add_lora(&frozen, &self.config, &mut crate::rng::Rng::new(0))?;
        let params = model.params();
        // the adapters, and the modules saved whole
        let lora: Vec<_> = params
            .iter()
            .filter(|p| p.name.contains(".lora_") || self.config.saves(&p.name))
            .collect();
        for p in &lora {
            let (shape, _) = self.tensors.get(&p.name).ok_or_else(|| {
                err(
                    &self.path,
                    format!(
                        "has no tensor for {}: it was made for another model",
                        p.name
                    ),
                )
            })?;
            if shape != p.value().shape() {
                return Err(err(
                    &self.path,
                    format!(
                        "{}'s adapter is {shape:?}, the model's is {:?} (another base, or another r)",
                        p.name,
                        p.value().shape()
                    ),
                ));
            }
        }
        if let Some(extra) = self
            .tensors
            .keys()
            .find(|k| !lora.iter().any(|p| &p.name == *k))
        {
            return Err(err(
                &self.path,
                format!("{extra} matches no layer of the model"),
            ));
        }
        for p in &lora {
            gpu.upload(p.value(), &self.tensors[&p.name].1);
            p.refresh_work(gpu);
        }
        Ok(())
    }
}
