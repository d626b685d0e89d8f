//! Large-batch training in miniature: the learning-rate scaling rules and warmups of Goyal et
//! al., "Accurate, Large Minibatch SGD" (their ResNet-50 table), on the byte-level GPT of
//! `assets/configs/large-batch.json` reading the shipped 400 kB of War and Peace, at a fixed
//! budget of epochs.
//!
//! Every run trains the same model for one epoch of the training text (360 kB: 22 500 windows
//! of 16 bytes) at a base batch of 8 windows and at k = 8 and 32 times that: a k-times larger
//! batch takes k-times fewer steps, and the largest (256 windows) is about 1 % of the data. The
//! base batch's tuned lr is scaled by none / linear (k) / sqrt (√k), and warmed up over the
//! first quarter epoch by none / constant (the base lr, Goyal's) / gradual, for SGD with
//! momentum and for Adam, over several seeds. It prints the table (validation loss, mean ± std
//! over seeds), and writes `results.json` and the warmup curves (`warmup-OPT-kK.svg`: training
//! loss over the epoch with linear scaling, by warmup, beside the base batch) to --out.
//!
//!     cargo run --release --example large_batch [-- --full] [--quick] [--seeds N] [--out DIR]
//!     cargo run --release --example large_batch -- --table DIR/results.json   # reprint
//!
//! The default cells per optimizer and k are the paper's rows: no scaling, sqrt and linear, each
//! with gradual warmup, and linear with no warmup and with constant warmup. `--full` runs all
//! nine scaling × warmup pairs; `--quick` one seed at k = 8 only. Each cell is also a command:
//! the example prints the `wgtrain train` line that runs it.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;
use wgtrain::optim::schedule::{Scaling, Warmup};
use wgtrain::optim::OptimizerName;
use wgtrain::plot::{line_chart, Series};
use wgtrain::train::{Event, Local, Observer, TrainConfig, Trainer};
use wgtrain::Gpu;

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/configs/large-batch.json"
);
const BASE_BATCH: usize = 8;
const EPOCHS: f64 = 1.0;
const WARMUP_EPOCHS: f64 = 0.25;
/// Points per training-loss curve (each a readback, so a sync).
const CURVE_POINTS: u64 = 40;

/// The lr each optimizer was tuned to at the base batch: the lowest validation loss of
/// `wgtrain train --config assets/configs/large-batch.json --optimizer O --lr LR --epochs 1
/// --warmup-epochs 0.25 --seed 1337` over LR in {1e-3, 3e-3, 1e-2} for Adam and
/// {0.03, 0.1, 0.3} for momentum (the README has the sweep).
fn base_lr(opt: OptimizerName) -> f32 {
    match opt {
        OptimizerName::Momentum => 0.1,
        _ => 3e-3,
    }
}

#[derive(Clone, Copy)]
struct Cell {
    opt: OptimizerName,
    k: usize,
    scaling: Scaling,
    warmup: Warmup,
}

impl Cell {
    fn batch(&self) -> usize {
        BASE_BATCH * self.k
    }

