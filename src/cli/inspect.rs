//! `wgtrain inspect MODEL.gguf`: what a model file from elsewhere holds, read on the host (no
//! device): its architecture and the config wgtrain maps it to, its tokenizer, its tensors by
//! type, and whether wgtrain can load every one of them (and if not, why).

use anyhow::Result;
use std::path::PathBuf;
use wgtrain::import::gguf::Gguf;
use wgtrain::import::llama::{check_tensors, config as llama_config};

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A GGUF file (llama.cpp's format).
    model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let g = Gguf::open(&args.model)?;
    let arch = g.architecture()?.to_string();
    // what loading would say: the config, then the tensors against it
    let config = llama_config(&g);
    let loadable = config
        .as_ref()
        .map_err(|e| e.to_string())
        .and_then(|c| check_tensors(&g, c).map_err(|e| e.to_string()));
    let mut types: Vec<(String, usize, u64)> = vec![];
    for t in &g.tensors {
        let name = t.ggml_type.name();
        match types.iter_mut().find(|(n, _, _)| *n == name) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.bytes;
            }
            None => types.push((name, 1, t.bytes)),
        }
    }
    let text = |k: &str| g.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let count = |k: &str| g.get(k).and_then(|v| v.as_array()).map(|a| a.len());
    let weights: u64 = g.tensors.iter().map(|t| t.numel()).sum();
    if args.json {
        let v = serde_json::json!({
            "file": args.model,
            "gguf_version": g.version,
            "architecture": arch,
            "name": text("general.name"),
            "weights": weights,
            "tensors": g.tensors.len(),
            "types": types.iter().map(|(n, c, b)| serde_json::json!({"type": n, "tensors": c, "bytes": b})).collect::<Vec<_>>(),
            // the model config wgtrain builds (a train config's "gpt" section)
            "config": config.as_ref().ok(),
            "tokenizer": {
                "model": text("tokenizer.ggml.model"),
                "pre": text("tokenizer.ggml.pre"),
                "tokens": count("tokenizer.ggml.tokens"),
                "merges": count("tokenizer.ggml.merges"),
                "chat_template": g.get("tokenizer.chat_template").is_some(),
            },
            "loadable": loadable.is_ok(),
            "why_not": loadable.as_ref().err(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: GGUF v{}, architecture {arch}{}",
        args.model.display(),
        g.version,
        text("general.name").map_or(String::new(), |n| format!(" ({n})"))
    );
    println!(
        "{} tensors, {weights} weights ({:.1} M)",
        g.tensors.len(),
        weights as f64 / 1e6
    );
    for (name, n, bytes) in &types {
        println!(
            "  {name:>6}: {n:>4} tensors, {:>10.2} MiB",
            *bytes as f64 / (1 << 20) as f64
        );
    }
    match &config {
        Ok(c) if c.family == wgtrain::nn::Family::Gpt2 => println!(
            "config: GPT-2, {} layers, d_model {}, {} heads, vocabulary {}, context {}, tied LM head",
            c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.block_size
        ),
        Ok(c) => {
            println!(
            "config: {} layers, d_model {}, {} heads ({} key/value heads, head size {}), SwiGLU \
             {}, vocabulary {}, context {}, RoPE base {} over {} dims, RMSNorm eps {:e}, {} \
             LM head",
            c.n_layer,
            c.n_embd,
            c.n_head,
            c.kv_heads(),
            c.head_dim(),
            c.ffn(),
            c.vocab_size,
            c.block_size,
            c.rope_base(),
            c.rope_dims(),
            c.eps(),
            if c.tied() { "tied" } else { "separate" }
        )
        }
        Err(e) => println!("config: {e}"),
    }
    println!(
        "tokenizer: {} (pre-tokenizer {}), {} tokens, {} merges{}",
        text("tokenizer.ggml.model").unwrap_or_else(|| "none".into()),
        text("tokenizer.ggml.pre").unwrap_or_else(|| "none".into()),
        count("tokenizer.ggml.tokens").unwrap_or(0),
        count("tokenizer.ggml.merges").unwrap_or(0),
        if g.get("tokenizer.chat_template").is_some() {
            ", a chat template"
        } else {
            ""
        }
    );
    match &loadable {
        Ok(()) => println!("wgtrain reads every tensor of it"),
        Err(e) => println!("wgtrain cannot load it: {e}"),
    }
    Ok(())
}
