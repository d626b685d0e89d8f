//! Layers and models with explicit forward and backward, in the style of llm.c: a layer's
//! `forward` returns its output and a typed cache; `backward` consumes the cache, returns the input
//! gradient and adds the parameter gradients into each `Param::grad`.

pub mod attention;
pub mod block;
pub mod build;
pub mod feedforward;
pub mod gpt;
pub mod hooks;
pub mod kv_cache;
pub mod layernorm;
pub mod linear;
pub mod lora;
pub mod mlp;
pub mod model;
pub mod norm;
pub mod recompute;

pub use build::{name_matches, Build, LossGrad};
pub use gpt::{Family, Gpt, GptConfig, StageCache, StageOut, StageSpan, TokenBatch};
pub use hooks::{NoHooks, StepHooks};
pub use mlp::{Activation, Mlp, MlpConfig};
pub use model::{Batch, Model};
pub use recompute::Recompute;

use crate::error::Result;
use crate::gpu::{Category, Gpu};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// A model tensor and, while it is trainable, its gradient. Gradients accumulate (`+=`) across
/// backward passes; the trainer zeroes them at the first micro-batch of each step. A frozen
/// parameter ([`Param::freeze`]) has no gradient buffer at all: backward computes no gradient
/// for it and the optimizer keeps no state for it. A trainable one may hold its gradient
/// elsewhere for a while (a ZeRO 2 rank keeps only its own shard's: [`StepHooks`] lend the
/// others a buffer for the backward that writes them), and its value too (a ZeRO 3 rank holds
/// only its own shard's values: the hooks gather the others' before a layer runs and free them
/// after).
pub struct Param {
    pub name: String,
    /// None while the value lives on another rank (ZeRO 3). Under mixed precision this is the
    /// fp32 master copy the optimizer updates (charged to optimizer state when trainable, as
    /// ZeRO counts it), and `work` is what the layers compute with.
    value: Option<Tensor>,
    /// Mixed precision: the half-precision working copy (f16 or bf16, charged to params),
    /// rounded from the master after every update ([`Param::refresh_work`]).
    work: Option<Tensor>,
    /// Whether `work` was lent with a gathered value ([`Param::lend_value`]), and goes when
    /// the value does; a working copy kept while the master lives elsewhere stays.
    work_lent: bool,
    shape: Vec<usize>,
    /// The working precision the layers compute with (f32, or the half type under mixed
    /// precision), known while the value lives elsewhere too.
    compute: DType,
    /// Same shape as the value, in the working precision (f32, or the half type under mixed
    /// precision); None when frozen, or while the gradient lives elsewhere.
    pub grad: Option<Tensor>,
    frozen: bool,
    /// Whether weight decay applies (matrices and embeddings; not biases or LayerNorm gains).
    pub decay: bool,
    /// Whether `grad` holds the zeros [`zero_grads`] wrote, with nothing added since (see
    /// [`Param::accumulate_grad`]).
    grad_is_zero: AtomicBool,
    /// Whether it names a weight held quantized (or waiting to be): it has no f32 value on any
    /// rank, and every rank holds the quantized form whole.
    quantized: bool,
}

impl Param {
    /// Whether a write of this gradient must add to what `grad` holds, and from now on it does:
    /// false for the first write after [`zero_grads`] (the gradient holds zeros, so a kernel
    /// may store instead of adding: the same sum, one read less, and for a matmul the storing
    /// pipeline, which every step runs anyway, instead of the accumulating one), true after
    /// it. Every op that writes a parameter's gradient asks this first, so that a store never
    /// lands on another op's contribution.
    pub fn accumulate_grad(&self) -> bool {
        !self.grad_is_zero.swap(false, Ordering::Relaxed)
    }

    /// The gradient to write and whether to add to it ([`Param::accumulate_grad`]); None for a
    /// frozen parameter, whose gradient nobody computes. Panics (a programmer error) for a
    /// trainable one whose gradient is elsewhere: the step's hooks lend it a buffer first.
    #[track_caller]
    pub fn grad_write(&self) -> Option<(&Tensor, bool)> {
        if self.frozen {
            return None;
        }
        Some((self.grad(), self.accumulate_grad()))
    }

    /// The gradient of a trainable parameter (panics, a programmer error, for a frozen one or
    /// one whose gradient is elsewhere).
    #[track_caller]
    pub fn grad(&self) -> &Tensor {
        self.grad.as_ref().unwrap_or_else(|| {
            if self.frozen {
                panic!("{} is frozen: it has no gradient", self.name)
            } else {
                panic!("{}'s gradient is not on this device now", self.name)
            }
        })
    }

    pub fn trainable(&self) -> bool {
        !self.frozen
    }

    /// Makes the parameter frozen: its gradient buffer goes back to the pool.
    pub fn freeze(&mut self) {
        self.frozen = true;
        self.grad = None;
    }

