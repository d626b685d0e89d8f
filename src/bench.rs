//! `wgtrain bench`: matmul throughput and training-step time on fixed workloads, for comparing
//! adapters and kernel changes. Timings are wall clock around a sync, medians of repeated runs
//! after warm-up; they are never part of `cargo test` (only a smoke run of `--quick` is).

use crate::data::rows::Rows;
use crate::data::text::Text;
use crate::error::Result;
use crate::gpu::{Category, Gpu, KernelTime, ProfileClock};
use crate::nn::{GptConfig, MlpConfig};
use crate::ops::matmul::{matmul, matmul_f16, Layout, MatmulDims};
use crate::optim::{OptimizerConfig, OptimizerName};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};
use crate::train::config::Precision;
use crate::train::{ModelKind, Task, TrainConfig, Trainer};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct MatmulResult {
    /// "timestamp queries" or "wall clock"
    pub timing: &'static str,
    pub dtype: &'static str,
    pub layout: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub gflops: f64,
    pub ms: f64,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct StepResult {
    pub workload: String,
    pub ms_per_step: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    pub samples_per_s: f64,
    pub peak_bytes: u64,
    /// From the workload's start (device creation) to the end of its first step: device set-up,
    /// shader compilation and the step itself, with the autotune's and the driver's caches as
    /// the process found them.
    pub first_step_ms: f64,
    /// The same with nothing cached (a machine's first run, autotune included); `bench` measures
    /// it in a child of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_step_cold_ms: Option<f64>,
    pub submits_per_step: f64,
    /// Where a timed step's wall time goes on the host, means over the timed steps.
    #[serde(default)]
    pub cost: StepCost,
    /// How `profile` was timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_clock: Option<ProfileClock>,
    /// GPU time per kernel in one more step, when asked for (`bench --profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<KernelTime>>,
}

/// A step's host-side split, ms per step (means over the timed steps): `record` is the ops
/// recording their dispatches (and the trainer's host work between them), `encode` turning them
/// into a command buffer at the flush (bind groups, passes), `submit` the driver's submit, `wait`
/// the host waiting for the device. On a CPU adapter `wait` is the kernels' run time and what
/// the driver does between them.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
pub struct StepCost {
    pub dispatches: f64,
    pub record_ms: f64,
    pub encode_ms: f64,
    pub submit_ms: f64,
    pub wait_ms: f64,
}

/// How to run a step workload.
#[derive(Clone, Copy, Debug)]
pub struct StepOptions {
    /// Untimed steps after the first.
    pub warmup: usize,
    /// Timed steps (the median is reported); 0 runs the first step only (ms_per_step 0).
    pub steps: usize,
    /// The scaled-down smoke version of the workload.
    pub quick: bool,
    /// Time every kernel in one more step ([`Gpu::profile`]).
    pub profile: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median ms of `reps` timed runs of `work` after `warmup` untimed ones, each ended by a sync,
/// and the mean host-side split of the timed runs.
fn time_runs(
    gpu: &Gpu,
    warmup: usize,
    reps: usize,
    mut work: impl FnMut() -> Result<()>,
) -> Result<(f64, StepCost)> {
    for _ in 0..warmup {
        work()?;
        gpu.sync()?;
    }
    let before = gpu.stats();
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        work()?;
        gpu.sync()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let after = gpu.stats();
    let n = reps.max(1) as f64;
    let per_step_ms = |a: u64, b: u64| (a - b) as f64 / 1e6 / n;
    let mut cost = StepCost {
        dispatches: (after.dispatches - before.dispatches) as f64 / n,
        record_ms: 0.0,
        encode_ms: per_step_ms(after.encode_ns, before.encode_ns),
        submit_ms: per_step_ms(after.submit_ns, before.submit_ns),
        wait_ms: per_step_ms(after.wait_ns, before.wait_ns),
    };
    let mean = samples.iter().sum::<f64>() / n;
    cost.record_ms = (mean - cost.encode_ms - cost.submit_ms - cost.wait_ms).max(0.0);
    Ok((median(samples), cost))
}

/// Times a training step: its first run (from `start`, so device set-up and shader compilation
/// count), then the median of `opts.steps` after `opts.warmup`, the submits each step cost, and
/// with `opts.profile` the kernels of one more step.
fn time_step(
    gpu: &Gpu,
    workload: &str,
    start: Instant,
    opts: StepOptions,
    (samples, tokens): (usize, Option<usize>),
    mut step: impl FnMut() -> Result<()>,
) -> Result<StepResult> {
    step()?;
    gpu.sync()?;
    let first_step_ms = start.elapsed().as_secs_f64() * 1e3;
    let submits0 = gpu.stats().submits;
    let (ms, cost) = if opts.steps == 0 {
        (0.0, StepCost::default())
    } else {
        time_runs(gpu, opts.warmup, opts.steps, &mut step)?
    };
    let ran = (opts.warmup + opts.steps).max(1);
    let submits = (gpu.stats().submits - submits0) as f64 / ran as f64;
    let profile_clock = opts.profile.then(|| ProfileClock::for_device(gpu));
    let profile = match profile_clock {
        Some(clock) => Some(gpu.profile(clock, &mut step)?),
        None => None,
    };
    Ok(StepResult {
        workload: workload.to_string(),
        ms_per_step: ms,
        tokens_per_s: tokens.filter(|_| ms > 0.0).map(|t| t as f64 / (ms * 1e-3)),
        samples_per_s: if ms > 0.0 {
            samples as f64 / (ms * 1e-3)
        } else {
            0.0
        },
        peak_bytes: gpu.memory().peak_total,
        first_step_ms,
        first_step_cold_ms: None,
        submits_per_step: submits,
        cost,
        profile_clock,
        profile,
    })
}

/// The matmul shapes of the W-GPT step: (M, N, K, layout) for the qkv, attention output, MLP and
/// LM-head projections (forward NT; weight gradients TN; input gradients NN).
pub fn w_gpt_shapes() -> Vec<(usize, usize, usize, Layout)> {
    let (r, c, v) = (8 * 128, 256, 256);
    vec![
        (r, 3 * c, c, Layout::NT),
        (r, c, c, Layout::NT),
        (r, 4 * c, c, Layout::NT),
        (r, c, 4 * c, Layout::NT),
        (r, v, c, Layout::NT),
        (4 * c, c, r, Layout::TN),
        (r, 4 * c, c, Layout::NN),
    ]
}

/// How a benchmarked matmul stores its operands, and so which path it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operands {
    /// A, B and C f32: the autotuned kernel.
    F32,
    /// A and B f16, C f32: the f16 subgroup kernel (`matmul_f16`; SHADER_F16 and subgroups).
    F16,
    /// A, B and C in this half type, as mixed-precision training runs them: [`matmul`] reads A
    /// and B through f32 views, runs the f32 kernel and rounds C once (`ops::View`).
    Views(DType),
}

impl Operands {
    /// The dtype column of the bench's table.
    pub fn label(self) -> &'static str {
        match self {
            Operands::F32 => "f32",
            Operands::F16 => "f16",
            Operands::Views(DType::F16) => "f16-views",
            Operands::Views(_) => "bf16-views",
        }
    }

    fn dtype(self) -> DType {
        match self {
            Operands::F32 => DType::F32,
            Operands::F16 => DType::F16,
            Operands::Views(d) => d,
        }
    }
}

