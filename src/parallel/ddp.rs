//! Data parallelism, two ways ([`Mode`]). Every rank keeps a replica of the model (identical at
//! the start: rank 0's weights are broadcast and each rank checks its own against them), takes
//! its slice of the global batch, and runs forward and backward; the gradients move in buckets
//! filled in reverse parameter order (the first 1 MiB, then `bucket_bytes` each, as PyTorch
//! does).
//! - `Ddp`, PyTorch's DistributedDataParallel: the buckets are all-reduced, and every rank takes
//!   the global norm and applies the same update.
//! - `Dp`, the parameter server: rank 0 gathers the buckets, sums them, updates (it alone holds
//!   optimizer state), and broadcasts the new weights, bucket by bucket. Its traffic grows with
//!   the ranks: the bottleneck DDP removes.
//!
//! Each bucket is one fused device buffer per rank (charged to workspace): the bucket's
//! gradients are copied into it, read back in one transfer, summed across ranks in rank order on
//! the host, and written back. A rank's slice scales its loss by 1/(targets in the whole global
//! batch), so the summed gradient is the global batch's: the run equals one device running the
//! global batch as N micro-batches (bit for bit where each gradient is written once per
//! micro-batch; a tied weight written twice, like the GPT's token embedding, sums its parts in
//! another order: see the tests).

use super::Collective;
use crate::error::{Error, Result};
use crate::gpu::{Category, Gpu, MemoryStats};
use crate::nn::{Batch, NoHooks, Param, StepHooks};
use crate::ops::reduce::{reduce, Reduction};
use crate::tensor::{DType, Tensor};
use crate::train::checkpoint::Checkpoint;
use crate::train::eval::Hooked;
use crate::train::{EvalResult, Observer, Shard, Strategy, TrainConfig, Trainer};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// PyTorch's first bucket: small, so that the first all-reduce can start early.
pub const FIRST_BUCKET_BYTES: u64 = 1 << 20;

/// How the ranks combine their gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Rank 0 is the parameter server: gathers, sums, updates, broadcasts the weights.
    Dp,
    /// Every rank all-reduces the gradients and applies the same update.
    Ddp,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "dp" => Ok(Mode::Dp),
            "ddp" => Ok(Mode::Ddp),
            _ => Err(Error::Config(format!(
                "--parallel must be dp (parameter server) or ddp, not {s:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Dp => "dp (parameter server)",
            Mode::Ddp => "ddp",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DdpOptions {
    pub mode: Mode,
    /// Gradient bytes of the first bucket (PyTorch's: 1 MiB).
    pub first_bucket_bytes: u64,
    /// Gradient bytes per bucket after the first (PyTorch's default: 25 MiB).
    pub bucket_bytes: u64,
    /// Every rank resumes from this checkpoint (written by any layout: one file or parts, it
    /// opens as one set of tensors by name, each rank reading what it holds) and continues up
    /// to `config.steps`.
    pub resume: Option<std::path::PathBuf>,
    /// The run id the checkpoint records (a fresh one when None and not resuming).
    pub run: Option<String>,
    /// ZeRO stage: 0 (every rank keeps all optimizer state), 1 (each keeps its shard: the
    /// gradients are reduce-scattered, each rank updates its parameters, and an all-gather
    /// gives everyone the new values) or 2 (also only its shard of the gradients: each bucket
    /// is reduce-scattered inside the backward, as soon as it is written, and the buffers lent
    /// for the others' gradients are freed) or 3 (also only its shard of the parameters: each
    /// layer's values are all-gathered before its forward and again before its backward, and
    /// freed after).
    pub zero: u8,
}

impl Default for DdpOptions {
    fn default() -> Self {
        DdpOptions {
            mode: Mode::Ddp,
            first_bucket_bytes: FIRST_BUCKET_BYTES,
            bucket_bytes: 25 << 20,
            resume: None,
            run: None,
            zero: 0,
        }
    }
}

/// What a run measured, per rank where it differs.
pub struct DdpReport {
    /// The global batch's mean loss at each step run (the same on every rank).
    pub losses: Vec<f32>,
    /// Rank 0's parameters at the end (every rank holds the same).
    pub params: Vec<(String, Vec<f32>)>,
    /// Bytes each rank moved through the collectives.
    pub comm_bytes: Vec<u64>,
    /// Milliseconds each rank spent in collective calls (waiting for the others included; the
    /// device-to-host copies around them are not).
    pub comm_ms: Vec<f64>,
    /// Each rank's pool figures.
    pub memory: Vec<MemoryStats>,
    /// Buckets per step.
    pub buckets: usize,
    /// Rank 0's evaluation at the end.
    pub eval: crate::train::EvalResult,
}

/// ZeRO stage 1's partition: each parameter's owner rank, whole tensors assigned largest first
/// to the rank with the fewest elements so far (ties to the lower rank), so the shards are
/// balanced and every rank computes the same partition.
pub fn partition(sizes: &[usize], ranks: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), i));
    let mut load = vec![0usize; ranks];
    let mut owner = vec![0; sizes.len()];
    for i in order {
        let r = (0..ranks).min_by_key(|&r| (load[r], r)).unwrap();
        owner[i] = r;
        load[r] += sizes[i];
    }
    owner
}

/// Trainable parameters (their element counts) grouped into buckets of f32 gradients, last
/// parameter first, as indices.
fn buckets(numels: &[usize], first: u64, rest: u64) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![];
    let mut bytes = 0;
    for (i, &n) in numels.iter().enumerate().rev() {
        let limit = if out.len() <= 1 { first } else { rest };
        if out.is_empty() || (bytes >= limit && !out.last().unwrap().is_empty()) {
            out.push(vec![]);
            bytes = 0;
        }
        out.last_mut().unwrap().push(i);
        bytes += 4 * n as u64;
    }
    out
}

/// Trains `config.steps` steps of `config` with one rank per device of `gpus`, each a thread,
/// over `comms` (one per rank, e.g. [`super::InProcess::group`]). `batch_size` is global and
/// must split evenly over the ranks. A rank's error stops every rank and is returned.
pub fn train(
    gpus: &[Gpu],
    comms: Vec<Box<dyn Collective>>,
    config: &TrainConfig,
    options: &DdpOptions,
) -> Result<DdpReport> {
    train_observed(gpus, comms, config, options, &())
}

