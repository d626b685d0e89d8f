//! `wgtrain sample`, `wgtrain eval` and `wgtrain merge`: use a checkpoint (and a LoRA adapter).

use anyhow::{bail, Result};
use std::path::PathBuf;
use wgtrain::nn::Model;
use wgtrain::rng::Rng;
use wgtrain::train::adapter::Adapter;
use wgtrain::train::checkpoint::{self, Checkpoint, CheckpointMeta};
use wgtrain::train::eval::{evaluate, Whole};
use wgtrain::train::generate::{generate, Generation, Sampling};
use wgtrain::train::{load_model, load_task};
use wgtrain::Gpu;

/// The checkpoint's model, with the LoRA adapter in `lora` (a directory PEFT's files) applied
/// unmerged when given.
fn load_with_adapter(
    gpu: &Gpu,
    ckpt: &Checkpoint,
    lora: Option<&std::path::Path>,
) -> Result<(wgtrain::train::TrainConfig, Box<dyn Model>)> {
    let (config, mut model) = load_model(gpu, ckpt)?;
    if let Some(dir) = lora {
        Adapter::load(dir)?.apply(gpu, model.as_mut())?;
    }
    Ok((config, model))
}

#[derive(clap::Args)]
pub struct SampleArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// A LoRA adapter directory (adapter_model.safetensors, adapter_config.json) to run with
    /// the checkpoint, unmerged.
    #[arg(long)]
    lora: Option<PathBuf>,
    /// Text to continue (for an addition model, e.g. "12+34=").
    #[arg(long, default_value = "")]
    prompt: String,
    #[arg(long, default_value_t = 200)]
    tokens: usize,
    /// 0 samples greedily.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Keep the most likely tokens holding this much of the probability (1: all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn sample(adapter: Option<&str>, args: SampleArgs) -> Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be 0 or more");
    }
    let gpu = Gpu::new(adapter)?;
    let model = if wgtrain::quant::file::is_quantized(&args.checkpoint) {
        if args.lora.is_some() {
            bail!("--lora with a quantized model is not supported (merge first, then quantize)");
        }
        wgtrain::quant::file::read(&args.checkpoint)?
            .on_device(&gpu)?
            .1
    } else {
        let ckpt = Checkpoint::load(&args.checkpoint)?;
        load_with_adapter(&gpu, &ckpt, args.lora.as_deref())?.1
    };
    if model.context().is_none() {
        bail!(
            "{} holds an mlp classifier, which does not generate text; use `wgtrain eval`",
            args.checkpoint.display()
        );
    }
    let mut prompt: Vec<u32> = args.prompt.bytes().map(u32::from).collect();
    if prompt.is_empty() {
        // a byte-level model starts from a line break
        prompt.push(u32::from(b'\n'));
    }
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
    };
    let g = Generation {
        max_new: args.tokens,
        sampling,
        stop: vec![],
    };
    let mut rng = Rng::new(args.seed);
    let (out, _) = generate(&gpu, model.as_ref(), &prompt, &g, &mut rng, |_| Ok(()))?;
    let bytes: Vec<u8> = out.iter().map(|&t| t as u8).collect();
    println!("{}{}", args.prompt, String::from_utf8_lossy(&bytes));
    Ok(())
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A wgtrain checkpoint (or quantized model file).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    checkpoint: Option<PathBuf>,
    /// A model made elsewhere (a GGUF file or a Hugging Face directory): reports the perplexity
    /// of --data, a text file, under it.
    #[arg(long, requires = "data")]
    model: Option<PathBuf>,
    /// With --model: tokens per window (default: the model's context, at most 512).
    #[arg(long, requires = "model")]
    context: Option<usize>,
    /// With --model: windows per forward.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// A LoRA adapter directory (PEFT's format) to run with the model, unmerged.
    #[arg(long)]
    lora: Option<PathBuf>,
    /// Evaluate on other data than the checkpoint's (a text file for a text model).
    #[arg(long)]
    data: Option<String>,
}

