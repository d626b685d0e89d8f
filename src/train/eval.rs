//! Evaluation (test accuracy, held-out exact match, validation loss) and text generation.

use super::{EvalResult, Task, TrainConfig};
use crate::data::addition::Addition;
use crate::data::digits;
use crate::data::text::Text;
use crate::error::{Error, Result};
use crate::gpu::{Category, Gpu};
use crate::nn::{Batch, Model};
use crate::ops::softmax_xent::{softmax_xent, PAD};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};

/// Validation windows for a text model.
const TEXT_EVAL_WINDOWS: usize = 64;

// Evaluation runs in chunks of the training micro-batch, so it never needs more activation
// memory than a training step: the run's measured peak is the training step's.

pub fn evaluate(
    gpu: &Gpu,
    model: &dyn Model,
    task: &Task,
    config: &TrainConfig,
) -> Result<EvalResult> {
    let mb = config.micro_batch();
    match task {
        Task::Digits(d) => {
            let n = d.test_y.len();
            let (mut loss, mut correct) = (0.0f64, 0usize);
            let all = Batch::Rows {
                x: d.test_x.clone(),
                y: d.test_y.clone(),
                features: digits::FEATURES,
            };
            for batch in all.split(mb) {
                let Batch::Rows { y, .. } = &batch else {
                    unreachable!("rows split into rows")
                };
                // one forward: the losses from the logits the accuracy needs too
                let logits = model.logits(gpu, &batch)?;
                let targets =
                    Tensor::from_u32(gpu, "test y", &[y.len()], y, Category::Activations)?;
                let losses = Tensor::empty(
                    gpu,
                    "test losses",
                    &[y.len()],
                    DType::F32,
                    Category::Activations,
                )?;
                softmax_xent(gpu, &logits, &targets, &losses, None, 0.0)?;
                loss += sum(&losses.to_f32(gpu)?);
                let logits = logits.to_f32(gpu)?;
                correct += logits
                    .chunks(digits::CLASSES)
                    .zip(y)
                    .filter(|(row, &y)| argmax(row) == y as usize)
                    .count();
            }
            Ok(EvalResult {
                loss: (loss / n as f64) as f32,
                accuracy: Some(correct as f32 / n as f32),
                source: "test split",
            })
        }
        Task::Addition(a) => {
            let mut loss_sum = 0.0f64;
            let mut targets = 0usize;
            let mut correct = 0usize;
            for chunk in a.test.chunks(mb) {
                let (x, y) = a.encode(chunk);
                let batch = Batch::Tokens {
                    x,
                    y,
                    seq: a.seq_len() - 1,
                };
                loss_sum += sum(&model.losses(gpu, &batch)?.to_f32(gpu)?);
                targets += batch.targets();
                let answers = addition_answers(gpu, model, a, chunk)?;
                correct += chunk
                    .iter()
                    .zip(&answers)
                    .filter(|(&(p, q), ans)| a.parse_answer(ans) == Some(p + q))
                    .count();
            }
            Ok(EvalResult {
                loss: (loss_sum / targets.max(1) as f64) as f32,
                accuracy: Some(correct as f32 / a.test.len().max(1) as f32),
                source: "held-out problems",
            })
        }
        Task::Text(text) => {
            let t = config.gpt.block_size;
            // A validation split shorter than one window cannot be evaluated on: say so
            // rather than call training text "eval loss".
            let (source, what) = if text.val.len() > t {
                (&text.val, "validation split")
            } else {
                (
                    &text.train,
                    "training text (the validation split is shorter than a block)",
                )
            };
            // A fixed stream, so evaluations at different steps see the same windows.
            let mut rng = Rng::new(config.seed ^ 0xE7A1);
            let mut total = 0.0f64;
            let batches = TEXT_EVAL_WINDOWS.div_ceil(mb);
            for _ in 0..batches {
                let (x, y) = Text::batch(source, mb, t, &mut rng);
                let batch = Batch::Tokens { x, y, seq: t };
                total += sum(&model.losses(gpu, &batch)?.to_f32(gpu)?);
            }
            Ok(EvalResult {
                loss: (total / (batches * mb * t) as f64) as f32,
                accuracy: None,
                source: what,
            })
        }
    }
}

fn sum(v: &[f32]) -> f64 {
    v.iter().map(|&l| l as f64).sum()
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
    g: &dyn Model,
    task: &Addition,
    problems: &[(u64, u64)],
) -> Result<Vec<String>> {
    let t = task.seq_len() - 1;
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
        let x: Vec<u32> = seqs.iter().flatten().copied().collect();
        let batch = Batch::Tokens {
            x,
            y: targets.clone(),
            seq: t,
        };
        let logits = g.logits(gpu, &batch)?;
        let v = logits.cols();
        let logits = logits.to_f32(gpu)?;
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
    g: &dyn Model,
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
    let context = g
        .context()
        .ok_or_else(|| Error::Config("this model does not generate text".into()))?;
    let start = tokens.len();
    for _ in 0..n {
        let ctx = &tokens[tokens.len().saturating_sub(context)..];
        let batch = Batch::Tokens {
            x: ctx.to_vec(),
            y: vec![PAD; ctx.len()],
            seq: ctx.len(),
        };
        let logits = g.logits(gpu, &batch)?;
        let v = logits.cols();
        let logits = logits.to_f32(gpu)?;
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