/// [`train`], each rank in [`Trainer::fit`] (the one outer loop: logging, evaluation,
/// checkpoints), rank 0 reporting to `observer` (an error it returns stops every rank).
pub fn train_observed(
    gpus: &[Gpu],
    comms: Vec<Box<dyn Collective>>,
    config: &TrainConfig,
    options: &DdpOptions,
    observer: &(dyn Observer + Sync),
) -> Result<DdpReport> {
    let n = gpus.len();
    assert_eq!(comms.len(), n, "one collective handle per device");
    rows_per_rank(config, options, n)?;
    let results: Vec<Result<RankResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = gpus
            .iter()
            .zip(comms)
            .map(|(gpu, comm)| {
                s.spawn(move || {
                    let r = run_rank(gpu, comm.as_ref(), config, options, observer);
                    if let Err(e) = &r {
                        comm.abort(&e.to_string());
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a rank thread panicked"))
            .collect()
    });
    // the rank that failed first says why; the others only echo it
    let mut ranks = vec![];
    let mut echo = None;
    for r in results {
        match r {
            Ok(r) => ranks.push(r),
            Err(e) if e.to_string().contains("another rank failed") => echo = Some(e),
            Err(e) => return Err(e),
        }
    }
    if let Some(e) = echo {
        return Err(e);
    }
    let first = ranks.remove(0);
    let mut comm_bytes = vec![first.comm_bytes];
    let mut comm_ms = vec![first.comm_ms];
    let mut memory = vec![first.memory];
    for r in ranks {
        comm_bytes.push(r.comm_bytes);
        comm_ms.push(r.comm_ms);
        memory.push(r.memory);
    }
    Ok(DdpReport {
        losses: first.losses,
        params: first.params,
        comm_bytes,
        comm_ms,
        memory,
        buckets: first.buckets,
        eval: first.eval.expect("rank 0 evaluates"),
    })
}

/// Each rank's rows of the global batch, once the options and the split are checked.
fn rows_per_rank(config: &TrainConfig, options: &DdpOptions, n: usize) -> Result<usize> {
    crate::train::Layout {
        ranks: n,
        stages: 1,
        server: options.mode == Mode::Dp,
        zero: options.zero,
        mpi: false,
    }
    .check(config)?;
    if config.batch_size % n != 0 {
        return Err(Error::Config(format!(
            "batch_size {} does not split evenly over {n} ranks",
            config.batch_size
        )));
    }
    let per_rank = config.batch_size / n;
    if config.micro_batch_size > 0 && per_rank % config.micro_batch_size != 0 {
        return Err(Error::Config(format!(
            "micro_batch_size {} must divide each rank's {per_rank} rows",
            config.micro_batch_size
        )));
    }
    Ok(per_rank)
}

/// One rank of [`train_observed`], the others in other processes (MPI): this process's rank
/// of `comm` on `gpu`. The report's per-rank vectors hold this rank's figures alone; `eval` is
/// rank 0's. A failure calls [`Collective::abort`], which stops the others.
pub fn train_rank(
    gpu: &Gpu,
    comm: &dyn Collective,
    config: &TrainConfig,
    options: &DdpOptions,
    observer: &(dyn Observer + Sync),
) -> Result<DdpReport> {
    let r = rows_per_rank(config, options, comm.size())
        .and_then(|_| run_rank(gpu, comm, config, options, observer));
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            comm.abort(&e.to_string());
            return Err(e);
        }
    };
    Ok(DdpReport {
        losses: r.losses,
        params: r.params,
        comm_bytes: vec![r.comm_bytes],
        comm_ms: vec![r.comm_ms],
        memory: vec![r.memory],
        buckets: r.buckets,
        eval: r.eval.unwrap_or(crate::train::EvalResult {
            loss: f32::NAN,
            loss_se: f32::NAN,
            accuracy: None,
            accuracy_se: None,
            source: "rank 0 only",
        }),
    })
}

struct RankResult {
    losses: Vec<f32>,
    params: Vec<(String, Vec<f32>)>,
    comm_bytes: u64,
    comm_ms: f64,
    memory: MemoryStats,
    buckets: usize,
    eval: Option<crate::train::EvalResult>,
}

fn run_rank(
    gpu: &Gpu,
    comm: &dyn Collective,
    config: &TrainConfig,
    options: &DdpOptions,
    observer: &(dyn Observer + Sync),
) -> Result<RankResult> {
    let rank = comm.rank();
    let (mut t, mut strategy) = setup(gpu, Some(comm), config, options, comm.size(), rank)?;
    // every rank reads the checkpoint itself, as processes on other machines would
    let restored = if let Some(path) = &options.resume {
        t.resume(&Checkpoint::load(path)?)?;
        true
    } else if let Some(init) = &config.init {
        t.init_from(std::path::Path::new(init))?;
        true
    } else {
        false
    };
    if let (Some(run), None) = (&options.run, &options.resume) {
        t.run = run.clone();
    }
    // a master lives with the rank that updates it (the server; under mixed precision a ZeRO
    // 1 or 2 owner): what it restored to everyone else's working copy, as after an update
    if restored && !strategy.holders.is_empty() {
        strategy.after_update(&mut t)?;
    }
    // identical replicas: rank 0's weights to everyone, each rank's own checked against them
    // (under ZeRO 3 every value lives on its holder alone: nothing to compare)
    for p in t.model.params() {
        if options.zero >= 3 {
            break;
        }
        if p.is_quantized() {
            // a quantized base: each rank loaded the same file
            continue;
        }
        let mine = gpu.read_bytes(p.weight())?;
        let mut theirs = mine.clone();
        comm.broadcast(&mut theirs, 0)?;
        if mine != theirs {
            return Err(Error::Device(format!(
                "rank {rank}: {} differs from rank 0's after the same initialisation",
                p.name
            )));
        }
    }
    let fit = t.fit(&mut strategy, observer)?;
    // the report's parameters, from the whole model (ZeRO 3 gathers it once more)
    let params = t.whole_params(&mut strategy)?;
    Ok(RankResult {
        losses: fit.losses.iter().map(|&(_, l)| l).collect(),
        params,
        comm_bytes: comm.bytes(),
        comm_ms: strategy.clock.as_secs_f64() * 1e3,
        memory: fit.memory,
        buckets: strategy.buckets.members.len(),
        eval: fit.eval,
    })
}

/// Data parallel as a [`Strategy`] of the one training step: this rank's slice of the global
/// batch; after the backward, the gradients exchanged bucket by bucket (all-reduced under DDP,
/// reduce-scattered to their owners under ZeRO 1, gathered to the server under `dp`; ZeRO 2
/// and 3 exchange inside the backward through [`ZeroHooks`]) and the loss summed over the
/// ranks; the global norm (from the shards under ZeRO); after the update, the new values
/// where they are needed (the server's broadcast, ZeRO 1 and 2's all-gather).
pub struct DataParallel<'a> {
    /// None on a ledger twin (the plan): the same device work, no exchange.
    comm: Option<&'a dyn Collective>,
    rank: usize,
    ranks: usize,
    mode: Mode,
    zero: u8,
    per_rank: usize,
    /// ZeRO: trainable parameter names and each one's owner rank.
    owners: Option<(Vec<String>, Vec<usize>)>,
    /// ZeRO 3: the rank holding each parameter's value, trainable (its owner) or frozen (a
    /// partition of their own); empty otherwise.
    holders: HashMap<String, usize>,
    buckets: Buckets,
    /// ZeRO: a slot per trainable parameter for its squared gradient norm (the global norm
    /// from the shards).
    norm_parts: Option<Tensor>,
    /// Time in collective calls.
    clock: Duration,
}

