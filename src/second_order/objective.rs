//! Full-batch objectives with value, gradient and Hessian on the GPU.

use super::linalg::{self, kernel, params};
use crate::error::{Error, Result};
use crate::gpu::{Access, Category, Gpu};
use crate::ops::dispatch_items;
use crate::ops::matmul::{matmul, Layout, MatmulDims};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};

pub trait Objective {
    fn name(&self) -> String;
    fn dim(&self) -> usize;
    fn x0(&self) -> Vec<f32>;
    /// f(x), writing ∇f(x) into g (a sync point: f is read back).
    fn value_grad(&mut self, gpu: &Gpu, x: &Tensor, g: &Tensor) -> Result<f64>;
    /// ∇²f(x) into h (n, n). Objectives too large for a dense Hessian return an error and
    /// answer `hessian_vector` instead.
    fn hessian(&mut self, gpu: &Gpu, x: &Tensor, h: &Tensor) -> Result<()>;

    /// Whether `hessian` is available (else Newton works from Hessian-vector products).
    fn dense_hessian(&self) -> bool {
        true
    }

    /// The α minimising f(x + αd) given g = ∇f(x), where the objective knows it in closed form
    /// (None: it does not).
    fn exact_step(&mut self, _gpu: &Gpu, _g: &Tensor, _d: &Tensor) -> Result<Option<f64>> {
        Ok(None)
    }

    /// f and ∇f (into g) at the float-float point x_hi + x_lo, where the exact line search keeps
    /// its iterate. Default: at x_hi, the low part ignored.
    fn value_grad_ff(
        &mut self,
        gpu: &Gpu,
        x_hi: &Tensor,
        _x_lo: &Tensor,
        g: &Tensor,
    ) -> Result<f64> {
        self.value_grad(gpu, x_hi, g)
    }

    /// ∇²f(x)·v into out. Default: central differences of gradients,
    /// (∇f(x + εv) − ∇f(x − εv)) / 2ε with ε = 1e-3 (1 + ‖x‖) / ‖v‖ (f32 gradients: a larger ε
    /// than f64 would use).
    fn hessian_vector(&mut self, gpu: &Gpu, x: &Tensor, v: &Tensor, out: &Tensor) -> Result<()> {
        let n = self.dim();
        let xn = linalg::dot(gpu, x, x)?.sqrt();
        let vn = linalg::dot(gpu, v, v)?.sqrt().max(1e-30);
        let eps = 1e-3 * (1.0 + xn) / vn;
        let (xp, gp, gm) = (
            linalg::empty(gpu, "x ± εv", n)?,
            linalg::empty(gpu, "g+", n)?,
            linalg::empty(gpu, "g−", n)?,
        );
        gpu.copy(x, &xp);
        linalg::axpy(gpu, eps, v, &xp);
        self.value_grad(gpu, &xp, &gp)?;
        gpu.copy(x, &xp);
        linalg::axpy(gpu, -eps, v, &xp);
        self.value_grad(gpu, &xp, &gm)?;
        linalg::scaled(gpu, 0.5 / eps, &gp, out);
        linalg::axpy(gpu, -0.5 / eps, &gm, out);
        Ok(())
    }
}

/// ½ xᵀAx − bᵀx with A = Q diag(λ) Qᵀ, λ log-spaced from 1 to κ, Q a product of three random
/// Householder reflections; b = A x⋆ for a random x⋆ ~ N(0, I) (the known solution); x0 = 0.
///
/// Why b = A x⋆ rather than a random b: with a random b, x⋆ = A⁻¹b is dominated by the
/// smallest eigenvalues (‖x⋆‖ ≈ ‖b‖), and the f32 gradient Ax − b cannot resolve below about
/// ε·‖A‖·‖x⋆‖ ≈ 1e-7·κ·‖b‖: a relative gradient of 1e-5 would be out of reach at κ = 1e4 for
/// any method. With x⋆ of unit scale, ‖b‖ ≈ rms(λ)·‖x⋆‖ and the floor is a few ε relative.
pub struct Quadratic {
    n: usize,
    kappa: f64,
    a: Tensor,
    /// b rounded to f32, and what rounding left (b − b_hi, rounded): b in float-float.
    b: Tensor,
    b_lo: Tensor,
    /// A's entries on the host (f64), for tests.
    pub a_host: Vec<f64>,
    pub b_host: Vec<f64>,
    /// The minimiser.
    pub x_star: Vec<f32>,
}

