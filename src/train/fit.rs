//! The one training step and the one outer loop, for every strategy.
//!
//! [`Trainer::step_on`] is the crate's only training step: draw the global batch → the
//! strategy's share of it → forward and backward → the strategy's gradient exchange → the
//! global norm → the guarded update → what the strategy does after an update. A [`Strategy`]
//! is what differs between one device ([`Local`]), data parallel (the parameter server, DDP
//! buckets, ZeRO 1-3: `parallel::ddp::DataParallel`) and a pipeline stage (whose replicas are
//! a data-parallel group): it is called between the phases and owns whatever it keeps
//! (buckets, shards, links, collectives). [`Trainer::fit`] is the only outer loop: logging, evaluation every
//! `eval_every` steps, checkpoints every `checkpoint_every` steps and at the end (with the LoRA
//! adapter files), the non-finite guard; what it reports goes to an [`Observer`] (the CLI's
//! progress, log lines and metrics file), in one form for every strategy.

use super::{checkpoint, EvalResult, Trainer};
use crate::error::Result;
use crate::gpu::MemoryStats;
use crate::nn::{Batch, NoHooks};
use std::path::Path;
use std::time::Instant;

/// The checkpoint's file name in a run's output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// What a training step does differently under a way of spreading it over devices; the
/// defaults are one device's.
pub trait Strategy {
    /// This rank's rows of the step's global batch.
    fn local_batch(&self, global: Batch) -> Batch {
        global
    }

    /// Forward and backward of `batch`, each loss scaled by 1/`count` (the targets of the
    /// global batch); gradients accumulate over the micro-batches.
    fn forward_backward(&mut self, t: &mut Trainer, batch: &Batch, count: usize) -> Result<()> {
        t.forward_backward_scaled(batch, count, 0, &mut NoHooks)
    }

    /// After the backward: the gradients made global (an all-reduce, a reduce-scatter), and
    /// the step's loss sum over every rank, when the strategy read it (a sync point).
    fn reduce(&mut self, _t: &mut Trainer) -> Result<Option<f32>> {
        Ok(None)
    }

    /// The squared global gradient norm into the step's stats.
    fn grad_norm(&mut self, t: &mut Trainer) -> Result<()> {
        t.grad_norm()
    }

    /// After the optimizer's update: the new values where they are needed (a broadcast, an
    /// all-gather).
    fn after_update(&mut self, _t: &mut Trainer) -> Result<()> {
        Ok(())
    }

    /// Whether this rank reports: its observer hears the run, and it writes the files.
    fn lead(&self) -> bool {
        true
    }

    /// Runs `work` with the values of every trainable parameter on this rank (ZeRO 3 and a
    /// pipeline's stages gather those they do not hold first and free them after); every rank
    /// calls it together. The LoRA adapter files are written so (the adapters are the
    /// trainable parameters, a small share of the model).
    fn with_trainable_values(
        &mut self,
        t: &mut Trainer,
        work: &mut dyn FnMut(&mut Trainer) -> Result<()>,
    ) -> Result<()> {
        work(t)
    }

    /// Every parameter's values by name, in model order, on the lead's host (empty on the other
    /// ranks, which send theirs): gathered from their holders where the strategy spreads
    /// them, on the host, never onto a device.
    fn whole_values(&mut self, t: &mut Trainer) -> Result<Vec<(String, Vec<f32>)>> {
        if !self.lead() {
            return Ok(vec![]);
        }
        let params = t.model.params();
        params
            .iter()
            .map(|p| Ok((p.name.clone(), p.value().to_f32(t.gpu)?)))
            .collect()
    }

    /// An evaluation under this strategy, on the held-out data the one-device evaluation uses
    /// and with its result; every rank calls it together, and the lead returns the result (the
    /// others None). ZeRO 3 and pipelines run it sharded (the values gathered layer by layer,
    /// the stages' forwards chained), never with the whole model on one device.
    fn evaluate(&mut self, t: &mut Trainer) -> Result<Option<EvalResult>> {
        match self.lead() {
            true => t.evaluate().map(Some),
            false => Ok(None),
        }
    }

    /// This rank's part of a checkpoint, as (index, count) of the files the checkpoint is
    /// written as: count 1 is one file holding everything, the lead's (one device, DDP); None
    /// where other ranks write all this one holds (DDP's other ranks, a pipeline's other
    /// replicas). Each value and each optimizer state is in exactly one part; the lead's part
    /// is number 0 and writes the index.
    fn checkpoint_part(&self) -> Option<(usize, usize)> {
        Some((0, 1))
    }

    /// Whether this rank's checkpoint part holds parameter `name`'s value (a part holds all
    /// the optimizer state its rank keeps).
    fn writes_value(&self, _name: &str) -> bool {
        true
    }