impl Strategy for DataParallel<'_> {
    fn local_batch(&self, global: Batch) -> Batch {
        global.split(self.per_rank).swap_remove(self.rank)
    }

    fn forward_backward(&mut self, t: &mut Trainer, batch: &Batch, count: usize) -> Result<()> {
        let first = self.first_micro_batch(t.config.micro_batch());
        match (self.zero, &self.owners) {
            (2.., Some((_, owner))) => {
                let values = self.zero >= 3;
                let (comm, at) = (self.comm, (self.rank, self.ranks));
                let mut hooks =
                    ZeroHooks::new(comm, at, t, owner, &self.holders, &self.buckets, values);
                t.forward_backward_scaled(batch, count, first, &mut hooks)?;
                let clock = hooks.finish(t.model.as_mut());
                self.clock += clock;
                Ok(())
            }
            _ => t.forward_backward_scaled(batch, count, first, &mut NoHooks),
        }
    }

    fn reduce(&mut self, t: &mut Trainer) -> Result<Option<f32>> {
        self.exchange(t)?;
        let Some(comm) = self.comm else {
            return Ok(None);
        };
        let mut loss = [t.last_loss_sum()?];
        timed(&mut self.clock, || comm.all_reduce_sum(&mut loss))?;
        // every rank's step guard sees the global loss, so all skip a non-finite step alike
        t.set_loss_sum(loss[0]);
        Ok(Some(loss[0]))
    }

    fn grad_norm(&mut self, t: &mut Trainer) -> Result<()> {
        let (Some((_, owner)), Some(parts)) = (&self.owners, &self.norm_parts) else {
            return t.grad_norm();
        };
        match self.comm {
            Some(comm) => sharded_grad_norm(t.gpu, comm, t, owner, parts, &mut self.clock),
            None => {
                // the device side alone (the collective allocates nothing on it)
                own_norms(t.gpu, t, owner, self.rank, parts)?;
                crate::optim::guard::set_norm_sq(t.gpu, t.stats(), 0.0)
            }
        }
    }

    fn after_update(&mut self, t: &mut Trainer) -> Result<()> {
        let Some(comm) = self.comm else {
            return Ok(());
        };
        // who updated each parameter: the server (a replica's update applied no optimizer
        // state, it only advanced the step), or under ZeRO 1 and 2 its owner (stage 3 gathers
        // the values layer by layer in the next step instead)
        let from: Vec<usize> = match (self.mode, &self.owners, self.zero) {
            (Mode::Dp, _, _) => vec![0; t.model.trainable_params().len()],
            (Mode::Ddp, Some((_, owner)), 1..=2) => owner.clone(),
            _ => return Ok(()),
        };
        let (gpu, rank, buckets) = (t.gpu, self.rank, &self.buckets);
        let params = t.model.trainable_params();
        for (b, indices) in buckets.members.iter().enumerate() {
            let bucket = buckets.buffer(gpu, b)?;
            let members: Vec<&Param> = indices.iter().map(|&i| params[i]).collect();
            let from: Vec<usize> = indices.iter().map(|&i| from[i]).collect();
            sync_weights(gpu, comm, rank, &members, &from, &bucket, &mut self.clock)?;
        }
        Ok(())
    }

    fn lead(&self) -> bool {
        self.rank == 0
    }

    fn with_trainable_values(
        &mut self,
        t: &mut Trainer,
        work: &mut dyn FnMut(&mut Trainer) -> Result<()>,
    ) -> Result<()> {
        match self.holders.is_empty() {
            false => {
                let at = (self.rank, self.ranks);
                let holders = &self.holders;
                let holder = |name: &str| holders.get(name).copied();
                self.clock += with_gathered(self.comm, at, t, &holder, work)?;
                Ok(())
            }
            true => work(t),
        }
    }

    fn whole_values(&mut self, t: &mut Trainer) -> Result<Vec<(String, Vec<f32>)>> {
        let at = (self.rank, self.ranks);
        let holders = &self.holders;
        // (outside ZeRO 3 the map is empty: the lead holds every value)
        let holder = |name: &str| holders.get(name).copied();
        gather_on_host(self.comm, at, t, &holder)
    }

    fn evaluate(&mut self, t: &mut Trainer) -> Result<Option<EvalResult>> {
        let lead = self.lead();
        match &self.owners {
            // ZeRO 3: every rank runs the evaluation, each layer group's values all-gathered
            // before it runs and freed after, as in training's forward; the lead reports
            Some((_, owner)) if self.zero >= 3 => {
                let (comm, at) = (self.comm, (self.rank, self.ranks));
                let mut hooks =
                    ZeroHooks::new(comm, at, t, owner, &self.holders, &self.buckets, true);
                let r = t.evaluate_through(&mut Hooked(&mut hooks));
                self.clock += hooks.finish(t.model.as_mut());
                Ok(lead.then_some(r?))
            }
            _ if lead => t.evaluate().map(Some),
            _ => Ok(None),
        }
    }

    fn checkpoint_part(&self) -> Option<(usize, usize)> {
        match (&self.owners, self.rank) {
            // ZeRO: each rank writes what it owns
            (Some(_), r) => Some((r, self.ranks)),
            // every rank holds everything (DDP) or the lead does (the server): the lead writes
            (None, 0) => Some((0, 1)),
            (None, _) => None,
        }
    }

    fn writes_value(&self, name: &str) -> bool {
        let Some((names, owner)) = &self.owners else {
            return true;
        };
        match (names.iter().position(|n| n == name), self.holders.get(name)) {
            (Some(i), _) => owner[i] == self.rank,
            // a frozen parameter: its holder's part under ZeRO 3, else (whole on every rank)
            // the lead's
            (None, Some(&h)) => h == self.rank,
            (None, None) => self.rank == 0,
        }
    }

    fn barrier(&self) -> Result<()> {
        match self.comm {
            Some(comm) => comm.barrier(),
            None => Ok(()),
        }
    }

    fn report(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let Some(comm) = self.comm {
            m.insert("comm_bytes".into(), comm.bytes().into());
        }
        m.insert("comm_ms".into(), (self.clock.as_secs_f64() * 1e3).into());
        m
    }
}

