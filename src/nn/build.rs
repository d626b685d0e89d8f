//! How a model's parameters are made ([`Build`]) and how a training pass seeds its backward
//! ([`LossGrad`]): the two contexts every constructor and every pass is handed explicitly.
//! Nothing about precision, freezing, sharding or loss scaling is read from the thread.

use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};
use std::collections::HashSet;

/// The context a model is built in: the device, the working precision of its parameters and
/// activations (f32, or f16/bf16 under mixed precision with f32 masters), the gradients' dtype,
/// which parameters are frozen and which this rank holds. Every constructor takes one;
/// `Build::new(gpu)` is plain f32 training with everything on this device.
#[derive(Clone)]
pub struct Build<'g> {
    pub gpu: &'g Gpu,
    compute: DType,
    grads: Option<DType>,
    frozen: Vec<String>,
    /// The parameters this rank owns, when the model states are sharded ([`Build::shard`]).
    own: Option<HashSet<String>>,
    own_grads: bool,
    values: bool,
    /// The values come from a file ([`Build::loading`]): initialisers draw nothing.
    loading: bool,
    /// Frozen linear weights are left for a loader to quantize ([`Build::quantized`]).
    quantized: bool,
    /// Modules whose parameters train whatever `frozen` says ([`Build::thawed`]).
    thawed: Vec<String>,
}

/// What [`Build`] decides for one parameter.
pub(crate) struct ParamPlan {
    pub frozen: bool,
    /// Its gradient lives on another rank (ZeRO 2 and 3, a pipeline's other stages).
    pub grad_elsewhere: bool,
    /// Its value lives on another rank (ZeRO 3, a pipeline's other stages).
    pub value_elsewhere: bool,
    /// Under mixed precision, its f32 master lives with the rank whose optimizer updates it;
    /// this rank keeps the half working copy alone (ZeRO 1 and 2, a parameter server's
    /// replicas).
    pub master_elsewhere: bool,
    pub compute: DType,
    pub grads: DType,
}

impl<'g> Build<'g> {
    /// f32, every parameter trainable and held here.
    pub fn new(gpu: &'g Gpu) -> Build<'g> {
        Build {
            gpu,
            compute: DType::F32,
            grads: None,
            frozen: Vec::new(),
            own: None,
            own_grads: false,
            values: false,
            loading: false,
            quantized: false,
            thawed: Vec::new(),
        }
    }

    /// Parameters whose values a loader writes next: they are allocated, not initialised
    /// (no random draw, no upload), so a 100-million-weight model costs no host time twice.
    pub fn loading(mut self) -> Self {
        self.loading = true;
        self
    }

    /// The parameters of these modules (LoRA's `modules_to_save`, by
    /// [`super::lora::in_modules`]) train, whatever the frozen patterns say.
    pub fn thawed(mut self, modules: &[String]) -> Self {
        self.thawed = modules.to_vec();
        self
    }

    /// Frozen linear weights get no value at all: a loader gives each its quantized form
    /// (QLoRA's base: [`super::linear::Weight::Pending`]), so the dense matrices are never
    /// allocated.
    pub fn quantized(mut self) -> Self {
        self.quantized = true;
        self
    }

    /// Whether the linear weight `name` is left for a loader to quantize.
    pub(crate) fn quantizes(&self, name: &str) -> bool {
        self.quantized && self.plan(name).frozen
    }

    /// Whether the initialisers skip their values (a ledger, which keeps none, or a loader).
    pub(crate) fn skips_values(&self) -> bool {
        self.loading || self.gpu.is_ledger()
    }

    /// `dtype` as the working precision: parameters get a working copy and gradients of that
    /// type (mixed precision, with f32 masters), and the passes make activations in it.
    pub fn precision(mut self, dtype: DType) -> Self {
        assert!(
            matches!(dtype, DType::F32 | DType::F16 | DType::BF16),
            "Build::precision: {} is not a float working precision",
            dtype.name()
        );
        self.compute = dtype;
        self
    }

    /// Gradients of `dtype` for the trainable parameters, whatever the working precision (the
    /// trainer's f32 gradients when mixed-precision micro-batches or ranks are summed).
    pub fn grads(mut self, dtype: DType) -> Self {
        self.grads = Some(dtype);
        self
    }

    /// Parameters whose names match one of `patterns` ([`name_matches`]) are built frozen: no
    /// gradient is ever allocated for them (freezing afterwards would allocate it first).
    pub fn frozen(mut self, patterns: &[String]) -> Self {
        self.frozen = patterns.to_vec();
        self
    }

    /// A rank that owns the parameters in `own` (a ZeRO shard, a pipeline stage, none for a
    /// parameter server's replica): under mixed precision only these keep their f32 masters
    /// (the others their half working copies); with `grads` only these get gradient buffers
    /// (ZeRO 2), with `values` only these (frozen ones too) their values (ZeRO 3). What a rank
    /// lacks the step's [`super::StepHooks`] lend while a layer needs it.
    pub fn shard(mut self, own: &HashSet<String>, grads: bool, values: bool) -> Self {
        self.own = Some(own.clone());
        self.own_grads = grads;
        self.values = values;
        self
    }

    /// The working precision.
    pub fn compute(&self) -> DType {
        self.compute
    }

    pub(crate) fn plan(&self, name: &str) -> ParamPlan {
        let frozen = self.frozen.iter().any(|p| name_matches(p, name))
            && !super::lora::in_modules(&self.thawed, name);
        // what this rank does not hold, frozen parameters included (a ZeRO 3 rank holds its
        // share of a LoRA base, a pipeline stage its own layers')
        let elsewhere = self.own.as_ref().is_some_and(|own| !own.contains(name));
        ParamPlan {
            frozen,
            grad_elsewhere: elsewhere && self.own_grads,
            value_elsewhere: elsewhere && self.values,
            master_elsewhere: elsewhere && !frozen && self.compute != DType::F32,
            compute: self.compute,
            grads: self.grads.unwrap_or(self.compute),
        }
    }
}

/// How a training pass seeds its backward: dloss/dlogit = `scale` · (softmax − onehot), times
/// the dynamic loss scale held in `loss_scale` (the step stats of a run with a loss scaler,
/// `optim::guard`) when given. `scale` is 1/(targets of the whole step), over micro-batches and
/// ranks, so that summed gradients are the mean loss's.
#[derive(Clone, Copy)]
pub struct LossGrad<'a> {
    pub scale: f32,
    pub loss_scale: Option<&'a Tensor>,
}

impl LossGrad<'_> {
    /// Gradients of Σ losses · `scale`, no loss scaler.
    pub fn plain(scale: f32) -> LossGrad<'static> {
        LossGrad {
            scale,
            loss_scale: None,
        }
    }
}

/// Whether `name` matches a freeze pattern: the exact name, or a prefix ending in `*`
/// ("h.0.*", "wte").
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}
