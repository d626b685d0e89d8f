//! Linear layer: y = x·Wᵀ + b, with W stored (out, in) as PyTorch keeps it. W is a [`Weight`]:
//! a parameter (here, or held by another rank and gathered while the layer runs) or a frozen
//! quantized matrix; a LoRA adapter wraps either, forward and backward.

use super::lora::LoraAdapter;
use super::{activation, Build, Param};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::dropout::dropout;
use crate::ops::elementwise::{accumulate, gelu_backward, gelu_forward, scale};
use crate::ops::matmul::{
    matmul, matmul_backward, matmul_bias_relu, matmul_gelu, matmul_gelu_grad, Layout, MatmulDims,
};
use crate::ops::qmatmul::{dequantize, qmatmul, QuantWeight};
use crate::ops::reduce::colsum;
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};
use std::sync::atomic::Ordering;

/// What a [`Linear`] multiplies by.
pub enum Weight {
    /// A parameter, trainable or frozen, dense in the working precision: on this device, or
    /// held by another rank and lent while the layer runs (ZeRO 3; see [`Param`]).
    Dense(Param),
    /// Frozen and quantized on the device, read through the dequantizing matmul; its backward
    /// gives dx = dy·W (W decoded for it), never a dW. `param` names it and holds its place in
    /// the parameter order; it has no value anywhere.
    Quantized {
        param: Param,
        quant: Box<QuantWeight>,
    },
    /// Frozen, with no value yet: a loader gives it its quantized form
    /// ([`Weight::quantize`]); it cannot run until then.
    Pending(Param),
}

impl Weight {
    /// The parameter that names the weight (its value, for a dense one).
    pub fn param(&self) -> &Param {
        match self {
            Weight::Dense(p) | Weight::Quantized { param: p, .. } | Weight::Pending(p) => p,
        }
    }

    pub fn param_mut(&mut self) -> &mut Param {
        match self {
            Weight::Dense(p) | Weight::Quantized { param: p, .. } | Weight::Pending(p) => p,
        }
    }

    /// The weight in its quantized form, with the parameter that names it (frozen: nothing
    /// computes a quantized weight's gradient; its dense value, if any, freed).
    pub fn quantize(&mut self, quant: QuantWeight) {
        let p = self.param_mut();
        let mut param = std::mem::replace(p, Param::placeholder());
        param.freeze();
        param.discard_value();
        *self = Weight::Quantized {
            param,
            quant: Box::new(quant),
        };
    }
}

pub struct Linear {
    /// (out, in)
    pub weight: Weight,
    /// (out)
    pub b: Option<Param>,
    pub in_features: usize,
    pub out_features: usize,
    /// A LoRA update scale·B·A added to W's output (see `nn::lora`).
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// Weights Normal(0, std²), bias zero.
    pub fn new(
        b: &Build,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        std: f32,
        rng: &mut Rng,
    ) -> Result<Linear> {
        let w = format!("{name}.weight");
        let shape = [out_features, in_features];
        Ok(Linear {
            weight: match b.quantizes(&w) {
                true => Weight::Pending(Param::named(&w, &shape)),
                false => Weight::Dense(Param::normal(b, &w, &shape, std, rng)?),
            },
            b: if bias {
                Some(Param::constant(
                    b,
                    &format!("{name}.bias"),
                    &[out_features],
                    0.0,
                )?)
            } else {
                None
            },
            in_features,
            out_features,
            lora: None,
        })
    }

    /// The parameter naming W (see [`Weight::param`]).
    pub fn w(&self) -> &Param {
        self.weight.param()
    }

    /// The working precision of its activations: its weight's.
    pub fn dtype(&self) -> DType {
        self.w().compute_dtype()
    }

    /// The layer's name: its weight's without ".weight" ("h.0.attn.c_attn").
    pub fn name(&self) -> &str {
        let name = &self.w().name;
        name.strip_suffix(".weight").unwrap_or(name)
    }

    fn dims(&self, x: &Tensor) -> MatmulDims {
        let rows = x.numel() / self.in_features;
        assert_eq!(
            rows * self.in_features,
            x.numel(),
            "linear {}: input {x:?}",
            self.w().name
        );
        MatmulDims::new(rows, self.out_features, self.in_features, Layout::NT)
    }

