//! What `wgtrain train` shows and records of a run, the same for every strategy: the progress
//! bar (a terminal) or a line per logging step (a log file), evaluations, checkpoints, and the
//! metrics file (JSON Lines: "step", "eval", "end" records in one schema).

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use wgtrain::gpu::MemoryStats;
use wgtrain::train::metrics::Metrics;
use wgtrain::train::{EvalResult, Event, Observer};

/// A checkpoint's path, and the LoRA adapter's bytes written beside it.
pub type Written = (PathBuf, Option<u64>);

pub struct RunObserver {
    metrics: Mutex<Metrics>,
    bar: ProgressBar,
    /// No terminal: a line every logging step instead of the bar.
    plain: bool,
    /// "tokens_per_s" or "samples_per_s".
    unit: &'static str,
    /// The last checkpoint written, and the LoRA adapter's bytes beside it.
    checkpoint: Mutex<Option<Written>>,
}

impl RunObserver {
    /// `steps`: the run's last step; `from`: the step it starts at (a resume); `tokens`: a GPT.
    pub fn new(metrics: Metrics, steps: u64, from: u64, tokens: bool) -> RunObserver {
        let bar = ProgressBar::new(steps);
        bar.set_position(from);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]")
                .expect("a valid template"),
        );
        RunObserver {
            metrics: Mutex::new(metrics),
            bar,
            plain: !std::io::stderr().is_terminal(),
            unit: if tokens {
                "tokens_per_s"
            } else {
                "samples_per_s"
            },
            checkpoint: Mutex::new(None),
        }
    }

    fn line(&self, line: String) {
        if self.plain {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// The run is over: the bar goes; the metrics file is handed back for the end record, with
    /// the last checkpoint the run wrote.
    pub fn finish(self) -> (Metrics, Option<Written>) {
        self.bar.finish_and_clear();
        (
            self.metrics.into_inner().expect("the metrics lock"),
            self.checkpoint.into_inner().expect("the checkpoint lock"),
        )
    }
}

impl Observer for RunObserver {
    fn observe(&self, event: Event<'_>) -> wgtrain::Result<()> {
        match event {
            Event::Step(s) => {
                let mut record = json!({"step": s.step, "loss": s.loss, "lr": s.lr,
                    "ms_per_step": s.ms_per_step, self.unit: s.items_per_s,
                    "mem_live_bytes": s.memory.live.total(), "mem_peak_bytes": s.memory.peak_total});
                for (k, v) in &s.extra {
                    record[k] = v.clone();
                }
                self.metrics.lock().unwrap().write("step", record)?;
                let rate_unit = if self.unit == "tokens_per_s" {
                    "tok/s"
                } else {
                    "samples/s"
                };
                let comm = match s.extra.get("comm_ms").and_then(Value::as_f64) {
                    Some(ms) => format!(" | {ms:.0} ms in collectives so far"),
                    None => String::new(),
                };
                self.bar.set_position(s.step);
                self.bar.set_message(format!(
                    "loss {:.4} | {:.0} {rate_unit} | {:.1} ms/step",
                    s.loss, s.items_per_s, s.ms_per_step
                ));
                // a log file (no terminal, so no progress bar) gets a line every log_every steps
                if self.plain {
                    eprintln!(
                        "step {:>6} | loss {:.4} | lr {:.2e} | {:.1} ms/step | {:.0} {rate_unit}{comm}",
                        s.step, s.loss, s.lr, s.ms_per_step, s.items_per_s
                    );
                }
            }
            Event::Eval { step, result } => {
                self.metrics
                    .lock()
                    .unwrap()
                    .write("eval", eval_json(step, result))?;
                self.line(format!("step {step:>6} | {}", describe(result)));
            }
            Event::Checkpoint {
                step,
                path,
                adapter_bytes,
            } => {
                self.line(format!("step {step:>6} | checkpoint {}", path.display()));
                *self.checkpoint.lock().unwrap() = Some((path.to_path_buf(), adapter_bytes));
            }
        }
        Ok(())
    }
}

pub fn eval_json(step: u64, r: &EvalResult) -> Value {
    let mut v = json!({"step": step, "eval_loss": r.loss, "eval_loss_se": r.loss_se,
                       "eval_on": r.source});
    if let Some(a) = r.accuracy {
        v["accuracy"] = a.into();
    }
    if let Some(se) = r.accuracy_se {
        v["accuracy_se"] = se.into();
    }
    v
}

/// The "end" record every strategy writes: the final evaluation's fields, the steps, wall time
/// and last logged loss, and the lead device's memory (`mem_*`, as one device reports it);
/// a strategy adds its own fields (per-rank arrays) after.
pub fn end_json(
    step: u64,
    eval: &EvalResult,
    wall_s: f64,
    final_loss: Option<f32>,
    mem: &MemoryStats,
) -> Value {
    let mut end = eval_json(step, eval);
    end["steps"] = step.into();
    end["wall_s"] = wall_s.into();
    end["final_loss"] = final_loss.into();
    end["mem_peak_by_category"] = mem.peak.to_json();
    end["mem_peak_total"] = mem.peak_total.into();
    // device memory the pool holds that no tensor uses: size-class rounding plus freed buffers
    // kept for reuse; the most it held, and the share of that no tensor needed (fragmentation)
    end["mem_held_unused_bytes"] = mem.unusable_bytes().into();
    end["mem_peak_held_bytes"] = mem.peak_held.into();
    end["mem_fragmentation"] = mem.fragmentation().into();
    // outside the categories: the recorder's arenas and the readback staging buffers
    end["mem_runtime_bytes"] = mem.runtime.into();
    end
}

/// "eval loss 0.0530 ± 0.0041 | accuracy 97.80 ± 0.46 %": each ± one standard error.
pub fn describe(r: &EvalResult) -> String {
    let loss = format!("eval loss {:.4} ± {:.4}", r.loss, r.loss_se);
    match (r.accuracy, r.accuracy_se) {
        (Some(a), se) => format!(
            "{loss} | accuracy {:.2} ± {:.2} %",
            100.0 * a,
            100.0 * se.unwrap_or(0.0)
        ),
        (None, _) => format!("{loss} (on the {})", r.source),
    }
}
