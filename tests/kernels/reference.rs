//! Float64 CPU references: each kernel's forward and its analytic backward, written plainly.

/// C (M, N) = op(A)·op(B) for one batch, with op given by the storage layout flags.
/// a is (M, K) or, when ta, (K, M); b is (K, N) or, when tb, (N, K).
#[allow(clippy::too_many_arguments)]
pub fn matmul(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for kk in 0..k {
                let av = if ta { a[kk * m + i] } else { a[i * k + kk] };
                let bv = if tb { b[j * k + kk] } else { b[kk * n + j] };
                s += av * bv;
            }
            c[i * n + j] = s;
        }
    }
    c
}

pub fn relu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

pub fn relu_backward(x: &[f64], dout: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(dout)
        .map(|(&v, &d)| if v > 0.0 { d } else { 0.0 })
        .collect()
}

const GELU_S: f64 = 0.797_884_560_802_865_4; // sqrt(2/pi)
const GELU_C: f64 = 0.044715;

pub fn gelu(x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|&v| 0.5 * v * (1.0 + (GELU_S * (v + GELU_C * v * v * v)).tanh()))
        .collect()
}

pub fn gelu_backward(x: &[f64], dout: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(dout)
        .map(|(&v, &d)| {
            let t = (GELU_S * (v + GELU_C * v * v * v)).tanh();
            let du = GELU_S * (1.0 + 3.0 * GELU_C * v * v);
            d * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du)
        })
        .collect()
}

/// Per-row losses and dlogits (scaled by grad_scale); a target ≥ V is padding.
pub fn softmax_xent(
    logits: &[f64],
    targets: &[u32],
    v: usize,
    grad_scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let rows = targets.len();
    let mut losses = vec![0.0; rows];
    let mut dlogits = vec![0.0; rows * v];
    for r in 0..rows {
        let t = targets[r] as usize;
        if t >= v {
            continue;
        }
        let row = &logits[r * v..(r + 1) * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|&x| (x - m).exp()).sum();
        losses[r] = z.ln() + m - row[t];
        for j in 0..v {
            let p = (row[j] - m).exp() / z;
            dlogits[r * v + j] = grad_scale * (p - if j == t { 1.0 } else { 0.0 });
        }
    }
    (losses, dlogits)
}

pub struct LayerNormOut {
    pub out: Vec<f64>,
    pub mean: Vec<f64>,
    pub rstd: Vec<f64>,
}

pub fn layernorm(
    x: &[f64],
    w: &[f64],
    b: &[f64],
    rows: usize,
    cols: usize,
    eps: f64,
) -> LayerNormOut {
    let mut out = vec![0.0; rows * cols];
    let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mu = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / cols as f64;
        let rs = 1.0 / (var + eps).sqrt();
        for c in 0..cols {
            out[r * cols + c] = (row[c] - mu) * rs * w[c] + b[c];
        }
        mean[r] = mu;
        rstd[r] = rs;
    }
    LayerNormOut { out, mean, rstd }
}

/// (dx, dw, db)
pub fn layernorm_backward(
    dout: &[f64],
    x: &[f64],
    w: &[f64],
    rows: usize,
    cols: usize,
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let fwd = layernorm(x, w, &vec![0.0; cols], rows, cols, eps);
    let mut dx = vec![0.0; rows * cols];
    let (mut dw, mut db) = (vec![0.0; cols], vec![0.0; cols]);
    let n = cols as f64;
    for r in 0..rows {
        let (mu, rs) = (fwd.mean[r], fwd.rstd[r]);
        let xhat: Vec<f64> = (0..cols).map(|c| (x[r * cols + c] - mu) * rs).collect();
        let g: Vec<f64> = (0..cols).map(|c| dout[r * cols + c] * w[c]).collect();
        let mean_g = g.iter().sum::<f64>() / n;
        let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n;
        for c in 0..cols {
            dx[r * cols + c] = rs * (g[c] - mean_g - xhat[c] * mean_gx);
            dw[c] += dout[r * cols + c] * xhat[c];
            db[c] += dout[r * cols + c];
        }
    }
    (dx, dw, db)
}

pub fn embedding(idx: &[u32], table: &[f64], cols: usize) -> Vec<f64> {
    idx.iter()
        .flat_map(|&v| table[v as usize * cols..(v as usize + 1) * cols].to_vec())
        .collect()
}

