//! Pipeline parallelism: a GPT's blocks split into p contiguous stages, each on its own device
//! and host thread, the step's m micro-batches run through them in a [`Schedule`]'s order.
//!
//! A stage is a [`Trainer`] whose model holds only the stage's parameters (built in a
//! [`Shard`]: the others' values and gradients are never allocated), so its optimizer state
//! and update cover just those. The first stage holds the embeddings, the last the final
//! LayerNorm and the head; the head's tie to the token embedding is kept by giving the last
//! stage its own copy of it and summing the two stages' gradients of it after the flush, so
//! that both copies take the same update and stay equal bit for bit.
//!
//! Activations go forward and their gradients backward through the host (wgpu cannot share a
//! buffer between devices): a stage reads its output back in one transfer and sends it to the
//! next stage's thread, which uploads it. After the flush (every micro-batch's backward), the
//! stages all-reduce the tied embedding's gradient, the loss, and the per-tensor squared norms
//! (added in parameter order, the tied embedding once, as one device adds them), then each
//! updates its parameters.

use super::ddp::{gather_on_host, own_norms, sharded_grad_norm, with_gathered};
use super::ddp::{DataParallel, DdpOptions};
use super::schedule::{actions, simulate, Action, Schedule, Timeline};
use super::{Collective, InProcess};
use crate::error::{Error, Result};
use crate::gpu::{Category, Gpu, MemoryStats};
use crate::nn::gpt::{Part, StageCache, StageOut, StageSpan};
use crate::nn::model::in_f32;
use crate::nn::{zero_grads, Batch, LossGrad, Model, NoHooks};
use crate::tensor::Tensor;
use crate::train::checkpoint::Checkpoint;
use crate::train::eval::{losses_of, Forward};
use crate::train::{EvalResult, Shard, TrainConfig, Trainer};
use crate::train::{Observer, Strategy};
use std::collections::HashSet;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

/// Parameters by name, in model order.
type NamedValues = Vec<(String, Vec<f32>)>;

/// How the blocks are cut into stages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// The largest stage by parameters as small as it can be (the ends' tensors included).
    Params,
    /// The slowest stage by measured time as fast as it can be: one block's, the embeddings'
    /// and the head's forward and backward timed on the first device ([`measured_costs`]).
    Balanced,
    /// These many blocks per stage.
    Blocks(Vec<usize>),
}

#[derive(Clone, Debug)]
pub struct PipelineOptions {
    pub schedule: Schedule,
    pub partition: Partition,
    /// Each stage's data-parallel replicas (1: a plain pipeline): a 2-D layout of stages ×
    /// replicas, replica r's stage s on device r·stages + s. Each replica runs its rows of the
    /// global batch through its own pipeline; a stage's replicas all-reduce its gradients (DDP
    /// buckets) before the update.
    pub replicas: usize,
    /// Every stage resumes from this checkpoint (any run's, one file or parts: it opens as one
    /// set of tensors by name), reading only its own parameters and their optimizer state.
    pub resume: Option<std::path::PathBuf>,
}

/// One action a stage ran, in milliseconds since the run started.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub stage: usize,
    pub step: u64,
    pub action: Action,
    pub start_ms: f64,
    pub end_ms: f64,
}

pub struct PipelineReport {
    /// The global batch's mean loss at each step.
    pub losses: Vec<f32>,
    /// The whole model's parameters at the end, in model order.
    pub params: Vec<(String, Vec<f32>)>,
    /// Each stage's blocks.
    pub spans: Vec<StageSpan>,
    /// Micro-batches per step.
    pub micro_batches: usize,
    /// Each stage's pool figures.
    pub memory: Vec<MemoryStats>,
    /// Every forward and backward every stage ran.
    pub events: Vec<Event>,
    /// Bytes of activations and their gradients each stage sent and received.
    pub link_bytes: Vec<u64>,
    /// The whole model's evaluation at the end.
    pub eval: EvalResult,
}

impl PipelineReport {
    /// The idle fraction of `step`: 1 − busy / (stages × the step's span).
    pub fn bubble(&self, step: u64) -> f64 {
        let evs: Vec<&Event> = self.events.iter().filter(|e| e.step == step).collect();
        let start = evs.iter().map(|e| e.start_ms).fold(f64::INFINITY, f64::min);
        let end = evs
            .iter()
            .map(|e| e.end_ms)
            .fold(f64::NEG_INFINITY, f64::max);
        let busy: f64 = evs.iter().map(|e| e.end_ms - e.start_ms).sum();
        1.0 - busy / (self.spans.len() as f64 * (end - start))
    }

    /// The bubble the schedule implies for `step`'s measured per-stage mean forward and
    /// backward times (the simulator run on them): what is left of the measured bubble beyond
    /// it is the step's overhead (waiting on host transfers and thread wake-ups), not the
    /// schedule.
    pub fn simulated(&self, schedule: Schedule, step: u64) -> Timeline {
        let p = self.spans.len();
        let mean = |s: usize, fwd: bool| {
            let d: Vec<f64> = self
                .events
                .iter()
                .filter(|e| {
                    e.step == step && e.stage == s && matches!(e.action, Action::Forward(_)) == fwd
                })
                .map(|e| e.end_ms - e.start_ms)
                .collect();
            d.iter().sum::<f64>() / d.len().max(1) as f64
        };
        simulate(
            schedule,
            p,
            self.micro_batches,
            |s| mean(s, true),
            |s| mean(s, false),
        )
    }
}

