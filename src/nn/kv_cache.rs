//! Generation with a KV cache: a model's keys and values for every position so far kept on the
//! device, one (capacity, KC) pair per block, so that each new token runs through the blocks
//! alone (its query attending to the cache) instead of the whole sequence again. A prompt goes
//! in as one chunk (prefill), then one token at a time (decode); both are [`Gpt::extend`].

use super::gpt::Gpt;
use super::{activation, f32_activation};
use crate::error::{Error, Result};
use crate::gpu::{Category, Gpu};
use crate::ops::elementwise::add;
use crate::ops::embedding::{embedding_forward, EmbeddingIndex};
use crate::ops::matmul::{matmul, Layout, MatmulDims};
use crate::tensor::{DType, Tensor};

pub struct KvCache {
    /// Per block: keys and values (capacity, KC), rows 0 .. len filled.
    layers: Vec<(Tensor, Tensor)>,
    /// Positions held.
    pub len: usize,
    /// Positions it can hold: at most the model's context.
    pub capacity: usize,
}

impl KvCache {
    /// Keeps the first `len` positions (a prompt shared by several continuations).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(|(k, v)| k.bytes() + v.bytes()).sum()
    }
}

impl Gpt {
    /// An empty cache for up to `capacity` positions (at most the context), in f32 (charged to
    /// activations).
    pub fn kv_cache(&self, gpu: &Gpu, capacity: usize) -> Result<KvCache> {
        if capacity == 0 || capacity > self.config.block_size {
            return Err(Error::Config(format!(
                "a KV cache of {capacity} positions: the model reads 1 to {}",
                self.config.block_size
            )));
        }
        let max = crate::ops::attention::ROW_KERNEL_MAX_HEAD;
        if self.config.head_dim() > max {
            return Err(Error::Config(format!(
                "generation attends with heads of at most {max}; this model's are {}",
                self.config.head_dim()
            )));
        }
        let layers = self
            .blocks
            .iter()
            .map(|b| {
                let shape = [capacity, b.attn.kv_width()];
                let k = Tensor::empty(gpu, "kv.k", &shape, DType::F32, Category::Activations)?;
                let v = Tensor::empty(gpu, "kv.v", &shape, DType::F32, Category::Activations)?;
                Ok((k, v))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            len: 0,
            capacity,
        })
    }

    /// Runs `tokens` at positions cache.len .. cache.len + n through the model, appending their
    /// keys and values to the cache: the logits (1, V), f32, of the last of them (the next
    /// token's distribution). Recorded; reading the logits submits. Generation runs f32 models.
    pub fn extend(&self, gpu: &Gpu, cache: &mut KvCache, tokens: &[u32]) -> Result<Tensor> {
        let (n, pos, c, v) = (
            tokens.len(),
            cache.len,
            self.config.n_embd,
            self.config.vocab_size,
        );
        if n == 0 {
            return Err(Error::Config("generation needs at least one token".into()));
        }
        if pos + n > cache.capacity {
            return Err(Error::Config(format!(
                "{} positions would pass the KV cache's {} (the model's context is {})",
                pos + n,
                cache.capacity,
                self.config.block_size
            )));
        }
        let dtype = self.wte.compute_dtype();
        if dtype != DType::F32 {
            return Err(Error::Config(format!(
                "generation runs f32 models; this one computes in {}",
                dtype.name()
            )));
        }
        let shape = [1, n, c];
        let index = EmbeddingIndex::new(gpu, "tokens", tokens, v)?;
        let mut x = activation(gpu, dtype, "tok_emb", &shape)?;
        embedding_forward(gpu, &index, self.wte.weight(), &x);
        if let Some(wpe) = &self.wpe {
            let positions: Vec<u32> = (pos..pos + n).map(|p| p as u32).collect();
            let index = EmbeddingIndex::new(gpu, "positions", &positions, self.config.block_size)?;
            let p = activation(gpu, dtype, "pos_emb", &shape)?;
            embedding_forward(gpu, &index, wpe.weight(), &p);
            let sum = activation(gpu, dtype, "x0", &shape)?;
            add(gpu, &x, &p, &sum);
            x = sum;
        }
        for (block, (k, v)) in self.blocks.iter().zip(&cache.layers) {
            x = block.forward_cached(gpu, &x, (k, v), pos)?;
        }
        cache.len = pos + n;
        // the head on the last position alone
        let last = activation(gpu, dtype, "x_last", &[1, c])?;
        let row = (c * 4) as u64;
        gpu.copy_region(&x, (n as u64 - 1) * row, &last, 0, row);
        let (xf, _) = self.ln_f.forward(gpu, &last)?;
        let logits = f32_activation(gpu, "logits", &[1, v])?;
        let head = self.lm_head.as_ref().unwrap_or(&self.wte);
        let dims = MatmulDims::new(1, v, c, Layout::NT);
        matmul(gpu, dims, &xf, head.weight(), None, &logits, false);
        Ok(logits)
    }
}