    /// Gives its value (and working copy) back to the pool: the parameter goes on naming a
    /// weight held in another form (quantized, [`linear::Weight::quantize`]).
    pub(crate) fn discard_value(&mut self) {
        self.quantized = true;
        self.value = None;
        self.work = None;
        self.work_lent = false;
    }

    /// Gives the parameter `grad` (zeros, or a gradient to add to) as its gradient buffer,
    /// returning the one it held; `zeros` says which, for [`Param::accumulate_grad`].
    pub fn swap_grad(&mut self, grad: Option<Tensor>, zeros: bool) -> Option<Tensor> {
        debug_assert!(!self.frozen, "{} is frozen", self.name);
        self.grad_is_zero.store(zeros, Ordering::Relaxed);
        std::mem::replace(&mut self.grad, grad)
    }

    /// A parameter with `init` values: trainable (with a zeroed gradient) unless it is built
    /// by a [`Build`] with a freeze pattern that matches its name, in which case it never
    /// allocates a gradient.
    pub fn new(b: &Build, name: &str, shape: &[usize], init: &[f32], decay: bool) -> Result<Param> {
        Self::build(b, name, shape, decay, |category| {
            Tensor::from_f32(b.gpu, name, shape, init, category)
        })
    }

    /// A parameter whose value `value` creates (charged to the category it is given), unless
    /// `b` puts the value on another rank (see [`Param::new`]).
    fn build(
        b: &Build,
        name: &str,
        shape: &[usize],
        decay: bool,
        value: impl FnOnce(Category) -> Result<Tensor>,
    ) -> Result<Param> {
        let gpu = b.gpu;
        let build::ParamPlan {
            frozen,
            grad_elsewhere,
            value_elsewhere,
            master_elsewhere,
            compute,
            grads: grad_dtype,
        } = b.plan(name);
        let mixed = compute != DType::F32;
        // a trainable master is optimizer state under mixed precision (ZeRO's 4Ψ of its 12Ψ);
        // one that lives elsewhere is made only to round the working copy from
        let master = if master_elsewhere {
            Category::Workspace
        } else if mixed && !frozen {
            Category::OptimizerState
        } else {
            Category::Params
        };
        let mut value = if value_elsewhere {
            None
        } else {
            Some(value(master)?)
        };
        let work = match (&value, mixed) {
            (Some(v), true) => {
                let w = Tensor::empty(gpu, name, shape, compute, Category::Params)?;
                crate::ops::cast::cast(gpu, v, &w);
                Some(w)
            }
            _ => None,
        };
        if master_elsewhere {
            value = None;
        }
        Ok(Param {
            name: name.to_string(),
            value,
            work,
            work_lent: false,
            shape: shape.to_vec(),
            compute,
            frozen,
            grad: if frozen || grad_elsewhere {
                None
            } else {
                let g = Tensor::empty(
                    gpu,
                    &format!("{name}.grad"),
                    shape,
                    grad_dtype,
                    Category::Grads,
                )?;
                gpu.clear(&g);
                Some(g)
            },
            decay,
            grad_is_zero: AtomicBool::new(true),
            quantized: false,
        })
    }

    /// A parameter of no shape with nothing on any device, frozen: what stands in for one
    /// moved elsewhere for a moment (see [`linear::Weight::quantize`]).
    pub(crate) fn placeholder() -> Param {
        Param {
            name: String::new(),
            value: None,
            work: None,
            work_lent: false,
            shape: vec![],
            compute: DType::F32,
            grad: None,
            frozen: true,
            decay: false,
            grad_is_zero: AtomicBool::new(true),
            quantized: false,
        }
    }

    /// A frozen parameter with nothing on any device: the name and shape of a weight a loader
    /// gives in another form (a QLoRA base's quantized matrix, [`linear::Weight::Pending`]).
    pub(crate) fn named(name: &str, shape: &[usize]) -> Param {
        Param {
            name: name.to_string(),
            shape: shape.to_vec(),
            decay: true,
            quantized: true,
            ..Param::placeholder()
        }
    }

    /// Normal(0, std²) initial values.
    pub fn normal(
        b: &Build,
        name: &str,
        shape: &[usize],
        std: f32,
        rng: &mut Rng,
    ) -> Result<Param> {
        if b.skips_values() {
            // a ledger keeps no values and a loader overwrites them: drawing them would only
            // cost time and host memory (20 GB for a 5-billion-weight plan)
            return Self::build(b, name, shape, true, |category| {
                Tensor::empty(b.gpu, name, shape, DType::F32, category)
            });
        }
        // drawn even where the value will live on another rank, so that every rank's stream
        // stays in step
        let n: usize = shape.iter().product();
        let init: Vec<f32> = (0..n).map(|_| (rng.normal() * std as f64) as f32).collect();
        Self::new(b, name, shape, &init, true)
    }

