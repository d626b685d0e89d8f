//! Hugging Face model directories in and out. In ([`load`]): `config.json`, and `model.safetensors` or the shards a
//! `model.safetensors.index.json` names, for Llama-family models (`LlamaForCausalLM`: names as
//! wgtrain's Llama parameters are named, `lm_head` or tied) and GPT-2 (`GPT2LMHeadModel`: with
//! or without the `transformer.` prefix, Conv1D weights stored (in, out) and transposed here,
//! the `attn.bias`/`attn.masked_bias` buffers skipped, the head tied). Every config value and
//! every tensor's name, dtype (F32, F16, BF16) and shape is checked before the model is
//! allocated; then each tensor is read alone, widened to f32 and uploaded. Out ([`save`]): the
//! same names and layouts the other way, a config.json and one weights-only model.safetensors
//! (f32, `format: "pt"`), which `transformers`' `from_pretrained` reads.

use crate::error::{Error, Result};
use crate::files::{open_safetensors, SafetensorsData};
use crate::nn::linear::{Linear, Weight};
use crate::nn::{Build, Family, Gpt, GptConfig, Param};
use crate::ops::qmatmul::QuantWeight;
use crate::rng::Rng;
use safetensors::tensor::{Dtype, Metadata};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The `model_type`s read here.
pub const MODEL_TYPES: [&str; 2] = ["llama", "gpt2"];

fn bad(path: &Path, reason: String) -> Error {
    Error::Format {
        path: path.into(),
        reason,
    }
}

/// A directory's config.json as JSON.
pub fn read_config(dir: &Path) -> Result<Json> {
    let path = dir.join("config.json");
    let text = crate::files::read_text_capped(&path, crate::files::CONFIG_CAP, "model config")?;
    serde_json::from_str(&text).map_err(|e| bad(&path, format!("is not JSON: {e}")))
}

/// The model config a config.json states, checked: an unknown model_type or a setting wgtrain
/// does not implement (rope_scaling, biases in Llama's attention, another activation) is an
/// error naming it.
pub fn config(dir: &Path, json: &Json) -> Result<GptConfig> {
    let path = dir.join("config.json");
    let bad = |reason: String| bad(&path, reason);
    let model_type = json["model_type"].as_str().unwrap_or("");
    let int = |k: &str| -> Result<usize> {
        json[k]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("has no integer {k:?}")))
    };
    let float = |k: &str| -> Result<Option<f32>> {
        match &json[k] {
            Json::Null => Ok(None),
            v => v
                .as_f64()
                .map(|f| Some(f as f32))
                .ok_or_else(|| bad(format!("{k:?} is not a number"))),
        }
    };
    let refuse_unless = |k: &str, ok: &dyn Fn(&Json) -> bool, why: &str| -> Result<()> {
        match ok(&json[k]) {
            true => Ok(()),
            false => Err(bad(format!("{k} = {}: {why}", json[k]))),
        }
    };
    let config = match model_type {
        "llama" => {
            let (c, nh) = (int("hidden_size")?, int("num_attention_heads")?);
            refuse_unless(
                "rope_scaling",
                &|v| v.is_null(),
                "wgtrain implements plain RoPE",
            )?;
            for k in ["attention_bias", "mlp_bias"] {
                refuse_unless(
                    k,
                    &|v| !v.as_bool().unwrap_or(false),
                    "wgtrain's Llama has no biases",
                )?;
            }
            refuse_unless(
                "hidden_act",
                &|v| v.is_null() || v.as_str() == Some("silu"),
                "wgtrain's Llama MLP is SwiGLU (silu)",
            )?;
            refuse_unless(
                "head_dim",
                &|v| v.is_null() || v.as_u64() == Some((c / nh.max(1)) as u64),
                "heads of hidden_size / num_attention_heads",
            )?;
            GptConfig {
                vocab_size: int("vocab_size")?,
                block_size: int("max_position_embeddings")?,
                n_layer: int("num_hidden_layers")?,
                n_head: nh,
                n_embd: c,
                family: Family::Llama,
                n_kv_head: Some(match json["num_key_value_heads"].is_null() {
                    true => nh,
                    false => int("num_key_value_heads")?,
                }),
                ffn_hidden: Some(int("intermediate_size")?),
                rope_theta: Some(float("rope_theta")?.unwrap_or(10_000.0)),
                rope_dim: None,
                norm_eps: Some(float("rms_norm_eps")?.unwrap_or(1e-6)),
                // transformers' LlamaConfig unties by default
                untied_head: !json["tie_word_embeddings"].as_bool().unwrap_or(false),
            }
        }
        "gpt2" => {
            refuse_unless(
                "activation_function",
                &|v| v.is_null() || v.as_str() == Some("gelu_new"),
                "wgtrain's GPT-2 uses the tanh GELU (gelu_new)",
            )?;
            refuse_unless(
                "layer_norm_epsilon",
                &|v| v.is_null() || v.as_f64() == Some(1e-5),
                "wgtrain's LayerNorm uses eps 1e-5",
            )?;
            let c = int("n_embd")?;
            refuse_unless(
                "n_inner",
                &|v| v.is_null() || v.as_u64() == Some(4 * c as u64),
                "wgtrain's GPT-2 MLP is 4·n_embd wide",
            )?;
            refuse_unless(
                "tie_word_embeddings",
                &|v| v.as_bool().unwrap_or(true),
                "wgtrain's GPT-2 ties its head to the token embedding",
            )?;
            GptConfig {
                vocab_size: int("vocab_size")?,
                block_size: int("n_positions")?,
                n_layer: int("n_layer")?,
                n_head: int("n_head")?,
                n_embd: c,
                ..Default::default()
            }
        }
        other => {
            return Err(bad(format!(
                "model_type {other:?} is not one wgtrain loads (it loads {})",
                MODEL_TYPES.join(", ")
            )))
        }
    };
    config.validate().map_err(bad)?;
    Ok(config)
}

