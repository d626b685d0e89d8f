//! Newton and quasi-Newton methods: convergence on logistic regression and Rosenbrock against
//! scipy's figures, the secant equation after every update, positive definiteness of BFGS and
//! DFP, and Newton's damping on an indefinite Hessian.

use crate::gpu;
use wgtrain::ops::matmul::{matmul, Layout, MatmulDims};
use wgtrain::second_order::objective::{LogReg, Objective, Rosenbrock};
use wgtrain::second_order::{minimize, Method, Options};
use wgtrain::Tensor;

/// scipy.optimize.minimize(method="trust-exact") on the same standardised data, bias column and
/// λ = 1e-2 on the weights: f* = 0.09959144569892973 in 6 iterations.
const LOGREG_F_STAR: f64 = 0.099_591_445_698_929_73;

fn opts(max_iter: usize) -> Options {
    Options {
        max_iter,
        ..Options::default()
    }
}

#[test]
fn newton_on_logreg_reaches_scipys_optimum_in_under_10_iterations() {
    let mut obj = LogReg::new(gpu(), 1e-2).unwrap();
    let r = minimize(gpu(), &mut obj, Method::Newton, &opts(50), None).unwrap();
    assert!(r.converged, "{}", r.reason);
    assert!(r.iterations < 10, "{} iterations", r.iterations);
    assert!(
        ((r.f - LOGREG_F_STAR) / LOGREG_F_STAR).abs() < 1e-6,
        "f = {}",
        r.f
    );
}

#[test]
fn bfgs_on_rosenbrock_reaches_1_1_in_about_as_many_iterations_as_scipy() {
    // scipy.optimize.minimize(rosen, [-1.2, 1], jac=rosen_der, method="BFGS"): 32 iterations
    let mut obj = Rosenbrock::new(2).unwrap();
    let r = minimize(gpu(), &mut obj, Method::Bfgs, &opts(200), None).unwrap();
    assert!(r.converged, "{}", r.reason);
    assert!(r.x.iter().all(|v| (v - 1.0).abs() <= 1e-4), "x = {:?}", r.x);
    assert!(
        (20..=48).contains(&r.iterations),
        "{} iterations (scipy: 32)",
        r.iterations
    );
}

#[test]
fn lbfgs_converges_on_logreg_and_on_rosenbrock_100() {
    let mut obj = LogReg::new(gpu(), 1e-2).unwrap();
    let r = minimize(gpu(), &mut obj, Method::Lbfgs, &opts(200), None).unwrap();
    assert!(r.converged, "logreg: {}", r.reason);
    assert!(
        ((r.f - LOGREG_F_STAR) / LOGREG_F_STAR).abs() < 1e-6,
        "f = {}",
        r.f
    );
    // scipy's L-BFGS-B needs 513 iterations from the same start
    let mut obj = Rosenbrock::new(100).unwrap();
    let r = minimize(gpu(), &mut obj, Method::Lbfgs, &opts(1500), None).unwrap();
    let worst = r.x.iter().fold(0.0f32, |m, v| m.max((v - 1.0).abs()));
    assert!(
        r.f < 1e-8 && worst < 1e-3,
        "rosenbrock:100: f = {}, max |x − 1| = {worst}, {}",
        r.f,
        r.reason
    );
}

