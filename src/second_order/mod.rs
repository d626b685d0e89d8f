//! Newton and quasi-Newton methods on full-batch objectives, on the GPU: gradient descent,
//! damped Newton (CG solve), SR1, DFP and BFGS in inverse form (the rank-two update a WGSL
//! kernel), and L-BFGS (two-loop recursion over GPU vectors).
//!
//! Line searches: backtracking Armijo for gradient descent, Newton and SR1 (whose direction may
//! not be a descent direction; then steepest descent is used for that step); strong Wolfe
//! (Nocedal & Wright, algorithms 3.5 and 3.6) for DFP, BFGS and L-BFGS.

pub mod linalg;
pub mod objective;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;
use linalg::{axpy, dot, empty, matvec, rank2, scaled};
use objective::Objective;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Gd,
    Newton,
    Sr1,
    Dfp,
    Bfgs,
    Lbfgs,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Gd,
        Method::Newton,
        Method::Sr1,
        Method::Dfp,
        Method::Bfgs,
        Method::Lbfgs,
    ];

    pub fn parse(s: &str) -> Result<Method> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown method {s:?}; expected gd, newton, sr1, dfp, bfgs or lbfgs"
                ))
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Gd => "gd",
            Method::Newton => "newton",
            Method::Sr1 => "sr1",
            Method::Dfp => "dfp",
            Method::Bfgs => "bfgs",
            Method::Lbfgs => "lbfgs",
        }
    }
}

/// How a step length is chosen along each direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineSearch {
    /// Strong Wolfe for DFP, BFGS and L-BFGS; backtracking Armijo for the others.
    Auto,
    /// The exact minimiser along the direction, where the objective can give it (quadratics:
    /// α = −gᵀd / dᵀAd); an error for other objectives.
    Exact,
}