    fn name(s: Scaling) -> &'static str {
        match s {
            Scaling::None => "none",
            Scaling::Linear => "linear",
            Scaling::Sqrt => "sqrt",
        }
    }

    fn warmup_name(w: Warmup) -> &'static str {
        match w {
            Warmup::None => "none",
            Warmup::Constant => "constant",
            Warmup::Gradual => "gradual",
        }
    }

    /// The cell's run as a config.
    fn config(&self, base: &TrainConfig, seed: u64) -> Result<TrainConfig, wgtrain::Error> {
        let mut c = base.with_optimizer(self.opt)?;
        c.lr = base_lr(self.opt);
        c.seed = seed;
        c.batch_size = self.batch();
        let s = &mut c.schedule;
        s.scaling = self.scaling;
        s.base_batch_size = BASE_BATCH;
        s.warmup = self.warmup;
        // Goyal's constant warmup runs at the base batch's lr: 1/k of the linearly scaled one
        s.warmup_lr_ratio = 1.0 / self.k as f32;
        c.steps = c.steps_for_epochs(EPOCHS)?;
        c.schedule.warmup_steps = match self.warmup {
            Warmup::None => 0,
            _ => c.steps_for_epochs(WARMUP_EPOCHS)?,
        };
        c.validate()?;
        Ok(c)
    }

    /// The same run from the command line.
    fn command(&self, seed: u64) -> String {
        let mut cmd = format!(
            "wgtrain train --config assets/configs/large-batch.json --optimizer {} --lr {} \
             --batch-size {} --epochs {EPOCHS} --seed {seed}",
            self.opt.as_str(),
            base_lr(self.opt),
            self.batch()
        );
        if self.scaling != Scaling::None {
            cmd += &format!(
                " --lr-scaling {} --base-batch-size {BASE_BATCH}",
                Cell::name(self.scaling)
            );
        }
        cmd += &format!(" --warmup {}", Cell::warmup_name(self.warmup));
        if self.warmup != Warmup::None {
            cmd += &format!(" --warmup-epochs {WARMUP_EPOCHS}");
        }
        if self.warmup == Warmup::Constant {
            cmd += &format!(" --warmup-lr-ratio {}", 1.0 / self.k as f32);
        }
        cmd
    }
}

/// One seed of one cell.
struct Outcome {
    peak_lr: f32,
    steps: u64,
    /// The validation loss, or why the run stopped.
    result: Result<f64, String>,
    /// (epoch, training loss).
    curve: Vec<(f64, f64)>,
    secs: f64,
}

/// The logging steps' (step, loss) a run reports.
#[derive(Default)]
struct Curve(std::cell::RefCell<Vec<(u64, f32)>>);

impl Observer for Curve {
    fn observe(&self, event: Event<'_>) -> wgtrain::Result<()> {
        if let Event::Step(s) = event {
            self.0.borrow_mut().push((s.step, s.loss));
        }
        Ok(())
    }
}

