//! The composition matrix: precision × strategy × {full training, LoRA} × recompute on a small
//! GPT, every run through the one training loop (`Trainer::fit`) against the one-device run of
//! the same micro-batches. Strategies: one device, DDP, ZeRO 1-3 (2 ranks), GPipe and 1F1B
//! (2 stages), and 2 stages × 2 data-parallel replicas. Each run must give that run's records (every step's loss, the
//! evaluations, the checkpoints) and final parameters bit for bit, its plan must equal its
//! measured peaks on every rank or stage, and its mid-run checkpoint must resume on one device
//! as the unbroken run continues.
//!
//! "Full training" freezes the token embedding: it is also the LM head, and its two gradient
//! contributions are summed in another order across ranks and stages than on one device (a
//! rounding difference, tested with its tolerance in `ddp.rs` and `pipeline.rs`); every other
//! tensor trains. LoRA trains rank-2 adapters with dropout over the frozen base.
//!
//! By default the runs form a pairwise design (every pair of values of any two axes appears in
//! some run, greedily chosen from the full product in a fixed order); `WGTRAIN_MATRIX=full`
//! runs the whole product.

use crate::Recorder;
use std::collections::{HashMap, HashSet};
use wgtrain::gpu::Gpu;
use wgtrain::nn::lora::LoraConfig;
use wgtrain::nn::Recompute;
use wgtrain::parallel::ddp::{self, DdpOptions};
use wgtrain::parallel::pipeline::{self, Partition, PipelineOptions};
use wgtrain::parallel::schedule::Schedule;
use wgtrain::parallel::{Collective, InProcess};
use wgtrain::train::checkpoint::Checkpoint;
use wgtrain::train::config::Precision;
use wgtrain::train::{Local, TrainConfig, Trainer};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    OneDevice,
    Ddp,
    Zero(u8),
    Pipeline(Schedule),
    /// 2 stages (1F1B) × 2 data-parallel replicas, a micro-batch per replica.
    PipelineDdp,
}

const LAYOUTS: [Layout; 8] = [
    Layout::OneDevice,
    Layout::Ddp,
    Layout::Zero(1),
    Layout::Zero(2),
    Layout::Zero(3),
    Layout::Pipeline(Schedule::Gpipe),
    Layout::Pipeline(Schedule::OneFOneB),
    Layout::PipelineDdp,
];
const PRECISIONS: [Precision; 3] = [Precision::Fp32, Precision::Bf16, Precision::Fp16];
const RECOMPUTE: [Recompute; 2] = [Recompute::None, Recompute::Sqrt];

/// One cell: (layout, precision, LoRA, recompute) as indices into the axes.
type Cell = [usize; 4];
const SIZES: Cell = [LAYOUTS.len(), PRECISIONS.len(), 2, RECOMPUTE.len()];

/// The full product in a fixed order, or a pairwise subset of it.
fn design(full: bool) -> Vec<Cell> {
    let mut all = vec![];
    for a in 0..SIZES[0] {
        for b in 0..SIZES[1] {
            for c in 0..SIZES[2] {
                for d in 0..SIZES[3] {
                    all.push([a, b, c, d]);
                }
            }
        }
    }
    if full {
        return all;
    }
    let pairs = |cell: &Cell| -> Vec<(usize, usize, usize, usize)> {
        let mut v = vec![];
        for i in 0..4 {
            for j in i + 1..4 {
                v.push((i, cell[i], j, cell[j]));
            }
        }
        v
    };
    let mut needed: HashSet<_> = all.iter().flat_map(pairs).collect();
    let mut chosen = vec![];
    while !needed.is_empty() {
        let best = all
            .iter()
            .max_by_key(|c| {
                let new = pairs(c).iter().filter(|p| needed.contains(*p)).count();
                // ties to the earliest cell
                (new, std::cmp::Reverse(all.iter().position(|x| x == *c)))
            })
            .copied()
            .unwrap();
        for p in pairs(&best) {
            needed.remove(&p);
        }
        chosen.push(best);
    }
    chosen
}

/// The small GPT of a cell (`micro`: the micro-batch size; 0 for one per rank).
fn config(cell: &Cell, micro: usize, out: &std::path::Path) -> TrainConfig {
    let mut c = TrainConfig {
        batch_size: 8,
        micro_batch_size: micro,
        steps: 3,
        log_every: 1,
        eval_every: 2,
        checkpoint_every: 2,
        out: Some(out.to_str().unwrap().into()),
        precision: PRECISIONS[cell[1]],
        recompute: RECOMPUTE[cell[3]],
        ..TrainConfig::default()
    };
    c.gpt.n_layer = 2;
    c.gpt.n_embd = 32;
    c.addition.test_size = 10;
    if cell[2] == 1 {
        c.lora = Some(LoraConfig {
            r: 2,
            alpha: 4.0,
            dropout: 0.1,
            ..LoraConfig::default()
        });
    } else {
        c.freeze = vec!["wte".into()];
    }
    c
}

fn comms(n: usize) -> Vec<Box<dyn Collective>> {
    InProcess::group(n)
        .into_iter()
        .map(|c| Box::new(c) as Box<dyn Collective>)
        .collect()
}

/// What a run left: its records, final parameters and per-rank peaks.
struct Run {
    records: Vec<String>,
    params: Vec<(String, Vec<f32>)>,
}