/// Cholesky on the host: whether a symmetric matrix is positive definite.
fn positive_definite(c: &[f32], n: usize) -> bool {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = (c[i * n + j] as f64 + c[j * n + i] as f64) / 2.0;
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 {
                    return false;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    true
}

#[test]
fn every_update_satisfies_the_secant_equation_and_bfgs_dfp_stay_positive_definite() {
    for method in [Method::Bfgs, Method::Dfp, Method::Sr1] {
        let mut updates = 0;
        let mut hook =
            |g: &wgtrain::Gpu, c: &Tensor, s: &Tensor, y: &Tensor| -> wgtrain::Result<()> {
                let n = s.numel();
                let (cm, sv, yv) = (c.to_f32(g)?, s.to_f32(g)?, y.to_f32(g)?);
                let cy: Vec<f64> = (0..n)
                    .map(|i| (0..n).map(|j| cm[i * n + j] as f64 * yv[j] as f64).sum())
                    .collect();
                let scale = sv.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
                let err = cy
                    .iter()
                    .zip(&sv)
                    .fold(0.0f64, |m, (a, b)| m.max((a - *b as f64).abs()));
                // ys ≤ 0 skips BFGS/DFP updates and SR1 skips tiny denominators: then C y ≠ s is allowed
                let ys: f64 = sv.iter().zip(&yv).map(|(a, b)| *a as f64 * *b as f64).sum();
                // f32 tolerance; SR1's rank-one term is divided by (s − Cy)ᵀy, which can be small
                // (though above the skip threshold), so its roundoff is amplified more
                let tol = if method == Method::Sr1 { 1e-2 } else { 2e-3 };
                if ys > 0.0 {
                    assert!(
                        err <= tol * scale,
                        "{method:?}: |C y − s| = {err} vs |s| = {scale}"
                    );
                    updates += 1;
                }
                if method != Method::Sr1 {
                    assert!(
                        positive_definite(&cm, n),
                        "{method:?}: C lost positive definiteness"
                    );
                }
                Ok(())
            };
        let mut obj = Rosenbrock::new(2).unwrap();
        let r = minimize(gpu(), &mut obj, method, &opts(60), Some(&mut hook)).unwrap();
        assert!(
            updates > 5,
            "{method:?}: {updates} updates checked ({})",
            r.reason
        );
    }
}

#[test]
fn newton_damps_an_indefinite_hessian_and_still_converges() {
    // at (0, 1) the Hessian's first diagonal entry is 2 − 400 < 0
    let mut obj = Rosenbrock::starting_at(vec![0.0, 1.0]).unwrap();
    let r = minimize(gpu(), &mut obj, Method::Newton, &opts(100), None).unwrap();
    assert!(r.converged, "{}", r.reason);
    assert!(r.x.iter().all(|v| (v - 1.0).abs() <= 1e-4), "x = {:?}", r.x);
    assert!(obj.dim() == 2);
}

/// g(y) = f(Ay): value, gradient Aᵀ∇f(Ay) and Hessian Aᵀ∇²f(Ay)A, all on the GPU.
struct Transformed {
    inner: LogReg,
    a: Tensor,
    n: usize,
}

impl Objective for Transformed {
    fn name(&self) -> String {
        "logreg(Ay)".into()
    }
    fn dim(&self) -> usize {
        self.n
    }
    fn x0(&self) -> Vec<f32> {
        vec![0.0; self.n] // A·0 = 0 = the inner problem's x0
    }
    fn value_grad(&mut self, g: &wgtrain::Gpu, y: &Tensor, grad: &Tensor) -> wgtrain::Result<f64> {
        let n = self.n;
        let x = wgtrain::second_order::linalg::empty(g, "Ay", n)?;
        wgtrain::second_order::linalg::matvec(g, &self.a, y, &x);
        let gx = wgtrain::second_order::linalg::empty(g, "grad f", n)?;
        let f = self.inner.value_grad(g, &x, &gx)?;
        mm(g, MatmulDims::new(n, 1, n, Layout::TN), &self.a, &gx, grad);
        Ok(f)
    }
    fn hessian(&mut self, g: &wgtrain::Gpu, y: &Tensor, h: &Tensor) -> wgtrain::Result<()> {
        let n = self.n;
        let x = wgtrain::second_order::linalg::empty(g, "Ay", n)?;
        wgtrain::second_order::linalg::matvec(g, &self.a, y, &x);
        let hx = Tensor::zeros(g, "H", &[n, n], wgtrain::Category::Workspace)?;
        self.inner.hessian(g, &x, &hx)?;
        let t = Tensor::zeros(g, "H A", &[n, n], wgtrain::Category::Workspace)?;
        mm(g, MatmulDims::new(n, n, n, Layout::NN), &hx, &self.a, &t);
        mm(g, MatmulDims::new(n, n, n, Layout::TN), &self.a, &t, h);
        Ok(())
    }
}

fn mm(g: &wgtrain::Gpu, d: MatmulDims, a: &Tensor, b: &Tensor, c: &Tensor) {
    matmul(g, d, a, b, None, c, false);
}

#[test]
fn newtons_iterates_are_affine_invariant_and_gradient_descents_are_not() {
    let n = 31;
    let mut rng = wgtrain::rng::Rng::new(5);
    // A = I + 0.3 R/√n: well conditioned
    let a: Vec<f32> = (0..n * n)
        .map(|e| {
            (if e / n == e % n { 1.0 } else { 0.0 }) + 0.3 * rng.normal() as f32 / (n as f32).sqrt()
        })
        .collect();
    let a_t = Tensor::from_f32(gpu(), "A", &[n, n], &a, wgtrain::Category::Params).unwrap();
    let apply = |y: &[f32]| -> Vec<f64> {
        (0..n)
            .map(|i| (0..n).map(|j| a[i * n + j] as f64 * y[j] as f64).sum())
            .collect()
    };
    for (method, iters, invariant) in [(Method::Newton, 4, true), (Method::Gd, 4, false)] {
        let mut plain = LogReg::new(gpu(), 1e-2).unwrap();
        let rx = minimize(gpu(), &mut plain, method, &opts(iters), None).unwrap();
        let mut transformed = Transformed {
            inner: LogReg::new(gpu(), 1e-2).unwrap(),
            a: a_t.clone_on(gpu()).unwrap(),
            n,
        };
        let ry = minimize(gpu(), &mut transformed, method, &opts(iters), None).unwrap();
        let ay = apply(&ry.x);
        let scale = rx.x.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
        let diff = ay
            .iter()
            .zip(&rx.x)
            .fold(0.0f64, |m, (p, q)| m.max((p - *q as f64).abs()));
        if invariant {
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "{method:?}: A·y_k and x_k differ by {diff} (|x| {scale})"
            );
        } else {
            assert!(
                diff > 1e-2 * scale,
                "{method:?}: iterates should differ, differ by {diff}"
            );
        }
    }
}

