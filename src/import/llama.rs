//! Llama-family and GPT-2 GGUF files in: the model's config from the file's metadata ([`config`]), the
//! check that its tensor directory holds exactly the tensors that config implies, each of the
//! implied shape and of a type wgtrain decodes ([`check_tensors`]): everything a loader must
//! know before it allocates anything; then the model itself, its weights decoded on the device
//! ([`load`]).
//!
//! GGUF names (llama.cpp's): `token_embd`, `blk.N.{attn_norm, attn_q, attn_k, attn_v,
//! attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}`, `output_norm` and, unless the embedding
//! is tied, `output`; all `.weight`. Each maps to the Hugging Face name the model's parameter
//! carries (`model.layers.N.self_attn.q_proj.weight`, …). llama.cpp's converter stores `attn_q`
//! and `attn_k` with each head's rows permuted for ggml's pairwise rotary layout (row 2i + j of a
//! head holds Hugging Face's row j·hs/2 + i); the loader moves the rows back, so the model
//! rotates Hugging Face's halves as a checkpoint from the hub would have it.

use super::gguf::{Gguf, TensorInfo};
use crate::error::Result;
use crate::nn::linear::{Linear, Weight};
use crate::nn::{Build, Family, Gpt, GptConfig, Param};
use crate::ops::ggml as decode;
use crate::ops::qmatmul::QuantWeight;
use crate::quant::ggml::GgmlType;
use crate::rng::Rng;
use std::path::Path;

/// The architectures read here: Llama's and GPT-2's tensor layouts under their GGUF names.
pub const ARCHITECTURES: [&str; 2] = ["llama", "gpt2"];

/// The config a GGUF file's metadata states (family Llama, its context as block_size), checked
/// for consistency; an architecture other than Llama's, or a missing or ill-typed key, is an
/// error naming it.
pub fn config(g: &Gguf) -> Result<GptConfig> {
    let arch = g.architecture()?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(bad(
            g,
            format!(
                "architecture {arch:?} is not one wgtrain loads (it loads {})",
                ARCHITECTURES.join(", ")
            ),
        ));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let int = |k: &str| -> Result<usize> { Ok(g.require_u64(&key(k))? as usize) };
    if arch == "gpt2" {
        return gpt2_config(g);
    }
    let n_embd = int("embedding_length")?;
    let n_head = int("attention.head_count")?;
    let vocab_size = match g.get(&key("vocab_size")) {
        Some(_) => int("vocab_size")?,
        None => match g.get("tokenizer.ggml.tokens").and_then(|t| t.as_array()) {
            Some(tokens) => tokens.len(),
            None => g
                .tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .ok_or_else(|| bad(g, "states no vocabulary size".into()))?
                as usize,
        },
    };
    let optional = |k: &str| g.get(&key(k)).is_some();
    let config = GptConfig {
        vocab_size,
        block_size: int("context_length")?,
        n_layer: int("block_count")?,
        n_head,
        n_embd,
        family: Family::Llama,
        n_kv_head: Some(match optional("attention.head_count_kv") {
            true => int("attention.head_count_kv")?,
            false => n_head,
        }),
        ffn_hidden: Some(int("feed_forward_length")?),
        rope_theta: Some(match optional("rope.freq_base") {
            true => g.require_f32(&key("rope.freq_base"))?,
            false => 10_000.0,
        }),
        rope_dim: match optional("rope.dimension_count") {
            true => Some(int("rope.dimension_count")?),
            false => None,
        },
        norm_eps: Some(g.require_f32(&key("attention.layer_norm_rms_epsilon"))?),
        untied_head: g.tensor("output.weight").is_some(),
    };
    for (what, v) in [
        ("vocabulary", config.vocab_size),
        ("block_count", config.n_layer),
        ("embedding_length", n_embd),
        ("head_count", n_head),
        ("head_count_kv", config.kv_heads()),
        ("feed_forward_length", config.ffn()),
        ("context_length", config.block_size),
    ] {
        if v == 0 {
            return Err(bad(g, format!("{what} is 0")));
        }
    }
    if n_embd % n_head != 0 {
        return Err(bad(
            g,
            format!("embedding_length {n_embd} is not a multiple of head_count {n_head}"),
        ));
    }
    config.validate().map_err(|reason| bad(g, reason))?;
    if config.rope_dims() != config.head_dim() {
        // the converter's row permutation spans the whole head
        return Err(bad(
            g,
            format!(
                "rotates {} of each head's {} dimensions; wgtrain loads Llama files that rotate \
                 whole heads",
                config.rope_dims(),
                config.head_dim()
            ),
        ));
    }
    Ok(config)
}

