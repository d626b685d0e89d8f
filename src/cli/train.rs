//! `wgtrain train`: trains a model on embedded data or a text file.

use super::observe::{describe, end_json, RunObserver};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wgtrain::gpu::Category;
use wgtrain::nn::lora::LoraConfig;
use wgtrain::optim::schedule::{Scaling, Warmup};
use wgtrain::optim::OptimizerName;
use wgtrain::train::checkpoint::Checkpoint;
use wgtrain::train::eval::{addition_answers, Whole};
use wgtrain::train::metrics::Metrics;
use wgtrain::train::{Local, ModelKind, Task, TrainConfig, Trainer, CHECKPOINT_FILE};
use wgtrain::Gpu;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// JSON config (see assets/configs/); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// mlp | gpt, or a model to fine-tune: a GGUF file or a Hugging Face directory (as
    /// --init).
    #[arg(long)]
    model: Option<String>,
    /// digits | addition | a text file | a fine-tuning directory (train.jsonl, valid.jsonl:
    /// {"text"}, {"prompt", "completion"} or {"messages"} a line; needs a --model with a
    /// tokenizer)
    #[arg(long)]
    data: Option<String>,
    /// Total optimizer steps (a resumed run continues up to this many).
    #[arg(long)]
    steps: Option<u64>,
    /// Train for this many epochs instead of --steps (steps = epochs x training samples /
    /// batch size: a larger batch takes fewer steps).
    #[arg(long, conflicts_with = "steps")]
    epochs: Option<f64>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Samples run at once; gradients accumulate to --batch-size.
    #[arg(long)]
    micro_batch_size: Option<usize>,
    /// Gradient checkpointing (activation recomputation) of the GPT's blocks:
    /// none | all | every:K | sqrt
    #[arg(long)]
    recompute: Option<String>,
    /// Freeze these parameters (comma-separated names or prefixes ending in *, e.g.
    /// "wte,wpe,h.0.*"): no gradient, no optimizer state.
    #[arg(long)]
    freeze: Option<String>,
    #[arg(long)]
    lr: Option<f32>,
    /// Training precision: fp32 | fp16 | bf16 (mixed precision: half weights, activations and
    /// gradients over fp32 master weights and optimizer state; fp16 with dynamic loss scaling).
    #[arg(long)]
    precision: Option<String>,
    /// Dynamic loss scaling: on | off (default: on for fp16, off for bf16).
    #[arg(long)]
    loss_scaling: Option<String>,
    /// Scale --lr from --base-batch-size to --batch-size: none | linear | sqrt.
    #[arg(long)]
    lr_scaling: Option<String>,
    /// The batch size --lr was tuned at (for --lr-scaling).
    #[arg(long)]
    base_batch_size: Option<usize>,
    /// Learning-rate warmup: none | constant (a small lr, then the target) | gradual (linear
    /// ramp).
    #[arg(long)]
    warmup: Option<String>,
    /// Warmup length in steps.
    #[arg(long, conflicts_with = "warmup_epochs")]
    warmup_steps: Option<u64>,
    /// Warmup length in epochs (rounded up to whole steps).
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// The constant warmup's lr as a fraction of the target (Goyal et al.'s: 1/k for a k-times
    /// larger batch, the base batch's lr).
    #[arg(long)]
    warmup_lr_ratio: Option<f32>,
    /// Evaluate every this many steps (0: only at the end).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Read the loss back and log it every this many steps.
    #[arg(long)]
    log_every: Option<u64>,
    /// Validation windows a text evaluation averages over (default 64; the same ones each time).
    #[arg(long)]
    eval_windows: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for checkpoints.
    #[arg(long)]
    out: Option<String>,
    /// Write metrics as JSON Lines to this file.
    #[arg(long)]
    metrics: Option<String>,
    /// At the end, chart the run's training and eval loss over steps (.svg; with --metrics,
    /// the file's whole history, a resumed run's included).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Optimizer: sgd | momentum | nesterov | rmsprop | adam | adamw | lion | nag-gs | adam8bit
    /// (that method's defaults; for the digits MLP, the values tuned in
    /// assets/configs/optimizers/NAME.json).
    #[arg(long)]
    optimizer: Option<String>,
    /// Choose the largest micro-batch and lightest checkpoint policy whose predicted peak fits
    /// (e.g. 512MiB).
    #[arg(long)]
    max_memory: Option<String>,
    /// Continue from a checkpoint (its config is the base unless --config is given; flags still
    /// override). The run continues up to --steps.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start from this checkpoint's weights (a fine-tune: its config gives the model shape
    /// unless --config is given; step, optimizer and data start fresh).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// LoRA rank: train low-rank adapters on the frozen model (written to --out in PEFT's
    /// format).
    #[arg(long)]
    lora_r: Option<usize>,
    /// LoRA alpha (scale alpha / r); default 16.
    #[arg(long)]
    lora_alpha: Option<f32>,
    /// Layers that get adapters, comma-separated module names as PEFT's target_modules
    /// ("q_proj,v_proj", GPT-2's "c_attn"; wgtrain's attn.qkv, attn.proj, mlp.fc, mlp.proj) or
    /// all-linear (default: a Llama's q_proj,v_proj; a GPT-2's attn.qkv,attn.proj).
    #[arg(long)]
    lora_targets: Option<String>,
    /// Modules trained in full beside the adapters, comma-separated (PEFT's modules_to_save:
    /// "lm_head", "embed_tokens"); saved whole in the adapter file.
    #[arg(long)]
    lora_modules_to_save: Option<String>,
    /// Dropout on the LoRA adapters' input (default 0).
    #[arg(long)]
    lora_dropout: Option<f32>,
    /// Scale adapters by alpha/√r (rsLoRA) instead of alpha/r.
    #[arg(long)]
    rslora: bool,
    /// finetune: train every weight instead of LoRA adapters.
    #[arg(long)]
    full: bool,
    /// QLoRA: keep the frozen base quantized on the device (NF4 in blocks of 64; a GGUF
    /// base's own blocks as the file stores them) under the LoRA adapters.
    #[arg(long)]
    qlora: bool,
    /// Fine-tuning: the longest sequence trained, in tokens (the model's context is cut to it;
    /// finetune's default 512).
    #[arg(long)]
    max_length: Option<usize>,
    /// Fine-tuning data: the loss learns every token, prompts and user turns too (default: the
    /// completions and assistant turns only).
    #[arg(long)]
    train_on_prompts: bool,
    /// Set by `wgtrain finetune`: LoRA by default, --model required.
    #[arg(skip)]
    pub finetune: bool,
    /// Data parallel (DDP) over several devices: N (N devices on the chosen adapter), all (one
    /// per adapter) or a comma list of adapter selectors ("0,1"). batch_size is global.
    #[arg(long)]
    pub devices: Option<String>,
    /// With --devices: ddp (every rank all-reduces the gradients and updates its replica; the
    /// default) or dp (rank 0 is a parameter server: it gathers the gradients, updates, and
    /// sends the weights back).
    #[arg(long)]
    pub parallel: Option<String>,
    /// DDP gradient bucket size in MiB after the first 1 MiB bucket (default 25).
    #[arg(long)]
    bucket_mb: Option<f64>,
    /// With --devices: ZeRO stage 1 shards the optimizer state over the ranks, stage 2 the
    /// gradients too, stage 3 the parameters too.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=3))]
    pub zero: u8,
    /// Pipeline parallel: the GPT's blocks split into P stages, one per device (P devices on
    /// the chosen adapter, or the --devices list, one stage each; --devices P×R makes each
    /// stage R data-parallel replicas); each replica runs its rows of the batch as micro-batches
    /// of micro_batch_size (0: P of them).
    #[arg(long)]
    pub pipeline: Option<usize>,
    /// With --pipeline: naive (one micro-batch at a time), gpipe (all forwards, then all
    /// backwards) or 1f1b (PipeDream-flush; the default).
    #[arg(long)]
    pub schedule: Option<String>,
    /// With --pipeline: params (the largest stage by parameters as small as it can be; the
    /// default) or balanced (by one block's, the embeddings' and the head's forward and
    /// backward time, measured on the first device before the run).
    #[arg(long)]
    pub partition: Option<String>,
    /// With --pipeline: write every stage's forwards and backwards as Chrome trace-event JSON
    /// (Perfetto, chrome://tracing).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// With --pipeline: draw the last step's timeline (stages as rows, micro-batches as
    /// numbered boxes) as an SVG.
    #[arg(long)]
    pub trace_svg: Option<PathBuf>,
    /// Replace a checkpoint of another run in --out (without it, such a run refuses to start).
    #[arg(long)]
    pub overwrite: bool,
}

