//! `wgtrain optimize`: Newton and quasi-Newton methods on full-batch problems.

use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Instant;
use wgtrain::plot::{line_chart, Series};
use wgtrain::second_order::{minimize, problem, LineSearch, Method, Options};
use wgtrain::Gpu;

#[derive(clap::Args)]
pub struct OptimizeArgs {
    /// rosenbrock | rosenbrock:N | quadratic:N:KAPPA | logreg | mlp-digits
    #[arg(long)]
    problem: String,
    /// gd | newton | sr1 | dfp | bfgs | lbfgs (repeat to compare several on one plot)
    #[arg(long, required = true)]
    method: Vec<String>,
    #[arg(long, default_value_t = 200)]
    max_iter: usize,
    /// Stop when the gradient norm is at most this.
    #[arg(long, default_value_t = 1e-5)]
    tol: f64,
    /// L-BFGS memory.
    #[arg(long, default_value_t = 10)]
    memory: usize,
    /// auto (strong Wolfe for dfp, bfgs, lbfgs; Armijo backtracking otherwise) or exact (the
    /// closed-form minimiser along each direction: quadratics only).
    #[arg(long, default_value = "auto")]
    line_search: String,
    /// Write the run (the last method's, or an array for several) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw log ‖∇f‖ against iteration (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

pub fn run(adapter: Option<&str>, args: OptimizeArgs) -> Result<()> {
    for path in [&args.json, &args.plot].into_iter().flatten() {
        wgtrain::files::claim_output(path, &[], false, "the results")?;
    }
    let methods = args
        .method
        .iter()
        .map(|m| Method::parse(m))
        .collect::<Result<Vec<_>, _>>()?;
    if args.max_iter == 0 || args.tol < 0.0 || args.tol.is_nan() {
        bail!("--max-iter must be positive and --tol not negative");
    }
    let gpu = Gpu::new(adapter)?;
    let opts = Options {
        max_iter: args.max_iter,
        tol: args.tol,
        memory: args.memory,
        line_search: LineSearch::parse(&args.line_search)?,
    };
    let mut reports = vec![];
    for method in methods {
        let mut obj = problem(&gpu, &args.problem)?;
        let start = Instant::now();
        let r = minimize(&gpu, obj.as_mut(), method, &opts, None)?;
        let secs = start.elapsed().as_secs_f64();
        println!("{} on {} ({} dimensions)", r.method, r.problem, obj.dim());
        println!(
            "{:>5} {:>16} {:>12} {:>10}",
            "iter", "f", "|grad f|", "step"
        );
        for h in &r.history {
            println!(
                "{:>5} {:>16.9e} {:>12.4e} {:>10.3e}",
                h.iter, h.f, h.grad_norm, h.step
            );
        }
        println!(
            "{}: {} after {} iterations, {} gradient evaluations, {secs:.2} s: f = {:.9e}, |grad f| = {:.3e}, x[..{}] = {:?}",
            r.method,
            r.reason,
            r.iterations,
            r.grad_evals,
            r.f,
            r.grad_norm,
            r.x_head.len(),
            r.x_head
        );
        reports.push(r);
    }
    if let Some(path) = &args.json {
        let value = if reports.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            serde_json::to_value(&reports)?
        };
        super::write_output(path, serde_json::to_string_pretty(&value)?.as_bytes())?;
    }
    if let Some(path) = &args.plot {
        let series: Vec<Series> = reports
            .iter()
            .map(|r| Series {
                name: r.method.clone(),
                points: r
                    .history
                    .iter()
                    .map(|h| (h.iter as f64, h.grad_norm))
                    .collect(),
            })
            .collect();
        let svg = line_chart(
            &format!("{}: gradient norm", args.problem),
            "iteration",
            "|grad f|",
            true,
            &series,
        );
        super::write_output(path, svg.as_bytes())?;
        println!("plot: {}", path.display());
    }
    Ok(())
}