/// The largest dense test quadratic: a 512 MiB host matrix.
pub const MAX_QUADRATIC_DIM: usize = 8192;

impl Quadratic {
    pub fn new(gpu: &Gpu, n: usize, kappa: f64, seed: u64) -> Result<Quadratic> {
        if n == 0 || kappa < 1.0 || kappa.is_nan() {
            return Err(Error::Config(format!(
                "quadratic:N:KAPPA needs N ≥ 1 and KAPPA ≥ 1, got {n}, {kappa}"
            )));
        }
        if n > MAX_QUADRATIC_DIM {
            return Err(Error::Config(format!(
                "quadratic:{n}: the matrix is built on the host (8·N² bytes, N³ work); N may be \
                 at most {MAX_QUADRATIC_DIM}"
            )));
        }
        let mut rng = Rng::new(seed);
        let mut a = vec![0.0f64; n * n];
        for i in 0..n {
            let t = if n == 1 {
                0.0
            } else {
                i as f64 / (n - 1) as f64
            };
            a[i * n + i] = kappa.powf(t);
        }
        // A ← H A H for three reflections H = I − 2 v vᵀ (|v| = 1): similarity keeps the spectrum.
        for _ in 0..3 {
            let mut v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            // A H: each row r ← r − 2 (r·v) vᵀ; then H (A H): each column likewise.
            for r in 0..n {
                let d: f64 = (0..n).map(|j| a[r * n + j] * v[j]).sum();
                for j in 0..n {
                    a[r * n + j] -= 2.0 * d * v[j];
                }
            }
            for c in 0..n {
                let d: f64 = (0..n).map(|i| a[i * n + c] * v[i]).sum();
                for i in 0..n {
                    a[i * n + c] -= 2.0 * d * v[i];
                }
            }
        }
        let x_star: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        // b = A x⋆ in f64 from the f32 values the GPU holds, so that x⋆ is the f32 problem's
        // solution to f64 accuracy.
        let a32: Vec<f64> = a.iter().map(|&v| v as f32 as f64).collect();
        let b: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| a32[i * n + j] * x_star[j] as f64).sum())
            .collect();
        let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Ok(Quadratic {
            n,
            kappa,
            a: Tensor::from_f32(gpu, "A", &[n, n], &to32(&a), Category::Params)?,
            b: linalg::vector(gpu, "b", &to32(&b))?,
            b_lo: linalg::vector(
                gpu,
                "b (low part)",
                &b.iter()
                    .map(|&v| linalg::split_f64(v).1)
                    .collect::<Vec<_>>(),
            )?,
            a_host: a,
            b_host: b,
            x_star,
        })
    }
}

impl Objective for Quadratic {
    fn name(&self) -> String {
        format!("quadratic:{}:{}", self.n, self.kappa)
    }
    fn dim(&self) -> usize {
        self.n
    }
    fn x0(&self) -> Vec<f32> {
        vec![0.0; self.n]
    }
    fn value_grad(&mut self, gpu: &Gpu, x: &Tensor, g: &Tensor) -> Result<f64> {
        // g = Ax − b;  f = ½ xᵀ(Ax) − bᵀx = ½ xᵀ(g − b) ... computed as xᵀ(½g − ½b)
        linalg::matvec(gpu, &self.a, x, g);
        linalg::axpy(gpu, -1.0, &self.b, g);
        let half = linalg::empty(gpu, "½(g − b)", self.n)?;
        linalg::scaled(gpu, 0.5, g, &half);
        linalg::axpy(gpu, -0.5, &self.b, &half);
        linalg::dot(gpu, x, &half)
    }
    fn hessian(&mut self, gpu: &Gpu, _x: &Tensor, h: &Tensor) -> Result<()> {
        gpu.copy(&self.a, h);
        Ok(())
    }
    fn value_grad_ff(
        &mut self,
        gpu: &Gpu,
        x_hi: &Tensor,
        x_lo: &Tensor,
        g: &Tensor,
    ) -> Result<f64> {
        // The gradient's accuracy is what lets a method get below ‖∇f‖ ≈ ε·‖A‖·‖x‖: Ax − b
        // cancels as x approaches x⋆. f, only reported, stays f32: ½ xᵀ(g − b).
        linalg::ff_quad_grad(gpu, &self.a, (x_hi, x_lo), (&self.b, &self.b_lo), g)?;
        let half = linalg::empty(gpu, "½(g − b)", self.n)?;
        linalg::scaled(gpu, 0.5, g, &half);
        linalg::axpy(gpu, -0.5, &self.b, &half);
        linalg::dot(gpu, x_hi, &half)
    }
    fn exact_step(&mut self, gpu: &Gpu, g: &Tensor, d: &Tensor) -> Result<Option<f64>> {
        // f(x + αd) = f(x) + α gᵀd + ½ α² dᵀAd, least at α = −gᵀd / dᵀAd
        let ad = linalg::empty(gpu, "Ad", self.n)?;
        linalg::matvec(gpu, &self.a, d, &ad);
        let curvature = linalg::dot(gpu, d, &ad)?;
        Ok(Some(-linalg::dot(gpu, g, d)? / curvature))
    }
}

