//! The Kashin method (Merkulov et al., "Quantization of Large Language Models with an
//! Overdetermined Basis", arXiv 2404.09737): a weight matrix split into two factors whose
//! entries cluster, then one b-bit code per weight for both.
//!
//! Decomposition, on the GPU: X is normalised by its Frobenius norm; with U = V = 0 each
//! iteration takes Y = Q1ᵀ X Q2 and, if ‖X‖₁ > ‖Y‖₁ (entrywise), the direction W = sign(X),
//! else W = Q1 sign(Y) Q2ᵀ; with W normalised, c = ⟨X, W⟩, X −= cW and cW is added to U (first
//! case) or V (second), until ‖X‖_F (= ‖X₀ − U − V‖_F) < tol or an iteration limit. Q1 and Q2
//! are orthogonal: the orthonormal DCT-II (the default) or Haar-random matrices regenerated
//! from a seed, so nothing of them is stored. Since W is a sign map up to normalisation, the
//! step is c·W = (‖·‖₁ / nnz)·S with S the sign map, and V is kept in the rotated basis as
//! V' = Q1ᵀ V Q2 (where its entries are signs times steps, and cluster).
//!
//! Quantization: the pairs (U_ij, V'_ij) are clustered by 2-D k-means (k-means++ seeding from a
//! seed, Lloyd's iterations with the assignment on the GPU and the means in f64 on the host, a
//! few restarts, the lowest distortion kept) into 2^b centroids; weight (i, j) stores the b-bit
//! index of its pair's centroid. Decoding: X ≈ ‖X‖_F · (U_q + Q1 V'_q Q2ᵀ), on the GPU once at
//! load. Stored: b bits a weight, the (2^b, 2) codebook and the norm.

use crate::error::{Error, Result};
use crate::gpu::Category;
use crate::ops::elementwise::{accumulate, sign};
use crate::ops::matmul::{matmul, Layout, MatmulDims};
use crate::ops::reduce::{reduce, Reduction};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};
use crate::Gpu;

/// The orthogonal pair Q1 (rows × rows) and Q2 (cols × cols).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The orthonormal DCT-II: column k of Q is c_k·cos(π(2i + 1)k / 2n).
    Dct,
    /// Haar-random orthogonal matrices: the Q of a QR factorisation (Householder, in f64, R's
    /// diagonal made positive) of a Gaussian matrix drawn from `seed` (Q1) and `seed + 1` (Q2).
    Random { seed: u64 },
}

impl Basis {
    /// "dct" or "random" (with the seed).
    pub fn parse(name: &str, seed: u64) -> Result<Basis> {
        match name {
            "dct" => Ok(Basis::Dct),
            "random" => Ok(Basis::Random { seed }),
            _ => Err(Error::Config(format!(
                "--basis must be dct or random, not {name:?}"
            ))),
        }
    }

    /// As the metadata stores it: "dct" or "random:SEED".
    pub fn describe(self) -> String {
        match self {
            Basis::Dct => "dct".into(),
            Basis::Random { seed } => format!("random:{seed}"),
        }
    }

    /// The inverse of [`Basis::describe`].
    pub fn from_description(s: &str) -> Option<Basis> {
        match s.split_once(':') {
            None if s == "dct" => Some(Basis::Dct),
            Some(("random", seed)) => seed.parse().ok().map(|seed| Basis::Random { seed }),
            _ => None,
        }
    }

    /// Q1 or Q2 for a side of `n`, (n, n) row-major, orthonormal columns. `second` picks Q2's
    /// seed for the random pair.
    pub fn matrix(self, n: usize, second: bool) -> Vec<f64> {
        match self {
            Basis::Dct => dct(n),
            Basis::Random { seed } => random_orthogonal(n, seed.wrapping_add(u64::from(second))),
        }
    }
}

impl Basis {
    /// Q1 (rows, rows) and Q2 (cols, cols) on `gpu` as f32, charged to workspace.
    fn upload(self, gpu: &Gpu, rows: usize, cols: usize) -> Result<(Tensor, Tensor)> {
        let side = |n: usize, second: bool, name: &str| {
            let q: Vec<f32> = self
                .matrix(n, second)
                .into_iter()
                .map(|x| x as f32)
                .collect();
            Tensor::from_f32(gpu, name, &[n, n], &q, Category::Workspace)
        };
        Ok((
            side(rows, false, "kashin Q1")?,
            side(cols, true, "kashin Q2")?,
        ))
    }
}

