//! Causal multi-head self-attention, forward and backward, over a packed qkv (B, T, C + 2·KC):
//! GPT-2's (B, T, 3C) where every query head has its own key and value head, or grouped-query
//! attention's (Llama's), where [`Heads::kv`] key/value heads each serve a group of query heads.
//! The heads are split out to (B, NH, T, hs) (a group's key and value repeated for each of its
//! query heads), q·kᵀ, att·v and their gradients run as batched matmuls (B·NH batches), a
//! row-wise kernel does the causal softmax, and a key/value head's gradient is its group's sum.
//! Kernel: `shaders/attention.wgsl`.
//!
//! The matmuls compute the whole T×T score matrix, the masked half included (the softmax zeroes
//! it): twice the useful multiply-adds of q·kᵀ, but on the tuned matmul kernels, which are tens of
//! times faster than per-row loops on lavapipe.

use super::matmul::{matmul, Layout, MatmulDims};
use super::{dispatch_items, expect_numel};
use crate::error::Result;
use crate::gpu::shaders::{ATTENTION_SUBGROUP_TEXTURES, ATTENTION_TEXTURES};
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::tensor::{DType, Tensor};

/// The head moves, one element per invocation and (for hs a multiple of 4) a vec4 per invocation.
const SPLIT_QKV: [Kernel; 2] = moves("split_qkv", "split_qkv4");
const SPLIT: [Kernel; 2] = moves("split", "split4");
const MERGE: [Kernel; 2] = moves("merge", "merge4");
const MERGE_QKV: [Kernel; 2] = moves("merge_qkv", "merge_qkv4");

const fn moves(scalar: &'static str, vec4: &'static str) -> [Kernel; 2] {
    [
        Kernel::new(Shader::Attention, scalar),
        Kernel::new(Shader::Attention, vec4),
    ]
}

/// Records one of the head moves over the B·T·C elements of a (B, NH, T, hs) tensor: four at a
/// time when hs allows. `params`: the uniform block [`dims`] builds (B, T, C, NH, scale).
fn dispatch_move(gpu: &Gpu, kernels: &[Kernel; 2], args: &[(&Tensor, Access)], params: &[u32]) {
    let [b, t, c, nh] = [params[0], params[1], params[2], params[3]].map(|v| v as usize);
    if (c / nh) % 4 == 0 {
        // the vec4 moves read their inputs through textures where the device reads them faster
        let inputs: Vec<usize> = (0..args.len())
            .filter(|&i| args[i].1 == Access::Read)
            .collect();
        let form = &ATTENTION_TEXTURES;
        let items = b * t * c / 4;
        super::dispatch_items_textured(gpu, &kernels[1], form, &inputs, args, params, items, WG);
    } else {
        dispatch_items(gpu, &kernels[0], args, params, b * t * c, WG);
    }
}
const SOFTMAX: Kernel = Kernel::new(Shader::Attention, "softmax");
const SOFTMAX_BACKWARD: Kernel = Kernel::new(Shader::Attention, "softmax_backward");
const SOFTMAX_SG: Kernel = Kernel::new(Shader::AttentionSubgroup, "softmax");
const SOFTMAX_BACKWARD_SG: Kernel = Kernel::new(Shader::AttentionSubgroup, "softmax_backward");
const WG: usize = 64;

/// Query heads, and the key/value heads they share (as many for multi-head attention, a divisor
/// for grouped-query attention, 1 for multi-query). A bare head count is multi-head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    pub query: usize,
    pub kv: usize,
}

impl Heads {
    /// qkv's width for C query channels: C + 2·KC.
    pub fn qkv_width(&self, c: usize) -> usize {
        c + 2 * c / self.query * self.kv
    }
}

impl From<usize> for Heads {
    fn from(n: usize) -> Heads {
        Heads { query: n, kv: n }
    }
}

/// (batch, seq, channels) read from qkv (B, T, C + 2·KC), and the uniform block.
fn dims(qkv: &Tensor, heads: Heads) -> (usize, usize, usize, [u32; 6]) {
    let shape = qkv.shape();
    let Heads { query: nh, kv: kh } = heads;
    assert!(
        nh > 0 && kh > 0 && nh % kh == 0,
        "attention: {nh} query heads do not share {kh} key/value heads evenly"
    );
    // width = C·(NH + 2·KH)/NH
    assert!(
        shape.len() == 3 && shape[2] % (nh + 2 * kh) == 0,
        "attention qkv must be (B, T, C + 2·KC) for {nh} query and {kh} key/value heads: {qkv:?}"
    );
    let (b, t, c) = (shape[0], shape[1], shape[2] / (nh + 2 * kh) * nh);
    let scale = 1.0 / ((c / nh) as f32).sqrt();
    let params = [
        b as u32,
        t as u32,
        c as u32,
        nh as u32,
        scale.to_bits(),
        kh as u32,
    ];
    (b, t, c, params)
}

