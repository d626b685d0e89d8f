//! Activation checkpointing over a model's block sequence: which blocks keep their input and
//! their saved activations (cache) through the forward pass, and which are recomputed during the
//! backward pass.
//!
//! - `none` (vanilla backprop): every block keeps its cache. n block forwards per step.
//! - `all` (memory-poor): only the model input and the last block's cache are kept; to backprop
//!   block i < n−1, the forward is recomputed from the input through block i (i + 1 block
//!   forwards). n + n(n−1)/2 block forwards per step.
//! - `every:K`: the inputs of blocks 0, K, 2K, … are kept; the last segment keeps its caches from
//!   the forward pass; every other segment is recomputed once, from its checkpoint, when the
//!   backward reaches it. n + (n − size of the last segment) block forwards.
//! - `sqrt`: every:K with K = ceil(sqrt(n)) (Chen et al. 2016: O(√n) stored blocks for about one
//!   extra forward).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Recompute {
    #[default]
    None,
    All,
    Every(usize),
    Sqrt,
}

impl Recompute {
    pub fn parse(s: &str) -> Result<Recompute, String> {
        match s {
            "none" => Ok(Recompute::None),
            "all" => Ok(Recompute::All),
            "sqrt" => Ok(Recompute::Sqrt),
            _ => match s.strip_prefix("every:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(Recompute::Every(k)),
                _ => Err(format!(
                    "checkpoint policy {s:?}: expected none, all, every:K (K ≥ 1) or sqrt"
                )),
            },
        }
    }

    pub fn name(&self) -> String {
        match self {
            Recompute::None => "none".into(),
            Recompute::All => "all".into(),
            Recompute::Every(k) => format!("every:{k}"),
            Recompute::Sqrt => "sqrt".into(),
        }
    }

    /// The segment length for every:K and sqrt over n blocks.
    pub fn segment(&self, n: usize) -> Option<usize> {
        match self {
            Recompute::Every(k) => Some((*k).min(n.max(1))),
            Recompute::Sqrt => Some((n as f64).sqrt().ceil().max(1.0) as usize),
            _ => None,
        }
    }

    /// Whether block i of n keeps its cache from the forward pass.
    pub fn keeps_cache(&self, i: usize, n: usize) -> bool {
        match self {
            Recompute::None => true,
            Recompute::All => i + 1 == n,
            _ => {
                let k = self.segment(n).unwrap();
                i >= (n - 1) / k * k
            }
        }
    }

    /// Whether block i of n keeps its input from the forward pass.
    pub fn keeps_input(&self, i: usize, n: usize) -> bool {
        match self {
            Recompute::None => true,
            Recompute::All => i == 0 || i + 1 == n,
            _ => i % self.segment(n).unwrap() == 0 || self.keeps_cache(i, n),
        }
    }

    /// Block forward evaluations in one forward-backward over n blocks.
    pub fn block_forwards(&self, n: usize) -> usize {
        match self {
            Recompute::None => n,
            Recompute::All => n + n * n.saturating_sub(1) / 2,
            _ => n + (0..n).filter(|&i| !self.keeps_cache(i, n)).count(),
        }
    }
}

impl Serialize for Recompute {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Recompute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Recompute::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Recompute;

    #[test]
    fn policies_parse_and_count_block_forwards() {
        assert_eq!(Recompute::parse("every:3"), Ok(Recompute::Every(3)));
        assert!(Recompute::parse("every:0").is_err());
        assert!(Recompute::parse("half").is_err());
        assert_eq!(Recompute::None.block_forwards(8), 8);
        assert_eq!(Recompute::All.block_forwards(8), 8 + 28);
        // every:3 over 8 blocks: segments [0,3) [3,6) [6,8); the last keeps its caches
        assert_eq!(Recompute::Every(3).block_forwards(8), 8 + 6);
        // sqrt(8) → K = 3
        assert_eq!(Recompute::Sqrt.block_forwards(8), 14);
        assert_eq!(Recompute::Sqrt.segment(9), Some(3));
    }
}