/// DDP, ZeRO 1 and the parameter server after the backward: each bucket's gradients packed,
/// exchanged and written back (all of them, the owner's, or the server's).
fn exchange_grads(
    comm: &dyn Collective,
    t: &Trainer,
    mode: Mode,
    owners: &Option<(Vec<String>, Vec<usize>)>,
    buckets: &Buckets,
    clock: &mut Duration,
) -> Result<()> {
    let (gpu, rank) = (t.gpu, comm.rank());
    let params = t.model.trainable_params();
    for (b, indices) in buckets.members.iter().enumerate() {
        let bucket = buckets.buffer(gpu, b)?;
        let bucket: &Tensor = &bucket;
        let members: Vec<&Param> = indices.iter().map(|&i| params[i]).collect();
        let mut host = pack(gpu, &members, bucket, |p| p.grad())?;
        // every sum is in rank order, so each way gives one device's bits
        let keep: Vec<bool> = match (mode, owners) {
            // ZeRO: each rank needs only its own parameters' sums
            (Mode::Ddp, Some((_, owner))) => {
                timed(clock, || {
                    comm.reduce_scatter(&mut host, &buckets.segments[b])
                })?;
                indices.iter().map(|&i| owner[i] == rank).collect()
            }
            (Mode::Ddp, None) => {
                timed(clock, || comm.all_reduce_sum(&mut host))?;
                vec![true; indices.len()]
            }
            (Mode::Dp, _) => match timed(clock, || comm.gather(bytemuck::cast_slice(&host), 0))? {
                Some(all) => {
                    let all: Vec<Vec<f32>> = all
                        .iter()
                        .map(|v| bytemuck::pod_collect_to_vec(v))
                        .collect();
                    super::sum_in_rank_order(all.iter().map(|v| v.as_slice()), &mut host);
                    vec![true; indices.len()]
                }
                None => vec![false; indices.len()],
            },
        };
        unpack(gpu, &host, &members, bucket, |p| p.grad(), &keep);
    }
    Ok(())
}

/// ZeRO 2 and 3 inside the step ([`StepHooks`]).
///
/// Gradients (stages 2 and 3): each parameter's gradient is written into a buffer lent for the
/// micro-batch (workspace); once every member of a bucket is written, the bucket is packed,
/// reduce-scattered, each owned part copied (first micro-batch) or added into the owner's
/// shard gradient, and the lent buffers freed. The shard gradients (charged to gradients:
/// 4Ψ_r) are held here during the backward and given back to their parameters by
/// [`ZeroHooks::finish`], for the norm and the update.
///
/// Values (stage 3): before a layer group's forward or backward, its values are all-gathered
/// from their owners (one fused buffer per group, each owner's part one segment) into
/// buffers charged to workspace, and freed once the group is done.
struct ZeroHooks<'a> {
    /// None on a ledger twin (the plan): the same buffers, no exchange.
    comm: Option<&'a dyn Collective>,
    rank: usize,
    ranks: usize,
    /// Stage 3: gather values.
    values: bool,
    owner: &'a [usize],
    /// Stage 3: the rank holding each value (trainable and frozen).
    holders: &'a HashMap<String, usize>,
    buckets: &'a Buckets,
    /// Trainable parameter name → index.
    index: std::collections::HashMap<String, usize>,
    bucket_of: Vec<usize>,
    /// Members of each bucket written in this micro-batch.
    written: Vec<usize>,
    /// Whether this step has reduced each bucket yet (later micro-batches add).
    reduced: Vec<bool>,
    /// Each parameter's buffer while it is lent out, and its written gradient until its bucket
    /// is reduced.
    lent: Vec<Option<Tensor>>,
    lending: Vec<bool>,
    /// The owned parameters' shard gradients while the backward runs.
    kept: Vec<Option<Tensor>>,
    clock: Duration,
}

impl<'a> ZeroHooks<'a> {
    fn new(
        comm: Option<&'a dyn Collective>,
        (rank, ranks): (usize, usize),
        t: &Trainer,
        owner: &'a [usize],
        holders: &'a HashMap<String, usize>,
        buckets: &'a Buckets,
        values: bool,
    ) -> Self {
        let params = t.model.trainable_params();
        let n = params.len();
        let mut bucket_of = vec![0; n];
        for (b, m) in buckets.members.iter().enumerate() {
            for &i in m {
                bucket_of[i] = b;
            }
        }
        ZeroHooks {
            comm,
            rank,
            ranks,
            values,
            owner,
            holders,
            buckets,
            index: params
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), i))
                .collect(),
            bucket_of,
            written: vec![0; buckets.members.len()],
            reduced: vec![false; buckets.members.len()],
            lent: (0..n).map(|_| None).collect(),
            lending: vec![false; n],
            kept: (0..n).map(|_| None).collect(),
            clock: Duration::ZERO,
        }
    }

    /// Every member of `group` whose value one rank holds (stage 3), as (position in the
    /// group, holder), in holder order: the same list on every rank.
    fn partitioned(&self, group: &[&mut Param]) -> Vec<(usize, usize)> {
        let mut m: Vec<(usize, usize)> = group
            .iter()
            .enumerate()
            .filter_map(|(k, p)| self.holders.get(&p.name).map(|&h| (k, h)))
            .collect();
        m.sort_by_key(|&(k, h)| (h, k));
        m
    }

    fn reduce(&mut self, gpu: &Gpu, b: usize) -> Result<()> {
        let buckets: &'a Buckets = self.buckets;
        let members = &buckets.members[b];
        let bucket = buckets.buffer(gpu, b)?;
        let bucket: &Tensor = &bucket;
        let mut offset = 0;
        for &i in members {
            let g = self.lent[i].as_ref().expect("a written gradient");
            gpu.copy_region(g, 0, bucket, offset, g.bytes());
            offset += g.bytes();
        }
        let mut host: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.read_bytes(&bucket)?);
        if let Some(comm) = self.comm {
            let segments = &buckets.segments[b];
            timed(&mut self.clock, || comm.reduce_scatter(&mut host, segments))?;
        }
        gpu.upload(bucket, bytemuck::cast_slice(&host));
        let mut offset = 0;
        for &i in members {
            let g = self.lent[i].take().expect("a written gradient");
            if self.owner[i] == self.rank {
                let kept = self.kept[i].as_ref().expect("an owned gradient");
                if self.reduced[b] {
                    gpu.copy_region(bucket, offset, &g, 0, g.bytes());
                    crate::ops::elementwise::accumulate(gpu, &g, 1.0, kept);
                } else {
                    gpu.copy_region(bucket, offset, kept, 0, g.bytes());
                }
            }
            offset += g.bytes();
        }
        self.reduced[b] = true;
        Ok(())
    }

    /// After the step's backward: every bucket reduced, the shard gradients back in their
    /// parameters. Returns the time spent in collectives.
    fn finish(mut self, model: &mut dyn crate::nn::Model) -> Duration {
        assert!(
            self.written.iter().all(|&w| w == 0),
            "a bucket's gradients were written and never reduced"
        );
        for p in model.params_mut() {
            if let Some(&i) = self.index.get(&p.name) {
                if let Some(g) = self.kept[i].take() {
                    p.swap_grad(Some(g), false);
                }
            }
        }
        self.clock
    }
}

