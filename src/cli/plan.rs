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

/// `plan --devices N [--parallel dp|ddp] [--zero 1]`: each data-parallel rank's predicted peaks.
fn plan_ranks(
    adapter: Option<&str>,
    args: &PlanArgs,
    config: &wgtrain::train::TrainConfig,
    spec: &str,
) -> Result<()> {
    let gpus = super::train::open_devices(adapter, spec)?;
    let options = super::train::ddp_options(&args.train)?;
    let ranks = wgtrain::parallel::ddp::plan(&gpus, config, &options)?;
    if args.json {
        let v: Vec<_> = ranks
            .iter()
            .map(|m| {
                let mut j = m.peak.to_json();
                j["total"] = m.peak_total.into();
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
        "{:<6} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "rank", "params", "grads", "optimizer", "activations", "workspace", "peak total"
    );
    for (r, m) in ranks.iter().enumerate() {
        let cell = |c: Category| mib(m.peak.get(c));
        println!(
            "{:<6} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
            r,
            cell(Category::Params),
            cell(Category::Grads),
            cell(Category::OptimizerState),
            cell(Category::Activations),
            cell(Category::Workspace),
            mib(m.peak_total)
        );
    }
    Ok(())
}
