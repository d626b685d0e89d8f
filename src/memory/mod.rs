//! The memory planner: predicts the peak bytes per category of a training configuration without
//! allocating anything, by replaying the trainer's allocation sequence (model set-up, then one
//! optimizer step with its micro-batches, checkpoint policy and evaluation) on a ledger that counts
//! bytes the way the buffer pool does. Tests hold it to the pool's measurements.
//!
//! The sequence mirrors `nn::{gpt, block, attention, layernorm, mlp}` and `train`: a change to
//! what those allocate must be mirrored here, and the planner tests say when it was not.

use crate::data::digits;
use crate::error::Result;
use crate::gpu::{ByCategory, Category};
use crate::nn::Recompute;
use crate::ops::attention;
use crate::optim::{OptimizerName, BLOCK_8BIT, MIN_8BIT_SIZE};
use crate::train::{ModelKind, TrainConfig};
use serde_json::json;

const F: u64 = 4; // bytes per f32 or u32

/// Live and peak bytes per category, as the pool counts them.
#[derive(Default)]
struct Ledger {
    live: [u64; 5],
    peak: [u64; 5],
    peak_total: u64,
    largest: Vec<(String, u64)>,
}

#[derive(Clone, Copy)]
struct Buf(Category, u64);

impl Ledger {
    fn alloc(&mut self, name: &str, c: Category, bytes: u64) -> Buf {
        let i = c as usize;
        self.live[i] += bytes;
        self.peak[i] = self.peak[i].max(self.live[i]);
        self.peak_total = self.peak_total.max(self.live.iter().sum());
        if self.largest.iter().all(|(n, _)| n != name) {
            self.largest.push((name.to_string(), bytes));
        } else if let Some(e) = self.largest.iter_mut().find(|(n, _)| n == name) {
            e.1 = e.1.max(bytes);
        }
        Buf(c, bytes)
    }
    fn act(&mut self, name: &str, floats: usize) -> Buf {
        self.alloc(name, Category::Activations, floats as u64 * F)
    }
    fn free(&mut self, b: Buf) {
        self.live[b.0 as usize] -= b.1;
    }
    fn free_all(&mut self, bufs: impl IntoIterator<Item = Buf>) {
        for b in bufs {
            self.free(b);
        }
    }
}

/// A configuration's predicted peaks, and the textbook model-state formula beside them.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Peak bytes per category.
    pub predicted: ByCategory,
    /// Peak of the sum over categories at one instant.
    pub total: u64,
    /// Ψ: trainable parameters.
    pub psi: u64,
    /// Optimizer-state bytes per parameter in the textbook formula.
    pub optimizer_bytes_per_param: f64,
    /// Every tensor the run allocates, by name, with its largest size: checked against the
    /// adapter's limits before a run.
    pub tensors: Vec<(String, u64)>,
}

impl Plan {
    /// The textbook formula: 4Ψ fp32 weights + 4Ψ fp32 gradients + kΨ optimizer state.
    pub fn formula(&self) -> (u64, u64, u64) {
        (
            4 * self.psi,
            4 * self.psi,
            (self.optimizer_bytes_per_param * self.psi as f64) as u64,
        )
    }

    pub fn formula_text(&self, optimizer: OptimizerName) -> String {
        let k = self.optimizer_bytes_per_param;
        format!(
            "4Ψ + 4Ψ + {k}Ψ = {}Ψ (fp32 weights, fp32 gradients, {} state); Ψ = {}",
            8.0 + k,
            optimizer.as_str(),
            self.psi
        )
    }

    pub fn to_json(&self, optimizer: OptimizerName) -> serde_json::Value {
        let p = &self.predicted;
        let (fp, fg, fo) = self.formula();
        json!({
            "predicted": {
                "params": p.get(Category::Params),
                "grads": p.get(Category::Grads),
                "optimizer": p.get(Category::OptimizerState),
                "activations": p.get(Category::Activations),
                "workspace": p.get(Category::Workspace),
                "total": self.total,
            },
            "formula": {
                "psi": self.psi,
                "params": fp,
                "grads": fg,
                "optimizer": fo,
                "total": fp + fg + fo,
                "text": self.formula_text(optimizer),
            },
        })
    }
}