impl StepHooks for ZeroHooks<'_> {
    fn values_needed(&mut self, gpu: &Gpu, group: &mut [&mut Param]) -> Result<()> {
        if !self.values {
            return Ok(());
        }
        let members = self.partitioned(group);
        if members.is_empty() {
            return Ok(());
        }
        // what the layers read travels: the working copies (half under mixed precision, as
        // their owners rounded them: the same bits a gathered f32 value would round to), no
        // master value (only the owner updates it)
        let dtype = group[members[0].0].compute_dtype();
        // each member in whole 32-bit words (a copy's granularity)
        let slot = |p: &Param| dtype.bytes_for(p.numel()).next_multiple_of(4);
        let mut counts = vec![0; self.ranks];
        for &(k, h) in &members {
            counts[h] += slot(group[k]) as usize;
        }
        let fused = Tensor::empty(
            gpu,
            "zero3 gathered group",
            &[counts.iter().sum::<usize>() / 4],
            DType::U32,
            Category::Workspace,
        )?;
        let mut offset = 0;
        for &(k, h) in &members {
            let bytes = slot(group[k]);
            if h == self.rank {
                gpu.copy_region(group[k].weight(), 0, &fused, offset, bytes);
            }
            offset += bytes;
        }
        let mut host = gpu.read_bytes(&fused)?;
        if let Some(comm) = self.comm {
            timed(&mut self.clock, || comm.all_gather(&mut host, &counts))?;
        }
        gpu.upload(&fused, &host);
        let mut offset = 0;
        for &(k, h) in &members {
            let p = &mut group[k];
            let bytes = slot(p);
            if h != self.rank {
                lend_gathered(gpu, p, &fused, offset, dtype)?;
            }
            offset += bytes;
        }
        Ok(())
    }

    fn values_done(&mut self, gpu: &Gpu, group: &mut [&mut Param]) -> Result<()> {
        if !self.values {
            return Ok(());
        }
        for (k, h) in self.partitioned(group) {
            if h != self.rank {
                group[k].lend_value(gpu, None)?;
            }
        }
        Ok(())
    }

    fn grads_needed(&mut self, gpu: &Gpu, group: &mut [&mut Param]) -> Result<()> {
        for p in group.iter_mut().filter(|p| p.trainable()) {
            let i = self.index[&p.name];
            if self.lending[i] {
                continue;
            }
            self.lending[i] = true;
            let lent = Tensor::zeros(
                gpu,
                &format!("{}.grad (lent)", p.name),
                p.shape(),
                Category::Workspace,
            )?;
            if let Some(own) = p.swap_grad(Some(lent), true) {
                debug_assert!(self.kept[i].is_none());
                self.kept[i] = Some(own);
            }
        }
        Ok(())
    }

    fn grads_written(&mut self, gpu: &Gpu, group: &mut [&mut Param]) -> Result<()> {
        for p in group.iter_mut().filter(|p| p.trainable()) {
            let i = self.index[&p.name];
            self.lending[i] = false;
            self.lent[i] = p.swap_grad(None, false);
            let b = self.bucket_of[i];
            self.written[b] += 1;
            if self.written[b] == self.buckets.members[b].len() {
                self.written[b] = 0;
                self.reduce(gpu, b)?;
            }
        }
        Ok(())
    }
}

/// Runs a collective, adding its wall time to `clock`.
fn timed<T>(clock: &mut Duration, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let r = f();
    *clock += start.elapsed();
    r
}

/// Copies each member's tensor (`which`: its gradient or value) into the fused `bucket`, in
/// order, and reads the bucket back: one transfer for the bucket.
fn pack(
    gpu: &Gpu,
    members: &[&Param],
    bucket: &Tensor,
    which: impl Fn(&Param) -> &Tensor,
) -> Result<Vec<f32>> {
    let mut offset = 0;
    for p in members {
        let t = which(p);
        gpu.copy_region(t, 0, bucket, offset, t.bytes());
        offset += t.bytes();
    }
    Ok(bytemuck::pod_collect_to_vec(&gpu.read_bytes(bucket)?))
}

/// [`pack`] undone: uploads `host` to the bucket and copies back the part of each member
/// whose `keep` is set (nothing is uploaded when none is).
fn unpack(
    gpu: &Gpu,
    host: &[f32],
    members: &[&Param],
    bucket: &Tensor,
    which: impl Fn(&Param) -> &Tensor,
    keep: &[bool],
) {
    if !keep.contains(&true) {
        return;
    }
    gpu.upload(bucket, bytemuck::cast_slice(host));
    let mut offset = 0;
    for (p, &k) in members.iter().zip(keep) {
        let t = which(p);
        if k {
            gpu.copy_region(bucket, offset, t, 0, t.bytes());
        }
        offset += t.bytes();
    }
}

