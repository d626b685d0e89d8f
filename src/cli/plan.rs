//! `wgtrain plan`: the planner's predicted peak bytes per category, beside the textbook formula.

use super::train::{resolve_config, TrainArgs};
use anyhow::Result;
use wgtrain::gpu::Category;
use wgtrain::memory::plan_resumed;
use wgtrain::train::checkpoint::Checkpoint;
use wgtrain::Gpu;

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    train: TrainArgs,
    /// Print `{"predicted": {...}, "formula": {...}}` in bytes.
    #[arg(long)]
    json: bool,
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

pub fn run(adapter: Option<&str>, args: PlanArgs) -> Result<()> {
    let ckpt = args
        .train
        .resume
        .as_deref()
        .map(Checkpoint::load)
        .transpose()?;
    let config = resolve_config(&args.train, ckpt.as_ref())?;
    config.validate()?;
    if args.train.pipeline.is_some() {
        return plan_stages(adapter, &args, config);
    }
    if let Some(spec) = &args.train.devices {
        return plan_ranks(adapter, &args, &config, spec);
    }
    let gpu = Gpu::new(adapter)?;
    let config = super::train::apply_max_memory(&gpu, &args.train, config)?;
    let p = plan_resumed(&gpu, &config, ckpt.as_ref())?;
    let name = config.optimizer.name;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p.to_json(name))?);
        return Ok(());
    }
    let (fp, fg, fo) = p.formula();
    println!(
        "plan for {:?} on {:?} ({}): batch {} ({} x {} micro-batches), recompute {}, optimizer {}",
        config.model,
        config.data,
        gpu.info().name,
        config.batch_size,
        config.accumulation(),
        config.micro_batch(),
        config.recompute.name(),
        name.as_str()
    );
    println!(
        "{:<16} {:>14} {:>14}",
        "category", "predicted peak", "model states"
    );
    let rows = [
        (Category::Params, Some(fp)),
        (Category::Grads, Some(fg)),
        (Category::OptimizerState, Some(fo)),
        (Category::Activations, None),
        (Category::Workspace, None),
    ];
    for (cat, formula) in rows {
        println!(
            "{:<16} {:>14} {:>14}",
            cat.name(),
            mib(p.predicted.get(cat)),
            formula.map(mib).unwrap_or_default()
        );
    }
    println!(
        "{:<16} {:>14} {:>14}",
        "total (peak)",
        mib(p.total),
        mib(fp + fg + fo)
    );
    println!("model states: {}", p.formula_text(name));
    match gpu.memory_capacity() {
        Some((bytes, source)) => println!(
            "device memory: {} ({source}): the plan {}",
            mib(bytes),
            if p.total <= bytes {
                "fits; `wgtrain train` would run it"
            } else {
                "does not fit; `wgtrain train` refuses it"
            }
        ),
        None => println!(
            "device memory: unknown on this backend (set {} to check)",
            wgtrain::gpu::capacity::MEMORY_ENV
        ),
    }
    Ok(())
}

