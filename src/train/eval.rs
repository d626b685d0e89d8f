//! Evaluation (test accuracy, held-out exact match, validation loss) and text generation.

use super::{EvalResult, Task, TrainConfig};
use crate::data::addition::Addition;
use crate::data::text::Text;
use crate::error::Result;
use crate::gpu::{Category, Gpu};
use crate::nn::{Batch, Model};
use crate::ops::softmax_xent::{softmax_xent, PAD};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};

// Evaluation runs in chunks of the training micro-batch, so it never needs more activation
// memory than a training step: the run's measured peak is the training step's.

/// How an evaluation runs the model forward: on one device as it is ([`Whole`]), or sharded
/// (ZeRO 3's [`Hooked`], a pipeline's stages in a chain), giving the same logits bit for bit.
pub trait Forward {
    /// Logits (N, classes) or (B, T, V), f32.
    fn logits(&mut self, model: &mut dyn Model, gpu: &Gpu, batch: &Batch) -> Result<Tensor>;

    /// Per-target losses (PAD targets give 0), f32.
    fn losses(&mut self, model: &mut dyn Model, gpu: &Gpu, batch: &Batch) -> Result<Tensor> {
        let logits = self.logits(model, gpu, batch)?;
        losses_of(gpu, &logits, batch)
    }
}

/// The model's own forward, all of it on this device.
pub struct Whole;

impl Forward for Whole {
    fn logits(&mut self, model: &mut dyn Model, gpu: &Gpu, batch: &Batch) -> Result<Tensor> {
        model.logits(gpu, batch)
    }
    fn losses(&mut self, model: &mut dyn Model, gpu: &Gpu, batch: &Batch) -> Result<Tensor> {
        model.losses(gpu, batch)
    }
}

/// The model's forward with `hooks` around each layer group ([`Model::logits_hooked`]): ZeRO 3
/// gathers a group's values before it runs and frees them after.
pub struct Hooked<'a>(pub &'a mut dyn crate::nn::StepHooks);

impl Forward for Hooked<'_> {
    fn logits(&mut self, model: &mut dyn Model, gpu: &Gpu, batch: &Batch) -> Result<Tensor> {
        model.logits_hooked(gpu, batch, self.0)
    }
}

/// The per-target losses (f32, PAD targets 0) of `logits` for `batch`'s targets.
pub fn losses_of(gpu: &Gpu, logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    let y = match batch {
        Batch::Rows { y, .. } | Batch::Tokens { y, .. } => y,
    };
    let targets = Tensor::from_u32(gpu, "targets", &[y.len()], y, Category::Activations)?;
    let losses = Tensor::empty(gpu, "losses", &[y.len()], DType::F32, Category::Activations)?;
    softmax_xent(gpu, logits, &targets, &losses, None, 0.0)?;
    Ok(losses)
}

/// An evaluation of `model` on the task's held-out data, forward through `forward`.
pub fn evaluate(
    gpu: &Gpu,
    model: &mut dyn Model,
    forward: &mut dyn Forward,
    task: &Task,
    config: &TrainConfig,
) -> Result<EvalResult> {
    let mb = config.micro_batch();
    match task {
        Task::Rows(d) => {
            let n = d.test_y.len();
            let (mut loss, mut correct) = (0.0f64, 0usize);
            let mut per_item = Vec::with_capacity(n);
            let all = Batch::Rows {
                x: d.test_x.clone(),
                y: d.test_y.clone(),
                features: d.features,
            };
            for batch in all.split(mb) {
                let Batch::Rows { y, .. } = &batch else {
                    unreachable!("rows split into rows")
                };
                // one forward: the losses from the logits the accuracy needs too
                let logits = forward.logits(model, gpu, &batch)?;
                let losses = losses_of(gpu, &logits, &batch)?.to_f32(gpu)?;
                loss += sum(&losses);
                per_item.extend(losses.iter().map(|&l| l as f64));
                let logits = logits.to_f32(gpu)?;
                correct += logits
                    .chunks(d.classes)
                    .zip(y)
                    .filter(|(row, &y)| argmax(row) == y as usize)
                    .count();
            }
            Ok(EvalResult {
                loss: (loss / n as f64) as f32,
                loss_se: standard_error(&per_item),
                accuracy: Some(correct as f32 / n as f32),
                accuracy_se: Some(binomial_se(correct, n)),
                source: "test split",
            })
        }
        Task::Addition(a) => {
            let mut loss_sum = 0.0f64;
            let mut targets = 0usize;
            let mut correct = 0usize;
            let mut per_item = Vec::with_capacity(a.test.len());
            for chunk in a.test.chunks(mb) {
                let (x, y) = a.encode(chunk);
                let batch = Batch::Tokens {
                    x,
                    y,
                    seq: a.seq_len() - 1,
                };
                let losses = forward.losses(model, gpu, &batch)?.to_f32(gpu)?;
                loss_sum += sum(&losses);
                // each problem's mean over its answer digits (PAD positions add 0)
                let per_problem = a.answer_len() as f64;
                per_item.extend(
                    losses
                        .chunks(a.seq_len() - 1)
                        .map(|row| sum(row) / per_problem),
                );
                targets += batch.targets();
                let answers = addition_answers(gpu, model, forward, a, chunk)?;
                correct += chunk
                    .iter()
                    .zip(&answers)
                    .filter(|(&(p, q), ans)| a.parse_answer(ans) == Some(p + q))
                    .count();
            }
            Ok(EvalResult {
                loss: (loss_sum / targets.max(1) as f64) as f32,
                loss_se: standard_error(&per_item),
                accuracy: Some(correct as f32 / a.test.len().max(1) as f32),
                accuracy_se: Some(binomial_se(correct, a.test.len())),
                source: "held-out problems",
            })
        }
        Task::Text(text) => {
            let t = config.gpt.block_size;
            // never the training text: a validation split shorter than a window is refused
            // when the text is loaded (Text::check_block_size)
            assert!(text.val.len() > t, "the validation split holds a window");
            // A fixed stream, so evaluations at different steps see the same windows.
            let mut rng = Rng::new(config.seed ^ 0xE7A1);
            let mut total = 0.0f64;
            let mut per_item = Vec::with_capacity(config.eval_windows);
            let batches = config.eval_windows.div_ceil(mb);
            for _ in 0..batches {
                let (x, y) = Text::batch(&text.val, mb, t, &mut rng);
                let batch = Batch::Tokens { x, y, seq: t };
                let losses = forward.losses(model, gpu, &batch)?.to_f32(gpu)?;
                total += sum(&losses);
                per_item.extend(losses.chunks(t).map(|w| sum(w) / t as f64));
            }
            Ok(EvalResult {
                loss: (total / (batches * mb * t) as f64) as f32,
                loss_se: standard_error(&per_item),
                accuracy: None,
                accuracy_se: None,
                source: "validation split",
            })
        }
        Task::Sft(s) => {
            // every validation example once, in order; each one's mean over its trained tokens
            let (mut total, mut targets) = (0.0f64, 0usize);
            let mut per_item = Vec::with_capacity(s.valid.len());
            let all: Vec<&super::sft::Example> = s.valid.iter().collect();
            for chunk in all.chunks(mb) {
                let batch = s.batch(chunk);
                let Batch::Tokens { y, seq, .. } = &batch else {
                    unreachable!("examples batch as tokens")
                };
                let losses = forward.losses(model, gpu, &batch)?.to_f32(gpu)?;
                total += sum(&losses);
                targets += batch.targets();
                for (row, ys) in losses.chunks(*seq).zip(y.chunks(*seq)) {
                    let n = ys.iter().filter(|&&t| t != PAD).count().max(1);
                    per_item.push(sum(row) / n as f64);
                }
            }
            Ok(EvalResult {
                loss: (total / targets.max(1) as f64) as f32,
                loss_se: standard_error(&per_item),
                accuracy: None,
                accuracy_se: None,
                source: s.valid_source,
            })
        }
    }
}

