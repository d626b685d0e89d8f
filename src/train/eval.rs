//! Evaluation (test accuracy, held-out exact match, validation loss) and text generation.

use super::{EvalResult, Model, Task, TrainConfig};
use crate::data::addition::Addition;
use crate::data::digits;
use crate::data::text::Text;
use crate::error::Result;
use crate::gpu::{Category, Gpu};
use crate::nn::gpt::GptBatch;
use crate::nn::Gpt;
use crate::ops::softmax_xent::{softmax_xent, PAD};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};

/// Validation windows for a text model.
const TEXT_EVAL_WINDOWS: usize = 64;

// Evaluation runs in chunks of the training micro-batch, so it never needs more activation
// memory than a training step: the run's measured peak is the training step's.

pub fn evaluate(gpu: &Gpu, model: &Model, task: &Task, config: &TrainConfig) -> Result<EvalResult> {
    match (model, task) {
        (Model::Mlp(m), Task::Digits(d)) => {
            let n = d.test_y.len();
            let (mut loss, mut correct) = (0.0f64, 0usize);
            for start in (0..n).step_by(config.micro_batch()) {
                let rows = config.micro_batch().min(n - start);
                let xs = &d.test_x[start * digits::FEATURES..(start + rows) * digits::FEATURES];
                let ys = &d.test_y[start..start + rows];
                let x = Tensor::from_f32(
                    gpu,
                    "test x",
                    &[rows, digits::FEATURES],
                    xs,
                    Category::Activations,
                )?;
                let y = Tensor::from_u32(gpu, "test y", &[rows], ys, Category::Activations)?;
                let logits = m.logits(gpu, &x)?;
                let losses = Tensor::empty(
                    gpu,
                    "test losses",
                    &[rows],
                    DType::F32,
                    Category::Activations,
                )?;
                softmax_xent(gpu, &logits, &y, &losses, None, 0.0)?;
                loss += losses.to_f32(gpu)?.iter().map(|&l| l as f64).sum::<f64>();
                let logits = logits.to_f32(gpu)?;
                correct += logits
                    .chunks(digits::CLASSES)
                    .zip(ys)
                    .filter(|(row, &y)| argmax(row) == y as usize)
                    .count();
            }
            Ok(EvalResult {
                loss: (loss / n as f64) as f32,
                accuracy: Some(correct as f32 / n as f32),
            })
        }
        (Model::Gpt(g), Task::Addition(a)) => {
            let mut loss_sum = 0.0f64;
            let mut targets = 0usize;
            let mut correct = 0usize;
            for chunk in a.test.chunks(config.micro_batch()) {
                let (x, y) = a.encode(chunk);
                let batch = GptBatch::new(gpu, &g.config, &x, &y, chunk.len(), a.seq_len() - 1)?;
                loss_sum += g
                    .losses(gpu, &batch)?
                    .to_f32(gpu)?
                    .iter()
                    .map(|&l| l as f64)
                    .sum::<f64>();
                targets += batch.n_targets;
                let answers = addition_answers(gpu, g, a, chunk)?;
                correct += chunk
                    .iter()
                    .zip(&answers)
                    .filter(|(&(p, q), ans)| a.parse_answer(ans) == Some(p + q))
                    .count();
            }
            Ok(EvalResult {
                loss: (loss_sum / targets.max(1) as f64) as f32,
                accuracy: Some(correct as f32 / a.test.len().max(1) as f32),
            })
        }
        (Model::Gpt(g), Task::Text(text)) => {
            let t = g.config.block_size;
            let source = if text.val.len() > t {
                &text.val
            } else {
                &text.train
            };
            // A fixed stream, so evaluations at different steps see the same windows.
            let mut rng = Rng::new(config.seed ^ 0xE7A1);
            let mut total = 0.0f64;
            let b = config.micro_batch();
            let batches = TEXT_EVAL_WINDOWS.div_ceil(b);
            for _ in 0..batches {
                let (x, y) = Text::batch(source, b, t, &mut rng);
                let batch = GptBatch::new(gpu, &g.config, &x, &y, b, t)?;
                let losses = g.losses(gpu, &batch)?.to_f32(gpu)?;
                total += losses.iter().map(|&l| l as f64).sum::<f64>();
            }
            Ok(EvalResult {
                loss: (total / (batches * b * t) as f64) as f32,
                accuracy: None,
            })
        }
        _ => unreachable!("a validated config pairs mlp with digits and gpt with text or addition"),
    }
}

pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// The model's greedy answers (as it writes them: reversed digits) to the given problems.
/// One forward pass per answer digit over the whole set, causal masking making the unfilled tail
/// irrelevant.
pub fn addition_answers(
    gpu: &Gpu,
    g: &Gpt,
    task: &Addition,
    problems: &[(u64, u64)],
) -> Result<Vec<String>> {
    let t = task.seq_len() - 1;
    let v = g.config.vocab_size;
    let mut seqs: Vec<Vec<u32>> = problems
        .iter()
        .map(|&(a, b)| {
            let mut s: Vec<u32> = task.prompt(a, b).bytes().map(u32::from).collect();
            s.resize(t, b'0' as u32);
            s
        })
        .collect();
    let targets = vec![PAD; problems.len() * t];
    for j in 0..task.answer_len() {
        let tokens: Vec<u32> = seqs.iter().flatten().copied().collect();
        let batch = GptBatch::new(gpu, &g.config, &tokens, &targets, problems.len(), t)?;
        let logits = g.logits(gpu, &batch)?.to_f32(gpu)?;
        let pos = task.prompt_len() - 1 + j;
        for (i, s) in seqs.iter_mut().enumerate() {
            let row = &logits[(i * t + pos) * v..(i * t + pos + 1) * v];
            let next = argmax(row) as u32;
            if pos + 1 < t {
                s[pos + 1] = next;
            } else {
                s.push(next);
            }
        }
    }
    Ok(seqs
        .iter()
        .map(|s| {
            s[task.prompt_len()..task.prompt_len() + task.answer_len()]
                .iter()
                .map(|&c| char::from_u32(c).unwrap_or('?'))
                .collect()
        })
        .collect())
}

/// Samples `n` tokens after `prompt` (temperature 0 = greedy; top_k 0 = no cut).
pub fn generate(
    gpu: &Gpu,
    g: &Gpt,
    prompt: &[u32],
    n: usize,
    temperature: f32,
    top_k: usize,
    rng: &mut Rng,
) -> Result<Vec<u32>> {
    let mut tokens = prompt.to_vec();
    if tokens.is_empty() {
        tokens.push(b'\n' as u32);
    }
    let v = g.config.vocab_size;
    let start = tokens.len();
    for _ in 0..n {
        let ctx = &tokens[tokens.len().saturating_sub(g.config.block_size)..];
        let batch = GptBatch::new(gpu, &g.config, ctx, &vec![PAD; ctx.len()], 1, ctx.len())?;
        let logits = g.logits(gpu, &batch)?.to_f32(gpu)?;
        let last = &logits[(ctx.len() - 1) * v..ctx.len() * v];
        tokens.push(sample_logits(last, temperature, top_k, rng) as u32);
    }
    Ok(tokens[start..].to_vec())
}

/// Draws an index from softmax(logits / temperature) restricted to the top k.
pub fn sample_logits(logits: &[f32], temperature: f32, top_k: usize, rng: &mut Rng) -> usize {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if top_k > 0 {
        order.truncate(top_k);
    }
    let m = logits[order[0]] as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - m) / temperature as f64).exp())
        .collect();
    let mut u = rng.uniform() * weights.iter().sum::<f64>();
    for (w, &i) in weights.iter().zip(&order) {
        if u < *w {
            return i;
        }
        u -= w;
    }
    *order.last().unwrap()
}