/// `plan --pipeline P [--schedule S]`: each stage's predicted peaks, and the micro-batches of
/// activations its schedule holds at once.
fn plan_stages(
    adapter: Option<&str>,
    args: &PlanArgs,
    config: wgtrain::train::TrainConfig,
) -> Result<()> {
    use wgtrain::parallel::{pipeline, schedule};
    let (gpus, options) = super::train::pipeline_setup(adapter, &args.train, &config)?;
    let config = super::train::max_memory_search(&args.train, config, &|c| {
        super::train::largest(pipeline::plan_memory(&gpus, c, &options))
    })?;
    let p = gpus.len() / options.replicas;
    let (micro, m) = pipeline::micro_batching(&config, p, options.replicas)?;
    let stages = pipeline::plan_memory(&gpus, &config, &options)?;
    let spans = pipeline::stages(&gpus[0], &config, p, &options.partition)?;
    let timeline = schedule::simulate(options.schedule, p, m, |_| 1.0, |_| 1.0);
    if args.json {
        let v: Vec<_> = stages
            .iter()
            .enumerate()
            .map(|(s, st)| {
                let mut j = st.peak.to_json();
                j["total"] = st.peak_total.into();
                let span = &spans[s % p].0;
                j["blocks"] = serde_json::json!([span.blocks.start, span.blocks.end]);
                j["micro_batches_held"] = timeline.peak_in_flight(s % p).into();
                j
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "stages": v }))?
        );
        return Ok(());
    }
    println!(
        "plan for {p} pipeline stages, {} schedule: {m} micro-batches of {}, optimizer {}",
        options.schedule.name(),
        micro,
        config.optimizer.name.as_str()
    );
    println!(
        "{:<6} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>6}",
        "stage",
        "blocks",
        "params",
        "grads",
        "optimizer",
        "activations",
        "workspace",
        "peak total",
        "held"
    );
    // (with replicas, one line per device: replica r's stage s is device r·p + s)
    for (d, st) in stages.iter().enumerate() {
        let s = d % p;
        let cell = |c: Category| mib(st.peak.get(c));
        let b = &spans[s].0.blocks;
        println!(
            "{:<6} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>6}",
            s,
            format!("{}..{}", b.start, b.end),
            cell(Category::Params),
            cell(Category::Grads),
            cell(Category::OptimizerState),
            cell(Category::Activations),
            cell(Category::Workspace),
            mib(st.peak_total),
            timeline.peak_in_flight(s)
        );
    }
    println!(
        "held: micro-batches of activations a stage keeps at once (GPipe m, 1F1B min(p−s, m), \
         naive 1); bubble (p−1)/(m+p−1) = {:.1} % for gpipe and 1f1b",
        100.0 * schedule::Schedule::Gpipe.ideal_bubble(p, m)
    );
    Ok(())
}

/// `plan --devices N [--parallel dp|ddp] [--zero 1|2|3]`: each data-parallel rank's predicted peaks.
fn plan_ranks(
    adapter: Option<&str>,
    args: &PlanArgs,
    config: &wgtrain::train::TrainConfig,
    spec: &str,
) -> Result<()> {
    let gpus = super::train::open_devices(adapter, spec)?;
    let options = super::train::ddp_options(&args.train)?;
    let config = &super::train::max_memory_search(&args.train, config.clone(), &|c| {
        super::train::largest(wgtrain::parallel::ddp::plan(&gpus, c, &options))
    })?;
    let ranks = wgtrain::parallel::ddp::plan(&gpus, config, &options)?;
    let formula = model_state_formula(&gpus[0], config, &options, ranks.len())?;
    let states = |m: &wgtrain::gpu::MemoryStats| {
        [Category::Params, Category::Grads, Category::OptimizerState]
            .iter()
            .map(|&c| m.peak.get(c))
            .sum::<u64>()
    };
    if args.json {
        let v: Vec<_> = ranks
            .iter()
            .enumerate()
            .map(|(r, m)| {
                let mut j = m.peak.to_json();
                j["total"] = m.peak_total.into();
                j["model_states"] = states(m).into();
                if let Some(f) = &formula {
                    j["model_states_formula"] = f.1[r].into();
                }
                j
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "ranks": v }))?
        );
        return Ok(());
    }
    println!(
        "plan for {} ranks, {} (ZeRO stage {}): global batch {}, optimizer {}",
        gpus.len(),
        options.mode.name(),
        args.train.zero,
        config.batch_size,
        config.optimizer.name.as_str()
    );
    println!(
        "{:<6} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "rank",
        "params",
        "grads",
        "optimizer",
        "activations",
        "workspace",
        "peak total",
        "model states",
        "formula"
    );
    for (r, m) in ranks.iter().enumerate() {
        let cell = |c: Category| mib(m.peak.get(c));
        println!(
            "{:<6} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>14} {:>14}",
            r,
            cell(Category::Params),
            cell(Category::Grads),
            cell(Category::OptimizerState),
            cell(Category::Activations),
            cell(Category::Workspace),
            mib(m.peak_total),
            mib(states(m)),
            formula.as_ref().map_or("-".into(), |f| mib(f.1[r]))
        );
    }
    if let Some((text, _)) = formula {
        println!("model states (params + grads + optimizer state) by the formula: {text}");
    }
    Ok(())
}