/// A per-head tensor (B, NH, T, hs) of workspace: the forward makes four (q, k, v, y), the
/// backward seven (q, k, v, dy, dq, dk, dv), each freed when the call returns.
fn head_tensor(gpu: &Gpu, name: &str, b: usize, nh: usize, t: usize, c: usize) -> Result<Tensor> {
    Tensor::empty(
        gpu,
        name,
        &[b, nh, t, c / nh],
        DType::F32,
        Category::Workspace,
    )
}

/// att (B, NH, T, T) = causal softmax of scaled q·k; out (B, T, C) = att·v.
pub fn attention_forward(
    gpu: &Gpu,
    qkv: &Tensor,
    heads: impl Into<Heads>,
    att: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let heads = heads.into();
    let (Some(qkv), Some(a), Some(o)) = (
        super::widen(gpu, qkv),
        super::Written::new(gpu, att, false),
        super::Written::new(gpu, out, false),
    ) else {
        return Ok(());
    };
    attention_forward_f32(gpu, &qkv, heads, a.f32(), o.f32())?;
    a.done(gpu);
    o.done(gpu);
    Ok(())
}

fn attention_forward_f32(
    gpu: &Gpu,
    qkv: &Tensor,
    heads: Heads,
    att: &Tensor,
    out: &Tensor,
) -> Result<()> {
    super::expect_f32("attention_forward", &[qkv, att, out]);
    let (b, t, c, params) = dims(qkv, heads);
    let nh = heads.query;
    expect_numel("attention att", att, b * nh * t * t);
    expect_numel("attention out", out, b * t * c);
    let hs = c / nh;
    let [q, k, v, y] = ["attn.q", "attn.k", "attn.v", "attn.y_heads"]
        .map(|name| head_tensor(gpu, name, b, nh, t, c));
    let (q, k, v, y) = (q?, k?, v?, y?);
    dispatch_move(
        gpu,
        &SPLIT_QKV,
        &[
            (qkv, Access::Read),
            (&q, Access::ReadWrite),
            (&k, Access::ReadWrite),
            (&v, Access::ReadWrite),
        ],
        &params,
    );
    // raw scores q·kᵀ per head, then the scaled causal softmax in place
    let per_head = |m, n, k, layout| MatmulDims::batched(b * nh, m, n, k, layout);
    matmul(
        gpu,
        per_head(t, t, hs, Layout::NT),
        &q,
        &k,
        None,
        att,
        false,
    );
    // a row of T per 8-lane subgroup (attention_subgroup.wgsl) where T is whole vec4s
    let (softmax, per_group) = if super::subgroup_rows(gpu, t) {
        super::row_kernel(gpu, &SOFTMAX_SG)
    } else {
        (SOFTMAX, WG)
    };
    let args = [(att, Access::ReadWrite)];
    dispatch_items(gpu, &softmax, &args, &params, b * nh * t, per_group);
    matmul(
        gpu,
        per_head(t, hs, t, Layout::NN),
        att,
        &v,
        None,
        &y,
        false,
    );
    dispatch_move(
        gpu,
        &MERGE,
        &[(&y, Access::Read), (out, Access::ReadWrite)],
        &params,
    );
    Ok(())
}

/// dqkv (B, T, C + 2·KC) from dout (B, T, C), the forward's qkv and att; dpre (B, NH, T, T) is
/// workspace.
pub fn attention_backward(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    att: &Tensor,
    heads: impl Into<Heads>,
    dpre: &Tensor,
    dqkv: &Tensor,
) -> Result<()> {
    let heads = heads.into();
    let (Some(dout), Some(qkv), Some(att), Some(d)) = (
        super::widen(gpu, dout),
        super::widen(gpu, qkv),
        super::widen(gpu, att),
        super::Written::new(gpu, dqkv, false),
    ) else {
        return Ok(());
    };
    attention_backward_f32(gpu, &dout, &qkv, &att, heads, dpre, d.f32())?;
    d.done(gpu);
    Ok(())
}