#[test]
fn sr1_turning_indefinite_is_handled() {
    // From (0, 1) Rosenbrock's curvature along the first steps is negative, and SR1 (which does
    // not enforce positive definiteness) captures it: its C turns indefinite. The method must
    // still converge: non-descent directions fall back to steepest descent.
    let mut indefinite = 0;
    let mut hook = |g: &wgtrain::Gpu, c: &Tensor, _: &Tensor, _: &Tensor| -> wgtrain::Result<()> {
        if !positive_definite(&c.to_f32(g)?, 2) {
            indefinite += 1;
        }
        Ok(())
    };
    let mut obj = Rosenbrock::starting_at(vec![0.0, 1.0]).unwrap();
    let r = minimize(gpu(), &mut obj, Method::Sr1, &opts(200), Some(&mut hook)).unwrap();
    assert!(
        indefinite > 0,
        "the constructed case should make SR1's C indefinite"
    );
    assert!(r.converged, "{}", r.reason);
    assert!(r.x.iter().all(|v| (v - 1.0).abs() <= 1e-4), "x = {:?}", r.x);
}

#[test]
fn lbfgs_trains_the_digits_mlp_full_batch_and_dense_methods_refuse_it_clearly() {
    let mut obj = wgtrain::second_order::objective::MlpDigits::new(gpu()).unwrap();
    let r = minimize(gpu(), &mut obj, Method::Lbfgs, &opts(20), None).unwrap();
    let f0 = r.history[0].f;
    assert!(f0 > 1.0 && r.f < 0.1 * f0, "full-batch loss {f0} → {}", r.f);
    let err = minimize(gpu(), &mut obj, Method::Bfgs, &opts(2), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("use lbfgs"), "{err}");
}

/// With exact line searches BFGS on a quadratic is conjugate directions: it reaches the
/// minimiser in about n steps (n in exact arithmetic), while gradient descent crawls at the rate
/// ((κ − 1)/(κ + 1))² per step. κ = 1e4, n = 100, on three random instances.
#[test]
fn bfgs_with_exact_line_search_solves_a_kappa_1e4_quadratic_in_n_plus_5_iterations() {
    use wgtrain::second_order::objective::Quadratic;
    use wgtrain::second_order::LineSearch;
    let n = 100;
    let exact = |max_iter| Options {
        max_iter,
        tol: 0.0,
        line_search: LineSearch::Exact,
        ..Options::default()
    };
    // iterations until ‖∇f‖ ≤ 1e-5·‖∇f0‖ (None: not within the run)
    let reached = |r: &wgtrain::second_order::Report| {
        let g0 = r.history[0].grad_norm;
        r.history
            .iter()
            .find(|h| h.grad_norm <= 1e-5 * g0)
            .map(|h| h.iter)
    };
    for seed in [0, 1, 2] {
        let mut q = Quadratic::new(gpu(), n, 1e4, seed).unwrap();
        let r = minimize(gpu(), &mut q, Method::Bfgs, &exact(n + 5), None).unwrap();
        eprintln!("seed {seed}: BFGS reached 1e-5 at {:?}", reached(&r));
        let k = reached(&r).unwrap_or_else(|| {
            panic!(
                "seed {seed}: BFGS at ‖g‖/‖g0‖ = {:e} after {} iterations",
                r.grad_norm / r.history[0].grad_norm,
                r.iterations
            )
        });
        assert!(k <= n + 5, "seed {seed}: {k} iterations");
        // and the iterate is the known minimiser, as close as the gradient says:
        // ‖x − x⋆‖ = ‖A⁻¹∇f‖ ≤ ‖∇f‖ / λ_min with λ_min = 1 (x read back in f32: + rounding)
        let err =
            r.x.iter()
                .zip(&q.x_star)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
        assert!(
            err <= 1.01 * r.grad_norm + 1e-5,
            "seed {seed}: ‖x − x⋆‖ = {err:e}, ‖∇f‖ = {:e}",
            r.grad_norm
        );
        if seed == 0 {
            // Gradient descent with the same exact line search: 10n iterations and still far off.
            let mut q = Quadratic::new(gpu(), n, 1e4, seed).unwrap();
            let r = minimize(gpu(), &mut q, Method::Gd, &exact(10 * n), None).unwrap();
            assert_eq!(reached(&r), None);
            let ratio = r.grad_norm / r.history[0].grad_norm;
            assert!(ratio > 1e-4, "gradient descent at {ratio:e}");
        }
    }
}