/// The course's model-state formulas per rank, in fp32 with K bytes of optimizer state per
/// parameter: DDP (8 + K)Ψ; ZeRO 1 8Ψ + KΨ/N, ZeRO 2 4Ψ + (4 + K)Ψ/N, ZeRO 3 (8 + K)Ψ/N (the
/// shards are whole tensors, so a rank's share is only near Ψ/N: the rank's own tensors are
/// counted); the parameter server (8 + K)Ψ on rank
/// 0 and 8Ψ on a replica. None where parameters are frozen (LoRA, freeze).
fn model_state_formula(
    gpu: &Gpu,
    config: &wgtrain::train::TrainConfig,
    options: &wgtrain::parallel::ddp::DdpOptions,
    n: usize,
) -> Result<Option<(String, Vec<u64>)>> {
    use wgtrain::parallel::ddp::Mode;
    if config.lora.is_some() || !config.freeze.is_empty() {
        return Ok(None);
    }
    let h = config.optimizer.resolve()?;
    let k = wgtrain::memory::optimizer_bytes_per_param(h.name, h.centered, h.momentum);
    let psi = config.weight_count() as f64;
    // v: the weights the layers read, on every rank (f32, or the half working copies); m: the
    // f32 masters under mixed precision, with the rank that updates them; a rank's gradients
    // are f32 (4 bytes)
    let (v, m) = match config.precision {
        wgtrain::train::config::Precision::Fp32 => (4.0, 0.0),
        _ => (2.0, 4.0),
    };
    let per_rank: Vec<f64> = match (options.mode, options.zero) {
        (Mode::Dp, _) => (0..n)
            .map(|r| {
                if r == 0 {
                    (v + m + 4.0 + k) * psi
                } else {
                    (v + 4.0) * psi
                }
            })
            .collect(),
        (Mode::Ddp, 0) => vec![(v + m + 4.0 + k) * psi; n],
        (Mode::Ddp, _) => {
            // each rank's own share of Ψ, from the same partition the run uses
            let ledger = gpu.ledger();
            let t = wgtrain::train::Trainer::new(&ledger, config.clone())?;
            let sizes: Vec<usize> = t
                .model
                .trainable_params()
                .iter()
                .map(|p| p.numel())
                .collect();
            let owner = wgtrain::parallel::ddp::partition(&sizes, n);
            (0..n)
                .map(|r| {
                    let own: usize = sizes
                        .iter()
                        .zip(&owner)
                        .filter(|(_, &o)| o == r)
                        .map(|(s, _)| s)
                        .sum();
                    let own = own as f64;
                    match options.zero {
                        1 => (v + 4.0) * psi + (m + k) * own,
                        2 => v * psi + (4.0 + m + k) * own,
                        _ => (v + m + 4.0 + k) * own,
                    }
                })
                .collect()
        }
    };
    let (whole, replica, mk) = (v + m + 4.0, v + 4.0, m + k);
    let text = match (options.mode, options.zero) {
        (Mode::Dp, _) => {
            format!("({whole} + {k})Ψ on the server, {replica}Ψ on a replica, Ψ = {psi}")
        }
        (Mode::Ddp, 0) => format!("({whole} + {k})Ψ, Ψ = {psi}"),
        (_, 1) => format!("{replica}Ψ + {mk}Ψ_r (Ψ_r: the rank's own tensors, ≈ Ψ/{n}), Ψ = {psi}"),
        (_, 2) => format!("{v}Ψ + (4 + {mk})Ψ_r (Ψ_r: the rank's own tensors, ≈ Ψ/{n}), Ψ = {psi}"),
        _ => format!("({whole} + {k})Ψ_r (Ψ_r: the rank's own tensors, ≈ Ψ/{n}), Ψ = {psi}"),
    };
    Ok(Some((text, per_rank.iter().map(|&b| b as u64).collect())))
}