fn one_device(gpu: &Gpu, c: &TrainConfig, rec: &Recorder) -> Run {
    let mut t = Trainer::new(gpu, c.clone()).unwrap();
    t.fit(&mut Local, rec).unwrap();
    let params = t
        .model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value().to_f32(gpu).unwrap()))
        .collect();
    Run {
        records: rec.take(),
        params,
    }
}

#[test]
fn every_pair_of_precision_strategy_adapter_and_recompute_equals_one_device() {
    let full = std::env::var("WGTRAIN_MATRIX").is_ok_and(|v| v == "full");
    let cells = design(full);
    let dir = crate::TmpDir::new("matrix");
    let gpu = Gpu::new(None).unwrap();
    let gpus = Gpu::open_n(None, 4).unwrap();
    let f16 = gpu.features().contains(wgpu::Features::SHADER_F16);
    let mut references: HashMap<(usize, usize, usize, usize), Run> = HashMap::new();
    let started = std::time::Instant::now();
    let mut outcomes = vec![];
    for (n, cell) in cells.iter().enumerate() {
        let layout = LAYOUTS[cell[0]];
        let what = format!(
            "{layout:?}, {:?}, {}, recompute {:?}",
            PRECISIONS[cell[1]],
            ["full", "LoRA"][cell[2]],
            RECOMPUTE[cell[3]]
        );
        if PRECISIONS[cell[1]] == Precision::Fp16 && !f16 {
            outcomes.push(format!("{what}: skipped (no SHADER_F16)"));
            continue;
        }
        // data parallel: a micro-batch per rank (4 rows); a pipeline: micro-batches of 2; its
        // replicas: a micro-batch each
        let micro = match layout {
            Layout::Pipeline(_) => 2,
            _ => 4,
        };
        let run_dir = dir.join(format!("run{n}"));
        let reference = references
            .entry((cell[1], cell[2], cell[3], micro))
            .or_insert_with(|| {
                let rec = Recorder::new(run_dir.join("ref-kept"));
                let c = config(cell, micro, &run_dir.join("ref"));
                one_device(&gpu, &c, &rec)
            });
        let rec = Recorder::new(run_dir.join("kept"));
        let out = run_dir.join("out");
        let (run, planned, measured) = match layout {
            // (its plan against its peaks: tests/train/planner.rs)
            Layout::OneDevice => (
                one_device(&gpu, &config(cell, micro, &out), &rec),
                vec![],
                vec![],
            ),
            Layout::Ddp | Layout::Zero(_) => {
                let c = config(cell, 0, &out);
                let options = DdpOptions {
                    zero: match layout {
                        Layout::Zero(k) => k,
                        _ => 0,
                    },
                    ..DdpOptions::default()
                };
                let plan = ddp::plan(&gpus[..2], &c, &options).unwrap();
                let r = ddp::train_observed(&gpus[..2], comms(2), &c, &options, &rec).unwrap();
                let run = Run {
                    records: rec.take(),
                    params: r.params,
                };
                (run, plan, r.memory)
            }
            Layout::Pipeline(_) | Layout::PipelineDdp => {
                let c = config(cell, micro, &out);
                let (schedule, replicas, devices) = match layout {
                    Layout::Pipeline(schedule) => (schedule, 1, &gpus[..2]),
                    _ => (Schedule::OneFOneB, 2, &gpus[..]),
                };
                let options = PipelineOptions {
                    schedule,
                    partition: Partition::Params,
                    replicas,
                    resume: None,
                };
                let plan = pipeline::plan_memory(devices, &c, &options).unwrap();
                let r = pipeline::train_observed(devices, &c, &options, &rec).unwrap();
                let run = Run {
                    records: rec.take(),
                    params: r.params,
                };
                (run, plan, r.memory)
            }
        };
        assert_eq!(run.records, reference.records, "{what}: the records");
        assert_eq!(run.params, reference.params, "{what}: the parameters");
        for (rank, (p, m)) in planned.iter().zip(&measured).enumerate() {
            assert_eq!(
                p.peak_total, m.peak_total,
                "{what}: rank {rank}'s planned peak"
            );
        }
        // the step-2 checkpoint on one device continues as the unbroken run
        let mut c = config(cell, micro, &run_dir.join("resumed"));
        c.checkpoint_every = 0;
        c.out = None;
        let mut t = Trainer::new(&gpu, c).unwrap();
        t.resume(&Checkpoint::load(&run_dir.join("kept").join("at2.safetensors")).unwrap())
            .unwrap();
        let again = Recorder::new(run_dir.join("again"));
        t.fit(&mut Local, &again).unwrap();
        let after: Vec<String> = reference
            .records
            .iter()
            .skip_while(|l| !l.starts_with("step 3 "))
            .filter(|l| !l.starts_with("checkpoint"))
            .cloned()
            .collect();
        assert_eq!(again.take(), after, "{what}: resumed on one device");
        outcomes.push(format!("{what}: equal"));
    }
    eprintln!(
        "{} runs ({}) in {:.1} s:\n  {}",
        cells.len(),
        if full { "full product" } else { "pairwise" },
        started.elapsed().as_secs_f64(),
        outcomes.join("\n  ")
    );
}
