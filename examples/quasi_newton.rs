//! Every method on logistic regression, Rosenbrock 2-D and a κ = 1e3 quadratic (n = 100): a
//! table (iterations, gradient evaluations, wall time, final f, ‖∇f‖) and convergence plots.
//!
//!     cargo run --release --example quasi_newton

use std::time::Instant;
use wgtrain::plot::{line_chart, Series};
use wgtrain::second_order::{minimize, problem, Method, Options};
use wgtrain::Gpu;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new(None)?;
    // On the quadratic, f32 arithmetic puts a floor near 1e-4 under ‖∇f‖ (see the README).
    let problems = [
        ("logreg", 1e-5),
        ("rosenbrock", 1e-5),
        ("quadratic:100:1000", 1e-3),
    ];
    println!(
        "{:<20} {:<7} {:>6} {:>7} {:>9} {:>16} {:>10}  stop",
        "problem", "method", "iters", "grads", "wall ms", "f", "|grad f|"
    );
    for (spec, tol) in problems {
        let mut series = vec![];
        for method in Method::ALL {
            let mut obj = problem(&gpu, spec)?;
            let opts = Options {
                max_iter: 300,
                tol,
                ..Options::default()
            };
            let start = Instant::now();
            let r = minimize(&gpu, obj.as_mut(), method, &opts, None)?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            println!(
                "{:<20} {:<7} {:>6} {:>7} {:>9.0} {:>16.9e} {:>10.3e}  {}",
                spec, r.method, r.iterations, r.grad_evals, ms, r.f, r.grad_norm, r.reason
            );
            series.push(Series {
                name: r.method.clone(),
                points: r
                    .history
                    .iter()
                    .map(|h| (h.iter as f64, h.grad_norm))
                    .collect(),
            });
        }
        let path = std::env::temp_dir().join(format!(
            "wgtrain-quasi-newton-{}.svg",
            spec.replace(':', "-")
        ));
        std::fs::write(
            &path,
            line_chart(
                &format!("{spec}: gradient norm"),
                "iteration",
                "|grad f|",
                true,
                &series,
            ),
        )?;
        println!("plot: {}", path.display());
    }
    Ok(())
}