pub fn embedding_backward(idx: &[u32], dout: &[f64], vocab: usize, cols: usize) -> Vec<f64> {
    let mut d = vec![0.0; vocab * cols];
    for (r, &v) in idx.iter().enumerate() {
        for c in 0..cols {
            d[v as usize * cols + c] += dout[r * cols + c];
        }
    }
    d
}

/// Causal self-attention over qkv (B, T, C + 2·KC), `kh` key/value heads each serving NH/KH
/// query heads (kh = nh: GPT-2's (B, T, 3C)): returns (out (B, T, C), att (B, NH, T, T)).
pub fn attention_gqa(
    qkv: &[f64],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    kh: usize,
) -> (Vec<f64>, Vec<f64>) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f64).sqrt();
    let at = qkv_index(t, c, nh, kh);
    let mut out = vec![0.0; b * t * c];
    let mut att = vec![0.0; b * nh * t * t];
    for bi in 0..b {
        for h in 0..nh {
            for t1 in 0..t {
                let scores: Vec<f64> = (0..=t1)
                    .map(|t2| {
                        (0..hs)
                            .map(|d| qkv[at(bi, t1, 0, h, d)] * qkv[at(bi, t2, 1, h, d)])
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                let row = ((bi * nh + h) * t + t1) * t;
                for (t2, s) in scores.iter().enumerate() {
                    att[row + t2] = (s - m).exp() / z;
                }
                for d in 0..hs {
                    out[(bi * t + t1) * c + h * hs + d] = (0..=t1)
                        .map(|t2| att[row + t2] * qkv[at(bi, t2, 2, h, d)])
                        .sum();
                }
            }
        }
    }
    (out, att)
}

/// The index in qkv (B, T, C + 2·KC) of (batch, position, part (q, k, v), query head, d): a
/// query head's key and value are its group's.
fn qkv_index(
    t: usize,
    c: usize,
    nh: usize,
    kh: usize,
) -> impl Fn(usize, usize, usize, usize, usize) -> usize {
    let hs = c / nh;
    let kc = kh * hs;
    move |bi, ti, part, h, d| {
        let row = (bi * t + ti) * (c + 2 * kc);
        match part {
            0 => row + h * hs + d,
            _ => row + c + (part - 1) * kc + h / (nh / kh) * hs + d,
        }
    }
}

/// [`attention_gqa`] with a key/value head per query head: qkv (B, T, 3C).
pub fn attention(qkv: &[f64], b: usize, t: usize, c: usize, nh: usize) -> (Vec<f64>, Vec<f64>) {
    attention_gqa(qkv, b, t, c, nh, nh)
}

/// dqkv (B, T, C + 2·KC) given dout (B, T, C).
pub fn attention_gqa_backward(
    qkv: &[f64],
    dout: &[f64],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    kh: usize,
) -> Vec<f64> {
    let hs = c / nh;
    let scale = 1.0 / (hs as f64).sqrt();
    let (_, att) = attention_gqa(qkv, b, t, c, nh, kh);
    let idx = qkv_index(t, c, nh, kh);
    let mut dqkv = vec![0.0; qkv.len()];
    for bi in 0..b {
        for h in 0..nh {
            for t1 in 0..t {
                let row = ((bi * nh + h) * t + t1) * t;
                let dout_t = |d: usize| dout[(bi * t + t1) * c + h * hs + d];
                // out_t = Σ att[t1,t2] v_t2
                let datt: Vec<f64> = (0..=t1)
                    .map(|t2| (0..hs).map(|d| dout_t(d) * qkv[idx(bi, t2, 2, h, d)]).sum())
                    .collect();
                for t2 in 0..=t1 {
                    for d in 0..hs {
                        dqkv[idx(bi, t2, 2, h, d)] += att[row + t2] * dout_t(d);
                    }
                }
                // softmax backward
                let s: f64 = (0..=t1).map(|t2| att[row + t2] * datt[t2]).sum();
                for t2 in 0..=t1 {
                    let dpre = att[row + t2] * (datt[t2] - s) * scale;
                    for d in 0..hs {
                        dqkv[idx(bi, t1, 0, h, d)] += dpre * qkv[idx(bi, t2, 1, h, d)];
                        dqkv[idx(bi, t2, 1, h, d)] += dpre * qkv[idx(bi, t1, 0, h, d)];
                    }
                }
            }
        }
    }
    dqkv
}

/// [`attention_gqa_backward`] with a key/value head per query head.
pub fn attention_backward(
    qkv: &[f64],
    dout: &[f64],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Vec<f64> {
    attention_gqa_backward(qkv, dout, b, t, c, nh, nh)
}

/// A linear layer with a LoRA update: y (R, out) = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ, with W (out, in),
/// A (r, in), B (out, r).
#[allow(clippy::too_many_arguments)]
pub fn lora_linear(
    x: &[f64],
    w: &[f64],
    bias: &[f64],
    a: &[f64],
    b: &[f64],
    s: f64,
    (rows, n_in, n_out, r): (usize, usize, usize, usize),
) -> Vec<f64> {
    let mut y = matmul(x, w, rows, n_out, n_in, false, true);
    let u = matmul(x, a, rows, r, n_in, false, true);
    let ub = matmul(&u, b, rows, n_out, r, false, true);
    for i in 0..rows {
        for j in 0..n_out {
            y[i * n_out + j] += bias[j] + s * ub[i * n_out + j];
        }
    }
    y
}

/// Its backward given dy: (dx, dA, dB).
#[allow(clippy::too_many_arguments)]
pub fn lora_linear_backward(
    x: &[f64],
    w: &[f64],
    a: &[f64],
    b: &[f64],
    s: f64,
    dy: &[f64],
    (rows, n_in, n_out, r): (usize, usize, usize, usize),
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let u = matmul(x, a, rows, r, n_in, false, true);
    // dB (out, r) = s·dyᵀ·u;  du (R, r) = s·dy·B;  dA (r, in) = duᵀ·x;  dx = dy·W + du·A
    let db: Vec<f64> = matmul(dy, &u, n_out, r, rows, true, false)
        .iter()
        .map(|v| s * v)
        .collect();
    let du: Vec<f64> = matmul(dy, b, rows, r, n_out, false, false)
        .iter()
        .map(|v| s * v)
        .collect();
    let da = matmul(&du, x, r, n_in, rows, true, false);
    let mut dx = matmul(dy, w, rows, n_in, n_out, false, false);
    for (d, e) in dx
        .iter_mut()
        .zip(matmul(&du, a, rows, n_in, r, false, false))
    {
        *d += e;
    }
    (dx, da, db)
}

/// RMSNorm: (out, rstd) with rstd = 1/sqrt(mean(x²) + eps), out = x·rstd·w.
pub fn rmsnorm(x: &[f64], w: &[f64], rows: usize, cols: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; rows * cols];
    let mut rstd = vec![0.0; rows];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let rs = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / cols as f64 + eps).sqrt();
        for c in 0..cols {
            out[r * cols + c] = row[c] * rs * w[c];
        }
        rstd[r] = rs;
    }
    (out, rstd)
}

