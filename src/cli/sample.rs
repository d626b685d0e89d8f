//! `wgtrain sample` and `wgtrain eval`: use a checkpoint.

use anyhow::{bail, Result};
use std::path::PathBuf;
use wgtrain::rng::Rng;
use wgtrain::train::checkpoint::Checkpoint;
use wgtrain::train::eval::{evaluate, generate};
use wgtrain::train::{load_model, load_task};
use wgtrain::Gpu;

#[derive(clap::Args)]
pub struct SampleArgs {
    #[arg(long)]
    checkpoint: PathBuf,
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
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn sample(adapter: Option<&str>, args: SampleArgs) -> Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be 0 or more");
    }
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let gpu = Gpu::new(adapter)?;
    let (_, model) = load_model(&gpu, &ckpt)?;
    if model.context().is_none() {
        bail!(
            "{} holds an mlp classifier, which does not generate text; use `wgtrain eval`",
            args.checkpoint.display()
        );
    }
    let prompt: Vec<u32> = args.prompt.bytes().map(u32::from).collect();
    let mut rng = Rng::new(args.seed);
    let out = generate(
        &gpu,
        model.as_ref(),
        &prompt,
        args.tokens,
        args.temperature,
        args.top_k,
        &mut rng,
    )?;
    let bytes: Vec<u8> = out.iter().map(|&t| t as u8).collect();
    println!("{}{}", args.prompt, String::from_utf8_lossy(&bytes));
    Ok(())
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Evaluate on other data than the checkpoint's (a text file for a text model).
    #[arg(long)]
    data: Option<String>,
}

pub fn eval(adapter: Option<&str>, args: EvalArgs) -> Result<()> {
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let gpu = Gpu::new(adapter)?;
    let (mut config, model) = load_model(&gpu, &ckpt)?;
    if let Some(d) = args.data {
        config.data = d;
        config.validate()?;
    }
    let task = load_task(&config)?;
    let r = evaluate(&gpu, model.as_ref(), &task, &config)?;
    println!(
        "{} (step {}, data {})",
        super::train::describe(&r),
        ckpt.meta.step,
        config.data
    );
    Ok(())
}