/// out (+)= Q1·s·Q2ᵀ (s, t, out: (rows, cols); t the Q1·s between the two matmuls): a step
/// direction or V'_q taken back from the rotated basis. Recorded, not flushed.
fn rotate_back(
    gpu: &Gpu,
    (q1, q2): (&Tensor, &Tensor),
    s: &Tensor,
    t: &Tensor,
    out: &Tensor,
    accumulate: bool,
) {
    let (m, n) = (q1.rows(), q2.rows());
    matmul(
        gpu,
        MatmulDims::new(m, n, m, Layout::NN),
        q1,
        s,
        None,
        t,
        false,
    );
    matmul(
        gpu,
        MatmulDims::new(m, n, n, Layout::NT),
        t,
        q2,
        None,
        out,
        accumulate,
    );
}

fn dct(n: usize) -> Vec<f64> {
    let mut q = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let c = if k == 0 {
                (1.0 / n as f64).sqrt()
            } else {
                (2.0 / n as f64).sqrt()
            };
            q[i * n + k] =
                c * (std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2 * n) as f64).cos();
        }
    }
    q
}

/// Householder QR of an (n, n) Gaussian matrix; Q with R's diagonal made positive, so that Q is
/// Haar-distributed. Deterministic: the same f64 operations in the same order everywhere.
fn random_orthogonal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut a: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
    // Householder vectors v_k (below the diagonal of column k) applied to a in place
    let mut vs: Vec<Vec<f64>> = vec![];
    let mut signs = vec![1.0; n];
    for k in 0..n {
        let norm = (k..n).map(|i| a[i * n + k].powi(2)).sum::<f64>().sqrt();
        let alpha = if a[k * n + k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = (k..n).map(|i| a[i * n + k]).collect();
        v[0] -= alpha;
        let vn = v.iter().map(|x| x * x).sum::<f64>();
        if vn > 0.0 {
            for j in k..n {
                let dot: f64 = (k..n).map(|i| v[i - k] * a[i * n + j]).sum();
                let f = 2.0 * dot / vn;
                for i in k..n {
                    a[i * n + j] -= f * v[i - k];
                }
            }
        }
        signs[k] = if a[k * n + k] < 0.0 { -1.0 } else { 1.0 };
        vs.push(if vn > 0.0 { v } else { vec![] });
    }
    // Q = H_0 H_1 … H_{n−1} applied to the identity, then its columns times R's signs
    let mut q = vec![0.0; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    for k in (0..n).rev() {
        let v = &vs[k];
        if v.is_empty() {
            continue;
        }
        let vn = v.iter().map(|x| x * x).sum::<f64>();
        for j in 0..n {
            let dot: f64 = (k..n).map(|i| v[i - k] * q[i * n + j]).sum();
            let f = 2.0 * dot / vn;
            for i in k..n {
                q[i * n + j] -= f * v[i - k];
            }
        }
    }
    for i in 0..n {
        for (k, s) in signs.iter().enumerate() {
            q[i * n + k] *= s;
        }
    }
    q
}

/// How `wgtrain quantize --method kashin` quantizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Bits per code (2..=8): 2^bits centroids.
    pub bits: u32,
    pub basis: Basis,
    /// Stop the decomposition when ‖X₀ − U − V‖_F / ‖X₀‖_F falls below this.
    pub tol: f64,
    /// A layer whose decomposition has not reached `tol` after this many iterations is left in
    /// f32 (and reported).
    pub max_iter: usize,
    /// The k-means seeding's seed.
    pub seed: u64,
    /// k-means restarts (from seeds seed, seed + 1, …); the lowest distortion is kept.
    pub restarts: usize,
    /// Lloyd iterations at most per restart (it stops earlier once no label changes).
    pub kmeans_iter: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bits: 4,
            basis: Basis::Dct,
            tol: 1e-5,
            max_iter: 1000,
            seed: 0,
            restarts: 3,
            kmeans_iter: 100,
        }
    }
}

