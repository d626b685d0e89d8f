//! Trains the digits MLP with every optimizer for the same number of steps and prints a table
//! (final loss, test accuracy, optimizer-state bytes per parameter, ms/step), then writes the loss
//! curves to an SVG file.
//!
//!     cargo run --release --example optimizers [-- STEPS]

use std::time::Instant;
use wgtrain::gpu::Category;
use wgtrain::optim::OptimizerName;
use wgtrain::plot::{line_chart, Series};
use wgtrain::train::{TrainConfig, Trainer};
use wgtrain::Gpu;

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
        // a fresh device per optimizer, so the pool's figures are this optimizer's alone
        let gpu = Gpu::new(None)?;
        let mut trainer = Trainer::new(&gpu, config)?;
        let params = trainer.model.num_params();
        let state_bytes = gpu.memory().live.get(Category::OptimizerState);
        let mut points = vec![];
        let mut last = f32::NAN;
        let start = Instant::now();
        while trainer.step < steps {
            let log = (trainer.step + 1) % 10 == 0;
            if let Some(loss) = trainer.train_step(log)? {
                points.push((trainer.step as f64, loss as f64));
                last = loss;
            }
        }
        gpu.sync()?;
        let ms = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
        let acc = trainer.evaluate()?.accuracy.unwrap_or(f32::NAN);
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
