//! Every method on logistic regression, Rosenbrock 2-D and a κ = 1e3 quadratic (n = 100), then on
//! a κ = 1e4 quadratic with exact line searches: a table (iterations, gradient evaluations, wall
//! time, final f, ‖∇f‖) and one convergence plot per problem.
//!
//!     cargo run --release --example quasi_newton

use std::time::Instant;
use wgtrain::plot::{line_chart, Series};
use wgtrain::second_order::{minimize, problem, LineSearch, Method, Options};
use wgtrain::Gpu;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new(None)?;
    // Tolerances are absolute. On the quadratics ‖∇f0‖ = ‖b‖ ≈ 3e3 (κ = 1e3) and 2e4 (κ = 1e4),
    // and with the auto line searches the f32 gradient Ax − b cannot resolve much below 1e-7 of
    // that (see the README); the exact line search evaluates it in float-float.
    let problems = [
        ("logreg", 1e-5, LineSearch::Auto),
        ("rosenbrock", 1e-5, LineSearch::Auto),
        ("quadratic:100:1000", 1e-2, LineSearch::Auto),
        ("quadratic:100:10000", 2e-1, LineSearch::Exact),
    ];
    println!(
        "{:<26} {:<7} {:>6} {:>7} {:>9} {:>16} {:>10}  stop",
        "problem", "method", "iters", "grads", "wall ms", "f", "|grad f|"
    );
    for (spec, tol, line_search) in problems {
        let label = match line_search {
            LineSearch::Exact => format!("{spec} exact"),
            LineSearch::Auto => spec.to_string(),
        };
        let mut series = vec![];
        for method in Method::ALL {
            let mut obj = problem(&gpu, spec)?;
            let opts = Options {
                max_iter: 300,
                tol,
                line_search,
                ..Options::default()
            };
            let start = Instant::now();
            let r = minimize(&gpu, obj.as_mut(), method, &opts, None)?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            println!(
                "{:<26} {:<7} {:>6} {:>7} {:>9.0} {:>16.9e} {:>10.3e}  {}",
                label, r.method, r.iterations, r.grad_evals, ms, r.f, r.grad_norm, r.reason
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
            label.replace([':', ' '], "-")
        ));
        std::fs::write(
            &path,
            line_chart(
                &format!("{label}: gradient norm"),
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