impl Options {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(2..=8).contains(&self.bits) {
            return bad(format!(
                "--bits must be 2 to 8 for kashin, not {}",
                self.bits
            ));
        }
        if !(self.tol > 0.0 && self.tol < 1.0) {
            return bad(format!("--tol must be in (0, 1), not {}", self.tol));
        }
        if self.max_iter == 0 || self.restarts == 0 || self.kmeans_iter == 0 {
            return bad("kashin's iteration limits and restarts must be positive".into());
        }
        Ok(())
    }
}

/// X / ‖X‖_F = U + Q1 V' Q2ᵀ + remainder, as [`decompose`] found it.
#[derive(Clone, Debug)]
pub struct Decomposition {
    /// ‖X‖_F (in f64); 0 for an all-zero matrix (then U = V' = 0).
    pub norm: f64,
    /// (rows, cols): the steps along sign(X).
    pub u: Vec<f32>,
    /// (rows, cols): V' = Q1ᵀ V Q2, the steps along Q1 sign(Y) Q2ᵀ in the rotated basis.
    pub v: Vec<f32>,
    /// ‖X₀/‖X₀‖ − U − V‖_F before the first iteration (1) and after each.
    pub residuals: Vec<f64>,
    /// Per iteration: true where it stepped along sign(X) (into U).
    pub into_u: Vec<bool>,
    pub converged: bool,
}

impl Decomposition {
    pub fn iterations(&self) -> usize {
        self.into_u.len()
    }

    pub fn residual(&self) -> f64 {
        *self.residuals.last().unwrap_or(&0.0)
    }
}

/// The decomposition of the (rows, cols) matrix `w`, on `gpu`: per iteration one submit (the
/// two rotations, the sign maps and five reductions) and one readback of five numbers, from
/// which the host picks the branch and the step.
pub fn decompose(
    gpu: &Gpu,
    w: &[f32],
    rows: usize,
    cols: usize,
    basis: Basis,
    tol: f64,
    max_iter: usize,
) -> Result<Decomposition> {
    assert_eq!(w.len(), rows * cols, "a ({rows}, {cols}) matrix");
    let norm = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let (m, n) = (rows, cols);
    if norm == 0.0 {
        return Ok(Decomposition {
            norm,
            u: vec![0.0; m * n],
            v: vec![0.0; m * n],
            residuals: vec![0.0],
            into_u: vec![],
            converged: true,
        });
    }
    let ws = |name: &str, shape: &[usize]| Tensor::zeros(gpu, name, shape, Category::Workspace);
    let (q1, q2) = basis.upload(gpu, m, n)?;
    let x0: Vec<f32> = w.iter().map(|&v| (v as f64 / norm) as f32).collect();
    // X (m, n): the remainder; T (m, n): X·Q2 or Q1·S; Y (m, n) = Q1ᵀ·X·Q2; P (m, n) = Q1·S·Q2ᵀ
    let x = Tensor::from_f32(gpu, "kashin X", &[m, n], &x0, Category::Workspace)?;
    let (t, y, p) = (
        ws("kashin T", &[m, n])?,
        ws("kashin Y", &[m, n])?,
        ws("kashin P", &[m, n])?,
    );
    // sign maps of X and Y; the factors U and V'
    let (sx, sy) = (ws("kashin sign X", &[m, n])?, ws("kashin sign Y", &[m, n])?);
    let (u, v) = (ws("kashin U", &[m, n])?, ws("kashin V'", &[m, n])?);
    // ‖X‖₁, ‖Y‖₁, nnz(X), nnz(Y), ‖X‖²_F
    let stats = ws("kashin stats", &[5])?;
    let mut residuals = vec![];
    let mut into_u = vec![];
    let converged = loop {
        matmul(
            gpu,
            MatmulDims::new(m, n, n, Layout::NN),
            &x,
            &q2,
            None,
            &t,
            false,
        );
        matmul(
            gpu,
            MatmulDims::new(m, n, m, Layout::TN),
            &q1,
            &t,
            None,
            &y,
            false,
        );
        sign(gpu, &x, &sx);
        sign(gpu, &y, &sy);
        reduce(gpu, &x, Reduction::AbsSum, &stats, 0, false)?;
        reduce(gpu, &y, Reduction::AbsSum, &stats, 1, false)?;
        reduce(gpu, &sx, Reduction::SumOfSquares, &stats, 2, false)?;
        reduce(gpu, &sy, Reduction::SumOfSquares, &stats, 3, false)?;
        reduce(gpu, &x, Reduction::SumOfSquares, &stats, 4, false)?;
        let s: Vec<f64> = stats.to_f32(gpu)?.into_iter().map(f64::from).collect();
        let residual = s[4].sqrt();
        residuals.push(residual);
        if !residual.is_finite() {
            return Err(Error::NonFinite(format!(
                "the Kashin decomposition's residual became {residual} at iteration {}",
                into_u.len()
            )));
        }
        if residual < tol {
            break true;
        }
        if into_u.len() == max_iter {
            break false;
        }
        let along_x = s[0] > s[1];
        into_u.push(along_x);
        if along_x {
            // c·W = (‖X‖₁ / nnz(X))·sign(X)
            let a = (s[0] / s[2]) as f32;
            accumulate(gpu, &sx, -a, &x);
            accumulate(gpu, &sx, a, &u);
        } else {
            // c·W = (‖Y‖₁ / nnz(Y))·Q1 sign(Y) Q2ᵀ; V' gains the same step on sign(Y)
            let a = (s[1] / s[3]) as f32;
            rotate_back(gpu, (&q1, &q2), &sy, &t, &p, false);
            accumulate(gpu, &p, -a, &x);
            accumulate(gpu, &sy, a, &v);
        }
    };
    Ok(Decomposition {
        norm,
        u: u.to_f32(gpu)?,
        v: v.to_f32(gpu)?,
        residuals,
        into_u,
        converged,
    })
}

