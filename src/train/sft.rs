//! Supervised fine-tuning data: [`crate::data::jsonl`] records as token ids, through a
//! model's tokenizer and chat template, with the targets the loss counts.
//!
//! - `{"text"}`: the text's ids (BOS first where the tokenizer adds it) and EOS; every token
//!   trained.
//! - `{"prompt", "completion"}`: the conversation [user: prompt, assistant: completion].
//! - `{"messages"}`: the conversation rendered by the chat template whole (as
//!   `apply_chat_template` does; its special tokens matched whole, no BOS added) and
//!   tokenized once; by default only the assistant turns train: a token trains when it starts
//!   inside an assistant turn's span, from the end of the rendering of the turns before it with
//!   the generation prompt to the end of the rendering with it (so the end-of-turn token trains
//!   too, and the model learns to stop). A template whose rendering of the first turns is not a
//!   prefix of the whole (one that rewrites earlier turns) trains its last assistant turn
//!   only, as mlx-lm does.
//!
//! Each example is cut to block_size + 1 tokens; one left with nothing to learn is dropped.
//! A batch pads its examples to the longest (rounded up to 16 tokens, at most block_size):
//! padded targets are PAD, which the loss skips; attention is causal, so padding after a
//! sequence changes nothing before it.

use crate::data::jsonl::{self, Record};
use crate::error::{Error, Result};
use crate::import::chat::Message;
use crate::import::Vocab;
use crate::nn::Batch;
use crate::ops::softmax_xent::PAD;
use crate::rng::Rng;
use std::path::Path;

/// One sequence: its ids and, for each, whether the loss learns it (as the target of the
/// position before it).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub trained: Vec<bool>,
}

/// The tokenized splits of a data directory.
pub struct Sft {
    pub train: Vec<Example>,
    pub valid: Vec<Example>,
    /// The longest sequence a batch holds: the model's block_size.
    pub seq: usize,
    /// What `valid` is: "valid.jsonl", or the last records of train.jsonl where there is none.
    pub valid_source: &'static str,
    /// Examples dropped because nothing of them was left to learn once cut to `seq` + 1.
    pub dropped: usize,
    /// Every batch `seq` long, whatever its examples' lengths: the planner's worst case.
    pub full_rows: bool,
}

/// Rows are padded to a multiple of this many tokens (fewer distinct shapes for the pool).
const PAD_MULTIPLE: usize = 16;

impl Sft {
    /// A data directory's records through `vocab`, each cut to `seq` + 1 tokens.
    /// `train_on_prompts`: every token trains, not only the assistant's.
    pub fn load(dir: &Path, vocab: &Vocab, seq: usize, train_on_prompts: bool) -> Result<Sft> {
        let splits = jsonl::read_dir(dir)?;
        let (mut train, valid, valid_source) = match splits.valid {
            Some(v) => (splits.train, v, "valid.jsonl records"),
            None => {
                let mut train = splits.train;
                if train.len() < 2 {
                    return Err(Error::Data(format!(
                        "{}: without a {} the last tenth of {} is held out, and it has {} \
                         record",
                        dir.display(),
                        jsonl::VALID,
                        jsonl::TRAIN,
                        train.len()
                    )));
                }
                let held = (train.len() / 10).max(1);
                let valid = train.split_off(train.len() - held);
                (train, valid, "held-out last tenth of train.jsonl")
            }
        };
        let mut dropped = 0;
        let mut encode_all = |records: &mut Vec<Record>| -> Result<Vec<Example>> {
            let mut out = vec![];
            for r in records.drain(..) {
                let mut e = encode(&r, vocab, train_on_prompts)?;
                e.ids.truncate(seq + 1);
                e.trained.truncate(seq + 1);
                if e.ids.len() >= 2 && e.trained[1..].iter().any(|&t| t) {
                    out.push(e);
                } else {
                    dropped += 1;
                }
            }
            Ok(out)
        };
        let train = encode_all(&mut train)?;
        let valid = encode_all(&mut { valid })?;
        for (examples, name) in [(&train, "training"), (&valid, "validation")] {
            if examples.is_empty() {
                return Err(Error::Data(format!(
                    "{}: no {name} example has a token to learn within block_size {seq}",
                    dir.display()
                )));
            }
        }
        Ok(Sft {
            train,
            valid,
            seq,
            valid_source,
            dropped,
            full_rows: false,
        })
    }