/// The standard error of the mean of `v`: sample standard deviation / √n (0 for n < 2).
fn standard_error(v: &[f64]) -> f32 {
    let n = v.len() as f64;
    if v.len() < 2 {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (var / n).sqrt() as f32
}

/// √(p(1−p)/n) for `hits` of `n`.
fn binomial_se(hits: usize, n: usize) -> f32 {
    if n == 0 {
        return 0.0;
    }
    let p = hits as f64 / n as f64;
    (p * (1.0 - p) / n as f64).sqrt() as f32
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
    model: &mut dyn Model,
    forward: &mut dyn Forward,
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
        let logits = forward.logits(model, gpu, &batch)?;
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

/// The mean loss per token (nats) of a model reading `ids` in windows of `context` tokens, each
/// window predicting its next `context` tokens from its own alone (no overlap: the first tokens
/// of a window see no earlier text), `batch` windows per forward; the last, shorter window
/// included. Returns (mean loss, tokens predicted).
pub fn text_loss(
    gpu: &Gpu,
    model: &dyn Model,
    ids: &[u32],
    context: usize,
    batch: usize,
) -> Result<(f64, usize)> {
    if ids.len() < 2 || context == 0 || batch == 0 {
        return Err(crate::error::Error::Data(format!(
            "{} tokens: a text to evaluate needs at least 2 (and a context and batch of 1)",
            ids.len()
        )));
    }
    // window w reads ids[w·T .. w·T + T] and predicts ids[w·T + 1 .. w·T + T + 1]
    let starts: Vec<usize> = (0..ids.len() - 1).step_by(context).collect();
    let (mut total, mut count) = (0.0f64, 0usize);
    let len = |s: usize| context.min(ids.len() - 1 - s);
    for group in starts.chunks(batch) {
        // a batch holds windows of one length: the full ones, then the last on its own
        let mut runs: Vec<Vec<usize>> = vec![];
        for &s in group {
            match runs.last_mut() {
                Some(run) if len(run[0]) == len(s) => run.push(s),
                _ => runs.push(vec![s]),
            }
        }
        for run in runs {
            let seq = len(run[0]);
            let x: Vec<u32> = run.iter().flat_map(|&s| ids[s..s + seq].to_vec()).collect();
            let y: Vec<u32> = run
                .iter()
                .flat_map(|&s| ids[s + 1..s + 1 + seq].to_vec())
                .collect();
            let losses = model
                .losses(gpu, &Batch::Tokens { x, y, seq })?
                .to_f32(gpu)?;
            total += losses.iter().map(|&l| l as f64).sum::<f64>();
            count += losses.len();
        }
    }
    Ok((total / count as f64, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_errors_match_their_formulas() {
        // sample sd of 1, 2, 3, 4 is √(5/3); over √4
        let se = standard_error(&[1.0, 2.0, 3.0, 4.0]) as f64;
        assert!((se - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-7, "{se}");
        assert_eq!(standard_error(&[3.0]), 0.0);
        assert!((binomial_se(90, 100) as f64 - 0.03).abs() < 1e-7);
        assert_eq!(binomial_se(0, 0), 0.0);
    }
}
