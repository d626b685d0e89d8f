//! Layers and models with explicit forward and backward, in the style of llm.c: a layer's
//! `forward` returns its output and a typed cache; `backward` consumes the cache, returns the input
//! gradient and adds the parameter gradients into each `Param::grad`.

pub mod attention;
pub mod block;
pub mod gpt;
pub mod layernorm;
pub mod linear;
pub mod mlp;
pub mod recompute;

pub use gpt::{Gpt, GptConfig};
pub use mlp::{Activation, Mlp, MlpConfig};
pub use recompute::Recompute;

use crate::error::Result;
use crate::gpu::{Category, Gpu};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// A trainable tensor and its gradient. Gradients accumulate (`+=`) across backward passes;
/// the trainer zeroes them at the first micro-batch of each step.
pub struct Param {
    pub name: String,
    pub value: Tensor,
    pub grad: Tensor,
    /// Whether weight decay applies (matrices and embeddings; not biases or LayerNorm gains).
    pub decay: bool,
    /// Whether `grad` holds the zeros [`zero_grads`] wrote, with nothing added since (see
    /// [`Param::accumulate_grad`]).
    grad_is_zero: AtomicBool,
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

    pub fn new(gpu: &Gpu, name: &str, shape: &[usize], init: &[f32], decay: bool) -> Result<Param> {
        Ok(Param {
            name: name.to_string(),
            value: Tensor::from_f32(gpu, name, shape, init, Category::Params)?,
            grad: Tensor::zeros(gpu, &format!("{name}.grad"), shape, Category::Grads)?,
            decay,
            grad_is_zero: AtomicBool::new(true),
        })
    }

    /// Normal(0, std²) initial values.
    pub fn normal(
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        std: f32,
        rng: &mut Rng,
    ) -> Result<Param> {
        let n: usize = shape.iter().product();
        let init: Vec<f32> = (0..n).map(|_| (rng.normal() * std as f64) as f32).collect();
        Self::new(gpu, name, shape, &init, true)
    }

    /// A constant tensor that does not decay (biases, LayerNorm gains).
    pub fn constant(gpu: &Gpu, name: &str, shape: &[usize], value: f32) -> Result<Param> {
        let n: usize = shape.iter().product();
        Self::new(gpu, name, shape, &vec![value; n], false)
    }

    pub fn numel(&self) -> usize {
        self.value.numel()
    }
}

/// An activation buffer; kernels write all of it before anything reads it.
pub(crate) fn activation(gpu: &Gpu, name: &str, shape: &[usize]) -> Result<Tensor> {
    Tensor::empty(gpu, name, shape, DType::F32, Category::Activations)
}

/// Zeroes every gradient (recorded; no submit).
pub fn zero_grads(gpu: &Gpu, params: &[&Param]) {
    for p in params {
        gpu.clear(&p.grad);
        p.grad_is_zero.store(true, Ordering::Relaxed);
    }
}