    /// What the run trains and evaluates on, for the log: the examples, the tokens an epoch
    /// learns, and those dropped.
    pub fn describe(&self) -> String {
        let learned: usize = self
            .train
            .iter()
            .map(|e| e.trained[1..].iter().filter(|&&t| t).count())
            .sum();
        let dropped = match self.dropped {
            0 => String::new(),
            n => format!(
                "; {n} dropped, with nothing to learn within block_size {} (see --max-length)",
                self.seq
            ),
        };
        format!(
            "{} training examples ({learned} tokens learned an epoch), {} for evaluation ({}){dropped}",
            self.train.len(),
            self.valid.len(),
            self.valid_source
        )
    }

    /// `b` training examples drawn at random, as one padded batch.
    pub fn draw(&self, b: usize, rng: &mut Rng) -> Batch {
        let picked: Vec<&Example> = (0..b)
            .map(|_| &self.train[rng.below(self.train.len() as u64) as usize])
            .collect();
        self.batch(&picked)
    }

    /// Examples as one batch: inputs ids[..n−1], targets ids[1..] where trained (else PAD),
    /// each row padded to the longest (a multiple of 16 tokens, at most `seq`; `seq` itself
    /// with `full_rows`).
    pub fn batch(&self, examples: &[&Example]) -> Batch {
        let longest = examples.iter().map(|e| e.ids.len() - 1).max().unwrap_or(1);
        let seq = match self.full_rows {
            true => self.seq,
            false => (longest.div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE).min(self.seq),
        };
        let (mut x, mut y) = (vec![], vec![]);
        for e in examples {
            let n = e.ids.len() - 1;
            x.extend(&e.ids[..n]);
            y.extend((1..=n).map(|i| if e.trained[i] { e.ids[i] } else { PAD }));
            // padding: any input id (0), no target
            x.extend(std::iter::repeat_n(0, seq - n));
            y.extend(std::iter::repeat_n(PAD, seq - n));
        }
        Batch::Tokens { x, y, seq }
    }
}

/// One record as ids, with what trains.
pub fn encode(record: &Record, vocab: &Vocab, train_on_prompts: bool) -> Result<Example> {
    let turns: Vec<Message> = match record {
        Record::Text(text) => {
            let mut ids = vocab.encode(text)?;
            ids.extend(vocab.tokenizer.eos);
            let trained = vec![true; ids.len()];
            return Ok(Example { ids, trained });
        }
        Record::Completion { prompt, completion } => vec![
            Message::new("user", prompt),
            Message::new("assistant", completion),
        ],
        Record::Messages(m) => m.iter().map(|(r, c)| Message::new(r, c)).collect(),
    };
    let text = vocab.chat.render(&turns, false)?;
    let (ids, offsets) = vocab.tokenizer.encode_with_offsets(&text)?;
    if train_on_prompts {
        let trained = vec![true; ids.len()];
        return Ok(Example { ids, trained });
    }
    // each assistant turn's byte span in the rendering
    let mut spans = vec![];
    let last = turns.iter().rposition(|m| m.role == "assistant");
    for (i, m) in turns.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = vocab.chat.render(&turns[..i], true)?;
        let through = vocab.chat.render(&turns[..=i], false)?;
        if through.starts_with(&before) && text.starts_with(&through) {
            spans.push((before.len(), through.len()));
        } else if Some(i) == last {
            // a template that rewrites earlier turns: the last reply, from its prompt on
            if !text.starts_with(&before) {
                return Err(Error::Data(
                    "the chat template renders a conversation's first turns differently from \
                     the whole, so its replies cannot be told from its prompts; train on every \
                     token instead (--train-on-prompts)"
                        .into(),
                ));
            }
            spans.push((before.len(), text.len()));
        }
    }
    let trained = offsets
        .iter()
        .map(|&(start, _)| spans.iter().any(|&(a, b)| start >= a && start < b))
        .collect();
    Ok(Example { ids, trained })
}