fn attention_backward_f32(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    att: &Tensor,
    heads: Heads,
    dpre: &Tensor,
    dqkv: &Tensor,
) -> Result<()> {
    super::expect_f32("attention_backward", &[dout, qkv, att, dpre, dqkv]);
    let (b, t, c, params) = dims(qkv, heads);
    let nh = heads.query;
    expect_numel("attention dout", dout, b * t * c);
    expect_numel("attention att", att, b * nh * t * t);
    expect_numel("attention dpre", dpre, b * nh * t * t);
    expect_numel("attention dqkv", dqkv, b * t * heads.qkv_width(c));
    let hs = c / nh;
    let names = [
        "attn.q",
        "attn.k",
        "attn.v",
        "attn.dy_heads",
        "attn.dq",
        "attn.dk",
        "attn.dv",
    ];
    let [q, k, v, dy, dq, dk, dv] = names.map(|name| head_tensor(gpu, name, b, nh, t, c));
    let (q, k, v, dy, dq, dk, dv) = (q?, k?, v?, dy?, dq?, dk?, dv?);
    dispatch_move(
        gpu,
        &SPLIT_QKV,
        &[
            (qkv, Access::Read),
            (&q, Access::ReadWrite),
            (&k, Access::ReadWrite),
            (&v, Access::ReadWrite),
        ],
        &params,
    );
    dispatch_move(
        gpu,
        &SPLIT,
        &[(dout, Access::Read), (&dy, Access::ReadWrite)],
        &params,
    );
    let per_head = |m, n, k, layout| MatmulDims::batched(b * nh, m, n, k, layout);
    // y = att·v: datt = dy·vᵀ (into dpre), dv = attᵀ·dy
    matmul(
        gpu,
        per_head(t, t, hs, Layout::NT),
        &dy,
        &v,
        None,
        dpre,
        false,
    );
    matmul(
        gpu,
        per_head(t, hs, t, Layout::TN),
        att,
        &dy,
        None,
        &dv,
        false,
    );
    // through the softmax (and the scale) to the raw scores
    let args = [(att, Access::Read), (dpre, Access::ReadWrite)];
    if super::subgroup_rows(gpu, t) {
        let form = &ATTENTION_SUBGROUP_TEXTURES;
        let (kernel, per_group) = super::row_kernel(gpu, &SOFTMAX_BACKWARD_SG);
        super::dispatch_items_textured(
            gpu,
            &kernel,
            form,
            &[0],
            &args,
            &params,
            b * nh * t,
            per_group,
        );
    } else {
        dispatch_items(gpu, &SOFTMAX_BACKWARD, &args, &params, b * nh * t, WG);
    }
    // s = q·kᵀ: dq = dpre·k, dk = dpreᵀ·q
    matmul(
        gpu,
        per_head(t, hs, t, Layout::NN),
        dpre,
        &k,
        None,
        &dq,
        false,
    );
    matmul(
        gpu,
        per_head(t, hs, t, Layout::TN),
        dpre,
        &q,
        None,
        &dk,
        false,
    );
    dispatch_move(
        gpu,
        &MERGE_QKV,
        &[
            (&dq, Access::Read),
            (&dk, Access::Read),
            (&dv, Access::Read),
            (dqkv, Access::ReadWrite),
        ],
        &params,
    );
    Ok(())
}

const CACHED: Kernel = Kernel::new(Shader::AttentionCached, "cached");

/// The longest head the row-per-invocation kernels take (cached and fused attention: their
/// per-invocation accumulators, `MAX_HS` in their shaders).
pub const ROW_KERNEL_MAX_HEAD: usize = 256;

/// Generation's attention (`shaders/attention_cached.wgsl`): y (n, C) for n new queries at
/// positions pos .. pos + n against a KV cache whose rows 0 .. pos + n hold every key and value
/// so far (the new ones appended). `q`: rows of at least C values, the query heads in the first
/// C (attention's packed qkv); `k`, `v`: (capacity, KC). An online softmax per query and head:
/// no score is stored. f32.
pub fn cached_attention(
    gpu: &Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: Heads,
    pos: usize,
    y: &Tensor,
) {
    super::expect_f32("cached_attention", &[q, k, v, y]);
    let (n, c) = (y.rows(), y.cols());
    let hs = c / heads.query;
    assert!(
        hs <= ROW_KERNEL_MAX_HEAD && heads.query % heads.kv == 0,
        "cached attention: heads of {hs} ({heads:?})"
    );
    assert_eq!(q.rows(), n, "cached attention: q {q:?} for y {y:?}");
    assert!(q.cols() >= c, "cached attention: q {q:?} for y {y:?}");
    assert_eq!(k.cols(), heads.kv * hs, "cached attention: k {k:?}");
    assert!(
        pos + n <= k.rows(),
        "cached attention: {pos} + {n} past {k:?}"
    );
    let scale = 1.0 / (hs as f32).sqrt();
    let params = [
        n as u32,
        pos as u32,
        heads.query as u32,
        heads.kv as u32,
        hs as u32,
        q.cols() as u32,
        scale.to_bits(),
    ];
    let args = [
        (q, Access::Read),
        (k, Access::Read),
        (v, Access::Read),
        (y, Access::ReadWrite),
    ];
    dispatch_items(gpu, &CACHED, &args, &params, n * heads.query, WG);
}

