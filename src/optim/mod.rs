//! Optimizers as fused WGSL kernels (`shaders/optim/`), one dispatch per parameter tensor per
//! step, over the parameter, its gradient and its state. Global-norm gradient clipping is folded
//! into every kernel: the squared norm is a fixed-order reduction over every gradient on the GPU,
//! and each kernel reads it, so clipping needs no readback.

pub mod guard;
pub mod quant_map;
pub mod schedule;

use crate::error::{Error, Result};
use crate::gpu::{Access, Binding, Category, Gpu, Kernel, Shader};
use crate::nn::Param;
use crate::ops::reduce::{reduce, reduce_all, Reduction};
use crate::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerName {
    Sgd,
    Momentum,
    Nesterov,
    Rmsprop,
    Adam,
    Adamw,
    Lion,
    NagGs,
    Adam8bit,
}

impl OptimizerName {
    pub const ALL: [OptimizerName; 9] = [
        OptimizerName::Sgd,
        OptimizerName::Momentum,
        OptimizerName::Nesterov,
        OptimizerName::Rmsprop,
        OptimizerName::Adam,
        OptimizerName::Adamw,
        OptimizerName::Lion,
        OptimizerName::NagGs,
        OptimizerName::Adam8bit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerName::Sgd => "sgd",
            OptimizerName::Momentum => "momentum",
            OptimizerName::Nesterov => "nesterov",
            OptimizerName::Rmsprop => "rmsprop",
            OptimizerName::Adam => "adam",
            OptimizerName::Adamw => "adamw",
            OptimizerName::Lion => "lion",
            OptimizerName::NagGs => "nag-gs",
            OptimizerName::Adam8bit => "adam8bit",
        }
    }

    pub fn parse(s: &str) -> Result<OptimizerName> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|n| n.as_str()).collect();
                Error::Config(format!(
                    "unknown optimizer {s:?}; expected one of {}",
                    names.join(", ")
                ))
            })
    }

    /// The hyper-parameters this method reads (others in its config are an error).
    fn fields(self) -> &'static [&'static str] {
        match self {
            OptimizerName::Sgd => &["weight_decay"],
            OptimizerName::Momentum | OptimizerName::Nesterov => &["momentum", "weight_decay"],
            OptimizerName::Rmsprop => &["alpha", "eps", "momentum", "centered", "weight_decay"],
            OptimizerName::Adam | OptimizerName::Adamw | OptimizerName::Adam8bit => {
                &["beta1", "beta2", "eps", "weight_decay"]
            }
            OptimizerName::Lion => &["beta1", "beta2", "weight_decay"],
            OptimizerName::NagGs => &["mu", "gamma0"],
        }
    }
}

/// `"optimizer": {"name": …, …}`: any field left out takes the method's published default
/// (see [`OptimizerConfig::resolve`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub name: OptimizerName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta1: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta2: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f32>,
    /// RMSProp's smoothing constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub centered: Option<bool>,
    /// NAG-GS's μ (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mu: Option<f32>,
    /// NAG-GS's initial γ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma0: Option<f32>,
}

impl OptimizerConfig {
    pub fn named(name: OptimizerName) -> Self {
        OptimizerConfig {
            name,
            momentum: None,
            beta1: None,
            beta2: None,
            eps: None,
            weight_decay: None,
            alpha: None,
            centered: None,
            mu: None,
            gamma0: None,
        }
    }