/// GFLOP/s of one matmul shape with its operands stored as `operands` says.
#[allow(clippy::too_many_arguments)]
pub fn bench_matmul(
    gpu: &Gpu,
    m: usize,
    n: usize,
    k: usize,
    layout: Layout,
    operands: Operands,
    warmup: usize,
    reps: usize,
) -> Result<MatmulResult> {
    let mut rng = Rng::new(0);
    let mut operand = |name: &str, numel: usize, dtype: DType| -> Result<Tensor> {
        let v = Tensor::from_f32(
            gpu,
            name,
            &[numel],
            &rng.uniform_vec(numel, -1.0, 1.0),
            Category::Workspace,
        )?;
        if dtype == DType::F32 {
            return Ok(v);
        }
        let h = Tensor::empty(gpu, name, &[numel], dtype, Category::Workspace)?;
        crate::ops::cast::cast(gpu, &v, &h);
        Ok(h)
    };
    let a = operand("a", m * k, operands.dtype())?;
    let b = operand("b", k * n, operands.dtype())?;
    let c_dtype = match operands {
        Operands::Views(d) => d,
        _ => DType::F32,
    };
    let c = operand("c", m * n, c_dtype)?;
    let d = MatmulDims::new(m, n, k, layout);
    // GPU time from timestamp queries on GPUs; wall clock around a sync on CPU adapters (whose
    // timestamps see the work handed to the driver's threads, not its run: gpu/profile.rs) and
    // where the adapter has no timestamps
    let wall = ProfileClock::for_device(gpu) == ProfileClock::Wall;
    let timing = if wall {
        "wall clock"
    } else {
        "timestamp queries"
    };
    let mut samples = vec![];
    for i in 0..warmup + reps {
        let mut result = Ok(());
        let mut record = || {
            if operands == Operands::F16 {
                result = matmul_f16(gpu, d, &a, &b, None, &c, false);
            } else {
                matmul(gpu, d, &a, &b, None, &c, false)
            }
        };
        let ms = if wall {
            gpu.sync()?;
            let t = Instant::now();
            record();
            gpu.sync()?;
            t.elapsed().as_secs_f64() * 1e3
        } else {
            gpu.gpu_time_ms(record)?
                .expect("an adapter with timestamps times them")
        };
        result?;
        if i >= warmup {
            samples.push(ms);
        }
    }
    let ms = median(samples);
    Ok(MatmulResult {
        timing,
        dtype: operands.label(),
        layout: format!("{layout:?}"),
        m,
        n,
        k,
        gflops: 2.0 * (m * n * k) as f64 / (ms * 1e-3) / 1e9,
        ms,
    })
}