/// RMSNorm's (dx, dw) for the upstream gradient `dout`.
pub fn rmsnorm_backward(
    dout: &[f64],
    x: &[f64],
    w: &[f64],
    rows: usize,
    cols: usize,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (_, rstd) = rmsnorm(x, w, rows, cols, eps);
    let mut dx = vec![0.0; rows * cols];
    let mut dw = vec![0.0; cols];
    for r in 0..rows {
        let rs = rstd[r];
        let xhat: Vec<f64> = (0..cols).map(|c| x[r * cols + c] * rs).collect();
        let g: Vec<f64> = (0..cols).map(|c| dout[r * cols + c] * w[c]).collect();
        let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / cols as f64;
        for c in 0..cols {
            dx[r * cols + c] = rs * (g[c] - xhat[c] * mean_gx);
            dw[c] += dout[r * cols + c] * xhat[c];
        }
    }
    (dx, dw)
}

/// Rotary embeddings ("rotate half") on rows of `dim` of (B, T, H, D): in each row's first `rot`
/// dimensions, i < rot/2 pairs with i + rot/2 and turns by t·base^(−2i/rot), t = (row / H) % T +
/// offset; `sign` −1 turns back.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &[f64],
    seq: usize,
    heads: usize,
    dim: usize,
    rot: usize,
    base: f64,
    offset: usize,
    sign: f64,
) -> Vec<f64> {
    let mut out = x.to_vec();
    let half = rot / 2;
    for (row, chunk) in out.chunks_mut(dim).enumerate() {
        let t = (row / heads) % seq + offset;
        for i in 0..half {
            let angle = t as f64 * base.powf(-2.0 * i as f64 / rot as f64);
            let (c, s) = (angle.cos(), sign * angle.sin());
            let (a, b) = (x[row * dim + i], x[row * dim + i + half]);
            chunk[i] = a * c - b * s;
            chunk[i + half] = b * c + a * s;
        }
    }
    out
}
