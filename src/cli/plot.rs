//! `wgtrain plot METRICS.jsonl... --out FILE.svg` and `train --plot FILE.svg`: loss curves as SVG
//! charts (`wgtrain::plot`: self-contained SVG, no font or graphics dependency).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use wgtrain::plot::{line_chart, Series};
use wgtrain::train::metrics::Curves;

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Metrics files written by `wgtrain train --metrics` (one or more: overlaid).
    #[arg(required = true)]
    metrics: Vec<PathBuf>,
    /// The chart to write (.svg).
    #[arg(long)]
    out: PathBuf,
    /// Plot the loss on a log scale.
    #[arg(long)]
    log: bool,
}

/// Refuses a chart path wgtrain cannot write, before any training time is spent.
pub fn check_chart_path(path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => Ok(()),
        Some("png") => bail!(
            "{}: wgtrain writes charts as SVG only (its plotter needs no font or graphics \
             library); use a .svg name (any browser opens it, `rsvg-convert` makes a PNG)",
            path.display()
        ),
        _ => bail!("{}: a chart is written as .svg", path.display()),
    }
}

/// The series of one run: its training loss and, when it has evaluations, its eval loss.
fn series(label: &str, c: &Curves) -> Vec<Series> {
    let mut out = vec![Series {
        name: format!("{label}train loss"),
        points: c.train.clone(),
    }];
    if !c.eval.is_empty() {
        out.push(Series {
            name: format!("{label}eval loss"),
            points: c.eval.clone(),
        });
    }
    out
}

/// Writes the chart of `runs` ((label, curves) pairs) to `path`.
pub fn write_chart(path: &Path, title: &str, runs: &[(String, Curves)], log: bool) -> Result<()> {
    let all: Vec<Series> = runs.iter().flat_map(|(l, c)| series(l, c)).collect();
    if all.iter().all(|s| s.points.is_empty()) {
        bail!("nothing to plot: no step or eval records");
    }
    let svg = line_chart(title, "step", "loss", log, &all);
    wgtrain::files::write_atomically(path, svg.as_bytes())
        .with_context(|| format!("cannot write the chart {}", path.display()))?;
    Ok(())
}

pub fn run(args: PlotArgs) -> Result<()> {
    check_chart_path(&args.out)?;
    let inputs: Vec<&Path> = args.metrics.iter().map(|p| p.as_path()).collect();
    wgtrain::files::claim_output(&args.out, &inputs, false, "the chart")?;
    let mut runs = vec![];
    for path in &args.metrics {
        let curves = Curves::load(path)?;
        let label = if args.metrics.len() > 1 {
            format!(
                "{}: ",
                path.file_stem().and_then(|s| s.to_str()).unwrap_or("run")
            )
        } else {
            String::new()
        };
        runs.push((label, curves));
    }
    write_chart(&args.out, "loss", &runs, args.log)?;
    eprintln!("plot: {}", args.out.display());
    Ok(())
}