/// A step workload's trainer: `config` (the model, batch and optimizer) over `task`, in
/// `precision` (fp16 and bf16: mixed precision, as `--precision` trains, fp16 with its loss
/// scaler), so the bench times [`Trainer::train_step`], the step every run takes: the batch
/// drawn and uploaded, forward and backward, the norm, the guard, the update, one submit.
fn step_trainer(
    gpu: &Gpu,
    mut config: TrainConfig,
    task: Task,
    precision: Precision,
) -> Result<Trainer<'_>> {
    if precision == Precision::Fp16 && !gpu.features().contains(wgpu::Features::SHADER_F16) {
        return Err(crate::Error::Config(format!(
            "fp16 workloads need SHADER_F16, which {} does not offer",
            gpu.info().name
        )));
    }
    config.precision = precision;
    config.lr = 1e-3;
    config.grad_clip = 1.0;
    config.steps = u64::MAX;
    config.eval_every = 0;
    Trainer::with_task(gpu, config, task)
}

/// The name a workload's results go by: "w-gpt", "w-gpt-bf16".
fn workload_name(base: &str, precision: Precision) -> String {
    match precision {
        Precision::Fp32 => base.to_string(),
        p => format!("{base}-{}", p.as_str()),
    }
}

/// W-MLP: 784 → 1024 → 1024 → 10, ReLU, softmax cross-entropy, batch 256, Adam, random data, in
/// `precision` (fp16 and bf16: mixed precision, as `--precision` trains).
/// With `quick`, a scaled-down version (hidden 128, batch 32) for smoke runs.
pub fn bench_w_mlp(
    adapter: Option<&str>,
    opts: StepOptions,
    precision: Precision,
) -> Result<StepResult> {
    let quick = opts.quick;
    let start = Instant::now();
    let gpu = Gpu::new(adapter)?;
    let b = if quick { 32 } else { 256 };
    let hidden = if quick { 128 } else { 1024 };
    let config = TrainConfig {
        model: ModelKind::Mlp,
        data: "random rows".into(),
        batch_size: b,
        optimizer: OptimizerConfig::named(OptimizerName::Adam),
        mlp: MlpConfig {
            hidden: vec![hidden, hidden],
            activation: crate::nn::Activation::Relu,
            ..MlpConfig::default()
        },
        ..TrainConfig::default()
    };
    // random rows: 784 features in 10 classes, a batch's worth of them many times over
    let task = Task::Rows(Rows::random(784, 10, 16 * b, b, 1));
    let mut t = step_trainer(&gpu, config, task, precision)?;
    let step = || t.train_step(false).map(|_| ());
    let name = workload_name("w-mlp", precision);
    time_step(&gpu, &name, start, opts, (b, None), step)
}

