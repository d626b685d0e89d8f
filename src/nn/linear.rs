//! Linear layer: y = x·Wᵀ + b, with W stored (out, in) as PyTorch keeps it.

use super::Param;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::matmul::{matmul, matmul_backward, matmul_bias_relu, Layout, MatmulDims};
use crate::rng::Rng;
use crate::tensor::Tensor;

pub struct Linear {
    /// (out, in)
    pub w: Param,
    /// (out)
    pub b: Option<Param>,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    /// Weights Normal(0, std²), bias zero.
    pub fn new(
        gpu: &Gpu,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        std: f32,
        rng: &mut Rng,
    ) -> Result<Linear> {
        Ok(Linear {
            w: Param::normal(
                gpu,
                &format!("{name}.weight"),
                &[out_features, in_features],
                std,
                rng,
            )?,
            b: if bias {
                Some(Param::constant(
                    gpu,
                    &format!("{name}.bias"),
                    &[out_features],
                    0.0,
                )?)
            } else {
                None
            },
            in_features,
            out_features,
        })
    }

    fn dims(&self, x: &Tensor) -> MatmulDims {
        let rows = x.numel() / self.in_features;
        assert_eq!(
            rows * self.in_features,
            x.numel(),
            "linear {}: input {x:?}",
            self.w.name
        );
        MatmulDims::new(rows, self.out_features, self.in_features, Layout::NT)
    }

    /// out (R, out) = x (R, in)·Wᵀ + b
    pub fn forward(&self, gpu: &Gpu, x: &Tensor, out: &Tensor) {
        let d = self.dims(x);
        matmul(
            gpu,
            d,
            x,
            &self.w.value,
            self.b.as_ref().map(|b| &b.value),
            out,
            false,
        );
    }

    /// out (R, out) = max(x·Wᵀ + b, 0): the layer and a ReLU after it in one pass (the matmul's
    /// stores apply both). Needs the bias.
    pub fn forward_relu(&self, gpu: &Gpu, x: &Tensor, out: &Tensor) {
        let b = self
            .b
            .as_ref()
            .expect("forward_relu: a Linear layer with a bias");
        matmul_bias_relu(gpu, self.dims(x), x, &self.w.value, &b.value, out);
    }

    /// dW += doutᵀ·x, db += Σ_rows dout (for those not frozen), and dx = dout·W when asked.
    pub fn backward(&self, gpu: &Gpu, x: &Tensor, dout: &Tensor, dx: Option<&Tensor>) {
        let d = self.dims(x);
        let w = &self.w.value;
        if let Some(dx) = dx {
            matmul_backward(gpu, d, x, w, dout, Some(dx), None, None, false);
        }
        // frozen weights and biases get no gradient
        if let Some((dw, accumulate)) = self.w.grad_write() {
            matmul_backward(gpu, d, x, w, dout, None, Some(dw), None, accumulate);
        }
        if let Some((db, accumulate)) = self.b.as_ref().and_then(Param::grad_write) {
            matmul_backward(gpu, d, x, w, dout, None, None, Some(db), accumulate);
        }
    }

    pub fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.w).chain(self.b.as_ref()).collect()
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.w)
            .chain(self.b.as_mut())
            .collect()
    }
}