    /// out (R, out) = x (R, in)·Wᵀ + b (+ scale·(x·Aᵀ)·Bᵀ with an adapter)
    pub fn forward(&self, gpu: &Gpu, x: &Tensor, out: &Tensor) -> Result<()> {
        let d = self.dims(x);
        let bias = self.b.as_ref().map(|b| b.weight());
        match &self.weight {
            Weight::Quantized { quant, .. } if quant.is_codes() => {
                qmatmul(gpu, x, quant, bias, false, out)
            }
            // ggml blocks: decoded for this product, then the dense matmul
            Weight::Quantized { quant, .. } => {
                matmul(gpu, d, x, &self.decoded(gpu, quant)?, bias, out, false)
            }
            Weight::Dense(w) => matmul(gpu, d, x, w.weight(), bias, out, false),
            Weight::Pending(_) => return Err(self.never_loaded()),
        }
        if let Some(lora) = self.lora.as_ref().filter(|l| !l.merged) {
            let us = self.lora_hidden(gpu, lora, x)?;
            // out += us (R, r)·Bᵀ
            let db = MatmulDims::new(d.m, self.out_features, lora.rank(), Layout::NT);
            matmul(gpu, db, &us, lora.b.weight(), None, out, true);
        }
        Ok(())
    }

    /// The error of running a [`Weight::Pending`] layer.
    fn never_loaded(&self) -> crate::error::Error {
        crate::error::Error::Config(format!(
            "{}: its quantized weight was never loaded (a QLoRA base fills it from its file)",
            self.name()
        ))
    }

    /// W (out, in) decoded from its quantized form for one product (workspace, freed after).
    fn decoded(&self, gpu: &Gpu, quant: &QuantWeight) -> Result<Tensor> {
        let w = Tensor::empty(
            gpu,
            "linear.w_decoded",
            &[self.out_features, self.in_features],
            DType::F32,
            crate::gpu::Category::Workspace,
        )?;
        dequantize(gpu, quant, &w);
        Ok(w)
    }

    /// The adapter's input: x, or x under the layer's dropout mask while training (recomputed
    /// by backward from the same seed rather than kept).
    fn lora_input(&self, gpu: &Gpu, lora: &LoraAdapter, x: &Tensor) -> Result<Option<Tensor>> {
        let p = lora.active_dropout();
        if p == 0.0 {
            return Ok(None);
        }
        let xd = activation(gpu, self.dtype(), "lora.x_drop", x.shape())?;
        dropout(gpu, x, p, lora.seed.load(Ordering::Relaxed), &xd);
        Ok(Some(xd))
    }

    /// scale·(x'·Aᵀ) (R, r), x' the adapter's input: the adapter's hidden activation
    /// (recomputed by backward rather than kept: it costs R·in·r multiply-adds).
    fn lora_hidden(&self, gpu: &Gpu, lora: &LoraAdapter, x: &Tensor) -> Result<Tensor> {
        let rows = self.dims(x).m;
        let r = lora.rank();
        let dropped = self.lora_input(gpu, lora, x)?;
        let x = dropped.as_ref().unwrap_or(x);
        let u = activation(gpu, self.dtype(), "lora.u", &[rows, r])?;
        let da = MatmulDims::new(rows, r, self.in_features, Layout::NT);
        matmul(gpu, da, x, lora.a.weight(), None, &u, false);
        let us = activation(gpu, self.dtype(), "lora.us", &[rows, r])?;
        scale(gpu, &u, lora.scale, &us);
        Ok(us)
    }

    /// out (R, out) = max(x·Wᵀ + b, 0): the layer and a ReLU after it in one pass (the matmul's
    /// stores apply both). Needs the bias.
    pub fn forward_relu(&self, gpu: &Gpu, x: &Tensor, out: &Tensor) {
        let b = self
            .b
            .as_ref()
            .expect("forward_relu: a Linear layer with a bias");
        assert!(
            self.lora.is_none(),
            "forward_relu: {} has a LoRA adapter",
            self.name()
        );
        match &self.weight {
            Weight::Quantized { quant, .. } => qmatmul(gpu, x, quant, Some(b.weight()), true, out),
            Weight::Dense(w) => matmul_bias_relu(gpu, self.dims(x), x, w.weight(), b.weight(), out),
            Weight::Pending(_) => panic!("{}", self.never_loaded()),
        }
    }