/// Textbook optimizer-state bytes per parameter.
pub fn optimizer_bytes_per_param(name: OptimizerName, centered: bool, momentum: f32) -> f64 {
    match name {
        OptimizerName::Sgd => 0.0,
        OptimizerName::Momentum
        | OptimizerName::Nesterov
        | OptimizerName::Lion
        | OptimizerName::NagGs => 4.0,
        OptimizerName::Rmsprop => {
            4.0 + if centered { 4.0 } else { 0.0 } + if momentum > 0.0 { 4.0 } else { 0.0 }
        }
        OptimizerName::Adam | OptimizerName::Adamw => 8.0,
        OptimizerName::Adam8bit => 2.0 + 8.0 / 256.0,
    }
}

/// The parameter tensors a config builds, in order: (name, numel).
fn param_shapes(c: &TrainConfig) -> Vec<(String, usize)> {
    match c.model {
        ModelKind::Mlp => {
            let mut sizes = vec![digits::FEATURES];
            sizes.extend(&c.mlp.hidden);
            sizes.push(digits::CLASSES);
            sizes
                .windows(2)
                .enumerate()
                .flat_map(|(i, w)| {
                    [
                        (format!("fc{i}.weight"), w[0] * w[1]),
                        (format!("fc{i}.bias"), w[1]),
                    ]
                })
                .collect()
        }
        ModelKind::Gpt => {
            let g = &c.gpt;
            let ch = g.n_embd;
            let mut v = vec![
                ("wte".into(), g.vocab_size * ch),
                ("wpe".into(), g.block_size * ch),
            ];
            for i in 0..g.n_layer {
                for (n, size) in [
                    ("ln_1.weight", ch),
                    ("ln_1.bias", ch),
                    ("attn.c_attn.weight", 3 * ch * ch),
                    ("attn.c_attn.bias", 3 * ch),
                    ("attn.c_proj.weight", ch * ch),
                    ("attn.c_proj.bias", ch),
                    ("ln_2.weight", ch),
                    ("ln_2.bias", ch),
                    ("mlp.c_fc.weight", 4 * ch * ch),
                    ("mlp.c_fc.bias", 4 * ch),
                    ("mlp.c_proj.weight", 4 * ch * ch),
                    ("mlp.c_proj.bias", ch),
                ] {
                    v.push((format!("h.{i}.{n}"), size));
                }
            }
            v.push(("ln_f.weight".into(), ch));
            v.push(("ln_f.bias".into(), ch));
            v
        }
    }
}

/// The GPT's shapes for one micro-batch.
struct GptDims {
    b: usize,
    t: usize,
    c: usize,
    v: usize,
    nh: usize,
    n: usize,
    block_size: usize,
}

impl GptDims {
    fn btc(&self) -> usize {
        self.b * self.t * self.c
    }
    fn bt(&self) -> usize {
        self.b * self.t
    }
    fn att(&self) -> usize {
        self.b * self.nh * self.t * self.t
    }
}

/// `Block::forward`: returns (output, cache).
fn block_forward(l: &mut Ledger, d: &GptDims) -> (Buf, Vec<Buf>) {
    let (btc, bt) = (d.btc(), d.bt());
    let mut cache = vec![
        l.act("ln.out", btc),
        l.act("ln.mean", bt),
        l.act("ln.rstd", bt),
    ];
    cache.push(l.act("attn.qkv", 3 * btc));
    cache.push(l.act("attn.att", d.att()));
    cache.push(l.act("attn.y", btc));
    // ops::attention's per-head workspace, freed when it returns
    let heads: Vec<Buf> = (0..attention::FORWARD_WORKSPACE)
        .map(|_| l.alloc("attn.heads", Category::Workspace, btc as u64 * F))
        .collect();
    l.free_all(heads);
    let a = l.act("attn.out", btc);
    cache.push(l.act("block.x_mid", btc));
    cache.extend([
        l.act("ln.out", btc),
        l.act("ln.mean", bt),
        l.act("ln.rstd", bt),
    ]);
    cache.push(l.act("block.h", 4 * btc));
    cache.push(l.act("block.g", 4 * btc));
    let m = l.act("block.mlp_out", btc);
    let y = l.act("block.y", btc);
    l.free_all([a, m]);
    (y, cache)
}

