//! `wgtrain export`: a checkpoint as one safetensors file, whatever layout wrote it (a
//! sharded checkpoint's index and parts consolidated on the host, streaming), or with `--hf` as
//! a Hugging Face model directory (config.json and weights-only model.safetensors).

use anyhow::Result;
use std::path::PathBuf;
use wgtrain::train::checkpoint::{self, Checkpoint};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The checkpoint: one file, or a sharded checkpoint's index (the file its run wrote under
    /// the checkpoint's name, beside its `.stepN.partIofN` parts).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Where to write the one-file checkpoint (.safetensors); never the checkpoint itself or
    /// one of its parts.
    #[arg(long, required_unless_present = "hf", conflicts_with = "hf")]
    out: Option<PathBuf>,
    /// Write a Hugging Face model directory here instead (GPT models: GPT2LMHeadModel or
    /// LlamaForCausalLM, f32 weights, no optimizer state), which `from_pretrained` loads.
    #[arg(long)]
    hf: Option<PathBuf>,
    /// Replace a model file already at --out.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(adapter: Option<&str>, args: ExportArgs) -> Result<()> {
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let Some(out) = args.out.clone() else {
        return export_hf(adapter, &ckpt, args.hf.as_deref().unwrap(), args.overwrite);
    };
    let inputs: Vec<&std::path::Path> = std::iter::once(args.checkpoint.as_path())
        .chain(ckpt.parts.iter().map(|p| p.as_path()))
        .collect();
    wgtrain::files::claim_output(&out, &inputs, args.overwrite, "the checkpoint")?;
    let parts = ckpt.parts.len();
    drop(ckpt);
    let bytes = checkpoint::export(&args.checkpoint, &out)?;
    eprintln!(
        "exported {} ({}) to {}: {bytes} bytes",
        args.checkpoint.display(),
        match parts {
            0 => "one file".to_string(),
            n => format!("{n} parts"),
        },
        out.display()
    );
    Ok(())
}

/// `export --hf DIR`: the checkpoint's GPT as a Hugging Face directory.
fn export_hf(
    adapter: Option<&str>,
    ckpt: &Checkpoint,
    dir: &std::path::Path,
    overwrite: bool,
) -> Result<()> {
    let config = ckpt.config()?;
    if config.model != wgtrain::train::ModelKind::Gpt {
        anyhow::bail!(
            "--hf writes GPT models (GPT-2 or Llama family); this checkpoint holds an mlp"
        );
    }
    if config.lora.is_some() {
        anyhow::bail!("the checkpoint's model has LoRA adapters: merge them first (wgtrain merge)");
    }
    let weights = dir.join("model.safetensors");
    let inputs: Vec<&std::path::Path> = std::iter::once(ckpt.path.as_path())
        .chain(ckpt.parts.iter().map(|p| p.as_path()))
        .collect();
    wgtrain::files::claim_output(&weights, &inputs, overwrite, "the model's weights")?;
    let gpu = wgtrain::Gpu::new(adapter)?;
    let (config, model) = wgtrain::train::load_model(&gpu, ckpt)?;
    wgtrain::import::hf::save(&gpu, &config.gpt, &model.params(), dir)?;
    eprintln!(
        "exported {} ({}) to {} (config.json, model.safetensors)",
        ckpt.path.display(),
        model.describe(),
        dir.display()
    );
    Ok(())
}
