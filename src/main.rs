//! The `wgtrain` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "wgtrain",
    version,
    about = "A portable GPU trainer: every kernel a WGSL compute shader"
)]
struct Args {
    /// Adapter to use: an index from `wgtrain info` or a case-insensitive name substring.
    #[arg(long, global = true, env = "WGTRAIN_ADAPTER")]
    adapter: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter, the one wgtrain would choose, its features and key limits.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Train a model (default: a small GPT learning addition).
    Train(cli::train::TrainArgs),
    /// Fine-tune a model (--model: a GGUF file, a Hugging Face directory or a checkpoint) on
    /// --data (a directory of train.jsonl and valid.jsonl) with LoRA adapters (--full: every
    /// weight); every train option applies. Writes a PEFT adapter into --out.
    Finetune(cli::train::TrainArgs),
    /// Measure matmul GFLOP/s and training-step times on fixed workloads.
    Bench(cli::bench::BenchArgs),
    /// Minimise a full-batch problem with Newton or quasi-Newton methods.
    Optimize(cli::optimize::OptimizeArgs),
    /// Predict peak memory per category for a training configuration, without allocating.
    Plan(cli::plan::PlanArgs),
    /// Generate text from a model made elsewhere (GGUF or Hugging Face), streamed, with a KV
    /// cache; --chat applies its chat template.
    Generate(cli::generate::GenerateArgs),
    /// Generate text from a GPT checkpoint.
    Sample(cli::sample::SampleArgs),
    /// Evaluate a checkpoint.
    Eval(cli::sample::EvalArgs),
    /// Fold a LoRA adapter into its base model: a full checkpoint with W + scale·B·A.
    Merge(cli::sample::MergeArgs),
    /// Write a checkpoint as one safetensors file (a sharded one's parts consolidated).
    Export(cli::export::ExportArgs),
    /// Quantize a checkpoint's linear weights (int8, int4, nf4, kashin) for inference.
    Quantize(cli::quantize::QuantizeArgs),
    /// Chart the loss curves of one or more metrics files (overlaid) as SVG.
    Plot(cli::plot::PlotArgs),
    /// Describe a model file from elsewhere (GGUF): its config, tokenizer, tensors and whether
    /// wgtrain can load it.
    Inspect(cli::inspect::InspectArgs),
}

/// Mesa's Vulkan and GL loaders print "error: XDG_RUNTIME_DIR is invalid or not set" before
/// every command on a headless machine without one, which reads like wgtrain's own errors. When
/// it is unset or not a directory, point it at a private directory of ours before any instance
/// exists (here, while the process has one thread, so setting the environment is sound).
#[cfg(unix)]
fn ensure_runtime_dir() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let valid =
        std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir());
    if valid {
        return;
    }
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    let dir = std::env::temp_dir().join(format!("wgtrain-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    // only ours, and private, as the XDG spec asks of a runtime directory
    let ours = std::fs::metadata(&dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
    if ours {
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

#[cfg(not(unix))]
fn ensure_runtime_dir() {}

fn main() {
    ensure_runtime_dir();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,wgpu_hal::gles=off"),
    )
    .init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Info { json } => cli::info::run(args.adapter.as_deref(), json),
        Command::Train(t) => cli::train::run(args.adapter.as_deref(), t),
        Command::Finetune(mut t) => {
            t.finetune = true;
            cli::train::run(args.adapter.as_deref(), t)
        }
        Command::Plan(p) => cli::plan::run(args.adapter.as_deref(), p),
        Command::Optimize(o) => cli::optimize::run(args.adapter.as_deref(), o),
        Command::Bench(b) => cli::bench::run(args.adapter.as_deref(), b),
        Command::Generate(g) => cli::generate::run(args.adapter.as_deref(), g),
        Command::Sample(s) => cli::sample::sample(args.adapter.as_deref(), s),
        Command::Eval(e) => cli::sample::eval(args.adapter.as_deref(), e),
        Command::Merge(m) => cli::sample::merge(args.adapter.as_deref(), m),
        Command::Plot(p) => cli::plot::run(p),
        Command::Quantize(q) => cli::quantize::run(args.adapter.as_deref(), q),
        Command::Export(e) => cli::export::run(args.adapter.as_deref(), e),
        Command::Inspect(i) => cli::inspect::run(i),
    }
}