/// Every member's weights as the layers read them (its working copy under mixed precision, else
/// its value) from the rank `from[k]` names, which updated it, to every other rank: packed in
/// whole words in rank order into `bucket` (a gradient bucket: 4 bytes a weight, room enough),
/// all-gathered in their own dtype (half working copies travel as half), and copied into each
/// receiver's copy (the working copy it keeps while the master lives with the updater, or, in
/// f32, its value).
fn sync_weights(
    gpu: &Gpu,
    comm: &dyn Collective,
    rank: usize,
    members: &[&Param],
    from: &[usize],
    bucket: &Tensor,
    clock: &mut Duration,
) -> Result<()> {
    let slot = |p: &Param| p.compute_dtype().bytes_for(p.numel()).next_multiple_of(4);
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&k| from[k]);
    let mut counts = vec![0usize; comm.size()];
    let mut offsets = vec![0u64; members.len()];
    let mut at = 0;
    for &k in &order {
        let (p, bytes) = (members[k], slot(members[k]));
        offsets[k] = at;
        if from[k] == rank {
            gpu.copy_region(p.weight(), 0, bucket, at, bytes);
        }
        counts[from[k]] += bytes as usize;
        at += bytes;
    }
    let mut host = gpu.read_bytes(bucket)?;
    host.truncate(at as usize);
    timed(clock, || comm.all_gather(&mut host, &counts))?;
    if from.iter().all(|&f| f == rank) {
        return Ok(());
    }
    host.resize(bucket.bytes() as usize, 0);
    gpu.upload(bucket, &host);
    for (k, p) in members.iter().enumerate().filter(|&(k, _)| from[k] != rank) {
        let copy = match p.kept_work() {
            Some(w) => w,
            None => {
                debug_assert_eq!(
                    p.compute_dtype(),
                    DType::F32,
                    "{}: a master to round",
                    p.name
                );
                p.value()
            }
        };
        gpu.copy_region(bucket, offsets[k], copy, 0, slot(p));
    }
    Ok(())
}

/// The squared gradient norms of `rank`'s own parameters, each into its slot of `parts`.
pub(super) fn own_norms(
    gpu: &Gpu,
    t: &Trainer,
    owner: &[usize],
    rank: usize,
    parts: &Tensor,
) -> Result<()> {
    for (i, p) in t.model.trainable_params().iter().enumerate() {
        if owner[i] == rank {
            reduce(gpu, p.grad(), Reduction::SumOfSquares, parts, i, false)?;
        }
    }
    Ok(())
}

/// ZeRO's global gradient norm from the shards: each rank reduces its own parameters'
/// squared norms into their slots of `parts` (the others stay 0), the slots are summed over
/// ranks (x + 0 = x: exact), and the host adds them in parameter order, as
/// [`crate::optim::grad_norm_sq`] does on one device: the same bits. Writes the step's stats.
pub(super) fn sharded_grad_norm(
    gpu: &Gpu,
    comm: &dyn Collective,
    t: &Trainer,
    owner: &[usize],
    parts: &Tensor,
    clock: &mut Duration,
) -> Result<()> {
    own_norms(gpu, t, owner, comm.rank(), parts)?;
    let n = t.model.trainable_params().len();
    let mut v = parts.to_f32(gpu)?;
    timed(clock, || comm.all_reduce_sum(&mut v))?;
    let norm_sq = v[..n].iter().copied().reduce(|a, b| a + b).unwrap_or(0.0);
    // the skip word is the guard's to set
    crate::optim::guard::set_norm_sq(gpu, t.stats(), norm_sq)
}

/// The gradient buckets, and their fused device buffers.
struct Buckets {
    /// Each bucket's parameters, as indices into the trainable parameters (under ZeRO grouped
    /// by owner, in rank order, so that each owner's part of the bucket is one segment).
    members: Vec<Vec<usize>>,
    /// ZeRO: each bucket's segment lengths per rank.
    segments: Vec<Vec<usize>>,
    /// Each bucket's elements.
    numel: Vec<usize>,
    /// One fused buffer per bucket, kept for the run (as PyTorch's DDP does); empty under ZeRO
    /// 2, where a bucket's buffer lives only while it is exchanged (a bucket of every
    /// gradient kept for the run would be the Ψ of gradients stage 2 removes).
    kept: Vec<Tensor>,
}

/// A bucket's fused buffer: the one kept for the run, or a fresh one.
enum BucketBuffer<'a> {
    Kept(&'a Tensor),
    Fresh(Tensor),
}

impl std::ops::Deref for BucketBuffer<'_> {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        match self {
            BucketBuffer::Kept(t) => t,
            BucketBuffer::Fresh(t) => t,
        }
    }
}

impl Buckets {
    fn buffer(&self, gpu: &Gpu, b: usize) -> Result<BucketBuffer<'_>> {
        match self.kept.get(b) {
            Some(t) => Ok(BucketBuffer::Kept(t)),
            None => Ok(BucketBuffer::Fresh(bucket_tensor(gpu, b, self.numel[b])?)),
        }
    }
}

fn bucket_tensor(gpu: &Gpu, b: usize, numel: usize) -> Result<Tensor> {
    Tensor::empty(
        gpu,
        &format!("ddp bucket {b}"),
        &[numel],
        DType::F32,
        Category::Workspace,
    )
}

/// One rank's trainer (with its optimizer state or shard) and its strategy (the ZeRO
/// partition, the buckets), over `comm` (None: a ledger twin's plan).
fn setup<'g, 'c>(
    gpu: &'g Gpu,
    comm: Option<&'c dyn Collective>,
    config: &TrainConfig,
    options: &DdpOptions,
    ranks: usize,
    rank: usize,
) -> Result<(Trainer<'g>, DataParallel<'c>)> {
    let per_rank = rows_per_rank(config, options, ranks)?;
    // ZeRO: the partition, from a ledger twin of the model (names and sizes, nothing allocated)
    // ZeRO: the trainable parameters' partition (and under stage 3 the frozen ones', which a
    // LoRA base is), from a ledger twin of the model (names and sizes, nothing allocated)
    let mut frozen: Vec<(String, usize)> = vec![];
    let owners: Option<(Vec<String>, Vec<usize>)> = if options.zero >= 1 {
        let ledger = gpu.ledger();
        let shape = Trainer::new(&ledger, config.clone())?;
        let params = shape.model.trainable_params();
        let sizes: Vec<usize> = params.iter().map(|p| p.numel()).collect();
        let names = params.iter().map(|p| p.name.clone()).collect();
        let all = shape.model.params();
        // (a quantized base is whole on every rank: not partitioned)
        let fixed: Vec<&&Param> = all
            .iter()
            .filter(|p| !p.trainable() && !p.is_quantized())
            .collect();
        let sizes_f: Vec<usize> = fixed.iter().map(|p| p.numel()).collect();
        let part = match options.zero {
            3.. => partition(&sizes_f, ranks),
            // under stages 1 and 2 every rank holds the frozen values
            _ => vec![rank; fixed.len()],
        };
        frozen = fixed.iter().map(|p| p.name.clone()).zip(part).collect();
        Some((names, partition(&sizes, ranks)))
    } else {
        None
    };
    let t = match &owners {
        // a parameter server's replica keeps no optimizer state
        None if options.mode == Mode::Dp && rank != 0 => {
            Trainer::for_rank(gpu, config.clone(), Some(Shard::default()))?
        }
        Some((names, owner)) => {
            let own = names
                .iter()
                .zip(owner)
                .chain(frozen.iter().map(|(n, o)| (n, o)))
                .filter(|(_, &o)| o == rank)
                .map(|(n, _)| n.clone())
                .collect();
            let (grads, values) = (options.zero >= 2, options.zero >= 3);
            Trainer::for_rank(gpu, config.clone(), Some(Shard { own, grads, values }))?
        }
        None => Trainer::for_rank(gpu, config.clone(), None)?,
    };
    let mut strategy = DataParallel::over(&t, comm, options, owners, (rank, ranks), per_rank)?;
    // the parameters whose value (or master) one rank alone holds: every one under ZeRO 3; the
    // trainable ones' masters under mixed precision (with their owner under ZeRO 1 and 2, the
    // server under dp)
    let mixed = config.precision.dtype() != DType::F32;
    match (&strategy.owners, options.zero) {
        (Some((names, owner)), zero) if zero >= 3 || mixed => {
            let trainable = names.iter().cloned().zip(owner.iter().copied());
            strategy.holders = match zero {
                3.. => trainable.chain(frozen).collect(),
                _ => trainable.collect(),
            };
        }
        (None, _) if mixed && options.mode == Mode::Dp => {
            let names = t.model.trainable_params().into_iter();
            strategy.holders = names.map(|p| (p.name.clone(), 0)).collect();
        }
        _ => {}
    }
    Ok((t, strategy))
}