/// The host's k-means assignment, the same f32 arithmetic as the GPU's (`shaders/kashin.wgsl`):
/// the nearest centroid by squared distance, the lowest index on a tie.
pub fn assign_host(points: &[[f32; 2]], centroids: &[[f32; 2]]) -> Vec<u32> {
    points
        .iter()
        .map(|p| {
            let (mut best, mut best_d) = (0u32, 3.4e38f32);
            for (c, q) in centroids.iter().enumerate() {
                let (dx, dy) = (p[0] - q[0], p[1] - q[1]);
                let d = dx * dx + dy * dy;
                if d < best_d {
                    best_d = d;
                    best = c as u32;
                }
            }
            best
        })
        .collect()
}

/// Σ ‖p − c(p)‖², in f64.
pub fn distortion(points: &[[f32; 2]], centroids: &[[f32; 2]], labels: &[u32]) -> f64 {
    points
        .iter()
        .zip(labels)
        .map(|(p, &l)| {
            let c = centroids[l as usize];
            (p[0] as f64 - c[0] as f64).powi(2) + (p[1] as f64 - c[1] as f64).powi(2)
        })
        .sum()
}

/// k-means++ seeding: the first centroid a uniformly drawn point, each next one a point drawn
/// with probability ∝ its squared distance to the nearest centroid so far (uniformly when every
/// point already sits on one).
fn seed_centroids(points: &[[f32; 2]], k: usize, rng: &mut Rng) -> Vec<[f32; 2]> {
    let n = points.len() as u64;
    let mut c = vec![points[rng.below(n) as usize]];
    let d2 = |p: &[f32; 2], q: &[f32; 2]| {
        (p[0] as f64 - q[0] as f64).powi(2) + (p[1] as f64 - q[1] as f64).powi(2)
    };
    let mut nearest: Vec<f64> = points.iter().map(|p| d2(p, &c[0])).collect();
    while c.len() < k {
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 {
            let mut r = rng.uniform() * total;
            let mut pick = points.len() - 1;
            for (i, &d) in nearest.iter().enumerate() {
                if r < d {
                    pick = i;
                    break;
                }
                r -= d;
            }
            pick
        } else {
            rng.below(n) as usize
        };
        let q = points[pick];
        for (d, p) in nearest.iter_mut().zip(points) {
            *d = d.min(d2(p, &q));
        }
        c.push(q);
    }
    c
}

