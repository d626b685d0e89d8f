//! The synthetic addition task: "a+b=" followed by the sum, generated from the seed, scored by
//! exact match on held-out problems the model never trains on.
//!
//! Format, for `digits` = d: both operands zero-padded to d digits, the sum written with d + 1
//! digits least-significant first ("27+45=270" means 27 + 45 = 072). Writing the answer reversed
//! lets a small model produce each digit after the digits it depends on (the carry flows in
//! generation order). The loss is taken on the answer digits only.

use crate::ops::softmax_xent::PAD;
use crate::rng::Rng;
use std::collections::HashSet;

pub struct Addition {
    pub digits: usize,
    /// Held-out problems (a, b); never sampled for training.
    pub test: Vec<(u64, u64)>,
    test_set: HashSet<(u64, u64)>,
}

impl Addition {
    /// `test_size` held-out problems drawn with `seed` (at most half of all problems).
    pub fn new(digits: usize, test_size: usize, seed: u64) -> Addition {
        let max = 10u64.pow(digits as u32);
        let test_size = test_size.min((max * max / 2) as usize);
        let mut rng = Rng::new(seed ^ 0xADD);
        let mut test_set = HashSet::new();
        let mut test = Vec::with_capacity(test_size);
        while test.len() < test_size {
            let p = (rng.below(max), rng.below(max));
            if test_set.insert(p) {
                test.push(p);
            }
        }
        Addition {
            digits,
            test,
            test_set,
        }
    }

    /// Problems a training batch draws from: every pair of operands but the held-out ones.
    pub fn train_size(&self) -> usize {
        let max = 10usize.pow(self.digits as u32);
        max * max - self.test.len()
    }

    /// Characters in the prompt "a+b=".
    pub fn prompt_len(&self) -> usize {
        2 * self.digits + 2
    }

    /// Characters in the answer.
    pub fn answer_len(&self) -> usize {
        self.digits + 1
    }

    /// Tokens in a whole problem; a model needs block_size ≥ this − 1.
    pub fn seq_len(&self) -> usize {
        self.prompt_len() + self.answer_len()
    }

    pub fn prompt(&self, a: u64, b: u64) -> String {
        format!("{a:0w$}+{b:0w$}=", w = self.digits)
    }

    /// The answer as the model writes it (reversed, d + 1 digits).
    pub fn answer(&self, a: u64, b: u64) -> String {
        format!("{:0w$}", a + b, w = self.digits + 1)
            .chars()
            .rev()
            .collect()
    }

    /// Reads a model's answer (reversed digits) back as a number.
    pub fn parse_answer(&self, text: &str) -> Option<u64> {
        text.chars().rev().collect::<String>().parse().ok()
    }

    /// A training batch of problems never held out: inputs (B, T) and targets (B, T) with
    /// T = seq_len − 1.
    pub fn batch(&self, batch: usize, rng: &mut Rng) -> (Vec<u32>, Vec<u32>) {
        let max = 10u64.pow(self.digits as u32);
        let problems: Vec<(u64, u64)> = (0..batch)
            .map(|_| loop {
                let p = (rng.below(max), rng.below(max));
                if !self.test_set.contains(&p) {
                    break p;
                }
            })
            .collect();
        self.encode(&problems)
    }

    /// Inputs and targets for the given problems; targets are PAD except where the next token is
    /// an answer digit.
    pub fn encode(&self, problems: &[(u64, u64)]) -> (Vec<u32>, Vec<u32>) {
        let t = self.seq_len() - 1;
        let mut inputs = Vec::with_capacity(problems.len() * t);
        let mut targets = Vec::with_capacity(problems.len() * t);
        for &(a, b) in problems {
            let text: Vec<u32> = (self.prompt(a, b) + &self.answer(a, b))
                .bytes()
                .map(u32::from)
                .collect();
            inputs.extend(&text[..t]);
            for (i, &tok) in text[1..].iter().enumerate() {
                targets.push(if i + 1 >= self.prompt_len() { tok } else { PAD });
            }
        }
        (inputs, targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_formatted_with_reversed_answers_and_targets_on_the_answer() {
        let task = Addition::new(2, 100, 1);
        assert_eq!(task.prompt(7, 45), "07+45=");
        assert_eq!(task.answer(7, 45), "250");
        assert_eq!(task.parse_answer("250"), Some(52));
        let (x, y) = task.batch(3, &mut Rng::new(0));
        assert_eq!(x.len(), 3 * 8);
        // targets: 5 PAD for the prompt's next tokens, then the 3 answer digits
        assert_eq!(y[..5], [PAD; 5]);
        assert!(y[5..8]
            .iter()
            .all(|&c| (b'0' as u32..=b'9' as u32).contains(&c)));
    }

    #[test]
    fn training_never_sees_a_held_out_problem() {
        let task = Addition::new(1, 30, 2);
        let mut rng = Rng::new(5);
        for _ in 0..50 {
            let (x, _) = task.batch(4, &mut rng);
            for row in x.chunks(task.seq_len() - 1) {
                let (a, b) = ((row[0] - b'0' as u32) as u64, (row[2] - b'0' as u32) as u64);
                assert!(!task.test_set.contains(&(a, b)));
            }
        }
    }
}