fn parse_model(s: &str) -> Result<ModelKind> {
    match s {
        "mlp" => Ok(ModelKind::Mlp),
        "gpt" => Ok(ModelKind::Gpt),
        _ => bail!("--model must be mlp or gpt, not {s:?}"),
    }
}

/// The config a run uses: the file's, else the checkpoint's, else the preset for the model and
/// data; then the flags.
pub fn resolve_config(args: &TrainArgs, ckpt: Option<&Checkpoint>) -> Result<TrainConfig> {
    // --model names a model kind, or a model to start from (as --init)
    let model_kind = args
        .model
        .as_deref()
        .filter(|m| matches!(*m, "mlp" | "gpt"));
    let init_path: Option<PathBuf> = match (&args.init, &args.model) {
        (Some(_), Some(m)) if model_kind.is_none() => {
            bail!("--model {m} names a model to start from, and so does --init: give one")
        }
        (Some(p), _) => Some(p.clone()),
        (None, Some(m)) if model_kind.is_none() => {
            // a model file from elsewhere, or a wgtrain checkpoint (a file Checkpoint::load
            // checks)
            let p = PathBuf::from(m);
            if !wgtrain::import::is_model(&p) && !p.is_file() {
                bail!(
                    "--model takes mlp, gpt, or a model to fine-tune (a GGUF file, a Hugging \
                     Face directory with config.json, or a checkpoint); {m:?} is none of these"
                );
            }
            Some(p)
        }
        _ => None,
    };
    // (a resumed fine-tune has its base in the checkpoint's config)
    if args.finetune && init_path.is_none() && ckpt.is_none() && args.config.is_none() {
        bail!("finetune needs --model: a GGUF file or a Hugging Face directory (or a checkpoint)");
    }
    let foreign = init_path
        .as_deref()
        .filter(|p| wgtrain::import::is_model(p));
    let init = match (&init_path, foreign) {
        (Some(p), None) => Some(Checkpoint::load(p)?),
        _ => None,
    };
    let mut config = if let Some(path) = &args.config {
        TrainConfig::load(path)?
    } else if let Some(ckpt) = ckpt {
        ckpt.config()?
    } else if let Some(path) = foreign {
        let Some(data) = &args.data else {
            bail!(
                "fine-tuning {} needs --data: a directory with train.jsonl (and valid.jsonl)",
                path.display()
            );
        };
        let gpt = wgtrain::import::model_config(path)?;
        let lora = args.finetune && !args.full;
        TrainConfig::fine_tune(gpt, &path.display().to_string(), data, lora)
    } else if let Some(base) = &init {
        // the base's model shape; a fine-tune starts its own run
        let mut c = base.config()?;
        c.out = None;
        c.metrics = None;
        if args.finetune && !args.full && c.lora.is_none() {
            c.lora = Some(LoraConfig::for_family(c.gpt.family));
        }
        c
    } else {
        let model = model_kind
            .map(parse_model)
            .transpose()?
            .unwrap_or(ModelKind::Gpt);
        let default_data = if model == ModelKind::Mlp {
            "digits"
        } else {
            "addition"
        };
        TrainConfig::preset(model, args.data.as_deref().unwrap_or(default_data))
    };
    if let Some(m) = model_kind {
        config.model = parse_model(m)?;
    }
    if let Some(n) = args.max_length {
        if n == 0 {
            bail!("--max-length must be at least 1");
        }
        let file = foreign.map(wgtrain::import::model_config).transpose()?;
        if let Some(limit) = file.map(|c| c.block_size).filter(|&l| n > l) {
            bail!("--max-length {n} is longer than the model's context, {limit} tokens");
        }
        config.gpt.block_size = n;
    }
    if args.train_on_prompts {
        config.train_on_prompts = true;
    }
    // The optimizer's tuned values first, so that --lr and the other flags still win.
    if let Some(name) = &args.optimizer {
        config = config.with_optimizer(OptimizerName::parse(name)?)?;
    }
    if let Some(d) = &args.data {
        config.data = d.clone();
    }
    if let Some(s) = args.steps {
        config.steps = s;
    }
    if let Some(b) = args.batch_size {
        config.batch_size = b;
    }
    if let Some(m) = args.micro_batch_size {
        config.micro_batch_size = m;
    }
    if let Some(c) = &args.recompute {
        config.recompute = wgtrain::nn::Recompute::parse(c).map_err(anyhow::Error::msg)?;
    }
    if let Some(f) = &args.freeze {
        config.freeze = f
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    if let Some(lr) = args.lr {
        config.lr = lr;
    }
    if let Some(p) = &args.precision {
        config.precision = wgtrain::train::config::Precision::parse(p)?;
    }
    if let Some(s) = &args.loss_scaling {
        config.loss_scaling = Some(match s.as_str() {
            "on" => true,
            "off" => false,
            _ => anyhow::bail!("--loss-scaling takes on or off, not {s:?}"),
        });
    }
    let schedule = &mut config.schedule;
    if let Some(s) = &args.lr_scaling {
        schedule.scaling = Scaling::parse(s).map_err(anyhow::Error::msg)?;
    }
    if let Some(b) = args.base_batch_size {
        schedule.base_batch_size = b;
    }
    if let Some(w) = &args.warmup {
        schedule.warmup = Warmup::parse(w).map_err(anyhow::Error::msg)?;
    }
    if let Some(w) = args.warmup_steps {
        schedule.warmup_steps = w;
    }
    if let Some(r) = args.warmup_lr_ratio {
        schedule.warmup_lr_ratio = r;
    }
    // epochs last: they count steps at the final batch size
    if let Some(e) = args.epochs {
        config.steps = config.steps_for_epochs(e)?;
    }
    if let Some(e) = args.warmup_epochs {
        config.schedule.warmup_steps = config.steps_for_epochs(e)?;
    }
    if let Some(e) = args.eval_every {
        config.eval_every = e;
    }
    if let Some(l) = args.log_every {
        config.log_every = l;
    }
    if let Some(w) = args.eval_windows {
        config.eval_windows = w;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    if let Some(o) = &args.out {
        config.out = Some(o.clone());
    }
    if let Some(m) = &args.metrics {
        config.metrics = Some(m.clone());
    }
    if let Some(p) = &init_path {
        // a model file by its absolute path: a resume or an adapter finds it from anywhere
        let p = match foreign {
            Some(f) => std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf()),
            None => p.clone(),
        };
        config.init = Some(p.display().to_string());
    }
    if args.qlora {
        if args.full {
            bail!("--qlora trains LoRA adapters over a quantized base; --full trains every weight");
        }
        config.qlora = Some(config.qlora.clone().unwrap_or_default());
        // QLoRA is LoRA over the quantized base
        if config.lora.is_none() {
            config.lora = Some(LoraConfig::for_family(config.gpt.family));
        }
    }
    if args.full && args.finetune {
        config.lora = None;
    }
    let lora_flags = args.lora_r.is_some()
        || args.lora_alpha.is_some()
        || args.lora_targets.is_some()
        || args.lora_dropout.is_some()
        || args.lora_modules_to_save.is_some()
        || args.rslora;
    if lora_flags && args.full {
        bail!("--full trains every weight: it takes no --lora-* flag");
    }
    if lora_flags {
        let mut lora = config
            .lora
            .clone()
            .unwrap_or_else(|| LoraConfig::for_family(config.gpt.family));
        if let Some(r) = args.lora_r {
            lora.r = r;
        }
        if let Some(a) = args.lora_alpha {
            lora.alpha = a;
        }
        if let Some(t) = &args.lora_targets {
            lora.targets = t.split(',').map(|s| s.trim().to_string()).collect();
        }
        if let Some(d) = args.lora_dropout {
            lora.dropout = d;
        }
        if let Some(m) = &args.lora_modules_to_save {
            lora.modules_to_save = m.split(',').map(|s| s.trim().to_string()).collect();
        }
        if args.rslora {
            lora.rslora = true;
        }
        config.lora = Some(lora);
    }
    Ok(config)
}

/// The --max-memory budget in bytes, if given.
fn budget(args: &TrainArgs) -> Result<Option<u64>> {
    args.max_memory
        .as_deref()
        .map(|s| wgtrain::memory::parse_size(s).map_err(anyhow::Error::msg))
        .transpose()
}

/// With --max-memory: the largest micro-batch and lightest recompute policy that fit on `gpu`,
/// or an error saying what the smallest configuration needs.
pub fn apply_max_memory(gpu: &Gpu, args: &TrainArgs, config: TrainConfig) -> Result<TrainConfig> {
    max_memory_search(args, config, &|c| {
        wgtrain::memory::plan(gpu, c).map(|p| p.total)
    })
}

/// `--max-memory`: the largest micro-batch and lightest recompute whose predicted peak (`peak`:
/// the largest rank's or stage's under a parallel run) fits the budget; the config as it is
/// without the flag.
pub fn max_memory_search(
    args: &TrainArgs,
    config: TrainConfig,
    peak: &dyn Fn(&TrainConfig) -> wgtrain::Result<u64>,
) -> Result<TrainConfig> {
    let Some(size) = &args.max_memory else {
        return Ok(config);
    };
    let budget = wgtrain::memory::parse_size(size).map_err(anyhow::Error::msg)?;
    let chosen = wgtrain::memory::fit_with(&config, budget, peak).map_err(anyhow::Error::msg)?;
    eprintln!(
        "--max-memory {size}: micro-batch {} (x{}), recompute {}: predicted peak {} bytes",
        chosen.micro_batch(),
        chosen.accumulation(),
        chosen.recompute.name(),
        peak(&chosen)?
    );
    Ok(chosen)
}

/// The largest of several devices' predicted peaks.
pub fn largest(plans: wgtrain::Result<Vec<wgtrain::gpu::MemoryStats>>) -> wgtrain::Result<u64> {
    Ok(plans?.iter().map(|m| m.peak_total).max().unwrap_or(0))
}

/// Claims the output directory for the run `run` before any training time is spent (see
/// `OutDir::claim`: the lock, stale temporary files, another run's checkpoint); resuming the
/// checkpoint that is there is allowed whatever its run id.
fn claim_out_dir(
    dir: &Path,
    run: &str,
    args: &TrainArgs,
) -> Result<wgtrain::train::outdir::OutDir> {
    let target = dir.join(CHECKPOINT_FILE);
    let same_file = match (&args.resume, target.canonicalize()) {
        (Some(r), Ok(t)) => r.canonicalize().is_ok_and(|r| r == t),
        _ => false,
    };
    let claimed = wgtrain::train::outdir::OutDir::claim(
        dir,
        CHECKPOINT_FILE,
        run,
        args.overwrite || same_file,
    )
    .with_context(|| format!("cannot write to the output directory {}", dir.display()))?;
    if claimed.removed_temporaries > 0 {
        eprintln!(
            "{}: removed {} temporary file(s) a killed run left",
            dir.display(),
            claimed.removed_temporaries
        );
    }
    Ok(claimed)
}

/// The devices `--devices` names, one per rank.
pub fn open_devices(adapter: Option<&str>, spec: &str) -> Result<Vec<Gpu>> {
    Ok(match spec {
        "all" => Gpu::open_all()?,
        "mpi" => bail!(
            "--devices mpi runs one rank per process under mpirun (`wgtrain train`); to plan N \
             ranks here, give --devices N"
        ),
        s if s.contains(',') => s
            .split(',')
            .map(|sel| Gpu::new(Some(sel.trim())))
            .collect::<std::result::Result<_, _>>()?,
        s => {
            let n: usize =
                s.parse().ok().filter(|&n| n >= 1).with_context(|| {
                    format!("--devices {s:?}: expected N, all, or a list like 0,1")
                })?;
            Gpu::open_n(adapter, n)?
        }
    })
}

/// `train --devices mpi` under mpirun: this process is one rank of MPI's world, on the adapter
/// its local rank picks (the n-th adapter for local rank n, wrapping; --adapter or
/// WGTRAIN_ADAPTER overrides). Rank 0 writes the checkpoint, the metrics and the summary.
#[cfg(feature = "mpi")]
fn run_mpi(
    adapter: Option<&str>,
    args: &TrainArgs,
    config: TrainConfig,
    run: String,
) -> Result<()> {
    use wgtrain::parallel::Collective;
    let (mut universe, _threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)
        .context("MPI would not initialise (is this run under mpirun?)")?;
    let comm = wgtrain::parallel::mpi::Mpi::new(universe.world())?;
    let (rank, n) = (comm.rank(), comm.size());
    if let Some(p) = args.pipeline {
        return run_mpi_pipeline(adapter, args, config, run, (&mut universe, comm), p);
    }
    let gpu = mpi_device(adapter, rank)?;
    let options = run_options(args, &run)?;
    // (every rank searches alike: the same config and the same plan of the largest rank)
    let config = max_memory_search(args, config, &|c| {
        largest(
            (0..n)
                .map(|r| wgtrain::parallel::ddp::plan_rank(&gpu, c, &options, n, r))
                .collect(),
        )
    })?;
    let plan = wgtrain::parallel::ddp::plan_rank(&gpu, &config, &options, n, rank)?;
    let what = format!("rank {rank}'s planned peak");
    wgtrain::memory::check_fits(
        &gpu,
        &what,
        plan.peak_total,
        budget(args)?,
        wgtrain::memory::SMALLER_RUN,
    )?;
    // rank 0 alone owns the output directory and the metrics file
    let out_dir = config.out.as_ref().map(PathBuf::from).filter(|_| rank == 0);
    let _claimed = out_dir
        .as_deref()
        .map(|d| claim_out_dir(d, &run, args))
        .transpose()?;
    // rank 0 writes the run's metrics; another rank its own figures beside them (FILE.rankR.jsonl)
    let metrics_path = config.metrics.as_deref().map(|m| match rank {
        0 => PathBuf::from(m),
        r => Path::new(m).with_extension(format!("rank{r}.jsonl")),
    });
    let metrics = Metrics::create(metrics_path.as_deref(), args.resume.is_some())?;
    eprintln!(
        "rank {rank} of {n} (MPI): {} ({:?})",
        gpu.info().name,
        gpu.info().backend
    );
    if rank == 0 {
        eprintln!(
            "{} over {n} MPI ranks{}: global batch {} ({} per rank), up to step {}",
            options.mode.name(),
            zero_label(args.zero),
            config.batch_size,
            config.batch_size / n.max(1),
            config.steps
        );
    }
    let observer = RunObserver::new(
        metrics,
        config.steps,
        ckpt_step(args),
        config.model == ModelKind::Gpt,
    );
    let started = Instant::now();
    let r = wgtrain::parallel::ddp::train_rank(&gpu, &comm, &config, &options, &observer);
    let (mut metrics, checkpoint) = observer.finish();
    let r = r?;
    let wall_s = started.elapsed().as_secs_f64();
    let m = &r.memory[0];
    eprintln!(
        "rank {rank}: peak {:.2} MiB, {:.2} MiB through the collectives in {:.0} ms",
        m.peak_total as f64 / (1 << 20) as f64,
        r.comm_bytes[0] as f64 / (1 << 20) as f64,
        r.comm_ms[0]
    );
    let mut end = end_json(config.steps, &r.eval, wall_s, r.losses.last().copied(), m);
    for (k, v) in [
        ("rank", json!(rank)),
        ("ranks", json!(n)),
        ("mode", json!(options.mode.name())),
        ("zero", json!(options.zero)),
        ("mpi", json!(true)),
        ("comm_bytes", json!(r.comm_bytes[0])),
        ("comm_ms", json!(r.comm_ms[0])),
        ("peak_bytes", json!(m.peak_total)),
        ("peak_by_category", m.peak.to_json()),
    ] {
        end[k] = v;
    }
    metrics.write("end", end)?;
    if rank == 0 {
        eprintln!(
            "done: {} steps in {wall_s:.1} s | final loss {:.4} | {}",
            r.losses.len(),
            r.losses.last().copied().unwrap_or(f32::NAN),
            describe(&r.eval)
        );
        report_outputs(checkpoint, &config);
    }
    Ok(())
}

/// The adapter an MPI rank runs on: the n-th adapter for local rank n, wrapping (--adapter or
/// WGTRAIN_ADAPTER overrides).
#[cfg(feature = "mpi")]
fn mpi_device(adapter: Option<&str>, rank: usize) -> Result<Gpu> {
    let local: usize = [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(rank);
    Ok(match adapter {
        Some(a) => Gpu::new(Some(a))?,
        None => {
            let count = Gpu::list_adapters(None)?.0.len().max(1);
            Gpu::new(Some(&(local % count).to_string()))?
        }
    })
}

/// `train --devices mpi --pipeline P` under mpirun: world rank w is stage w mod P of replica
/// w / P (P × R ranks), its groups split from MPI's world and its links point-to-point
/// messages to the neighbouring ranks; rank 0 writes the index of the checkpoint (each stage
/// its part), the metrics and the summary.
#[cfg(feature = "mpi")]
fn run_mpi_pipeline(
    adapter: Option<&str>,
    args: &TrainArgs,
    config: TrainConfig,
    run: String,
    (universe, world): (&mut mpi::environment::Universe, wgtrain::parallel::mpi::Mpi),
    p: usize,
) -> Result<()> {
    use wgtrain::parallel::pipeline::{self, Comms, Links, Partition, PipelineOptions};
    use wgtrain::parallel::Collective;
    let (rank, n) = (world.rank(), world.size());
    if p == 0 || n % p != 0 {
        bail!("--pipeline {p} over {n} MPI ranks: the ranks must be a multiple of the stages");
    }
    if args.trace.is_some() || args.trace_svg.is_some() {
        bail!("--trace and --trace-svg time the stages of one process: run the pipeline without --devices mpi");
    }
    let (s, r, replicas) = (rank % p, rank / p, n / p);
    let gpu = mpi_device(adapter, rank)?;
    let schedule =
        wgtrain::parallel::schedule::Schedule::parse(args.schedule.as_deref().unwrap_or("1f1b"))?;
    if args.partition.as_deref().is_some_and(|p| p != "params") {
        bail!("--partition balanced measures the stages in one process: over MPI use params");
    }
    let options = PipelineOptions {
        schedule,
        partition: Partition::Params,
        replicas,
        resume: args.resume.clone(),
    };
    // (every rank searches alike: the same config and the plan of the largest stage)
    let config = max_memory_search(args, config, &|c| {
        largest(
            (0..p)
                .map(|st| pipeline::plan_stage(&gpu, c, &options, p, (st, 0)))
                .collect(),
        )
    })?;
    let plan = pipeline::plan_stage(&gpu, &config, &options, p, (s, r))?;
    wgtrain::memory::check_fits(
        &gpu,
        &format!("stage {s}'s planned peak"),
        plan.peak_total,
        budget(args)?,
        wgtrain::memory::SMALLER_RUN,
    )?;
    universe.set_buffer_size(wgtrain::parallel::mpi::send_buffer_bytes(
        &config, p, replicas,
    )?);
    // the groups, split alike on every rank: a replica's stages, a stage's replicas, everyone
    let comms = Comms {
        stages: Box::new(world.split(r)?),
        replicas: Box::new(world.split(p + s)?),
        world: Box::new(world.split(0)?),
    };
    let (prev, next) = world.ports((s > 0).then(|| rank - 1), (s + 1 < p).then(|| rank + 1));
    let links = Links::new(
        prev.map(|l| Box::new(l) as Box<dyn pipeline::Port>),
        next.map(|l| Box::new(l) as Box<dyn pipeline::Port>),
    );
    let out_dir = config.out.as_ref().map(PathBuf::from).filter(|_| rank == 0);
    let _claimed = out_dir
        .as_deref()
        .map(|d| claim_out_dir(d, &run, args))
        .transpose()?;
    // the lead (rank 0) writes the run's metrics; the others print their figures
    let metrics_path = config.metrics.as_deref().filter(|_| rank == 0);
    let metrics = Metrics::create(metrics_path.map(Path::new), args.resume.is_some())?;
    eprintln!(
        "rank {rank} of {n} (MPI): stage {s} of replica {r}, {} ({:?})",
        gpu.info().name,
        gpu.info().backend
    );
    let observer = RunObserver::new(metrics, config.steps, ckpt_step(args), true);
    let started = Instant::now();
    let at = (s, r);
    let result = pipeline::train_stage(&gpu, &comms, links, &config, &options, (p, at), &observer);
    let (mut metrics, checkpoint) = observer.finish();
    let result = result?;
    let wall_s = started.elapsed().as_secs_f64();
    let m = &result.memory;
    eprintln!(
        "rank {rank} (stage {s}): peak {:.2} MiB, {:.2} MiB of activations and gradients moved",
        m.peak_total as f64 / (1 << 20) as f64,
        result.link_bytes as f64 / (1 << 20) as f64
    );
    if let Some(eval) = &result.eval {
        let last = result.losses.last().copied();
        let mut end = end_json(config.steps, eval, wall_s, last, m);
        for (k, v) in [
            ("stages", json!(p)),
            ("replicas", json!(replicas)),
            ("schedule", json!(options.schedule.name())),
            ("mpi", json!(true)),
            ("link_bytes", json!(result.link_bytes)),
            ("peak_bytes", json!(m.peak_total)),
            ("peak_by_category", m.peak.to_json()),
        ] {
            end[k] = v;
        }
        metrics.write("end", end)?;
        eprintln!(
            "done: {} steps in {wall_s:.1} s | final loss {:.4} | {}",
            result.losses.len(),
            last.unwrap_or(f32::NAN),
            describe(eval)
        );
        report_outputs(checkpoint, &config);
    }
    Ok(())
}

/// A data-parallel run's options: the flags, and what every rank resumes.
fn run_options(args: &TrainArgs, run: &str) -> Result<wgtrain::parallel::ddp::DdpOptions> {
    Ok(wgtrain::parallel::ddp::DdpOptions {
        resume: args.resume.clone(),
        run: Some(run.to_string()),
        ..ddp_options(args)?
    })
}

/// "peak X MiB (params …, workspace …)": one device's peaks by category, for a summary line.
fn peaks(m: &wgtrain::gpu::MemoryStats) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    format!(
        "peak {:.2} MiB (params {:.2}, grads {:.2}, optimizer {:.2}, activations {:.2}, workspace {:.2})",
        mib(m.peak_total),
        mib(m.peak.get(Category::Params)),
        mib(m.peak.get(Category::Grads)),
        mib(m.peak.get(Category::OptimizerState)),
        mib(m.peak.get(Category::Activations)),
        mib(m.peak.get(Category::Workspace)),
    )
}

/// ", ZeRO stage K" for the start line (nothing without ZeRO).
fn zero_label(stage: u8) -> String {
    match stage {
        0 => String::new(),
        k => format!(", ZeRO stage {k}"),
    }
}

/// The layout the flags describe (--devices, --pipeline, --parallel, --zero), for the one rule
/// ([`wgtrain::train::Layout::check`]); a device list counts its entries.
pub fn layout(args: &TrainArgs) -> wgtrain::train::Layout {
    let ranks = match args.devices.as_deref() {
        None | Some("mpi") => 1,
        Some("all") => 2,
        Some(s) if s.contains(',') => s.split(',').count(),
        Some(s) => s.parse().unwrap_or(1),
    };
    let stages = args.pipeline.unwrap_or(1).max(1);
    wgtrain::train::Layout {
        ranks: if stages > 1 { ranks / stages } else { ranks },
        stages,
        server: args.parallel.as_deref() == Some("dp"),
        zero: args.zero,
        mpi: args.devices.as_deref() == Some("mpi"),
    }
}

/// The data-parallel flags: --parallel, --zero, --bucket-mb.
pub fn ddp_options(args: &TrainArgs) -> Result<wgtrain::parallel::ddp::DdpOptions> {
    let mut options = wgtrain::parallel::ddp::DdpOptions {
        zero: args.zero,
        ..Default::default()
    };
    if let Some(m) = &args.parallel {
        options.mode = wgtrain::parallel::ddp::Mode::parse(m)?;
    }
    if let Some(mb) = args.bucket_mb {
        options.bucket_bytes = (mb * (1 << 20) as f64) as u64;
    }
    Ok(options)
}

/// `train --devices`: data parallel over the devices, one thread per rank.
fn run_ddp(
    adapter: Option<&str>,
    args: &TrainArgs,
    config: TrainConfig,
    spec: &str,
    run: String,
) -> Result<()> {
    if spec == "mpi" {
        #[cfg(feature = "mpi")]
        return run_mpi(adapter, args, config, run);
        #[cfg(not(feature = "mpi"))]
        bail!(
            "--devices mpi: this wgtrain was built without MPI (cargo build --release --features \
             mpi, with an MPI implementation and libclang installed)"
        );
    }
    let gpus = open_devices(adapter, spec)?;
    let n = gpus.len();
    if config.batch_size % n != 0 {
        bail!(
            "batch_size {} does not split evenly over {n} ranks (--devices {spec})",
            config.batch_size
        );
    }
    let options = run_options(args, &run)?;
    let config = max_memory_search(args, config, &|c| {
        largest(wgtrain::parallel::ddp::plan(&gpus, c, &options))
    })?;
    // each rank's step on a ledger twin first: refused before anything is allocated
    let plans = wgtrain::parallel::ddp::plan(&gpus, &config, &options)?;
    for (i, (g, p)) in gpus.iter().zip(&plans).enumerate() {
        let what = format!("rank {i}'s planned peak");
        let hint = wgtrain::memory::SMALLER_RUN;
        wgtrain::memory::check_fits(g, &what, p.peak_total, budget(args)?, hint)?;
    }
    let out_dir = config.out.as_ref().map(PathBuf::from);
    let _claimed = out_dir
        .as_deref()
        .map(|d| claim_out_dir(d, &run, args))
        .transpose()?;
    for (i, g) in gpus.iter().enumerate() {
        eprintln!("rank {i}: {} ({:?})", g.info().name, g.info().backend);
    }
    eprintln!(
        "{} over {n} ranks{}: global batch {} ({} per rank), up to step {}",
        options.mode.name(),
        zero_label(args.zero),
        config.batch_size,
        config.batch_size / n.max(1),
        config.steps
    );
    if let Some(p) = &args.resume {
        eprintln!("resume: every rank from {}", p.display());
    }
    let comms = wgtrain::parallel::InProcess::group(n)
        .into_iter()
        .map(|c| Box::new(c) as Box<dyn wgtrain::parallel::Collective>)
        .collect();
    // a resumed run continues its metrics file; rank 0 writes it
    let metrics = Metrics::create(
        config.metrics.as_deref().map(Path::new),
        args.resume.is_some(),
    )?;
    let observer = RunObserver::new(
        metrics,
        config.steps,
        ckpt_step(args),
        config.model == ModelKind::Gpt,
    );
    let started = Instant::now();
    let r = wgtrain::parallel::ddp::train_observed(&gpus, comms, &config, &options, &observer);
    let (mut metrics, checkpoint) = observer.finish();
    let r = r?;
    let wall_s = started.elapsed().as_secs_f64();
    let mut end = end_json(
        config.steps,
        &r.eval,
        wall_s,
        r.losses.last().copied(),
        &r.memory[0],
    );
    end["ranks"] = n.into();
    end["mode"] = options.mode.name().into();
    end["zero"] = options.zero.into();
    end["comm_bytes"] = json!(r.comm_bytes);
    end["comm_ms"] = json!(r.comm_ms);
    end["peak_bytes"] = json!(r.memory.iter().map(|m| m.peak_total).collect::<Vec<_>>());
    end["peak_by_category"] = json!(r
        .memory
        .iter()
        .map(|m| m.peak.to_json())
        .collect::<Vec<_>>());
    metrics.write("end", end)?;
    eprintln!(
        "done: {} steps in {wall_s:.1} s | final loss {:.4} | {} | {} gradient buckets per step",
        r.losses.len(),
        r.losses.last().copied().unwrap_or(f32::NAN),
        describe(&r.eval),
        r.buckets
    );
    for (i, (m, bytes)) in r.memory.iter().zip(&r.comm_bytes).enumerate() {
        eprintln!(
            "rank {i}: {}, {:.2} MiB through the collectives in {:.0} ms",
            peaks(m),
            *bytes as f64 / (1 << 20) as f64,
            r.comm_ms[i]
        );
    }
    report_outputs(checkpoint, &config);
    if let Some(chart) = &args.plot {
        let title = format!("{} ranks ({}) on {}", n, options.mode.name(), config.data);
        write_run_chart(chart, &metrics, &title)?;
    }
    Ok(())
}

/// The step of the checkpoint `--resume` names (0 when it cannot be read: the run itself then
/// says why).
fn ckpt_step(args: &TrainArgs) -> u64 {
    args.resume
        .as_deref()
        .and_then(wgtrain::train::checkpoint::peek)
        .map_or(0, |(step, _)| step)
}

/// The closing lines naming the checkpoint (and the LoRA adapter beside it) a run wrote.
fn report_outputs(checkpoint: Option<super::observe::Written>, config: &TrainConfig) {
    match checkpoint {
        Some((path, adapter)) => {
            eprintln!("checkpoint: {}", path.display());
            if let (Some(bytes), Some(dir)) = (adapter, path.parent()) {
                let base_bytes = 4 * config.weight_count();
                eprintln!(
                    "LoRA adapter: {} ({bytes} bytes, {:.2} % of the base's {base_bytes} bytes \
                     of weights) and {}",
                    dir.join(wgtrain::train::adapter::WEIGHTS_FILE).display(),
                    100.0 * bytes as f64 / base_bytes as f64,
                    wgtrain::train::adapter::CONFIG_FILE
                );
            }
        }
        None if config.out.is_none() => eprintln!(
            "(pass --out DIR to keep a checkpoint for `wgtrain sample` and `wgtrain eval`)"
        ),
        None => {}
    }
}

/// The stages' devices (P, or P × R for R data-parallel replicas of each stage) and the run's
/// options for `--pipeline P`.
pub fn pipeline_setup(
    adapter: Option<&str>,
    args: &TrainArgs,
    config: &TrainConfig,
) -> Result<(Vec<Gpu>, wgtrain::parallel::pipeline::PipelineOptions)> {
    let p = args.pipeline.unwrap_or(1);
    if p == 0 {
        bail!("--pipeline needs at least one stage");
    }
    layout(args).check(config)?;
    let gpus = match &args.devices {
        Some(spec) => open_devices(adapter, spec)?,
        None => Gpu::open_n(adapter, p)?,
    };
    if gpus.len() % p != 0 {
        bail!(
            "--pipeline {p} needs {p} devices, or a multiple of {p} (stages × data-parallel \
             replicas); --devices names {}",
            gpus.len()
        );
    }
    let replicas = gpus.len() / p;
    let schedule =
        wgtrain::parallel::schedule::Schedule::parse(args.schedule.as_deref().unwrap_or("1f1b"))?;
    use wgtrain::parallel::pipeline::{self, Partition};
    let partition = match args.partition.as_deref().unwrap_or("params") {
        "params" => Partition::Params,
        "balanced" => {
            // measured once, so that the plan and every stage cut the model alike
            let (block, embed, head) = pipeline::measured_costs(&gpus[0], config)?;
            let spans = pipeline::split(config.gpt.n_layer, block, p, embed, head)?;
            eprintln!(
                "partition: balanced by measured time per micro-batch (a block {block} µs, the \
                 embeddings {embed} µs, the head {head} µs)"
            );
            Partition::Blocks(spans.iter().map(|s| s.blocks.len()).collect())
        }
        other => bail!("--partition must be params or balanced, not {other:?}"),
    };
    let options = wgtrain::parallel::pipeline::PipelineOptions {
        schedule,
        partition,
        replicas,
        resume: args.resume.clone(),
    };
    Ok((gpus, options))
}

/// `train --pipeline P`: the model's stages on P devices, one thread each.
fn run_pipeline(
    adapter: Option<&str>,
    args: &TrainArgs,
    config: TrainConfig,
    run: String,
) -> Result<()> {
    use wgtrain::parallel::{pipeline, trace};
    let (gpus, options) = pipeline_setup(adapter, args, &config)?;
    let config = max_memory_search(args, config, &|c| {
        largest(pipeline::plan_memory(&gpus, c, &options))
    })?;
    let replicas = options.replicas;
    let p = gpus.len() / replicas;
    let (micro, m) = pipeline::micro_batching(&config, p, replicas)?;
    // each stage's step on a ledger twin first: refused before anything is allocated
    let plans = pipeline::plan_memory(&gpus, &config, &options)?;
    for (i, (g, plan)) in gpus.iter().zip(&plans).enumerate() {
        let what = format!("stage {i}'s planned peak");
        wgtrain::memory::check_fits(
            g,
            &what,
            plan.peak_total,
            budget(args)?,
            wgtrain::memory::SMALLER_RUN,
        )?;
    }
    let out_dir = config.out.as_ref().map(PathBuf::from);
    let _claimed = out_dir
        .as_deref()
        .map(|d| claim_out_dir(d, &run, args))
        .transpose()?;
    let metrics = Metrics::create(
        config.metrics.as_deref().map(Path::new),
        args.resume.is_some(),
    )?;
    let spans = pipeline::stages(&gpus[0], &config, p, &options.partition)?;
    eprintln!(
        "pipeline: {p} stages{}, {} schedule, {m} micro-batches of {} (global batch {}), up to step {}",
        match replicas {
            1 => String::new(),
            r => format!(" × {r} data-parallel replicas (DDP over each stage's replicas)"),
        },
        options.schedule.name(),
        micro,
        config.batch_size,
        config.steps
    );
    for (s, (g, (span, params))) in gpus.iter().zip(&spans).enumerate() {
        eprintln!(
            "stage {s}: blocks {}..{}{}{}, {params} parameters, on {}",
            span.blocks.start,
            span.blocks.end,
            if span.first { " + embeddings" } else { "" },
            if span.last {
                " + final LayerNorm and head"
            } else {
                ""
            },
            g.info().name
        );
    }
    if let Some(p) = &args.resume {
        eprintln!("resume: every stage from {}", p.display());
    }
    let observer = RunObserver::new(metrics, config.steps, ckpt_step(args), true);
    let started = Instant::now();
    let r = pipeline::train_observed(&gpus, &config, &options, &observer);
    let (mut metrics, checkpoint) = observer.finish();
    let r = r?;
    let wall_s = started.elapsed().as_secs_f64();
    let last = config.steps - 1;
    let measured = r.bubble(last);
    let simulated = r.simulated(options.schedule, last).bubble();
    let ideal = options.schedule.ideal_bubble(p, m);
    let mut end = end_json(
        config.steps,
        &r.eval,
        wall_s,
        r.losses.last().copied(),
        &r.memory[0],
    );
    for (k, v) in [
        ("stages", json!(p)),
        ("micro_batches", json!(m)),
        ("schedule", json!(options.schedule.name())),
        ("bubble", json!(measured)),
        ("bubble_simulated", json!(simulated)),
        ("bubble_ideal", json!(ideal)),
        ("link_bytes", json!(r.link_bytes)),
        (
            "peak_by_category",
            json!(r
                .memory
                .iter()
                .map(|m| m.peak.to_json())
                .collect::<Vec<_>>()),
        ),
        (
            "peak_bytes",
            json!(r.memory.iter().map(|m| m.peak_total).collect::<Vec<_>>()),
        ),
    ] {
        end[k] = v;
    }
    metrics.write("end", end)?;
    eprintln!(
        "done: {} steps in {wall_s:.1} s | final loss {:.4} | {}",
        r.losses.len(),
        r.losses.last().copied().unwrap_or(f32::NAN),
        describe(&r.eval)
    );
    eprintln!(
        "bubble (last step): measured {:.1} %, {:.1} % for the measured forward and backward times \
         (the rest: host transfers and waits between them), {:.1} % by (p−1)/(m+p−1)",
        100.0 * measured,
        100.0 * simulated,
        100.0 * ideal
    );
    for (d, m) in r.memory.iter().enumerate() {
        let replica = match replicas {
            1 => String::new(),
            _ => format!(", replica {}", d / p),
        };
        eprintln!(
            "stage {}{replica}: {}, {:.2} MiB of activations and gradients moved",
            d % p,
            peaks(m),
            r.link_bytes[d] as f64 / (1 << 20) as f64
        );
    }
    let names: Vec<String> = gpus.iter().map(|g| g.info().name.clone()).collect();
    if let Some(path) = &args.trace {
        let text = serde_json::to_string(&trace::chrome_trace(&r.events, &names))?;
        super::write_output(path, text.as_bytes())?;
        eprintln!("trace: {}", path.display());
    }
    if let Some(path) = &args.trace_svg {
        let title = format!(
            "{} over {p} stages, {m} micro-batches: step {} (bubble {:.0} % measured, {:.0} % by (p−1)/(m+p−1))",
            options.schedule.name(),
            last + 1,
            100.0 * measured,
            100.0 * ideal
        );
        super::write_output(path, trace::svg(&r.events, last, p, &title).as_bytes())?;
        eprintln!("timeline: {}", path.display());
    }
    report_outputs(checkpoint, &config);
    if let Some(chart) = &args.plot {
        let title = format!(
            "{p} pipeline stages ({}) on {}",
            options.schedule.name(),
            config.data
        );
        write_run_chart(chart, &metrics, &title)?;
    }
    Ok(())
}

/// Flags that cannot go together, and the files the run will write, refused before anything
/// runs: `--init` with `--resume`; two outputs (the checkpoint, `--metrics`, `--plot`,
/// `--trace`, `--trace-svg`) at one path, or one at an input's; an output that cannot be a
/// file (a directory, a device, a missing directory); a device count the batch does not split
/// over.
fn check_flags(args: &TrainArgs, config: &TrainConfig) -> Result<()> {
    if args.init.is_some() && args.resume.is_some() {
        bail!(
            "--init starts a fine-tune from a base model's weights and --resume continues a run \
             from its checkpoint: give one (a resumed fine-tune keeps its base already)"
        );
    }
    let checkpoint = config
        .out
        .as_ref()
        .map(|d| Path::new(d).join(wgtrain::train::CHECKPOINT_FILE));
    let outputs: Vec<(&str, &Path)> = [
        ("the checkpoint", checkpoint.as_deref()),
        ("--metrics", config.metrics.as_deref().map(Path::new)),
        ("--plot", args.plot.as_deref()),
        ("--trace", args.trace.as_deref()),
        ("--trace-svg", args.trace_svg.as_deref()),
    ]
    .into_iter()
    .filter_map(|(what, p)| p.map(|p| (what, p)))
    .collect();
    let inputs: Vec<&Path> = [
        args.config.as_deref(),
        args.resume.as_deref(),
        args.init.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let same = |a: &Path, b: &Path| {
        a == b
            || (a.canonicalize().ok().is_some() && a.canonicalize().ok() == b.canonicalize().ok())
    };
    for (i, (what, path)) in outputs.iter().enumerate() {
        if let Some((other, _)) = outputs[..i].iter().find(|(_, p)| same(p, path)) {
            bail!(
                "{what} and {other} name the same file {}: give each its own",
                path.display()
            );
        }
        // the checkpoint's own path is the run's to replace (checked by the output directory)
        if *what != "the checkpoint" {
            if let Some(input) = inputs.iter().find(|i| same(i, path)) {
                bail!(
                    "{what} names {}, an input of this run: writing there would destroy it",
                    input.display()
                );
            }
            let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
            if parent.is_some_and(|d| !d.is_dir()) {
                bail!("{what} {}: its directory does not exist", path.display());
            }
            if path.is_dir() {
                bail!(
                    "{what} {}: is a directory, not a file to write",
                    path.display()
                );
            }
            if path.exists() && !path.is_file() {
                bail!(
                    "{what} {}: is not a regular file (a FIFO, socket or device)",
                    path.display()
                );
            }
        }
    }
    // a count the batch does not split over, before any device opens
    if let Some(n) = args
        .devices
        .as_deref()
        .and_then(|s| s.parse::<usize>().ok())
    {
        let stages = args.pipeline.unwrap_or(1).max(1);
        let ranks = n / stages;
        if n == 0 || ranks == 0 || config.batch_size % ranks != 0 {
            bail!(
                "batch_size {} does not split evenly over {ranks} ranks (--devices {n})",
                config.batch_size
            );
        }
    }
    Ok(())
}

pub fn run(adapter: Option<&str>, args: TrainArgs) -> Result<()> {
    if let Some(p) = &args.plot {
        super::plot::check_chart_path(p)?;
    }
    let ckpt = args.resume.as_deref().map(Checkpoint::load).transpose()?;
    let config = resolve_config(&args, ckpt.as_ref())?;
    config.validate()?;
    layout(&args).check(&config)?;
    check_flags(&args, &config)?;
    let run = match &ckpt {
        Some(c) if !c.meta.run.is_empty() => c.meta.run.clone(),
        _ => wgtrain::train::new_run_id(),
    };
    if args.pipeline.is_some() && args.devices.as_deref() != Some("mpi") {
        return run_pipeline(adapter, &args, config, run);
    }
    if args.pipeline.is_none()
        && (args.schedule.is_some()
            || args.partition.is_some()
            || args.trace.is_some()
            || args.trace_svg.is_some())
    {
        bail!(
            "--schedule, --partition, --trace and --trace-svg describe a pipeline: give \
             --pipeline P too"
        );
    }
    if let Some(spec) = args.devices.clone() {
        return run_ddp(adapter, &args, config, &spec, run);
    }
    let started = Instant::now();
    let gpu = Gpu::new(adapter)?;
    let config = apply_max_memory(&gpu, &args, config)?;
    // The whole run on a ledger first: every tensor it will allocate is checked against the
    // adapter's limits (an error names the first too large), and the peaks are predicted.
    let plan = wgtrain::memory::plan_resumed(&gpu, &config, ckpt.as_ref())?;
    wgtrain::memory::check_fits(
        &gpu,
        "the run's planned peak",
        plan.total,
        budget(&args)?,
        wgtrain::memory::SMALLER_RUN,
    )?;
    let out_dir = config.out.as_ref().map(PathBuf::from);
    let _claimed = out_dir
        .as_deref()
        .map(|d| claim_out_dir(d, &run, &args))
        .transpose()?;
    // a resumed run continues its metrics file
    let metrics = Metrics::create(config.metrics.as_deref().map(Path::new), ckpt.is_some())?;

    let mut trainer = Trainer::new(&gpu, config)?;
    trainer.run = run;
    if let Some(ckpt) = &ckpt {
        for line in trainer.resume(ckpt)?.describe() {
            eprintln!("resume: {line}");
        }
    } else if let Some(init) = trainer.config.init.clone() {
        let report = trainer.init_from(Path::new(&init))?;
        eprintln!(
            "init: {} tensors from {init}; {} new (LoRA adapters)",
            report.restored.len(),
            report.fresh.len()
        );
    }
    let c = trainer.config.clone();
    let frozen = trainer.model.num_params()
        - trainer
            .model
            .trainable_params()
            .iter()
            .map(|p| p.numel())
            .sum::<usize>();
    let frozen = if frozen > 0 {
        format!(" ({frozen} frozen)")
    } else {
        String::new()
    };
    eprintln!(
        "wgtrain: {}, {} parameters{frozen}, data {}, on {} ({:?})",
        trainer.model.describe(),
        trainer.model.num_params(),
        c.data,
        gpu.info().name,
        gpu.info().backend
    );
    if let Task::Sft(s) = &trainer.task {
        eprintln!("data: {}", s.describe());
    }
    if let Task::Addition(a) = &trainer.task {
        eprintln!(
            "task: {}-digit addition, answers written least-significant digit first; {} held-out problems",
            a.digits,
            a.test.len()
        );
    }
    let h = trainer.optimizer.hyper;
    eprintln!(
        "steps {} (from {}), batch {} ({} x {} micro-batches), recompute {}, optimizer {}, grad clip {}",
        c.steps,
        trainer.step,
        c.effective_batch(),
        c.accumulation(),
        c.micro_batch(),
        c.recompute.name(),
        h.describe(),
        c.grad_clip
    );
    eprintln!(
        "schedule: {}",
        c.schedule.describe(c.lr, c.effective_batch())
    );
    if c.precision != wgtrain::train::config::Precision::Fp32 {
        eprintln!(
            "precision: {} mixed (fp32 master weights and optimizer state), loss scaling {}",
            c.precision.as_str(),
            match c.scaler() {
                Some(s) => format!(
                    "dynamic (initial scale {}, growth interval {})",
                    s.initial_scale, s.growth_interval
                ),
                None => "off".into(),
            }
        );
    }

    let observer = RunObserver::new(metrics, c.steps, trainer.step, c.model == ModelKind::Gpt);
    let fit = trainer.fit(&mut Local, &observer);
    let (mut metrics, checkpoint) = observer.finish();
    let fit = fit?;
    let r = fit.eval.expect("one device evaluates");
    let wall_s = started.elapsed().as_secs_f64();
    let mem = gpu.memory();
    let final_loss = fit.losses.last().map(|&(_, l)| l);
    let mut end = end_json(trainer.step, &r, wall_s, final_loss, &mem);
    let mut predicted = plan.predicted.to_json();
    predicted["total"] = plan.total.into();
    end["mem_predicted_by_category"] = predicted;
    metrics.write("end", end)?;
    eprintln!(
        "done: {} steps in {wall_s:.1} s | {}",
        trainer.step,
        describe(&r)
    );
    eprint!("peak memory by category:");
    for cat in Category::ALL {
        eprint!(
            " {} {:.2} MiB,",
            cat.name(),
            mem.peak.get(cat) as f64 / (1 << 20) as f64
        );
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        " peak total {:.2} MiB; the pool held at most {:.2} MiB, {:.1} % of it needed by no \
         tensor at the peak (fragmentation: size-class rounding and cached free buffers); \
         {:.2} MiB more in runtime buffers (uniform and upload arenas, readback staging)",
        mib(mem.peak_total),
        mib(mem.peak_held),
        100.0 * mem.fragmentation(),
        mib(mem.runtime)
    );
    let numel = |ps: Vec<&wgtrain::nn::Param>| ps.iter().map(|p| p.numel() as u64).sum::<u64>();
    let h = trainer.optimizer.hyper;
    let k = wgtrain::memory::optimizer_bytes_per_param(h.name, h.centered, h.momentum);
    let (fp, fg, fo) = wgtrain::memory::model_state_formula(
        c.precision,
        c.grad_dtype(),
        numel(trainer.model.params()),
        numel(trainer.model.trainable_params()),
        wgtrain::memory::Quantized::of(trainer.model.as_mut()),
        k,
    );
    eprintln!(
        "model states (bytes, measured peak / formula): params {} / {fp}, grads {} / {fg}, \
         optimizer state {} / {fo} ({} state{})",
        mem.peak.get(Category::Params),
        mem.peak.get(Category::Grads),
        mem.peak.get(Category::OptimizerState),
        h.name.as_str(),
        if c.precision == wgtrain::train::config::Precision::Fp32 {
            String::new()
        } else {
            format!(
                ", with the fp32 master weights; {} mixed",
                c.precision.as_str()
            )
        }
    );
    if c.scaler().is_some() {
        let s = trainer.step_state()?;
        eprintln!(
            "loss scaler: scale {} at the end, {} overflow step(s) skipped, {} optimizer steps taken",
            s.loss_scale, s.overflows, s.steps_taken
        );
    }
    if let Task::Addition(a) = &trainer.task {
        let shown: Vec<(u64, u64)> = a.test.iter().take(8).copied().collect();
        let model = trainer.model.as_mut();
        let answers = addition_answers(&gpu, model, &mut Whole, a, &shown)?;
        eprintln!("held-out problems (the model's answer, read back in normal digit order):");
        for (&(x, y), ans) in shown.iter().zip(&answers) {
            let got = a.parse_answer(ans);
            let mark = if got == Some(x + y) { "ok" } else { "WRONG" };
            let got = got.map_or_else(|| format!("{ans:?}"), |v| v.to_string());
            eprintln!(
                "  {x:>w$} + {y:>w$} = {got:<w2$} {mark}",
                w = a.digits,
                w2 = a.digits + 1
            );
        }
    }
    report_outputs(checkpoint, &c);
    // last: a chart that cannot be written costs no checkpoint
    if let Some(chart) = &args.plot {
        let title = format!("{} on {}", trainer.model.describe(), c.data);
        write_run_chart(chart, &metrics, &title)?;
    }
    Ok(())
}

/// `--plot`: the run's curves; the metrics file holds the whole history (a resume appends),
/// else this run's records.
fn write_run_chart(chart: &Path, metrics: &Metrics, title: &str) -> Result<()> {
    let curves = match metrics.path() {
        Some(p) => wgtrain::train::metrics::Curves::load(p)?,
        None => metrics.curves().clone(),
    };
    super::plot::write_chart(chart, title, &[(String::new(), curves)], false)?;
    eprintln!("plot: {}", chart.display());
    Ok(())
}