/// One tensor of a directory: where it is, its header entry, and the parameter it fills.
struct Slot {
    file: PathBuf,
    name: String,
    param: String,
    /// GPT-2's Conv1D weights: stored (in, out), the parameter (out, in).
    transpose: bool,
}

/// The safetensors files of a directory and each one's validated header: one model.safetensors,
/// or the shards an index names.
fn headers(dir: &Path) -> Result<BTreeMap<PathBuf, Metadata>> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let text = crate::files::read_text_capped(&index, crate::files::CONFIG_CAP, "index")?;
        let json: Json =
            serde_json::from_str(&text).map_err(|e| bad(&index, format!("is not JSON: {e}")))?;
        let map = json["weight_map"]
            .as_object()
            .ok_or_else(|| bad(&index, "has no weight_map".into()))?;
        let mut files: Vec<PathBuf> = vec![];
        for (name, file) in map {
            let file = file
                .as_str()
                .filter(|f| !f.contains('/') && !f.contains('\\') && *f != "..")
                .ok_or_else(|| bad(&index, format!("{name}'s file is not a file name here")))?;
            if !files.iter().any(|f| f.ends_with(file)) {
                files.push(dir.join(file));
            }
        }
        files
    } else {
        vec![dir.join("model.safetensors")]
    };
    files
        .into_iter()
        .map(|f| Ok((f.clone(), open_safetensors(&f, "model file")?.0)))
        .collect()
}

/// The parameter a stored tensor fills, by the conventions of `family`: None for a tensor the
/// model does not keep (GPT-2's mask buffers, Llama's rotary inv_freq).
fn param_name(family: Family, stored: &str) -> Option<(String, bool)> {
    match family {
        Family::Llama => (!stored.ends_with("rotary_emb.inv_freq")).then(|| (stored.into(), false)),
        Family::Gpt2 => {
            let name = stored.strip_prefix("transformer.").unwrap_or(stored);
            if name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") {
                return None;
            }
            let conv1d = [
                ".attn.c_attn.weight",
                ".attn.c_proj.weight",
                ".mlp.c_fc.weight",
                ".mlp.c_proj.weight",
            ];
            let transpose = conv1d.iter().any(|s| name.ends_with(s));
            let name = match name {
                "wte.weight" => "wte",
                "wpe.weight" => "wpe",
                // the tied head, when a file stores it twice
                "lm_head.weight" => return None,
                n => n,
            };
            Some((name.into(), transpose))
        }
    }
}

