//! Trains the digits MLP with every optimizer for the same number of steps and prints a table
//! (final loss, test accuracy, optimizer-state bytes per parameter, ms/step), then writes the loss
//! curves to an SVG file.
//!
//!     cargo run --release --example optimizers [-- STEPS]

use wgtrain::gpu::Category;
use wgtrain::optim::OptimizerName;
use wgtrain::plot::{line_chart, Series};
use wgtrain::train::{Event, Local, Observer, TrainConfig, Trainer};
use wgtrain::Gpu;

/// The logging steps' (step, loss, ms per step) a run reports.
#[derive(Default)]
struct Logged(std::cell::RefCell<Vec<(u64, f32, f64)>>);

impl Observer for Logged {
    fn observe(&self, event: Event<'_>) -> wgtrain::Result<()> {
        if let Event::Step(s) = event {
            self.0.borrow_mut().push((s.step, s.loss, s.ms_per_step));
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1000);
    let base = TrainConfig::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/configs/mlp-digits.json"
    )))?;
    println!(
        "digits MLP {:?}, batch {}, {steps} steps, tuned values from assets/configs/optimizers/",
        base.mlp.hidden, base.batch_size
    );
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>12} {:>9}",
        "optimizer", "lr", "final loss", "test acc", "state B/param", "ms/step"
    );
    let mut curves = vec![];
    for name in OptimizerName::ALL {
        let mut config = base.with_optimizer(name)?;
        config.steps = steps;
        (config.log_every, config.eval_every) = (10, 0);
        // a fresh device per optimizer, so the pool's figures are this optimizer's alone
        let gpu = Gpu::new(None)?;
        let mut trainer = Trainer::new(&gpu, config)?;
        let params = trainer.model.num_params();
        let state_bytes = gpu.memory().live.get(Category::OptimizerState);
        let logged = Logged::default();
        let report = trainer.fit(&mut Local, &logged)?;
        let logged = logged.0.into_inner();
        let points: Vec<(f64, f64)> = logged.iter().map(|l| (l.0 as f64, l.1 as f64)).collect();
        let last = logged.last().map_or(f32::NAN, |l| l.1);
        // the steps' time, without the final evaluation
        let ms = logged.iter().map(|l| l.2).sum::<f64>() / logged.len().max(1) as f64;
        let acc = report.eval.and_then(|r| r.accuracy).unwrap_or(f32::NAN);
        println!(
            "{:<10} {:>9} {:>10.4} {:>9.2}% {:>12.3} {:>9.2}",
            name.as_str(),
            trainer.config.lr,
            last,
            100.0 * acc,
            state_bytes as f64 / params as f64,
            ms
        );
        curves.push(Series {
            name: name.as_str().to_string(),
            points,
        });
    }
    let path = std::env::temp_dir().join("wgtrain-optimizers-loss.svg");
    std::fs::write(
        &path,
        line_chart(
            "digits MLP: training loss by optimizer",
            "step",
            "training loss",
            true,
            &curves,
        ),
    )?;
    println!("loss curves: {}", path.display());
    Ok(())
}