/// A GPT-2 file's config (llama.cpp's `gpt2` layout), with the settings wgtrain's GPT-2 fixes
/// (a 4·C MLP, LayerNorm eps 1e-5) checked.
fn gpt2_config(g: &Gguf) -> Result<GptConfig> {
    let int = |k: &str| -> Result<usize> { Ok(g.require_u64(&format!("gpt2.{k}"))? as usize) };
    let n_embd = int("embedding_length")?;
    let vocab_size = g
        .tensor("token_embd.weight")
        .and_then(|t| t.dims.get(1).copied())
        .ok_or_else(|| bad(g, "has no token_embd.weight".into()))? as usize;
    let config = GptConfig {
        vocab_size,
        block_size: int("context_length")?,
        n_layer: int("block_count")?,
        n_head: int("attention.head_count")?,
        n_embd,
        ..Default::default()
    };
    if int("feed_forward_length")? != 4 * n_embd {
        return Err(bad(
            g,
            "a GPT-2 MLP other than 4·embedding_length wide".into(),
        ));
    }
    let eps = g.require_f32("gpt2.attention.layer_norm_epsilon")?;
    if eps != 1e-5 {
        return Err(bad(
            g,
            format!("layer_norm_epsilon {eps}: wgtrain's GPT-2 uses 1e-5"),
        ));
    }
    config.validate().map_err(|reason| bad(g, reason))?;
    Ok(config)
}

/// One tensor of the layout: its GGUF name, dims (ggml order, the fastest first), the name of
/// the parameter it fills, and the heads whose rows the converter permuted (attn_q: n_head;
/// attn_k: n_kv_head).
pub struct Slot {
    pub gguf: String,
    pub dims: Vec<u64>,
    pub param: String,
    pub permuted_heads: Option<usize>,
}

/// Every tensor a model of `config` has, in the file's usual order.
pub fn tensors(config: &GptConfig) -> Vec<Slot> {
    if config.family == Family::Gpt2 {
        return gpt2_tensors(config);
    }
    let (c, f, v) = (
        config.n_embd as u64,
        config.ffn() as u64,
        config.vocab_size as u64,
    );
    let kv = config.kv_dim() as u64;
    let slot = |gguf: String, dims: Vec<u64>, param: String, permuted_heads| Slot {
        gguf,
        dims,
        param,
        permuted_heads,
    };
    let mut t = vec![slot(
        "token_embd.weight".into(),
        vec![c, v],
        "model.embed_tokens.weight".into(),
        None,
    )];
    for i in 0..config.n_layer {
        let layer = format!("model.layers.{i}");
        for (name, dims, param, permuted) in [
            ("attn_norm", vec![c], "input_layernorm", None),
            (
                "attn_q",
                vec![c, c],
                "self_attn.q_proj",
                Some(config.n_head),
            ),
            (
                "attn_k",
                vec![c, kv],
                "self_attn.k_proj",
                Some(config.kv_heads()),
            ),
            ("attn_v", vec![c, kv], "self_attn.v_proj", None),
            ("attn_output", vec![c, c], "self_attn.o_proj", None),
            ("ffn_norm", vec![c], "post_attention_layernorm", None),
            ("ffn_gate", vec![c, f], "mlp.gate_proj", None),
            ("ffn_up", vec![c, f], "mlp.up_proj", None),
            ("ffn_down", vec![f, c], "mlp.down_proj", None),
        ] {
            t.push(slot(
                format!("blk.{i}.{name}.weight"),
                dims,
                format!("{layer}.{param}.weight"),
                permuted,
            ));
        }
    }
    t.push(slot(
        "output_norm.weight".into(),
        vec![c],
        "model.norm.weight".into(),
        None,
    ));
    if config.untied_head {
        t.push(slot(
            "output.weight".into(),
            vec![c, v],
            "lm_head.weight".into(),
            None,
        ));
    }
    t
}