/// The chained Rosenbrock function (scipy.optimize.rosen), from (−1.2, 1, −1.2, 1, …).
pub struct Rosenbrock {
    n: usize,
    start: Option<Vec<f32>>,
}

impl Rosenbrock {
    pub fn new(n: usize) -> Result<Rosenbrock> {
        if n < 2 {
            return Err(Error::Config(format!(
                "rosenbrock needs at least 2 dimensions, got {n}"
            )));
        }
        Ok(Rosenbrock { n, start: None })
    }

    /// The same function from another starting point.
    pub fn starting_at(x0: Vec<f32>) -> Result<Rosenbrock> {
        let mut r = Self::new(x0.len())?;
        r.start = Some(x0);
        Ok(r)
    }
}

impl Objective for Rosenbrock {
    fn name(&self) -> String {
        if self.n == 2 {
            "rosenbrock".into()
        } else {
            format!("rosenbrock:{}", self.n)
        }
    }
    fn dim(&self) -> usize {
        self.n
    }
    fn x0(&self) -> Vec<f32> {
        match &self.start {
            Some(x) => x.clone(),
            None => (0..self.n)
                .map(|i| if i % 2 == 0 { -1.2 } else { 1.0 })
                .collect(),
        }
    }
    fn value_grad(&mut self, gpu: &Gpu, x: &Tensor, g: &Tensor) -> Result<f64> {
        let n = self.n;
        let terms = linalg::empty(gpu, "rosenbrock terms", n - 1)?;
        let p = params(n, 0, 0, 0.0, 0.0, 0.0);
        dispatch_items(
            gpu,
            &kernel("rosen_terms"),
            &[
                (x, Access::Read),
                (x, Access::Read),
                (&terms, Access::ReadWrite),
            ],
            &p,
            n,
            256,
        );
        dispatch_items(
            gpu,
            &kernel("rosen_grad"),
            &[(x, Access::Read), (x, Access::Read), (g, Access::ReadWrite)],
            &p,
            n,
            256,
        );
        linalg::sum(gpu, &terms)
    }
    fn hessian(&mut self, gpu: &Gpu, x: &Tensor, h: &Tensor) -> Result<()> {
        let n = self.n;
        let p = params(n, 0, 0, 0.0, 0.0, 0.0);
        dispatch_items(
            gpu,
            &kernel("rosen_hess"),
            &[(x, Access::Read), (x, Access::Read), (h, Access::ReadWrite)],
            &p,
            n * n,
            256,
        );
        Ok(())
    }
}

const BREAST_CANCER: &str = include_str!("../../assets/breast_cancer.csv");

/// L2-regularised logistic regression on the breast-cancer set: features standardised
/// (population standard deviation), a bias column first, λ on the weights only (not the bias),
/// mean log-loss. w0 = 0.
pub struct LogReg {
    rows: usize,
    d: usize,
    lambda: f64,
    /// (N, d)
    x: Tensor,
    /// (N)
    y: Tensor,
    /// (d): 0 for the bias, 1 for the weights
    mask: Tensor,
}