/// A Hugging Face model directory as a [`Gpt`] built by `b` (its precision), every tensor
/// checked against the config before anything is allocated ([`fill`]'s checks).
pub fn load(b: &Build, dir: &Path) -> Result<Gpt> {
    let config = config(dir, &read_config(dir)?)?;
    let plan = plan(b.gpu, dir, &config)?;
    let model = Gpt::new(&b.clone().loading(), config, &mut Rng::new(0))?;
    write(b.gpu, &plan, &model.params())?;
    Ok(model)
}

/// Writes a Hugging Face directory's weights into the parameters of the same names among
/// `params` (a model of `config`, or part of one), every tensor checked first. Parameters the
/// directory has no tensor for (LoRA adapters) and values held by another rank are left;
/// GPT-2's position table may be shorter than the file's (its first rows: a model trained on
/// a shorter context). Returns the names filled.
pub fn fill(
    gpu: &crate::gpu::Gpu,
    dir: &Path,
    config: &GptConfig,
    params: &[&Param],
) -> Result<Vec<String>> {
    let plan = plan(gpu, dir, config)?;
    write(gpu, &plan, params)
}

/// A directory's tensors matched to a model's parameters, checked.
struct Plan {
    headers: BTreeMap<PathBuf, Metadata>,
    slots: Vec<Slot>,
}