/// llama.cpp's GPT-2 tensors (weights stored (out, in), as wgtrain's) and the parameters they
/// fill.
fn gpt2_tensors(config: &GptConfig) -> Vec<Slot> {
    let (c, v, t) = (
        config.n_embd as u64,
        config.vocab_size as u64,
        config.block_size as u64,
    );
    let slot = |gguf: String, dims: Vec<u64>, param: String| Slot {
        gguf,
        dims,
        param,
        permuted_heads: None,
    };
    let mut out = vec![
        slot("token_embd.weight".into(), vec![c, v], "wte".into()),
        slot("position_embd.weight".into(), vec![c, t], "wpe".into()),
    ];
    for i in 0..config.n_layer {
        for (name, dims, param) in [
            ("attn_norm.weight", vec![c], "ln_1.weight"),
            ("attn_norm.bias", vec![c], "ln_1.bias"),
            ("attn_qkv.weight", vec![c, 3 * c], "attn.c_attn.weight"),
            ("attn_qkv.bias", vec![3 * c], "attn.c_attn.bias"),
            ("attn_output.weight", vec![c, c], "attn.c_proj.weight"),
            ("attn_output.bias", vec![c], "attn.c_proj.bias"),
            ("ffn_norm.weight", vec![c], "ln_2.weight"),
            ("ffn_norm.bias", vec![c], "ln_2.bias"),
            ("ffn_up.weight", vec![c, 4 * c], "mlp.c_fc.weight"),
            ("ffn_up.bias", vec![4 * c], "mlp.c_fc.bias"),
            ("ffn_down.weight", vec![4 * c, c], "mlp.c_proj.weight"),
            ("ffn_down.bias", vec![c], "mlp.c_proj.bias"),
        ] {
            out.push(slot(
                format!("blk.{i}.{name}"),
                dims,
                format!("h.{i}.{param}"),
            ));
        }
    }
    out.push(slot(
        "output_norm.weight".into(),
        vec![c],
        "ln_f.weight".into(),
    ));
    out.push(slot("output_norm.bias".into(), vec![c], "ln_f.bias".into()));
    out
}