impl LineSearch {
    pub fn parse(s: &str) -> Result<LineSearch> {
        match s {
            "auto" => Ok(LineSearch::Auto),
            "exact" => Ok(LineSearch::Exact),
            _ => Err(Error::Config(format!(
                "unknown line search {s:?}; expected auto or exact"
            ))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub max_iter: usize,
    /// Stop when ‖∇f‖ ≤ tol.
    pub tol: f64,
    /// L-BFGS memory.
    pub memory: usize,
    pub line_search: LineSearch,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_iter: 200,
            tol: 1e-5,
            memory: 10,
            line_search: LineSearch::Auto,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Iteration {
    pub iter: usize,
    pub f: f64,
    pub grad_norm: f64,
    pub step: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub problem: String,
    pub method: String,
    pub iterations: usize,
    pub grad_evals: usize,
    pub f: f64,
    pub grad_norm: f64,
    pub converged: bool,
    pub reason: String,
    pub x_head: Vec<f32>,
    pub history: Vec<Iteration>,
    #[serde(skip)]
    pub x: Vec<f32>,
}

/// Counts gradient evaluations and evaluates φ(α) = f(x + αd), φ'(α) = ∇f(x + αd)ᵀd.
struct Evaluator<'a> {
    gpu: &'a Gpu,
    obj: &'a mut dyn Objective,
    evals: usize,
}

impl Evaluator<'_> {
    fn at(&mut self, x: &Tensor, g: &Tensor) -> Result<f64> {
        self.evals += 1;
        self.obj.value_grad(self.gpu, x, g)
    }

    /// `at` for the float-float point x + x_lo.
    fn at_ff(&mut self, x: &Tensor, x_lo: &Tensor, g: &Tensor) -> Result<f64> {
        self.evals += 1;
        self.obj.value_grad_ff(self.gpu, x, x_lo, g)
    }

    /// f and ∇f at x + αd, into (xt, gt); returns (f, ∇fᵀd).
    fn trial(
        &mut self,
        x: &Tensor,
        d: &Tensor,
        alpha: f64,
        xt: &Tensor,
        gt: &Tensor,
    ) -> Result<(f64, f64)> {
        self.gpu.copy(x, xt);
        axpy(self.gpu, alpha, d, xt);
        let f = self.at(xt, gt)?;
        Ok((f, dot(self.gpu, gt, d)?))
    }
}

const C1: f64 = 1e-4;
const C2: f64 = 0.9;

/// f is computed in f32 on the GPU: differences below a few ulps of f are noise, so sufficient
/// decrease is tested with this slack (as Hager and Zhang's approximate Wolfe conditions do).
fn noise(f0: f64) -> f64 {
    4.0 * f32::EPSILON as f64 * f0.abs()
}

/// Backtracking Armijo from α = 1: (step, f there), or None when 60 halvings did not decrease f
/// enough. Leaves x + αd and its gradient in (xt, gt).
fn armijo(
    e: &mut Evaluator,
    x: &Tensor,
    d: &Tensor,
    f0: f64,
    slope: f64,
    xt: &Tensor,
    gt: &Tensor,
) -> Result<Option<(f64, f64)>> {
    let mut alpha = 1.0;
    for _ in 0..60 {
        let (f, _) = e.trial(x, d, alpha, xt, gt)?;
        if f.is_finite() && f <= f0 + C1 * alpha * slope + noise(f0) {
            return Ok(Some((alpha, f)));
        }
        alpha *= 0.5;
    }
    Ok(None)
}

/// A step satisfying the strong Wolfe conditions (Nocedal & Wright, algorithms 3.5 and 3.6),
/// leaving x + αd and its gradient in (xt, gt): (step, f there); None when none was found.
fn strong_wolfe(
    e: &mut Evaluator,
    x: &Tensor,
    d: &Tensor,
    f0: f64,
    slope: f64,
    xt: &Tensor,
    gt: &Tensor,
) -> Result<Option<(f64, f64)>> {
    let (mut a_prev, mut f_prev, mut s_prev) = (0.0, f0, slope);
    let mut a = 1.0;
    for i in 0..30 {
        let (f, s) = e.trial(x, d, a, xt, gt)?;
        if !f.is_finite() || f > f0 + C1 * a * slope + noise(f0) || (i > 0 && f >= f_prev) {
            return zoom(
                e,
                x,
                d,
                f0,
                slope,
                (a_prev, f_prev, s_prev),
                (a, f, s),
                xt,
                gt,
            );
        }
        if s.abs() <= -C2 * slope {
            return Ok(Some((a, f)));
        }
        if s >= 0.0 {
            return zoom(
                e,
                x,
                d,
                f0,
                slope,
                (a, f, s),
                (a_prev, f_prev, s_prev),
                xt,
                gt,
            );
        }
        (a_prev, f_prev, s_prev) = (a, f, s);
        a *= 2.0;
    }
    Ok(None)
}

/// Narrows [lo, hi] (lo satisfies sufficient decrease) by cubic interpolation, safeguarded by
/// bisection.
#[allow(clippy::too_many_arguments)]
fn zoom(
    e: &mut Evaluator,
    x: &Tensor,
    d: &Tensor,
    f0: f64,
    slope: f64,
    mut lo: (f64, f64, f64),
    mut hi: (f64, f64, f64),
    xt: &Tensor,
    gt: &Tensor,
) -> Result<Option<(f64, f64)>> {
    for _ in 0..40 {
        let (a0, f0_, s0) = lo;
        let (a1, f1, s1) = hi;
        // minimiser of the cubic through both ends (N&W 3.59), else the midpoint
        let d1 = s0 + s1 - 3.0 * (f0_ - f1) / (a0 - a1);
        let disc = d1 * d1 - s0 * s1;
        let mut a = (a0 + a1) / 2.0;
        if disc >= 0.0 {
            let d2 = (a1 - a0).signum() * disc.sqrt();
            let c = a1 - (a1 - a0) * (s1 + d2 - d1) / (s1 - s0 + 2.0 * d2);
            let (lo_b, hi_b) = (a0.min(a1), a0.max(a1));
            let margin = 0.1 * (hi_b - lo_b);
            if c.is_finite() && c > lo_b + margin && c < hi_b - margin {
                a = c;
            }
        }
        if (a1 - a0).abs() < 1e-14 * a0.abs().max(1.0) {
            break;
        }
        let (f, s) = e.trial(x, d, a, xt, gt)?;
        if !f.is_finite() || f > f0 + C1 * a * slope + noise(f0) || f >= f0_ {
            hi = (a, f, s);
        } else {
            if s.abs() <= -C2 * slope {
                return Ok(Some((a, f)));
            }
            if s * (a1 - a0) >= 0.0 {
                hi = lo;
            }
            lo = (a, f, s);
        }
    }
    // the best point with sufficient decrease, if any
    if lo.0 > 0.0 {
        let (f, _) = e.trial(x, d, lo.0, xt, gt)?;
        return Ok(Some((lo.0, f)));
    }
    Ok(None)
}

/// How a CG solve ended.
struct CgEnd {
    /// Negative (or zero) curvature was met; p holds the iterate so far.
    negative_curvature: bool,
    /// Operator applications performed.
    products: usize,
}

/// Conjugate gradients on H p = b, H given by `apply(v, out)` (out = Hv), from p = 0, until
/// ‖r‖² ≤ rel_tol·‖b‖², max_iter iterations, or non-positive curvature.
fn cg(
    gpu: &Gpu,
    mut apply: impl FnMut(&Tensor, &Tensor) -> Result<()>,
    b: &Tensor,
    p: &Tensor,
    max_iter: usize,
    rel_tol: f64,
) -> Result<CgEnd> {
    let n = b.numel();
    let (r, dir, hd) = (
        empty(gpu, "cg r", n)?,
        empty(gpu, "cg d", n)?,
        empty(gpu, "cg Hd", n)?,
    );
    gpu.clear(p);
    gpu.copy(b, &r);
    gpu.copy(b, &dir);
    let mut rr = dot(gpu, &r, &r)?;
    let stop = rel_tol * rr.max(1e-300);
    let mut products = 0;
    for _ in 0..max_iter {
        if rr <= stop {
            break;
        }
        apply(&dir, &hd)?;
        products += 1;
        let curv = dot(gpu, &dir, &hd)?;
        if curv <= 0.0 {
            return Ok(CgEnd {
                negative_curvature: true,
                products,
            });
        }
        let alpha = rr / curv;
        axpy(gpu, alpha, &dir, p);
        axpy(gpu, -alpha, &hd, &r);
        let rr_new = dot(gpu, &r, &r)?;
        // dir = r + β dir
        let next = r.clone_on(gpu)?;
        axpy(gpu, rr_new / rr, &dir, &next);
        gpu.copy(&next, &dir);
        rr = rr_new;
    }
    Ok(CgEnd {
        negative_curvature: false,
        products,
    })
}

/// Called after each quasi-Newton update with (C, s, y), for tests of the secant equation.
pub type UpdateHook<'a> = &'a mut dyn FnMut(&Gpu, &Tensor, &Tensor, &Tensor) -> Result<()>;

/// Minimises `obj` from its x0 with `method`.
pub fn minimize(
    gpu: &Gpu,
    obj: &mut dyn Objective,
    method: Method,
    opts: &Options,
    mut hook: Option<UpdateHook>,
) -> Result<Report> {
    let n = obj.dim();
    let problem = obj.name();
    let x = linalg::vector(gpu, "x", &obj.x0())?;
    let g = empty(gpu, "g", n)?;
    let (xt, gt) = (empty(gpu, "x trial", n)?, empty(gpu, "g trial", n)?);
    let d = empty(gpu, "d", n)?;
    let (s, y) = (empty(gpu, "s", n)?, empty(gpu, "y", n)?);
    let cy = empty(gpu, "Cy", n)?;
    // an n×n matrix: the Hessian for Newton (when the objective has a dense one), C otherwise
    let needs_matrix = match method {
        Method::Newton => obj.dense_hessian(),
        Method::Sr1 | Method::Dfp | Method::Bfgs => true,
        Method::Gd | Method::Lbfgs => false,
    };
    let cmat = if needs_matrix {
        // refused before it is allocated when the device cannot hold it
        let bytes = (n as u64).saturating_mul(n as u64).saturating_mul(4);
        let what = format!("{}'s n×n matrix", method.name());
        crate::memory::check_fits(gpu, &what, bytes, None, "use lbfgs, which keeps no matrix")?;
        Some(linalg::identity(gpu, "C", n).map_err(|e| {
            Error::Config(format!(
                "{} keeps an n×n matrix for n = {n}: {e}; use lbfgs",
                method.name()
            ))
        })?)
    } else {
        None
    };
    let mut pairs: Vec<(Tensor, Tensor, f64)> = vec![]; // L-BFGS (s, y, 1/yᵀs)
                                                        // The exact line search keeps its iterate in float-float, x + x_lo (see ff_axpy).
    let exact = opts.line_search == LineSearch::Exact;
    let (x_lo, xt_lo) = (
        linalg::vector(gpu, "x (low part)", &vec![0.0; n])?,
        empty(gpu, "x trial (low part)", n)?,
    );
    let mut e = Evaluator { gpu, obj, evals: 0 };
    let mut f = if exact {
        e.at_ff(&x, &x_lo, &g)?
    } else {
        e.at(&x, &g)?
    };
    let mut gnorm = dot(gpu, &g, &g)?.sqrt();
    let mut history = vec![Iteration {
        iter: 0,
        f,
        grad_norm: gnorm,
        step: 0.0,
    }];
    let mut reason = format!("max iterations ({})", opts.max_iter);
    let mut converged = false;
    let mut iterations = 0;
    let mut first_update = true;
    for k in 1..=opts.max_iter {
        if gnorm <= opts.tol {
            converged = true;
            reason = format!("gradient norm ≤ {}", opts.tol);
            break;
        }
        if !f.is_finite() {
            reason = "f is not finite".into();
            break;
        }
        // direction
        match method {
            Method::Gd => scaled(gpu, -1.0, &g, &d),
            Method::Newton if cmat.is_none() => {
                // Newton-CG on Hessian-vector products; stops at negative curvature with the
                // last CG iterate (or −g when that is the first direction)
                let minus_g = empty(gpu, "-g", n)?;
                scaled(gpu, -1.0, &g, &minus_g);
                // Truncated Newton-CG: on negative curvature keep the iterate so far (−g when
                // there is none); each Hessian-vector product costs two gradient evaluations.
                let obj = &mut *e.obj;
                let end = cg(
                    gpu,
                    |v, out| obj.hessian_vector(gpu, &x, v, out),
                    &minus_g,
                    &d,
                    n.min(50),
                    1e-4,
                )?;
                if end.negative_curvature && end.products == 1 {
                    gpu.copy(&minus_g, &d);
                }
                e.evals += 2 * end.products;
            }
            Method::Newton => {
                let h = cmat.as_ref().unwrap();
                e.obj.hessian(gpu, &x, h)?;
                let minus_g = empty(gpu, "-g", n)?;
                scaled(gpu, -1.0, &g, &minus_g);
                // Not positive definite: add τI, τ growing tenfold from 1e-3 (Levenberg damping).
                let mut tau = 0.0;
                let mut added = 0.0;
                loop {
                    // ‖r‖ ≤ 1e-6 ‖b‖, or n iterations: in f32, CG past n steps only adds noise
                    let end = cg(
                        gpu,
                        |v, out| {
                            matvec(gpu, h, v, out);
                            Ok(())
                        },
                        &minus_g,
                        &d,
                        n.max(10),
                        1e-12,
                    )?;
                    if !end.negative_curvature {
                        break;
                    }
                    tau = if tau == 0.0 { 1e-3 } else { tau * 10.0 };
                    if tau > 1e10 {
                        scaled(gpu, -1.0, &g, &d);
                        break;
                    }
                    linalg::add_diag(gpu, h, n, 0, tau - added)?;
                    added = tau;
                }
            }
            Method::Sr1 | Method::Dfp | Method::Bfgs => {
                matvec(gpu, cmat.as_ref().unwrap(), &g, &d);
                scaled(gpu, -1.0, &d.clone_on(gpu)?, &d);
            }
            Method::Lbfgs => {
                // two-loop recursion
                let q = empty(gpu, "q", n)?;
                gpu.copy(&g, &q);
                let mut alphas = vec![0.0; pairs.len()];
                for (i, (si, yi, rho)) in pairs.iter().enumerate().rev() {
                    alphas[i] = rho * dot(gpu, si, &q)?;
                    axpy(gpu, -alphas[i], yi, &q);
                }
                let gamma = match pairs.last() {
                    Some((sl, yl, _)) => dot(gpu, sl, yl)? / dot(gpu, yl, yl)?,
                    None => 1.0,
                };
                scaled(gpu, gamma, &q, &d);
                for (i, (si, yi, rho)) in pairs.iter().enumerate() {
                    let beta = rho * dot(gpu, yi, &d)?;
                    axpy(gpu, alphas[i] - beta, si, &d);
                }
                scaled(gpu, -1.0, &d.clone_on(gpu)?, &d);
            }
        }
        let mut slope = dot(gpu, &g, &d)?;
        if slope >= 0.0 || !slope.is_finite() {
            // not a descent direction (SR1 or a damped Newton step gone wrong): steepest descent
            scaled(gpu, -1.0, &g, &d);
            slope = -gnorm * gnorm;
        }
        let step = match (opts.line_search, method) {
            (LineSearch::Exact, _) => {
                let alpha = e.obj.exact_step(gpu, &g, &d)?.ok_or_else(|| {
                    Error::Config(format!(
                        "{problem} has no exact line search (only quadratics do); use auto"
                    ))
                })?;
                linalg::ff_axpy(gpu, (&x, &x_lo), alpha, &d, (&xt, &xt_lo))?;
                let f_new = e.at_ff(&xt, &xt_lo, &gt)?;
                (alpha.is_finite() && alpha > 0.0).then_some((alpha, f_new))
            }
            (_, Method::Dfp | Method::Bfgs | Method::Lbfgs) => {
                strong_wolfe(&mut e, &x, &d, f, slope, &xt, &gt)?
            }
            (_, _) => armijo(&mut e, &x, &d, f, slope, &xt, &gt)?,
        };
        let Some((alpha, f_new)) = step else {
            reason = "line search failed".into();
            break;
        };
        // (xt, gt) hold x + αd and its gradient
        scaled(gpu, alpha, &d, &s);
        gpu.copy(&gt, &y);
        axpy(gpu, -1.0, &g, &y);
        gpu.copy(&xt, &x);
        if exact {
            gpu.copy(&xt_lo, &x_lo);
        }
        gpu.copy(&gt, &g);
        f = f_new;
        let ys = dot(gpu, &y, &s)?;
        match method {
            Method::Sr1 | Method::Dfp | Method::Bfgs => {
                let c = cmat.as_ref().unwrap();
                if first_update && ys > 0.0 {
                    // C0 = (yᵀs / yᵀy) I (N&W 6.20), set before the first update
                    let yy = dot(gpu, &y, &y)?;
                    let id = linalg::identity(gpu, "I", n)?;
                    scaled(gpu, ys / yy, &id, c);
                    first_update = false;
                }
                matvec(gpu, c, &y, &cy);
                match method {
                    Method::Bfgs
                        if ys > 1e-12 * dot(gpu, &s, &s)?.sqrt() * dot(gpu, &y, &y)?.sqrt() =>
                    {
                        // C+ = C − ρ(s(Cy)ᵀ + (Cy)sᵀ) + (ρ² yᵀCy + ρ) ssᵀ
                        let rho = 1.0 / ys;
                        let ycy = dot(gpu, &y, &cy)?;
                        rank2(gpu, c, &s, &cy, rho * rho * ycy + rho, -rho, 0.0);
                    }
                    Method::Dfp
                        if ys > 1e-12 * dot(gpu, &s, &s)?.sqrt() * dot(gpu, &y, &y)?.sqrt() =>
                    {
                        // C+ = C − (Cy)(Cy)ᵀ/(yᵀCy) + ssᵀ/(yᵀs)
                        let ycy = dot(gpu, &y, &cy)?;
                        rank2(gpu, c, &s, &cy, 1.0 / ys, 0.0, -1.0 / ycy);
                    }
                    Method::Sr1 => {
                        // C+ = C + (s − Cy)(s − Cy)ᵀ / ((s − Cy)ᵀy), skipped when the
                        // denominator is tiny: |(s − Cy)ᵀy| < 1e-8 ‖s − Cy‖ ‖y‖
                        let u = empty(gpu, "s − Cy", n)?;
                        gpu.copy(&s, &u);
                        axpy(gpu, -1.0, &cy, &u);
                        let den = dot(gpu, &u, &y)?;
                        let uu = dot(gpu, &u, &u)?;
                        if den.abs() >= 1e-8 * uu.sqrt() * dot(gpu, &y, &y)?.sqrt() && uu > 0.0 {
                            rank2(gpu, c, &u, &u, 1.0 / den, 0.0, 0.0);
                        }
                    }
                    _ => {} // curvature condition failed: skip the update
                }
                if let Some(h) = hook.as_mut() {
                    h(gpu, c, &s, &y)?;
                }
            }
            Method::Lbfgs if ys > 0.0 => {
                if pairs.len() == opts.memory.max(1) {
                    pairs.remove(0);
                }
                pairs.push((s.clone_on(gpu)?, y.clone_on(gpu)?, 1.0 / ys));
            }
            _ => {}
        }
        gnorm = dot(gpu, &g, &g)?.sqrt();
        history.push(Iteration {
            iter: k,
            f,
            grad_norm: gnorm,
            step: alpha,
        });
        iterations = k;
        if gnorm <= opts.tol {
            converged = true;
            reason = format!("gradient norm ≤ {}", opts.tol);
            break;
        }
    }
    let xv = x.to_f32(gpu)?;
    Ok(Report {
        problem,
        method: method.name().into(),
        iterations,
        grad_evals: e.evals,
        f,
        grad_norm: gnorm,
        converged,
        reason,
        x_head: xv.iter().take(8).copied().collect(),
        history,
        x: xv,
    })
}

/// Builds a problem by name: rosenbrock, rosenbrock:N, quadratic:N:KAPPA, logreg, mlp-digits.
pub fn problem(gpu: &Gpu, spec: &str) -> Result<Box<dyn Objective>> {
    let parts: Vec<&str> = spec.split(':').collect();
    let num = |s: &str| {
        s.parse::<f64>()
            .map_err(|_| Error::Config(format!("problem {spec:?}: {s:?} is not a number")))
    };
    Ok(match parts.as_slice() {
        ["rosenbrock"] => Box::new(objective::Rosenbrock::new(2)?),
        ["rosenbrock", n] => Box::new(objective::Rosenbrock::new(num(n)? as usize)?),
        ["quadratic", n, kappa] => Box::new(objective::Quadratic::new(gpu, num(n)? as usize, num(kappa)?, 0)?),
        ["logreg"] => Box::new(objective::LogReg::new(gpu, 1e-2)?),
        ["mlp-digits"] => Box::new(objective::MlpDigits::new(gpu)?),
        _ => {
            return Err(Error::Config(format!(
                "unknown problem {spec:?}; expected rosenbrock, rosenbrock:N, quadratic:N:KAPPA, logreg or mlp-digits"
            )))
        }
    })
}