/// Splits `n` blocks of `block` parameters each into `p` contiguous stages, the first also
/// holding `first` parameters (the embeddings) and the last `last` (the head), so that the
/// largest stage is as small as it can be; ties go to the earlier cut.
pub fn split(
    n: usize,
    block: usize,
    p: usize,
    first: usize,
    last: usize,
) -> Result<Vec<StageSpan>> {
    if p == 0 || n < p {
        return Err(Error::Config(format!(
            "--pipeline {p}: the model has {n} blocks, and every stage needs at least one"
        )));
    }
    // best[k][i]: the smallest largest load for blocks 0..i over stages 0..k (k + 1 stages)
    let load = |s: usize, a: usize, b: usize| {
        (b - a) * block + if s == 0 { first } else { 0 } + if s + 1 == p { last } else { 0 }
    };
    let mut best = vec![vec![usize::MAX; n + 1]; p];
    let mut cut = vec![vec![0; n + 1]; p];
    for (i, b) in best[0].iter_mut().enumerate().skip(1) {
        *b = load(0, 0, i);
    }
    for k in 1..p {
        for i in k + 1..=n {
            for j in k..i {
                let v = best[k - 1][j].max(load(k, j, i));
                if v < best[k][i] {
                    best[k][i] = v;
                    cut[k][i] = j;
                }
            }
        }
    }
    let mut bounds = vec![n];
    let mut i = n;
    for k in (1..p).rev() {
        i = cut[k][i];
        bounds.push(i);
    }
    bounds.push(0);
    bounds.reverse();
    Ok((0..p)
        .map(|s| StageSpan {
            blocks: bounds[s]..bounds[s + 1],
            first: s == 0,
            last: s + 1 == p,
        })
        .collect())
}

/// Which stage(s) hold a parameter of the full model: the embeddings on the first (the tied
/// token embedding on the last too), block i's on its stage, the final LayerNorm on the last.
fn stages_of(name: &str, spans: &[StageSpan], tied: bool) -> Vec<usize> {
    let p = spans.len();
    match Part::of(name) {
        Part::TokenEmbedding if tied && p > 1 => vec![0, p - 1],
        Part::TokenEmbedding | Part::Positions => vec![0],
        Part::Block(i) => vec![spans.iter().position(|s| s.blocks.contains(&i)).unwrap()],
        Part::Head => vec![p - 1],
    }
}

/// The stage plan every stage computes alike.
struct Plan {
    spans: Vec<StageSpan>,
    /// Whether the LM head is the token embedding (then both ends hold it).
    tied: bool,
    /// Per stage, the parameters it holds, and how many weights they are.
    own: Vec<HashSet<String>>,
    weights: Vec<usize>,
    /// The stage that counts each trainable parameter in the norm (the tied one: the first).
    norm_owner: Vec<usize>,
    micro: usize,
    /// Micro-batches per step per replica.
    m: usize,
    /// Each replica's rows of the global batch.
    rows: usize,
    /// (B_micro, T, C) of a stage's output.
    hidden: [usize; 3],
}

fn plan(
    gpu: &Gpu,
    config: &TrainConfig,
    p: usize,
    replicas: usize,
    partition: &Partition,
) -> Result<Plan> {
    crate::train::Layout {
        ranks: replicas,
        stages: p.max(2),
        ..Default::default()
    }
    .check(config)?;
    let (micro, m) = micro_batching(config, p, replicas)?;
    let rows = micro * m;
    let ledger = gpu.ledger();
    let shape = Trainer::new(&ledger, config.clone())?;
    let params = shape.model.params();
    let g = &config.gpt;
    let of = |part: Part| -> usize {
        params
            .iter()
            .filter(|q| Part::of(&q.name) == part)
            .map(|q| q.numel())
            .sum()
    };
    let block = of(Part::Block(0));
    let embedding = of(Part::TokenEmbedding);
    let head = of(Part::Head) + if g.tied() { embedding } else { 0 };
    let spans = match partition {
        Partition::Params => split(g.n_layer, block, p, embedding + of(Part::Positions), head)?,
        Partition::Balanced => {
            let (block, embed, head) = measured_costs(gpu, config)?;
            split(g.n_layer, block, p, embed, head)?
        }
        Partition::Blocks(counts) => spans_of(counts, g.n_layer, p)?,
    };
    let mut own = vec![HashSet::new(); p];
    let mut weights = vec![0; p];
    for q in &params {
        for s in stages_of(&q.name, &spans, g.tied()) {
            own[s].insert(q.name.clone());
            weights[s] += q.numel();
        }
    }
    let norm_owner = shape
        .model
        .trainable_params()
        .iter()
        .map(|q| stages_of(&q.name, &spans, g.tied())[0])
        .collect();
    let seq = shape.task.seq_len(config);
    Ok(Plan {
        spans,
        tied: g.tied(),
        own,
        weights,
        norm_owner,
        micro,
        m: rows / micro,
        rows,
        hidden: [micro, seq, g.n_embd],
    })
}

/// A replica's micro-batches: (rows each, how many) for `p` stages and `replicas` replicas of
/// them; without a micro_batch_size, p of them per replica.
pub fn micro_batching(config: &TrainConfig, p: usize, replicas: usize) -> Result<(usize, usize)> {
    if replicas == 0 || config.batch_size % replicas != 0 {
        return Err(Error::Config(format!(
            "batch_size {} does not split evenly over {replicas} pipeline replicas",
            config.batch_size
        )));
    }
    let rows = config.batch_size / replicas;
    // no micro_batch_size: p micro-batches per replica (a layout's choice, so the config, and
    // the checkpoints that record it, stay free to resume on any other)
    let micro = match config.micro_batch_size {
        0 if rows % p == 0 => rows / p,
        0 => {
            return Err(Error::Config(format!(
                "{rows} rows per pipeline replica do not split into {p} micro-batches: set \
                 micro_batch_size"
            )))
        }
        m => m.min(rows),
    };
    if rows % micro != 0 {
        return Err(Error::Config(format!(
            "micro_batch_size {micro} must divide each pipeline replica's {rows} rows"
        )));
    }
    Ok((micro, rows / micro))
}

