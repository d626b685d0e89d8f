//! A Llama-family model's hyperparameters from a GGUF file's metadata ([`LlamaConfig`]), and the
//! check that its tensor directory holds exactly the tensors that config implies, each of the
//! implied shape and of a type wgtrain decodes ([`check_tensors`]): everything a loader must
//! know before it allocates anything. (The model kind that runs them is issue 37's next part.)
//!
//! GGUF names (llama.cpp's): `token_embd`, `blk.N.{attn_norm, attn_q, attn_k, attn_v,
//! attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}`, `output_norm` and, unless the embedding
//! is tied, `output`; all `.weight`. llama.cpp's converter stores `attn_q` and `attn_k` with
//! each head's rows permuted for ggml's pairwise rotary layout, which a loader for Hugging
//! Face's half-split layout undoes.

use super::ggml::GgmlType;
use super::gguf::Gguf;
use crate::error::Result;

/// The architectures read here: Llama's tensor layout under its GGUF name.
pub const ARCHITECTURES: [&str; 1] = ["llama"];

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub n_layer: usize,
    /// d_model
    pub n_embd: usize,
    pub n_head: usize,
    /// Grouped-query attention: n_head / n_kv_head query heads share each key/value head.
    pub n_kv_head: usize,
    /// SwiGLU's hidden width.
    pub ffn_hidden: usize,
    /// The context the model was trained for.
    pub context: usize,
    pub rope_theta: f32,
    /// Dimensions of each head that rotate (the head size unless the file says fewer).
    pub rope_dim: usize,
    pub rms_eps: f32,
    /// The LM head is the token embedding (no `output.weight`).
    pub tied_embeddings: bool,
}

impl LlamaConfig {
    /// The config a GGUF file's metadata states, checked for consistency; an architecture other
    /// than Llama's, or a missing or ill-typed key, is an error naming it.
    pub fn from_gguf(g: &Gguf) -> Result<LlamaConfig> {
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
        let n_embd = int("embedding_length")?;
        let n_head = int("attention.head_count")?;
        let n_kv_head = match g.get(&key("attention.head_count_kv")) {
            Some(_) => int("attention.head_count_kv")?,
            None => n_head,
        };
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
        let config = LlamaConfig {
            vocab_size,
            n_layer: int("block_count")?,
            n_embd,
            n_head,
            n_kv_head,
            ffn_hidden: int("feed_forward_length")?,
            context: int("context_length")?,
            rope_theta: match g.get(&key("rope.freq_base")) {
                Some(_) => g.require_f32(&key("rope.freq_base"))?,
                None => 10_000.0,
            },
            rope_dim: match g.get(&key("rope.dimension_count")) {
                Some(_) => int("rope.dimension_count")?,
                None => n_embd / n_head.max(1),
            },
            rms_eps: g.require_f32(&key("attention.layer_norm_rms_epsilon"))?,
            tied_embeddings: g.tensor("output.weight").is_none(),
        };
        config.validate().map_err(|reason| bad(g, reason))?;
        Ok(config)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Keys' and values' width: n_kv_head heads of `head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim()
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let c = self;
        for (what, v) in [
            ("vocabulary", c.vocab_size),
            ("block_count", c.n_layer),
            ("embedding_length", c.n_embd),
            ("head_count", c.n_head),
            ("head_count_kv", c.n_kv_head),
            ("feed_forward_length", c.ffn_hidden),
            ("context_length", c.context),
        ] {
            if v == 0 {
                return Err(format!("{what} is 0"));
            }
        }
        if c.n_embd % c.n_head != 0 {
            return Err(format!(
                "embedding_length {} is not a multiple of head_count {}",
                c.n_embd, c.n_head
            ));
        }
        if c.n_head % c.n_kv_head != 0 {
            return Err(format!(
                "head_count {} is not a multiple of head_count_kv {}",
                c.n_head, c.n_kv_head
            ));
        }
        if c.rope_dim == 0 || c.rope_dim % 2 != 0 || c.rope_dim > c.head_dim() {
            return Err(format!(
                "rope.dimension_count {} must be even and at most the head size {}",
                c.rope_dim,
                c.head_dim()
            ));
        }
        if !(c.rope_theta.is_finite() && c.rope_theta > 0.0) {
            return Err(format!("rope.freq_base {} is not positive", c.rope_theta));
        }
        if !(c.rms_eps.is_finite() && c.rms_eps > 0.0) {
            return Err(format!(
                "attention.layer_norm_rms_epsilon {} is not positive",
                c.rms_eps
            ));
        }
        Ok(())
    }

    /// Every tensor the model has: its GGUF name and dims (ggml order, the fastest first).
    pub fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (c, f, v) = (
            self.n_embd as u64,
            self.ffn_hidden as u64,
            self.vocab_size as u64,
        );
        let kv = self.kv_dim() as u64;
        let mut t = vec![("token_embd.weight".to_string(), vec![c, v])];
        for i in 0..self.n_layer {
            for (name, dims) in [
                ("attn_norm", vec![c]),
                ("attn_q", vec![c, c]),
                ("attn_k", vec![c, kv]),
                ("attn_v", vec![c, kv]),
                ("attn_output", vec![c, c]),
                ("ffn_norm", vec![c]),
                ("ffn_gate", vec![c, f]),
                ("ffn_up", vec![c, f]),
                ("ffn_down", vec![f, c]),
            ] {
                t.push((format!("blk.{i}.{name}.weight"), dims));
            }
        }
        t.push(("output_norm.weight".into(), vec![c]));
        if !self.tied_embeddings {
            t.push(("output.weight".into(), vec![c, v]));
        }
        t
    }

    /// Weights in all: Ψ.
    pub fn weight_count(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|(_, d)| d.iter().product::<u64>())
            .sum()
    }
}

/// The file's tensors against the ones `config` implies: each present with the implied dims and
/// a type wgtrain decodes, and none other (a tensor this layout does not know, like Llama 3's
/// `rope_freqs`, is refused by name rather than ignored).
pub fn check_tensors(g: &Gguf, config: &LlamaConfig) -> Result<()> {
    let want = config.tensors();
    for (name, dims) in &want {
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
    if let Some(extra) = g
        .tensors
        .iter()
        .find(|t| !want.iter().any(|(n, _)| *n == t.name))
    {
        return Err(bad(
            g,
            format!(
                "has a tensor {:?} the Llama layout does not use; wgtrain does not load it",
                extra.name
            ),
        ));
    }
    Ok(())
}

fn bad(g: &Gguf, reason: String) -> crate::error::Error {
    crate::error::Error::Format {
        path: g.path.clone(),
        reason,
    }
}