    /// Waits until every rank of the run has come here (their checkpoint parts written).
    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    /// What a step's log record adds for this strategy (bytes and time in collectives).
    fn report(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}

/// One device.
pub struct Local;

impl Strategy for Local {}

/// A logging step's figures.
#[derive(Clone, Debug)]
pub struct StepLog {
    pub step: u64,
    /// The global batch's mean loss.
    pub loss: f32,
    /// The learning rate the step ran at.
    pub lr: f32,
    /// Wall time per step since the last logging step (or evaluation).
    pub ms_per_step: f64,
    /// Tokens (GPT) or samples (MLP) per second over the same steps.
    pub items_per_s: f64,
    /// This rank's device memory.
    pub memory: MemoryStats,
    /// The strategy's figures ([`Strategy::report`]).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What [`Trainer::fit`] tells its observer (on the lead rank only).
pub enum Event<'a> {
    /// A logging step (every `log_every` steps and the last).
    Step(&'a StepLog),
    /// An evaluation (every `eval_every` steps and at the end).
    Eval { step: u64, result: &'a EvalResult },
    /// A checkpoint written (every `checkpoint_every` steps and at the end), with the LoRA
    /// adapter's bytes when the run has one.
    Checkpoint {
        step: u64,
        path: &'a Path,
        adapter_bytes: Option<u64>,
    },
}

/// Hears a run (the CLI's progress bar, log lines and metrics file). An error it returns stops
/// the run (and, through the strategy, every rank).
pub trait Observer {
    fn observe(&self, event: Event<'_>) -> Result<()>;
}

/// Hears nothing.
impl Observer for () {
    fn observe(&self, _: Event<'_>) -> Result<()> {
        Ok(())
    }
}

/// What a [`Trainer::fit`] measured.
#[derive(Clone, Debug)]
pub struct FitReport {
    /// (step, mean loss) of every step whose loss was read: the logging steps on one device,
    /// every step where the strategy reads it anyway (data parallel).
    pub losses: Vec<(u64, f32)>,
    /// The final evaluation (the lead's; None on the other ranks).
    pub eval: Option<EvalResult>,
    /// This rank's memory at the end of the run (the final evaluation and checkpoint included).
    pub memory: MemoryStats,
}

impl Trainer<'_> {
    /// One optimizer step under `strategy` (the phases in order), recorded and submitted as
    /// one batch of GPU work on one device. With `read_loss`, waits for the loss and returns
    /// the global batch's mean; a strategy that read it anyway returns it always.
    pub fn step_on(&mut self, strategy: &mut dyn Strategy, read_loss: bool) -> Result<Option<f32>> {
        let global = self.draw_batch();
        let count = global.targets().max(1);
        let mine = strategy.local_batch(global);
        strategy.forward_backward(self, &mine, count)?;
        let sum = strategy.reduce(self)?;
        strategy.grad_norm(self)?;
        self.update()?;
        strategy.after_update(self)?;
        match sum {
            Some(s) => {
                self.gpu.flush()?;
                Ok(Some(s / count as f32))
            }
            None if read_loss => Ok(Some(self.last_loss_sum()? / count as f32)),
            None => {
                self.gpu.flush()?;
                Ok(None)
            }
        }
    }

    /// A run's peaks on a ledger twin (the planner): one step under `strategy`, the
    /// evaluation, and the checkpoint when the config has an output directory, as
    /// [`Trainer::fit`] runs them (a ledger writes no file).
    pub fn rehearse(&mut self, strategy: &mut dyn Strategy) -> Result<MemoryStats> {
        debug_assert!(self.gpu.is_ledger(), "a rehearsal runs on a ledger twin");
        self.step_on(strategy, false)?;
        self.evaluate_on(strategy)?;
        if let Some(dir) = self.config.out.clone() {
            self.checkpoint_on(strategy, &Path::new(&dir).join(CHECKPOINT_FILE), &())?;
        }
        Ok(self.gpu.memory())
    }

    /// One optimizer step on one device ([`Trainer::step_on`] with [`Local`]).
    pub fn train_step(&mut self, read_loss: bool) -> Result<Option<f32>> {
        self.step_on(&mut Local, read_loss)
    }

    /// Trains up to `config.steps` under `strategy`: logs every `log_every` steps, evaluates
    /// every `eval_every` steps and at the end, checkpoints into the config's `out` directory
    /// every `checkpoint_every` steps and at the end, stops past `max_nonfinite_steps`
    /// non-finite steps. Every rank of a parallel run calls it; the lead reports to `observer`.
    pub fn fit(
        &mut self,
        strategy: &mut dyn Strategy,
        observer: &dyn Observer,
    ) -> Result<FitReport> {
        let c = self.config.clone();
        let checkpoint = c.out.as_ref().map(|d| Path::new(d).join(CHECKPOINT_FILE));
        let lead = strategy.lead();
        let mut losses = vec![];
        // a fine-tune evaluates its base first, so that the run shows what it changed
        if self.step == 0 && c.init.is_some() && c.steps > 0 {
            if let Some(r) = self.evaluate_on(strategy)? {
                observer.observe(Event::Eval {
                    step: 0,
                    result: &r,
                })?;
            }
        }
        // (since, steps, items drawn before)
        let mut interval = (Instant::now(), 0u64, self.items_drawn);
        while self.step < c.steps {
            let log = (self.step + 1) % c.log_every == 0 || self.step + 1 == c.steps;
            let lr = c.lr_at(self.step);
            let loss = self.step_on(strategy, log)?;
            interval.1 += 1;
            if let Some(loss) = loss {
                losses.push((self.step, loss));
                // a non-finite step was skipped on the GPU; past max_nonfinite_steps the run
                // stops (every rank has the same counts: all stop alike)
                self.check_health()?;
                if log && lead {
                    let secs = interval.0.elapsed().as_secs_f64();
                    observer.observe(Event::Step(&StepLog {
                        step: self.step,
                        loss,
                        lr,
                        ms_per_step: 1e3 * secs / interval.1 as f64,
                        items_per_s: (self.items_drawn - interval.2) as f64 / secs,
                        memory: self.gpu.memory(),
                        extra: strategy.report(),
                    }))?;
                    interval = (Instant::now(), 0, self.items_drawn);
                }
            }
            let at_end = self.step == c.steps;
            if c.eval_every > 0 && self.step % c.eval_every == 0 && !at_end {
                if let Some(r) = self.evaluate_on(strategy)? {
                    observer.observe(Event::Eval {
                        step: self.step,
                        result: &r,
                    })?;
                }
                interval = (Instant::now(), 0, self.items_drawn);
            }
            if let Some(path) = &checkpoint {
                if c.checkpoint_every > 0 && self.step % c.checkpoint_every == 0 && !at_end {
                    self.checkpoint_on(strategy, path, observer)?;
                    interval = (Instant::now(), 0, self.items_drawn);
                }
            }
        }
        self.check_health()?;
        let eval = self.evaluate_on(strategy)?;
        if let Some(r) = &eval {
            observer.observe(Event::Eval {
                step: self.step,
                result: r,
            })?;
        }
        if let Some(path) = &checkpoint {
            self.checkpoint_on(strategy, path, observer)?;
        }
        let memory = self.gpu.memory();
        Ok(FitReport {
            losses,
            eval,
            memory,
        })
    }

    /// The whole model's parameters by name, in model order, on the lead's host
    /// ([`Strategy::whole_values`]; empty on the other ranks, which take part).
    pub fn whole_params(&mut self, strategy: &mut dyn Strategy) -> Result<Vec<(String, Vec<f32>)>> {
        strategy.whole_values(self)
    }

    /// An evaluation under `strategy` (see [`Strategy::evaluate`]): the result on the lead,
    /// None on the other ranks.
    pub fn evaluate_on(&mut self, strategy: &mut dyn Strategy) -> Result<Option<EvalResult>> {
        strategy.evaluate(self)
    }

    /// Writes the checkpoint at `path` under `strategy`: one file when the lead holds
    /// everything, else a part per rank that holds some of it (each rank writes its own, then
    /// the lead the index naming them, so no device ever holds the whole model for it); beside
    /// it the LoRA adapter files when the run trains adapters; tells `observer`. Every file is
    /// written atomically and the index last, so a failure or a kill at any point leaves the
    /// last good checkpoint whole.
    pub fn checkpoint_on(
        &mut self,
        strategy: &mut dyn Strategy,
        path: &Path,
        observer: &dyn Observer,
    ) -> Result<()> {
        let lead = strategy.lead();
        let part = strategy.checkpoint_part();
        let ledger = self.gpu.is_ledger();
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|_| part.is_some() && !ledger) {
            std::fs::create_dir_all(dir).map_err(|error| crate::Error::Io {
                path: dir.to_path_buf(),
                error,
            })?;
        }
        let parts = match part {
            Some((_, 1)) => {
                self.save(path)?;
                vec![]
            }
            Some((i, n)) => {
                let s: &dyn Strategy = strategy;
                self.save_part(&checkpoint::part_path(path, self.step, i, n), &|name| {
                    s.writes_value(name)
                })?;
                (0..n)
                    .map(|i| checkpoint::part_path(path, self.step, i, n))
                    .collect()
            }
            None => vec![],
        };
        strategy.barrier()?;
        if lead && !ledger {
            match parts.is_empty() {
                true => checkpoint::remove_stale_parts(path, &[]),
                false => checkpoint::save_index(self.gpu, path, &self.checkpoint_meta()?, &parts)?,
            }
        }
        let mut adapter_bytes = None;
        if let Some(lora) = self.config.lora.clone() {
            strategy.with_trainable_values(self, &mut |t| {
                if let (true, Some(dir), false) = (lead, path.parent(), ledger) {
                    // the base as a path transformers can follow from anywhere
                    let base = match t.config.init.as_deref() {
                        Some(init) => std::fs::canonicalize(init)
                            .map_or(init.to_string(), |p| p.display().to_string()),
                        None => "(trained from scratch)".into(),
                    };
                    let base = base.as_str();
                    let model = t.model.as_ref();
                    let family = t.config.gpt.family;
                    adapter_bytes = Some(super::adapter::save(
                        t.gpu, dir, model, &lora, base, family,
                    )?);
                }
                Ok(())
            })?;
        }
        if lead {
            observer.observe(Event::Checkpoint {
                step: self.step,
                path,
                adapter_bytes,
            })?;
        }
        Ok(())
    }
}
