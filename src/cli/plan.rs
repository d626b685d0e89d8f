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
    Ok(())
}