/// W-GPT: vocab 256, context 128, 4 layers, 4 heads, d_model 256, MLP 1024, GELU, pre-LN,
/// batch 8, AdamW, random tokens, in `precision` (as [`bench_w_mlp`]).
/// With `quick`, a scaled-down version (1 layer, d_model 64, context 32, batch 2) for smoke runs.
pub fn bench_w_gpt(
    adapter: Option<&str>,
    opts: StepOptions,
    precision: Precision,
) -> Result<StepResult> {
    let full = GptConfig {
        vocab_size: 256,
        block_size: 128,
        n_layer: 4,
        n_head: 4,
        n_embd: 256,
        ..Default::default()
    };
    bench_gpt(adapter, opts, "w-gpt", full, 8, precision)
}

/// W-GPT-S, a small model whose step is mostly fixed costs: vocab 256, context 64, 4 layers, 4
/// heads, d_model 128, batch 12, AdamW, random tokens. `quick` as W-GPT's.
pub fn bench_w_gpt_s(
    adapter: Option<&str>,
    opts: StepOptions,
    precision: Precision,
) -> Result<StepResult> {
    let full = GptConfig {
        vocab_size: 256,
        block_size: 64,
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        ..Default::default()
    };
    bench_gpt(adapter, opts, "w-gpt-s", full, 12, precision)
}

/// A GPT step workload: `config` at batch `b` (context its block size) in `precision`, or with
/// `opts.quick` the scaled-down smoke version.
fn bench_gpt(
    adapter: Option<&str>,
    opts: StepOptions,
    name: &str,
    full: GptConfig,
    b: usize,
    precision: Precision,
) -> Result<StepResult> {
    let quick = opts.quick;
    let start = Instant::now();
    let gpu = Gpu::new(adapter)?;
    let gpt = if quick {
        GptConfig {
            vocab_size: 256,
            block_size: 32,
            n_layer: 1,
            n_head: 4,
            n_embd: 64,
            ..Default::default()
        }
    } else {
        full
    };
    let (b, t) = if quick { (2, 32) } else { (b, gpt.block_size) };
    let config = TrainConfig {
        model: ModelKind::Gpt,
        data: "random bytes".into(),
        batch_size: b,
        optimizer: OptimizerConfig::named(OptimizerName::Adamw),
        gpt,
        ..TrainConfig::default()
    };
    // random bytes (vocab 256): windows of the context drawn from them, as text trains
    let mut rng = Rng::new(2);
    let bytes: Vec<u8> = (0..64 * b * t).map(|_| rng.below(256) as u8).collect();
    let text = Text::from_bytes(bytes).map_err(crate::Error::Data)?;
    let mut trainer = step_trainer(&gpu, config, Task::Text(text), precision)?;
    let step = || trainer.train_step(false).map(|_| ());
    let name = workload_name(name, precision);
    time_step(&gpu, &name, start, opts, (b, Some(b * t)), step)
}
