//! A multilayer perceptron classifier: Linear → activation → … → Linear → logits.

use super::linear::Linear;
use super::{activation, f32_activation, Build, LossGrad, Param, StepHooks};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::elementwise::relu_backward;
use crate::ops::softmax_xent::softmax_xent_scaled;
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Gelu,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlpConfig {
    /// Input features; set from the data when 0.
    pub inputs: usize,
    pub hidden: Vec<usize>,
    /// Output classes; set from the data when 0.
    pub classes: usize,
    pub activation: Activation,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            inputs: 0,
            hidden: vec![128],
            classes: 0,
            activation: Activation::Relu,
        }
    }
}

pub struct Mlp {
    pub config: MlpConfig,
    pub layers: Vec<Linear>,
}

/// Per hidden layer: its pre-activation (GELU's backward needs it; a ReLU's mask reads the same
/// from the output, so ReLU layers keep none) and activation outputs.
struct Hidden {
    pre: Option<Tensor>,
    post: Tensor,
}

impl Mlp {
    /// Weights Normal(0, 2/fan_in) (He), biases zero.
    pub fn new(b: &Build, config: MlpConfig, rng: &mut Rng) -> Result<Mlp> {
        if config.inputs == 0 || config.classes == 0 || config.hidden.contains(&0) {
            return Err(Error::Config(format!(
                "mlp: every layer needs a positive size (inputs {}, hidden {:?}, classes {})",
                config.inputs, config.hidden, config.classes
            )));
        }
        let mut sizes = vec![config.inputs];
        sizes.extend(&config.hidden);
        sizes.push(config.classes);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let std = (2.0 / w[0] as f32).sqrt();
                Linear::new(b, &format!("fc{i}"), w[0], w[1], true, std, rng)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Mlp { config, layers })
    }

    /// The working precision of its activations: its layers'.
    fn dtype(&self) -> crate::tensor::DType {
        self.layers[0].dtype()
    }

    pub fn params(&self) -> Vec<&Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.params_mut())
            .collect()
    }

    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.numel()).sum()
    }

    /// Layer i's forward of `input`: a hidden layer's pre-activation (GELU) and activation, or
    /// the last layer's logits (as `post`).
    fn layer_forward(&self, gpu: &Gpu, i: usize, input: &Tensor) -> Result<Hidden> {
        let layer = &self.layers[i];
        let shape = [input.rows(), layer.out_features];
        if i + 1 == self.layers.len() {
            let logits = activation(gpu, self.dtype(), "logits", &shape)?;
            layer.forward(gpu, input, &logits)?;
            return Ok(Hidden {
                pre: None,
                post: logits,
            });
        }
        Ok(match self.config.activation {
            // one pass: the matmul's stores add the bias and apply the ReLU
            Activation::Relu => {
                let post = activation(gpu, self.dtype(), "mlp.post", &shape)?;
                layer.forward_relu(gpu, input, &post);
                Hidden { pre: None, post }
            }
            // one pass: the matmul's stores keep the pre-activation and write its GELU
            Activation::Gelu => {
                let pre = activation(gpu, self.dtype(), "mlp.pre", &shape)?;
                let post = activation(gpu, self.dtype(), "mlp.post", &shape)?;
                layer.forward_gelu(gpu, input, &pre, &post)?;
                Hidden {
                    pre: Some(pre),
                    post,
                }
            }
        })
    }

    /// The logits and every hidden layer's outputs; `hooks` (a training step's) see each
    /// layer's values used.
    fn forward(
        &mut self,
        gpu: &Gpu,
        x: &Tensor,
        hooks: &mut dyn StepHooks,
    ) -> Result<(Tensor, Vec<Hidden>)> {
        let mut hidden: Vec<Hidden> = vec![];
        for i in 0..self.layers.len() {
            let input = hidden.last().map_or(x, |h| &h.post);
            hooks.values_needed(gpu, &mut self.layers[i].params_mut())?;
            let h = self.layer_forward(gpu, i, input)?;
            hooks.values_done(gpu, &mut self.layers[i].params_mut())?;
            hidden.push(h);
        }
        let logits = hidden.pop().unwrap().post;
        Ok((logits, hidden))
    }

    /// Logits (N, classes) for inputs x (N, inputs).
    pub fn logits(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
        let mut h = self.layer_forward(gpu, 0, x)?;
        for i in 1..self.layers.len() {
            h = self.layer_forward(gpu, i, &h.post)?;
        }
        Ok(h.post)
    }

    /// [`Mlp::logits`] with `hooks` bringing each layer's values and freeing them after (an
    /// evaluation under ZeRO 3).
    pub fn logits_hooked(
        &mut self,
        gpu: &Gpu,
        x: &Tensor,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        let mut h: Option<Tensor> = None;
        for i in 0..self.layers.len() {
            hooks.values_needed(gpu, &mut self.layers[i].params_mut())?;
            let out = self.layer_forward(gpu, i, h.as_ref().unwrap_or(x))?;
            hooks.values_done(gpu, &mut self.layers[i].params_mut())?;
            h = Some(out.post);
        }
        Ok(h.expect("an mlp has layers"))
    }

    /// Forward and backward of Σ losses, the backward seeded by `loss`; adds every parameter's gradient and returns
    /// the per-sample losses (N). Each layer is a group of [`StepHooks`].
    pub fn forward_backward(
        &mut self,
        gpu: &Gpu,
        x: &Tensor,
        targets: &Tensor,
        loss: LossGrad,
        hooks: &mut dyn StepHooks,
    ) -> Result<Tensor> {
        let (logits, hidden) = self.forward(gpu, x, hooks)?;
        let losses = f32_activation(gpu, "losses", &[x.rows()])?;
        let mut dout = activation(gpu, self.dtype(), "dlogits", logits.shape())?;
        softmax_xent_scaled(
            gpu,
            &logits,
            targets,
            &losses,
            Some(&dout),
            loss.scale,
            loss.loss_scale,
        )?;
        for i in (0..self.layers.len()).rev() {
            let input = if i == 0 { x } else { &hidden[i - 1].post };
            hooks.values_needed(gpu, &mut self.layers[i].params_mut())?;
            hooks.grads_needed(gpu, &mut self.layers[i].params_mut())?;
            // the gradient at the layer below's pre-activation, through its activation: GELU's
            // derivative in the stores of dx's matmul, a ReLU's mask after it
            let below = i.checked_sub(1).map(|j| &hidden[j]);
            let (gelu_dpre, relu_dpost) = match below {
                None => (None, None),
                Some(Hidden { pre: Some(_), .. }) => (
                    Some(activation(gpu, self.dtype(), "mlp.dpre", input.shape())?),
                    None,
                ),
                Some(Hidden { pre: None, .. }) => (
                    None,
                    Some(activation(gpu, self.dtype(), "mlp.dpost", input.shape())?),
                ),
            };
            match (below, &gelu_dpre) {
                (Some(Hidden { pre: Some(pre), .. }), Some(dpre)) => {
                    self.layers[i].backward_through_gelu(gpu, input, pre, &dout, dpre)?
                }
                _ => self.layers[i].backward(gpu, input, &dout, relu_dpost.as_ref())?,
            }
            hooks.grads_written(gpu, &mut self.layers[i].params_mut())?;
            hooks.values_done(gpu, &mut self.layers[i].params_mut())?;
            let Some(h) = below else { break };
            dout = match (gelu_dpre, relu_dpost) {
                (Some(dpre), _) => dpre,
                (None, Some(dpost)) => {
                    let dpre = activation(gpu, self.dtype(), "mlp.dpre", input.shape())?;
                    // post > 0 exactly where pre > 0
                    relu_backward(gpu, &h.post, &dpost, &dpre);
                    dpre
                }
                (None, None) => unreachable!("a layer below has a gradient buffer"),
            };
        }
        Ok(losses)
    }
}