const FUSED_FORWARD: Kernel = Kernel::new(Shader::AttentionFused, "forward");
const FUSED_DELTA: Kernel = Kernel::new(Shader::AttentionFused, "delta");
const FUSED_DQ: Kernel = Kernel::new(Shader::AttentionFused, "dq");
const FUSED_DKV: Kernel = Kernel::new(Shader::AttentionFused, "dkv");

/// Fused attention's forward (`shaders/attention_fused.wgsl`, FlashAttention's scheme a row per
/// invocation): out (B, T, C) from qkv (B, T, C + 2·KC) and each row's log-sum-exp lse
/// (B, NH, T, f32), which the backward reads instead of the (B, NH, T, T) probabilities that
/// [`attention_forward`] stores. Half qkv and out go through f32 views.
pub fn attention_fused_forward(gpu: &Gpu, qkv: &Tensor, heads: Heads, out: &Tensor, lse: &Tensor) {
    let (Some(qkv), Some(o)) = (super::widen(gpu, qkv), super::Written::new(gpu, out, false))
    else {
        return;
    };
    super::expect_f32("attention_fused_forward", &[&qkv, o.f32(), lse]);
    let (b, t, c, params) = dims(&qkv, heads);
    assert!(
        c / heads.query <= ROW_KERNEL_MAX_HEAD,
        "fused attention: heads of {}",
        c / heads.query
    );
    expect_numel("attention out", o.f32(), b * t * c);
    expect_numel("attention lse", lse, b * heads.query * t);
    let args = [
        (&*qkv, Access::Read),
        (o.f32(), Access::ReadWrite),
        (lse, Access::ReadWrite),
    ];
    dispatch_items(gpu, &FUSED_FORWARD, &args, &params, b * heads.query * t, WG);
    o.done(gpu);
}

/// Fused attention's backward: dqkv (B, T, C + 2·KC) from dout and y (B, T, C), the forward's
/// qkv and lse; the scores recomputed from q and k, a key/value head's gradient summed over
/// its group's query heads and rows in order.
pub fn attention_fused_backward(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    y: &Tensor,
    lse: &Tensor,
    heads: Heads,
    dqkv: &Tensor,
) -> Result<()> {
    let (Some(dout), Some(qkv), Some(y), Some(d)) = (
        super::widen(gpu, dout),
        super::widen(gpu, qkv),
        super::widen(gpu, y),
        super::Written::new(gpu, dqkv, false),
    ) else {
        return Ok(());
    };
    let dqkv = d.f32();
    super::expect_f32("attention_fused_backward", &[&dout, &qkv, &y, lse, dqkv]);
    let (b, t, c, params) = dims(&qkv, heads);
    for (what, x, n) in [
        ("dout", &*dout, b * t * c),
        ("y", &*y, b * t * c),
        ("lse", lse, b * heads.query * t),
        ("dqkv", dqkv, b * t * heads.qkv_width(c)),
    ] {
        expect_numel(what, x, n);
    }
    let rows = b * heads.query * t;
    let delta = Tensor::empty(gpu, "attn.delta", &[rows], DType::F32, Category::Workspace)?;
    let args = [
        (&*dout, Access::Read),
        (&*y, Access::Read),
        (&delta, Access::ReadWrite),
    ];
    dispatch_items(gpu, &FUSED_DELTA, &args, &params, rows, WG);
    let args = [
        (&*qkv, Access::Read),
        (&*dout, Access::Read),
        (lse, Access::Read),
        (&delta, Access::Read),
        (dqkv, Access::ReadWrite),
    ];
    dispatch_items(gpu, &FUSED_DQ, &args, &params, rows, WG);
    dispatch_items(gpu, &FUSED_DKV, &args, &params, b * heads.kv * t, WG);
    d.done(gpu);
    Ok(())
}