/// `Block::backward`: consumes the cache, returns dx.
fn block_backward(l: &mut Ledger, d: &GptDims, cache: Vec<Buf>) -> Buf {
    let btc = d.btc();
    let dg = l.act("block.dg", 4 * btc);
    let dh = l.act("block.dh", 4 * btc);
    l.free(dg);
    let dln2 = l.act("block.dln2", btc);
    l.free(dh);
    let dx_mid = l.act("ln.dx", btc);
    let dy = l.act("attn.dy", btc);
    let dpre = l.alloc("attn.dpre", Category::Workspace, (d.att() as u64) * F);
    let dqkv = l.act("attn.dqkv", 3 * btc);
    let heads: Vec<Buf> = (0..attention::BACKWARD_WORKSPACE)
        .map(|_| l.alloc("attn.heads", Category::Workspace, btc as u64 * F))
        .collect();
    l.free_all(heads);
    let dln1 = l.act("attn.dx", btc);
    l.free_all([dy, dpre, dqkv]);
    let dx = l.act("ln.dx", btc);
    l.free_all([dln1, dln2, dx_mid]);
    l.free_all(cache);
    dx
}

/// `Gpt::forward_backward` on one micro-batch (the batch's own tensors excluded); returns losses.
fn gpt_step(l: &mut Ledger, d: &GptDims, policy: Recompute) -> Buf {
    let (btc, bt, n) = (d.btc(), d.bt(), d.n);
    let tok = l.act("tok_emb", btc);
    let pos = l.act("pos_emb", btc);
    let mut x = l.act("x0", btc);
    l.free_all([tok, pos]);
    let mut inputs: Vec<Option<Buf>> = vec![None; n];
    let mut caches: Vec<Option<Vec<Buf>>> = vec![None; n];
    for i in 0..n {
        let (y, cache) = block_forward(l, d);
        if policy.keeps_cache(i, n) {
            caches[i] = Some(cache);
        } else {
            l.free_all(cache);
        }
        if policy.keeps_input(i, n) {
            inputs[i] = Some(x);
        } else {
            l.free(x);
        }
        x = y;
    }
    let x_last = x;
    let xf = l.act("xf", btc);
    let lnf = [l.act("ln.mean", bt), l.act("ln.rstd", bt)];
    let logits = l.act("logits", bt * d.v);
    let losses = l.act("losses", bt);
    let dlogits = l.act("dlogits", bt * d.v);
    l.free(logits);
    let dxf = l.act("dxf", btc);
    l.free_all([dlogits, xf]);
    let mut dx = l.act("ln.dx", btc);
    l.free_all([x_last, dxf]);
    l.free_all(lnf);
    for i in (0..n).rev() {
        if caches[i].is_none() {
            match policy {
                Recompute::None => unreachable!(),
                Recompute::All => {
                    let mut x: Option<Buf> = None;
                    for _ in 0..i {
                        let (y, cache) = block_forward(l, d);
                        l.free_all(cache);
                        if let Some(old) = x.replace(y) {
                            l.free(old);
                        }
                    }
                    let (y, cache) = block_forward(l, d);
                    l.free(y);
                    caches[i] = Some(cache);
                    if let Some(input) = x {
                        inputs[i] = Some(input);
                    }
                }
                _ => {
                    let k = policy.segment(n).unwrap();
                    let start = i / k * k;
                    let mut x = inputs[start].take().unwrap();
                    for j in start..=i {
                        let (y, cache) = block_forward(l, d);
                        caches[j] = Some(cache);
                        inputs[j] = Some(x);
                        x = y;
                    }
                    l.free(x);
                }
            }
        }
        let new_dx = block_backward(l, d, caches[i].take().unwrap());
        l.free(dx);
        dx = new_dx;
        if let Some(x) = inputs[i].take() {
            // block 0's input under `all` is the model input, kept until block 0's backward
            l.free(x);
        }
    }
    for x in inputs.into_iter().flatten() {
        l.free(x);
    }
    l.free(dx);
    losses
}