/// Where each parameter of a model of `config` is stored in `dir`: the safetensors headers
/// read, and every tensor's name, dtype and shape checked against the config.
fn plan(gpu: &crate::gpu::Gpu, dir: &Path, config: &GptConfig) -> Result<Plan> {
    let headers = headers(dir)?;
    // the parameters a model of this config has, and their shapes (on a ledger twin, without
    // drawing values: nothing allocated)
    let ledger = gpu.ledger();
    let shapes: HashMap<String, Vec<usize>> = Gpt::new(
        &Build::new(&ledger).loading(),
        config.clone(),
        &mut Rng::new(0),
    )?
    .params()
    .into_iter()
    .map(|p| (p.name.clone(), p.shape().to_vec()))
    .collect();
    let mut slots: Vec<Slot> = vec![];
    for (file, meta) in &headers {
        // in name order, so the first error is always the same
        let tensors: BTreeMap<String, _> = meta.tensors().into_iter().collect();
        for (name, info) in tensors {
            let Some((param, transpose)) = param_name(config.family, &name) else {
                continue;
            };
            let Some(shape) = shapes.get(&param) else {
                return Err(bad(
                    file,
                    format!(
                        "holds a tensor {name:?} that a {} model does not have",
                        if config.family == Family::Llama {
                            "llama"
                        } else {
                            "gpt2"
                        }
                    ),
                ));
            };
            let mut stored = info.shape.clone();
            if transpose {
                stored.reverse();
            }
            // GPT-2's position table: the first rows of a longer one (a shorter context)
            let prefix = param == "wpe"
                && stored.len() == 2
                && stored[1] == shape[1]
                && stored[0] >= shape[0];
            if &stored != shape && !prefix {
                return Err(bad(
                    file,
                    format!(
                        "tensor {name:?} is {:?}; the config implies {shape:?}{}",
                        info.shape,
                        if transpose {
                            " transposed (a Conv1D weight)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(bad(
                    file,
                    format!(
                        "tensor {name:?} is {:?}; wgtrain reads F32, F16 and BF16",
                        info.dtype
                    ),
                ));
            }
            if slots.iter().any(|s| s.param == param) {
                return Err(bad(file, format!("holds {param:?} twice")));
            }
            slots.push(Slot {
                file: file.clone(),
                name: name.clone(),
                param,
                transpose,
            });
        }
    }
    if let Some(missing) = shapes
        .keys()
        .find(|p| !slots.iter().any(|s| &s.param == *p))
    {
        return Err(bad(
            dir,
            format!("has no tensor for {missing:?}, which its config implies"),
        ));
    }
    Ok(Plan { headers, slots })
}

/// The planned tensors read one at a time, widened to f32 and uploaded into `params`.
fn write(gpu: &crate::gpu::Gpu, plan: &Plan, params: &[&Param]) -> Result<Vec<String>> {
    let mut filled = vec![];
    let mut files = Files::default();
    for slot in &plan.slots {
        let Some(p) = params.iter().find(|p| p.name == slot.param) else {
            continue;
        };
        if !p.resident() {
            continue;
        }
        if gpu.is_ledger() {
            // a plan: the value is allocated already, nothing to read
            filled.push(p.name.clone());
            continue;
        }
        let values = files.read_f32(plan, slot, p.shape()[0])?;
        p.value().write_f32(gpu, &values);
        p.refresh_work(gpu);
        gpu.flush()?;
        filled.push(p.name.clone());
    }
    Ok(filled)
}

/// Gives every [`Weight::Pending`] linear among `linears` (a model of `config`) its weight from
/// a Hugging Face directory, quantized on the host by `method` (QLoRA's base); on a ledger only
/// the sizes are planned. Returns the names given.
pub fn fill_quantized(
    gpu: &crate::gpu::Gpu,
    dir: &Path,
    config: &GptConfig,
    linears: Vec<&mut Linear>,
    method: crate::quant::Method,
) -> Result<Vec<String>> {
    let plan = plan(gpu, dir, config)?;
    let mut files = Files::default();
    let mut given = vec![];
    for l in linears {
        let Weight::Pending(p) = &l.weight else {
            continue;
        };
        let name = p.name.clone();
        let slot = plan
            .slots
            .iter()
            .find(|s| s.param == name)
            .expect("planned: every parameter has a tensor");
        let (rows, cols) = (l.out_features, l.in_features);
        let q = match gpu.is_ledger() {
            true => crate::quant::Quantized::zeros(method, rows, cols),
            false => {
                crate::quant::quantize(method, &files.read_f32(&plan, slot, rows)?, rows, cols)?
            }
        };
        l.weight.quantize(QuantWeight::upload(gpu, &name, &q)?);
        gpu.flush()?;
        given.push(name);
    }
    Ok(given)
}

/// The safetensors file open now (shards are read in turn).
#[derive(Default)]
struct Files(Option<(PathBuf, SafetensorsData)>);

impl Files {
    /// A planned tensor as the parameter's f32 values: its first `rows` rows (a shorter
    /// position table; all of a transposed one), widened, Conv1D weights transposed; NaN or
    /// infinite values refused.
    fn read_f32(&mut self, plan: &Plan, slot: &Slot, rows: usize) -> Result<Vec<f32>> {
        if self.0.as_ref().is_none_or(|(f, _)| *f != slot.file) {
            self.0 = Some((
                slot.file.clone(),
                open_safetensors(&slot.file, "model file")?.1,
            ));
        }
        let (_, data) = self.0.as_mut().unwrap();
        let info = plan.headers[&slot.file]
            .info(&slot.name)
            .expect("listed by its own header");
        let (start, end) = info.data_offsets;
        let per_row = (end - start) / info.shape[0].max(1);
        let rows = if slot.transpose { info.shape[0] } else { rows };
        let raw = data.read((start, start + per_row * rows))?;
        let mut values: Vec<f32> = match info.dtype {
            Dtype::F32 => bytemuck::pod_collect_to_vec(&raw),
            Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&raw)
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            _ => bytemuck::pod_collect_to_vec::<u8, half::bf16>(&raw)
                .iter()
                .map(|v| v.to_f32())
                .collect(),
        };
        if slot.transpose {
            let (rows, cols) = (info.shape[0], info.shape[1]);
            values = (0..cols)
                .flat_map(|c| (0..rows).map(move |r| (r, c)))
                .map(|(r, c)| values[r * cols + c])
                .collect();
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(bad(
                &slot.file,
                format!("tensor {:?} holds NaN or infinite values", slot.name),
            ));
        }
        Ok(values)
    }
}

/// The name and layout a parameter is stored under in a Hugging Face checkpoint (the inverse of
/// [`param_name`]): Llama's names as they are; GPT-2's under `transformer.`, Conv1D weights
/// (in, out).
fn stored_name(family: Family, param: &str) -> (String, bool) {
    match family {
        Family::Llama => (param.into(), false),
        Family::Gpt2 => {
            let name = match param {
                "wte" => "wte.weight",
                "wpe" => "wpe.weight",
                n => n,
            };
            let name = format!("transformer.{name}");
            let transpose = param_name(family, &name).is_some_and(|(_, t)| t);
            (name, transpose)
        }
    }
}

/// config.json for a model of `config`, as transformers writes it for its class.
fn config_json(config: &GptConfig) -> Json {
    let c = config;
    match c.family {
        Family::Llama => serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": c.n_embd, "intermediate_size": c.ffn(),
            "num_attention_heads": c.n_head, "num_key_value_heads": c.kv_heads(),
            "num_hidden_layers": c.n_layer, "rms_norm_eps": c.eps(), "rope_theta": c.rope_base(),
            "vocab_size": c.vocab_size, "max_position_embeddings": c.block_size,
            "tie_word_embeddings": c.tied(), "hidden_act": "silu", "attention_bias": false,
            "mlp_bias": false, "rope_scaling": null, "torch_dtype": "float32",
        }),
        Family::Gpt2 => serde_json::json!({
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "n_embd": c.n_embd, "n_head": c.n_head, "n_layer": c.n_layer,
            "n_positions": c.block_size, "n_ctx": c.block_size, "vocab_size": c.vocab_size,
            "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new", "n_inner": null,
            "tie_word_embeddings": true, "torch_dtype": "float32",
        }),
    }
}