impl<'a> DataParallel<'a> {
    /// The strategy of rank `rank` of `ranks` for the trainer `t` (built for the rank: its
    /// shard under ZeRO, `owners` the partition), over `comm` (None: a ledger twin's plan),
    /// each rank taking `per_rank` rows of the global batch: the gradient buckets and their
    /// fused buffers.
    pub(super) fn over(
        t: &Trainer,
        comm: Option<&'a dyn Collective>,
        options: &DdpOptions,
        owners: Option<(Vec<String>, Vec<usize>)>,
        (rank, ranks): (usize, usize),
        per_rank: usize,
    ) -> Result<DataParallel<'a>> {
        let gpu = t.gpu;
        let trainable = t.model.trainable_params();
        let numels: Vec<usize> = trainable.iter().map(|p| p.numel()).collect();
        // the gradients this rank exchanges: every trainable one (ZeRO lends the buffers of
        // those it does not keep), or those it holds (a pipeline stage's replicas)
        let held: Vec<usize> = (0..trainable.len())
            .filter(|&i| owners.is_some() || trainable[i].grad.is_some())
            .collect();
        let held_numels: Vec<usize> = held.iter().map(|&i| numels[i]).collect();
        let mut groups: Vec<Vec<usize>> = buckets(
            &held_numels,
            options.first_bucket_bytes,
            options.bucket_bytes,
        )
        .into_iter()
        .map(|g| g.into_iter().map(|j| held[j]).collect())
        .collect();
        let mut segments = vec![];
        let mut norm_parts = None;
        if let Some((_, owner)) = &owners {
            for g in &mut groups {
                g.sort_by_key(|&j| owner[j]);
                let mut counts = vec![0; ranks];
                for &j in g.iter() {
                    counts[owner[j]] += numels[j];
                }
                segments.push(counts);
            }
            norm_parts = Some(Tensor::zeros(
                gpu,
                "zero norm parts",
                &[trainable.len().max(1)],
                Category::Workspace,
            )?);
        }
        drop(trainable);
        let numel: Vec<usize> = groups
            .iter()
            .map(|g| g.iter().map(|&j| numels[j]).sum())
            .collect();
        let kept = match options.zero {
            2.. => vec![],
            _ => numel
                .iter()
                .enumerate()
                .map(|(b, &n)| bucket_tensor(gpu, b, n))
                .collect::<Result<_>>()?,
        };
        Ok(DataParallel {
            comm,
            rank,
            ranks,
            mode: options.mode,
            zero: options.zero,
            per_rank,
            owners,
            holders: HashMap::new(),
            buckets: Buckets {
                members: groups,
                segments,
                numel,
                kept,
            },
            norm_parts,
            clock: Duration::ZERO,
        })
    }

    /// The gradients exchanged after the backward (DDP's all-reduce, ZeRO 1's reduce-scatter,
    /// the server's gather), nothing on a ledger twin: the part of [`Strategy::reduce`] a
    /// pipeline stage's replicas share.
    pub(super) fn exchange(&mut self, t: &Trainer) -> Result<()> {
        match self.comm {
            Some(comm) if self.zero < 2 => exchange_grads(
                comm,
                t,
                self.mode,
                &self.owners,
                &self.buckets,
                &mut self.clock,
            ),
            _ => Ok(()),
        }
    }

    /// This rank's micro-batches are the global batch's from number `first` on.
    pub(super) fn first_micro_batch(&self, micro: usize) -> usize {
        self.rank * self.per_rank.div_ceil(micro)
    }

    /// Milliseconds in collective calls so far.
    pub(super) fn comm_ms(&self) -> f64 {
        self.clock.as_secs_f64() * 1e3
    }
}

/// Predicts each rank's peak memory for [`train`] on `gpus` (rank r on `gpus[r]`): every rank's
/// set-up, one step (its slice of the batch, the buckets, its optimizer shard), the evaluation
/// and the checkpoint ([`Trainer::rehearse`]) on a ledger twin, as the planner does for one
/// device; the collectives move host data only and allocate nothing on a device, so they are
/// left out.
pub fn plan(gpus: &[Gpu], config: &TrainConfig, options: &DdpOptions) -> Result<Vec<MemoryStats>> {
    let ranks = gpus.len();
    (0..ranks)
        .map(|rank| plan_rank(&gpus[rank], config, options, ranks, rank))
        .collect()
}

/// [`plan`] for one rank of `ranks`, on `gpu`'s ledger twin: the rank's set-up and one
/// [`Trainer::step_on`] under its strategy, without the exchanges.
pub fn plan_rank(
    gpu: &Gpu,
    config: &TrainConfig,
    options: &DdpOptions,
    ranks: usize,
    rank: usize,
) -> Result<MemoryStats> {
    let ledger = gpu.ledger();
    // the bucket buffers stay live through the step, as in a run
    let (mut t, mut strategy) = setup(&ledger, None, config, options, ranks, rank)?;
    if let Some(init) = config.init.as_deref().filter(|_| config.qlora.is_some()) {
        // a QLoRA base as the run loads it: its quantized sizes (other values are allocated
        // with the model already)
        t.init_from(std::path::Path::new(init))?;
    }
    t.rehearse(&mut strategy)
}