    /// Every hyper-parameter, with the published defaults filled in: torch.optim's for SGD
    /// (momentum 0.9 where used), RMSprop (α 0.99, eps 1e-8), Adam (β 0.9, 0.999, eps 1e-8) and
    /// AdamW (weight decay 0.01); Lion's paper (β 0.9, 0.99, λ 0); NAG-GS's (μ 1, γ0 1).
    pub fn resolve(&self) -> Result<Hyper> {
        let n = self.name;
        let given = [
            ("momentum", self.momentum.is_some()),
            ("beta1", self.beta1.is_some()),
            ("beta2", self.beta2.is_some()),
            ("eps", self.eps.is_some()),
            ("weight_decay", self.weight_decay.is_some()),
            ("alpha", self.alpha.is_some()),
            ("centered", self.centered.is_some()),
            ("mu", self.mu.is_some()),
            ("gamma0", self.gamma0.is_some()),
        ];
        for (field, set) in given {
            if set && !n.fields().contains(&field) {
                return Err(Error::Config(format!(
                    "optimizer {} has no field {field:?} (it reads {})",
                    n.as_str(),
                    n.fields().join(", ")
                )));
            }
        }
        let (beta2_default, wd_default) = match n {
            OptimizerName::Lion => (0.99, 0.0),
            OptimizerName::Adamw => (0.999, 0.01),
            _ => (0.999, 0.0),
        };
        let h = Hyper {
            name: n,
            momentum: self.momentum.unwrap_or(if n == OptimizerName::Rmsprop {
                0.0
            } else {
                0.9
            }),
            beta1: self.beta1.unwrap_or(0.9),
            beta2: self.beta2.unwrap_or(beta2_default),
            eps: self.eps.unwrap_or(1e-8),
            weight_decay: self.weight_decay.unwrap_or(wd_default),
            alpha: self.alpha.unwrap_or(0.99),
            centered: self.centered.unwrap_or(false),
            mu: self.mu.unwrap_or(1.0),
            gamma0: self.gamma0.unwrap_or(1.0),
        };
        if n == OptimizerName::NagGs && (h.mu <= 0.0 || h.mu.is_nan()) {
            return Err(Error::Config(format!("nag-gs needs mu > 0, got {}", h.mu)));
        }
        if !(0.0..1.0).contains(&h.beta1) || !(0.0..1.0).contains(&h.beta2) {
            return Err(Error::Config("optimizer betas must be in [0, 1)".into()));
        }
        // torch.optim's checks: these must be finite and not negative
        for (field, value) in [
            ("eps", h.eps),
            ("weight_decay", h.weight_decay),
            ("momentum", h.momentum),
            ("alpha", h.alpha),
        ] {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(Error::Config(format!(
                    "optimizer {field} must be a finite number ≥ 0, got {value}"
                )));
            }
        }
        if n == OptimizerName::NagGs && !(h.gamma0 > 0.0 && h.gamma0.is_finite()) {
            return Err(Error::Config(format!(
                "nag-gs needs gamma0 > 0, got {}",
                h.gamma0
            )));
        }
        Ok(h)
    }
}

/// Resolved hyper-parameters (see [`OptimizerConfig::resolve`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    pub name: OptimizerName,
    pub momentum: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub alpha: f32,
    pub centered: bool,
    pub mu: f32,
    pub gamma0: f32,
}

impl Hyper {
    /// The method and the hyper-parameters it reads, e.g. "lion (beta1 0.9, beta2 0.99, …)".
    pub fn describe(&self) -> String {
        let values: Vec<String> = self
            .name
            .fields()
            .iter()
            .map(|f| match *f {
                "momentum" => format!("momentum {}", self.momentum),
                "beta1" => format!("beta1 {}", self.beta1),
                "beta2" => format!("beta2 {}", self.beta2),
                "eps" => format!("eps {:e}", self.eps),
                "weight_decay" => format!("weight_decay {}", self.weight_decay),
                "alpha" => format!("alpha {}", self.alpha),
                "centered" => format!("centered {}", self.centered),
                "mu" => format!("mu {}", self.mu),
                _ => format!("gamma0 {}", self.gamma0),
            })
            .collect();
        format!("{} ({})", self.name.as_str(), values.join(", "))
    }
}

/// Tensors smaller than this keep f32 state under 8-bit Adam (as bitsandbytes' min_8bit_size).
pub const MIN_8BIT_SIZE: usize = 4096;
/// Values per absmax block of 8-bit Adam.
pub const BLOCK_8BIT: usize = 256;