    /// A constant tensor that does not decay (biases, LayerNorm gains).
    pub fn constant(b: &Build, name: &str, shape: &[usize], value: f32) -> Result<Param> {
        if b.skips_values() {
            return Self::build(b, name, shape, false, |category| {
                Tensor::empty(b.gpu, name, shape, DType::F32, category)
            });
        }
        let n: usize = shape.iter().product();
        Self::new(b, name, shape, &vec![value; n], false)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The value (panics, a programmer error, while it lives on another rank: the step's
    /// hooks gather it before a layer reads it).
    #[track_caller]
    pub fn value(&self) -> &Tensor {
        self.value.as_ref().unwrap_or_else(|| {
            panic!(
                "{}'s value is not on this device now (ZeRO 3: its owner holds it)",
                self.name
            )
        })
    }

    /// What the layers compute with: the working copy under mixed precision, else the value.
    #[track_caller]
    pub fn weight(&self) -> &Tensor {
        self.work.as_ref().unwrap_or_else(|| self.value())
    }

    /// The working precision: f32, or f16/bf16 under mixed precision.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Records the rounding of the master value into the working copy (after an update or a
    /// restore; nothing without mixed precision).
    pub fn refresh_work(&self, gpu: &Gpu) {
        if let (Some(v), Some(w)) = (&self.value, &self.work) {
            crate::ops::cast::cast(gpu, v, w);
        }
    }

    /// Whether the value is on this device.
    /// Whether it names a weight held quantized ([`linear::Weight::Quantized`], or waiting to
    /// be): no f32 value anywhere, the quantized form whole on every rank.
    pub fn is_quantized(&self) -> bool {
        self.quantized
    }

    pub fn resident(&self) -> bool {
        self.value.is_some()
    }

    /// Lends the parameter `value`, gathered from its owner (ZeRO, a pipeline's evaluation):
    /// in f32, the value, with a half working copy rounded from it under mixed precision unless
    /// the parameter keeps one (its master living elsewhere: ZeRO 1 and 2); or in the working
    /// precision, the working copy alone (what the layers read, as the owner rounded it; ZeRO
    /// 3's training gathers). Charged to workspace, as lent values are; None frees what was
    /// lent.
    pub fn lend_value(&mut self, gpu: &Gpu, value: Option<Tensor>) -> Result<()> {
        debug_assert!(self.frozen || self.value.is_none() || value.is_none());
        if let Some(v) = &value {
            assert_eq!(v.shape(), self.shape, "{}'s value", self.name);
        }
        let kept = self.work.is_some() && !self.work_lent;
        match value {
            Some(w) if w.dtype() != DType::F32 => {
                assert_eq!(w.dtype(), self.compute, "{}'s working copy", self.name);
                assert!(!kept, "{} keeps its working copy", self.name);
                self.value = None;
                self.work = Some(w);
                self.work_lent = true;
            }
            Some(v) => {
                if !kept && self.compute != DType::F32 {
                    let w = Tensor::empty(
                        gpu,
                        &format!("{} (gathered, working copy)", self.name),
                        &self.shape,
                        self.compute,
                        Category::Workspace,
                    )?;
                    crate::ops::cast::cast(gpu, &v, &w);
                    self.work = Some(w);
                    self.work_lent = true;
                }
                self.value = Some(v);
            }
            None => {
                if self.work_lent {
                    self.work = None;
                    self.work_lent = false;
                }
                self.value = None;
            }
        }
        Ok(())
    }

    /// The working copy a rank keeps while its master lives elsewhere (ZeRO 1 and 2 under
    /// mixed precision), for the owner's rounded weights to be copied into; None otherwise.
    pub fn kept_work(&self) -> Option<&Tensor> {
        match (&self.value, &self.work, self.work_lent) {
            (None, Some(w), false) => Some(w),
            _ => None,
        }
    }
}

/// An activation buffer in `dtype`, the working precision of the layer making it (f32, or
/// f16/bf16 under mixed precision: its input's or its weights'); kernels write all of it before
/// anything reads it.
pub(crate) fn activation(gpu: &Gpu, dtype: DType, name: &str, shape: &[usize]) -> Result<Tensor> {
    Tensor::empty(gpu, name, shape, dtype, Category::Activations)
}

/// An activation kept in f32 whatever the working precision: per-target losses and
/// LayerNorm's statistics (the op policy: reductions and losses in f32).
pub(crate) fn f32_activation(gpu: &Gpu, name: &str, shape: &[usize]) -> Result<Tensor> {
    Tensor::empty(gpu, name, shape, DType::F32, Category::Activations)
}

/// Zeroes every gradient (recorded; no submit); frozen parameters have none.
pub fn zero_grads(gpu: &Gpu, params: &[&Param]) {
    for p in params {
        if let Some(g) = &p.grad {
            gpu.clear(g);
            p.grad_is_zero.store(true, Ordering::Relaxed);
        }
    }
}