/// Stages of `counts[s]` blocks each, checked against the model's `n` blocks.
fn spans_of(counts: &[usize], n: usize, p: usize) -> Result<Vec<StageSpan>> {
    if counts.len() != p || counts.contains(&0) || counts.iter().sum::<usize>() != n {
        return Err(Error::Config(format!(
            "a partition of {n} blocks into {p} stages needs {p} positive counts adding to {n}, \
             not {counts:?}"
        )));
    }
    let mut start = 0;
    Ok(counts
        .iter()
        .enumerate()
        .map(|(s, &c)| {
            start += c;
            StageSpan {
                blocks: start - c..start,
                first: s == 0,
                last: s + 1 == p,
            }
        })
        .collect())
}

/// One micro-batch's forward and backward time on `gpu`, in microseconds: of one block, of the
/// embeddings and of the head (final LayerNorm, head and loss), each the median of five timed
/// runs (after one untimed) of a three-block copy of the model cut into first, middle and last
/// one-block stages: the middle is a block's time, the first's and the last's excess over it
/// the ends'.
pub fn measured_costs(gpu: &Gpu, config: &TrainConfig) -> Result<(usize, usize, usize)> {
    let mut c = config.clone();
    c.gpt.n_layer = 3;
    c.recompute = crate::nn::Recompute::None;
    c.lora = None;
    c.freeze = vec![];
    let mut t = Trainer::new(gpu, c)?;
    let micro = t.draw_batch().split(config.micro_batch()).swap_remove(0);
    let model = t.model.as_mut();
    let batch = model.upload_tokens(gpu, &micro)?;
    let hidden = [batch.batch, batch.seq, config.gpt.n_embd];
    let mut time = |blocks: std::ops::Range<usize>| -> Result<f64> {
        let span = StageSpan {
            first: blocks.start == 0,
            last: blocks.end == 3,
            blocks,
        };
        let mut runs = vec![];
        for k in 0..6 {
            let zeros = || Tensor::zeros(gpu, "probe", &hidden, Category::Activations);
            let input = if span.first { None } else { Some(zeros()?) };
            let dout = if span.last { None } else { Some(zeros()?) };
            gpu.sync()?;
            let start = Instant::now();
            let (_, cache) = model.stage_forward(
                gpu,
                &span,
                &batch,
                input,
                LossGrad::plain(1.0),
                &mut NoHooks,
            )?;
            model.stage_backward(gpu, &span, &batch, cache, dout, &mut NoHooks)?;
            gpu.sync()?;
            if k > 0 {
                runs.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        runs.sort_by(f64::total_cmp);
        Ok(runs[runs.len() / 2])
    };
    let (first, middle, last) = (time(0..1)?, time(1..2)?, time(2..3)?);
    Ok((
        middle.max(1.0) as usize,
        (first - middle).max(0.0) as usize,
        (last - middle).max(0.0) as usize,
    ))
}

/// Each of `p` stages' blocks and the weights it holds (the tied embedding on both ends), as
/// [`train`] splits `config`'s GPT under `partition`.
pub fn stages(
    gpu: &Gpu,
    config: &TrainConfig,
    p: usize,
    partition: &Partition,
) -> Result<Vec<(StageSpan, usize)>> {
    let plan = plan(gpu, config, p, 1, partition)?;
    Ok(plan.spans.into_iter().zip(plan.weights).collect())
}

/// One stage's connection to a neighbouring stage: buffers sent and received in order (the
/// activations one way, their gradients the other). [`ChannelPort`] joins threads of one
/// process; `mpi::MpiPort` joins processes.
pub trait Port: Send {
    fn send(&self, v: Vec<u8>) -> Result<()>;
    /// The next buffer from the neighbour, of `size` bytes.
    fn recv(&self, size: usize) -> Result<Vec<u8>>;
}

/// A [`Port`] between two threads: a channel each way.
pub struct ChannelPort {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl ChannelPort {
    /// The two ends of a connection.
    pub fn pair() -> (ChannelPort, ChannelPort) {
        let (tx_a, rx_b) = channel();
        let (tx_b, rx_a) = channel();
        (
            ChannelPort { tx: tx_a, rx: rx_a },
            ChannelPort { tx: tx_b, rx: rx_b },
        )
    }
}

impl Port for ChannelPort {
    fn send(&self, v: Vec<u8>) -> Result<()> {
        self.tx.send(v).map_err(|_| Error::Device(ANOTHER.into()))
    }

    fn recv(&self, size: usize) -> Result<Vec<u8>> {
        let v = self.rx.recv().map_err(|_| Error::Device(ANOTHER.into()))?;
        match v.len() == size {
            true => Ok(v),
            false => Err(Error::Device(format!(
                "a neighbouring stage sent {} bytes where {size} were expected",
                v.len()
            ))),
        }
    }
}

/// A stage's neighbours: activations from the previous stage and to the next, gradients the
/// other way, as the bytes of the model's working precision (half under mixed precision). None
/// at the ends, and on a ledger (the plan), where a received buffer is zeros.
#[derive(Default)]
pub struct Links {
    pub prev: Option<Box<dyn Port>>,
    pub next: Option<Box<dyn Port>>,
    bytes: u64,
}

const ANOTHER: &str = "another stage failed";

impl Links {
    /// A stage's links to its neighbours (None at the ends).
    pub fn new(prev: Option<Box<dyn Port>>, next: Option<Box<dyn Port>>) -> Links {
        Links {
            prev,
            next,
            bytes: 0,
        }
    }

    /// A buffer of `size` bytes from a neighbour (zeros without one: a ledger).
    fn recv(port: &Option<Box<dyn Port>>, size: usize, bytes: &mut u64) -> Result<Vec<u8>> {
        match port {
            None => Ok(vec![0; size]),
            Some(port) => {
                let v = port.recv(size)?;
                *bytes += v.len() as u64;
                Ok(v)
            }
        }
    }

    fn send(port: &Option<Box<dyn Port>>, v: Vec<u8>, bytes: &mut u64) -> Result<()> {
        if let Some(port) = port {
            *bytes += v.len() as u64;
            port.send(v)?;
        }
        Ok(())
    }
}

/// Trains `config.steps` steps with stage s on `gpus[s]`: `config.batch_size` split into
/// micro-batches of `micro_batch_size` (m of them), run through the stages in
/// `options.schedule`'s order. A stage's error stops every stage and is returned.
pub fn train(
    gpus: &[Gpu],
    config: &TrainConfig,
    options: &PipelineOptions,
) -> Result<PipelineReport> {
    train_observed(gpus, config, options, &())
}

/// [`train`], the first stage reporting each logging step to `observer` (an error it returns
/// stops every stage). A step's `link_bytes` are the activations and gradients the stage moved,
/// `comm_ms` its time in the collectives after the flush.
pub fn train_observed(
    gpus: &[Gpu],
    config: &TrainConfig,
    options: &PipelineOptions,
    observer: &(dyn Observer + Sync),
) -> Result<PipelineReport> {
    let (p, replicas) = layout(gpus, options)?;
    let plan = plan(&gpus[0], config, p, replicas, &options.partition)?;
    // the collectives' sub-groups: every thread (the loss), each replica's stages (the tied
    // embedding, the norm, the whole model for an evaluation or a checkpoint), each stage's
    // replicas (its gradients)
    let mut world = InProcess::group(p * replicas).into_iter();
    let mut stage_groups: Vec<_> = (0..replicas)
        .map(|_| InProcess::group(p).into_iter())
        .collect();
    let mut replica_groups: Vec<_> = (0..p)
        .map(|_| InProcess::group(replicas).into_iter())
        .collect();
    let mut threads = vec![];
    for (r, stage_group) in stage_groups.iter_mut().enumerate() {
        let mut links: Vec<Links> = (0..p).map(|_| Links::default()).collect();
        for s in 0..p.saturating_sub(1) {
            let (a, b) = ChannelPort::pair();
            links[s].next = Some(Box::new(a));
            links[s + 1].prev = Some(Box::new(b));
        }
        for (s, links) in links.into_iter().enumerate() {
            let comms = Comms {
                stages: Box::new(stage_group.next().expect("a stage group handle")),
                replicas: Box::new(replica_groups[s].next().expect("a replica group handle")),
                world: Box::new(world.next().expect("a world handle")),
            };
            threads.push((r * p + s, (s, r), comms, links));
        }
    }
    let epoch = Instant::now();
    let plan = &plan;
    let results: Vec<Result<StageRun>> = std::thread::scope(|sc| {
        let handles: Vec<_> = threads
            .into_iter()
            .map(|(d, at, comms, links)| {
                let gpu = &gpus[d];
                sc.spawn(move || {
                    let r = run_stage(
                        gpu, &comms, config, plan, at, links, options, epoch, observer,
                    );
                    abort_on_error(&comms, r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a stage thread panicked"))
            .collect()
    });
    // the stage that failed first says why; the others only echo it
    let mut stages = vec![];
    let mut echo = None;
    for r in results {
        match r {
            Ok(r) => stages.push(r),
            Err(e)
                if e.to_string().contains(ANOTHER)
                    || e.to_string().contains("another rank failed") =>
            {
                echo = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(e) = echo {
        return Err(e);
    }
    let first = stages.remove(0);
    let mut memory = vec![first.memory];
    let mut link_bytes = vec![first.link_bytes];
    let mut events = first.events;
    for r in stages {
        memory.push(r.memory);
        link_bytes.push(r.link_bytes);
        events.extend(r.events);
    }
    Ok(PipelineReport {
        losses: first.losses,
        params: first.params,
        spans: plan.spans.clone(),
        micro_batches: plan.m,
        memory,
        link_bytes,
        events,
        eval: first.eval.expect("the first stage evaluates"),
    })
}

/// (stages, replicas) of `gpus` under `options`: the device count must be a multiple of the
/// replicas.
fn layout(gpus: &[Gpu], options: &PipelineOptions) -> Result<(usize, usize)> {
    let r = options.replicas.max(1);
    if gpus.is_empty() || gpus.len() % r != 0 {
        return Err(Error::Config(format!(
            "{} devices do not form stages × {r} replicas",
            gpus.len()
        )));
    }
    Ok((gpus.len() / r, r))
}

/// A stage's collective groups: its replica's stages (the tied embedding, the norm, an
/// evaluation's logits), its own replicas (their gradients), every stage of every replica (the
/// loss).
pub struct Comms {
    pub stages: Box<dyn Collective>,
    pub replicas: Box<dyn Collective>,
    pub world: Box<dyn Collective>,
}

/// Predicts each stage's peak memory: every stage's set-up, one step (its schedule's actions
/// in order, the received activations zeros), the evaluation and the checkpoint
/// ([`Trainer::rehearse`]) on a ledger twin of its device.
pub fn plan_memory(
    gpus: &[Gpu],
    config: &TrainConfig,
    options: &PipelineOptions,
) -> Result<Vec<MemoryStats>> {
    let (p, replicas) = layout(gpus, options)?;
    let plan = plan(&gpus[0], config, p, replicas, &options.partition)?;
    (0..p * replicas)
        .map(|d| rehearse_stage(&gpus[d], config, &plan, (d % p, d / p), options))
        .collect()
}

/// [`plan_memory`] for one stage of a pipeline of processes (stage s of replica r, `at`, of
/// `p` stages, on `gpu`).
pub fn plan_stage(
    gpu: &Gpu,
    config: &TrainConfig,
    options: &PipelineOptions,
    p: usize,
    at: (usize, usize),
) -> Result<MemoryStats> {
    let plan = plan(gpu, config, p, options.replicas.max(1), &options.partition)?;
    rehearse_stage(gpu, config, &plan, at, options)
}

/// A stage's run on a ledger twin of `gpu`: a step from the start (a resume would begin past
/// it: a checkpoint's values and state take the buffers a fresh stage has anyway), the
/// evaluation and the checkpoint; every replica of a stage plans alike.
fn rehearse_stage(
    gpu: &Gpu,
    config: &TrainConfig,
    plan: &Plan,
    at: (usize, usize),
    options: &PipelineOptions,
) -> Result<MemoryStats> {
    let ledger = gpu.ledger();
    let (mut t, mut stage) = setup(
        &ledger,
        None,
        config,
        plan,
        at,
        Links::default(),
        options.schedule,
        Instant::now(),
    )?;
    if let Some(init) = config.init.as_deref().filter(|_| config.qlora.is_some()) {
        // a QLoRA base as the run loads it: its quantized sizes (other values are allocated
        // with the model already)
        t.init_from(std::path::Path::new(init))?;
    }
    t.rehearse(&mut stage)
}

/// What a stage's run hands back.
pub struct StageRun {
    /// The losses the stage read (every step: the loss is summed over the stages).
    pub losses: Vec<f32>,
    /// The whole model's parameters (the lead's; empty elsewhere).
    pub params: NamedValues,
    pub memory: MemoryStats,
    pub events: Vec<Event>,
    pub link_bytes: u64,
    /// The final evaluation (the lead's).
    pub eval: Option<EvalResult>,
}

/// One stage's trainer (a [`Shard`] of the model: the stage's parameters alone) and its
/// strategy, stage s of replica r (`at`), over `comms` (None: a ledger twin's plan).
#[allow(clippy::too_many_arguments)]
fn setup<'g, 'c>(
    gpu: &'g Gpu,
    comms: Option<&'c Comms>,
    config: &TrainConfig,
    plan: &'c Plan,
    (s, r): (usize, usize),
    links: Links,
    schedule: Schedule,
    epoch: Instant,
) -> Result<(Trainer<'g>, Stage<'c>)> {
    let p = plan.spans.len();
    let span = &plan.spans[s];
    let shard = Shard {
        own: plan.own[s].clone(),
        grads: true,
        values: true,
    };
    let mut t = Trainer::for_rank(gpu, config.clone(), Some(shard))?;
    // the stages exchange activations of one shape: every batch block_size long
    t.task.pad_to_block();
    let parts = Tensor::zeros(
        gpu,
        "pipeline norm parts",
        &[t.model.trainable_params().len().max(1)],
        Category::Workspace,
    )?;
    debug_assert_eq!(Part::of(&t.model.params()[0].name), Part::TokenEmbedding);
    let tied =
        p > 1 && config.gpt.tied() && t.model.params()[0].trainable() && (span.first || span.last);
    let replicas = config.batch_size / plan.rows;
    // a stage's replicas: DDP over them (its buckets; the exchange when there is a group)
    let dp = match replicas {
        1 => None,
        n => Some(DataParallel::over(
            &t,
            comms.map(|c| c.replicas.as_ref()),
            &DdpOptions::default(),
            None,
            (r, n),
            plan.rows,
        )?),
    };
    let stage = Stage {
        comm: comms.map(|c| c.stages.as_ref()),
        world: comms.map(|c| c.world.as_ref()),
        dp,
        plan,
        s,
        r,
        links,
        order: actions(schedule, p, s, plan.m),
        parts,
        tied,
        events: vec![],
        epoch,
        clock: Duration::ZERO,
    };
    Ok((t, stage))
}

/// One stage of a pipeline whose stages are processes (MPI; `train_observed` runs threads):
/// stage s of replica r (`at`) of `p` stages on `gpu`, over `comms` and `links`, the lead
/// (stage 0 of replica 0) reporting to `observer`. Every process computes the plan alike, so
/// `options.partition` is `Params` or `Blocks` (a `Balanced` one is measured: measure it once
/// and pass its blocks). A failure aborts the stage's groups, which stops the others.
pub fn train_stage(
    gpu: &Gpu,
    comms: &Comms,
    links: Links,
    config: &TrainConfig,
    options: &PipelineOptions,
    (p, at): (usize, (usize, usize)),
    observer: &(dyn Observer + Sync),
) -> Result<StageRun> {
    if let Partition::Balanced = options.partition {
        return Err(Error::Config(
            "a pipeline of processes needs its partition decided once: --partition params, or \
             the blocks a balanced partition measured"
                .into(),
        ));
    }
    let replicas = options.replicas.max(1);
    let r = plan(gpu, config, p, replicas, &options.partition).and_then(|plan| {
        run_stage(
            gpu,
            comms,
            config,
            &plan,
            at,
            links,
            options,
            Instant::now(),
            observer,
        )
    });
    abort_on_error(comms, r)
}

/// `r`, after aborting every group of `comms` when it is an error (so no other stage waits).
fn abort_on_error<T>(comms: &Comms, r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        for c in [&comms.stages, &comms.replicas, &comms.world] {
            c.abort(&e.to_string());
        }
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn run_stage(
    gpu: &Gpu,
    comms: &Comms,
    config: &TrainConfig,
    plan: &Plan,
    at: (usize, usize),
    links: Links,
    options: &PipelineOptions,
    epoch: Instant,
    observer: &(dyn Observer + Sync),
) -> Result<StageRun> {
    let (mut t, mut stage) = setup(
        gpu,
        Some(comms),
        config,
        plan,
        at,
        links,
        options.schedule,
        epoch,
    )?;
    // every stage reads the checkpoint itself (a value it does not hold is checked and left)
    if let Some(path) = &options.resume {
        t.resume(&Checkpoint::load(path)?)?;
    } else if let Some(init) = &config.init {
        t.init_from(std::path::Path::new(init))?;
    }
    let fit = t.fit(&mut stage, observer)?;
    // the report's parameters: the whole model, on the lead
    let params = t.whole_params(&mut stage)?;
    Ok(StageRun {
        losses: fit.losses.iter().map(|&(_, l)| l).collect(),
        params,
        memory: fit.memory,
        events: stage.events,
        link_bytes: stage.links.bytes,
        eval: fit.eval,
    })
}

/// A pipeline stage as a [`Strategy`] of the one training step: the step's micro-batches
/// through the stage in the schedule's order (activations and their gradients to and from the
/// neighbours over the host); after the flush the loss and the tied embedding's gradient summed
/// over the stages, the norm from the stages' parts; each stage updates its own parameters.
/// The first stage leads (reports, evaluates, writes the checkpoint) with the whole model
/// gathered for the time it needs it.
struct Stage<'a> {
    /// This replica's stages (None on a ledger twin, the plan: the same device work, no
    /// exchange).
    comm: Option<&'a dyn Collective>,
    /// Every stage of every replica (the loss).
    world: Option<&'a dyn Collective>,
    /// This stage's replicas, when there are several: their gradients all-reduced.
    dp: Option<DataParallel<'a>>,
    plan: &'a Plan,
    s: usize,
    /// The replica.
    r: usize,
    links: Links,
    /// This stage's actions in a step, in order.
    order: Vec<Action>,
    /// A slot per trainable parameter for its squared gradient norm.
    parts: Tensor,
    /// Whether this stage holds a copy of the tied token embedding that trains.
    tied: bool,
    events: Vec<Event>,
    epoch: Instant,
    clock: Duration,
}

impl Strategy for Stage<'_> {
    fn local_batch(&self, global: Batch) -> Batch {
        match self.dp {
            Some(_) => global.split(self.plan.rows).swap_remove(self.r),
            None => global,
        }
    }

    fn forward_backward(&mut self, t: &mut Trainer, batch: &Batch, count: usize) -> Result<()> {
        let (gpu, plan, s) = (t.gpu, self.plan, self.s);
        let span = &plan.spans[s];
        // a stage's output and its gradient, in the working precision
        let dtype = t.model.compute_dtype();
        let hidden = dtype.bytes_for(plan.hidden.iter().product()) as usize;
        let micros = batch.split(plan.micro);
        zero_grads(gpu, &t.model.trainable_params());
        let scale = 1.0 / count as f32;
        let mut stage_losses: Vec<Tensor> = vec![];
        // the replica's micro-batches are the global batch's from number r·m on
        let first = self.r * plan.m;
        let seeds: Vec<u64> = (0..plan.m).map(|k| t.dropout_seed(first + k)).collect();
        let step = t.step;
        let epoch = self.epoch;
        let ms = |i: Instant| i.duration_since(epoch).as_secs_f64() * 1e3;
        let links = &mut self.links;
        let loss_scale = t.loss_scale();
        // the passes as one device runs them, the loss scaled
        let loss = LossGrad {
            scale,
            loss_scale: loss_scale.as_deref(),
        };
        let model = t.model.as_mut();
        let batches = micros
            .iter()
            .map(|b| model.upload_tokens(gpu, b))
            .collect::<Result<Vec<_>>>()?;
        let mut caches: Vec<Option<StageCache>> = (0..plan.m).map(|_| None).collect();
        // LoRA adapters apply their dropout in training passes only (an error ends the run,
        // so it needs no reset)
        model.set_training(true);
        for &a in &self.order {
            // what the action waits for from a neighbour comes first: the wait is the
            // bubble's, not the action's
            let received = match a {
                Action::Forward(_) if !span.first => {
                    Some(Links::recv(&links.prev, hidden, &mut links.bytes)?)
                }
                Action::Backward(_) if !span.last => {
                    Some(Links::recv(&links.next, hidden, &mut links.bytes)?)
                }
                _ => None,
            };
            let start = Instant::now();
            // a LoRA adapter's dropout mask: the micro-batch's, in its forward and backward
            model.set_dropout_seed(seeds[a.micro_batch()]);
            let upload = |v: Vec<u8>, name: &str| -> Result<Tensor> {
                let x = Tensor::empty(gpu, name, &plan.hidden, dtype, Category::Activations)?;
                gpu.upload(&x, &v);
                Ok(x)
            };
            match a {
                Action::Forward(j) => {
                    let input = received.map(|v| upload(v, "stage input")).transpose()?;
                    let (out, cache) =
                        model.stage_forward(gpu, span, &batches[j], input, loss, &mut NoHooks)?;
                    match out {
                        StageOut::Hidden(h) => {
                            let v = gpu.read_bytes(&h)?;
                            Links::send(&links.next, v, &mut links.bytes)?;
                        }
                        StageOut::Losses(l) => {
                            gpu.sync()?;
                            stage_losses.push(l);
                        }
                    }
                    caches[j] = Some(cache);
                }
                Action::Backward(j) => {
                    let dout = received
                        .map(|v| upload(v, "stage output grad"))
                        .transpose()?;
                    let cache = caches[j].take().expect("a forward before its backward");
                    match model.stage_backward(gpu, span, &batches[j], cache, dout, &mut NoHooks)? {
                        Some(dx) => {
                            let v = gpu.read_bytes(&dx)?;
                            Links::send(&links.prev, v, &mut links.bytes)?;
                        }
                        None => gpu.sync()?,
                    }
                }
            }
            self.events.push(Event {
                stage: s,
                step,
                action: a,
                start_ms: ms(start),
                end_ms: ms(Instant::now()),
            });
        }
        model.set_training(false);
        for (k, l) in stage_losses.iter().enumerate() {
            t.add_losses(l, k == 0)?;
        }
        Ok(())
    }

    fn reduce(&mut self, t: &mut Trainer) -> Result<Option<f32>> {
        let gpu = t.gpu;
        let last = self.plan.spans[self.s].last;
        let mut loss = [if last { t.last_loss_sum()? } else { 0.0 }];
        if let (Some(comm), Some(world)) = (self.comm, self.world) {
            let start = Instant::now();
            world.all_reduce_sum(&mut loss)?;
            // the tied embedding: the first stage's share (embeddings) plus the last's (head),
            // every stage taking part (the middle ones with zeros)
            if self.plan.spans.len() > 1 && t.model.params()[0].trainable() {
                let wte = &t.model.params()[0];
                let mut g = match self.tied {
                    true => wte.grad().to_f32(gpu)?,
                    false => vec![0.0; wte.numel()],
                };
                comm.all_reduce_sum(&mut g)?;
                if self.tied {
                    wte.grad().write_f32(gpu, &g);
                }
            }
            self.clock += start.elapsed();
        }
        // then the stage's gradients over its replicas
        if let Some(dp) = &mut self.dp {
            dp.exchange(t)?;
        }
        t.set_loss_sum(loss[0]);
        Ok(self.comm.map(|_| loss[0]))
    }

    fn grad_norm(&mut self, t: &mut Trainer) -> Result<()> {
        let owner = &self.plan.norm_owner;
        match self.comm {
            Some(comm) => sharded_grad_norm(t.gpu, comm, t, owner, &self.parts, &mut self.clock),
            // a ledger: the norm's device side only
            None => own_norms(t.gpu, t, owner, self.s, &self.parts),
        }
    }

    fn lead(&self) -> bool {
        self.s == 0 && self.r == 0
    }

    fn with_trainable_values(
        &mut self,
        t: &mut Trainer,
        work: &mut dyn FnMut(&mut Trainer) -> Result<()>,
    ) -> Result<()> {
        let at = (self.s, self.plan.spans.len());
        let (spans, tied) = (&self.plan.spans, self.plan.tied);
        // a value two stages hold (the tied embedding) sent by the first
        let holder = |name: &str| Some(stages_of(name, spans, tied)[0]);
        self.clock += with_gathered(self.comm, at, t, &holder, work)?;
        Ok(())
    }

    fn whole_values(&mut self, t: &mut Trainer) -> Result<Vec<(String, Vec<f32>)>> {
        let at = (self.s, self.plan.spans.len());
        let (spans, tied) = (&self.plan.spans, self.plan.tied);
        let holder = |name: &str| Some(stages_of(name, spans, tied)[0]);
        gather_on_host(self.comm, at, t, &holder)
    }

    fn evaluate(&mut self, t: &mut Trainer) -> Result<Option<EvalResult>> {
        // every stage of every replica runs the evaluation, its span's forward only, chained
        // through the replica's links; the first stage of the first replica reports
        let mut chain = Chained {
            comm: self.comm,
            links: &mut self.links,
            span: &self.plan.spans[self.s],
            stages: self.plan.spans.len(),
            clock: &mut self.clock,
        };
        let r = t.evaluate_through(&mut chain)?;
        Ok(self.lead().then_some(r))
    }

    fn checkpoint_part(&self) -> Option<(usize, usize)> {
        // each stage of the first replica writes what it holds (the others hold the same)
        (self.r == 0).then_some((self.s, self.plan.spans.len()))
    }

    fn writes_value(&self, name: &str) -> bool {
        // a value two stages hold (the tied embedding) goes in the first one's part
        stages_of(name, &self.plan.spans, self.plan.tied)[0] == self.s
    }

    fn barrier(&self) -> Result<()> {
        match self.world {
            Some(world) => world.barrier(),
            None => Ok(()),
        }
    }

    fn report(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("link_bytes".into(), self.links.bytes.into());
        let dp_ms = self.dp.as_ref().map_or(0.0, |dp| dp.comm_ms());
        m.insert(
            "comm_ms".into(),
            (self.clock.as_secs_f64() * 1e3 + dp_ms).into(),
        );
        m
    }
}

/// An evaluation's forward through a replica's stages: each runs its span forward only
/// ([`crate::nn::Gpt::stage_logits`]), its output sent on to the next stage; the last stage's
/// logits (or their losses) are broadcast to the replica's stages, so every stage runs the same
/// evaluation with the same numbers and none holds another's layers.
struct Chained<'s> {
    /// The replica's stages (None on a ledger twin: the same device work, zeros received).
    comm: Option<&'s dyn Collective>,
    links: &'s mut Links,
    span: &'s StageSpan,
    stages: usize,
    clock: &'s mut Duration,
}

impl Chained<'_> {
    /// This stage's part of the forward of `batch`: the logits (f32) on the last stage, and
    /// their shape (B, T, V).
    fn run(
        &mut self,
        model: &mut dyn Model,
        gpu: &Gpu,
        batch: &Batch,
    ) -> Result<(Option<Tensor>, [usize; 3])> {
        let dtype = model.compute_dtype();
        let stages = model.stages().ok_or_else(|| model.not_staged())?;
        let b = model.upload_tokens(gpu, batch)?;
        let shape = [b.batch, b.seq, stages.width];
        let logits = [b.batch, b.seq, stages.vocab];
        let links = &mut *self.links;
        let input = match self.span.first {
            true => None,
            false => {
                let size = dtype.bytes_for(shape.iter().product()) as usize;
                let v = Links::recv(&links.prev, size, &mut links.bytes)?;
                let x = Tensor::empty(gpu, "stage input", &shape, dtype, Category::Activations)?;
                gpu.upload(&x, &v);
                Some(x)
            }
        };
        let span = self.span;
        let out = model.stage_logits(gpu, span, &b, input, &mut NoHooks)?;
        if !span.last {
            let v = gpu.read_bytes(&out)?;
            Links::send(&links.next, v, &mut links.bytes)?;
            return Ok((None, logits));
        }
        Ok((Some(in_f32(gpu, out)?), logits))
    }

    /// The last stage's `out` (of `shape`) on every stage of the replica.
    fn share(&mut self, gpu: &Gpu, out: Option<Tensor>, shape: &[usize]) -> Result<Tensor> {
        let Some(comm) = self.comm else {
            // a ledger: what the broadcast leaves on a stage
            return out.map_or_else(
                || Tensor::zeros(gpu, "shared", shape, Category::Activations),
                Ok,
            );
        };
        let start = Instant::now();
        let mut host = match &out {
            Some(t) => t.to_f32(gpu)?,
            None => vec![0.0; shape.iter().product()],
        };
        comm.broadcast(bytemuck::cast_slice_mut(&mut host), self.stages - 1)?;
        *self.clock += start.elapsed();
        match out {
            Some(t) => Ok(t),
            None => Tensor::from_f32(gpu, "shared", shape, &host, Category::Activations),
        }
    }
}

impl Forward for Chained<'_> {
    fn logits(&mut self, model: &mut dyn Model, gpu: &Gpu, batch: &Batch) -> Result<Tensor> {
        let (out, shape) = self.run(model, gpu, batch)?;
        self.share(gpu, out, &shape)
    }

    fn losses(&mut self, model: &mut dyn Model, gpu: &Gpu, batch: &Batch) -> Result<Tensor> {
        let (out, [b, t, _]) = self.run(model, gpu, batch)?;
        let losses = out.map(|l| losses_of(gpu, &l, batch)).transpose()?;
        self.share(gpu, losses, &[b * t])
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn the_split_makes_the_largest_stage_as_small_as_it_can_be() {
        // against every way to cut n blocks into p non-empty stages
        fn best(n: usize, p: usize, load: &dyn Fn(usize, usize, usize) -> usize) -> usize {
            fn go(
                s: usize,
                start: usize,
                n: usize,
                p: usize,
                load: &dyn Fn(usize, usize, usize) -> usize,
            ) -> usize {
                if s + 1 == p {
                    return load(s, start, n);
                }
                (start + 1..=n - (p - 1 - s))
                    .map(|e| load(s, start, e).max(go(s + 1, e, n, p, load)))
                    .min()
                    .unwrap()
            }
            go(0, 0, n, p, load)
        }
        for (n, p, first, last) in [
            (9, 3, 0, 0),
            (9, 3, 150, 150),
            (9, 4, 41, 33),
            (9, 1, 5, 5),
            (7, 3, 0, 500),
            (12, 5, 30, 260),
        ] {
            let load = |s: usize, a: usize, b: usize| {
                (b - a) * 100 + if s == 0 { first } else { 0 } + if s + 1 == p { last } else { 0 }
            };
            let spans = split(n, 100, p, first, last).unwrap();
            assert_eq!(spans.len(), p);
            assert_eq!(spans[0].blocks.start, 0);
            assert_eq!(spans[p - 1].blocks.end, n);
            for w in spans.windows(2) {
                assert_eq!(w[0].blocks.end, w[1].blocks.start);
            }
            assert!(spans.iter().all(|s| !s.blocks.is_empty()));
            let worst = spans
                .iter()
                .enumerate()
                .map(|(s, sp)| load(s, sp.blocks.start, sp.blocks.end))
                .max()
                .unwrap();
            assert_eq!(
                worst,
                best(n, p, &load),
                "n {n} p {p} ends {first} {last}: {spans:?}"
            );
        }
        assert!(split(2, 100, 3, 0, 0).is_err(), "a stage without a block");
    }
}
