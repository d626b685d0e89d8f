//! Row lookup (token and position embeddings) and its deterministic backward.
//! Kernel: `shaders/embedding.wgsl`.

use super::{dispatch_items, expect_numel, flag};
use crate::error::{Error, Result};
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::tensor::Tensor;

const FORWARD: Kernel = Kernel::new(Shader::Embedding, "forward");
const BACKWARD: Kernel = Kernel::new(Shader::Embedding, "backward");
const WG: usize = 256;

/// The indices of one batch on the device, with the CSR inverse the backward needs: for each
/// table row v, the batch rows that read it, ascending. The host builds it when the batch is made
/// (the indices come from the host anyway), which keeps the backward free of atomics.
pub struct EmbeddingIndex {
    /// (R) u32
    pub idx: Tensor,
    /// (V + 1) u32: rows of table row v are bucket_rows[offsets[v] .. offsets[v+1]]
    pub offsets: Tensor,
    /// (R) u32
    pub bucket_rows: Tensor,
    pub vocab: usize,
}

impl EmbeddingIndex {
    /// Uploads `indices`; an index ≥ `vocab` is an error naming it.
    pub fn new(gpu: &Gpu, name: &str, indices: &[u32], vocab: usize) -> Result<Self> {
        if let Some((pos, &bad)) = indices
            .iter()
            .enumerate()
            .find(|(_, &v)| v as usize >= vocab)
        {
            return Err(Error::IndexOutOfRange {
                name: name.to_string(),
                position: pos,
                index: bad as u64,
                size: vocab as u64,
            });
        }
        let mut offsets = vec![0u32; vocab + 1];
        for &v in indices {
            offsets[v as usize + 1] += 1;
        }
        for v in 0..vocab {
            offsets[v + 1] += offsets[v];
        }
        let mut fill = offsets.clone();
        let mut rows = vec![0u32; indices.len()];
        for (r, &v) in indices.iter().enumerate() {
            rows[fill[v as usize] as usize] = r as u32;
            fill[v as usize] += 1;
        }
        let r = indices.len();
        Ok(EmbeddingIndex {
            idx: Tensor::from_u32(gpu, name, &[r], indices, Category::Activations)?,
            offsets: Tensor::from_u32(
                gpu,
                "embedding offsets",
                &[vocab + 1],
                &offsets,
                Category::Activations,
            )?,
            bucket_rows: Tensor::from_u32(
                gpu,
                "embedding rows",
                &[r],
                &rows,
                Category::Activations,
            )?,
            vocab,
        })
    }

    pub fn len(&self) -> usize {
        self.idx.numel()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// out[r, :] = table[idx[r], :]. table: (V, C); out: (R, C).
pub fn embedding_forward(gpu: &Gpu, index: &EmbeddingIndex, table: &Tensor, out: &Tensor) {
    let (Some(table), Some(o)) = (
        super::widen(gpu, table),
        super::Written::new(gpu, out, false),
    ) else {
        return;
    };
    embedding_forward_f32(gpu, index, &table, o.f32());
    o.done(gpu);
}

fn embedding_forward_f32(gpu: &Gpu, index: &EmbeddingIndex, table: &Tensor, out: &Tensor) {
    super::expect_f32("embedding_forward", &[table, out]);
    let (rows, cols) = (index.len(), table.cols());
    expect_numel("embedding table", table, index.vocab * cols);
    expect_numel("embedding out", out, rows * cols);
    let params = [rows as u32, cols as u32, index.vocab as u32, 0];
    dispatch_items(
        gpu,
        &FORWARD,
        &[
            (&index.idx, Access::Read),
            (table, Access::Read),
            (out, Access::ReadWrite),
        ],
        &params,
        rows * cols,
        WG,
    );
}

/// dtable[v, :] (+)= Σ_{r : idx[r] = v} dout[r, :]. dout: (R, C); dtable: (V, C).
pub fn embedding_backward(
    gpu: &Gpu,
    index: &EmbeddingIndex,
    dout: &Tensor,
    dtable: &Tensor,
    accumulate: bool,
) {
    let (Some(dout), Some(d)) = (
        super::widen(gpu, dout),
        super::Written::new(gpu, dtable, accumulate),
    ) else {
        return;
    };
    embedding_backward_f32(gpu, index, &dout, d.f32(), accumulate);
    d.done(gpu);
}

fn embedding_backward_f32(
    gpu: &Gpu,
    index: &EmbeddingIndex,
    dout: &Tensor,
    dtable: &Tensor,
    accumulate: bool,
) {
    super::expect_f32("embedding_backward", &[dout, dtable]);
    let (rows, cols) = (index.len(), dtable.cols());
    expect_numel("embedding dout", dout, rows * cols);
    expect_numel("embedding dtable", dtable, index.vocab * cols);
    let params = [
        rows as u32,
        cols as u32,
        index.vocab as u32,
        flag(accumulate),
    ];
    dispatch_items(
        gpu,
        &BACKWARD,
        &[
            (dout, Access::Read),
            (&index.offsets, Access::Read),
            (&index.bucket_rows, Access::Read),
            (dtable, Access::ReadWrite),
        ],
        &params,
        index.vocab * cols,
        WG,
    );
}