/// `Mlp::forward_backward` on n rows; returns losses. `keeps_pre`: the activation's backward
/// needs its input (GELU; a ReLU is fused into its layer's matmul and keeps none).
fn mlp_step(l: &mut Ledger, sizes: &[usize], n: usize, keeps_pre: bool) -> Buf {
    let layers = sizes.len() - 1;
    let mut hidden = vec![];
    for s in &sizes[1..layers] {
        if keeps_pre {
            hidden.push(l.act("mlp.pre", n * s));
        }
        hidden.push(l.act("mlp.post", n * s));
    }
    let logits = l.act("logits", n * sizes[layers]);
    let losses = l.act("losses", n);
    let mut dout = l.act("dlogits", n * sizes[layers]);
    for i in (1..layers).rev() {
        let dpost = l.act("mlp.dpost", n * sizes[i]);
        let dpre = l.act("mlp.dpre", n * sizes[i]);
        l.free(dout);
        dout = dpre;
        l.free(dpost);
    }
    l.free(dout);
    l.free_all(hidden);
    l.free(logits);
    losses
}

/// Predicts the peak bytes per category of training with `config` (validated).
pub fn plan(config: &TrainConfig) -> Result<Plan> {
    config.validate()?;
    let hyper = config.optimizer.resolve()?;
    let mut l = Ledger::default();
    let params = param_shapes(config);
    // Model: each parameter's value, then its gradient.
    for (name, numel) in &params {
        l.alloc(name, Category::Params, (*numel as u64) * F);
        l.alloc(
            &format!("{name}.grad"),
            Category::Grads,
            (*numel as u64) * F,
        );
    }
    // Optimizer state, then its workspace: placeholders, 8-bit maps, the norm buffer.
    let mut uses_8bit = false;
    for (name, numel) in &params {
        let n = *numel;
        let per = |k: usize| (k * n) as u64 * F;
        let bytes = match hyper.name {
            OptimizerName::Sgd => 0,
            OptimizerName::Momentum
            | OptimizerName::Nesterov
            | OptimizerName::Lion
            | OptimizerName::NagGs => per(1),
            OptimizerName::Rmsprop => {
                per(1 + usize::from(hyper.momentum > 0.0) + usize::from(hyper.centered))
            }
            OptimizerName::Adam | OptimizerName::Adamw => per(2),
            OptimizerName::Adam8bit if n < MIN_8BIT_SIZE => per(2),
            OptimizerName::Adam8bit => {
                uses_8bit = true;
                (2 * n.div_ceil(4) + 2 * n.div_ceil(BLOCK_8BIT)) as u64 * F
            }
        };
        if bytes > 0 {
            l.alloc(&format!("optim.{name}"), Category::OptimizerState, bytes);
        }
    }
    l.alloc("optim placeholders", Category::Workspace, 2 * F);
    if uses_8bit {
        l.alloc("8-bit maps", Category::Workspace, 512 * F);
    }
    l.alloc("grad norm²", Category::Workspace, F);
    l.alloc("loss sum", Category::Workspace, F);

    // One optimizer step: its micro-batches, then the optimizer.
    let mb = config.micro_batch();
    for _ in 0..config.accumulation() {
        let (inputs, losses) = match config.model {
            ModelKind::Mlp => {
                let x = l.act("x", mb * digits::FEATURES);
                let y = l.act("y", mb);
                let mut sizes = vec![digits::FEATURES];
                sizes.extend(&config.mlp.hidden);
                sizes.push(digits::CLASSES);
                let keeps_pre = config.mlp.activation == crate::nn::Activation::Gelu;
                (vec![x, y], mlp_step(&mut l, &sizes, mb, keeps_pre))
            }
            ModelKind::Gpt => {
                let g = &config.gpt;
                let t = if config.data == "addition" {
                    3 * config.addition.digits + 2
                } else {
                    g.block_size
                };
                let r = mb * t;
                let batch = vec![
                    l.act("tokens", r),
                    l.act("embedding offsets", g.vocab_size + 1),
                    l.act("embedding rows", r),
                    l.act("positions", r),
                    l.act("embedding offsets", g.block_size + 1),
                    l.act("embedding rows", r),
                    l.act("targets", r),
                ];
                let d = GptDims {
                    b: mb,
                    t,
                    c: g.n_embd,
                    v: g.vocab_size,
                    nh: g.n_head,
                    n: g.n_layer,
                    block_size: g.block_size,
                };
                debug_assert!(d.block_size >= d.t);
                (batch, gpt_step(&mut l, &d, config.checkpoint))
            }
        };
        let bt = (losses.1 / F) as usize;
        let partials = l.alloc(
            "reduce partials",
            Category::Workspace,
            crate::ops::reduce::partials_len(bt) as u64 * F,
        );
        l.free(partials);
        l.free(losses);
        l.free_all(inputs);
    }
    if config.grad_clip > 0.0 {
        for (_, numel) in &params {
            let partials = l.alloc(
                "reduce partials",
                Category::Workspace,
                crate::ops::reduce::partials_len(*numel) as u64 * F,
            );
            l.free(partials);
        }
    }
    let psi = params.iter().map(|(_, n)| *n as u64).sum();
    let mut tensors = l.largest.clone();
    tensors.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(Plan {
        predicted: ByCategory(l.peak),
        total: l.peak_total,
        psi,
        optimizer_bytes_per_param: optimizer_bytes_per_param(
            hyper.name,
            hyper.centered,
            hyper.momentum,
        ),
        tensors,
    })
}