/// Who holds a parameter's value, by name: Some(rank) when one rank of the group holds it
/// (ZeRO 3's partition, a pipeline's stages), None when every rank does.
pub(super) type Holder<'a> = dyn Fn(&str) -> Option<usize> + 'a;

/// Gathers onto every rank the trainable values it does not hold (ZeRO 3, a pipeline's
/// stages: a LoRA run's adapters), each from its `holder` that sends it: one fused buffer
/// (workspace), each holder's part one segment, all-gathered; every rank computes the same
/// layout. Returns the names it lent values to, for [`release_values`]. On a ledger twin
/// (`comm` None, the plan) the same buffers, nothing moved.
fn gather_values(
    comm: Option<&dyn Collective>,
    (rank, ranks): (usize, usize),
    t: &mut Trainer,
    holder: &Holder<'_>,
) -> Result<Vec<String>> {
    let gpu = t.gpu;
    let params: Vec<(&Param, usize)> = t
        .model
        .trainable_params()
        .into_iter()
        .filter_map(|p| holder(&p.name).map(|h| (p, h)))
        .collect();
    let mut order: Vec<usize> = (0..params.len()).collect();
    order.sort_by_key(|&i| (params[i].1, i));
    let mut counts = vec![0; ranks];
    for (p, h) in &params {
        counts[*h] += p.numel();
    }
    let fused = Tensor::empty(
        gpu,
        "gathered model",
        &[counts.iter().sum::<usize>().max(1)],
        DType::F32,
        Category::Workspace,
    )?;
    let mut offsets = vec![0u64; params.len()];
    let mut offset = 0;
    for &i in &order {
        let (p, h) = params[i];
        offsets[i] = offset;
        if h == rank {
            gpu.copy_region(p.value(), 0, &fused, offset, 4 * p.numel() as u64);
        }
        offset += 4 * p.numel() as u64;
    }
    let missing: Vec<(String, u64)> = params
        .iter()
        .enumerate()
        .filter(|(_, (p, _))| !p.resident())
        .map(|(i, (p, _))| (p.name.clone(), offsets[i]))
        .collect();
    drop(params);
    let mut host = gpu.read_bytes(&fused)?;
    let counts = f32_bytes(&counts);
    host.truncate(counts.iter().sum());
    if let Some(comm) = comm {
        comm.all_gather(&mut host, &counts)?;
    }
    if missing.is_empty() {
        return Ok(vec![]);
    }
    gpu.upload(&fused, &host);
    for p in t.model.params_mut() {
        if let Some((_, offset)) = missing.iter().find(|(n, _)| *n == p.name) {
            lend_gathered(gpu, p, &fused, *offset, DType::F32)?;
        }
    }
    Ok(missing.into_iter().map(|(n, _)| n).collect())
}

/// [`Strategy::with_trainable_values`] for a rank whose values are spread over its group (ZeRO
/// 3, a pipeline's stages): the trainable values it does not hold gathered from their
/// `holder`s ([`gather_values`]), `work`, and the gathered values freed (even when `work`
/// failed). Returns the time in collectives.
pub(super) fn with_gathered(
    comm: Option<&dyn Collective>,
    at: (usize, usize),
    t: &mut Trainer,
    holder: &Holder<'_>,
    work: &mut dyn FnMut(&mut Trainer) -> Result<()>,
) -> Result<Duration> {
    let start = Instant::now();
    let gathered = gather_values(comm, at, t, holder)?;
    let clock = start.elapsed();
    let r = work(t);
    release_values(t, &gathered)?;
    r?;
    Ok(clock)
}

/// [`Strategy::whole_values`] for a rank whose values are spread over its group: each rank
/// reads the values it holds (`holder` Some(rank); None: every rank holds it, the lead reads
/// it) and sends them to rank 0's host, which puts the model together in model order. On a
/// ledger twin (`comm` None) nothing moves and nothing is returned.
pub(super) fn gather_on_host(
    comm: Option<&dyn Collective>,
    (rank, _): (usize, usize),
    t: &mut Trainer,
    holder: &Holder<'_>,
) -> Result<Vec<(String, Vec<f32>)>> {
    let Some(comm) = comm else {
        return Ok(vec![]);
    };
    // (a quantized base has no f32 values to gather)
    let params: Vec<&Param> = t
        .model
        .params()
        .into_iter()
        .filter(|p| !p.is_quantized())
        .collect();
    let mut mine: Vec<f32> = vec![];
    for p in &params {
        if holder(&p.name) == Some(rank) {
            mine.extend(p.value().to_f32(t.gpu)?);
        }
    }
    let Some(all) = comm.gather(bytemuck::cast_slice(&mine), 0)? else {
        return Ok(vec![]);
    };
    let all: Vec<Vec<f32>> = all
        .iter()
        .map(|v| bytemuck::pod_collect_to_vec(v))
        .collect();
    let mut at = vec![0usize; all.len()];
    params
        .iter()
        .map(|p| {
            let v = match holder(&p.name) {
                Some(h) => {
                    let v = all[h][at[h]..at[h] + p.numel()].to_vec();
                    at[h] += p.numel();
                    v
                }
                None => p.value().to_f32(t.gpu)?,
            };
            Ok((p.name.clone(), v))
        })
        .collect()
}

/// Per-rank counts of f32 values as byte counts (what [`Collective::all_gather`] takes).
fn f32_bytes(counts: &[usize]) -> Vec<usize> {
    counts.iter().map(|n| 4 * n).collect()
}

/// Lends `p` its value from a gathered buffer (`fused`, at byte `offset`, in `dtype`: f32, or
/// the working precision): a workspace copy.
fn lend_gathered(
    gpu: &Gpu,
    p: &mut Param,
    fused: &Tensor,
    offset: u64,
    dtype: DType,
) -> Result<()> {
    let v = Tensor::empty(
        gpu,
        &format!("{} (gathered)", p.name),
        p.shape(),
        dtype,
        Category::Workspace,
    )?;
    gpu.copy_region(fused, offset, &v, 0, v.bytes().next_multiple_of(4));
    p.lend_value(gpu, Some(v))
}

/// [`gather_values`] undone: the gathered values freed.
fn release_values(t: &mut Trainer, names: &[String]) -> Result<()> {
    let gpu = t.gpu;
    for p in t.model.params_mut() {
        if names.contains(&p.name) {
            p.lend_value(gpu, None)?;
        }
    }
    Ok(())
}