/// Writes `params` (a model of `config`, every value on this device) as a Hugging Face
/// directory: config.json and model.safetensors, weights only, in f32 with `format: "pt"`.
/// LoRA adapters are refused (merge them first); each file is written atomically.
pub fn save(
    gpu: &crate::gpu::Gpu,
    config: &GptConfig,
    params: &[&Param],
    dir: &Path,
) -> Result<()> {
    if let Some(p) = params.iter().find(|p| p.name.contains(".lora_")) {
        return Err(Error::Config(format!(
            "{} is a LoRA adapter: merge it into the model first (wgtrain merge)",
            p.name
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| bad(dir, format!("cannot be made: {e}")))?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = vec![];
    for p in params {
        let (name, transpose) = stored_name(config.family, &p.name);
        let mut values = p.value().to_f32(gpu)?;
        let mut shape = p.shape().to_vec();
        if transpose {
            let (rows, cols) = (shape[0], shape[1]);
            values = (0..cols)
                .flat_map(|c| (0..rows).map(move |r| (r, c)))
                .map(|(r, c)| values[r * cols + c])
                .collect();
            shape.reverse();
        }
        tensors.push((name, shape, bytemuck::cast_slice(&values).to_vec()));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| bad(dir, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let info = HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = safetensors::tensor::serialize(views, Some(info))
        .map_err(|e| bad(dir, format!("cannot be serialized: {e}")))?;
    crate::files::write_atomically(&dir.join("model.safetensors"), &weights)?;
    let json = serde_json::to_string_pretty(&config_json(config)).expect("JSON of a config");
    crate::files::write_atomically(&dir.join("config.json"), json.as_bytes())
}