impl LogReg {
    pub fn new(gpu: &Gpu, lambda: f64) -> Result<LogReg> {
        let bad = |m: String| Error::Data(format!("embedded breast_cancer.csv: {m}"));
        let mut lines = BREAST_CANCER.lines();
        let header: Vec<usize> = lines
            .next()
            .ok_or_else(|| bad("empty".into()))?
            .split(',')
            .take(2)
            .map(|v| v.trim().parse().map_err(|e| bad(format!("header: {e}"))))
            .collect::<Result<_>>()?;
        let (rows, features) = (header[0], header[1]);
        let mut raw = Vec::with_capacity(rows * features);
        let mut labels = Vec::with_capacity(rows);
        for (i, line) in lines.enumerate() {
            let v: Vec<f64> = line
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<f64>()
                        .map_err(|e| bad(format!("line {}: {e}", i + 2)))
                })
                .collect::<Result<_>>()?;
            if v.len() != features + 1 {
                return Err(bad(format!("line {}: {} values", i + 2, v.len())));
            }
            raw.extend_from_slice(&v[..features]);
            labels.push(v[features] as f32);
        }
        if labels.len() != rows {
            return Err(bad(format!(
                "{} rows, the header says {rows}",
                labels.len()
            )));
        }
        let d = features + 1;
        let mut x = vec![0.0f32; rows * d];
        for j in 0..features {
            let col: Vec<f64> = (0..rows).map(|i| raw[i * features + j]).collect();
            let mean = col.iter().sum::<f64>() / rows as f64;
            let sd =
                (col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / rows as f64).sqrt();
            for i in 0..rows {
                x[i * d + j + 1] = ((col[i] - mean) / sd) as f32;
            }
        }
        for i in 0..rows {
            x[i * d] = 1.0;
        }
        let mut mask = vec![1.0f32; d];
        mask[0] = 0.0;
        Ok(LogReg {
            rows,
            d,
            lambda,
            x: Tensor::from_f32(gpu, "X", &[rows, d], &x, Category::Params)?,
            y: linalg::vector(gpu, "y", &labels)?,
            mask: linalg::vector(gpu, "λ mask", &mask)?,
        })
    }

    /// z = Xw, then per sample loss, r = (σ − y)/N and h = σ(1 − σ)/N.
    fn forward(&self, gpu: &Gpu, w: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let n = self.rows;
        let z = linalg::empty(gpu, "z", n)?;
        matmul(
            gpu,
            MatmulDims::new(n, 1, self.d, Layout::NN),
            &self.x,
            w,
            None,
            &z,
            false,
        );
        let (loss, r, h) = (
            linalg::empty(gpu, "loss", n)?,
            linalg::empty(gpu, "r", n)?,
            linalg::empty(gpu, "h", n)?,
        );
        dispatch_items(
            gpu,
            &kernel("logistic"),
            &[
                (&z, Access::Read),
                (&self.y, Access::Read),
                (&loss, Access::ReadWrite),
                (&r, Access::ReadWrite),
                (&h, Access::ReadWrite),
            ],
            &params(n, 0, 0, 0.0, 0.0, 0.0),
            n,
            256,
        );
        Ok((loss, r, h))
    }
}

