//! How a run spreads over devices, and the one rule that says which combinations of a layout
//! and a config run. Every entry point (the CLI's flags, `ddp::train`, `pipeline::train`) asks
//! [`Layout::check`]; the README's compatibility table is [`compatibility_table`], generated
//! from the same rule (a test holds the README to it).

use super::config::{ModelKind, Precision, TrainConfig};
use crate::error::{Error, Result};
use crate::nn::lora::LoraConfig;
use crate::nn::Recompute;

/// A run's layout, as the flags describe it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Data-parallel ranks (1: none).
    pub ranks: usize,
    /// Pipeline stages (1: none); with `ranks` > 1 each stage has `ranks` replicas.
    pub stages: usize,
    /// The parameter server (`--parallel dp`) instead of DDP.
    pub server: bool,
    /// The ZeRO stage (0: none).
    pub zero: u8,
    /// One rank per process under MPI.
    pub mpi: bool,
}

impl Layout {
    pub fn one_device() -> Layout {
        Layout {
            ranks: 1,
            stages: 1,
            ..Layout::default()
        }
    }

    /// The one rule: an error naming the option and the layout that cannot go together.
    pub fn check(&self, config: &TrainConfig) -> Result<()> {
        let refuse = |why: String| Err(Error::Config(why));
        let parallel = self.ranks > 1 || self.mpi;
        if self.zero > 3 {
            return refuse(format!(
                "--zero {}: the stages are 1 (optimizer state), 2 (and gradients), 3 (and \
                 parameters)",
                self.zero
            ));
        }
        if self.stages > 1 {
            if config.model != ModelKind::Gpt {
                return refuse(
                    "--pipeline splits a GPT's blocks into stages: use --model gpt".into(),
                );
            }
            if self.zero > 0 || self.server {
                return refuse(
                    "--pipeline's replicas (--devices P×R) run DDP; --zero or --parallel does \
                     not combine with --pipeline yet"
                        .into(),
                );
            }
        }
        if (self.zero > 0 || self.server) && !parallel {
            return refuse(format!(
                "{} shards over data-parallel ranks: give --devices too (N ≥ 2, or mpi)",
                if self.server { "--parallel" } else { "--zero" }
            ));
        }
        if self.server && self.zero > 0 {
            return refuse(
                "ZeRO shards what DDP replicates; the parameter server (dp) already keeps the \
                 optimizer state on rank 0 alone: use --parallel ddp with --zero"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A table column: what it changes in the config or the layout.
type Variation = dyn Fn(&mut TrainConfig, &mut Layout);

/// The README's table: for each layout, whether each precision, LoRA, recomputation and MPI
/// run under it, by [`Layout::check`] on a small GPT config.
pub fn compatibility_table() -> String {
    let rows: [(&str, Layout); 8] = [
        ("one device", Layout::one_device()),
        ("DDP (`--devices N`)", dp(0, false)),
        ("ZeRO 1 (`--zero 1`)", dp(1, false)),
        ("ZeRO 2 (`--zero 2`)", dp(2, false)),
        ("ZeRO 3 (`--zero 3`)", dp(3, false)),
        ("parameter server (`--parallel dp`)", dp(0, true)),
        (
            "pipeline (`--pipeline P`: naive, GPipe, 1F1B)",
            Layout {
                ranks: 1,
                stages: 2,
                ..Layout::default()
            },
        ),
        (
            "pipeline × DDP (`--pipeline P --devices P×R`)",
            Layout {
                ranks: 2,
                stages: 2,
                ..Layout::default()
            },
        ),
    ];
    let base = TrainConfig::default();
    let columns: [(&str, &Variation); 6] = [
        ("fp32", &|_, _| {}),
        ("bf16", &|c, _| c.precision = Precision::Bf16),
        ("fp16", &|c, _| c.precision = Precision::Fp16),
        ("LoRA", &|c, _| c.lora = Some(LoraConfig::default())),
        ("recompute", &|c, _| c.recompute = Recompute::Sqrt),
        ("MPI", &|_, l| l.mpi = true),
    ];
    let mut out = String::from("| layout |");
    for (name, _) in &columns {
        out += &format!(" {name} |");
    }
    out += "\n|---|";
    out += &"---|".repeat(columns.len());
    out += "\n";
    for (name, layout) in rows {
        out += &format!("| {name} |");
        for (column, set) in &columns {
            let (mut c, mut l) = (base.clone(), layout);
            set(&mut c, &mut l);
            out += match (*column, layout == Layout::one_device(), l.check(&c).is_ok()) {
                // MPI runs ranks: not a column for one device
                ("MPI", true, _) => " — |",
                (_, _, true) => " yes |",
                (_, _, false) => " no |",
            };
        }
        out += "\n";
    }
    out
}

/// Two data-parallel ranks.
fn dp(zero: u8, server: bool) -> Layout {
    Layout {
        ranks: 2,
        stages: 1,
        zero,
        server,
        mpi: false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_shows_the_table_the_rule_gives() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let table = super::compatibility_table();
        assert!(
            readme.contains(&table),
            "README.md's compatibility table is not the rule's; it should read:\n{table}"
        );
    }
}