pub fn eval(adapter: Option<&str>, args: EvalArgs) -> Result<()> {
    let Some(checkpoint) = args.checkpoint.clone() else {
        return eval_pretrained(adapter, &args);
    };
    if wgtrain::quant::file::is_quantized(&checkpoint) {
        return eval_quantized(adapter, &checkpoint, &args);
    }
    let ckpt = Checkpoint::load(&checkpoint)?;
    let gpu = Gpu::new(adapter)?;
    let (mut config, mut model) = load_with_adapter(&gpu, &ckpt, args.lora.as_deref())?;
    if let Some(d) = args.data {
        config.data = d;
        config.validate()?;
    }
    let task = load_task(&config)?;
    let r = finite(evaluate(&gpu, model.as_mut(), &mut Whole, &task, &config)?)?;
    println!(
        "{} (step {}, data {})",
        super::observe::describe(&r),
        ckpt.meta.step,
        config.data
    );
    Ok(())
}

/// `eval --model`: the perplexity of a text under a model made elsewhere, in windows of its
/// context.
fn eval_pretrained(adapter: Option<&str>, args: &EvalArgs) -> Result<()> {
    let (path, data) = (args.model.as_ref().unwrap(), args.data.as_ref().unwrap());
    let gpu = Gpu::new(adapter)?;
    let mut p = wgtrain::import::Pretrained::load(&wgtrain::nn::Build::new(&gpu), path)?;
    if let Some(dir) = &args.lora {
        Adapter::load(dir)?.apply(&gpu, &mut p.model)?;
    }
    let bytes = wgtrain::files::read_capped_gz(
        std::path::Path::new(data),
        wgtrain::data::text::text_cap(),
        "text to evaluate",
    )?;
    let text = String::from_utf8_lossy(&bytes);
    let ids = p.vocab.encode(&text)?;
    let context = args.context.unwrap_or(512).min(p.model.config.block_size);
    // the (B, T, V) logits are one storage binding: as many windows per forward as fit in one
    let window = (context * p.model.config.vocab_size * 4) as u64;
    let binding = gpu.limits().max_storage_buffer_binding_size;
    let batch = args.batch.min((binding / window).max(1) as usize);
    let start = std::time::Instant::now();
    let (loss, n) = wgtrain::train::eval::text_loss(&gpu, &p.model, &ids, context, batch)?;
    if !loss.is_finite() {
        bail!("the evaluation's loss is {loss}: the model's outputs are not finite");
    }
    println!(
        "perplexity {:.3} (mean loss {loss:.4} nats per token over {n} tokens of {data}, windows \
         of {context}; {:.1} s)",
        loss.exp(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `eval` of a quantized model: its linear layers run the dequantizing matmul on the codes.
fn eval_quantized(
    adapter: Option<&str>,
    checkpoint: &std::path::Path,
    args: &EvalArgs,
) -> Result<()> {
    if args.lora.is_some() {
        anyhow::bail!(
            "--lora with a quantized model is not supported (merge first, then quantize)"
        );
    }
    let q = wgtrain::quant::file::read(checkpoint)?;
    let gpu = Gpu::new(adapter)?;
    let (mut config, mut model) = q.on_device(&gpu)?;
    if let Some(d) = &args.data {
        config.data = d.clone();
        config.validate()?;
    }
    let task = load_task(&config)?;
    let r = finite(evaluate(&gpu, model.as_mut(), &mut Whole, &task, &config)?)?;
    println!(
        "{} (step {}, data {}; {} weights)",
        super::observe::describe(&r),
        q.step,
        config.data,
        q.scheme
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct MergeArgs {
    /// The base checkpoint the adapter was trained on.
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    checkpoint: Option<PathBuf>,
    /// The base model made elsewhere the adapter was trained on (a GGUF file or a Hugging
    /// Face directory); the merged model is written as a Hugging Face directory (--hf).
    #[arg(long, requires = "hf")]
    model: Option<PathBuf>,
    /// The LoRA adapter directory.
    #[arg(long)]
    lora: PathBuf,
    /// Where to write the merged checkpoint (a .safetensors file): never the base checkpoint
    /// or the adapter's files.
    #[arg(long, required_unless_present = "hf", conflicts_with = "hf")]
    out: Option<PathBuf>,
    /// With --model: the Hugging Face directory to write (config.json, f32 model.safetensors,
    /// the tokenizer and its chat template), which transformers' from_pretrained loads.
    #[arg(long, requires = "model")]
    hf: Option<PathBuf>,
    /// Replace a model file already at --out.
    #[arg(long)]
    overwrite: bool,
}

/// An evaluation whose loss is not finite is an error, never a result printed with exit 0 (the
/// files are checked when read; a model can still overflow in its forward).
fn finite(r: wgtrain::train::EvalResult) -> Result<wgtrain::train::EvalResult> {
    if !r.loss.is_finite() {
        anyhow::bail!(
            "the evaluation's loss is {}: the model's outputs are not finite",
            r.loss
        );
    }
    Ok(r)
}

pub fn merge(adapter: Option<&str>, args: MergeArgs) -> Result<()> {
    let (Some(checkpoint), Some(out)) = (&args.checkpoint, &args.out) else {
        return merge_pretrained(adapter, &args);
    };
    let ckpt = Checkpoint::load(checkpoint)?;
    let weights = args.lora.join(wgtrain::train::adapter::WEIGHTS_FILE);
    let config_file = args.lora.join(wgtrain::train::adapter::CONFIG_FILE);
    let inputs: Vec<&std::path::Path> = [checkpoint, &weights, &config_file]
        .into_iter()
        .map(|p| p.as_path())
        .chain(ckpt.parts.iter().map(|p| p.as_path()))
        .collect();
    wgtrain::files::claim_output(out, &inputs, args.overwrite, "the merged checkpoint")?;
    let gpu = Gpu::new(adapter)?;
    let (mut config, mut model) = load_with_adapter(&gpu, &ckpt, Some(&args.lora))?;
    model.fold_lora(&gpu, true)?;
    // the merged model is a plain one: its weights without the adapters, its config without lora
    config.lora = None;
    config.init = None;
    let params: Vec<_> = model
        .params()
        .into_iter()
        .filter(|p| !p.name.contains(".lora_"))
        .collect();
    let meta = CheckpointMeta {
        config: serde_json::to_string(&config)?,
        ..ckpt.meta.clone()
    };
    checkpoint::save(&gpu, out, &params, &[], &meta)?;
    eprintln!(
        "merged {} into {}: {}",
        args.lora.display(),
        checkpoint.display(),
        out.display()
    );
    Ok(())
}

/// `merge --model BASE --lora DIR --hf OUT`: the base made elsewhere with the adapter folded
/// in (W + scale·B·A, in f32), as a Hugging Face directory with the base's tokenizer.
fn merge_pretrained(adapter: Option<&str>, args: &MergeArgs) -> Result<()> {
    let (base, dir) = (args.model.as_ref().unwrap(), args.hf.as_ref().unwrap());
    let weights = dir.join("model.safetensors");
    let base_weights = base.join("model.safetensors");
    let inputs: Vec<&std::path::Path> = vec![base.as_path(), args.lora.as_path(), &base_weights];
    wgtrain::files::claim_output(
        &weights,
        &inputs,
        args.overwrite,
        "the merged model's weights",
    )?;
    let gpu = Gpu::new(adapter)?;
    let mut p = wgtrain::import::Pretrained::load(&wgtrain::nn::Build::new(&gpu), base)?;
    Adapter::load(&args.lora)?.apply(&gpu, &mut p.model)?;
    Model::fold_lora(&mut p.model, &gpu, true)?;
    let params: Vec<_> = Model::params(&p.model)
        .into_iter()
        .filter(|q| !q.name.contains(".lora_"))
        .collect();
    wgtrain::import::hf::save(&gpu, &p.model.config, &params, dir)?;
    p.vocab.save(dir)?;
    eprintln!(
        "merged {} into {}: {} (config.json, model.safetensors, tokenizer.json, \
         tokenizer_config.json)",
        args.lora.display(),
        base.display(),
        dir.display()
    );
    Ok(())
}