/// Parses "512MiB", "2GiB", "300MB", "1000000" (bytes).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" | "k" => 1024.0,
        "mb" => 1e6,
        "mib" | "m" => 1024.0 * 1024.0,
        "gb" => 1e9,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    Ok((value * mult) as u64)
}

/// The largest micro-batch and lightest checkpoint policy whose predicted peak fits `budget`:
/// policies from least to most recomputation (none, sqrt, all), and for each the micro-batches
/// that divide the batch, largest first. Err carries what the smallest configuration needs.
pub fn fit(config: &TrainConfig, budget: u64) -> std::result::Result<TrainConfig, String> {
    let policies: Vec<Recompute> = if config.model == ModelKind::Gpt {
        vec![Recompute::None, Recompute::Sqrt, Recompute::All]
    } else {
        vec![Recompute::None]
    };
    let mut micros: Vec<usize> = (1..=config.batch_size)
        .filter(|m| config.batch_size % m == 0)
        .collect();
    micros.reverse();
    let mut smallest = None;
    for &policy in &policies {
        for &m in &micros {
            let mut c = config.clone();
            c.checkpoint = policy;
            c.micro_batch_size = m;
            let p = plan(&c).map_err(|e| e.to_string())?;
            if p.total <= budget {
                return Ok(c);
            }
            smallest = Some(p.total.min(smallest.unwrap_or(u64::MAX)));
        }
    }
    Err(format!(
        "no configuration fits in {budget} bytes: the smallest (micro-batch 1, checkpoint {}) needs {} bytes",
        policies.last().unwrap().name(),
        smallest.unwrap_or(0)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("300MB"), Ok(300_000_000));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn model_states_follow_the_formula() {
        let c = TrainConfig::default();
        let p = plan(&c).unwrap();
        let (fp, fg, fo) = p.formula();
        assert_eq!(p.predicted.get(Category::Params), fp);
        assert_eq!(p.predicted.get(Category::Grads), fg);
        assert_eq!(p.predicted.get(Category::OptimizerState), fo);
        assert_eq!(fo, 8 * p.psi, "AdamW: 8 bytes per parameter");
    }

    #[test]
    fn checkpointing_and_micro_batches_shrink_the_activation_peak() {
        let mut c = TrainConfig::default();
        c.gpt.n_layer = 9;
        let act = |c: &TrainConfig| plan(c).unwrap().predicted.get(Category::Activations);
        let none = act(&c);
        c.checkpoint = Recompute::Sqrt;
        let sqrt = act(&c);
        c.checkpoint = Recompute::All;
        let all = act(&c);
        assert!(all < sqrt && sqrt < none, "{all} < {sqrt} < {none}");
        c.checkpoint = Recompute::None;
        c.micro_batch_size = 8;
        assert!(act(&c) < none);
    }
}