impl Objective for LogReg {
    fn name(&self) -> String {
        "logreg".into()
    }
    fn dim(&self) -> usize {
        self.d
    }
    fn x0(&self) -> Vec<f32> {
        vec![0.0; self.d]
    }
    fn value_grad(&mut self, gpu: &Gpu, w: &Tensor, g: &Tensor) -> Result<f64> {
        let (loss, r, _) = self.forward(gpu, w)?;
        // g = Xᵀ r + λ (mask ⊙ w)
        matmul(
            gpu,
            MatmulDims::new(self.d, 1, self.rows, Layout::TN),
            &self.x,
            &r,
            None,
            g,
            false,
        );
        let mw = linalg::empty(gpu, "mask ⊙ w", self.d)?;
        dispatch_items(
            gpu,
            &kernel("mul"),
            &[
                (&self.mask, Access::Read),
                (w, Access::Read),
                (&mw, Access::ReadWrite),
            ],
            &params(self.d, 0, 0, 0.0, 0.0, 0.0),
            self.d,
            256,
        );
        linalg::axpy(gpu, self.lambda, &mw, g);
        let reg = 0.5 * self.lambda * linalg::dot(gpu, &mw, w)?;
        Ok(linalg::sum(gpu, &loss)? / self.rows as f64 + reg)
    }
    fn hessian(&mut self, gpu: &Gpu, w: &Tensor, h: &Tensor) -> Result<()> {
        // H = Xᵀ diag(h) X + λ I (weights only)
        let (_, _, hs) = self.forward(gpu, w)?;
        let xs = Tensor::empty(
            gpu,
            "diag(h) X",
            &[self.rows, self.d],
            DType::F32,
            Category::Workspace,
        )?;
        dispatch_items(
            gpu,
            &kernel("scale_rows"),
            &[
                (&self.x, Access::Read),
                (&hs, Access::Read),
                (&xs, Access::ReadWrite),
            ],
            &params(self.rows, self.d, 0, 0.0, 0.0, 0.0),
            self.rows * self.d,
            256,
        );
        matmul(
            gpu,
            MatmulDims::new(self.d, self.d, self.rows, Layout::TN),
            &self.x,
            &xs,
            None,
            h,
            false,
        );
        linalg::add_diag(gpu, h, self.d, 1, self.lambda)
    }
}

/// The digits MLP's full-batch training loss (mean cross-entropy over the 1437 training images,
/// no weight decay) as a function of all its parameters, flattened in the model's order: a
/// non-convex case. Its Hessian is too large to store (n² for n ≈ 17k); Newton uses
/// Hessian-vector products by central differences of gradients.
pub struct MlpDigits {
    model: crate::nn::Mlp,
    x: Tensor,
    y: Tensor,
    rows: usize,
    n: usize,
    x0: Vec<f32>,
}

impl MlpDigits {
    pub fn new(gpu: &Gpu) -> Result<MlpDigits> {
        use crate::data::digits::{load, CLASSES, FEATURES};
        let d = load()?;
        let config = crate::nn::MlpConfig {
            inputs: FEATURES,
            hidden: vec![128, 64],
            classes: CLASSES,
            activation: crate::nn::Activation::Relu,
        };
        let model = crate::nn::Mlp::new(&crate::nn::Build::new(gpu), config, &mut Rng::new(1337))?;
        let rows = d.train_y.len();
        let mut x0 = vec![];
        for p in model.params() {
            x0.extend(p.value().to_f32(gpu)?);
        }
        Ok(MlpDigits {
            n: x0.len(),
            x: Tensor::from_f32(
                gpu,
                "digits x",
                &[rows, FEATURES],
                &d.train_x,
                Category::Activations,
            )?,
            y: Tensor::from_u32(gpu, "digits y", &[rows], &d.train_y, Category::Activations)?,
            rows,
            model,
            x0,
        })
    }
}

impl Objective for MlpDigits {
    fn name(&self) -> String {
        "mlp-digits".into()
    }
    fn dim(&self) -> usize {
        self.n
    }
    fn x0(&self) -> Vec<f32> {
        self.x0.clone()
    }
    fn value_grad(&mut self, gpu: &Gpu, x: &Tensor, g: &Tensor) -> Result<f64> {
        let params = self.model.params();
        let mut offset = 0;
        for p in &params {
            gpu.copy_region(x, offset, p.value(), 0, p.value().bytes());
            offset += p.value().bytes();
        }
        crate::nn::zero_grads(gpu, &params);
        let scale = 1.0 / self.rows as f32;
        let losses = self.model.forward_backward(
            gpu,
            &self.x,
            &self.y,
            crate::nn::LossGrad::plain(scale),
            &mut crate::nn::NoHooks,
        )?;
        let params = self.model.params();
        let mut offset = 0;
        for p in &params {
            gpu.copy_region(p.grad(), 0, g, offset, p.grad().bytes());
            offset += p.grad().bytes();
        }
        Ok(linalg::sum(gpu, &losses)? / self.rows as f64)
    }
    fn hessian(&mut self, _gpu: &Gpu, _x: &Tensor, _h: &Tensor) -> Result<()> {
        Err(Error::Config(
            "mlp-digits has no dense Hessian; Newton uses Hessian-vector products".into(),
        ))
    }
    fn dense_hessian(&self) -> bool {
        false
    }
}