/// One parameter's optimizer state: its name and its (slot name, state tensor) pairs.
pub type ParamState = (String, Vec<(&'static str, Tensor)>);

/// An optimizer's state for the trainable parameters of one model: named state tensors per
/// parameter name, and the step count. Frozen parameters have none.
pub struct Optimizer {
    pub hyper: Hyper,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f32,
    /// Steps taken.
    pub t: u64,
    /// NAG-GS's scalar γ (one for every tensor: its recurrence does not depend on the data).
    pub gamma: f32,
    /// (parameter name, its (slot name, state tensor) pairs), in the order the parameters were
    /// given; charged to optimizer state. Checkpoints store slot `s` of `p` as `optim.s.p`.
    state: Vec<ParamState>,
    /// Each parameter name's index in `state` (a step looks every parameter up).
    index: HashMap<String, usize>,
    /// One-element stand-ins for RMSProp's unused buffers.
    placeholders: Vec<Tensor>,
    /// 8-bit Adam's maps (512 values), when used.
    qmap: Option<Tensor>,
    /// Adam's bias corrections (1 − β1^t, 1 − β2^t) for t = 1 .. L, then (1, 1), as f32 pairs
    /// (the Adam methods; see [`bias_corrections`]).
    bias_corrections: Option<Tensor>,
}

/// Adam's bias corrections (1 − β1^t, 1 − β2^t) for t = 1, 2, … computed in f64 and rounded to
/// f32, up to the first t where both round to 1.0 (every later step uses that last pair), at
/// most 2^20 steps. The kernels index it by the steps taken, which the step guard counts on the
/// GPU, so a skipped step (a loss-scale overflow) leaves Adam's t as it was without a readback.
pub fn bias_corrections(beta1: f32, beta2: f32) -> Vec<f32> {
    let mut pairs = Vec::new();
    for t in 1..=(1u32 << 20) {
        let bc = |b: f32| (1.0 - (b as f64).powi(t as i32)) as f32;
        let (b1, b2) = (bc(beta1), bc(beta2));
        pairs.extend([b1, b2]);
        if b1 == 1.0 && b2 == 1.0 {
            break;
        }
    }
    pairs
}

fn state_tensor(gpu: &Gpu, p: &Param, slot: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let t = Tensor::empty(
        gpu,
        &format!("optim.{slot}.{}", p.name),
        shape,
        dtype,
        Category::OptimizerState,
    )?;
    gpu.clear(&t);
    Ok(t)
}

/// Records the squared global gradient norm Σ‖g‖² over `params` (trainable ones: each must have
/// a gradient) into `stats[0]`: a fixed-order reduction on the GPU, no readback.
pub fn grad_norm_sq(gpu: &Gpu, params: &[&Param], stats: &Tensor) -> Result<()> {
    if params.is_empty() {
        // nothing to sum: Σg² = 0, written by a sum over one zero (the other words are the
        // guard's, kept across steps)
        let zero = Tensor::zeros(gpu, "no gradients", &[1], Category::Workspace)?;
        return reduce(gpu, &zero, Reduction::SumOfSquares, stats, 0, false);
    }
    let grads: Vec<&Tensor> = params.iter().map(|p| p.grad()).collect();
    reduce_all(gpu, &grads, Reduction::SumOfSquares, stats, 0, false)
}

/// Vec4s per chunk of the Adam step's texture form (at most four operand textures of 4 MiB;
/// smaller where no parameter needs that much). On W-MLP, chunks of 64 Ki vec4s ran 26-43 ms
/// against 23-24 ms for whole tensors.
const ADAM_CHUNK: u64 = 256 * 1024;

/// Records Adam over `n` elements (`args`: grad, stats, param, m, v, bias corrections; `words`
/// up to `decoupled`): `step4` four elements at a time, its texture form in chunks of
/// [`ADAM_CHUNK`] vec4s where the device reads through textures and the tensor is not small
/// ([`crate::ops::TEXTURE_MIN_TEXELS`]; each chunk's grad, param, m and v copied into operand
/// textures first), then `step` over the tail.
fn dispatch_adam(gpu: &Gpu, args: &[(&Tensor, Access)], words: &[u32], n: usize) {
    let head = n / 4 * 4;
    let n4 = (head / 4) as u64;
    // + first (where `step` starts), chunk_first, chunk_len
    let with = |chunk_first: u64, chunk_len: u64| {
        let mut w = words.to_vec();
        w.extend([head as u32, chunk_first as u32, chunk_len as u32]);
        w
    };
    let textures = if gpu.texture_reads() && n4 >= crate::ops::TEXTURE_MIN_TEXELS {
        (0..4)
            .map(|slot| gpu.operand_texture(slot, ADAM_CHUNK.min(n4)))
            .collect::<Option<Vec<_>>>()
    } else {
        None
    };
    match textures {
        Some(textures) => {
            let step4 = Kernel::new(Shader::OptimAdam, "step4_textures");
            // grad, param, m, v: bindings 7..10 in this order
            let sources = [args[0].0, args[2].0, args[3].0, args[4].0];
            for first in (0..n4).step_by(ADAM_CHUNK as usize) {
                let len = ADAM_CHUNK.min(n4 - first);
                for (src, t) in sources.iter().zip(&textures) {
                    gpu.copy_to_texture(*src, first, len, t);
                }
                let mut bindings: Vec<Binding> =
                    args.iter().map(|(t, a)| Binding::Buffer(*t, *a)).collect();
                bindings.extend(textures.iter().map(|t| Binding::Texture(t)));
                let groups = gpu.groups_1d(len.div_ceil(256) as u32);
                gpu.dispatch_bound(&step4, &bindings, &with(first, len), groups);
            }
        }
        None if n4 > 0 => {
            let step4 = Kernel::new(Shader::OptimAdam, "step4");
            crate::ops::dispatch_items(gpu, &step4, args, &with(0, n4), n4 as usize, 256);
        }
        None => {}
    }
    if head < n {
        let step = Kernel::new(Shader::OptimAdam, "step");
        crate::ops::dispatch_items(gpu, &step, args, &with(0, 0), n - head, 256);
    }
}

impl Optimizer {
    /// State for each of `params` that is trainable (frozen ones get none).
    pub fn new(
        gpu: &Gpu,
        config: &OptimizerConfig,
        grad_clip: f32,
        params: &[&Param],
    ) -> Result<Self> {
        let hyper = config.resolve()?;
        let mut state = Vec::with_capacity(params.len());
        let mut uses_8bit = false;
        for p in params.iter().filter(|p| p.trainable()) {
            let shape = p.shape();
            let f32_slot = |slot| state_tensor(gpu, p, slot, shape, DType::F32);
            let slots: Vec<(&'static str, Tensor)> = match hyper.name {
                OptimizerName::Sgd => vec![],
                OptimizerName::Momentum | OptimizerName::Nesterov | OptimizerName::Lion => {
                    vec![("m", f32_slot("m")?)]
                }
                OptimizerName::Rmsprop => {
                    let mut s = vec![("sq", f32_slot("sq")?)];
                    if hyper.momentum > 0.0 {
                        s.push(("buf", f32_slot("buf")?));
                    }
                    if hyper.centered {
                        s.push(("gavg", f32_slot("gavg")?));
                    }
                    s
                }
                OptimizerName::Adam | OptimizerName::Adamw => {
                    vec![("m", f32_slot("m")?), ("v", f32_slot("v")?)]
                }
                OptimizerName::Adam8bit if p.numel() < MIN_8BIT_SIZE => {
                    vec![("m", f32_slot("m")?), ("v", f32_slot("v")?)]
                }
                OptimizerName::Adam8bit => {
                    uses_8bit = true;
                    let words = [p.numel().div_ceil(4)];
                    let blocks = [2 * p.numel().div_ceil(BLOCK_8BIT)];
                    vec![
                        ("m8", state_tensor(gpu, p, "m8", &words, DType::U32)?),
                        ("v8", state_tensor(gpu, p, "v8", &words, DType::U32)?),
                        (
                            "absmax",
                            state_tensor(gpu, p, "absmax", &blocks, DType::F32)?,
                        ),
                    ]
                }
                OptimizerName::NagGs => {
                    // v starts at x
                    let v = Tensor::empty(
                        gpu,
                        &format!("optim.v.{}", p.name),
                        shape,
                        DType::F32,
                        Category::OptimizerState,
                    )?;
                    gpu.copy(p.value(), &v);
                    vec![("v", v)]
                }
            };
            state.push((p.name.clone(), slots));
        }
        let placeholders = (0..2)
            .map(|i| {
                Tensor::zeros(
                    gpu,
                    &format!("optim placeholder {i}"),
                    &[1],
                    Category::Workspace,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let qmap = if uses_8bit {
            Some(Tensor::from_f32(
                gpu,
                "8-bit maps",
                &[512],
                &quant_map::kernel_maps(),
                Category::Workspace,
            )?)
        } else {
            None
        };
        let adam = matches!(
            hyper.name,
            OptimizerName::Adam | OptimizerName::Adamw | OptimizerName::Adam8bit
        );
        let bias_corrections = if adam {
            let pairs = bias_corrections(hyper.beta1, hyper.beta2);
            Some(Tensor::from_f32(
                gpu,
                "adam bias corrections",
                &[pairs.len()],
                &pairs,
                Category::Workspace,
            )?)
        } else {
            None
        };
        let index = state
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.clone(), i))
            .collect();
        Ok(Optimizer {
            hyper,
            grad_clip,
            t: 0,
            gamma: hyper.gamma0,
            state,
            index,
            placeholders,
            qmap,
            bias_corrections,
        })
    }

    /// The state slots of the parameter `name`, if it has state here.
    pub fn slots(&self, name: &str) -> Option<&[(&'static str, Tensor)]> {
        self.index.get(name).map(|&i| self.state[i].1.as_slice())
    }

    /// Every parameter's state, in the order the parameters were given.
    pub fn state(&self) -> &[ParamState] {
        &self.state
    }

    /// Takes over `other`'s state (for parameters this one has none of: a ZeRO shard's owner
    /// Records one step at learning rate `lr` over the trainable `params`, given the step's
    /// `stats` ([`guard::step_stats`]): clipping by the squared global norm in `stats[0]` (from
    /// [`grad_norm_sq`]; read only when clipping is on), and changing nothing when the skip word
    /// `stats[1]` is set ([`guard::check`]); the gradients are multiplied by `stats[2]` (the
    /// loss scaler's unscaling) and Adam's bias corrections follow the steps taken,
    /// `stats[3]`. Every parameter must be one the optimizer was built with; matched by name.
    /// A skipped step still counts in `t` (and NAG-GS's γ advances), not in the steps taken.
    /// Half-precision gradients (mixed precision) are read through f32 views, the fp32 masters
    /// are updated, and each working copy is rounded from its master after its update.
    pub fn step(&mut self, gpu: &Gpu, params: &[&Param], lr: f32, stats: &Tensor) -> Result<()> {
        assert_eq!(
            stats.numel(),
            guard::STATS,
            "optimizer step: the step stats"
        );
        let params: Vec<&Param> = params.iter().copied().filter(|p| p.trainable()).collect();
        assert_eq!(
            params.len(),
            self.state.len(),
            "optimizer built for another parameter list"
        );
        let h = self.hyper;
        let t = self.t + 1;
        let clip = self.grad_clip.to_bits();
        // NAG-GS: b from the old γ; γ advances after the step with this step's α = lr.
        let nag_b = lr * h.mu / (lr * h.mu + self.gamma);
        for p in &params {
            let slots = self
                .slots(&p.name)
                .unwrap_or_else(|| panic!("optimizer has no state for {}", p.name));
            let Some(grad) = crate::ops::widen(gpu, p.grad()) else {
                continue;
            };
            let grad: &Tensor = &grad;
            crate::ops::expect_f32("optimizer step", &[grad, p.value()]);
            let n = p.numel() as u32;
            let wd = if p.decay { h.weight_decay } else { 0.0 };
            let s = |i: usize| &slots[i].1;
            let mut args = vec![(grad, Access::Read), (stats, Access::Read)];
            let (kernel, words, per_group): (Kernel, Vec<u32>, usize) = match h.name {
                OptimizerName::Sgd | OptimizerName::Momentum | OptimizerName::Nesterov => {
                    args.push((p.value(), Access::ReadWrite));
                    let entry = match h.name {
                        OptimizerName::Sgd => "sgd",
                        OptimizerName::Momentum => "momentum",
                        _ => "nesterov",
                    };
                    if h.name != OptimizerName::Sgd {
                        args.push((s(0), Access::ReadWrite));
                    }
                    let w = vec![n, lr.to_bits(), h.momentum.to_bits(), wd.to_bits(), clip];
                    (Kernel::new(Shader::OptimSgd, entry), w, 256)
                }
                OptimizerName::Rmsprop => {
                    // slots: sq, then buf when momentum > 0, then gavg when centered
                    let buf = if h.momentum > 0.0 {
                        s(1)
                    } else {
                        &self.placeholders[0]
                    };
                    let gavg = if h.centered {
                        s(slots.len() - 1)
                    } else {
                        &self.placeholders[1]
                    };
                    args.push((p.value(), Access::ReadWrite));
                    args.push((s(0), Access::ReadWrite));
                    args.push((buf, Access::ReadWrite));
                    args.push((gavg, Access::ReadWrite));
                    let w = vec![
                        n,
                        lr.to_bits(),
                        h.alpha.to_bits(),
                        h.eps.to_bits(),
                        h.momentum.to_bits(),
                        wd.to_bits(),
                        clip,
                        u32::from(h.centered),
                    ];
                    (Kernel::new(Shader::OptimRmsprop, "step"), w, 256)
                }
                OptimizerName::Adam | OptimizerName::Adamw | OptimizerName::Adam8bit => {
                    let decoupled = u32::from(h.name == OptimizerName::Adamw);
                    let w = vec![
                        n,
                        lr.to_bits(),
                        h.beta1.to_bits(),
                        h.beta2.to_bits(),
                        h.eps.to_bits(),
                        wd.to_bits(),
                        clip,
                        decoupled,
                    ];
                    let bc = self
                        .bias_corrections
                        .as_ref()
                        .expect("adam bias corrections");
                    if slots.len() == 3 {
                        args.push((self.qmap.as_ref().expect("8-bit maps"), Access::Read));
                        args.push((p.value(), Access::ReadWrite));
                        args.extend(slots.iter().map(|(_, t)| (t, Access::ReadWrite)));
                        args.push((bc, Access::Read));
                        (Kernel::new(Shader::OptimAdam8bit, "step"), w, BLOCK_8BIT)
                    } else {
                        args.push((p.value(), Access::ReadWrite));
                        args.push((s(0), Access::ReadWrite));
                        args.push((s(1), Access::ReadWrite));
                        args.push((bc, Access::Read));
                        (Kernel::new(Shader::OptimAdam, "step"), w, 256)
                    }
                }
                OptimizerName::Lion => {
                    args.push((p.value(), Access::ReadWrite));
                    args.push((s(0), Access::ReadWrite));
                    let w = vec![
                        n,
                        lr.to_bits(),
                        h.beta1.to_bits(),
                        h.beta2.to_bits(),
                        wd.to_bits(),
                        clip,
                    ];
                    (Kernel::new(Shader::OptimLion, "step"), w, 256)
                }
                OptimizerName::NagGs => {
                    args.push((p.value(), Access::ReadWrite));
                    args.push((s(0), Access::ReadWrite));
                    let w = vec![n, lr.to_bits(), nag_b.to_bits(), h.mu.to_bits(), clip];
                    (Kernel::new(Shader::OptimNagGs, "step"), w, 256)
                }
            };
            if kernel.shader == Shader::OptimAdam {
                dispatch_adam(gpu, &args, &words, p.numel());
            } else {
                crate::ops::dispatch_items(gpu, &kernel, &args, &words, p.numel(), per_group);
            }
            p.refresh_work(gpu);
        }
        guard::count_step(gpu, stats);
        if h.name == OptimizerName::NagGs {
            self.gamma = (self.gamma + lr * h.mu) / (1.0 + lr);
        }
        self.t = t;
        Ok(())
    }
}