/// 2-D k-means of `points` into `k` centroids: (centroids, labels). Lloyd's iterations, each
/// one submit (the assignment on `gpu`) and the means on the host in f64, in point order; an
/// empty cluster keeps its centroid. `restarts` seedings from `seed`, `seed + 1`, …; the
/// lowest distortion wins (the first on a tie). Deterministic.
pub fn kmeans(
    gpu: &Gpu,
    points: &[[f32; 2]],
    k: usize,
    seed: u64,
    restarts: usize,
    max_iter: usize,
) -> Result<(Vec<[f32; 2]>, Vec<u32>)> {
    assert!(
        !points.is_empty() && k > 0,
        "kmeans of no points or into no clusters"
    );
    let flat: Vec<f32> = points.iter().flatten().copied().collect();
    let pts = Tensor::from_f32(
        gpu,
        "kmeans points",
        &[points.len(), 2],
        &flat,
        Category::Workspace,
    )?;
    let cb = Tensor::zeros(gpu, "kmeans centroids", &[k, 2], Category::Workspace)?;
    let labels_t = Tensor::empty(
        gpu,
        "kmeans labels",
        &[points.len()],
        DType::U32,
        Category::Workspace,
    )?;
    let mut best: Option<(f64, Vec<[f32; 2]>, Vec<u32>)> = None;
    for r in 0..restarts {
        let mut rng = Rng::new(seed.wrapping_add(r as u64));
        let mut c = seed_centroids(points, k, &mut rng);
        let mut labels: Vec<u32> = vec![];
        for _ in 0..max_iter {
            cb.write_f32(gpu, &c.iter().flatten().copied().collect::<Vec<f32>>());
            crate::ops::kashin::assign(gpu, &pts, &cb, &labels_t);
            let new = labels_t.to_u32(gpu)?;
            if new == labels {
                break;
            }
            labels = new;
            let mut sums = vec![[0f64; 3]; k];
            for (p, &l) in points.iter().zip(&labels) {
                let s = &mut sums[l as usize];
                s[0] += p[0] as f64;
                s[1] += p[1] as f64;
                s[2] += 1.0;
            }
            for (c, s) in c.iter_mut().zip(&sums) {
                if s[2] > 0.0 {
                    *c = [(s[0] / s[2]) as f32, (s[1] / s[2]) as f32];
                }
            }
        }
        // the labels of the final centroids
        let labels = assign_host(points, &c);
        let d = distortion(points, &c, &labels);
        if best.as_ref().is_none_or(|b| d < b.0) {
            best = Some((d, c, labels));
        }
    }
    let (_, c, labels) = best.expect("at least one restart");
    Ok((c, labels))
}

/// A matrix in the Kashin representation: b-bit codes and a codebook of (u, v') pairs.
#[derive(Clone, Debug, PartialEq)]
pub struct Kashin {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    pub basis: Basis,
    /// ‖X‖_F of the original matrix.
    pub norm: f32,
    /// (2^bits) centroids (u, v') of the normalised factors.
    pub codebook: Vec<[f32; 2]>,
    /// rows·cols codes of `bits` bits, a little-endian bitstream (code i in bits i·b .. i·b + b).
    pub codes: Vec<u8>,
}

/// Packs `labels` as a little-endian bitstream of `bits` bits each.
pub fn pack_codes(labels: &[u32], bits: u32) -> Vec<u8> {
    let mut out = vec![0u8; (labels.len() * bits as usize).div_ceil(8)];
    for (i, &l) in labels.iter().enumerate() {
        for b in 0..bits as usize {
            if l >> b & 1 == 1 {
                let bit = i * bits as usize + b;
                out[bit / 8] |= 1 << (bit % 8);
            }
        }
    }
    out
}

impl Kashin {
    /// Weight i's (row-major) code.
    pub fn code(&self, i: usize) -> u32 {
        (0..self.bits as usize).fold(0, |c, b| {
            let bit = i * self.bits as usize + b;
            c | (u32::from(self.codes[bit / 8] >> (bit % 8) & 1) << b)
        })
    }