/// The exact line search is for quadratics only: elsewhere a clear error, not a wrong answer.
#[test]
fn exact_line_search_on_a_non_quadratic_is_refused() {
    use wgtrain::second_order::LineSearch;
    let mut obj = Rosenbrock::new(2).unwrap();
    let opts = Options {
        line_search: LineSearch::Exact,
        ..Options::default()
    };
    let e = minimize(gpu(), &mut obj, Method::Bfgs, &opts, None).expect_err("refused");
    assert!(e.to_string().contains("exact line search"), "{e}");
}

/// The float-float kernels keep what f32 rounds away: steps a millionth of an ulp accumulate, and
/// a gradient A x − b that cancels to 1e-3 of its terms comes out to f32 accuracy (a plain f32
/// matrix-vector product would be off by about 1e-7 · Σ|A_ij x_j|, here 1 %).
#[test]
fn float_float_kernels_carry_what_f32_loses() {
    use wgtrain::rng::Rng;
    use wgtrain::second_order::linalg::{empty, ff_axpy, ff_quad_grad, split_f64, vector};
    let g = gpu();
    // 1 + 1000 · 2⁻³⁰: invisible in f32 (ulp(1) = 2⁻²³), exact in float-float
    let (mut hi, mut lo) = (
        vector(g, "hi", &[1.0]).unwrap(),
        vector(g, "lo", &[0.0]).unwrap(),
    );
    let d = vector(g, "d", &[1.0]).unwrap();
    let (hi2, lo2) = (empty(g, "hi2", 1).unwrap(), empty(g, "lo2", 1).unwrap());
    for _ in 0..1000 {
        ff_axpy(g, (&hi, &lo), 2f64.powi(-30), &d, (&hi2, &lo2)).unwrap();
        hi = hi2.clone_on(g).unwrap();
        lo = lo2.clone_on(g).unwrap();
    }
    let (h, l) = (hi.to_f32(g).unwrap()[0], lo.to_f32(g).unwrap()[0]);
    assert_eq!(
        h as f64 + l as f64,
        1.0 + 1000.0 * 2f64.powi(-30),
        "{h} + {l}"
    );

    let n = 64;
    let mut rng = Rng::new(5);
    let a: Vec<f32> = rng.uniform_vec(n * n, -1.0, 1.0);
    let x_hi: Vec<f32> = rng.uniform_vec(n, -1.0, 1.0);
    let x_lo: Vec<f32> = x_hi
        .iter()
        .map(|v| v * 1e-8 * (2.0 * rng.uniform() as f32 - 1.0))
        .collect();
    let r: Vec<f64> = (0..n).map(|_| 1e-3 * (2.0 * rng.uniform() - 1.0)).collect();
    // b = A x + r in f64, so the gradient is exactly −r
    let b: Vec<f64> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| a[i * n + j] as f64 * (x_hi[j] as f64 + x_lo[j] as f64))
                .sum::<f64>()
                + r[i]
        })
        .collect();
    let (b_hi, b_lo): (Vec<f32>, Vec<f32>) = b.iter().map(|&v| split_f64(v)).unzip();
    let t = |name: &str, v: &[f32]| vector(g, name, v).unwrap();
    let out = empty(g, "g", n).unwrap();
    let at = Tensor::from_f32(g, "A", &[n, n], &a, wgtrain::Category::Workspace).unwrap();
    ff_quad_grad(
        g,
        &at,
        (&t("x_hi", &x_hi), &t("x_lo", &x_lo)),
        (&t("b_hi", &b_hi), &t("b_lo", &b_lo)),
        &out,
    )
    .unwrap();
    for (i, (got, want)) in out.to_f32(g).unwrap().iter().zip(&r).enumerate() {
        let want = -want;
        assert!(
            (*got as f64 - want).abs() <= 1e-6 * want.abs() + 1e-11,
            "g[{i}] = {got}, want {want}"
        );
    }
}
