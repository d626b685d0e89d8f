//! Learning-rate schedules: warmup (none, constant as Goyal et al., gradual), then decay
//! (constant, linear, cosine) to a floor; and the batch-size scaling rules (linear, square root)
//! that set the peak lr from a base lr tuned at a base batch size.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Constant,
    Linear,
    Cosine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Warmup {
    None,
    /// A small fixed lr (warmup_lr_ratio · lr) for warmup_steps, then the target (Goyal et al.).
    Constant,
    /// Linear from lr/warmup_steps up to lr over warmup_steps.
    Gradual,
}

impl Warmup {
    pub fn parse(s: &str) -> Result<Warmup, String> {
        match s {
            "none" => Ok(Warmup::None),
            "constant" => Ok(Warmup::Constant),
            "gradual" => Ok(Warmup::Gradual),
            _ => Err(format!(
                "warmup must be none, constant or gradual, not {s:?}"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    None,
    /// lr = base_lr · B / B_base
    Linear,
    /// lr = base_lr · sqrt(B / B_base)
    Sqrt,
}

impl Scaling {
    pub fn parse(s: &str) -> Result<Scaling, String> {
        match s {
            "none" => Ok(Scaling::None),
            "linear" => Ok(Scaling::Linear),
            "sqrt" => Ok(Scaling::Sqrt),
            _ => Err(format!(
                "lr scaling must be none, linear or sqrt, not {s:?}"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    pub warmup: Warmup,
    pub warmup_steps: u64,
    /// The constant warmup's lr as a fraction of the target.
    pub warmup_lr_ratio: f32,
    pub decay: Decay,
    /// The floor the decay reaches at the last step, as a fraction of the peak lr.
    pub min_lr_ratio: f32,
    pub scaling: Scaling,
    /// The batch size the configured lr was tuned at (for `scaling`).
    pub base_batch_size: usize,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            warmup: Warmup::Gradual,
            warmup_steps: 0,
            warmup_lr_ratio: 0.1,
            decay: Decay::Cosine,
            min_lr_ratio: 0.1,
            scaling: Scaling::None,
            base_batch_size: 0,
        }
    }
}

impl Schedule {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(format!(
                "schedule.min_lr_ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if !(self.warmup_lr_ratio > 0.0 && self.warmup_lr_ratio <= 1.0) {
            return Err(format!(
                "schedule.warmup_lr_ratio must be in (0, 1], got {}",
                self.warmup_lr_ratio
            ));
        }
        if self.scaling != Scaling::None && self.base_batch_size == 0 {
            return Err("schedule.scaling needs schedule.base_batch_size".into());
        }
        Ok(())
    }

    /// The peak lr for an effective batch of `batch`, from the configured `base_lr`.
    pub fn peak_lr(&self, base_lr: f32, batch: usize) -> f32 {
        let ratio = batch as f64 / self.base_batch_size.max(1) as f64;
        match self.scaling {
            Scaling::None => base_lr,
            Scaling::Linear => (base_lr as f64 * ratio) as f32,
            Scaling::Sqrt => (base_lr as f64 * ratio.sqrt()) as f32,
        }
    }

    /// The lr at `step` (0-based) of a `total`-step run peaking at `peak`.
    pub fn lr_at(&self, peak: f32, step: u64, total: u64) -> f32 {
        let w = self.warmup_steps;
        if step < w {
            return match self.warmup {
                Warmup::None => peak,
                Warmup::Constant => peak * self.warmup_lr_ratio,
                Warmup::Gradual => peak * (step + 1) as f32 / w as f32,
            };
        }
        let span = total.saturating_sub(w).max(1) as f32;
        let progress = ((step - w) as f32 / span).min(1.0);
        let floor = peak * self.min_lr_ratio;
        match self.decay {
            Decay::Constant => peak,
            Decay::Linear => peak - (peak - floor) * progress,
            Decay::Cosine => {
                floor + 0.5 * (peak - floor) * (1.0 + (std::f32::consts::PI * progress).cos())
            }
        }
    }

    /// One line for the start of a run: the rule and the lr it gives.
    pub fn describe(&self, base_lr: f32, batch: usize) -> String {
        let peak = self.peak_lr(base_lr, batch);
        let scaling = match self.scaling {
            Scaling::None => format!("lr {peak}"),
            Scaling::Linear => format!(
                "lr {peak} = {base_lr} x {batch}/{} (linear scaling)",
                self.base_batch_size
            ),
            Scaling::Sqrt => format!(
                "lr {peak} = {base_lr} x sqrt({batch}/{}) (square-root scaling)",
                self.base_batch_size
            ),
        };
        let warmup = match (self.warmup, self.warmup_steps) {
            (_, 0) | (Warmup::None, _) => "no warmup".to_string(),
            (Warmup::Constant, w) => {
                format!("constant warmup at {}x for {w} steps", self.warmup_lr_ratio)
            }
            (Warmup::Gradual, w) => format!("gradual warmup over {w} steps"),
        };
        let decay = match self.decay {
            Decay::Constant => "constant".to_string(),
            Decay::Linear => format!("linear decay to {}x", self.min_lr_ratio),
            Decay::Cosine => format!("cosine decay to {}x", self.min_lr_ratio),
        };
        format!("{scaling}, {warmup}, {decay}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(warmup: Warmup, decay: Decay) -> Schedule {
        Schedule {
            warmup,
            warmup_steps: 10,
            warmup_lr_ratio: 0.1,
            decay,
            min_lr_ratio: 0.2,
            scaling: Scaling::None,
            base_batch_size: 0,
        }
    }

    #[test]
    fn values_at_known_steps() {
        let close = |a: f32, b: f32| assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        let g = s(Warmup::Gradual, Decay::Cosine);
        close(g.lr_at(1.0, 0, 110), 0.1);
        close(g.lr_at(1.0, 4, 110), 0.5);
        close(g.lr_at(1.0, 10, 110), 1.0);
        close(g.lr_at(1.0, 60, 110), 0.6); // halfway through the cosine: (1 + 0.2) / 2
        close(g.lr_at(1.0, 110, 110), 0.2);
        let c = s(Warmup::Constant, Decay::Linear);
        close(c.lr_at(1.0, 0, 110), 0.1);
        close(c.lr_at(1.0, 9, 110), 0.1);
        close(c.lr_at(1.0, 10, 110), 1.0);
        close(c.lr_at(1.0, 60, 110), 0.6);
        close(c.lr_at(1.0, 110, 110), 0.2);
        let n = s(Warmup::None, Decay::Constant);
        close(n.lr_at(1.0, 0, 110), 1.0);
        close(n.lr_at(1.0, 100, 110), 1.0);
    }

    #[test]
    fn batch_size_scaling_rules() {
        let mut sch = Schedule {
            base_batch_size: 32,
            ..Schedule::default()
        };
        assert_eq!(sch.peak_lr(0.1, 128), 0.1);
        sch.scaling = Scaling::Linear;
        assert!((sch.peak_lr(0.1, 128) - 0.4).abs() < 1e-7);
        sch.scaling = Scaling::Sqrt;
        assert!((sch.peak_lr(0.1, 128) - 0.2).abs() < 1e-7);
        assert!(sch.describe(0.1, 128).contains("square-root"));
    }
}