    /// Stored size: the codes, the codebook (f32 pairs) and the norm.
    pub fn bytes(&self) -> usize {
        self.codes.len() + 8 * self.codebook.len() + 4
    }

    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.bytes() as f64 / (self.rows * self.cols) as f64
    }

    /// The codebook as the decoder uses it: each centroid times the norm, in f32.
    fn scaled_codebook(&self) -> Vec<f32> {
        self.codebook
            .iter()
            .flatten()
            .map(|&c| c * self.norm)
            .collect()
    }

    /// The f32 matrix the codes stand for, computed on the host in f64:
    /// (norm·U_q) + Q1 (norm·V'_q) Q2ᵀ.
    pub fn dequantize(&self) -> Vec<f32> {
        let (m, n) = (self.rows, self.cols);
        let cb = self.scaled_codebook();
        let q1 = self.basis.matrix(m, false);
        let q2 = self.basis.matrix(n, true);
        let vq: Vec<f64> = (0..m * n)
            .map(|i| cb[2 * self.code(i) as usize + 1] as f64)
            .collect();
        // T = Q1·V'_q, then T·Q2ᵀ
        let mut t = vec![0f64; m * n];
        for i in 0..m {
            for k in 0..m {
                let a = q1[i * m + k];
                for j in 0..n {
                    t[i * n + j] += a * vq[k * n + j];
                }
            }
        }
        (0..m * n)
            .map(|idx| {
                let (i, j) = (idx / n, idx % n);
                let dot: f64 = (0..n).map(|l| t[i * n + l] * q2[j * n + l]).sum();
                (cb[2 * self.code(idx) as usize] as f64 + dot) as f32
            })
            .collect()
    }

    /// The decoded matrix, computed on `gpu` ([`Kashin::decode_on`]) and read back: what a
    /// model loading these codes runs with (the host's [`Kashin::dequantize`] costs
    /// O(rows·cols·(rows + cols)) scalar f64 operations).
    pub fn decode(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let out = Tensor::zeros(
            gpu,
            "kashin decoded",
            &[self.rows, self.cols],
            Category::Workspace,
        )?;
        self.decode_on(gpu, &out)?;
        out.to_f32(gpu)
    }

    /// Decodes into `out` ((rows, cols) f32) on `gpu`: the codebook lookup, then Q1·V'_q and
    /// its product with Q2ᵀ accumulated onto U_q. Recorded, not flushed.
    pub fn decode_on(&self, gpu: &Gpu, out: &Tensor) -> Result<()> {
        let (m, n) = (self.rows, self.cols);
        crate::ops::expect_numel("kashin decode out", out, m * n);
        let mut bytes = self.codes.clone();
        bytes.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        let codes = Tensor::from_u32(
            gpu,
            "kashin codes",
            &[words.len()],
            &words,
            Category::Workspace,
        )?;
        let cb = Tensor::from_f32(
            gpu,
            "kashin codebook",
            &[self.codebook.len(), 2],
            &self.scaled_codebook(),
            Category::Workspace,
        )?;
        let (q1, q2) = self.basis.upload(gpu, m, n)?;
        let vq = Tensor::zeros(gpu, "kashin V'_q", &[m, n], Category::Workspace)?;
        let t = Tensor::zeros(gpu, "kashin Q1·V'_q", &[m, n], Category::Workspace)?;
        crate::ops::kashin::decode(gpu, &codes, self.bits, &cb, out, &vq);
        rotate_back(gpu, (&q1, &q2), &vq, &t, out, true);
        Ok(())
    }
}

/// What quantizing one matrix by the Kashin method did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// None where the decomposition did not reach the tolerance (the layer stays f32).
    pub quantized: Option<Kashin>,
    pub iterations: usize,
    pub residual: f64,
}

/// Decomposes and clusters the (rows, cols) matrix `w` on `gpu`. NaN or infinite weights are
/// refused, naming the first.
pub fn quantize(gpu: &Gpu, w: &[f32], rows: usize, cols: usize, o: &Options) -> Result<Outcome> {
    o.validate()?;
    super::refuse_non_finite(w, cols)?;
    let d = decompose(gpu, w, rows, cols, o.basis, o.tol, o.max_iter)?;
    let (iterations, residual) = (d.iterations(), d.residual());
    if !d.converged {
        return Ok(Outcome {
            quantized: None,
            iterations,
            residual,
        });
    }
    let points: Vec<[f32; 2]> = d.u.iter().zip(&d.v).map(|(&u, &v)| [u, v]).collect();
    let (codebook, labels) = kmeans(gpu, &points, 1 << o.bits, o.seed, o.restarts, o.kmeans_iter)?;
    Ok(Outcome {
        quantized: Some(Kashin {
            rows,
            cols,
            bits: o.bits,
            basis: o.basis,
            norm: d.norm as f32,
            codebook,
            codes: pack_codes(&labels, o.bits),
        }),
        iterations,
        residual,
    })
}