fn train(gpu: &Gpu, config: TrainConfig, epoch: usize) -> Result<Outcome, wgtrain::Error> {
    let started = Instant::now();
    let (steps, batch, peak_lr) = (config.steps, config.batch_size, config.peak_lr());
    let mut config = config;
    (config.log_every, config.eval_every) = ((steps / CURVE_POINTS).max(1), 0);
    let mut trainer = Trainer::new(gpu, config)?;
    let logged = Curve::default();
    // a non-finite step stops the run (the config's max_nonfinite_steps, 1)
    let result = match trainer.fit(&mut Local, &logged) {
        Err(wgtrain::Error::NonFinite(e)) => Err(format!("diverged at step {}: {e}", trainer.step)),
        Err(e) => return Err(e),
        Ok(_) if trainer.nonfinite_weights()? > 0 => Err("diverged: non-finite weights".into()),
        Ok(report) => Ok(report.eval.map_or(f64::NAN, |r| r.loss as f64)),
    };
    let curve = logged
        .0
        .into_inner()
        .into_iter()
        .map(|(step, loss)| ((step as usize * batch) as f64 / epoch as f64, loss as f64))
        .collect();
    Ok(Outcome {
        peak_lr,
        steps,
        result,
        curve,
        secs: started.elapsed().as_secs_f64(),
    })
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The pointwise mean of curves read at the same steps (the seeds of one cell); a diverged
/// seed's shorter curve ends the mean where it ends.
fn mean_curve(curves: &[&Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let len = curves.iter().map(|c| c.len()).min().unwrap_or(0);
    (0..len)
        .map(|i| {
            let ys: Vec<f64> = curves.iter().map(|c| c[i].1).collect();
            (curves[0][i].0, mean_std(&ys).0)
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let quick = flag("--quick");
    let seeds: u64 = match value("--seeds") {
        Some(s) => s.parse()?,
        None if quick => 1,
        None => 3,
    };
    let out = value("--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wgtrain-large-batch"));
    std::fs::create_dir_all(&out)?;

    let mut base = TrainConfig::load(std::path::Path::new(CONFIG))?;
    // the config names the text relative to the repository, as the CLI runs it
    base.data = concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + &base.data;
    let epoch = wgtrain::train::load_task(&base)?.epoch_size(&base);
    let pairs: Vec<(Scaling, Warmup)> = if flag("--full") {
        [Scaling::None, Scaling::Sqrt, Scaling::Linear]
            .into_iter()
            .flat_map(|s| [Warmup::None, Warmup::Constant, Warmup::Gradual].map(|w| (s, w)))
            .collect()
    } else {
        vec![
            (Scaling::None, Warmup::Gradual),
            (Scaling::Sqrt, Warmup::Gradual),
            (Scaling::Linear, Warmup::None),
            (Scaling::Linear, Warmup::Constant),
            (Scaling::Linear, Warmup::Gradual),
        ]
    };
    let ks: &[usize] = if quick { &[8] } else { &[8, 32] };
    let mut cells = vec![];
    for opt in [OptimizerName::Momentum, OptimizerName::Adam] {
        cells.push(Cell {
            opt,
            k: 1,
            scaling: Scaling::None,
            warmup: Warmup::Gradual,
        });
        for &k in ks {
            for &(scaling, warmup) in &pairs {
                cells.push(Cell {
                    opt,
                    k,
                    scaling,
                    warmup,
                });
            }
        }
    }

    if let Some(file) = value("--table") {
        // the table and curves of an earlier run, from its results.json
        let results: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        return summarize(&results, &out);
    }
    let gpu = Gpu::new(None)?;
    println!(
        "{} cells x {seeds} seeds on {}: GPT of {} weights on War and Peace ({epoch} training \
         windows of {}), {EPOCHS} epoch each, warmups over {WARMUP_EPOCHS} epoch",
        cells.len(),
        gpu.info().name,
        base.weight_count(),
        base.gpt.block_size,
    );
    println!("each cell from the CLI, e.g.: {}", cells[1].command(1));
    let started = Instant::now();
    let mut results = vec![];
    for cell in &cells {
        for seed in 1..=seeds {
            let o = train(&gpu, cell.config(&base, seed)?, epoch)?;
            eprintln!(
                "{} k={} {} {} seed {seed}: {} ({:.1} s)",
                cell.opt.as_str(),
                cell.k,
                Cell::name(cell.scaling),
                Cell::warmup_name(cell.warmup),
                match &o.result {
                    Ok(loss) => format!("{loss:.4}"),
                    Err(why) => why.clone(),
                },
                o.secs
            );
            results.push(json!({
                "optimizer": cell.opt.as_str(), "k": cell.k, "batch": cell.batch(),
                "scaling": Cell::name(cell.scaling), "warmup": Cell::warmup_name(cell.warmup),
                "seed": seed, "peak_lr": o.peak_lr, "steps": o.steps, "seconds": o.secs,
                "eval_loss": o.result.as_ref().ok(),
                "stopped": o.result.as_ref().err(), "curve": o.curve,
                "command": cell.command(seed),
            }));
        }
    }
    println!(
        "{} runs in {:.1} min",
        results.len(),
        started.elapsed().as_secs_f64() / 60.0
    );
    let path = out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    println!("every run: {}", path.display());
    summarize(&results, &out)
}

/// A run that ends worse than guessing uniformly over the 256 bytes (ln 256 nats) diverged,
/// even when its loss stayed finite.
fn diverged(run: &Value) -> Option<String> {
    match run["eval_loss"].as_f64() {
        None => Some(run["stopped"].as_str().unwrap_or("stopped").to_string()),
        Some(l) if l > 256f64.ln() => Some(format!("diverged: validation loss {l:.3e}")),
        Some(_) => None,
    }
}

/// One cell's training-loss curve: the mean over the seeds that did not diverge; where all did,
/// the first seed's, up to where it leaves the chart (twice a uniform guess's loss).
fn warmup_series(runs: &[&Value]) -> Series {
    let r = runs[0];
    let finished: Vec<&Value> = runs
        .iter()
        .copied()
        .filter(|r| diverged(r).is_none())
        .collect();
    let shown = if finished.is_empty() {
        &runs[..1]
    } else {
        &finished[..]
    };
    let curves: Vec<Vec<(f64, f64)>> = shown
        .iter()
        .map(|r| serde_json::from_value(r["curve"].clone()).unwrap_or_default())
        .collect();
    let mut points = mean_curve(&curves.iter().collect::<Vec<_>>());
    points.retain(|p| p.1 < 2.0 * 256f64.ln());
    let warmup = r["warmup"].as_str().unwrap_or("?");
    let name = if r["k"] == 1 {
        format!("batch {}", r["batch"])
    } else if finished.is_empty() {
        format!("{warmup} (diverged)")
    } else if finished.len() < runs.len() {
        format!("{warmup} ({} of {} seeds)", finished.len(), runs.len())
    } else {
        format!("{warmup} warmup")
    };
    Series { name, points }
}

/// The table (runs grouped by cell, in order: mean ± sample std of the validation loss over
/// the seeds that did not diverge) and the warmup curves.
fn summarize(results: &[Value], out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let key = |r: &Value| {
        ["optimizer", "k", "scaling", "warmup"]
            .map(|f| r[f].to_string())
            .join(" ")
    };
    let mut cells: Vec<Vec<&Value>> = vec![];
    for r in results {
        match cells.last_mut() {
            Some(c) if key(c[0]) == key(r) => c.push(r),
            _ => cells.push(vec![r]),
        }
    }
    println!();
    println!(
        "| optimizer | k | batch | scaling | α (peak lr) | warmup | steps | validation loss | s/run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for runs in &cells {
        let r = runs[0];
        let ok: Vec<f64> = runs
            .iter()
            .filter(|r| diverged(r).is_none())
            .map(|r| r["eval_loss"].as_f64().unwrap())
            .collect();
        let lost = runs.len() - ok.len();
        let loss = if ok.is_empty() {
            format!("diverged ({lost} of {lost})")
        } else {
            let (l, ls) = mean_std(&ok);
            let note = if lost > 0 {
                format!(" ({lost} of {} diverged)", runs.len())
            } else {
                String::new()
            };
            format!("{l:.4} ± {ls:.4}{note}")
        };
        let secs = runs
            .iter()
            .map(|r| r["seconds"].as_f64().unwrap_or(0.0))
            .sum::<f64>()
            / runs.len() as f64;
        println!(
            "| {} | {} | {} | {} | {:.4} | {} | {} | {loss} | {secs:.1} |",
            r["optimizer"].as_str().unwrap_or("?"),
            r["k"],
            r["batch"],
            r["scaling"].as_str().unwrap_or("?"),
            r["peak_lr"].as_f64().unwrap_or(f64::NAN),
            r["warmup"].as_str().unwrap_or("?"),
            r["steps"],
        );
    }

    // The warmup curves: per optimizer and k, linear scaling by warmup, with the base batch
    // for reference; each the mean over the seeds.
    let mut ks: Vec<u64> = results.iter().filter_map(|r| r["k"].as_u64()).collect();
    ks.sort();
    ks.dedup();
    for opt in ["momentum", "adam"] {
        for &k_big in ks.iter().filter(|&&k| k > 1) {
            let path = out.join(format!("warmup-{opt}-k{k_big}.svg"));
            let title = format!(
                "{opt}: batch {} (k = {k_big}), linear lr scaling, by warmup",
                BASE_BATCH as u64 * k_big
            );
            let series: Vec<Series> = cells
                .iter()
                .filter(|runs| {
                    let k = runs[0]["k"].as_u64().unwrap_or(0);
                    runs[0]["optimizer"] == opt
                        && (k == 1 || (k == k_big && runs[0]["scaling"] == "linear"))
                })
                .map(|runs| warmup_series(runs))
                .collect();
            std::fs::write(
                &path,
                line_chart(
                    &title,
                    "epoch",
                    "training loss (mean over seeds)",
                    true,
                    &series,
                ),
            )?;
            println!("warmup curves: {}", path.display());
        }
    }
    Ok(())
}