    /// pre (R, out) = x·Wᵀ + b (as [`Linear::forward`]) and post = gelu(pre): without an adapter
    /// or a quantized weight one pass, the GELU in the matmul's stores (`matmul_gelu`); with one,
    /// the forward and then the elementwise GELU (in f32 the same bits).
    pub fn forward_gelu(&self, gpu: &Gpu, x: &Tensor, pre: &Tensor, post: &Tensor) -> Result<()> {
        match &self.weight {
            Weight::Dense(w) if self.lora.as_ref().is_none_or(|l| l.merged) => {
                let bias = self.b.as_ref().map(|b| b.weight());
                matmul_gelu(gpu, self.dims(x), x, w.weight(), bias, pre, post);
            }
            _ => {
                self.forward(gpu, x, pre)?;
                gelu_forward(gpu, pre, post);
            }
        }
        Ok(())
    }

    /// dW += doutᵀ·x, db += Σ_rows dout (for those not frozen), and dx = dout·W when asked;
    /// with an adapter also dB, dA and its share of dx.
    pub fn backward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        dout: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        if let Some(dx) = dx {
            let d = self.dims(x);
            match &self.weight {
                Weight::Dense(w) => {
                    matmul_backward(gpu, d, x, w.weight(), dout, Some(dx), None, None, false)
                }
                Weight::Quantized { quant, .. } => {
                    // dequantize, then the dense matmul
                    let w = self.decoded(gpu, quant)?;
                    matmul_backward(gpu, d, x, &w, dout, Some(dx), None, None, false);
                }
                Weight::Pending(_) => return Err(self.never_loaded()),
            }
        }
        self.backward_params(gpu, x, dout, dx)
    }

    /// [`Linear::backward`] for a layer whose input x = gelu(pre): dpre = (dout·W) ⊙ gelu'(pre),
    /// the gradient at the GELU's input, in place of dx. Without an adapter one pass (the GELU's
    /// derivative in the matmul's stores: `matmul_gelu_grad`); with one, dx first (the adapter
    /// adds its share), then the elementwise GELU backward (in f32 the same bits).
    pub fn backward_through_gelu(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        pre: &Tensor,
        dout: &Tensor,
        dpre: &Tensor,
    ) -> Result<()> {
        let w = match (&self.weight, &self.lora) {
            (Weight::Dense(w), None) => w,
            _ => {
                let dx = activation(gpu, self.dtype(), "linear.dx", x.shape())?;
                self.backward(gpu, x, dout, Some(&dx))?;
                gelu_backward(gpu, pre, &dx, dpre);
                return Ok(());
            }
        };
        // dx (R, in) = dout (R, out)·W (out, in), as `matmul_backward` computes it
        let d = self.dims(x);
        let dx_dims = MatmulDims::new(d.m, d.k, d.n, Layout::NN);
        matmul_gelu_grad(gpu, dx_dims, dout, w.weight(), pre, dpre);
        self.backward_params(gpu, x, dout, None)
    }

    /// The parameter part of [`Linear::backward`] (and the adapter's share of dx, when asked).
    fn backward_params(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        dout: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        let d = self.dims(x);
        if let Some(lora) = &self.lora {
            assert!(
                !lora.merged,
                "backward through the merged adapter of {}",
                self.name()
            );
            self.lora_backward(gpu, lora, x, dout, dx)?;
        }
        // frozen weights and biases get no gradient (a quantized weight is frozen)
        if let Weight::Dense(w) = &self.weight {
            if let Some((dw, accumulate)) = w.grad_write() {
                matmul_backward(
                    gpu,
                    d,
                    x,
                    w.weight(),
                    dout,
                    None,
                    Some(dw),
                    None,
                    accumulate,
                );
            }
        }
        if let Some((db, accumulate)) = self.b.as_ref().and_then(Param::grad_write) {
            // db (out) = Σ_rows dout
            colsum(gpu, dout, d.batch * d.m, d.n, db, accumulate);
        }
        Ok(())
    }

    /// y_lora = us·Bᵀ with us = scale·(x'·Aᵀ), x' = dropout(x) (or x):
    ///   dB += doutᵀ·us,  dus = dout·B,  du = scale·dus,  dA += duᵀ·x',  dx += dropout(du·A)
    /// (the same mask).
    fn lora_backward(
        &self,
        gpu: &Gpu,
        lora: &LoraAdapter,
        x: &Tensor,
        dout: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        let (rows, r) = (self.dims(x).m, lora.rank());
        let (n_in, n_out) = (self.in_features, self.out_features);
        if let Some((db, acc)) = lora.b.grad_write() {
            let us = self.lora_hidden(gpu, lora, x)?;
            // dB (out, r) = doutᵀ (out, R)·us (R, r)
            let d = MatmulDims::new(n_out, r, rows, Layout::TN);
            matmul(gpu, d, dout, &us, None, db, acc);
        }
        // du (R, r) = scale·(dout (R, out)·B (out, r))
        let dus = activation(gpu, self.dtype(), "lora.dus", &[rows, r])?;
        let d = MatmulDims::new(rows, r, n_out, Layout::NN);
        matmul(gpu, d, dout, lora.b.weight(), None, &dus, false);
        let du = activation(gpu, self.dtype(), "lora.du", &[rows, r])?;
        scale(gpu, &dus, lora.scale, &du);
        drop(dus);
        if let Some((da, acc)) = lora.a.grad_write() {
            // dA (r, in) = duᵀ (r, R)·x' (R, in)
            let dropped = self.lora_input(gpu, lora, x)?;
            let xd = dropped.as_ref().unwrap_or(x);
            let d = MatmulDims::new(r, n_in, rows, Layout::TN);
            matmul(gpu, d, &du, xd, None, da, acc);
        }
        if let Some(dx) = dx {
            // dx (R, in) += du (R, r)·A (r, in), under the input's dropout mask
            let d = MatmulDims::new(rows, n_in, r, Layout::NN);
            let p = lora.active_dropout();
            if p == 0.0 {
                matmul(gpu, d, &du, lora.a.weight(), None, dx, true);
            } else {
                let dxd = activation(gpu, self.dtype(), "lora.dx_drop", dx.shape())?;
                matmul(gpu, d, &du, lora.a.weight(), None, &dxd, false);
                let masked = activation(gpu, self.dtype(), "lora.dx_masked", dx.shape())?;
                dropout(gpu, &dxd, p, lora.seed.load(Ordering::Relaxed), &masked);
                accumulate(gpu, &masked, 1.0, dx);
            }
        }
        Ok(())
    }

    /// Folds the adapter into W (W += scale·B·A; `merge` false takes it out again: W −=
    /// scale·B·A, which restores W up to f32 rounding). Panics without an adapter.
    pub fn fold_lora(&mut self, gpu: &Gpu, merge: bool) -> Result<()> {
        if let Weight::Quantized { .. } = self.weight {
            return Err(crate::error::Error::Config(format!(
                "{}: an adapter over a quantized weight cannot be merged into it (merge into \
                 the dense base: `wgtrain merge --model BASE --lora DIR --hf OUT`, or merge a \
                 checkpoint, then quantize)",
                self.name()
            )));
        }
        let lora = self
            .lora
            .as_mut()
            .expect("fold_lora: a layer with an adapter");
        assert_ne!(lora.merged, merge, "the adapter's merged state");
        let Weight::Dense(w) = &self.weight else {
            unreachable!("checked above")
        };
        let (n_out, n_in, r) = (self.out_features, self.in_features, lora.rank());
        // BA (out, in) = B (out, r)·A (r, in)
        let ba = Tensor::empty(
            gpu,
            "lora.BA",
            &[n_out, n_in],
            crate::DType::F32,
            crate::gpu::Category::Workspace,
        )?;
        let d = MatmulDims::new(n_out, n_in, r, Layout::NN);
        // on the masters (f32 always), then rounded into the working copy
        matmul(gpu, d, lora.b.value(), lora.a.value(), None, &ba, false);
        let sign = if merge { 1.0 } else { -1.0 };
        accumulate(gpu, &ba, sign * lora.scale, w.value());
        w.refresh_work(gpu);
        lora.merged = merge;
        Ok(())
    }

    /// W, b, then the adapter's A and B.
    pub fn params(&self) -> Vec<&Param> {
        let lora = self.lora.iter().flat_map(|l| [&l.a, &l.b]);
        std::iter::once(self.weight.param())
            .chain(self.b.as_ref())
            .chain(lora)
            .collect()
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let lora = self.lora.iter_mut().flat_map(|l| [&mut l.a, &mut l.b]);
        std::iter::once(self.weight.param_mut())
            .chain(self.b.as_mut())
            .chain(lora)
            .collect()
    }
}
