//! Text generation from any model that keeps a KV cache ([`Model::extend`]): the prompt in one
//! chunk (prefill), then a token at a time (decode), each drawn from the next-token logits by
//! [`Sampling`] (greedy, temperature, top-k, top-p, seeded), until a stop token or the count.
//! The cache holds the positions a generation can use, at most the context; a sequence longer
//! than the context starts it again from the last half of the context (what a sliding window
//! over the context gives, paid for once per half context).

use super::eval::argmax;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::Model;
use crate::rng::Rng;
use std::time::{Duration, Instant};

/// How a next token is drawn from its logits.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 draws greedily (the most likely token).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities sum to at least p (1: all).
    pub top_p: f32,
}

impl Sampling {
    pub fn greedy() -> Sampling {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Config("temperature must be 0 or more".into()));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Config("top_p must be in (0, 1]".into()));
        }
        Ok(())
    }

    /// Draws an index from softmax(logits / temperature) restricted to the top k and then to
    /// the smallest set of most likely tokens holding top_p of the probability (ties in index
    /// order).
    pub fn draw(&self, logits: &[f32], rng: &mut Rng) -> usize {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.top_k > 0 {
            order.truncate(self.top_k);
        }
        let m = logits[order[0]] as f64;
        let mut weights: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - m) / self.temperature as f64).exp())
            .collect();
        if self.top_p < 1.0 {
            let total: f64 = weights.iter().sum();
            let mut kept = 0.0;
            let keep = weights
                .iter()
                .position(|w| {
                    kept += w / total;
                    kept >= self.top_p as f64
                })
                .map_or(weights.len(), |i| i + 1);
            weights.truncate(keep);
            order.truncate(keep);
        }
        let mut u = rng.uniform() * weights.iter().sum::<f64>();
        for (w, &i) in weights.iter().zip(&order) {
            if u < *w {
                return i;
            }
            u -= w;
        }
        *order.last().unwrap()
    }
}

/// What a generation took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prefill: Duration,
    pub generated: usize,
    pub decode: Duration,
    /// Whether a stop token ended it.
    pub stopped: bool,
}

impl GenerationStats {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    pub fn decode_tokens_per_s(&self) -> f64 {
        self.generated as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// How long a generation runs and how it draws.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// Most tokens to generate.
    pub max_new: usize,
    pub sampling: Sampling,
    /// Tokens that end it (returned and passed on too).
    pub stop: Vec<u32>,
}

/// Continues `prompt` (at least one token) as `g` says, calling `on_token` with each token as
/// it is drawn.
pub fn generate(
    gpu: &Gpu,
    model: &dyn Model,
    prompt: &[u32],
    g: &Generation,
    rng: &mut Rng,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<(Vec<u32>, GenerationStats)> {
    let (sampling, stop, max_new) = (&g.sampling, &g.stop, g.max_new);
    sampling.validate()?;
    if prompt.is_empty() {
        return Err(Error::Config(
            "generation needs a prompt of at least one token".into(),
        ));
    }
    let context = model
        .context()
        .ok_or_else(|| Error::Config(format!("{} does not generate text", model.describe())))?;
    // as many positions as this generation can use, at most the context
    let mut cache = model.kv_cache(gpu, context.min(prompt.len() + max_new).max(1))?;
    let mut stats = GenerationStats::default();
    // a prompt longer than the context keeps its end
    let mut tokens: Vec<u32> = prompt[prompt.len().saturating_sub(context)..].to_vec();
    let start = Instant::now();
    let mut logits = model.extend(gpu, &mut cache, &tokens)?.to_f32(gpu)?;
    stats.prompt_tokens = tokens.len();
    stats.prefill = start.elapsed();
    let mut out = vec![];
    let start = Instant::now();
    while out.len() < max_new {
        let next = sampling.draw(&logits, rng) as u32;
        out.push(next);
        tokens.push(next);
        on_token(next)?;
        if stop.contains(&next) {
            stats.stopped = true;
            break;
        }
        if out.len() == max_new {
            break;
        }
        if cache.len == cache.capacity {
            // full (the context): start again from the last half of it
            let keep = tokens[tokens.len() - (cache.capacity / 2).max(1)..].to_vec();
            cache.truncate(0);
            logits = model.extend(gpu, &mut cache, &keep)?.to_f32(gpu)?;
        } else {
            logits = model.extend(gpu, &mut cache, &[next])?.to_f32(gpu)?;
        }
    }
    stats.generated = out.len();
    stats.decode = start.elapsed();
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_the_smallest_set_holding_p() {
        // probabilities ∝ e^0, e^-1, e^-2, e^-9: 0.665, 0.245, 0.090, 0.0001
        let logits = [0.0, -1.0, -2.0, -9.0];
        let s = |top_p| Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p,
        };
        let mut rng = Rng::new(1);
        let drawn = |p: f32, rng: &mut Rng| -> Vec<usize> {
            let mut seen = vec![0; 4];
            for _ in 0..2000 {
                seen[s(p).draw(&logits, rng)] += 1;
            }
            seen
        };
        assert_eq!(
            drawn(0.5, &mut rng)[1..],
            [0, 0, 0],
            "0.665 alone holds 0.5"
        );
        let two = drawn(0.8, &mut rng);
        assert!(two[1] > 0 && two[2] == 0 && two[3] == 0, "{two:?}");
        let all = drawn(1.0, &mut rng);
        assert!(all[2] > 0, "{all:?}");
        assert_eq!(Sampling::greedy().draw(&[0.5, 2.0, 2.0], &mut rng), 1);
        assert!(s(0.0).validate().is_err() && s(1.5).validate().is_err());
    }
}