/// The file's tensors against the ones `config` implies: each present with the implied dims and
/// a type wgtrain decodes, and none other (a tensor this layout does not know, like Llama 3's
/// `rope_freqs`, is refused by name rather than ignored).
pub fn check_tensors(g: &Gguf, config: &GptConfig) -> Result<()> {
    let want = tensors(config);
    for Slot {
        gguf: name, dims, ..
    } in &want
    {
        let t = g.tensor(name).ok_or_else(|| {
            bad(
                g,
                format!("has no tensor {name:?}, which its config implies"),
            )
        })?;
        if &t.dims != dims {
            return Err(bad(
                g,
                format!(
                    "tensor {name:?} is {:?}; its config implies {dims:?} (ggml order)",
                    t.dims
                ),
            ));
        }
        if !GgmlType::DECODED.contains(&t.ggml_type) {
            return Err(bad(
                g,
                format!(
                    "tensor {name:?} is {}, a type wgtrain does not decode (it decodes {})",
                    t.ggml_type.name(),
                    GgmlType::DECODED.map(|t| t.name()).join(", ")
                ),
            ));
        }
    }
    // llama.cpp's GPT-2 converter writes the tied head as a copy of the embedding
    let tied_copy = |t: &TensorInfo| -> bool {
        let embd = g.tensor("token_embd.weight");
        config.family == Family::Gpt2
            && t.name == "output.weight"
            && embd.is_some_and(|e| {
                e.ggml_type == t.ggml_type
                    && e.dims == t.dims
                    && g.read_raw(e).ok() == g.read_raw(t).ok()
            })
    };
    if let Some(extra) = g
        .tensors
        .iter()
        .find(|t| !want.iter().any(|s| s.gguf == t.name) && !tied_copy(t))
    {
        return Err(bad(
            g,
            format!(
                "has a tensor {:?} the {} layout does not use; wgtrain does not load it{}",
                extra.name,
                g.architecture().unwrap_or("?"),
                if extra.name == "output.weight" {
                    " (an LM head other than the token embedding: wgtrain's GPT-2 ties them)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

/// A Llama-family model from a GGUF file: the config and tensors checked first ([`config`],
/// [`check_tensors`]), then the model built by `b` (its precision, frozen patterns) and every
/// weight replaced by the file's ([`fill`]).
pub fn load(b: &Build, path: &Path) -> Result<Gpt> {
    let g = Gguf::open(path)?;
    let config = config(&g)?;
    check_tensors(&g, &config)?;
    // allocated, not initialised: every value is written below (check_tensors: every slot)
    let model = Gpt::new(&b.clone().loading(), config, &mut Rng::new(0))?;
    fill(b.gpu, path, &model.params())?;
    Ok(model)
}

/// Writes a GGUF file's weights into the parameters of the same (Hugging Face) names among
/// `params`, the file checked first ([`check_tensors`]): block types uploaded as stored and
/// decoded on the device ([`decode::decodes`]), F32 uploaded; attn_q's and attn_k's rows moved
/// back to Hugging Face's order first (whole rows of blocks, so before decoding). Parameters
/// the file has no tensor for (LoRA adapters) and values held by another rank are left;
/// GPT-2's position table may be shorter than the file's (its first rows: a model trained on
/// a shorter context). Returns the names filled.
pub fn fill(gpu: &crate::gpu::Gpu, path: &Path, params: &[&Param]) -> Result<Vec<String>> {
    let (g, slots) = open_checked(path)?;
    let mut filled = vec![];
    for p in params {
        let Some(slot) = slots.get(&p.name) else {
            continue;
        };
        let info = g
            .tensor(&slot.gguf)
            .expect("checked: every slot is in the file");
        let stored: u64 = info.dims.iter().product();
        let rows_prefix =
            p.name == "wpe" && p.shape().get(1).copied() == info.dims.first().map(|&c| c as usize);
        if p.numel() as u64 != stored && !(rows_prefix && (p.numel() as u64) < stored) {
            return Err(bad(
                &g,
                format!(
                    "tensor {:?} holds {stored} values; the model's {} is {:?}",
                    slot.gguf,
                    p.name,
                    p.shape()
                ),
            ));
        }
        if !p.resident() {
            continue;
        }
        if gpu.is_ledger() {
            // a plan: the value is allocated already, nothing to read
            filled.push(p.name.clone());
            continue;
        }
        let mut raw = read_rows(&g, slot)?;
        if rows_prefix {
            // the first rows: whole rows of blocks
            let rows = info.dims[1] as usize;
            raw.truncate(raw.len() / rows * p.shape()[0]);
        }
        fill_one(gpu, info, &raw, p)?;
        p.refresh_work(gpu);
        // one tensor's staging at a time
        gpu.flush()?;
        filled.push(p.name.clone());
    }
    Ok(filled)
}

/// Gives every [`Weight::Pending`] linear among `linears` its weight from a GGUF file, kept
/// quantized on the device: a block type the device decodes as the file stores it (when
/// `keep_blocks`), anything else quantized to `nf4` on the host (from the host decoder's f32).
/// attn_q's and attn_k's rows are moved back to Hugging Face's order first. On a ledger only
/// the sizes are planned (nothing is read). Returns the names given.
pub fn fill_quantized(
    gpu: &crate::gpu::Gpu,
    path: &Path,
    linears: Vec<&mut Linear>,
    nf4: crate::quant::Method,
    keep_blocks: bool,
) -> Result<Vec<String>> {
    let (g, slots) = open_checked(path)?;
    let mut given = vec![];
    for l in linears {
        let Weight::Pending(p) = &l.weight else {
            continue;
        };
        let name = p.name.clone();
        let slot = slots
            .get(&name)
            .ok_or_else(|| bad(&g, format!("has no tensor for {name}, which the model has")))?;
        let info = g
            .tensor(&slot.gguf)
            .expect("checked: every slot is in the file");
        let (rows, cols) = (l.out_features, l.in_features);
        let ty = info.ggml_type;
        let keep = keep_blocks && decode::decodes(ty);
        let quant = match (gpu.is_ledger(), keep) {
            (true, true) => {
                let bytes = ty.bytes_for((rows * cols) as u64).expect("whole blocks");
                QuantWeight::from_ggml(gpu, &name, &vec![0; bytes as usize], ty, rows, cols)?
            }
            (true, false) => {
                QuantWeight::upload(gpu, &name, &crate::quant::Quantized::zeros(nf4, rows, cols))?
            }
            (false, _) => {
                let raw = read_rows(&g, slot)?;
                if keep {
                    QuantWeight::from_ggml(gpu, &name, &raw, ty, rows, cols)?
                } else {
                    let w = ty
                        .dequantize(&raw, rows * cols)
                        .map_err(|reason| bad(&g, format!("{}: {reason}", slot.gguf)))?;
                    let q = crate::quant::quantize(nf4, &w, rows, cols)?;
                    QuantWeight::upload(gpu, &name, &q)?
                }
            }
        };
        l.weight.quantize(quant);
        gpu.flush()?;
        given.push(name);
    }
    Ok(given)
}

/// A GGUF file with its tensors checked against its config ([`check_tensors`]), and the slot of
/// each parameter, by name.
fn open_checked(path: &Path) -> Result<(Gguf, std::collections::HashMap<String, Slot>)> {
    let g = Gguf::open(path)?;
    let file_config = config(&g)?;
    check_tensors(&g, &file_config)?;
    let slots = tensors(&file_config)
        .into_iter()
        .map(|s| (s.param.clone(), s))
        .collect();
    Ok((g, slots))
}

/// A slot's stored bytes, rows in Hugging Face's order (attn_q's and attn_k's moved back).
fn read_rows(g: &Gguf, slot: &Slot) -> Result<Vec<u8>> {
    let info = g
        .tensor(&slot.gguf)
        .expect("checked: every slot is in the file");
    let raw = g.read_raw(info)?;
    Ok(match slot.permuted_heads {
        Some(heads) => unpermute_rows(&raw, info, heads),
        None => raw,
    })
}

/// Writes a tensor's stored bytes, decoded on the device, into the parameter's f32 value (F32
/// uploaded as it is; [`check_tensors`] admitted no other type than those decoded).
fn fill_one(gpu: &crate::gpu::Gpu, info: &TensorInfo, raw: &[u8], p: &Param) -> Result<()> {
    if info.ggml_type == GgmlType::F32 {
        gpu.upload(p.value(), raw);
    } else {
        let words = decode::upload_raw(gpu, &info.name, raw, crate::gpu::Category::Workspace)?;
        decode::decode(gpu, &words, info.ggml_type, p.value());
    }
    Ok(())
}

/// attn_q's or attn_k's rows in Hugging Face's order: within each head of hs rows, the row
/// j·hs/2 + i is the stored row 2i + j. Rows are whole runs of blocks, moved as bytes.
fn unpermute_rows(raw: &[u8], info: &TensorInfo, heads: usize) -> Vec<u8> {
    let rows = info.dims[1] as usize;
    let row_bytes = raw.len() / rows;
    let hs = rows / heads;
    let mut out = vec![0u8; raw.len()];
    for h in 0..heads {
        for i in 0..hs / 2 {
            for j in 0..2 {
                let from = h * hs + 2 * i + j;
                let to = h * hs + j * hs / 2 + i;
                out[to * row_bytes..(to + 1) * row_bytes]
                    .copy_from_slice(&raw[from * row_bytes..(from + 1) * row_bytes]);
            }
        }
    }
    out
}

fn bad(g: &Gguf, reason: String) -> crate::error::Error {
    crate::error::Error::Format {
        path: g.path.clone(),
        reason,
    }
}
